"""The proposal as it stands now: the plan saved at decide time plus live step states and approvals."""

from __future__ import annotations

from bot.errors import UnknownTask
from bot.proposals import ApprovalView, Proposal
from bot.risk import band_for
from bot.steps import StepKind, StepState, undo_phase, undo_targets
from bot.store import Store
from bot.tasks import Task, TaskState

UNDOABLE_STATES = {TaskState.completed, TaskState.failed_terminal, TaskState.escalated_to_human,
                   TaskState.rejected}


async def current_proposal(store: Store, task: Task | int) -> Proposal:
    if isinstance(task, int):
        found = await store.get_task(task)
        if found is None:
            raise UnknownTask(f"there is no task {task}; list tasks with `ooda tasks` or /ops tasks")
        task = found
    if task.proposal is None:
        # Not planned yet: a minimal proposal so surfaces can still show the task.
        return Proposal(task_id=task.id, playbook_id=task.playbook_id, title=task.title,
                        summary="collecting evidence…", state=task.state.value, environment=task.environment,
                        severity=task.severity, requester=task.requester, signal_count=task.signal_count,
                        risk={"score": 0, "band": band_for(0)}, blast_radius="unknown",
                        created_at=task.created_at, updated_at=task.updated_at, outcome=task.outcome)
    proposal = Proposal.model_validate(task.proposal)
    steps = {s.idx: s for s in await store.steps_of_task(task.id, StepKind.action)}
    rollbacks = await store.steps_of_task(task.id, StepKind.rollback)
    # Rows of databases written before actions moved to rolled_back show it from their rollback.
    rolled_back = {s.name for s in rollbacks if s.state is StepState.succeeded}
    views = []
    for view in proposal.steps:
        record = steps.get(view.index)
        if record is not None:
            state = StepState.rolled_back if view.name in rolled_back else record.state
            result = record.error or (str(record.result)[:300] if record.result is not None else None)
            view = view.model_copy(update={"state": state, "params": record.params, "result": result})
        views.append(view)
    approvals = [ApprovalView(actor=a.display, at=a.created_at)
                 for a in await store.approvals_of_task(task.id) if a.verdict == "approve"]
    can_undo = task.state in UNDOABLE_STATES and bool(undo_targets(steps.values(), rollbacks))
    return proposal.model_copy(update={
        "state": task.state.value, "steps": views, "approvals": approvals, "updated_at": task.updated_at,
        "signal_count": task.signal_count, "can_undo": can_undo, "undo": undo_phase(rollbacks),
        "outcome": task.outcome,
    })
