import pytest

from bot.chat.chatops import OpsCommand, parse_ops, run_ops
from bot.errors import ConfirmationRequired
from bot.model.proposals import RiskBand
from bot.policy.identity import Actor
from tests.fakes.core import APPROVER, VIEWER, FakeCommands, make_proposal


@pytest.mark.parametrize(("text", "expected"), [
    ("", OpsCommand(name="help")),
    ("help", OpsCommand(name="help")),
    ("STATUS", OpsCommand(name="status")),
    ("tasks", OpsCommand(name="tasks")),
    ("show 12", OpsCommand(name="show", task_id=12)),
    ("show #12", OpsCommand(name="show", task_id=12)),
    ("approve 12", OpsCommand(name="approve", task_id=12)),
    ("approve 12 approve 12", OpsCommand(name="approve", task_id=12, reason="approve 12")),
    ("reject 12 wrong host", OpsCommand(name="reject", task_id=12, reason="wrong host")),
    ('reject 12 "wrong host"', OpsCommand(name="reject", task_id=12, reason="wrong host")),
    ("run disk-cleanup host=db-01 keep=5", OpsCommand(name="run", playbook="disk-cleanup",
                                                      args={"host": "db-01", "keep": "5"})),
    ("pause deploy freeze", OpsCommand(name="pause", reason="deploy freeze")),
    ("pause", OpsCommand(name="pause")),
    ("resume", OpsCommand(name="resume")),
    ("undo 4", OpsCommand(name="undo", task_id=4)),
    ("digest", OpsCommand(name="digest")),
])
def test_parse_ops(text, expected):
    assert parse_ops(text) == expected


@pytest.mark.parametrize(("text", "suggestion"), [
    ("stauts", "status"),
    ("aprove 3", "approve"),
    ("approve", "approve"),
    ("approve x", "approve"),
    ("reject 3", "reject"),
    ("run", "run"),
    ("run pb notakv", "run"),
    ("xyzzy", None),
])
def test_bad_input_becomes_help_with_a_suggestion(text, suggestion):
    cmd = parse_ops(text)
    assert cmd.name == "help"
    assert cmd.problem
    assert cmd.suggestion == suggestion


def test_unbalanced_quote_still_parses():
    assert parse_ops('reject 3 "oops').reason == '"oops'


async def test_unknown_subcommand_answers_help_with_did_you_mean():
    reply = await run_ops(parse_ops("stauts"), FakeCommands(), APPROVER)
    assert not reply.ok
    assert "Did you mean `/ops status`?" in reply.text
    assert "`/ops digest`" in reply.text


async def test_status_tasks_show_digest():
    core = FakeCommands(make_proposal(7))
    assert "Kill switch off" in (await run_ops(parse_ops("status"), core, APPROVER)).text
    assert "#7 needs approval · disk-cleanup" in (await run_ops(parse_ops("tasks"), core, APPROVER)).text
    shown = await run_ops(parse_ops("show 7"), core, APPROVER)
    assert shown.proposal is not None and shown.proposal.task_id == 7
    assert "Task #7" in shown.text
    assert "Posting the digest" in (await run_ops(parse_ops("digest"), core, APPROVER)).text
    await core.digest_jobs[-1]  # posted in the background: the reply does not wait for the chart
    assert core.digests_posted == 1


async def test_approve_reject_undo_go_to_the_core():
    core = FakeCommands(make_proposal(7), make_proposal(8))
    approved = await run_ops(parse_ops("approve 7"), core, APPROVER)
    assert approved.ok and approved.public
    assert core.executed == [(7, "alice", None)]
    assert approved.proposal.state == "completed"
    rejected = await run_ops(parse_ops("reject 8 not now"), core, APPROVER)
    assert core.rejected == [(8, "alice", "not now")]
    assert rejected.proposal.state == "rejected"
    await run_ops(parse_ops("undo 7"), core, APPROVER)
    assert core.undone == [7]


async def test_refusal_is_worded_and_nothing_runs():
    core = FakeCommands(make_proposal(7))
    reply = await run_ops(parse_ops("approve 7"), core, VIEWER)
    assert not reply.ok
    assert reply.text.startswith("Not done: victor is not an approver")
    assert core.executed == []


async def test_critical_approval_asks_for_the_phrase_then_accepts_it():
    core = FakeCommands(make_proposal(7, band=RiskBand.critical))
    reply = await run_ops(parse_ops("approve 7"), core, APPROVER)
    assert "To confirm, type `/ops approve 7 approve 7`." in reply.text
    assert core.executed == []
    reply = await run_ops(parse_ops("approve 7 approve 7"), core, APPROVER)
    assert reply.ok and core.executed


async def test_pause_resume_run():
    core = FakeCommands()
    paused = await run_ops(parse_ops("pause freeze"), core, APPROVER)
    assert "Kill switch ON (paused by alice: freeze)" in paused.text
    assert "Kill switch off" in (await run_ops(parse_ops("resume"), core, APPROVER)).text
    started = await run_ops(parse_ops("run disk-cleanup host=db-01"), core, APPROVER)
    assert started.text.startswith("Started task #99")
    assert core.runs == [("disk-cleanup", {"host": "db-01"}, "alice")]


async def test_unexpected_error_gives_correlation_id_not_exception_text():
    class Broken(FakeCommands):
        async def status(self):
            raise RuntimeError("db password is hunter2")

    reply = await run_ops(parse_ops("status"), Broken(), Actor(id="x", display="x"))
    assert not reply.ok
    assert "hunter2" not in reply.text
    assert "correlation id" in reply.text


def test_confirmation_required_keeps_phrase():
    assert ConfirmationRequired("m", phrase="p").phrase == "p"
