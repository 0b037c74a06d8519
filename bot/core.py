"""The parts of the loop every stage shares, and the policy inputs computed from the store."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.config import Settings
from bot.events import EventBus
from bot.gateway import ToolGateway
from bot.identity import IdentityDirectory
from bot.metrics import Metrics
from bot.playbooks import Playbook, PlaybookSet
from bot.policy import PolicyConfig, PolicyContext, StepFacts, decide_step, outside_change_window
from bot.proposals import Category, Decision, RiskScore
from bot.risk import BlastRadius, RiskInputs, score_risk
from bot.signals import Severity
from bot.store import Store
from bot.tasks import StepRecord, Task
from bot.tracing import TaskTracing

KILL_SWITCH_KEY = "kill_switch"
FAILURE_WINDOW = timedelta(days=1)


def utcnow() -> datetime:
    return datetime.now(UTC)


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
    kill_switch: bool = False
    extras: dict[str, Any] = field(default_factory=dict)
    tracing: TaskTracing = field(default_factory=TaskTracing)  # one trace per task: bot/tracing.py

    @property
    def environment(self) -> str:
        return self.settings.environment

    def environment_of(self, task: Task) -> str:
        return task.environment or self.settings.environment

    async def load_kill_switch(self) -> bool:
        setting = await self.store.get_setting(KILL_SWITCH_KEY)
        self.kill_switch = bool(setting and setting["value"].get("on"))
        self.metrics.kill_switch.set(1 if self.kill_switch else 0)
        return self.kill_switch

    async def policy_context(self, tool: str, playbook_id: str, environment: str) -> PolicyContext:
        now = self.clock()
        tool_limit = self.policy.rate_limits.for_tool(tool)
        pb_limit = self.policy.rate_limits.for_playbook(playbook_id)
        recent_tool = recent_pb = 0
        if tool_limit:
            since = (now - timedelta(seconds=tool_limit.per_s)).isoformat()
            recent_tool, _ = await self.store.tool_runs_since(tool, since)
        if pb_limit:
            recent_pb, _ = await self.store.playbook_runs_since(
                playbook_id, (now - timedelta(seconds=pb_limit.per_s)).isoformat()
            )
        runs, failures = await self.store.tool_runs_since(tool, (now - FAILURE_WINDOW).isoformat())
        return PolicyContext(
            environment=environment, now=now, kill_switch=self.kill_switch, recent_runs_tool=recent_tool,
            recent_runs_playbook=recent_pb, tool_failure_rate=(failures / runs) if runs else 0.0, tool_runs=runs,
        )

    async def assess(self, playbook: Playbook, *, tool: str, category: Category, blast_radius: BlastRadius,
                     environment: str, severity: str, targets: int, counted: bool = True) -> tuple[RiskScore, Decision]:
        """Risk score and policy decision for one step, from what the store knows right now.
        ``counted=False``: a what-if (a replay), kept out of the decision metrics."""
        ctx = await self.policy_context(tool, playbook.id, environment)
        pb_runs, pb_failures = await self.store.playbook_runs_since(
            playbook.id, (ctx.now - FAILURE_WINDOW).isoformat()
        )
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
