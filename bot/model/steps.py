"""The step lifecycle: what a step is, the states it moves through, and the one table of moves.

A step is a stored row of a task: an evidence read, an action of the plan, a verify call or the
rollback of an action. Its state changes only through ``bot.store.step_moves.move`` (or ``claim``), which checks the
move against ``TRANSITIONS`` here (``IllegalTransition`` otherwise), changes the row only if it
is still in the state the caller read (compare-and-set: another worker may have moved it), and
records the step event and its audit record in the same transaction as the change.

    pending ──claim──> running ──> succeeded ──(its rollback succeeded)──> rolled_back
       │                  │  └──> failed ──(undo asked again: rollbacks only)──> pending
       ├──> denied ───────┤  └──> unknown   (interrupted, tool not idempotent: a person checks)
       └──> skipped       └──> pending      (interrupted, tool idempotent: re-run, same key)

Undo is a phase of the task, read from its rollback rows (``undo_phase``): requested (rows
pending), rolling back (one running or done while others wait), undone, undo failed, escalated
(a rollback was interrupted and could not safely run again).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel

from bot.errors import IllegalTransition


class StepKind(StrEnum):
    evidence = "evidence"
    action = "step"  # stored as "step" since the first schema: rows of old databases read the same
    verify = "verify"
    rollback = "rollback"


class StepState(StrEnum):
    pending = "pending"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    skipped = "skipped"
    denied = "denied"
    rolled_back = "rolled_back"  # an action whose rollback succeeded
    unknown = "unknown"  # was running when the process died and could not be re-run


class StepRecord(BaseModel):
    """A stored step: an evidence read, a proposed/executed step, a rollback or a verify call."""

    id: int
    task_id: int
    kind: StepKind
    idx: int
    name: str
    tool: str
    category: str
    params: dict[str, Any]
    rollback: dict[str, Any] | None = None
    decision: dict[str, Any] | None = None
    state: StepState  # changed only through bot.model.steps (its transition table)
    idempotency_key: str
    result: Any = None
    error: str | None = None
    attempts: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None



P = StepState
TRANSITIONS: dict[StepState, frozenset[StepState]] = {
    P.pending: frozenset({P.running, P.denied, P.skipped}),
    P.denied: frozenset({P.pending, P.skipped}),
    # running -> pending: interrupted by a crash, and its tool is idempotent (same key again).
    P.running: frozenset({P.succeeded, P.failed, P.unknown, P.pending}),
    P.succeeded: frozenset({P.rolled_back}),
    P.failed: frozenset({P.pending}),
    P.skipped: frozenset({P.pending}),
    P.rolled_back: frozenset(),
    P.unknown: frozenset(),
}
# Moves only some kinds may make: the table above holds for every kind except these.
KIND_ONLY: dict[tuple[StepState, StepState], frozenset[StepKind]] = {
    (P.succeeded, P.rolled_back): frozenset({StepKind.action}),
    # A later undo asks again for a rollback that failed, or was skipped after an earlier one failed.
    (P.failed, P.pending): frozenset({StepKind.rollback}),
    (P.skipped, P.pending): frozenset({StepKind.rollback}),
}
# States in which a step never ran; any other state means the task acted.
UNSTARTED = frozenset({P.pending, P.denied, P.skipped})
# States a step of the plan may still be run from.
RUNNABLE = frozenset({P.pending, P.denied})
FINISHED = frozenset({P.succeeded, P.failed, P.skipped, P.rolled_back, P.unknown})


def check_step_transition(step: StepRecord, target: StepState) -> None:
    current = StepState(step.state)
    kinds = KIND_ONLY.get((current, target))
    if target not in TRANSITIONS[current] or (kinds is not None and StepKind(step.kind) not in kinds):
        allowed = ", ".join(sorted(s for s in TRANSITIONS[current]
                                   if (k := KIND_ONLY.get((current, s))) is None or StepKind(step.kind) in k))
        raise IllegalTransition(
            f"step {step.name} ({step.kind}) of task {step.task_id}: cannot move from {current} to {target}; "
            f"allowed from {current}: {allowed or 'none (final state)'}")


def started(steps: Iterable[StepRecord]) -> bool:
    """Whether any of these (action) rows ran or began to run."""
    return any(s.state not in UNSTARTED for s in steps)


def undo_targets(actions: Iterable[StepRecord], rollbacks: Iterable[StepRecord]) -> list[StepRecord]:
    """The actions an undo would roll back now: run, reversible, and with no rollback that
    succeeded or may have (``unknown``); a failed or skipped rollback is asked for again."""
    tried = {(r.idx, r.name): r.state for r in rollbacks}
    return [a for a in actions if a.state is P.succeeded and a.rollback
            and tried.get((a.idx, a.name), P.failed) in {P.failed, P.skipped}]


class UndoPhase(StrEnum):
    """Where the undo of a task stands, read from its rollback rows."""

    requested = "undo_requested"
    rolling_back = "rolling_back"
    undone = "undone"
    failed = "undo_failed"
    escalated = "undo_escalated"

    @property
    def words(self) -> str:
        return _PHASE_WORDS[self]


_PHASE_WORDS = {
    UndoPhase.requested: "undo requested",
    UndoPhase.rolling_back: "rolling back",
    UndoPhase.undone: "undone",
    UndoPhase.failed: "undo failed",
    UndoPhase.escalated: "undo interrupted: escalated to a person",
}


def undo_phase(rollbacks: Iterable[StepRecord]) -> UndoPhase | None:
    """The undo phase of a task from its rollback rows; None when nobody asked for an undo."""
    states = [StepState(s.state) for s in rollbacks]
    if not states:
        return None
    if P.unknown in states:
        return UndoPhase.escalated
    if P.running in states:
        return UndoPhase.rolling_back
    if P.pending in states:
        return UndoPhase.rolling_back if P.succeeded in states else UndoPhase.requested
    if P.failed in states:
        return UndoPhase.failed
    return UndoPhase.undone
