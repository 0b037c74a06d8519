from datetime import UTC, datetime

from bot.chat import wording
from bot.chat.commands import Status
from bot.errors import ConfirmationRequired, Forbidden
from bot.model.proposals import ApprovalView, Evidence, RiskBand
from tests.fakes.core import make_proposal


def test_neutralize_mentions_defuses_broadcasts_but_keeps_words():
    text = "ping @here and @everyone, <!channel> <!subteam^S1> <@U123> <@&42> @Channel"
    out = wording.neutralize_mentions(text)
    for raw in ("@here", "@everyone", "<!channel>", "<!subteam", "<@U123>", "<@&42>", "@Channel"):
        assert raw not in out
    assert out.replace(wording.ZWSP, "") == text


def test_neutralize_leaves_email_addresses_alone():
    assert wording.neutralize_mentions("ops@herewego.io") == "ops@herewego.io"


def test_truncate_keeps_limit_and_pointer():
    out = wording.truncate("x" * 500, 100, "(see `ooda show 7`)")
    assert len(out) == 100
    assert out.endswith("… (see `ooda show 7`)")
    assert wording.truncate("short", 100) == "short"


def test_approvals_line_counts_the_approvals_of_the_step_waiting_first():
    p = make_proposal()
    step = p.steps[0].model_copy(update={"decision": p.steps[0].decision.model_copy(update={"approvals_required": 3}),
                                         "approved_by": ["alice", "bob"]})
    p = p.model_copy(update={
        "approvals_required": 3, "steps": [step],
        "approvals": [ApprovalView(actor="alice", at=datetime(2026, 1, 5, tzinfo=UTC)),
                      ApprovalView(actor="bob", at=datetime(2026, 1, 5, tzinfo=UTC))],
    })
    assert wording.approvals_line(p) == "Approvals: 2 of 3: alice, bob · needs 1 more from approver"
    assert wording.approvals_line(make_proposal()) == "Approvals: 0 of 1 · needs 1 more from approver"


def test_step_lines_say_the_exact_action_then_the_decision():
    step = make_proposal().steps[0].model_copy(update={"params": {"argv": ["logrotate", "-f", "/etc/my conf"]}})
    first, detail = wording.step_lines(step)[:2]
    assert first == "1. rotate: `on the Ooda host: logrotate -f '/etc/my conf'`"
    assert detail.strip() == "shell.run · reversible · needs 1 approval from approver · approved 0 of 1"


def test_long_evidence_is_cut_with_pointer_to_show():
    p = make_proposal(evidence_snippet="y" * 5000)
    lines = wording.evidence_lines(p)
    assert "`ooda show 7`" in lines[0]
    assert len(lines[0]) < 500


def test_evidence_over_budget_is_counted():
    p = make_proposal().model_copy(update={"evidence": [Evidence(kind="log", title=f"e{i}", snippet="z" * 200)
                                                        for i in range(20)]})
    lines = wording.evidence_lines(p, budget=1000)
    assert lines[-1].startswith("… ")
    assert "more" in lines[-1]
    assert len(lines) < 20


def test_proposal_text_contains_every_part_and_no_live_mention():
    text = wording.proposal_text(make_proposal(band=RiskBand.critical))
    assert "Task #7 · disk-cleanup v3 · needs approval" in text
    assert "Risk 90/100 (critical)" in text
    assert "+30 environment: prod" in text
    assert "Blast radius: db-01 only" in text
    assert "restore rotated logs" in text
    assert "@here" not in text


def test_refusal_and_confirmation_wording():
    assert wording.refusal(Forbidden("bob is not an approver @everyone")) == (
        "Not done: bob is not an approver @" + wording.ZWSP + "everyone"
    )
    text = wording.refusal(ConfirmationRequired("critical", phrase="approve 7"))
    assert "Type `approve 7` to confirm." in text


def test_internal_error_gives_correlation_id_only():
    assert "abc123" in wording.internal_error("abc123")


def test_status_text_shows_kill_switch_and_failures():
    s = Status(paused=True, paused_by="alice", paused_reason="deploy", environment="prod", autonomy_cap="L2",
               open_tasks=3, needs_approval=1, recent_failures=["#3 timeout"])
    text = wording.status_text(s)
    assert "Kill switch ON (paused by alice: deploy)" in text
    assert "autonomy cap L2" in text
    assert "Open tasks: 3 (1 waiting for approval)" in text
    assert "#3 timeout" in text
    assert "Scheduled checks" not in text

    s.scheduled_checks = ["disk-pressure (0 * * * * UTC): next 2026-11-23T10:00+00:00"]
    assert wording.status_text(s).endswith(
        "Scheduled checks:\n  disk-pressure (0 * * * * UTC): next 2026-11-23T10:00+00:00")


def test_help_lists_every_subcommand_and_suggests():
    text = wording.help_text("/ops", suggestion="status", problem="Unknown command `stauts`.")
    assert text.startswith("Unknown command `stauts`.\nDid you mean `/ops status`?")
    for sub in ("status", "tasks", "show ID", "approve ID", "reject ID", "run PLAYBOOK", "pause", "resume",
                "undo ID", "digest"):
        assert f"`/ops {sub}" in text


def test_action_note():
    at = datetime(2026, 1, 5, 9, 1, tzinfo=UTC)
    assert wording.action_note("alice", "approved", "1 step ran", at) == (
        "alice approved at 2026-01-05 09:01 UTC: 1 step ran"
    )


def test_the_critical_risk_prompt_says_its_instruction_once():
    core_words = ConfirmationRequired("task 3 is critical risk (75/100): type `approve 3` to confirm", "approve 3")
    assert wording.refusal(core_words).count("approve 3") == 1
    terse = ConfirmationRequired("Task #3 is critical risk.", "approve 3")
    assert wording.refusal(terse) == "Not done: Task #3 is critical risk.\nType `approve 3` to confirm."


def test_a_cut_never_splits_a_word():
    text = "deployment shop/checkout: 2/3 ready, 1 pod in CrashLoopBackOff (last exit 137 OOMKilled), 14 restarts"
    out = wording.truncate(text, 60, "(more)")
    assert out.endswith("… (more)") and len(out) <= 60
    kept = out.removesuffix("… (more)").rstrip()
    assert text.startswith(kept) and text[len(kept)] in " ,"
