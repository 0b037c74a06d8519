"""Retry: decide a task the policy stopped again, under the policy of now.

A task whose write step the policy denied (the kill switch was on, the change window closed, a
freeze, a rate limit) ends in ``escalated_to_human``, and resuming the kill switch alone does not
bring it back. ``ooda retry N`` (``/ops retry N``, ``POST /api/v1/tasks/N/retry``) puts it back
to ``executing``: each step that has not run is decided again right before it would run, exactly
as after an approval. It then runs if the policy allows it now, waits for approvals that are
still missing (those given before stay counted), or is denied again and escalated with today's
reason.

Only a task with nothing in doubt may be retried: every step has either succeeded or not started
(``pending``, ``denied``). A step that failed or whose outcome is unknown after a crash is for a
person to look at, not to be run again by a button.
"""

from __future__ import annotations

from bot.audit.chain import AuditEntry
from bot.chat.proposal_view import RETRY_STEP_STATES, retryable
from bot.errors import Conflict, Forbidden
from bot.loop.core import Core
from bot.loop.executor import Executor
from bot.model.steps import StepKind
from bot.model.tasks import Task, TaskState
from bot.policy.identity import Actor
from bot.store.protocol import TaskOps


async def retry(core: Core, executor: Executor, task: Task, actor: Actor) -> Task:
    """Move ``task`` from escalated_to_human back to executing and advance it; the task as it now stands.

    Raises:
        Forbidden: the kill switch is on, or the actor has no role in Ooda's config.
        Conflict: the task is not escalated, or has a step that failed or may have half-run.
    """
    if await core.load_kill_switch():
        raise Forbidden("the kill switch is on: nothing can run; resume first (`ooda resume` or /ops resume), "
                        "then retry")
    if task.state is not TaskState.escalated_to_human:
        raise Conflict(f"task {task.id} is {task.state.value.replace('_', ' ')}; only a task escalated to a "
                       "person can be retried")
    # No more than running the playbook again, which any configured person may: every step is
    # decided again, so what needs an approval still waits for one.
    if not actor.roles:
        raise Forbidden(f"{actor.display} has no role in Ooda's config, so cannot retry tasks")
    steps = await core.store.steps_of_task(task.id, StepKind.action)
    doubtful = [s for s in steps if s.state not in RETRY_STEP_STATES]
    if doubtful:
        named = ", ".join(f"{s.name} ({s.state})" for s in doubtful)
        raise Conflict(f"task {task.id} cannot be retried: {named}; a step that failed or may have half-run is "
                       f"for a person to check (`ooda show {task.id}`), then run the playbook again")
    if not retryable(task, steps):
        raise Conflict(f"task {task.id} has no step left to run ({task.outcome or 'escalated'}); there is nothing "
                       "to decide again")
    reason = f"retried by {actor.display}: decided again under the current policy"

    async def unit(t: TaskOps) -> Task:
        moved = await t.set_state(task.id, TaskState.escalated_to_human, TaskState.executing, actor=actor.id,
                                  reason=reason)
        t.audit(AuditEntry(actor.id, "task.retry", task.id,
                           {"previous_outcome": task.outcome, "via": actor.via}))
        return moved

    await core.store.transact(unit)
    advanced = await executor.advance(task.id)
    return advanced if advanced is not None else await _reread(core, task.id)


async def _reread(core: Core, task_id: int) -> Task:
    found = await core.store.get_task(task_id)
    assert found is not None  # tasks are never deleted
    return found
