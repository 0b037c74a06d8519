"""What the bot asks a human to approve, as plain data every surface renders its own way.

A Proposal carries the summary, the steps with their per-step policy decision, the risk score
with the factors that produced it, the blast radius, evidence and the rollback plan (the HITL
contents of the source spec). Slack renders it as Block Kit, Discord as an embed, the CLI as text;
the wording shared by all of them lives in ``bot/chat/wording.py``.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field

from bot.model.steps import StepState, UndoPhase


class Category(StrEnum):
    read = "read"
    write_reversible = "write_reversible"
    write_irreversible = "write_irreversible"

    @property
    def writes(self) -> bool:
        return self is not Category.read


class RiskBand(StrEnum):
    low = "low"
    medium = "medium"
    high = "high"
    critical = "critical"


class RiskFactor(BaseModel):
    name: str
    points: int
    detail: str


class RiskScore(BaseModel):
    score: int = Field(ge=0, le=100)
    band: RiskBand
    factors: list[RiskFactor] = Field(default_factory=list)


class Decision(BaseModel):
    """The policy's answer for one step, with the rule that matched."""

    verdict: Literal["allow", "needs_approval", "deny"]
    rule: str
    reason: str
    approvals_required: int = 0
    roles: list[str] = Field(default_factory=list)
    # The effective autonomy level (L0..L4) a write was decided at; the digest's share of steps run
    # automatically is counted per level. None for reads and for denials before the level is known.
    autonomy: str | None = None
    # The requester may not approve (tier 3 and up, or a tier's separation_of_duties).
    separation_of_duties: bool = False
    # Shadow mode (bot/loop/shadow.py): the policy's own answer, kept while the step is held back.
    shadow_of: dict[str, Any] | None = None


class ParamBound(BaseModel):
    """What an approver may change a step param to (Edit button / modal)."""

    type: Literal["int", "float", "str", "bool"] = "str"
    min: float | None = None
    max: float | None = None
    choices: list[str] | None = None
    max_length: int | None = None


class StepView(BaseModel):
    index: int
    name: str
    tool: str
    category: Category
    params: dict[str, Any]
    decision: Decision
    state: StepState = StepState.pending
    blast_radius: str = ""
    rollback: str | None = None
    result: str | None = None
    dry_run: str | None = None
    dry_run_failed: bool = False  # approving runs it again first, or needs an override with a reason
    editable: dict[str, ParamBound] = Field(default_factory=dict)
    approved_by: list[str] = Field(default_factory=list)  # the approvals that count for this step's quorum


class Evidence(BaseModel):
    kind: str
    title: str
    url: str | None = None
    snippet: str = ""
    meaning: str = ""  # what it shows, from the playbook's evidence step ("share of the filesystem still free")


class ApprovalView(BaseModel):
    actor: str  # the person's display name, the same on every surface
    at: datetime
    actor_id: str = ""
    roles: list[str] | None = None  # the roles they held when they approved (None: recorded before roles were)


class AlertLink(BaseModel):
    """A link the alert came with: runbook, dashboard, the rule's graph, a silence for it."""

    title: str  # our own words ("runbook"), never the sender's
    url: str


class Proposal(BaseModel):
    task_id: int
    playbook_id: str
    playbook_version: str = ""
    title: str
    summary: str
    state: str
    environment: str
    severity: str = "info"
    team: str | None = None  # from the signals' ``team`` label; chat routing may use it
    requester: str
    signal_count: int = 1
    risk: RiskScore
    blast_radius: str
    evidence: list[Evidence] = Field(default_factory=list)
    steps: list[StepView] = Field(default_factory=list)
    rollback_plan: list[str] = Field(default_factory=list)
    approvals: list[ApprovalView] = Field(default_factory=list)
    approvals_required: int = 0
    approver_roles: list[str] = Field(default_factory=list)
    created_at: datetime
    updated_at: datetime
    can_undo: bool = False
    can_retry: bool = False  # stopped by the policy, nothing in doubt: `ooda retry` may decide it again
    undo: UndoPhase | None = None  # where an undo of this task stands; None when nobody asked
    outcome: str | None = None
    links: list[AlertLink] = Field(default_factory=list)
    expiry_s: int | None = None  # engine.approval_expiry_s when it was planned
    expires_at: datetime | None = None  # while it waits for approval: when it is cancelled undecided
    shadow: bool = False  # proposed by a playbook in shadow mode: shown, never acted on


class MessageRef(BaseModel):
    """Where a proposal was posted, so later state changes can edit the same message."""

    surface: str
    channel: str
    message_id: str
    thread_id: str | None = None
