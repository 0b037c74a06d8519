"""Discord against the real core: the real App and discord.py, Discord faked on 127.0.0.1.

The shipped kube-pod-crashlooping playbook is the subject: its restart is an irreversible write (tier 3), so it
waits for a person with the oncall role, and the requester may never approve it. The restart is a
POST to the stand-in, so ``standin.calls`` shows exactly how often it ran.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.app import App
from bot.config import load_settings
from bot.model.tasks import Task, TaskState
from demo.standin import Standin
from tests import harness
from tests.fakes.discord import BOT_USER_ID, CHANNEL_ID, GUILD_ID, FakeDiscord, custom_ids, embed_size
from tests.harness import AM, ENV, client, running_standin

ONCALL_ROLE = 500
ALICE, BOB, MALLORY = 111, 222, 333  # alice and bob hold the oncall role on Discord; mallory none
DISCORD_ENV = {**ENV, "DISCORD_BOT_TOKEN": "discord-token-0123456789"}


def sample(name: str) -> bytes:
    return (resources.files("bot") / "samples" / f"{name}.json").read_bytes()


def discord_overrides(fake: FakeDiscord) -> dict[str, Any]:
    return {
        "chat": {"discord": {
            "guild_ids": [str(GUILD_ID)],
            "default_channel": str(CHANNEL_ID),
            "roles": {str(ONCALL_ROLE): ["oncall"]},
            "api_base_url": fake.api_base,
            "gateway_url": fake.gateway_url,
            "ready_timeout_s": 5,
            "guild_ready_timeout_s": 0.05,
            "send_timeout_s": 5,
        }},
        "identities": [
            {"id": "local-admin", "roles": ["admin", "operator", "oncall", "sre", "sre-lead"],
             "api_token_env": "OODA_API_TOKEN"},
            {"id": "alice", "display": "Alice", "discord_users": [str(ALICE)]},
            {"id": "bob", "display": "Bob", "discord_users": [str(BOB)]},
        ],
    }


@asynccontextmanager
async def running_app(tmp_path: Path, standin: Standin, fake: FakeDiscord) -> AsyncIterator[App]:
    """The real App with Discord configured; the same tmp_path means the same data dir (a restart)."""
    port = int(standin.base_url.rsplit(":", 1)[1])
    settings, doc = load_settings(harness.test_config(tmp_path, port, discord_overrides(fake)))
    async with App(settings, doc=doc, env=DISCORD_ENV) as app:
        yield app


@pytest.fixture
async def standin() -> AsyncIterator[Standin]:
    async with running_standin() as server:
        yield server


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord(roles={ONCALL_ROLE: "oncall"}) as server:
        yield server


@pytest.fixture
async def app(tmp_path: Path, standin: Standin, fake: FakeDiscord) -> AsyncIterator[App]:
    async with running_app(tmp_path, standin, fake) as running:
        yield running


@pytest.fixture
async def http(app: App) -> AsyncIterator[httpx.AsyncClient]:
    async with client(app) as c:
        yield c


# -- helpers -------------------------------------------------------------------------------------


async def fire_crashloop(app: App, http: httpx.AsyncClient) -> Task:
    r = await http.post("/webhooks/alertmanager", content=sample("alertmanager-kube-pod-crashlooping"), headers=AM)
    assert r.status_code == 202, r.text
    await app.engine.wait_idle()
    (task,) = await app.store.list_tasks()
    assert task.state is TaskState.needs_approval
    return task


async def proposal_message(app: App, fake: FakeDiscord, task_id: int) -> dict[str, Any]:
    """The proposal message the notifier posted for ``task_id``, once its reference is stored."""
    def find() -> list[dict[str, Any]]:
        return [m for m in fake.channel_messages(CHANNEL_ID)
                if m["embeds"] and m["embeds"][0]["title"].startswith(f"#{task_id} ")]

    (message,) = await fake.wait_for(find)
    # The notifier stores the reference after posting, under its lock; a sync of our own queues
    # behind that one, so once it returns the reference is in the store (it edits the message once).
    await app.notifier.sync(task_id, None)
    return message


def restarts(standin: Standin) -> list[dict[str, Any]]:
    """The real (not dry-run) PATCHes of kube-pod-crashlooping's restart."""
    return [c for c in standin.calls if c["method"] == "PATCH" and c["path"].startswith("/apis/apps/v1/namespaces/")
            and "dryRun" not in c["query"]]


def state_of(message: dict[str, Any]) -> str:
    return str(message["embeds"][0]["footer"]["text"]).rsplit(" · ", 1)[-1]


async def settled(fake: FakeDiscord, message_id: int, state: str) -> dict[str, Any]:
    """The message once the notifier has shown ``state`` and noted it in the thread."""
    message = fake.messages[message_id]
    await fake.wait_for(lambda: state_of(message) == state)
    await fake.wait_for(lambda: any(state in n for n in notes(fake, message)))
    return message


def notes(fake: FakeDiscord, message: dict[str, Any]) -> list[str]:
    thread = message.get("thread")
    return [m["content"] for m in fake.channel_messages(int(thread["id"]))] if thread else []


async def click(fake: FakeDiscord, message_id: int, custom_id: str, user_id: int, *, oncall: bool = True,
                name: str = "someone") -> dict[str, Any]:
    """Press a button and return the bot's (ephemeral) answer."""
    interaction = await fake.click(message_id, custom_id, user_id=user_id,
                                   role_ids=[ONCALL_ROLE] if oncall else [], name=name)
    return await fake.wait_followup(interaction)


# -- tests ---------------------------------------------------------------------------------------


async def test_a_firing_alert_is_posted_as_a_proposal_with_buttons(app, http, fake, standin):
    task = await fire_crashloop(app, http)

    message = await proposal_message(app, fake, task.id)

    embed = message["embeds"][0]
    assert embed["title"].startswith(f"#{task.id} Pod is crash looping.")
    assert embed_size(embed) <= 6000 and len(embed["description"]) <= 4096
    assert all(len(f["value"]) <= 1024 for f in embed["fields"])
    steps = next(f["value"] for f in embed["fields"] if f["name"] == "Steps")
    assert "rolling restart of deployment shop/checkout" in steps and "(tier 3)" in steps
    assert custom_ids(message) == [f"ooda:approve:{task.id}", f"ooda:reject:{task.id}", f"ooda:details:{task.id}"]
    assert message["author"]["id"] == str(BOT_USER_ID)
    stored = await app.store.get_task(task.id)
    (ref,) = [m for m in stored.messages if m["surface"] == "discord"]
    assert ref["message_id"] == message["id"] and ref["thread_id"] == message["id"]
    assert restarts(standin) == []  # nothing ran before a person said so


async def test_an_approver_click_runs_the_step_once_and_the_notifier_notes_it_once(app, http, fake, standin):
    task = await fire_crashloop(app, http)
    mid = int((await proposal_message(app, fake, task.id))["id"])

    reply = await click(fake, mid, f"ooda:approve:{task.id}", BOB, name="Bob")
    await app.engine.wait_idle()

    assert reply["flags"] & 64 and reply["content"] == f"Approved by Bob: task {task.id} is executing."
    assert len(restarts(standin)) == 1
    assert (await app.store.get_task(task.id)).state is TaskState.completed
    message = await settled(fake, mid, "completed")
    assert custom_ids(message) == [f"ooda:details:{task.id}"]  # no Approve left to press
    assert "Bob" in next(f["value"] for f in message["embeds"][0]["fields"] if f["name"] == "Approvals")
    # The click answered Bob and edited the message; the who-did-what note is the notifier's alone.
    thread = "\n".join(notes(fake, message))
    assert thread.count("Bob") == 1 and "approved by Bob" in thread


async def test_a_click_without_the_role_is_refused_privately_and_nothing_runs(app, http, fake, standin):
    task = await fire_crashloop(app, http)
    message = await proposal_message(app, fake, task.id)
    edits = message.get("edits", 0)

    reply = await click(fake, int(message["id"]), f"ooda:approve:{task.id}", MALLORY, oncall=False, name="Mallory")
    await app.engine.wait_idle()

    assert reply["flags"] & 64
    assert reply["content"].startswith("Not done: Approving this tier-3 step needs the role sre-lead or oncall")
    assert restarts(standin) == []
    assert (await app.store.get_task(task.id)).state is TaskState.needs_approval
    assert await app.store.approvals_of_task(task.id) == []
    assert message.get("edits", 0) == edits and custom_ids(message)[0] == f"ooda:approve:{task.id}"


async def test_who_runs_a_playbook_from_discord_cannot_approve_it(app, fake, standin):
    run = await fake.slash("ops", "run",
                           {"playbook": "kube-pod-crashlooping", "args": "namespace=shop workload=checkout"},
                           user_id=ALICE, role_ids=[ONCALL_ROLE], name="Alice")
    started = await fake.wait_followup(run)
    assert started["content"].startswith("Started task #1 (kube-pod-crashlooping)") and started["flags"] & 64
    (notice,) = await fake.wait_for(
        lambda: [m for m in fake.channel_messages(CHANNEL_ID) if "/ops run" in m["content"]])
    assert notice["content"].startswith("Alice ran `/ops run`")  # the channel sees who started it
    await app.engine.wait_idle()
    task = await app.store.get_task(1)
    assert task.requester == "alice" and task.state is TaskState.needs_approval
    mid = int((await proposal_message(app, fake, 1))["id"])

    own = await click(fake, mid, "ooda:approve:1", ALICE, name="Alice")
    await app.engine.wait_idle()
    assert "separation of duties" in own["content"] and own["flags"] & 64
    assert restarts(standin) == []

    other = await click(fake, mid, "ooda:approve:1", BOB, name="Bob")
    await app.engine.wait_idle()
    assert other["content"] == "Approved by Bob: task 1 is executing."
    assert len(restarts(standin)) == 1
    assert [a.actor for a in await app.store.approvals_of_task(1)] == ["bob"]


async def test_a_double_click_runs_the_step_once(app, http, fake, standin):
    task = await fire_crashloop(app, http)
    mid = int((await proposal_message(app, fake, task.id))["id"])

    first = await fake.click(mid, f"ooda:approve:{task.id}", user_id=BOB, role_ids=[ONCALL_ROLE], name="Bob")
    second = await fake.click(mid, f"ooda:approve:{task.id}", user_id=BOB, role_ids=[ONCALL_ROLE], name="Bob")
    answers = sorted([(await fake.wait_followup(first))["content"], (await fake.wait_followup(second))["content"]])
    await app.engine.wait_idle()

    assert answers[0] == f"Approved by Bob: task {task.id} is executing."
    assert answers[1].startswith(f"Not done: task {task.id} ") and "decided" in answers[1]
    assert len(restarts(standin)) == 1
    assert len(await app.store.approvals_of_task(task.id)) == 1
    message = await settled(fake, mid, "completed")
    assert "\n".join(notes(fake, message)).count("Bob") == 1


async def test_ops_status_shows_the_real_core_state(app, http, fake):
    await fire_crashloop(app, http)

    interaction = await fake.slash("ops", "status", user_id=MALLORY, name="Mallory")

    assert (await fake.wait_callback(interaction))["data"]["flags"] == 64
    reply = await fake.wait_followup(interaction)
    assert reply["flags"] & 64
    lines = reply["content"].splitlines()
    assert lines[:4] == [
        "Kill switch off: approved steps run.",
        "Environment dev · autonomy cap L2",
        "Open tasks: 1 (1 waiting for approval)",
        "No recent failures.",
    ]
    assert lines[4] == "Scheduled checks:"  # the shipped one, off until a team turns it on
    assert "target-down job=node-exporter" in lines[5] and "next off" in lines[5]


async def test_a_button_posted_before_a_restart_still_works(tmp_path, standin, fake):
    async with running_app(tmp_path, standin, fake) as first, client(first) as http:
        task = await fire_crashloop(first, http)
        mid = int((await proposal_message(first, fake, task.id))["id"])

    async with running_app(tmp_path, standin, fake) as second:  # same data dir, a new Discord session
        assert len(fake.identifies) == 2
        reply = await click(fake, mid, f"ooda:approve:{task.id}", BOB, name="Bob")
        await second.engine.wait_idle()

        assert reply["content"] == f"Approved by Bob: task {task.id} is executing."
        assert len(restarts(standin)) == 1
        assert (await second.store.get_task(task.id)).state is TaskState.completed
        message = await settled(fake, mid, "completed")  # the old message is edited, not posted again
        assert len([m for m in fake.channel_messages(CHANNEL_ID) if m["embeds"]]) == 1
        assert custom_ids(message) == [f"ooda:details:{task.id}"]


async def test_a_rate_limited_post_is_retried_and_posted_once(app, http, fake):
    fake.fail_next("POST", rf"^/channels/{CHANNEL_ID}/messages$", status=429, retry_after=0.01)

    task = await fire_crashloop(app, http)
    message = await proposal_message(app, fake, task.id)

    posts = [r for r in fake.requests if r.method == "POST" and r.path == f"/channels/{CHANNEL_ID}/messages"]
    assert len(posts) == 2  # the 429, then the retry discord.py made after retry_after
    assert custom_ids(message)[0] == f"ooda:approve:{task.id}"
    stored = await app.store.get_task(task.id)
    assert [m["message_id"] for m in stored.messages if m["surface"] == "discord"] == [message["id"]]
    assert await app.store.outbox_items() == []  # delivered, so nothing waits for a retry


async def test_a_slow_click_answer_never_overwrites_a_later_state(app, http, fake, standin):
    task = await fire_crashloop(app, http)
    mid = int((await proposal_message(app, fake, task.id))["id"])
    message = fake.messages[mid]
    # Discord is slow to take Bob's answer, so the step runs and the notifier shows the end
    # state before the click gets to edit the message it was pressed on.
    gate = fake.hold_next("POST", r"^/webhooks/")

    interaction = await fake.click(mid, f"ooda:approve:{task.id}", user_id=BOB, role_ids=[ONCALL_ROLE], name="Bob")
    await app.engine.wait_idle()
    await settled(fake, mid, "completed")
    patches_before = sum(r.method == "PATCH" for r in fake.requests)
    gate.set()
    await fake.wait_followup(interaction)
    await fake.wait_for(lambda: sum(r.method == "PATCH" for r in fake.requests) > patches_before)

    assert state_of(message) == "completed"
    assert custom_ids(message) == [f"ooda:details:{task.id}"]
    assert len(restarts(standin)) == 1


async def test_a_refused_post_waits_in_the_outbox_and_the_retry_posts_it_once(app, http, fake):
    fake.fail_next("POST", rf"^/channels/{CHANNEL_ID}/messages$", status=403, times=1000)

    task = await fire_crashloop(app, http)
    await fake.wait_for(lambda: any(r.path == f"/channels/{CHANNEL_ID}/messages" for r in fake.requests))
    await app.notifier.sync(task.id, None)  # queues behind the failed delivery, and fails too

    waiting = await app.store.outbox_items()
    assert waiting and {(i.task_id, i.surface) for i in waiting} == {(task.id, "discord")}
    assert fake.channel_messages(CHANNEL_ID) == []
    assert (await app.store.get_task(task.id)).state is TaskState.needs_approval  # still approvable elsewhere

    fake.clear_failures()
    assert await app.notifier.retry_outbox() == 0  # Discord takes it now

    message = await proposal_message(app, fake, task.id)
    assert custom_ids(message)[0] == f"ooda:approve:{task.id}"
    assert await app.store.outbox_items() == []


async def test_reject_through_the_modal_closes_the_task_and_nothing_runs(app, http, fake, standin):
    task = await fire_crashloop(app, http)
    mid = int((await proposal_message(app, fake, task.id))["id"])

    opened = await fake.click(mid, f"ooda:reject:{task.id}", user_id=BOB, role_ids=[ONCALL_ROLE], name="Bob")
    modal = await fake.wait_callback(opened)
    assert modal["type"] == 9 and modal["data"]["custom_id"] == f"ooda:modal:reject:{task.id}"
    submit = await fake.submit_modal(f"ooda:modal:reject:{task.id}", {"reason": "known flaky pod"}, user_id=BOB,
                                     role_ids=[ONCALL_ROLE], name="Bob", message_id=mid)
    reply = await fake.wait_followup(submit)
    await app.engine.wait_idle()

    assert reply["content"] == "Rejected by Bob: known flaky pod" and reply["flags"] & 64
    stored = await app.store.get_task(task.id)
    assert stored.state is TaskState.rejected and stored.outcome == "rejected by Bob: known flaky pod"
    assert restarts(standin) == []
    message = await settled(fake, mid, "rejected")
    assert custom_ids(message) == [f"ooda:details:{task.id}"]
