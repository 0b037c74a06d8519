"""The Slack surface against the real core: the whole App (bot/app.py) with chat.slack pointed at the
fake Slack, alerts posted to its webhook, clicks and /ops arriving over Socket Mode (and once over
signed HTTP), tool calls landing on the stand-in.

What these tests pin down beyond the surface's unit tests: the core's notifier is the single source
of proposal messages and who-did-what thread notes, so a click answers the clicker and edits the
message but never writes a second note; the real policy (roles, separation of duties, the
double-click race) reaches the clicker as an ephemeral refusal; and a Slack outage loses nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import yaml
from slack_sdk.models.blocks import Block
from slack_sdk.signature import SignatureVerifier

from adapters.chat import slack_blocks as kit
from bot.app import App
from bot.model.tasks import TaskState
from demo.standin import Standin
from tests.adapters.chat.slack_harness import CHANNEL, click, slash
from tests.fakes.slack import ApiCall, FakeSlack
from tests.harness import ADMIN, AM, EXAMPLE, client, running_app, running_standin

SOCKET_ENV = {"SLACK_BOT_TOKEN": "xoxb-e2e-0123456789", "SLACK_APP_TOKEN": "xapp-e2e-0123456789"}
SIGNING_SECRET = "e2e-signing-secret-0123456789"
HTTP_ENV = {"SLACK_BOT_TOKEN": "xoxb-e2e-0123456789", "SLACK_SIGNING_SECRET": SIGNING_SECRET}
# alice may approve tier-3 steps, bob too; U_VIEW is a Slack user Ooda's config does not know.
PEOPLE = [
    {"id": "alice", "display": "Alice", "roles": ["oncall", "sre-lead"], "slack_users": ["U_ALICE"]},
    {"id": "bob", "display": "Bob", "roles": ["oncall"], "slack_users": ["U_BOB"]},
]
RESTART = ("PATCH", "/apis/apps/v1/namespaces/shop/deployments/checkout")  # kube-pod-crashlooping's restart


@dataclass
class Rig:
    fake: FakeSlack
    standin: Standin
    app: App
    http: httpx.AsyncClient


@asynccontextmanager
async def ooda_on_slack(tmp_path: Path, env: dict[str, str] = SOCKET_ENV, **slack: Any) -> AsyncIterator[Rig]:
    async with FakeSlack() as fake, running_standin() as standin:
        overrides = {
            "chat": {"slack": {"api_base_url": fake.api_url, "default_channel": CHANNEL, "send_interval_s": 0,
                               "lookup_user_groups": False, **slack}},
            "identities": yaml.safe_load(EXAMPLE.read_text())["identities"] + PEOPLE,
        }
        async with running_app(tmp_path, standin, overrides, env=env) as app, client(app) as http:
            yield Rig(fake, standin, app, http)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async with ooda_on_slack(tmp_path) as r:
        yield r


def sample(name: str) -> bytes:
    return (resources.files("bot") / "samples" / f"{name}.json").read_bytes()


async def fire(rig: Rig, name: str = "alertmanager-kube-pod-crashlooping") -> int:
    r = await rig.http.post("/webhooks/alertmanager", content=sample(name), headers=AM)
    assert r.status_code == 202, r.text
    await rig.app.engine.wait_idle()
    (task,) = await rig.app.store.list_tasks(open_only=True)
    return task.id


def proposals(fake: FakeSlack) -> list[ApiCall]:
    """Proposal messages Slack accepted (thread replies and notices have no blocks)."""
    return [c for c in fake.calls_to("chat.postMessage") if c.ok and "blocks" in c.args]


def thread_replies(fake: FakeSlack, ts: str) -> list[str]:
    return [c.args["text"] for c in fake.calls_to("chat.postMessage") if c.ok and c.args.get("thread_ts") == ts]


def header(call: ApiCall) -> str:
    return str(call.args["blocks"][0]["text"]["text"])


def buttons(call: ApiCall) -> list[str]:
    return [e["action_id"] for e in call.args["blocks"][-1]["elements"]]


async def posted_proposal(fake: FakeSlack, task_id: int) -> ApiCall:
    await fake.wait_until(lambda: any(f"Task #{task_id} " in header(c) for c in proposals(fake)))
    return next(c for c in proposals(fake) if f"Task #{task_id} " in header(c))


async def answer_to(fake: FakeSlack, user: str, count: int = 1) -> str:
    """The ``count``-th ephemeral message to ``user`` (the listener's answer to a click)."""
    def mine() -> list[ApiCall]:
        return [c for c in fake.calls_to("chat.postEphemeral") if c.args["user"] == user]

    await fake.wait_until(lambda: len(mine()) >= count)
    return str(mine()[count - 1].args["text"])


def restarts(standin: Standin) -> int:
    return sum((c["method"], c["path"]) == RESTART and "dryRun" not in c["query"] for c in standin.calls)


async def state_of(rig: Rig, task_id: int) -> TaskState:
    task = await rig.app.store.get_task(task_id)
    assert task is not None
    return task.state


async def ops(rig: Rig, text: str, user: str = "U_ALICE") -> dict[str, Any]:
    key = f"ops-{len(rig.fake.responses)}"
    await rig.fake.send_envelope("slash_commands", slash(text, user, rig.fake.response_url(key)))
    await rig.fake.wait_until(lambda: any(k == key for k, _ in rig.fake.responses))
    return next(body for k, body in rig.fake.responses if k == key)


async def test_a_firing_alert_is_posted_to_slack_as_a_valid_proposal(rig):
    task_id = await fire(rig)

    post = await posted_proposal(rig.fake, task_id)
    assert post.token == SOCKET_ENV["SLACK_BOT_TOKEN"]
    assert post.args["channel"] == CHANNEL
    blocks = post.args["blocks"]
    # slack_sdk's own models re-validate every Block Kit limit they know when serializing.
    assert [b.to_dict() for b in Block.parse_all(blocks)] == blocks
    assert len(blocks) <= 50 and 0 < len(post.args["text"]) <= 4000
    assert header(post) == f"Task #{task_id} · kube-pod-crashlooping v1 · needs approval"
    text = json.dumps(blocks)
    assert "Risk 45/100 (medium)" in text and "restart" in text
    assert buttons(post) == [kit.ACTION_APPROVE, kit.ACTION_REJECT, kit.ACTION_DETAILS]  # nothing is editable
    assert {e["value"] for e in blocks[-1]["elements"]} == {str(task_id)}
    assert restarts(rig.standin) == 0  # a tier-3 write waits for a person


async def test_an_authorized_click_executes_and_leaves_exactly_one_approval_note(rig):
    task_id = await fire(rig)
    ts = (await posted_proposal(rig.fake, task_id)).response["ts"]

    await rig.fake.send_envelope("interactive", click(kit.ACTION_APPROVE, task_id, "U_ALICE", ts=ts))

    answer = await answer_to(rig.fake, "U_ALICE")
    assert answer == f"Approved by Alice: task {task_id} is executing."
    await rig.app.engine.wait_idle()
    assert await state_of(rig, task_id) is TaskState.completed
    assert restarts(rig.standin) == 1
    # The notifier writes the thread notes: the approval once, then what ran and the end state.
    await rig.fake.wait_until(lambda: any("completed" in n for n in thread_replies(rig.fake, ts)))
    notes = thread_replies(rig.fake, ts)
    assert sum("approved by Alice" in n for n in notes) == 1, notes
    assert any("restart ran (k8s.rollout_restart): ok" in n for n in notes), notes
    assert not any(n.startswith("Alice approved at") for n in notes)  # the surface's own note is gone
    await rig.fake.wait_until(lambda: any(
        header(u).endswith("· completed") for u in rig.fake.calls_to("chat.update") if u.args["ts"] == ts))
    last = [u for u in rig.fake.calls_to("chat.update") if u.args["ts"] == ts][-1]
    assert last.args["channel"] == CHANNEL and kit.ACTION_APPROVE not in buttons(last)
    assert len(proposals(rig.fake)) == 1  # edited in place, never re-posted


async def test_an_unknown_slack_user_is_refused_ephemerally_and_nothing_runs(rig):
    task_id = await fire(rig)
    ts = (await posted_proposal(rig.fake, task_id)).response["ts"]

    await rig.fake.send_envelope("interactive", click(kit.ACTION_APPROVE, task_id, "U_VIEW", ts=ts))

    refusal = await answer_to(rig.fake, "U_VIEW")
    assert refusal.startswith("Not done: Approving this tier-3 step needs the role sre-lead or oncall")
    assert await rig.app.store.approvals_of_task(task_id) == []
    await rig.app.engine.wait_idle()
    assert await state_of(rig, task_id) is TaskState.needs_approval
    assert restarts(rig.standin) == 0
    assert thread_replies(rig.fake, ts) == []


async def test_the_slack_user_who_ran_a_playbook_cannot_approve_its_tier_3_step(rig):
    reply = await ops(rig, "run kube-pod-crashlooping namespace=shop workload=checkout", "U_ALICE")
    assert reply["response_type"] == "in_channel" and "Started task #" in reply["text"]
    await rig.app.engine.wait_idle()
    (task,) = await rig.app.store.list_tasks(open_only=True)
    assert task.requester == "alice" and task.state is TaskState.needs_approval
    ts = (await posted_proposal(rig.fake, task.id)).response["ts"]

    await rig.fake.send_envelope("interactive", click(kit.ACTION_APPROVE, task.id, "U_ALICE", ts=ts))
    refusal = await answer_to(rig.fake, "U_ALICE")
    assert "separation of duties" in refusal
    assert restarts(rig.standin) == 0

    await rig.fake.send_envelope("interactive", click(kit.ACTION_APPROVE, task.id, "U_BOB", ts=ts))
    assert (await answer_to(rig.fake, "U_BOB")).startswith("Approved by Bob")
    await rig.app.engine.wait_idle()
    assert restarts(rig.standin) == 1
    assert [a.actor for a in await rig.app.store.approvals_of_task(task.id)] == ["bob"]


async def test_a_double_click_executes_once(rig):
    task_id = await fire(rig)
    ts = (await posted_proposal(rig.fake, task_id)).response["ts"]

    # Both envelopes are acked before either listener finishes: the two approvals race in the core.
    await rig.fake.send_envelope("interactive", click(kit.ACTION_APPROVE, task_id, "U_ALICE", ts=ts))
    await rig.fake.send_envelope("interactive", click(kit.ACTION_APPROVE, task_id, "U_ALICE", ts=ts))

    answers = sorted([await answer_to(rig.fake, "U_ALICE", 1), await answer_to(rig.fake, "U_ALICE", 2)])
    assert answers[0] == f"Approved by Alice: task {task_id} is executing."
    # The second click lands either after the first moved the task on (already decided) or while it
    # still waits (this person already approved it): both say so, neither approves again.
    assert answers[1].startswith((f"Not done: task {task_id}", f"You already approved task #{task_id} at "))
    await rig.app.engine.wait_idle()
    assert restarts(rig.standin) == 1
    assert len(await rig.app.store.approvals_of_task(task_id)) == 1


async def test_ops_status_and_tasks_reflect_the_real_core(rig):
    assert (await ops(rig, "tasks"))["text"] == "No open tasks."
    task_id = await fire(rig)

    tasks = await ops(rig, "tasks")
    assert tasks["response_type"] == "ephemeral"
    assert tasks["text"].startswith(f"#{task_id} needs approval · kube-pod-crashlooping · ")
    status = (await ops(rig, "status"))["text"]
    assert "Kill switch off" in status and "Open tasks: 1 (1 waiting for approval)" in status

    paused = await ops(rig, "pause maintenance", "U_BOB")
    assert paused["response_type"] == "in_channel" and "Kill switch ON (paused by Bob: maintenance)" in paused["text"]
    assert (await rig.app.core.kill_switch()).on is True
    assert "Kill switch ON" in (await ops(rig, "status"))["text"]
    refused = await ops(rig, "resume", "U_BOB")  # resuming needs admin or operator
    assert refused["text"].startswith("Not done: resuming needs the role admin or operator")
    assert (await rig.app.core.kill_switch()).on is True


async def test_slack_down_keeps_the_task_approvable_and_posts_the_proposal_when_back(tmp_path):
    async with ooda_on_slack(tmp_path, api_retries=0) as rig:
        rig.fake.down()
        task_id = await fire(rig)
        await rig.fake.wait_for("chat.postMessage")  # the notifier tried and failed
        # Runs behind the notifier's own attempt (one lock), so the outbox holds the failure after it.
        await rig.app.notifier.sync(task_id, None)
        assert [i.task_id for i in await rig.app.store.outbox_items()] != []
        assert proposals(rig.fake) == []
        r = await rig.http.get(f"/api/v1/tasks/{task_id}", headers=ADMIN)
        assert r.json()["proposal"]["state"] == "needs_approval"

        rig.fake.up()
        assert await rig.app.notifier.retry_outbox() == 0
        post = await posted_proposal(rig.fake, task_id)
        assert kit.ACTION_APPROVE in buttons(post)
        assert len(proposals(rig.fake)) == 1  # every retry after the first post edits it instead

        r = await rig.http.post(f"/api/v1/tasks/{task_id}/approve", headers=ADMIN, json={})
        assert r.status_code == 200, r.text
        await rig.app.engine.wait_idle()
        assert restarts(rig.standin) == 1
        ts = post.response["ts"]
        await rig.fake.wait_until(lambda: any("approved by Local admin" in n for n in thread_replies(rig.fake, ts)))


async def test_http_mode_on_oodas_own_server_takes_signed_clicks_and_refuses_forged_ones(tmp_path):
    async with ooda_on_slack(tmp_path, env=HTTP_ENV) as rig:
        assert rig.fake.calls_to("apps.connections.open") == []  # no invented app token in dev
        task_id = await fire(rig)
        ts = (await posted_proposal(rig.fake, task_id)).response["ts"]
        body = urlencode({"payload": json.dumps(click(kit.ACTION_APPROVE, task_id, "U_ALICE", ts=ts))})
        form = {"Content-Type": "application/x-www-form-urlencoded"}

        forged = {"X-Slack-Request-Timestamp": str(int(time.time())), "X-Slack-Signature": "v0=" + "0" * 64}
        r = await rig.http.post("/slack/events", content=body, headers={**form, **forged})
        assert r.status_code == 401
        assert await rig.app.store.approvals_of_task(task_id) == []

        # bolt checks the timestamp against the real clock, so the request is signed with it.
        stamp = str(int(time.time()))
        signature = SignatureVerifier(SIGNING_SECRET).generate_signature(timestamp=stamp, body=body)
        signed = {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": signature}
        r = await rig.http.post("/slack/events", content=body, headers={**form, **signed})
        assert r.status_code == 200
        assert (await answer_to(rig.fake, "U_ALICE")).startswith("Approved by Alice")
        await rig.app.engine.wait_idle()
        assert restarts(rig.standin) == 1
