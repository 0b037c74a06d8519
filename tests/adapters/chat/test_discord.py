"""The Discord surface: real discord.py against a fake Discord over HTTP and WebSocket on 127.0.0.1.

``FakeCommands`` (tests/fakes/core.py), a small stand-in for the core, keeps only the rules the surface must render
faithfully (approver role, separation of duties, one decision per task, typed confirmation for
critical risk); the real core's rules are tested in tests/bot.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import discord
import pytest

from adapters.chat.discord import DiscordConfig, DiscordSurface, DiscordUnavailable
from bot.chat.chatops import SUBCOMMANDS
from bot.chat.commands import Commands
from bot.errors import ConfigError
from bot.model.proposals import (
    Evidence,
    Proposal,
    RiskBand,
)
from bot.policy.identity import IdentityConfig, IdentityDirectory
from tests.fakes.core import FakeCommands, make_proposal
from tests.fakes.discord import CHANNEL_ID, GUILD_ID, OTHER_CHANNEL_ID, FakeDiscord, custom_ids, embed_size

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
APPROVER_ROLE = 500
ALICE, BOB, MALLORY = 111, 222, 333  # alice requested the task; bob approves; mallory has no role


def proposal(task_id: int = 7, *, band: RiskBand = RiskBand.high, requester: str = "alice") -> Proposal:
    return make_proposal(task_id, band=band, requester=requester, evidence_snippet="/var at 97%",
                         title="DiskFull on db-01 @everyone")


def identities() -> IdentityDirectory:
    return IdentityDirectory(
        [IdentityConfig(id="alice", discord_users=[str(ALICE)]), IdentityConfig(id="bob", discord_users=[str(BOB)])],
        tokens={},
        slack_groups={},
        discord_roles={str(APPROVER_ROLE): ["approver"]},
    )


def make_surface(fake: FakeDiscord, core: Commands, **overrides: Any) -> DiscordSurface:
    config = DiscordConfig(
        application_id=None,
        guild_ids=[str(GUILD_ID)],
        default_channel=str(CHANNEL_ID),
        api_base_url=fake.api_base,
        gateway_url=fake.gateway_url,
        ready_timeout_s=5,
        guild_ready_timeout_s=0.05,
        send_timeout_s=5,
        **overrides,
    )
    return DiscordSurface(config, commands=core, identities=identities(), env={"DISCORD_BOT_TOKEN": "test-token"})


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord(roles={APPROVER_ROLE: "approver"}) as server:
        yield server


@pytest.fixture
def core() -> FakeCommands:
    return FakeCommands(proposal(7), proposal(8, band=RiskBand.critical))


@pytest.fixture
async def surface(fake: FakeDiscord, core: FakeCommands) -> AsyncIterator[DiscordSurface]:
    s = make_surface(fake, core)
    await s.start()
    try:
        yield s
    finally:
        await s.stop()


async def posted(fake: FakeDiscord, surface: DiscordSurface, p: Proposal) -> dict[str, Any]:
    ref = await surface.post_proposal(p, None)
    return fake.messages[int(ref.message_id)]


# -- posting -------------------------------------------------------------------------------------


async def test_a_proposal_is_posted_as_an_embed_with_buttons_and_a_thread(fake, surface, core):
    ref = await surface.post_proposal(core.proposals[7], None)

    message = fake.messages[int(ref.message_id)]
    embed = message["embeds"][0]
    assert embed["title"].startswith("#7 DiskFull on db-01")
    assert "@everyone" not in json.dumps(embed)  # alert text never pings anyone
    assert embed["color"] == discord.Colour.orange().value  # high risk
    assert {"Risk factors", "Blast radius", "Steps", "Rollback plan", "Evidence", "Approvals"} <= {
        f["name"] for f in embed["fields"]}
    assert custom_ids(message) == ["ooda:approve:7", "ooda:reject:7", "ooda:edit:7", "ooda:details:7"]
    assert ref.thread_id == ref.message_id and int(ref.thread_id) in fake.threads
    assert message["channel_id"] == str(CHANNEL_ID)


async def test_a_huge_proposal_stays_within_discord_limits(fake, surface):
    big = proposal(9).model_copy(update={
        "summary": "s" * 5000,
        "evidence": [Evidence(kind="log", title=f"log {i}", snippet="x" * 900) for i in range(30)],
        "steps": [proposal(9).steps[0].model_copy(update={"index": i, "name": f"step{i}" * 20}) for i in range(40)],
    })
    message = await posted(fake, surface, big)  # Discord would answer 400 to an oversized embed

    embed = message["embeds"][0]
    assert embed_size(embed) <= 6000
    assert len(embed["description"]) <= 4096
    assert all(len(f["value"]) <= 1024 for f in embed["fields"])
    assert "ooda show 9" in json.dumps(embed)  # what was cut points to the full text


async def test_proposals_are_routed_by_config_first_match_wins(fake, core):
    routes = [{"team": "storage", "channel": str(OTHER_CHANNEL_ID)}, {"channel": str(CHANNEL_ID)}]
    s = make_surface(fake, core, routes=routes)
    await s.start()
    try:
        ref = await s.post_proposal(core.proposals[7], None)
        other = await s.post_proposal(core.proposals[7].model_copy(update={"team": "web"}), None)
    finally:
        await s.stop()
    assert ref.channel == str(OTHER_CHANNEL_ID)
    assert fake.messages[int(ref.message_id)]["channel_id"] == str(OTHER_CHANNEL_ID)
    assert other.channel == str(CHANNEL_ID)


async def test_a_rate_limited_post_is_retried_and_succeeds(fake, surface, core):
    fake.fail_next("POST", r"^/channels/\d+/messages$", status=429, retry_after=0.01)

    ref = await surface.post_proposal(core.proposals[7], None)

    posts = [r for r in fake.requests if r.method == "POST" and r.path == f"/channels/{CHANNEL_ID}/messages"]
    assert len(posts) == 2
    assert len(fake.channel_messages(CHANNEL_ID)) == 1
    assert int(ref.message_id) in fake.messages


async def test_a_refused_post_raises_a_domain_error_so_the_core_keeps_it(fake, surface, core):
    fake.fail_next("POST", r"^/channels/\d+/messages$", status=403)

    with pytest.raises(DiscordUnavailable, match="HTTP 403"):
        await surface.post_proposal(core.proposals[7], None)
    ref = await surface.post_proposal(core.proposals[7], None)  # the core's retry goes through
    assert int(ref.message_id) in fake.messages


# -- buttons -------------------------------------------------------------------------------------


async def test_an_approver_click_executes_once_and_edits_the_message(fake, surface, core):
    message = await posted(fake, surface, core.proposals[7])
    mid = int(message["id"])

    first = await fake.click(mid, "ooda:approve:7", user_id=BOB, role_ids=[APPROVER_ROLE], name="Bob")
    second = await fake.click(mid, "ooda:approve:7", user_id=BOB, role_ids=[APPROVER_ROLE], name="Bob")

    assert (await fake.wait_callback(first)) == {"type": 5, "data": {"flags": 64}}  # deferred, ephemeral
    assert "Approved task #7" in (await fake.wait_followup(first))["content"]
    assert "already completed" in (await fake.wait_followup(second))["content"]
    assert core.executed == [(7, "bob", None)]
    await fake.wait_for(lambda: fake.messages[mid].get("edits"))
    assert custom_ids(fake.messages[mid]) == ["ooda:details:7", "ooda:undo:7"]
    assert "completed" in fake.messages[mid]["embeds"][0]["footer"]["text"]


async def test_an_update_edits_the_message_and_notes_who_did_what_in_its_thread(fake, surface, core):
    ref = await surface.post_proposal(core.proposals[7], None)
    done = core.proposals[7].model_copy(update={"state": "completed", "can_undo": True})

    await surface.update_proposal(ref, done, "bob approved at 2026-01-05 09:01 UTC: 1 step ran")

    message = fake.messages[int(ref.message_id)]
    assert message["edits"] == 1 and custom_ids(message) == ["ooda:details:7", "ooda:undo:7"]
    (note,) = fake.channel_messages(int(ref.thread_id))  # a thread started from a message shares its id
    assert note["content"] == "bob approved at 2026-01-05 09:01 UTC: 1 step ran"


async def test_a_click_without_the_role_is_refused_ephemerally(fake, surface, core):
    message = await posted(fake, surface, core.proposals[7])

    click = await fake.click(int(message["id"]), "ooda:approve:7", user_id=MALLORY, name="Mallory")

    reply = await fake.wait_followup(click)
    assert reply["flags"] & 64
    assert reply["content"].startswith("Not done: Mallory is not an approver")
    assert core.executed == []
    assert "edits" not in fake.messages[int(message["id"])]


async def test_the_requester_cannot_approve_their_own_task(fake, surface, core):
    message = await posted(fake, surface, core.proposals[7])

    click = await fake.click(int(message["id"]), "ooda:approve:7", user_id=ALICE, role_ids=[APPROVER_ROLE])

    reply = await fake.wait_followup(click)
    assert "Separation of duties" in reply["content"] and reply["flags"] & 64
    assert core.executed == []


async def test_reject_opens_a_modal_and_records_the_reason(fake, surface, core):
    message = await posted(fake, surface, core.proposals[7])
    mid = int(message["id"])

    click = await fake.click(mid, "ooda:reject:7", user_id=BOB, role_ids=[APPROVER_ROLE], name="Bob")
    modal = await fake.wait_callback(click)
    assert modal["type"] == 9 and modal["data"]["custom_id"] == "ooda:modal:reject:7"

    submit = await fake.submit_modal("ooda:modal:reject:7", {"reason": "wrong host"}, user_id=BOB,
                                     role_ids=[APPROVER_ROLE], name="Bob", message_id=mid)
    assert "Rejected task #7" in (await fake.wait_followup(submit))["content"]
    assert core.rejected == [(7, "bob", "wrong host")]
    await fake.wait_for(lambda: fake.messages[mid].get("edits"))
    assert custom_ids(fake.messages[mid]) == ["ooda:details:7"]


async def test_edit_refuses_out_of_bounds_values_and_passes_valid_ones(fake, surface, core):
    message = await posted(fake, surface, core.proposals[7])
    mid = int(message["id"])

    click = await fake.click(mid, "ooda:edit:7", user_id=BOB, role_ids=[APPROVER_ROLE])
    modal = await fake.wait_callback(click)
    text_input = modal["data"]["components"][0]["component"]
    assert modal["type"] == 9 and text_input["custom_id"] == "0.keep" and text_input["value"] == "5"

    too_big = await fake.submit_modal("ooda:modal:edit:7", {"0.keep": "50"}, user_id=BOB,
                                      role_ids=[APPROVER_ROLE], message_id=mid)
    assert "must be at most 10" in (await fake.wait_followup(too_big))["content"]
    assert core.executed == []

    ok = await fake.submit_modal("ooda:modal:edit:7", {"0.keep": "3"}, user_id=BOB,
                                 role_ids=[APPROVER_ROLE], message_id=mid)
    assert "Approved" in (await fake.wait_followup(ok))["content"]
    assert core.executed == [(7, "bob", {"rotate": {"keep": 3}})]


async def test_a_critical_approval_needs_the_typed_phrase(fake, surface, core):
    message = await posted(fake, surface, core.proposals[8])
    assert message["embeds"][0]["color"] == discord.Colour.red().value

    click = await fake.click(int(message["id"]), "ooda:approve:8", user_id=BOB, role_ids=[APPROVER_ROLE])
    reply = await fake.wait_followup(click)
    assert "press Confirm approval below and type `approve 8` in the form" in reply["content"] and reply["flags"] & 64
    assert custom_ids(reply) == ["ooda:confirm:8"]
    assert core.executed == []

    confirm = await fake.click(int(reply["id"]), "ooda:confirm:8", user_id=BOB, role_ids=[APPROVER_ROLE])
    assert (await fake.wait_callback(confirm))["type"] == 9
    wrong = await fake.submit_modal("ooda:modal:confirm:8", {"confirmation": "yes"}, user_id=BOB,
                                    role_ids=[APPROVER_ROLE])
    assert "Not done" in (await fake.wait_followup(wrong))["content"]
    right = await fake.submit_modal("ooda:modal:confirm:8", {"confirmation": "approve 8"}, user_id=BOB,
                                    role_ids=[APPROVER_ROLE])
    assert "Approved task #8" in (await fake.wait_followup(right))["content"]
    assert core.executed == [(8, "bob", None)]


async def test_buttons_keep_working_after_a_restart(fake, core):
    first = make_surface(fake, core)
    await first.start()
    try:
        ref = await first.post_proposal(core.proposals[7], None)
    finally:
        await first.stop()

    second = make_surface(fake, core)  # a new process: no view state survives, only the message
    await second.start()
    try:
        click = await fake.click(int(ref.message_id), "ooda:approve:7", user_id=BOB, role_ids=[APPROVER_ROLE])
        assert "Approved task #7" in (await fake.wait_followup(click))["content"]
    finally:
        await second.stop()
    assert core.executed == [(7, "bob", None)]
    assert len(fake.identifies) == 2


async def test_clicks_work_after_the_gateway_resumes(fake, surface, core):
    message = await posted(fake, surface, core.proposals[7])

    await fake.drop_connection()
    await fake.wait_for(lambda: fake.resumes == 1)

    click = await fake.click(int(message["id"]), "ooda:approve:7", user_id=BOB, role_ids=[APPROVER_ROLE])
    assert "Approved" in (await fake.wait_followup(click))["content"]


# -- /ops ----------------------------------------------------------------------------------------


async def test_ops_is_synced_to_the_guild_with_every_subcommand(fake, surface):
    (ops,) = fake.commands[GUILD_ID]
    assert ops["name"] == "ops"
    assert {o["name"] for o in ops["options"]} == set(SUBCOMMANDS)


async def test_ops_status_answers_ephemerally(fake, surface):
    interaction = await fake.slash("ops", "status", user_id=MALLORY)

    assert (await fake.wait_callback(interaction))["data"]["flags"] == 64
    reply = await fake.wait_followup(interaction)
    assert "Kill switch off" in reply["content"] and reply["flags"] & 64


async def test_ops_approve_goes_through_the_same_rules(fake, surface, core):
    refused = await fake.slash("ops", "approve", {"task": 7}, user_id=MALLORY)
    assert "not an approver" in (await fake.wait_followup(refused))["content"]

    done = await fake.slash("ops", "approve", {"task": 7}, user_id=BOB, role_ids=[APPROVER_ROLE])
    assert "Approved task #7" in (await fake.wait_followup(done))["content"]
    assert core.executed == [(7, "bob", None)]


async def test_ops_run_reject_and_pause(fake, surface, core):
    run = await fake.slash("ops", "run", {"playbook": "disk-cleanup", "args": 'service=api env=prod note="disk full"'},
                           user_id=BOB)
    assert "Started task #99" in (await fake.wait_followup(run))["content"]
    assert core.runs == [("disk-cleanup", {"service": "api", "env": "prod", "note": "disk full"}, "bob")]

    reject = await fake.slash("ops", "reject", {"task": 7, "reason": "not now"}, user_id=BOB,
                              role_ids=[APPROVER_ROLE])
    await fake.wait_followup(reject)
    assert core.rejected == [(7, "bob", "not now")]

    pause = await fake.slash("ops", "pause", {"reason": "incident"}, user_id=BOB, name="Bob")
    assert "Kill switch ON" in (await fake.wait_followup(pause))["content"]
    notices = await fake.wait_for(lambda: [m for m in fake.channel_messages(CHANNEL_ID) if "pause" in m["content"]])
    assert notices[0]["content"].startswith("bob ran `/ops pause`")


async def test_a_missing_token_is_a_config_error_naming_the_variable(fake, core):
    s = DiscordSurface(make_surface(fake, core).config, commands=core, identities=identities(), env={})
    with pytest.raises(ConfigError, match="DISCORD_BOT_TOKEN"):
        await s.start()
    await s.stop()


async def test_a_shadow_proposal_is_marked_and_carries_no_acting_button(fake, surface, core):
    # Shadow mode (bot/loop/shadow.py): even a proposal that looks approvable and undoable gets only Details.
    shadow = core.proposals[7].model_copy(update={"shadow": True, "can_undo": True})
    message = await posted(fake, surface, shadow)

    assert custom_ids(message) == ["ooda:details:7"]
    assert "shadow: proposed only, nothing will run" in message["embeds"][0]["footer"]["text"]
