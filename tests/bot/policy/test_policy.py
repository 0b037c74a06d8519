from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from bot.model.proposals import Category, Decision, RiskBand, RiskScore
from bot.policy.autonomy import Autonomy
from bot.policy.changewindows import ChangeWindow, Freeze, next_opening
from bot.policy.identity import SYSTEM, Actor
from bot.policy.rules import (
    PolicyConfig,
    PolicyContext,
    StepFacts,
    autonomy_for,
    check_approver,
    decide_step,
    describe_policy,
    explain_decision,
    outside_change_window,
    quorum_reached,
    tier_of,
)

# A Wednesday, in winter (CET, UTC+1).
NOW = datetime(2024, 1, 10, 12, 0, tzinfo=UTC)
SCORES = {RiskBand.low: 10, RiskBand.medium: 30, RiskBand.high: 60, RiskBand.critical: 90}


def _risk(band: RiskBand) -> RiskScore:
    return RiskScore(score=SCORES[band], band=band)


def _facts(category: Category = Category.write_reversible, band: RiskBand = RiskBand.low, **kw: Any) -> StepFacts:
    return StepFacts(
        tool=kw.pop("tool", "flags.set"),
        category=category,
        playbook_id=kw.pop("playbook_id", "flag-rollback"),
        playbook_autonomy_cap=kw.pop("playbook_autonomy_cap", None),
        risk=_risk(band),
    )


def _ctx(environment: str = "dev", **kw: Any) -> PolicyContext:
    return PolicyContext(environment=environment, now=kw.pop("now", NOW), **kw)


def _cfg(**data: Any) -> PolicyConfig:
    return PolicyConfig.model_validate(data)


def _actor(actor_id: str, *roles: str) -> Actor:
    return Actor(id=actor_id, display=actor_id.title(), roles=frozenset(roles), via="slack")


# --- config ---------------------------------------------------------------------------------


def test_empty_section_gives_safe_defaults() -> None:
    cfg = _cfg()
    assert cfg.autonomy_ceiling is Autonomy.L2
    assert cfg.environment_cap("prod") is Autonomy.L1
    assert cfg.environment_cap("dev") is Autonomy.L2
    assert cfg.environment_cap("somewhere-new") is Autonomy.L1
    assert cfg.tiers[4].approvals_required == 2
    assert cfg.tiers[4].change_window_required


def test_config_from_yaml_accepts_level_strings_named_windows_and_unquoted_times() -> None:
    text = """
autonomy_ceiling: L3
environments:
  prod: {autonomy_cap: l1}
  staging: {autonomy_cap: 3}
tool_caps: {"shell.*": L1}
change_windows:
  weekend:
    timezone: Europe/Berlin
    days: [sat, sun]
    start: 22:00
    end: "06:00"
    environments: [prod]
freezes:
  q4-freeze:
    start: 2024-12-20T00:00:00+01:00
    end: 2025-01-06T00:00:00+01:00
    allow_tiers: [1]
rate_limits:
  tools: {"flags.set": {max: 3, per_s: 3600}}
"""
    cfg = PolicyConfig.model_validate(yaml.safe_load(text))
    assert cfg.environment_cap("staging") is Autonomy.L3
    assert cfg.tool_caps["shell.*"] is Autonomy.L1
    window = cfg.change_windows[0]
    assert (window.name, window.start, window.end) == ("weekend", 22 * 60, 6 * 60)
    assert window.crosses_midnight
    assert cfg.freezes[0].name == "q4-freeze"
    assert cfg.rate_limits.for_tool("flags.set").max == 3  # type: ignore[union-attr]
    assert cfg.rate_limits.for_playbook("anything") is None


def test_config_dumps_levels_and_times_as_people_write_them_and_loads_back() -> None:
    cfg = _cfg(change_windows={"all-day": {"start": "00:00", "end": "24:00"}}, freezes=FREEZE)
    dumped = cfg.model_dump(mode="json")
    assert dumped["environments"]["prod"]["autonomy_cap"] == "L1"
    assert (dumped["change_windows"][0]["start"], dumped["change_windows"][0]["end"]) == ("00:00", "24:00")
    assert PolicyConfig.model_validate(dumped) == cfg


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"surprise": 1}, "Extra inputs"),
        ({"environments": {"prod": {"autonomy_cap": "L5"}}}, "not one of L0"),
        ({"environments": {"prod": {"autonomy_cap": "L3"}}}, "above autonomy_ceiling L2"),
        ({"tiers": {3: {"approver_roles": ["sre-lead"], "separation_of_duties": False}}}, "cannot be false"),
        ({"tiers": {5: {"approver_roles": ["x"]}}}, "exactly 1, 2, 3 and 4"),
        ({"tiers": {2: {"approver_roles": []}}}, "at least 1"),
        ({"tier_map": {"write_reversible": {"high": 7}}}, "use a tier from 1 to 4"),
        ({"change_windows": {"w": {"start": "10:00", "end": "10:00"}}}, "starts and ends at 10:00"),
        ({"change_windows": {"w": {"start": "25:00", "end": "10:00"}}}, "outside 00:00"),
        ({"change_windows": {"w": {"start": "10:00", "end": "11:00", "timezone": "Mars/Olympus"}}}, "IANA"),
        ({"change_windows": {"w": {"start": "10:00", "end": "11:00", "days": ["someday"]}}}, "someday"),
        ({"freezes": {"f": {"start": "2024-12-20T00:00:00", "end": "2024-12-21T00:00:00+00:00"}}}, "timezone"),
        (
            {"freezes": {"f": {"start": "2024-12-21T00:00:00+00:00", "end": "2024-12-20T00:00:00+00:00"}}},
            "before it starts",
        ),
        ({"rate_limits": {"tools": {"x": {"max": 1}}}}, "per_s"),
    ],
)
def test_invalid_config_is_refused_with_a_message_naming_the_problem(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _cfg(**data)


def test_tiers_and_tier_map_merge_over_the_defaults() -> None:
    cfg = _cfg(
        tiers={2: {"approvals_required": 2, "approver_roles": ["sre"]}},
        tier_map={"write_reversible": {"high": 4}},
    )
    assert cfg.tiers[2].approver_roles == ["sre"]
    assert cfg.tiers[4].approver_roles == ["sre-lead"]  # untouched default
    assert tier_of(cfg, Category.write_reversible, RiskBand.high) == 4
    assert tier_of(cfg, Category.write_reversible, RiskBand.medium) == 2  # untouched default


def test_default_tier_map() -> None:
    cfg = _cfg()
    assert [tier_of(cfg, Category.write_reversible, b) for b in RiskBand] == [1, 2, 3, 4]
    assert [tier_of(cfg, Category.write_irreversible, b) for b in RiskBand] == [2, 3, 4, 4]


# --- autonomy -------------------------------------------------------------------------------


def test_effective_autonomy_is_the_lowest_cap_and_names_it() -> None:
    cfg = _cfg(autonomy_ceiling="L4", environments={"dev": {"autonomy_cap": "L4"}}, tool_caps={"shell.*": "L1"})
    assert autonomy_for(cfg, environment="dev").level is Autonomy.L4
    playbook = autonomy_for(cfg, environment="dev", playbook_id="pb", playbook_cap=Autonomy.L3, tool="flags.set")
    assert (playbook.level, playbook.bound_by) == (Autonomy.L3, "playbook:pb")
    tool = autonomy_for(cfg, environment="dev", playbook_id="pb", playbook_cap=Autonomy.L3, tool="shell.run")
    assert (tool.level, tool.bound_by) == (Autonomy.L1, "tool:shell.*")
    assert "tool:shell.*" in tool.reason


def test_ceiling_binds_before_an_equal_environment_cap() -> None:
    result = autonomy_for(_cfg(), environment="dev")
    assert (result.level, result.bound_by) == (Autonomy.L2, "ceiling")


def test_kill_switch_takes_autonomy_to_l0() -> None:
    result = autonomy_for(_cfg(), environment="dev", kill_switch=True)
    assert (result.level, result.bound_by) == (Autonomy.L0, "kill_switch")


@pytest.mark.parametrize(
    ("rate", "runs", "expected"),
    [(0.75, 4, Autonomy.L1), (0.5, 10, Autonomy.L2), (1.0, 3, Autonomy.L2), (0.51, 100, Autonomy.L1)],
)
def test_failing_tool_loses_one_level_only_above_the_rate_and_with_enough_runs(
    rate: float, runs: int, expected: Autonomy
) -> None:
    result = autonomy_for(_cfg(), environment="dev", tool="flags.set", tool_failure_rate=rate, tool_runs=runs)
    assert result.level is expected
    if expected is Autonomy.L1:
        assert result.bound_by == "anomaly:tool:flags.set"


def test_anomaly_never_goes_below_l0() -> None:
    cfg = _cfg(tool_caps={"flags.set": "L0"})
    result = autonomy_for(cfg, environment="dev", tool="flags.set", tool_failure_rate=1.0, tool_runs=10)
    assert result.level is Autonomy.L0


# --- decide_step: reads ---------------------------------------------------------------------


@pytest.mark.parametrize("kill_switch", [False, True])
def test_reads_run_at_l0_and_with_the_kill_switch(kill_switch: bool) -> None:
    cfg = _cfg(tool_caps={"metrics.query": "L0"})
    decision = decide_step(
        cfg, _facts(Category.read, RiskBand.critical, tool="metrics.query"), _ctx("prod", kill_switch=kill_switch)
    )
    assert (decision.verdict, decision.rule) == ("allow", "read")


def test_reads_are_rate_limited_too() -> None:
    cfg = _cfg(rate_limits={"tools": {"logs.search": {"max": 10, "per_s": 60}}})
    facts = _facts(Category.read, tool="logs.search")
    assert decide_step(cfg, facts, _ctx(recent_runs_tool=9)).verdict == "allow"
    decision = decide_step(cfg, facts, _ctx(recent_runs_tool=10))
    assert (decision.verdict, decision.rule) == ("deny", "rate_limit:tool:logs.search(10/60s)")


# --- decide_step: writes --------------------------------------------------------------------


def test_kill_switch_denies_writes() -> None:
    decision = decide_step(_cfg(), _facts(), _ctx(kill_switch=True))
    assert (decision.verdict, decision.rule) == ("deny", "kill_switch")


def test_l0_denies_writes_and_explains_which_cap() -> None:
    decision = decide_step(_cfg(tool_caps={"flags.*": "L0"}), _facts(), _ctx())
    assert (decision.verdict, decision.rule) == ("deny", "autonomy:L0")
    assert "tool:flags.*" in decision.reason


def test_reversible_low_risk_runs_automatically_at_l2() -> None:
    decision = decide_step(_cfg(), _facts(band=RiskBand.medium), _ctx("dev"))
    assert (decision.verdict, decision.rule) == ("allow", "autonomy:L2:auto_reversible")
    assert decision.approvals_required == 0


def test_reversible_high_risk_needs_approval_even_at_l2() -> None:
    decision = decide_step(_cfg(), _facts(band=RiskBand.high), _ctx("dev"))
    assert (decision.verdict, decision.rule) == ("needs_approval", "tier3")
    assert (decision.approvals_required, decision.roles) == (1, ["sre-lead", "oncall"])
    assert "requester cannot approve" in decision.reason
    # dev runs at L2, enough for a reversible write: the band, not the autonomy, needs the human.
    assert "high risk is too high to run automatically" in decision.reason
    assert "autonomy is" not in decision.reason


def test_l1_environment_needs_approval_for_every_write() -> None:
    decision = decide_step(_cfg(), _facts(band=RiskBand.low), _ctx("prod"))
    assert (decision.verdict, decision.rule) == ("needs_approval", "tier1")
    assert "autonomy is L1" in decision.reason


def test_playbook_cap_can_hold_a_step_back() -> None:
    decision = decide_step(_cfg(), _facts(playbook_autonomy_cap=Autonomy.L1), _ctx("dev"))
    assert decision.verdict == "needs_approval"
    assert "playbook:flag-rollback" in decision.reason


def test_failing_tool_loses_its_automatic_run() -> None:
    decision = decide_step(_cfg(), _facts(), _ctx("dev", tool_failure_rate=0.8, tool_runs=5))
    assert decision.verdict == "needs_approval"
    assert "failed 80% of its last 5 runs" in decision.reason


L4_DEV = {"autonomy_ceiling": "L4", "environments": {"dev": {"autonomy_cap": "L4"}}}
ALWAYS_OPEN = {"always": {"start": "00:00", "end": "24:00"}}


def test_irreversible_runs_automatically_only_at_l4() -> None:
    at_l4 = decide_step(_cfg(**L4_DEV), _facts(Category.write_irreversible, RiskBand.medium), _ctx("dev"))
    assert (at_l4.verdict, at_l4.rule) == ("allow", "autonomy:L4:auto_irreversible")
    at_l3 = decide_step(
        _cfg(**L4_DEV),
        _facts(Category.write_irreversible, RiskBand.medium, playbook_autonomy_cap=Autonomy.L3),
        _ctx("dev"),
    )
    assert (at_l3.verdict, at_l3.rule) == ("needs_approval", "tier3")


def test_critical_risk_never_runs_automatically() -> None:
    cfg = _cfg(**L4_DEV, change_windows=ALWAYS_OPEN)
    for category in (Category.write_reversible, Category.write_irreversible):
        decision = decide_step(cfg, _facts(category, RiskBand.critical), _ctx("dev"))
        assert (decision.verdict, decision.rule) == ("needs_approval", "tier4")
        assert "critical risk never runs automatically" in decision.reason


def test_tier4_outside_a_change_window_is_denied_with_the_next_opening() -> None:
    cfg = _cfg(change_windows={"sat-night": {"timezone": "Europe/Berlin", "days": ["sat"], "start": "22:00",
                                             "end": "02:00"}})
    decision = decide_step(cfg, _facts(Category.write_irreversible, RiskBand.high), _ctx("prod"))
    assert (decision.verdict, decision.rule) == ("deny", "change_window:tier4")
    assert "2024-01-13T22:00:00+01:00" in decision.reason


def test_tier4_with_no_window_configured_is_denied() -> None:
    decision = decide_step(_cfg(), _facts(Category.write_irreversible, RiskBand.high), _ctx("prod"))
    assert decision.rule == "change_window:tier4"
    assert "no window is configured for prod" in decision.reason


def test_tier4_inside_a_change_window_needs_two_sre_leads() -> None:
    cfg = _cfg(change_windows={"wed": {"days": ["wed"], "start": "11:00", "end": "13:00", "environments": ["prod"]}})
    decision = decide_step(cfg, _facts(Category.write_irreversible, RiskBand.high), _ctx("prod"))
    assert (decision.verdict, decision.rule) == ("needs_approval", "tier4")
    assert (decision.approvals_required, decision.roles) == (2, ["sre-lead"])
    # the same window does not cover staging
    other = decide_step(cfg, _facts(Category.write_irreversible, RiskBand.high), _ctx("staging"))
    assert other.rule == "change_window:tier4"


def test_l4_cannot_skip_the_change_window_of_tier4() -> None:
    decision = decide_step(_cfg(**L4_DEV), _facts(Category.write_irreversible, RiskBand.high), _ctx("dev"))
    assert (decision.verdict, decision.rule) == ("deny", "change_window:tier4")


FREEZE = {
    "q4-freeze": {
        "start": "2024-01-01T00:00:00+00:00",
        "end": "2024-01-15T00:00:00+00:00",
        "environments": ["prod", "dev"],
        "allow_tiers": [1],
        "reason": "holiday traffic",
    }
}


def test_freeze_denies_writes_in_its_environments_and_period() -> None:
    cfg = _cfg(freezes=FREEZE)
    decision = decide_step(cfg, _facts(band=RiskBand.medium), _ctx("dev"))
    assert (decision.verdict, decision.rule) == ("deny", "freeze:q4-freeze")
    assert "holiday traffic" in decision.reason
    assert "only tiers 1 may change" in decision.reason
    assert decide_step(cfg, _facts(band=RiskBand.medium), _ctx("staging")).verdict == "allow"
    after = decide_step(cfg, _facts(band=RiskBand.medium), _ctx("dev", now=datetime(2024, 1, 15, tzinfo=UTC)))
    assert after.verdict == "allow"


def test_freeze_lets_exempt_tiers_through_to_the_remaining_rules() -> None:
    cfg = _cfg(freezes=FREEZE)
    assert decide_step(cfg, _facts(band=RiskBand.low), _ctx("dev")).rule == "autonomy:L2:auto_reversible"
    assert decide_step(cfg, _facts(band=RiskBand.low), _ctx("prod")).rule == "tier1"


def test_freeze_does_not_stop_reads() -> None:
    assert decide_step(_cfg(freezes=FREEZE), _facts(Category.read), _ctx("prod")).verdict == "allow"


def test_rate_limits_per_tool_and_per_playbook() -> None:
    cfg = _cfg(
        rate_limits={
            "tools": {"flags.set": {"max": 3, "per_s": 3600}},
            "playbooks": {"flag-rollback": {"max": 5, "per_s": 600}},
        }
    )
    assert decide_step(cfg, _facts(), _ctx(recent_runs_tool=2, recent_runs_playbook=4)).verdict == "allow"
    tool = decide_step(cfg, _facts(), _ctx(recent_runs_tool=3))
    assert (tool.verdict, tool.rule) == ("deny", "rate_limit:tool:flags.set(3/3600s)")
    assert "policy.rate_limits.tools.flags.set" in tool.reason
    playbook = decide_step(cfg, _facts(), _ctx(recent_runs_playbook=5))
    assert (playbook.verdict, playbook.rule) == ("deny", "rate_limit:playbook:flag-rollback(5/600s)")


def test_kill_switch_wins_over_every_other_rule() -> None:
    cfg = _cfg(freezes=FREEZE, rate_limits={"tools": {"flags.set": {"max": 0, "per_s": 60}}})
    assert decide_step(cfg, _facts(), _ctx("dev", kill_switch=True)).rule == "kill_switch"


# --- approvals ------------------------------------------------------------------------------


def _needs(tier: int) -> Decision:
    cfg = _cfg()
    rule = cfg.tiers[tier]
    return Decision(
        verdict="needs_approval", rule=f"tier{tier}", reason="r",
        approvals_required=rule.approvals_required, roles=list(rule.approver_roles),
    )


def test_approver_with_a_role_may_approve() -> None:
    assert check_approver(_cfg(), _needs(3), _actor("bob", "oncall"), "alice", 3) is None


def test_approver_without_a_role_is_told_which_roles_may() -> None:
    refusal = check_approver(_cfg(), _needs(4), _actor("bob", "oncall", "sre"), "alice", 4)
    assert refusal is not None
    assert "sre-lead" in refusal
    assert "Bob has oncall, sre" in refusal


def test_requester_cannot_approve_their_own_tier3_step() -> None:
    refusal = check_approver(_cfg(), _needs(3), _actor("alice", "sre-lead"), "alice", 3)
    assert refusal is not None
    assert "separation of duties" in refusal


def test_requester_may_approve_their_own_tier2_step_unless_the_tier_opts_in() -> None:
    assert check_approver(_cfg(), _needs(2), _actor("alice", "sre"), "alice", 2) is None
    strict = _cfg(tiers={2: {"approver_roles": ["oncall", "sre"], "separation_of_duties": True}})
    assert check_approver(strict, _needs(2), _actor("alice", "sre"), "alice", 2) is not None


def test_the_bot_never_approves() -> None:
    system = SYSTEM.model_copy(update={"roles": frozenset({"system", "sre-lead"})})
    assert check_approver(_cfg(), _needs(2), system, "alice", 2) is not None


@pytest.mark.parametrize("verdict", ["allow", "deny"])
def test_only_steps_that_need_approval_can_be_approved(verdict: str) -> None:
    decision = Decision(verdict=verdict, rule="x", reason="r")  # type: ignore[arg-type]
    refusal = check_approver(_cfg(), decision, _actor("bob", "sre-lead"), "alice", 1)
    assert refusal is not None
    assert "nothing to approve" in refusal


def test_quorum_counts_each_person_once() -> None:
    decision = _needs(4)
    assert not quorum_reached(decision, {"bob"})
    assert not quorum_reached(decision, ["bob", "bob"])
    assert quorum_reached(decision, {"bob", "carol"})
    assert quorum_reached(Decision(verdict="allow", rule="x", reason="r"), set())
    assert not quorum_reached(Decision(verdict="deny", rule="x", reason="r"), {"a", "b", "c"})


# --- change windows -------------------------------------------------------------------------


def _window(**kw: Any) -> ChangeWindow:
    return ChangeWindow.model_validate({"name": "w", "timezone": "Europe/Berlin", **kw})


def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def test_window_follows_local_wall_clock_across_the_dst_offset_change() -> None:
    window = _window(days=["sat"], start="09:00", end="17:00")
    # winter: Berlin is UTC+1, so 09:00 local is 08:00 UTC
    assert not window.is_open(_utc(2024, 1, 13, 7, 59))
    assert window.is_open(_utc(2024, 1, 13, 8, 0))
    assert not window.is_open(_utc(2024, 1, 13, 16, 0))
    # summer: UTC+2, so 09:00 local is 07:00 UTC
    assert window.is_open(_utc(2024, 7, 13, 7, 0))
    assert not window.is_open(_utc(2024, 7, 13, 15, 0))


def test_window_over_the_spring_forward_night_is_an_hour_shorter() -> None:
    # 2024-03-31: Berlin clocks jump from 02:00 CET to 03:00 CEST (01:00 UTC).
    window = _window(days=["sun"], start="01:00", end="04:00")
    assert not window.is_open(_utc(2024, 3, 30, 23, 59))  # 00:59 CET
    assert window.is_open(_utc(2024, 3, 31, 0, 0))  # 01:00 CET
    assert window.is_open(_utc(2024, 3, 31, 1, 59))  # 03:59 CEST
    assert not window.is_open(_utc(2024, 3, 31, 2, 0))  # 04:00 CEST: two real hours after opening


def test_window_over_the_fall_back_night_is_an_hour_longer() -> None:
    # 2024-10-27: Berlin clocks fall back from 03:00 CEST to 02:00 CET (01:00 UTC).
    window = _window(days=["sun"], start="01:00", end="04:00")
    assert window.is_open(_utc(2024, 10, 26, 23, 0))  # 01:00 CEST
    assert window.is_open(_utc(2024, 10, 27, 2, 59))  # 03:59 CET
    assert not window.is_open(_utc(2024, 10, 27, 3, 0))  # 04:00 CET: four real hours after opening


def test_window_starting_in_the_skipped_hour_opens_at_the_switch() -> None:
    window = _window(days=["sun"], start="02:30", end="05:00")
    assert not window.is_open(_utc(2024, 3, 31, 0, 59))  # 01:59 CET
    assert window.is_open(_utc(2024, 3, 31, 1, 0))  # 03:00 CEST
    opens = window.next_opening(_utc(2024, 3, 30, 12, 0))
    assert opens is not None
    assert opens.astimezone(UTC) == _utc(2024, 3, 31, 1, 0)


def test_window_crossing_midnight_belongs_to_the_day_it_starts() -> None:
    window = _window(days=["fri"], start="22:00", end="02:00")
    assert window.crosses_midnight
    assert not window.is_open(_utc(2024, 1, 12, 20, 59))  # Fri 21:59 CET
    assert window.is_open(_utc(2024, 1, 12, 21, 0))  # Fri 22:00
    assert window.is_open(_utc(2024, 1, 13, 0, 59))  # Sat 01:59
    assert not window.is_open(_utc(2024, 1, 13, 1, 0))  # Sat 02:00
    assert not window.is_open(_utc(2024, 1, 11, 23, 30))  # Fri 00:30: that night started on Thursday
    assert not window.is_open(_utc(2024, 1, 13, 22, 0))  # Sat 23:00


def test_window_crossing_midnight_on_the_spring_forward_night() -> None:
    window = _window(days=["sat"], start="22:00", end="04:00")
    assert window.is_open(_utc(2024, 3, 30, 21, 0))  # Sat 22:00 CET
    assert window.is_open(_utc(2024, 3, 31, 1, 30))  # Sun 03:30 CEST
    assert not window.is_open(_utc(2024, 3, 31, 2, 0))  # Sun 04:00 CEST


def test_window_until_2400_and_day_ranges_that_wrap() -> None:
    window = _window(days=["fri-mon"], start="20:00", end="24:00")
    assert window.days == ["mon", "fri", "sat", "sun"]
    assert not window.crosses_midnight
    assert window.is_open(_utc(2024, 1, 14, 22, 59))  # Sun 23:59 CET
    assert not window.is_open(_utc(2024, 1, 14, 23, 0))  # Mon 00:00
    assert not window.is_open(_utc(2024, 1, 16, 20, 0))  # Tue 21:00


def test_next_opening_picks_the_soonest_window_for_the_environment() -> None:
    windows = [
        _window(name="a", days=["sat"], start="10:00", end="12:00"),
        _window(name="b", timezone="America/New_York", days=["thu"], start="09:00", end="10:00"),
        _window(name="c", days=["wed"], start="14:00", end="15:00", environments=["staging"]),
    ]
    opens = next_opening(windows, "prod", NOW)
    assert opens is not None
    assert opens.astimezone(UTC) == _utc(2024, 1, 11, 14, 0)  # Thu 09:00 EST
    assert next_opening(windows, "staging", NOW).astimezone(UTC) == _utc(2024, 1, 10, 13, 0)  # type: ignore[union-attr]


def test_outside_change_window_only_when_windows_apply() -> None:
    cfg = _cfg(change_windows={"wed": {"days": ["wed"], "start": "08:00", "end": "09:00", "environments": ["prod"]}})
    assert outside_change_window(cfg, "prod", NOW)
    assert not outside_change_window(cfg, "dev", NOW)  # no window covers dev: nothing to be outside of
    assert not outside_change_window(cfg, "prod", NOW.replace(hour=8, minute=30))  # the zone defaults to UTC


def test_freeze_interval_is_start_inclusive_end_exclusive() -> None:
    freeze = Freeze.model_validate(FREEZE["q4-freeze"] | {"name": "q4"})
    assert freeze.is_active(freeze.start)
    assert not freeze.is_active(freeze.end)
    assert freeze.is_active(freeze.end - timedelta(microseconds=1))


# --- explanations ---------------------------------------------------------------------------


def test_describe_policy_lists_what_people_need_to_know() -> None:
    cfg = _cfg(
        change_windows={"sat-night": {"timezone": "Europe/Berlin", "days": ["sat"], "start": "22:00", "end": "02:00"}},
        freezes=FREEZE,
        rate_limits={"tools": {"flags.set": {"max": 3, "per_s": 3600}}},
        tool_caps={"shell.run": "L1"},
    )
    text = describe_policy(cfg)
    for expected in (
        "Autonomy ceiling: L2",
        "prod: L1",
        "shell.run: L1",
        "tier 4: 2 of sre-lead",
        "only inside a change window",
        "sat-night: sat 22:00-02:00 next day Europe/Berlin",
        "q4-freeze",
        "tool flags.set: at most 3 runs per 3600s",
        "critical risk never runs automatically",
    ):
        assert expected in text


def test_explain_decision_says_verdict_rule_and_reason() -> None:
    assert explain_decision(_needs(4)) == "Needs 2 approvals from sre-lead [tier4]: r"
    assert explain_decision(Decision(verdict="deny", rule="kill_switch", reason="Paused.")) == (
        "Denied [kill_switch]: Paused."
    )
    assert explain_decision(Decision(verdict="allow", rule="read", reason="Reads.")).startswith("Allowed [read]")
