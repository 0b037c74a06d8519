"""The Task and its state machine.

A Task is one playbook run on one group of signals (or one chat request). Every transition is
checked against ``TRANSITIONS``; anything else raises ``IllegalTransition`` and is logged.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from bot.errors import IllegalTransition
from bot.model.steps import StepRecord, started

MAX_TASK_ID = 2**63 - 1  # SQLite's INTEGER range; a larger id would fail the statement, not miss


class TaskState(StrEnum):
    queued = "queued"
    running = "running"
    needs_approval = "needs_approval"
    executing = "executing"
    completed = "completed"
    failed_retryable = "failed_retryable"
    failed_terminal = "failed_terminal"
    escalated_to_human = "escalated_to_human"
    rejected = "rejected"
    cancelled = "cancelled"

    @property
    def is_open(self) -> bool:
        return self in OPEN_STATES


S = TaskState
TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    S.queued: frozenset({S.running, S.cancelled}),
    S.running: frozenset(
        {S.needs_approval, S.executing, S.completed, S.failed_retryable, S.failed_terminal,
         S.escalated_to_human, S.cancelled}
    ),
    S.needs_approval: frozenset({S.executing, S.rejected, S.cancelled, S.escalated_to_human, S.completed}),
    # executing -> needs_approval: a later step still needs a human after the allowed ones ran.
    S.executing: frozenset(
        {S.completed, S.needs_approval, S.failed_retryable, S.failed_terminal, S.escalated_to_human}
    ),
    S.failed_retryable: frozenset({S.running, S.executing, S.failed_terminal, S.escalated_to_human, S.cancelled}),
    # Undo runs rollbacks of a finished task: it goes back to executing and ends again.
    S.completed: frozenset({S.executing}),
    S.failed_terminal: frozenset({S.executing}),
    # A person who reviews an escalation may decide against it: rejected, with the reason.
    S.escalated_to_human: frozenset({S.executing, S.cancelled, S.completed, S.rejected}),
    # A rejected plan may already have run its automatic steps; undo must still reach them.
    S.rejected: frozenset({S.executing}),
    S.cancelled: frozenset(),
}
OPEN_STATES = frozenset({S.queued, S.running, S.needs_approval, S.executing, S.failed_retryable})
# What `ooda tasks` lists by default: open tasks and those a human must look at.
ATTENTION_STATES = OPEN_STATES | {S.escalated_to_human}
# Where a task ends when every alert of it resolved while none of its steps had started: nobody
# acted yet, so nothing is left to do. In any later state something ran (or a person decided),
# and the resolution is only recorded.
ENDED_BY_RESOLUTION = frozenset({S.queued, S.running, S.needs_approval})
RESOLVED_OUTCOME_PREFIX = "resolved before action"


def check_transition(task_id: int, current: TaskState, target: TaskState) -> None:
    if target not in TRANSITIONS[current]:
        allowed = ", ".join(sorted(TRANSITIONS[current])) or "none (final state)"
        raise IllegalTransition(
            f"task {task_id}: cannot move from {current} to {target}; allowed from {current}: {allowed}"
        )


def clock_text(at: datetime) -> str:
    """A time as chat and outcomes show it: ``2026-01-05 14:31:47 UTC``."""
    return (at.astimezone(UTC) if at.tzinfo else at.replace(tzinfo=UTC)).strftime("%Y-%m-%d %H:%M:%S UTC")


def resolution_outcome(resolved_at: datetime) -> str:
    """The outcome of a task closed because every alert of it resolved before anyone acted."""
    return f"{RESOLVED_OUTCOME_PREFIX}: every alert of this task resolved at {clock_text(resolved_at)}"


def steps_started(steps: Iterable[StepRecord]) -> bool:
    """Whether any of these (action) rows ran or began to run."""
    return started(steps)


def redecidable(task: Task, approvals: Iterable[ApprovalRecord], steps: Iterable[StepRecord]) -> bool:
    """A task still waiting for its first approval, with nothing run: its plan may be decided again.

    Once someone approved, the plan they saw stands; once a step ran, the plan is under way.
    """
    return (task.state is S.needs_approval and not any(a.verdict == "approve" for a in approvals)
            and not steps_started(steps))


def task_number(text: str) -> int | None:
    """The id in a task reference as people write it (``12``, ``#12``, ``T12``); None if it is not one."""
    raw = text.lstrip("#Tt")
    return int(raw) if raw.isdigit() else None


class Task(BaseModel):
    id: int
    playbook_id: str
    playbook_version: str = ""
    state: TaskState
    group_key: str
    title: str
    environment: str
    severity: str = "info"
    requester: str
    signal_count: int = 0
    created_at: datetime
    updated_at: datetime
    closed_at: datetime | None = None
    args: dict[str, Any] = Field(default_factory=dict)
    proposal: dict[str, Any] | None = None
    messages: list[dict[str, Any]] = Field(default_factory=list)
    outcome: str | None = None
    # When every signal of the task last resolved (the senders' time), and when one fired again
    # after that (Ooda's time; cleared when they all resolve again). Two clocks, so they are never
    # compared: the alerts stand resolved while ``resolved_at`` is set and ``refired_at`` is not.
    resolved_at: datetime | None = None
    refired_at: datetime | None = None

    @property
    def alerts_resolved(self) -> bool:
        """Every alert of this task is resolved now (no signal fired again since)."""
        return self.resolved_at is not None and self.refired_at is None

    @property
    def plan_is_stale(self) -> bool:
        """Signals joined after the saved plan was decided (it counted fewer)."""
        return self.proposal is not None and self.proposal.get("signal_count") != self.signal_count

    @property
    def closed_by_resolution(self) -> bool:
        """Cancelled because every alert resolved before anyone acted."""
        return self.state is S.cancelled and (self.outcome or "").startswith(RESOLVED_OUTCOME_PREFIX)


class SignalTally(BaseModel):
    """The resolution state of a task's signals, as the store has them now."""

    total: int
    resolved: int
    last_ended_at: datetime | None = None  # the latest ``ends_at`` the senders reported

    @property
    def all_resolved(self) -> bool:
        return self.total > 0 and self.resolved == self.total


class ApprovalRecord(BaseModel):
    id: int
    task_id: int
    actor: str
    display: str
    verdict: str  # approve | reject
    reason: str | None = None
    edits: dict[str, Any] | None = None
    created_at: datetime
    roles: list[str] | None = None  # held when approving; None for approvals recorded before roles were
