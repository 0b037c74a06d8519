"""The evidence bundle of a task: everything an auditor needs, in one JSON document."""

from __future__ import annotations

from typing import Any, Protocol

from bot.chat.proposal_view import current_proposal
from bot.errors import UnknownTask
from bot.store.ports import ApprovalReads, AuditReads, EventReads, SignalReads, StepReads, TaskReads

BUNDLE_FORMAT = "ooda.evidence-bundle/1"


class EvidenceStore(TaskReads, StepReads, ApprovalReads, SignalReads, EventReads, AuditReads, Protocol):
    """Everything the bundle holds: the task and all that hangs off it."""


async def export_bundle(store: EvidenceStore, task_id: int) -> dict[str, Any]:
    """The task, its proposal, signals (with raw payloads), steps, approvals, events and audit records.

    Audit records carry their hashes, so the bundle can be checked against a later ``audit verify``.
    """
    task = await store.get_task(task_id)
    if task is None:
        raise UnknownTask(f"there is no task {task_id}")
    return {
        "format": BUNDLE_FORMAT,
        "task": task.model_dump(mode="json", exclude={"proposal"}),
        "proposal": (await current_proposal(store, task)).model_dump(mode="json"),
        "signals": [s.as_json() for s in await store.raw_signals_of_task(task_id)],
        "steps": [s.model_dump(mode="json") for s in await store.steps_of_task(task_id)],
        "approvals": [a.model_dump(mode="json") for a in await store.approvals_of_task(task_id)],
        # As the bundle always had them: the task id is the bundle's own.
        "events": [{k: v for k, v in e.as_json().items() if k != "task_id"}
                   for e in await store.events_of_task(task_id)],
        "audit": [row._asdict() async for row in store.audit_rows(task_id)],
    }
