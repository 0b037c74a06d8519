"""The parts of the loop every stage shares, and the policy inputs computed from the store."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.config import Settings
from bot.loop.gateway import ToolGateway
from bot.loop.shadow import in_shadow, shadow_decision
from bot.metrics import Metrics
from bot.model.events import EventBus
from bot.model.proposals import Category, Decision, RiskScore
from bot.model.signals import Severity
from bot.model.steps import StepRecord
from bot.model.tasks import Task
from bot.playbooks.schema import Playbook, PlaybookSet
from bot.policy.identity import IdentityDirectory
from bot.policy.risk import BlastRadius, RiskInputs, score_risk
from bot.policy.rules import PolicyConfig, PolicyContext, StepFacts, decide_step, outside_change_window
from bot.store.ports import KILL_SWITCH_KEY, GuardQuery, GuardState, KillSwitch, RunWindow
from bot.store.protocol import Store
from bot.tracing import TaskTracing

__all__ = ["KILL_SWITCH_KEY", "Core", "guard_query", "policy_context_of", "utcnow"]

FAILURE_WINDOW = timedelta(days=1)


def guard_query(policy: PolicyConfig, tool: str, playbook_id: str, now: datetime, *,
                history: bool = True) -> GuardQuery:
    """What a decision on a step of ``tool`` in ``playbook_id`` counts at ``now``: the rate-limit
    windows that apply, and (``history``) the failure-rate window."""
    tool_limit = policy.rate_limits.for_tool(tool)
    pb_limit = policy.rate_limits.for_playbook(playbook_id)
    return GuardQuery(
        tool=tool, playbook_id=playbook_id,
        tool_window=RunWindow((now - timedelta(seconds=tool_limit.per_s)).isoformat()) if tool_limit else None,
        playbook_window=RunWindow((now - timedelta(seconds=pb_limit.per_s)).isoformat()) if pb_limit else None,
        history=RunWindow((now - FAILURE_WINDOW).isoformat()) if history else None,
    )


def utcnow() -> datetime:
    return datetime.now(UTC)


def policy_context_of(guard: GuardState, environment: str, now: datetime) -> PolicyContext:
    """The policy's view of the world from what the store counted (``guard``)."""
    runs, failures = guard.tool_runs, guard.tool_failures
    return PolicyContext(
        environment=environment, now=now, kill_switch=guard.kill_switch.on,
        recent_runs_tool=guard.tool_runs_in_window, recent_runs_playbook=guard.playbook_runs_in_window,
        tool_failure_rate=(failures / runs) if runs else 0.0, tool_runs=runs,
    )


@dataclass
class Core:
    settings: Settings
    store: Store
    bus: EventBus
    playbooks: PlaybookSet
    policy: PolicyConfig
    gateway: ToolGateway
    identities: IdentityDirectory
    metrics: Metrics
    clock: Callable[[], datetime] = utcnow
    extras: dict[str, Any] = field(default_factory=dict)
    tracing: TaskTracing = field(default_factory=TaskTracing)  # one trace per task: bot/tracing.py

    @property
    def environment(self) -> str:
        return self.settings.environment

    def environment_of(self, task: Task) -> str:
        return task.environment or self.settings.environment

    async def kill_switch(self) -> KillSwitch:
        """The kill switch as stored now: every process sharing the store sees the same one."""
        setting = await self.store.get_setting(KILL_SWITCH_KEY)
        state = KillSwitch.from_setting(setting.value if setting else None)
        self.metrics.kill_switch.set(1 if state.on else 0)
        return state

    async def load_kill_switch(self) -> bool:
        return (await self.kill_switch()).on

    async def policy_context(self, tool: str, playbook_id: str, environment: str) -> PolicyContext:
        now = self.clock()
        guard = await self.store.guard(guard_query(self.policy, tool, playbook_id, now))
        return self.context_of(guard, environment, now)

    def context_of(self, guard: GuardState, environment: str, now: datetime) -> PolicyContext:
        self.metrics.kill_switch.set(1 if guard.kill_switch.on else 0)
        return policy_context_of(guard, environment, now)

    async def assess(self, playbook: Playbook, *, tool: str, category: Category, blast_radius: BlastRadius,
                     environment: str, severity: str, targets: int, counted: bool = True) -> tuple[RiskScore, Decision]:
        """Risk score and policy decision for one step, from what the store knows right now.
        ``counted=False``: a what-if (a replay), kept out of the decision metrics."""
        now = self.clock()
        guard = await self.store.guard(guard_query(self.policy, tool, playbook.id, now))
        ctx = self.context_of(guard, environment, now)
        pb_runs, pb_failures = guard.playbook_runs, guard.playbook_failures
        risk = score_risk(RiskInputs(
            category=category, blast_radius=blast_radius, environment=environment,
            severity=Severity(severity) if severity in Severity.__members__ else Severity.info,
            outside_change_window=outside_change_window(self.policy, environment, ctx.now),
            tool_failure_rate=ctx.tool_failure_rate,
            playbook_failure_rate=(pb_failures / pb_runs) if pb_runs else 0.0,
            targets=max(1, targets),
        ))
        decision = decide_step(self.policy, StepFacts(
            tool=tool, category=category, playbook_id=playbook.id, playbook_autonomy_cap=playbook.autonomy_cap,
            risk=risk,
        ), ctx)
        if category.writes and await in_shadow(self.store, playbook):
            decision = shadow_decision(playbook.id, decision)
        if counted:
            self.metrics.policy_decisions.labels(decision.verdict).inc()
        return risk, decision

    async def assess_step(self, task: Task, step: StepRecord) -> tuple[RiskScore, Decision]:
        """``assess`` for a stored step of ``task``, with the blast radius its playbook declares."""
        playbook = self.playbooks.get(task.playbook_id)
        spec = next((s for s in playbook.steps if s.name == step.name), None)
        # A step the playbook no longer declares is judged as service-wide: the cautious default.
        blast = spec.blast_radius if spec else BlastRadius.service
        return await self.assess(playbook, tool=step.tool, category=Category(step.category), blast_radius=blast,
                                 environment=task.environment, severity=task.severity, targets=task.signal_count)
