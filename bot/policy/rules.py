"""The policy engine: for each step, allow / needs_approval / deny, with the rule that matched.

Public API (pure: the clock, counts and rates are inputs; no I/O):
    PolicyConfig                                   the ``policy:`` config section; ``PolicyConfig()`` is usable
    StepFacts, PolicyContext                       what decide_step needs to know
    decide_step(cfg, facts, ctx) -> Decision
    autonomy_for(cfg, *, environment, tool=None, playbook_id=None, playbook_cap=None,
                 kill_switch=False, tool_failure_rate=0.0, tool_runs=0) -> EffectiveAutonomy
    tier_of(cfg, category, band) -> int            permission tier 1..4
    tier_rule(cfg, tier) -> TierRule
    check_approver(cfg, decision, actor, requester, tier) -> str | None
                                                   None when ``actor`` may approve, else the refusal
    quorum_reached(decision, approver_ids) -> bool one person counts once
    outside_change_window(cfg, environment, now) -> bool    for ``RiskInputs.outside_change_window``
    cfg.rate_limits.for_tool(tool) / .for_playbook(playbook_id) -> RateLimit | None
                                                   the window (``per_s``) the engine counts recent runs in
    describe_policy(cfg) -> str, explain_decision(decision) -> str

Order of the rules for a write: kill switch, autonomy L0, freeze (unless the tier is exempt),
rate limits, change window for tiers that need one, automatic run when the effective autonomy
allows it, otherwise approval by the tier's quorum. Reads are always allowed unless a rate limit
denies them: observing is safe, so they run at L0 and with the kill switch on.

The change-window rule comes before the automatic run so that an L4 irreversible step of a tier
that needs a window cannot run outside one by skipping approval.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from fnmatch import fnmatchcase
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from bot.model.proposals import Category, Decision, RiskBand, RiskScore
from bot.policy.autonomy import Anomaly, Autonomy, AutonomyLevel, Cap, EffectiveAutonomy, effective_autonomy
from bot.policy.changewindows import ChangeWindow, Freeze, active_freeze, next_opening, open_window
from bot.policy.identity import SYSTEM, Actor

AUTO_REVERSIBLE_BANDS = frozenset({RiskBand.low, RiskBand.medium})
AUTO_IRREVERSIBLE_BANDS = frozenset({RiskBand.low, RiskBand.medium, RiskBand.high})  # never critical
SEPARATION_OF_DUTIES_FROM_TIER = 3  # the seed rule; a tier below may opt in, no tier at or above may opt out


class EnvironmentPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    autonomy_cap: AutonomyLevel = Autonomy.L1


class TierRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    approvals_required: int = Field(default=1, ge=1, le=10)
    approver_roles: list[str] = Field(min_length=1)
    separation_of_duties: bool = False
    change_window_required: bool = False


class RateLimit(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max: int = Field(ge=0)  # 0 stops the tool or playbook entirely
    per_s: int = Field(ge=1)

    @property
    def label(self) -> str:
        return f"{self.max}/{self.per_s}s"


class RateLimits(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tools: dict[str, RateLimit] = Field(default_factory=dict)
    playbooks: dict[str, RateLimit] = Field(default_factory=dict)

    def for_tool(self, tool: str) -> RateLimit | None:
        return self.tools.get(tool)

    def for_playbook(self, playbook_id: str) -> RateLimit | None:
        return self.playbooks.get(playbook_id)


class AnomalyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    failure_rate_downgrade: float = Field(default=0.5, ge=0.0, le=1.0)
    min_runs: int = Field(default=4, ge=1)  # fewer recent runs than this say nothing about health


def _default_environments() -> dict[str, EnvironmentPolicy]:
    return {
        "dev": EnvironmentPolicy(autonomy_cap=Autonomy.L2),
        "staging": EnvironmentPolicy(autonomy_cap=Autonomy.L2),
        "prod": EnvironmentPolicy(autonomy_cap=Autonomy.L1),
    }


DEFAULT_TIERS: dict[int, dict[str, Any]] = {
    1: {"approvals_required": 1, "approver_roles": ["oncall", "sre", "sre-lead"]},
    2: {"approvals_required": 1, "approver_roles": ["oncall", "sre", "sre-lead"]},
    3: {"approvals_required": 1, "approver_roles": ["sre-lead", "oncall"], "separation_of_duties": True},
    4: {
        "approvals_required": 2,
        "approver_roles": ["sre-lead"],
        "separation_of_duties": True,
        "change_window_required": True,
    },
}

DEFAULT_TIER_MAP: dict[str, dict[str, int]] = {
    "read": {"low": 1, "medium": 1, "high": 1, "critical": 1},
    "write_reversible": {"low": 1, "medium": 2, "high": 3, "critical": 4},
    "write_irreversible": {"low": 2, "medium": 3, "high": 4, "critical": 4},
}


def _named(value: object) -> object:
    """``{name: {...}}`` (how people write it in YAML) to ``[{"name": name, ...}]``."""
    if isinstance(value, dict):
        return [{"name": name, **(body or {})} for name, body in value.items()]
    return value


class PolicyConfig(BaseModel):
    """The ``policy:`` section. Every field has a safe default, so an empty section works.

    ``tiers`` and ``tier_map`` merge over the defaults: ``tier_map: {write_reversible: {high: 4}}``
    changes one cell. ``tool_caps`` keys may be glob patterns (``shell.*``); every matching
    pattern applies. Environments not listed get ``default_environment_cap``.
    """

    model_config = ConfigDict(extra="forbid")

    autonomy_ceiling: AutonomyLevel = Autonomy.L2
    default_environment_cap: AutonomyLevel = Autonomy.L1
    environments: dict[str, EnvironmentPolicy] = Field(default_factory=_default_environments)
    tool_caps: dict[str, AutonomyLevel] = Field(default_factory=dict)
    tiers: dict[int, TierRule] = Field(default_factory=lambda: {t: TierRule(**r) for t, r in DEFAULT_TIERS.items()})
    tier_map: dict[Category, dict[RiskBand, int]] = Field(
        default_factory=lambda: {
            Category(c): {RiskBand(b): t for b, t in bands.items()} for c, bands in DEFAULT_TIER_MAP.items()
        }
    )
    change_windows: list[ChangeWindow] = Field(default_factory=list)
    freezes: list[Freeze] = Field(default_factory=list)
    rate_limits: RateLimits = Field(default_factory=RateLimits)
    anomaly: AnomalyConfig = Field(default_factory=AnomalyConfig)

    @field_validator("change_windows", "freezes", mode="before")
    @classmethod
    def _from_named(cls, value: object) -> object:
        return _named(value)

    @field_validator("tiers", mode="before")
    @classmethod
    def _merge_tiers(cls, value: object) -> object:
        if not isinstance(value, dict):
            return value
        merged: dict[Any, Any] = {str(t): rule for t, rule in DEFAULT_TIERS.items()}
        merged.update({str(t): rule for t, rule in value.items()})
        return merged

    @field_validator("tier_map", mode="before")
    @classmethod
    def _merge_tier_map(cls, value: object) -> object:
        if not isinstance(value, dict):
            return value
        merged: dict[Any, Any] = {c: dict(m) for c, m in DEFAULT_TIER_MAP.items()}
        for category, bands in value.items():
            key = str(category.value if isinstance(category, Category) else category)
            merged[key] = {**merged.get(key, {}), **{str(getattr(b, "value", b)): t for b, t in (bands or {}).items()}}
        return merged

    @model_validator(mode="after")
    def _consistent(self) -> PolicyConfig:
        problems: list[str] = []
        if set(self.tiers) != {1, 2, 3, 4}:
            problems.append(f"tiers must be exactly 1, 2, 3 and 4, got {sorted(self.tiers)}")
        for tier, rule in self.tiers.items():
            if tier >= SEPARATION_OF_DUTIES_FROM_TIER and "separation_of_duties" in rule.model_fields_set \
                    and not rule.separation_of_duties:
                problems.append(f"tiers.{tier}.separation_of_duties cannot be false: tier 3 and above always need it")
        for category, bands in self.tier_map.items():
            for band, tier in bands.items():
                if tier not in (1, 2, 3, 4):
                    problems.append(f"tier_map.{category}.{band} is {tier}; use a tier from 1 to 4")
        for name, env in self.environments.items():
            if env.autonomy_cap > self.autonomy_ceiling:
                problems.append(
                    f"environments.{name}.autonomy_cap {env.autonomy_cap.label} is above autonomy_ceiling "
                    f"{self.autonomy_ceiling.label}; raise autonomy_ceiling too if you mean it"
                )
        if self.default_environment_cap > self.autonomy_ceiling:
            problems.append(
                f"default_environment_cap {self.default_environment_cap.label} is above autonomy_ceiling "
                f"{self.autonomy_ceiling.label}"
            )
        for kind, named in (("change_windows", self.change_windows), ("freezes", self.freezes)):
            names = [n.name for n in named]
            if len(set(names)) != len(names):
                problems.append(f"{kind} names must be unique, got {names}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def environment_cap(self, environment: str) -> Autonomy:
        env = self.environments.get(environment)
        return env.autonomy_cap if env else self.default_environment_cap

    def tool_caps_for(self, tool: str) -> list[Cap]:
        return [Cap(f"tool:{pattern}", cap) for pattern, cap in self.tool_caps.items() if fnmatchcase(tool, pattern)]


class StepFacts(BaseModel):
    """What is known about the step itself."""

    model_config = ConfigDict(extra="forbid")

    tool: str
    category: Category
    playbook_id: str
    playbook_autonomy_cap: AutonomyLevel | None = None
    risk: RiskScore


class PolicyContext(BaseModel):
    """What is true of the world right now. The engine counts runs in the rate-limit windows
    (``cfg.rate_limits.for_tool(...).per_s``) and over its recent history for the failure rate."""

    model_config = ConfigDict(extra="forbid")

    environment: str
    now: AwareDatetime
    kill_switch: bool = False
    recent_runs_tool: int = Field(default=0, ge=0)
    recent_runs_playbook: int = Field(default=0, ge=0)
    tool_failure_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    tool_runs: int = Field(default=0, ge=0)  # how many recent runs tool_failure_rate is over


def autonomy_for(
    cfg: PolicyConfig,
    *,
    environment: str,
    tool: str | None = None,
    playbook_id: str | None = None,
    playbook_cap: Autonomy | None = None,
    kill_switch: bool = False,
    tool_failure_rate: float = 0.0,
    tool_runs: int = 0,
) -> EffectiveAutonomy:
    """The effective autonomy: the lowest of ceiling, environment, playbook and tool caps, one level
    lower while the tool fails too often, L0 under the kill switch. Without ``tool`` and
    ``playbook_id`` this is the environment's level (what ``/ops status`` shows)."""
    caps = [Cap("ceiling", cfg.autonomy_ceiling), Cap(f"environment:{environment}", cfg.environment_cap(environment))]
    if playbook_cap is not None:
        caps.append(Cap(f"playbook:{playbook_id or '?'}", playbook_cap))
    anomaly = None
    if tool is not None:
        caps.extend(cfg.tool_caps_for(tool))
        threshold = cfg.anomaly.failure_rate_downgrade
        if tool_runs >= cfg.anomaly.min_runs and tool_failure_rate > threshold:
            anomaly = Anomaly(
                f"anomaly:tool:{tool}",
                f"{tool} failed {tool_failure_rate:.0%} of its last {tool_runs} runs (above {threshold:.0%})",
            )
    return effective_autonomy(caps, kill_switch=kill_switch, anomaly=anomaly)


def tier_of(cfg: PolicyConfig, category: Category, band: RiskBand) -> int:
    """The permission tier (1..4) of a step of ``category`` with risk ``band``."""
    return cfg.tier_map[Category(category)][RiskBand(band)]


def tier_rule(cfg: PolicyConfig, tier: int) -> TierRule:
    return cfg.tiers[tier]


def needs_separation_of_duties(cfg: PolicyConfig, tier: int) -> bool:
    return tier >= SEPARATION_OF_DUTIES_FROM_TIER or cfg.tiers[tier].separation_of_duties


def outside_change_window(cfg: PolicyConfig, environment: str, now: datetime) -> bool:
    """True when windows are configured for ``environment`` and none is open at ``now``.

    With no window for the environment there is nothing to be outside of, so risk adds nothing;
    tier rules that need a window still refuse there (see ``decide_step``).
    """
    windows = [w for w in cfg.change_windows if w.applies_to(environment)]
    return bool(windows) and open_window(windows, environment, now) is None


def _deny(rule: str, reason: str) -> Decision:
    return Decision(verdict="deny", rule=rule, reason=reason)


def _rate_limited(cfg: PolicyConfig, facts: StepFacts, ctx: PolicyContext) -> Decision | None:
    return rate_limit_refusal(cfg, facts.tool, facts.playbook_id, ctx)


def kill_switch_refusal() -> Decision:
    return _deny("kill_switch", "The kill switch is on: no write runs until someone resumes the bot.")


def rate_limit_refusal(cfg: PolicyConfig, tool: str, playbook_id: str, ctx: PolicyContext) -> Decision | None:
    """The deny of the first rate limit ``ctx``'s run counts reach, or None."""
    checks = (
        ("tool", tool, cfg.rate_limits.for_tool(tool), ctx.recent_runs_tool),
        ("playbook", playbook_id, cfg.rate_limits.for_playbook(playbook_id), ctx.recent_runs_playbook),
    )
    for kind, name, limit, recent in checks:
        if limit is not None and recent >= limit.max:
            return _deny(
                f"rate_limit:{kind}:{name}({limit.label})",
                f"{kind.capitalize()} {name} already ran {recent} times in the last {limit.per_s}s and the limit "
                f"is {limit.max}; wait for the window to pass or raise policy.rate_limits.{kind}s.{name}.",
            )
    return None


def decide_step(cfg: PolicyConfig, facts: StepFacts, ctx: PolicyContext) -> Decision:
    """The policy decision for one step. See the module docstring for the order of the rules.

    Returns:
        A Decision; for ``needs_approval`` it carries the tier's quorum and approver roles and its
        rule is ``tier<N>`` (``tier_of`` gives the same N to the approval check).
    """
    if not facts.category.writes:
        limited = _rate_limited(cfg, facts, ctx)
        if limited:
            return limited
        also = " even with the kill switch on" if ctx.kill_switch else ""
        return Decision(verdict="allow", rule="read", reason=f"Read steps only observe, so they run{also}.")

    if ctx.kill_switch:
        return kill_switch_refusal()
    auto = autonomy_for(
        cfg,
        environment=ctx.environment,
        tool=facts.tool,
        playbook_id=facts.playbook_id,
        playbook_cap=facts.playbook_autonomy_cap,
        tool_failure_rate=ctx.tool_failure_rate,
        tool_runs=ctx.tool_runs,
    )
    level = auto.level
    if level == Autonomy.L0:
        return _deny("autonomy:L0", f"Autonomy is L0 (observe only) because {auto.reason}; writes do not run.")

    band = facts.risk.band
    tier = tier_of(cfg, facts.category, band)
    rule = cfg.tiers[tier]
    freeze = active_freeze(cfg.freezes, ctx.environment, ctx.now)
    if freeze is not None and tier not in freeze.allow_tiers:
        exempt = f" (only tiers {', '.join(map(str, freeze.allow_tiers))} may change)" if freeze.allow_tiers else ""
        why = f" for {freeze.reason}" if freeze.reason else ""
        return _deny(
            f"freeze:{freeze.name}",
            f"The {freeze.name} freeze{why} covers {ctx.environment} until {freeze.end.isoformat()}; "
            f"this tier-{tier} step cannot run{exempt}.",
        )
    limited = _rate_limited(cfg, facts, ctx)
    if limited:
        return limited
    if rule.change_window_required and open_window(cfg.change_windows, ctx.environment, ctx.now) is None:
        opens = next_opening(cfg.change_windows, ctx.environment, ctx.now)
        when = f"the next opens {opens.isoformat()}" if opens else f"no window is configured for {ctx.environment}"
        return _deny(
            f"change_window:tier{tier}",
            f"Tier-{tier} steps run only inside a change window for {ctx.environment}; none is open now ({when}).",
        )

    if facts.category is Category.write_reversible and level >= Autonomy.L2 and band in AUTO_REVERSIBLE_BANDS:
        return Decision(
            verdict="allow",
            rule=f"autonomy:{level.label}:auto_reversible", autonomy=level.label,
            reason=f"A reversible write with {band} risk runs automatically at {level.label} "
            f"({auto.reason}) and can be undone.",
        )
    if facts.category is Category.write_irreversible and level >= Autonomy.L4 and band in AUTO_IRREVERSIBLE_BANDS:
        return Decision(
            verdict="allow",
            rule=f"autonomy:{level.label}:auto_irreversible", autonomy=level.label,
            reason=f"An irreversible write with {band} risk runs automatically at {level.label} ({auto.reason}).",
        )

    return Decision(
        verdict="needs_approval",
        rule=f"tier{tier}",
        reason=_approval_reason(cfg, facts, tier, auto),
        approvals_required=rule.approvals_required,
        roles=list(rule.approver_roles),
        autonomy=level.label,
        separation_of_duties=needs_separation_of_duties(cfg, tier),
    )


def _approval_reason(cfg: PolicyConfig, facts: StepFacts, tier: int, auto: EffectiveAutonomy) -> str:
    rule = cfg.tiers[tier]
    reversible = facts.category is Category.write_reversible
    kind = "A reversible" if reversible else "An irreversible"
    if facts.risk.band is RiskBand.critical:
        why_human = "critical risk never runs automatically"
    elif auto.level < (Autonomy.L2 if reversible else Autonomy.L4):
        why_human = f"autonomy is {auto.level.label} ({auto.reason})"
    else:
        why_human = f"{facts.risk.band} risk is too high to run automatically"
    people = "approval" if rule.approvals_required == 1 else "approvals"
    sod = "; the requester cannot approve it" if needs_separation_of_duties(cfg, tier) else ""
    return (
        f"{kind} write with {facts.risk.band} risk is tier {tier} and needs {rule.approvals_required} "
        f"{people} from {' or '.join(rule.approver_roles)}{sod}: {why_human}."
    )


def check_approver(cfg: PolicyConfig, decision: Decision, actor: Actor, requester: str, tier: int) -> str | None:
    """Whether ``actor`` may approve a step with ``decision``; None if so, else why not.

    The refusal is written for the person who clicked: it names the roles that may approve.
    Recording an approval and counting them is the caller's job (``quorum_reached``).
    """
    if decision.verdict != "needs_approval":
        state = "was denied" if decision.verdict == "deny" else "runs without approval"
        return f"This step {state} ({decision.rule}), so there is nothing to approve."
    if actor.id == SYSTEM.id:
        return "Ooda cannot approve its own proposals; a person has to."
    if decision.roles and not actor.has_any(decision.roles):
        held = ", ".join(sorted(actor.roles)) or "no roles"
        return (
            f"Approving this tier-{tier} step needs the role {' or '.join(decision.roles)}; "
            f"{actor.display} has {held}."
        )
    if actor.id == requester and needs_separation_of_duties(cfg, tier):
        return (
            f"You requested this step, and a tier-{tier} step needs someone else to approve it "
            f"(separation of duties). Ask someone with the role {' or '.join(decision.roles)}."
        )
    return None


def counts_for(decision: Decision, approver: str, roles: Iterable[str] | None, requester: str) -> bool:
    """Whether one recorded approval counts towards this step's quorum (quorum per step).

    An approval counts for a step only if its approver held one of the step's roles when they
    approved and is not its requester where separation of duties applies: an on-call engineer's
    approval moves a tier-3 step without counting towards a tier-4 step of the same proposal.
    ``roles`` None is an approval recorded before roles were: it was checked against every step.
    """
    if not approver or (decision.separation_of_duties and approver == requester):
        return False
    return roles is None or not decision.roles or bool(set(roles) & set(decision.roles))


def counted_approvers(decision: Decision, approvals: Iterable[tuple[str, Iterable[str] | None]],
                      requester: str) -> set[str]:
    """The approvers, of (id, roles held) pairs, whose approval counts for the step ``decision`` is of."""
    return {who for who, roles in approvals if counts_for(decision, who, roles, requester)}


def quorum_reached(decision: Decision, approver_ids: Iterable[str]) -> bool:
    """Whether enough distinct people approved. Denied steps never reach quorum; allowed ones need none."""
    if decision.verdict == "deny":
        return False
    if decision.verdict == "allow":
        return True
    return len({a for a in approver_ids if a}) >= decision.approvals_required


def describe_policy(cfg: PolicyConfig) -> str:
    """The policy as text people read (``ooda policy show``)."""
    lines = [f"Autonomy ceiling: {cfg.autonomy_ceiling.label} ({cfg.autonomy_ceiling.meaning})", "Environments:"]
    for name, env in cfg.environments.items():
        lines.append(f"  {name}: {env.autonomy_cap.label} ({env.autonomy_cap.meaning})")
    lines.append(f"  any other: {cfg.default_environment_cap.label} ({cfg.default_environment_cap.meaning})")
    if cfg.tool_caps:
        lines.append("Tool caps:")
        lines += [f"  {pattern}: {cap.label} ({cap.meaning})" for pattern, cap in cfg.tool_caps.items()]
    lines.append("Permission tiers:")
    for tier in sorted(cfg.tiers):
        rule = cfg.tiers[tier]
        # Reads never need approval, so their tier is not worth a line.
        writes = [(c, bands) for c, bands in cfg.tier_map.items() if c is not Category.read]
        extras = [", ".join(f"{c} {b}" for c, bands in writes for b, t in bands.items() if t == tier)]
        if needs_separation_of_duties(cfg, tier):
            extras.append("requester cannot approve")
        if rule.change_window_required:
            extras.append("only inside a change window")
        lines.append(
            f"  tier {tier}: {rule.approvals_required} of {' or '.join(rule.approver_roles)}"
            f" [{'; '.join(e for e in extras if e)}]"
        )
    lines.append("Automatic runs: reversible writes with low or medium risk at L2 and above; irreversible writes "
                 "with low, medium or high risk at L4; critical risk never runs automatically.")
    lines.append("Change windows:" if cfg.change_windows else "Change windows: none (steps that need one are denied)")
    lines += [f"  {w.describe()}" for w in cfg.change_windows]
    lines.append("Freezes:" if cfg.freezes else "Freezes: none")
    lines += [f"  {f.describe()}" for f in cfg.freezes]
    limits = [(f"tool {n}", r) for n, r in cfg.rate_limits.tools.items()]
    limits += [(f"playbook {n}", r) for n, r in cfg.rate_limits.playbooks.items()]
    lines.append("Rate limits:" if limits else "Rate limits: none")
    lines += [f"  {name}: at most {r.max} runs per {r.per_s}s" for name, r in limits]
    lines.append(
        f"Anomaly: a tool failing more than {cfg.anomaly.failure_rate_downgrade:.0%} of at least "
        f"{cfg.anomaly.min_runs} recent runs loses one autonomy level."
    )
    return "\n".join(lines)


def explain_decision(decision: Decision) -> str:
    """One line for people: the verdict, what it takes, the rule that matched and why."""
    if decision.verdict == "allow":
        head = "Allowed"
    elif decision.verdict == "deny":
        head = "Denied"
    else:
        people = "approval" if decision.approvals_required == 1 else "approvals"
        head = f"Needs {decision.approvals_required} {people} from {' or '.join(decision.roles) or 'anyone'}"
    return f"{head} [{decision.rule}]: {decision.reason}"
