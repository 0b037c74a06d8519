"""An internal error in chat quotes the request's correlation id, the one on the log line of the exception.

Real slack-bolt and discord.py against the fakes; the core raises an unexpected error, the test
reads the id from the message the person got and finds the exception's log line by it. Logs are
captured after ``merge_contextvars``, as production renders them, so the id on the line is the one
bound at the request's entry point.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
import structlog
from aiohttp import web
from slack_sdk.signature import SignatureVerifier

from adapters.chat import slack_blocks as kit
from bot.chat.commands import ActionResult, Status
from bot.metrics import Metrics
from bot.policy.identity import Actor
from bot.web.server import build_web_app
from tests.adapters.chat.slack_harness import SECRET, click, make_surface, slash
from tests.adapters.chat.test_discord import APPROVER_ROLE, BOB, proposal
from tests.adapters.chat.test_discord import make_surface as make_discord_surface
from tests.fakes.core import FakeCommands, make_proposal
from tests.fakes.discord import FakeDiscord
from tests.fakes.slack import FakeSlack

QUOTED_ID = re.compile(r"correlation id (\S+) in the logs")


class BrokenCommands(FakeCommands):
    """The core with a bug: status and approve raise something no one planned for."""

    async def status(self) -> Status:
        raise RuntimeError("status is broken")

    async def approve(self, task_id: int, actor: Actor, *, edits: dict[str, dict[str, Any]] | None = None,
                      confirmation: str | None = None) -> ActionResult:
        raise RuntimeError("approve is broken")


def quoted_id(text: str) -> str:
    match = QUOTED_ID.search(text)
    assert match, f"no correlation id in {text!r}"
    return match.group(1)


def logged_id(logs: list[dict[str, Any]], event: str) -> str:
    (line,) = [entry for entry in logs if entry["event"] == event]
    assert line["log_level"] == "error" and line.get("exc_info")
    return str(line["correlation_id"])


def request_ids(logs: list[dict[str, Any]]) -> set[str]:
    """Every correlation id on the captured lines: one request must log under exactly one."""
    return {str(entry["correlation_id"]) for entry in logs if "correlation_id" in entry}


def capture() -> Any:
    return structlog.testing.capture_logs(processors=[structlog.contextvars.merge_contextvars])


# -- Slack ---------------------------------------------------------------------------------------


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as fake:
        yield fake


@pytest.fixture
async def slack_surface(slack: FakeSlack) -> AsyncIterator[Any]:
    surface = make_surface(slack, BrokenCommands(make_proposal(7)))
    await surface.start()
    yield surface
    await surface.stop()


async def test_slack_command_error_quotes_the_logged_id(slack, slack_surface):
    with capture() as logs:
        await slack.send_envelope("slash_commands", slash("status", "U_ALICE", slack.response_url("a")))
        first = await slack.wait_for_response()
        await slack.send_envelope("slash_commands", slash("status", "U_ALICE", slack.response_url("b")))
        second = await slack.wait_for_response(2)

    shown = quoted_id(first["text"])
    failures = [e for e in logs if e["event"] == "chatops.failed"]
    assert [e["correlation_id"] for e in failures] == [shown, quoted_id(second["text"])]
    assert shown.startswith("slack-") and shown != quoted_id(second["text"])  # one id per request
    assert first["response_type"] == "ephemeral"


async def test_slack_click_error_quotes_the_logged_id(slack, slack_surface):
    with capture() as logs:
        await slack.send_envelope("interactive", click(kit.ACTION_APPROVE, 7, "U_ALICE"))
        answer = await slack.wait_for("chat.postEphemeral")

    assert answer.args["user"] == "U_ALICE"
    shown = quoted_id(answer.args["text"])
    assert shown == logged_id(logs, "slack.listener_failed")
    assert shown.startswith("slack-") and request_ids(logs) == {shown}  # the id bound at the entry point


async def test_slack_error_outside_any_handling_still_reaches_the_person(slack, slack_surface):
    payload = click(kit.ACTION_APPROVE, 7, "U_ALICE")
    payload["actions"][0]["value"] = "not-a-task-id"  # the listener itself fails, before the core is asked
    with capture() as logs:
        await slack.send_envelope("interactive", payload)
        answer = await slack.wait_for("chat.postEphemeral")

    shown = quoted_id(answer.args["text"])
    assert shown == logged_id(logs, "slack.listener_failed") and request_ids(logs) == {shown}


async def test_slack_http_mode_keeps_the_http_request_id(slack):
    surface = make_surface(slack, BrokenCommands(make_proposal(7)), socket=False)
    await surface.start()
    app = build_web_app(routes=surface.web_routes(), store=None, metrics=Metrics(),  # type: ignore[arg-type]
                        max_body_bytes=1 << 20)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    body = urlencode(slash("status", "U_ALICE", slack.response_url("h")))
    timestamp = str(int(time.time()))  # bolt checks the signature's age against the real clock
    headers = {"Content-Type": "application/x-www-form-urlencoded", "X-Slack-Request-Timestamp": timestamp,
               "X-Slack-Signature": SignatureVerifier(SECRET).generate_signature(timestamp=timestamp, body=body)}
    try:
        with capture() as logs:
            async with aiohttp.ClientSession() as session, session.post(
                    f"http://127.0.0.1:{port}/slack/events", data=body, headers=headers) as response:
                assert response.status == 200
                request_id = response.headers["X-Request-Id"]
            reply = await slack.wait_for_response()
    finally:
        await runner.cleanup()
        await surface.stop()

    assert quoted_id(reply["text"]) == request_id == logged_id(logs, "chatops.failed")


# -- Discord -------------------------------------------------------------------------------------


@pytest.fixture
async def discord_fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord(roles={APPROVER_ROLE: "approver"}) as server:
        yield server


@pytest.fixture
async def discord_surface(discord_fake: FakeDiscord) -> AsyncIterator[Any]:
    surface = make_discord_surface(discord_fake, BrokenCommands(proposal(7)))
    await surface.start()
    try:
        yield surface
    finally:
        await surface.stop()


async def test_discord_click_error_quotes_the_logged_id(discord_fake, discord_surface):
    ref = await discord_surface.post_proposal(proposal(7), None)
    with capture() as logs:
        interaction = await discord_fake.click(int(ref.message_id), "ooda:approve:7", user_id=BOB,
                                               role_ids=[APPROVER_ROLE])
        reply = await discord_fake.wait_followup(interaction)

    shown = quoted_id(reply["content"])
    assert shown == logged_id(logs, "discord.interaction_failed") == f"discord-{interaction}"
    assert request_ids(logs) == {shown}  # the entry line "discord.interaction" too
    assert reply["flags"] & 64  # only the person sees it


async def test_discord_ops_error_quotes_the_logged_id(discord_fake, discord_surface):
    with capture() as logs:
        interaction = await discord_fake.slash("ops", "status", user_id=BOB)
        reply = await discord_fake.wait_followup(interaction)

    shown = quoted_id(reply["content"])
    assert shown == logged_id(logs, "chatops.failed") == f"discord-{interaction}"
    assert request_ids(logs) == {shown}
