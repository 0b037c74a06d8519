"""Properties of the policy that must hold for every config, step, context and actor."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bot.model.proposals import Category, Decision, RiskBand, RiskScore
from bot.policy.autonomy import Autonomy
from bot.policy.changewindows import DAY_NAMES, ChangeWindow, active_freeze, open_window
from bot.policy.identity import Actor
from bot.policy.rules import (
    PolicyConfig,
    PolicyContext,
    StepFacts,
    autonomy_for,
    check_approver,
    decide_step,
    quorum_reached,
    tier_of,
)

ROLES = ["oncall", "sre", "sre-lead", "dba", "viewer"]
PEOPLE = ["alice", "bob", "carol", "dave"]
ENVIRONMENTS = ["dev", "staging", "prod", "qa"]
TOOLS = ["flags.set", "shell.run", "k8s.rollout_restart", "metrics.query"]
TOOL_PATTERNS = [*TOOLS, "shell.*", "k8s.*", "*"]
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe"]
SCORE_OF_BAND = {RiskBand.low: 10, RiskBand.medium: 30, RiskBand.high: 60, RiskBand.critical: 90}
BASE = datetime(2024, 1, 1, tzinfo=UTC)
EXAMPLES = settings(max_examples=100, deadline=None)

# Caps combine by minimum, so uniformly random caps would leave almost every write at L0 and the
# interesting rules (automatic runs, tiers, windows) untested: draw the high levels more often.
levels = st.sampled_from([*Autonomy, *[Autonomy.L2, Autonomy.L3, Autonomy.L4] * 2, Autonomy.L4, Autonomy.L4])
mostly_false = st.sampled_from([False, False, False, True])
# Sixty days, so that freezes (up to ten days long) cover a fair share of the moments drawn.
moments = st.integers(0, 60 * 24 * 60).map(lambda m: BASE + timedelta(minutes=m))


@st.composite
def windows(draw: st.DrawFn) -> dict[str, Any]:
    start = draw(st.integers(0, 24 * 60 - 1))
    end = draw(st.integers(1, 24 * 60).filter(lambda e: e != start))
    return {
        "timezone": draw(st.sampled_from(ZONES)),
        "days": draw(st.lists(st.sampled_from(DAY_NAMES), min_size=1, max_size=7, unique=True)),
        "start": start,
        "end": end,
        "environments": draw(st.lists(st.sampled_from(ENVIRONMENTS), max_size=2, unique=True)),
    }


@st.composite
def freezes(draw: st.DrawFn) -> dict[str, Any]:
    start = draw(moments)
    return {
        "start": start,
        "end": start + timedelta(hours=draw(st.integers(1, 24 * 10))),
        "environments": draw(st.lists(st.sampled_from(ENVIRONMENTS), max_size=2, unique=True)),
        "allow_tiers": draw(st.lists(st.integers(1, 4), max_size=2, unique=True)),
    }


@st.composite
def tier_rules(draw: st.DrawFn, tier: int) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "approvals_required": draw(st.integers(1, 3)),
        "approver_roles": draw(st.lists(st.sampled_from(ROLES), min_size=1, max_size=3, unique=True)),
        "change_window_required": draw(mostly_false),
    }
    if tier < 3:  # tiers 3 and 4 always separate duties; the config refuses saying otherwise
        rule["separation_of_duties"] = draw(st.booleans())
    return rule


@st.composite
def configs(draw: st.DrawFn) -> PolicyConfig:
    if draw(st.booleans()):
        return draw(open_configs())
    ceiling = draw(levels)
    at_most_ceiling = st.just(ceiling) | st.integers(0, int(ceiling)).map(Autonomy)
    data: dict[str, Any] = {
        "autonomy_ceiling": ceiling.label,
        "default_environment_cap": int(draw(at_most_ceiling)),
        "environments": {
            env: {"autonomy_cap": draw(at_most_ceiling).label}
            for env in draw(st.lists(st.sampled_from(ENVIRONMENTS[:3]), unique=True))
        },
        "tool_caps": draw(st.dictionaries(st.sampled_from(TOOL_PATTERNS), levels.map(str), max_size=2)),
        "tiers": {tier: draw(tier_rules(tier)) for tier in (1, 2, 3, 4)},
        "tier_map": {
            category.value: {band.value: draw(st.integers(1, 4)) for band in RiskBand}
            for category in (Category.write_reversible, Category.write_irreversible)
        },
        "change_windows": {f"w{i}": w for i, w in enumerate(draw(st.lists(windows(), max_size=2)))},
        "freezes": {f"f{i}": f for i, f in enumerate(draw(st.lists(freezes(), max_size=1)))},
        "rate_limits": {
            "tools": draw(st.dictionaries(st.sampled_from(TOOLS), st.builds(dict, max=st.integers(0, 5),
                                                                            per_s=st.just(60)), max_size=2)),
            "playbooks": draw(st.dictionaries(st.just("pb"), st.builds(dict, max=st.integers(0, 5),
                                                                       per_s=st.just(60)), max_size=1)),
        },
        "anomaly": {"failure_rate_downgrade": draw(st.floats(0, 1)), "min_runs": draw(st.integers(1, 6))},
    }
    return PolicyConfig.model_validate(data)


@st.composite
def open_configs(draw: st.DrawFn, level: Autonomy = Autonomy.L4, tool_caps: bool = True) -> PolicyConfig:
    """Configs that let writes through (no freeze, no limit, no window needed, every environment at
    ``level``), so that the automatic-run rules are exercised as often as the refusals."""
    tiers = {tier: draw(tier_rules(tier)) | {"change_window_required": False} for tier in (1, 2, 3, 4)}
    return PolicyConfig.model_validate(
        {
            "autonomy_ceiling": "L4",
            "default_environment_cap": level.label,
            "environments": {env: {"autonomy_cap": level.label} for env in ENVIRONMENTS},
            "tool_caps": draw(
                st.dictionaries(st.sampled_from(TOOL_PATTERNS), levels.map(str), max_size=1 if tool_caps else 0)
            ),
            "tiers": tiers,
            "tier_map": {
                category.value: {band.value: draw(st.integers(1, 4)) for band in RiskBand}
                for category in (Category.write_reversible, Category.write_irreversible)
            },
        }
    )


step_facts = st.builds(
    lambda tool, category, cap, band: StepFacts(
        tool=tool,
        category=category,
        playbook_id="pb",
        playbook_autonomy_cap=cap,
        risk=RiskScore(score=SCORE_OF_BAND[band], band=band),
    ),
    st.sampled_from(TOOLS),
    st.sampled_from(Category),
    st.none() | levels,
    st.sampled_from(RiskBand),
)

recent_runs = st.sampled_from([0, 0, 0, 0, 1, 2, 3, 4, 5, 6])
contexts = st.builds(
    PolicyContext,
    environment=st.sampled_from(ENVIRONMENTS),
    now=moments,
    kill_switch=mostly_false,
    recent_runs_tool=recent_runs,
    recent_runs_playbook=recent_runs,
    tool_failure_rate=st.just(0.0) | st.floats(0, 1),
    tool_runs=st.integers(0, 10),
)

actors = st.builds(
    lambda person, roles: Actor(id=person, display=person, roles=frozenset(roles), via="slack"),
    st.sampled_from(PEOPLE),
    st.lists(st.sampled_from(ROLES), max_size=3, unique=True),
)


def _autonomy(cfg: PolicyConfig, facts: StepFacts, ctx: PolicyContext) -> Autonomy:
    return autonomy_for(
        cfg,
        environment=ctx.environment,
        tool=facts.tool,
        playbook_id=facts.playbook_id,
        playbook_cap=facts.playbook_autonomy_cap,
        kill_switch=ctx.kill_switch,
        tool_failure_rate=ctx.tool_failure_rate,
        tool_runs=ctx.tool_runs,
    ).level


@EXAMPLES
@given(configs(), step_facts, contexts)
def test_a_write_runs_without_a_human_only_when_autonomy_permits_it(
    cfg: PolicyConfig, facts: StepFacts, ctx: PolicyContext
) -> None:
    decision = decide_step(cfg, facts, ctx)
    assert decide_step(cfg, facts, ctx) == decision  # deterministic
    if not facts.category.writes:
        assert decision.verdict == "allow" or decision.rule.startswith("rate_limit:")
        return
    level = _autonomy(cfg, facts, ctx)
    band = facts.risk.band
    if ctx.kill_switch or level is Autonomy.L0:
        assert decision.verdict == "deny"
    if decision.verdict == "allow":
        assert not ctx.kill_switch
        assert band is not RiskBand.critical
        if facts.category is Category.write_reversible:
            assert level >= Autonomy.L2
            assert band in (RiskBand.low, RiskBand.medium)
        else:
            assert level is Autonomy.L4
        tier = tier_of(cfg, facts.category, band)
        freeze = active_freeze(cfg.freezes, ctx.environment, ctx.now)
        assert freeze is None or tier in freeze.allow_tiers
        if cfg.tiers[tier].change_window_required:
            assert open_window(cfg.change_windows, ctx.environment, ctx.now) is not None


@st.composite
def open_cases(draw: st.DrawFn) -> tuple[PolicyConfig, StepFacts, PolicyContext, Autonomy]:
    level = draw(st.sampled_from(Autonomy))
    cfg = draw(open_configs(level=level, tool_caps=False))
    facts = draw(step_facts).model_copy(update={"playbook_autonomy_cap": None})
    ctx = draw(contexts).model_copy(update={"recent_runs_tool": 0, "recent_runs_playbook": 0, "tool_failure_rate": 0})
    return cfg, facts, ctx, level


@EXAMPLES
@given(open_cases())
def test_with_nothing_else_in_the_way_the_verdict_follows_the_autonomy_table(
    case: tuple[PolicyConfig, StepFacts, PolicyContext, Autonomy],
) -> None:
    cfg, facts, ctx, level = case
    band = facts.risk.band
    if facts.category is Category.read:
        expected = "allow"
    elif ctx.kill_switch or level is Autonomy.L0:
        expected = "deny"
    elif facts.category is Category.write_reversible:
        expected = "allow" if level >= Autonomy.L2 and band in (RiskBand.low, RiskBand.medium) else "needs_approval"
    else:
        expected = "allow" if level is Autonomy.L4 and band is not RiskBand.critical else "needs_approval"
    assert decide_step(cfg, facts, ctx).verdict == expected


@EXAMPLES
@given(open_cases(), st.lists(st.integers(1, 4), max_size=3, unique=True))
def test_a_freeze_stops_every_write_of_a_tier_it_does_not_exempt(
    case: tuple[PolicyConfig, StepFacts, PolicyContext, Autonomy], allow_tiers: list[int]
) -> None:
    cfg, facts, ctx, _ = case
    freeze = {"start": ctx.now, "end": ctx.now + timedelta(hours=1), "environments": [ctx.environment],
              "allow_tiers": allow_tiers}
    frozen = cfg.model_copy(update={"freezes": PolicyConfig.model_validate({"freezes": {"hold": freeze}}).freezes})
    decision = decide_step(frozen, facts, ctx)
    if not facts.category.writes:
        assert decision.verdict == "allow"
    elif tier_of(cfg, facts.category, facts.risk.band) in allow_tiers:
        assert decision == decide_step(cfg, facts, ctx)
    else:
        assert decision.verdict == "deny"


@EXAMPLES
@given(configs(), step_facts, contexts)
def test_needs_approval_carries_the_quorum_of_the_steps_tier(
    cfg: PolicyConfig, facts: StepFacts, ctx: PolicyContext
) -> None:
    decision = decide_step(cfg, facts, ctx)
    if decision.verdict != "needs_approval":
        assert decision.approvals_required == 0
        return
    assert facts.category.writes
    tier = tier_of(cfg, facts.category, facts.risk.band)
    assert decision.rule == f"tier{tier}"
    assert decision.approvals_required == cfg.tiers[tier].approvals_required >= 1
    assert decision.roles == cfg.tiers[tier].approver_roles
    assert not quorum_reached(decision, set())


@EXAMPLES
@given(
    configs(),
    st.sampled_from(ENVIRONMENTS),
    st.sampled_from(TOOLS),
    st.none() | levels,
    st.booleans(),
    st.floats(0, 1),
    st.integers(0, 10),
)
def test_effective_autonomy_never_exceeds_any_cap(
    cfg: PolicyConfig,
    environment: str,
    tool: str,
    playbook_cap: Autonomy | None,
    kill_switch: bool,
    failure_rate: float,
    runs: int,
) -> None:
    result = autonomy_for(
        cfg,
        environment=environment,
        tool=tool,
        playbook_id="pb",
        playbook_cap=playbook_cap,
        kill_switch=kill_switch,
        tool_failure_rate=failure_rate,
        tool_runs=runs,
    )
    caps = [cfg.autonomy_ceiling, cfg.environment_cap(environment), *(c.level for c in cfg.tool_caps_for(tool))]
    if playbook_cap is not None:
        caps.append(playbook_cap)
    assert all(result.level <= cap for cap in caps)
    assert [level for _, level in result.caps] == caps[:2] + ([playbook_cap] if playbook_cap is not None else []) + [
        c.level for c in cfg.tool_caps_for(tool)
    ]
    if kill_switch:
        assert result.level is Autonomy.L0
    elif result.bound_by.startswith("anomaly:"):
        assert result.level == max(min(caps) - 1, 0)
    else:
        assert result.level == min(caps)


@EXAMPLES
@given(configs(), st.integers(1, 4), actors, st.sampled_from(PEOPLE))
def test_only_a_holder_of_a_required_role_who_is_not_the_requester_approves_tier3_and_up(
    cfg: PolicyConfig, tier: int, actor: Actor, requester: str
) -> None:
    rule = cfg.tiers[tier]
    decision = Decision(
        verdict="needs_approval",
        rule=f"tier{tier}",
        reason="r",
        approvals_required=rule.approvals_required,
        roles=rule.approver_roles,
    )
    refusal = check_approver(cfg, decision, actor, requester, tier)
    if refusal is None:
        assert actor.has_any(decision.roles)
        if tier >= 3:
            assert actor.id != requester
    else:
        assert not actor.has_any(decision.roles) or actor.id == requester
    the_requester_with_every_role = Actor(id=requester, display=requester, roles=frozenset(ROLES))
    own = check_approver(cfg, decision, the_requester_with_every_role, requester, tier)
    assert (own is not None) == (tier >= 3 or rule.separation_of_duties)


@EXAMPLES
@given(configs(), step_facts, contexts, actors)
def test_steps_that_do_not_need_approval_cannot_be_approved(
    cfg: PolicyConfig, facts: StepFacts, ctx: PolicyContext, actor: Actor
) -> None:
    decision = decide_step(cfg, facts, ctx)
    tier = tier_of(cfg, facts.category, facts.risk.band)
    if decision.verdict != "needs_approval":
        assert check_approver(cfg, decision, actor, "someone-else", tier) is not None


@EXAMPLES
@given(
    st.integers(1, 4),
    st.lists(st.sampled_from(PEOPLE), max_size=8),
    st.randoms(use_true_random=False),
)
def test_quorum_counts_distinct_people_only(required: int, approvals: list[str], rng: Any) -> None:
    decision = Decision(verdict="needs_approval", rule="t", reason="r", approvals_required=required, roles=["sre"])
    reached = quorum_reached(decision, approvals)
    assert reached == (len(set(approvals)) >= required)
    shuffled_with_repeats = approvals + approvals
    rng.shuffle(shuffled_with_repeats)
    assert quorum_reached(decision, shuffled_with_repeats) == reached


@EXAMPLES
@given(windows(), moments)
def test_a_window_is_open_at_its_next_opening(data: dict[str, Any], now: datetime) -> None:
    window = ChangeWindow.model_validate({"name": "w", **data})
    opens = window.next_opening(now)
    assert opens is not None  # every window has at least one day, so it opens within a week
    assert now < opens <= now + timedelta(days=8)
    local = opens.astimezone(window.zone)
    skipped = local.hour * 60 + local.minute != window.start  # its start fell in a skipped DST hour
    # A window lying wholly inside a skipped hour never opens that night; every other one does.
    if not skipped or local.hour * 60 + local.minute < window.end or window.crosses_midnight:
        assert window.is_open(opens)
