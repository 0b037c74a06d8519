"""The Slack surface in HTTP mode, mounted on an aiohttp server like Ooda's own, with bolt's signature checks."""

from __future__ import annotations

import json
import time
from urllib.parse import urlencode

import aiohttp
import pytest
from aiohttp import web
from slack_sdk.signature import SignatureVerifier
from structlog.testing import capture_logs

from adapters.chat import slack_blocks as kit
from tests.adapters.chat.slack_harness import SECRET, click, make_surface, mention, slash
from tests.fakes.core import FakeCommands, make_proposal
from tests.fakes.slack import FakeSlack


@pytest.fixture
async def fake():
    async with FakeSlack() as slack:
        yield slack


@pytest.fixture
def core():
    return FakeCommands(make_proposal(7))


@pytest.fixture
async def server(fake, core):
    surface = make_surface(fake, core, socket=False)
    await surface.start()
    app = web.Application()
    app.add_routes(surface.web_routes())
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as session:
        yield session
    await runner.cleanup()
    await surface.stop()


def signed(body: str, *, age_s: int = 0, secret: str = SECRET, **extra: str) -> dict[str, str]:
    # Bolt checks the timestamp against the real clock, so the request must be signed with it.
    timestamp = str(int(time.time()) - age_s)
    signature = SignatureVerifier(secret).generate_signature(timestamp=timestamp, body=body)
    return {"X-Slack-Request-Timestamp": timestamp, "X-Slack-Signature": signature, **extra}


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


async def test_signed_slash_command_is_answered(fake, server):
    body = urlencode(slash("status", "U_ALICE", fake.response_url("k")))
    async with server.post("/slack/events", data=body, headers={**FORM, **signed(body)}) as resp:
        assert resp.status == 200
    reply = await fake.wait_for_response()
    assert "Kill switch off" in reply["text"]


async def test_signed_click_approves(fake, core, server):
    body = urlencode({"payload": json.dumps(click(kit.ACTION_APPROVE, 7, "U_ALICE"))})
    async with server.post("/slack/events", data=body, headers={**FORM, **signed(body)}) as resp:
        assert resp.status == 200
    await fake.wait_for("chat.update")
    assert core.executed == [(7, "alice", None)]


@pytest.mark.parametrize("headers", [
    {},
    {"X-Slack-Request-Timestamp": str(int(time.time())), "X-Slack-Signature": "v0=" + "0" * 64},
    "wrong-secret",
    "stale",
])
async def test_unsigned_forged_or_stale_requests_get_401_and_nothing_runs(fake, core, server, headers):
    body = urlencode({"payload": json.dumps(click(kit.ACTION_APPROVE, 7, "U_ALICE"))})
    if headers == "wrong-secret":
        headers = signed(body, secret="not-the-secret")
    elif headers == "stale":
        headers = signed(body, age_s=301)
    async with server.post("/slack/events", data=body, headers={**FORM, **headers}) as resp:
        assert resp.status == 401
    assert core.executed == []
    assert fake.calls == []  # not even auth.test: the request never reached a listener


async def test_event_retry_is_deduplicated_on_event_id(fake, server):
    first = json.dumps(mention("Ev1", "1700000000.000500"))
    JSON = {"Content-Type": "application/json"}
    with capture_logs() as logs:
        async with server.post("/slack/events", data=first, headers={**JSON, **signed(first)}) as resp:
            assert resp.status == 200
        retry_headers = {**JSON, **signed(first), "X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"}
        async with server.post("/slack/events", data=first, headers=retry_headers) as resp:
            assert resp.status == 200
        other = json.dumps(mention("Ev2", "1700000000.000600"))
        async with server.post("/slack/events", data=other, headers={**JSON, **signed(other)}) as resp:
            assert resp.status == 200
        await fake.wait_for("chat.postMessage", 2)
    assert sorted(c.args["thread_ts"] for c in fake.calls_to("chat.postMessage")) == [
        "1700000000.000500", "1700000000.000600"]
    assert [e["event_id"] for e in logs if e["event"] == "slack.duplicate"] == ["Ev1"]


async def test_url_verification_is_answered_by_bolt(server):
    body = json.dumps({"type": "url_verification", "challenge": "c123", "token": "legacy"})
    headers = {"Content-Type": "application/json", **signed(body)}
    async with server.post("/slack/events", data=body, headers=headers) as resp:
        assert resp.status == 200
        assert (await resp.json()) == {"challenge": "c123"}
