"""Step moves inside a unit of work: the transition table of ``bot.model.steps`` applied to a stored row.

Each move is a compare-and-set of the row's state (another worker may have moved it since it was
read) with the ``step_changed`` event and the ``step.<state>`` audit record in the same
transaction, so no step changes state without both.
"""

from __future__ import annotations

from typing import Any

from bot.audit.chain import AuditEntry
from bot.errors import Conflict
from bot.model import events as ev
from bot.model.events import Event
from bot.model.steps import P, StepRecord, StepState, check_step_transition
from bot.store.ports import TaskOps


async def move(t: TaskOps, step: StepRecord, target: StepState, *, actor: str = "system", reason: str = "",
               **fields: Any) -> StepRecord:
    """Move ``step`` to ``target`` inside the unit of work ``t``, with its event and audit record.

    Raises:
        IllegalTransition: the table has no such move.
        Conflict: the row is no longer in the state ``step`` was read in (someone moved it).
    """
    check_step_transition(step, target)
    if not await t.set_step_state(step.id, StepState(step.state), target, **fields):
        raise Conflict(f"step {step.name} of task {step.task_id} is no longer {step.state}; "
                       "someone else moved it a moment ago")
    _record(t, step, target, actor, reason)
    known = {k: v for k, v in fields.items() if k in type(step).model_fields and k not in {"result", "decision"}}
    return step.model_copy(update={"state": target, **known})


async def claim(t: TaskOps, step: StepRecord, started_at: str) -> bool:
    """pending -> running, counting the attempt; False when another worker claimed it first."""
    check_step_transition(step, P.running)
    if not await t.claim_step(step.id, started_at):
        return False
    _record(t, step, P.running, "system", "claimed to run")
    return True


def _record(t: TaskOps, step: StepRecord, target: StepState, actor: str, reason: str) -> None:
    payload = {"step": step.name, "kind": str(step.kind), "tool": step.tool, "from": str(step.state),
               "to": str(target), "reason": reason}
    t.event(Event(ev.STEP_CHANGED, step.task_id, payload))
    t.audit(AuditEntry(actor, f"step.{target}", step.task_id, payload))
