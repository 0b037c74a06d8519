"""The proposal as it stands now: the plan saved at decide time plus live step states and approvals."""

from __future__ import annotations

from datetime import timedelta
from typing import Protocol

from bot.errors import UnknownTask
from bot.loop.readable import result_text
from bot.model.proposals import ApprovalView, Decision, Proposal
from bot.model.steps import RUNNABLE, StepKind, StepRecord, StepState, undo_phase, undo_targets
from bot.model.tasks import Task, TaskState
from bot.policy.risk import band_for
from bot.policy.rules import counts_for
from bot.store.ports import ApprovalReads, StepReads, TaskReads


class ProposalStore(TaskReads, StepReads, ApprovalReads, Protocol):
    """The store ports a proposal is read from: the task, its steps and its approvals."""


# A retry decides again the steps that may still run, beside those that already did: nothing half-run.
RETRY_STEP_STATES = RUNNABLE | {StepState.succeeded}
UNDOABLE_STATES = {TaskState.completed, TaskState.failed_terminal, TaskState.escalated_to_human,
                   TaskState.rejected}


def retryable(task: Task, steps: list[StepRecord]) -> bool:
    """An escalated task whose steps either succeeded or never started, one at least not started:
    what the policy stopped, with nothing half-run for a person to check first (bot/chat/retry.py)."""
    return (task.state is TaskState.escalated_to_human and all(s.state in RETRY_STEP_STATES for s in steps)
            and any(s.state is not StepState.succeeded for s in steps))


async def current_proposal(store: ProposalStore, task: Task | int) -> Proposal:
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
    records = [a for a in await store.approvals_of_task(task.id) if a.verdict == "approve"]
    views = []
    for view in proposal.steps:
        record = steps.get(view.index)
        if record is not None:
            state = StepState.rolled_back if view.name in rolled_back else record.state
            result = record.error or (result_text(record.result) if record.result is not None else None)
            decision = Decision.model_validate(record.decision) if record.decision else view.decision
            view = view.model_copy(update={"state": state, "params": record.params, "result": result,
                                           "decision": decision})
        counted = [a.display for a in records if counts_for(view.decision, a.actor, a.roles, task.requester)]
        views.append(view.model_copy(update={"approved_by": counted}))
    approvals = [ApprovalView(actor=a.display, at=a.created_at, actor_id=a.actor, roles=a.roles) for a in records]
    waiting = task.state is TaskState.needs_approval and proposal.expiry_s
    expires_at = task.updated_at + timedelta(seconds=proposal.expiry_s or 0) if waiting else None
    can_undo = task.state in UNDOABLE_STATES and bool(undo_targets(steps.values(), rollbacks))
    return proposal.model_copy(update={
        "state": task.state.value, "steps": views, "approvals": approvals, "updated_at": task.updated_at,
        "signal_count": task.signal_count, "can_undo": can_undo, "undo": undo_phase(rollbacks),
        "outcome": task.outcome, "expires_at": expires_at,
        "can_retry": retryable(task, list(steps.values())),
    })
