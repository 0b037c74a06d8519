"""The Slack surface in Socket Mode: real slack-bolt and slack_sdk against the fake Slack."""

from __future__ import annotations

import json

import pytest

from adapters.chat import slack_blocks as kit
from adapters.chat.slack_config import SlackDeliveryError
from bot.metrics import Metrics
from bot.model.proposals import MessageRef, RiskBand
from tests.adapters.chat.slack_harness import CHANNEL, click, make_surface, mention, slash, submission, typed
from tests.fakes.core import FakeCommands, make_proposal
from tests.fakes.slack import FakeSlack


@pytest.fixture
async def fake():
    async with FakeSlack() as slack:
        yield slack


@pytest.fixture
def core():
    return FakeCommands(make_proposal(7), make_proposal(8, requester="alice"),
                        make_proposal(9, band=RiskBand.critical))


@pytest.fixture
async def surface(fake, core):
    s = make_surface(fake, core)
    await s.start()
    yield s
    await s.stop()


async def test_socket_mode_connects_with_the_app_token(fake, surface):
    opened = fake.calls_to("apps.connections.open")
    assert opened and opened[0].token == "xapp-test"
    assert surface.mode == "socket"
    assert surface.web_routes() == []


async def test_proposal_posted_with_valid_blocks_to_the_routed_channel(fake, surface):
    ref = await surface.post_proposal(make_proposal(7), None)
    call = fake.calls_to("chat.postMessage")[0]
    assert call.token == "xoxb-test"
    assert call.args["channel"] == "C_STORAGE"  # team storage + critical severity route
    assert ref == MessageRef(surface="slack", channel="C_STORAGE", message_id=ref.message_id, thread_id=ref.message_id)
    blocks = call.args["blocks"]
    assert blocks[0] == {"type": "header", "text": {"type": "plain_text", "text": "Task #7 · disk-cleanup v3 · "
                                                                                 "needs approval", "emoji": True}}
    text = json.dumps(blocks)
    assert "Risk 72/100 (high)" in text
    assert "db-01 only" in text
    assert "restore rotated logs" in text
    assert "Approvals: 0 of 1" in text
    assert "@here" not in text  # the alert title's mention is defused
    actions = blocks[-1]["elements"]
    assert [a["action_id"] for a in actions] == [kit.ACTION_APPROVE, kit.ACTION_REJECT, kit.ACTION_EDIT,
                                                 kit.ACTION_DETAILS]
    assert {a["value"] for a in actions} == {"7"}


async def test_default_channel_when_no_route_matches(fake, surface):
    await surface.post_proposal(make_proposal(7).model_copy(update={"team": "web"}), None)
    assert fake.calls_to("chat.postMessage")[0].args["channel"] == CHANNEL


async def test_authorized_approve_executes_answers_the_clicker_and_edits_the_same_message(fake, core, surface):
    ack = await fake.send_envelope("interactive", click(kit.ACTION_APPROVE, 7, "U_ALICE"))
    assert "payload" not in ack or not ack["payload"]
    update = await fake.wait_for("chat.update")  # the listener's last call
    assert core.executed == [(7, "alice", None)]
    answer = fake.calls_to("chat.postEphemeral")[0]
    assert answer.args["user"] == "U_ALICE" and answer.args["text"] == "Approved task #7: 1 step ran."
    assert update.args["channel"] == CHANNEL and update.args["ts"] == "1700000000.000001"
    buttons = [e["action_id"] for e in update.args["blocks"][-1]["elements"]]
    assert buttons == [kit.ACTION_DETAILS, kit.ACTION_UNDO]  # decided: no Approve, Undo once steps ran
    # The who-did-what thread note is the core notifier's job; a click writing one too would double it.
    assert fake.calls_to("chat.postMessage") == []


async def test_an_update_with_a_note_edits_the_message_and_replies_in_its_thread(fake, surface):
    ref = await surface.post_proposal(make_proposal(7), None)
    done = make_proposal(7).model_copy(update={"state": "completed", "can_undo": True})

    await surface.update_proposal(ref, done, "approved by alice; rotate ran (shell.run): ok <!here>")

    update = fake.calls_to("chat.update")[0]
    assert (update.args["channel"], update.args["ts"]) == (ref.channel, ref.message_id)
    assert "completed" in update.args["blocks"][0]["text"]["text"]
    (_, note) = fake.calls_to("chat.postMessage")
    assert note.args["thread_ts"] == ref.thread_id
    assert note.args["text"].startswith("approved by alice; rotate ran (shell.run): ok")
    assert "<!here>" not in note.args["text"]


async def test_an_update_without_a_note_posts_nothing_in_the_thread(fake, surface):
    ref = await surface.post_proposal(make_proposal(7), None)
    await surface.update_proposal(ref, make_proposal(7), None)
    assert len(fake.calls_to("chat.update")) == 1
    assert len(fake.calls_to("chat.postMessage")) == 1  # only the proposal itself


async def test_unauthorized_user_gets_an_ephemeral_refusal_and_nothing_runs(fake, core, surface):
    await fake.send_envelope("interactive", click(kit.ACTION_APPROVE, 7, "U_VIEW"))
    refusal = await fake.wait_for("chat.postEphemeral")
    assert refusal.args["user"] == "U_VIEW"
    assert refusal.args["text"].startswith("Not done: victor is not an approver")
    assert core.executed == []
    assert fake.calls_to("chat.update") == []


async def test_user_group_grants_the_approver_role(fake, core, surface):
    fake.usergroups = {"S_ONCALL": ["U_BOB"]}
    await fake.send_envelope("interactive", click(kit.ACTION_APPROVE, 7, "U_BOB"))
    await fake.wait_for("chat.update")
    assert core.executed == [(7, "slack:U_BOB", None)]


async def test_separation_of_duties_refuses_the_requester(fake, core, surface):
    await fake.send_envelope("interactive", click(kit.ACTION_APPROVE, 8, "U_ALICE"))
    refusal = await fake.wait_for("chat.postEphemeral")
    assert "Separation of duties" in refusal.args["text"]
    assert core.executed == []


async def test_double_click_executes_once(fake, core, surface):
    await fake.send_envelope("interactive", click(kit.ACTION_APPROVE, 7, "U_ALICE"))
    await fake.send_envelope("interactive", click(kit.ACTION_APPROVE, 7, "U_CAROL"))
    await fake.wait_for("chat.postEphemeral", 2)
    await fake.wait_for("chat.update")
    answers = {c.args["user"]: c.args["text"] for c in fake.calls_to("chat.postEphemeral")}
    assert answers["U_ALICE"] == "Approved task #7: 1 step ran."
    assert "already completed" in answers["U_CAROL"]
    assert len(core.executed) == 1
    assert len(fake.calls_to("chat.update")) == 1


async def test_reject_opens_a_modal_then_rejects_with_the_reason(fake, core, surface):
    await fake.send_envelope("interactive", click(kit.ACTION_REJECT, 7, "U_ALICE"))
    opened = await fake.wait_for("views.open")
    view = opened.args["view"]
    assert view["callback_id"] == kit.VIEW_REJECT
    empty = await fake.send_envelope("interactive", submission(view, "U_ALICE", {kit.REASON_BLOCK: typed("  ")}))
    assert empty["payload"]["response_action"] == "errors"
    assert core.rejected == []
    ack = await fake.send_envelope("interactive", submission(view, "U_ALICE", {kit.REASON_BLOCK: typed("wrong host")}))
    assert not ack.get("payload")
    update = await fake.wait_for("chat.update")
    assert core.rejected == [(7, "alice", "wrong host")]
    assert fake.calls_to("chat.postEphemeral")[0].args["text"] == "Rejected task #7."
    assert "rejected" in update.args["blocks"][0]["text"]["text"]
    assert fake.calls_to("chat.postMessage") == []


async def test_edit_modal_refuses_out_of_bounds_and_passes_in_bounds_edits(fake, core, surface):
    await fake.send_envelope("interactive", click(kit.ACTION_EDIT, 7, "U_ALICE"))
    view = (await fake.wait_for("views.open")).args["view"]
    assert view["callback_id"] == kit.VIEW_EDIT
    block = next(b for b in view["blocks"] if b.get("block_id") == "edit.0.keep")
    assert block["element"]["initial_value"] == "5"
    assert block["hint"]["text"] == "a whole number from 1 to 10"  # the words Discord and the core use too

    refused = await fake.send_envelope("interactive", submission(view, "U_ALICE", {"edit.0.keep": typed("50")}))
    assert refused["payload"] == {"response_action": "errors",
                                  "errors": {"edit.0.keep": "50 is above the maximum 10"}}
    assert core.executed == []

    await fake.send_envelope("interactive", submission(view, "U_ALICE", {"edit.0.keep": typed("8")}))
    answer = await fake.wait_for("chat.postEphemeral")
    assert core.executed == [(7, "alice", {"rotate": {"keep": 8}})]
    assert answer.args["text"] == "Approved task #7: 1 step ran. Edits: rotate.keep 5 → 8."


async def test_critical_approval_needs_the_typed_confirmation(fake, core, surface):
    await fake.send_envelope("interactive", click(kit.ACTION_APPROVE, 9, "U_ALICE"))
    view = (await fake.wait_for("views.open")).args["view"]
    assert view["callback_id"] == kit.VIEW_CONFIRM
    assert core.executed == []
    wrong = await fake.send_envelope("interactive", submission(view, "U_ALICE", {kit.CONFIRM_BLOCK: typed("yes")}))
    assert wrong["payload"]["errors"] == {kit.CONFIRM_BLOCK: "Type exactly: approve 9"}
    assert core.executed == []
    await fake.send_envelope("interactive", submission(view, "U_ALICE", {kit.CONFIRM_BLOCK: typed("approve 9")}))
    await fake.wait_for("chat.update")
    assert core.executed == [(9, "alice", None)]


async def test_details_answers_the_clicker_only(fake, surface):
    await fake.send_envelope("interactive", click(kit.ACTION_DETAILS, 7, "U_VIEW"))
    details = await fake.wait_for("chat.postEphemeral")
    assert details.args["user"] == "U_VIEW"
    assert "Task #7 · disk-cleanup" in details.args["text"]


async def test_undo_after_steps_ran(fake, core, surface):
    await fake.send_envelope("interactive", click(kit.ACTION_APPROVE, 7, "U_ALICE"))
    await fake.wait_for("chat.update")
    await fake.send_envelope("interactive", click(kit.ACTION_UNDO, 7, "U_CAROL"))
    await fake.wait_for("chat.update", 2)
    assert core.undone == [7]
    answer = fake.calls_to("chat.postEphemeral")[1]
    assert (answer.args["user"], answer.args["text"]) == ("U_CAROL", "Rolled back task #7.")


@pytest.mark.parametrize(("text", "expected", "public"), [
    ("help", "`/ops status`", False),
    ("", "Usage: `/ops &lt;command&gt;`", False),  # escaped for mrkdwn
    ("stauts", "Did you mean `/ops status`?", False),
    ("status", "Kill switch off", False),
    ("tasks", "#7 needs approval · disk-cleanup", False),
    ("show 7", "Task #7 · disk-cleanup v3", False),
    ("approve 7", "Approved task #7", True),
    ("reject 7 not now", "Rejected task #7", True),
    ("run disk-cleanup host=db-01", "Started task #99", True),
    ("pause freeze", "Kill switch ON (paused by alice: freeze)", True),
    ("resume", "Kill switch off", True),
    ("undo 7", "Not done: Task #7 has nothing to undo.", False),
    ("digest", "Posting the digest of the last 24 hours, with its 7-day chart, to slack C_DIGEST now.", False),
])
async def test_ops_subcommands(fake, surface, text, expected, public):
    ack = await fake.send_envelope("slash_commands", slash(text, "U_ALICE", fake.response_url("k")))
    assert "envelope_id" in ack
    reply = await fake.wait_for_response()
    assert expected in reply["text"]
    assert reply["response_type"] == ("in_channel" if public else "ephemeral")


async def test_app_mention_answers_with_help_in_thread(fake, surface):
    await fake.send_envelope("events_api", mention("Ev1", "1700000000.000500"))
    reply = await fake.wait_for("chat.postMessage")
    assert reply.args["thread_ts"] == "1700000000.000500"
    assert "`/ops status`" in reply.args["text"]


async def test_event_redelivery_in_socket_mode_is_handled_once(fake, surface):
    await fake.send_envelope("events_api", mention("Ev1", "1700000000.000500"))
    await fake.send_envelope("events_api", mention("Ev1", "1700000000.000500"), retry_attempt=1)
    await fake.send_envelope("events_api", mention("Ev2", "1700000000.000600"))
    await fake.wait_for("chat.postMessage", 2)
    assert sorted(c.args["thread_ts"] for c in fake.calls_to("chat.postMessage")) == [
        "1700000000.000500", "1700000000.000600"]


async def test_after_slack_refreshes_the_socket_commands_still_arrive(fake, surface, core):
    await fake.refresh_socket()

    assert len(fake.calls_to("apps.connections.open")) == 2  # a new socket URL, as Slack requires
    await fake.send_envelope("interactive", click(kit.ACTION_APPROVE, 7, "U_ALICE"))  # on the new socket
    await fake.wait_for("chat.update")
    assert core.executed == [(7, "alice", None)]


async def test_rate_limited_post_is_retried_transparently(fake, core):
    metrics = Metrics()
    surface = make_surface(fake, core, metrics=metrics)
    fake.fail_next("chat.postMessage", status=429, retry_after=0)
    ref = await surface.post_proposal(make_proposal(7), "C_X")
    assert len(fake.calls_to("chat.postMessage")) == 2
    assert ref.channel == "C_X"
    assert metrics.chat_deliveries.labels(surface="slack", outcome="sent")._value.get() == 1


async def test_slack_errors_become_delivery_errors_with_advice(fake, core):
    metrics = Metrics()
    surface = make_surface(fake, core, metrics=metrics)
    fake.fail_next("chat.postMessage", error="channel_not_found")
    with pytest.raises(SlackDeliveryError, match=r"channel_not_found; check chat\.slack routes") as info:
        await surface.post_proposal(make_proposal(7), "C_GONE")
    assert info.value.error == "channel_not_found"
    assert metrics.chat_deliveries.labels(surface="slack", outcome="failed")._value.get() == 1


async def test_slack_down_is_a_delivery_error(core):
    async with FakeSlack() as fake:
        surface = make_surface(fake, core, api_retries=0)
    with pytest.raises(SlackDeliveryError, match="Slack may be down"):
        await surface.post_notice(None, "hello")


async def test_notice_defuses_mentions(fake, surface):
    await surface.post_notice(None, "digest <!channel> @everyone")
    text = fake.calls_to("chat.postMessage")[0].args["text"]
    assert "<!channel>" not in text and "@everyone" not in text


async def test_stop_is_idempotent(fake, core):
    surface = make_surface(fake, core)
    await surface.start()
    await surface.stop()
    await surface.stop()


async def test_a_shadow_proposal_is_marked_and_carries_no_acting_button(fake, surface):
    # Shadow mode (bot/loop/shadow.py): even a proposal that looks approvable and undoable gets only Details.
    shadow = make_proposal(7).model_copy(update={"shadow": True, "can_undo": True})
    await surface.post_proposal(shadow, None)

    blocks = fake.calls_to("chat.postMessage")[0].args["blocks"]
    assert blocks[0]["text"]["text"] == ("Task #7 · disk-cleanup v3 · needs approval · "
                                         "shadow: proposed only, nothing will run")
    assert [a["action_id"] for a in blocks[-1]["elements"]] == [kit.ACTION_DETAILS]
