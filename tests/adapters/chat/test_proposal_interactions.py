"""Clicking on a proposal, as people do it: twice, without the right role, and replayed by the platform.

The real App with both surfaces (slack-bolt over Socket Mode, discord.py over the gateway) against
the fakes. A repeated click says when you already approved; a person who would be refused is told
at once instead of getting a form first; an interaction delivered twice is answered once and
logged as a duplicate, not as an error with "Something went wrong".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from structlog.testing import capture_logs

from adapters.chat import slack_blocks as kit
from tests.adapters.chat.chat_rig import Rig, ooda_on_both, sample
from tests.adapters.chat.slack_harness import click
from tests.fakes.slack import ApiCall
from tests.harness import EXAMPLE

ALICE_D, MALLORY_D = 111, 333
PEOPLE = {"identities": yaml.safe_load(EXAMPLE.read_text())["identities"] + [
    {"id": "alice", "display": "Alice", "roles": ["oncall", "sre-lead"], "slack_users": ["U_ALICE"],
     "discord_users": [str(ALICE_D)]},
    {"id": "mallory", "display": "Mallory", "roles": [], "slack_users": ["U_MAL"], "discord_users": [str(MALLORY_D)]},
]}


async def ephemeral(rig: Rig, user: str, count: int = 1) -> str:
    def mine() -> list[ApiCall]:
        return [c for c in rig.slack.calls_to("chat.postEphemeral") if c.args["user"] == user]

    await rig.slack.wait_until(lambda: len(mine()) >= count)
    return str(mine()[count - 1].args["text"])


async def proposal_ts(rig: Rig, task_id: int) -> str:
    await rig.slack_message(task_id)
    call = next(c for c in rig.slack.calls_to("chat.postMessage")
                if any(b.get("block_id") == f"ooda.task.{task_id}" for b in _blocks(c.args)))
    return str(call.response["ts"])


def _blocks(args: dict[str, Any]) -> list[dict[str, Any]]:
    blocks = args.get("blocks")
    return json.loads(blocks) if isinstance(blocks, str) else blocks or []


async def test_a_repeated_approve_click_says_when_you_already_approved(tmp_path: Path):
    async with ooda_on_both(tmp_path, PEOPLE) as rig:
        await rig.post("alertmanager", sample("alertmanager-node-filesystem-space"))  # tier 4: two sre-leads
        (task,) = await rig.app.store.list_tasks()
        ts = await proposal_ts(rig, task.id)

        await rig.slack.send_envelope("interactive", click(kit.ACTION_APPROVE, task.id, "U_ALICE", ts=ts))
        first = await ephemeral(rig, "U_ALICE", 1)
        assert first == (f"Approval by Alice recorded for task {task.id}. "
                         "Approvals: 1 of 2: Alice · needs 1 more from sre-lead")
        await rig.slack.send_envelope("interactive", click(kit.ACTION_APPROVE, task.id, "U_ALICE", ts=ts))
        again = await ephemeral(rig, "U_ALICE", 2)
        (approval,) = await rig.app.store.approvals_of_task(task.id)
        assert again == (f"You already approved task #{task.id} at {approval.created_at:%Y-%m-%d %H:%M} UTC. "
                         "Approvals: 1 of 2: Alice · needs 1 more from sre-lead")


async def test_a_person_who_would_be_refused_is_told_at_once_instead_of_getting_a_form(tmp_path: Path):
    async with ooda_on_both(tmp_path, PEOPLE) as rig:
        await rig.post("alertmanager", sample("alertmanager-kube-pod-crashlooping"))
        (task,) = await rig.app.store.list_tasks()
        ts = await proposal_ts(rig, task.id)

        await rig.slack.send_envelope("interactive", click(kit.ACTION_REJECT, task.id, "U_MAL", ts=ts))
        assert (await ephemeral(rig, "U_MAL", 1)).startswith("Not done: rejecting needs one of the roles")
        await rig.slack.send_envelope("interactive", click(kit.ACTION_EDIT, task.id, "U_MAL", ts=ts))
        assert (await ephemeral(rig, "U_MAL", 2)).startswith("Not done: Approving this tier-3 step needs the role")
        assert rig.slack.calls_to("views.open") == []  # no form was opened for someone who cannot use it

        message = await _discord_proposal(rig, task.id)
        clicked = await rig.discord.click(int(message["id"]), f"ooda:reject:{task.id}", user_id=MALLORY_D)
        callback = await rig.discord.wait_callback(clicked)
        assert callback["type"] == 4, callback  # a message, not a modal (type 9)
        assert callback["data"]["content"].startswith("Not done: rejecting needs one of the roles")


async def _discord_proposal(rig: Rig, task_id: int) -> dict[str, Any]:
    await rig.discord_message(task_id)
    return next(m for m in rig.discord.messages.values()
                if m["embeds"] and m["embeds"][0]["title"].startswith(f"#{task_id} "))


async def test_a_replayed_interaction_is_answered_once_and_logged_as_a_duplicate(tmp_path: Path):
    async with ooda_on_both(tmp_path, PEOPLE) as rig:
        await rig.post("alertmanager", sample("alertmanager-node-filesystem-space"))
        (task,) = await rig.app.store.list_tasks()
        ts = await proposal_ts(rig, task.id)
        message = await _discord_proposal(rig, task.id)

        with capture_logs() as logs:
            payload = click(kit.ACTION_APPROVE, task.id, "U_ALICE", ts=ts)
            await rig.slack.send_envelope("interactive", payload)
            await ephemeral(rig, "U_ALICE", 1)
            await rig.slack.send_envelope("interactive", payload, retry_attempt=1)  # the same trigger_id

            clicked = await rig.discord.click(int(message["id"]), f"ooda:approve:{task.id}", user_id=ALICE_D)
            await rig.discord.wait_followup(clicked)
            await rig.discord.replay(clicked)
            await rig.discord.wait_for(lambda: any(e["event"] == "discord.interaction_duplicate" for e in logs))
            await rig.app.engine.wait_idle()

        assert len(rig.slack.calls_to("chat.postEphemeral")) == 1
        assert [e["event_id"] for e in logs if e["event"] == "slack.duplicate"] == [
            f"block_actions:{payload['trigger_id']}"]
        assert len(rig.discord.followups[clicked]) == 1
        assert not [e for e in logs if e["log_level"] in {"error", "critical"}], logs
        assert all("Something went wrong" not in m["content"] for f in rig.discord.followups.values() for m in f)
        assert len(await rig.app.store.approvals_of_task(task.id)) == 1


async def test_thread_notes_name_people_as_every_other_message_does(tmp_path: Path):
    async with ooda_on_both(tmp_path, PEOPLE) as rig:
        await rig.post("alertmanager", sample("alertmanager-kube-pod-crashlooping"))
        (task,) = await rig.app.store.list_tasks()
        await rig.slack_message(task.id)
        alice = rig.app.identities.by_id("alice")
        assert alice is not None
        result = await rig.app.commands.reject(task.id, alice, "a flaky probe, not the app")
        await rig.app.notifier.wait_idle()

        assert result.message == "Rejected by Alice: a flaky probe, not the app"
        notes = [c.args["text"] for c in rig.slack.calls_to("chat.postMessage") if c.args.get("thread_ts")]
        assert notes == ["rejected by Alice: a flaky probe, not the app"]
        thread = [m["content"] for m in rig.discord.messages.values() if m["content"].startswith("rejected by")]
        assert thread == ["rejected by Alice: a flaky probe, not the app"]
