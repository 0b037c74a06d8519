"""Act and review: run approved steps through the tool gateway, verify, undo, recover.

Safety holds at the moment a step runs, not only when it was proposed: each step is decided again
by the policy right before it runs (the kill switch may have been pulled, a rate limit reached, a
freeze begun), and it runs only if that decision allows it or the recorded approvals reach its
quorum. A step is claimed (pending -> running) in a committed transaction before its tool is
called, so no two workers run it and a crash leaves a visible ``running`` step that recovery
resolves: re-run if the tool is idempotent, otherwise escalate to a human.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable, Hashable

import structlog

from bot.audit.chain import AuditEntry
from bot.errors import Conflict, ToolError
from bot.loop.authority import UNDO_VERDICT
from bot.loop.core import Core
from bot.loop.gateway import StepClaimedElsewhere, ToolCallRefused
from bot.loop.planner import load_signals, step_key, step_param_rules, template_context
from bot.loop.readable import undo_action
from bot.model import events as ev
from bot.model.events import Event
from bot.model.proposals import Decision
from bot.model.steps import RUNNABLE, StepKind, StepRecord, StepState, undo_phase, undo_targets
from bot.model.tasks import Task, TaskState
from bot.playbooks.schema import Playbook
from bot.playbooks.templates import TemplateRenderError, evaluate, render_params
from bot.policy.identity import Actor
from bot.policy.rules import counted_approvers, quorum_reached
from bot.ports import StepCall
from bot.store import step_moves
from bot.store.protocol import TaskOps

log = structlog.get_logger(__name__)

UNDO_FROM = {TaskState.completed, TaskState.failed_terminal, TaskState.escalated_to_human, TaskState.rejected}


class Executor:
    def __init__(self, core: Core, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.core = core
        self._sleep = sleep
        self._locks: defaultdict[int, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.on_step_started: Callable[[int], None] | None = None  # for benchmarks and tests

    # -- act -------------------------------------------------------------------------------------

    async def advance(self, task_id: int) -> Task | None:
        """Run the task's pending steps in order, as far as the policy and approvals allow; a task
        whose undo was asked for goes on with its rollbacks instead (after a restart too)."""
        async with self._locks[task_id]:
            task = await self.core.store.get_task(task_id)
            if task is None or task.state is not TaskState.executing:
                return task
            if undo_phase(await self.core.store.steps_of_task(task_id, StepKind.rollback)) is not None:
                return await self._run_undo(task)
            playbook = self.core.playbooks.get(task.playbook_id)
            approvals = [a for a in await self.core.store.approvals_of_task(task_id) if a.verdict == "approve"]
            approvers = {a.actor for a in approvals}
            for step in await self.core.store.steps_of_task(task_id, StepKind.action):
                if step.state is StepState.succeeded:
                    continue
                if step.state not in RUNNABLE:
                    return task
                stop = await self._gate(task, playbook, step, [(a.actor, a.roles) for a in approvals])
                if stop is not None:
                    return stop
                with self.core.tracing.phase(f"step {step.name}", task, tool=step.tool, approvers=len(approvers)):
                    ran = await self._run_step(task, playbook, step, approvers)
                if not ran:
                    return await self.core.store.get_task(task_id)
            with self.core.tracing.phase("verify", task, tool=playbook.verify.tool if playbook.verify else None):
                return await self._review(task, playbook)

    async def _gate(self, task: Task, playbook: Playbook, step: StepRecord,
                    approvals: list[tuple[str, list[str] | None]]) -> Task | None:
        """Decide the step again now; returns the task when it must stop here."""
        _, decision = await self.core.assess_step(task, step)
        step.decision = decision.model_dump()
        if decision.verdict == "deny":
            reason = f"policy denied {step.name} at run time ({decision.rule}: {decision.reason})"

            async def deny(t: TaskOps) -> Task:
                if step.state is StepState.denied:
                    await t.update_step(step.id, decision=decision.model_dump())
                else:
                    await step_moves.move(t, step, StepState.denied, reason=reason, decision=decision.model_dump())
                return await t.set_state(task.id, TaskState.executing, TaskState.escalated_to_human,
                                         actor="system", reason=reason, outcome=reason)

            return await self.core.store.transact(deny)
        counted = counted_approvers(decision, approvals, task.requester)  # quorum per step
        if decision.verdict == "needs_approval" and not quorum_reached(decision, counted):
            async def wait(t: TaskOps) -> Task:
                if step.state is StepState.denied:
                    await step_moves.move(t, step, StepState.pending, reason=f"needs approval ({decision.rule})",
                                     decision=decision.model_dump())
                else:
                    await t.update_step(step.id, decision=decision.model_dump())
                return await t.set_state(task.id, TaskState.executing, TaskState.needs_approval, actor="system",
                                         reason=f"{step.name} needs approval ({decision.rule})")

            return await self.core.store.transact(wait)
        return None

    async def _run_step(self, task: Task, playbook: Playbook, step: StepRecord, approvers: set[str]) -> bool:
        core = self.core
        decision = Decision.model_validate(step.decision)
        if step.state is StepState.denied:
            step = await core.store.transact(
                lambda t: step_moves.move(t, step, StepState.pending, reason=f"allowed now ({decision.rule})"))
        if self.on_step_started:
            self.on_step_started(task.id)
        spec = next((s for s in playbook.steps if s.name == step.name), None)
        try:
            # The gateway asks the policy and the recorded approvals itself, and claims the step.
            outcome = await core.gateway.write(
                task, step, timeout_s=spec.timeout_s if spec else core.settings.engine.step_timeout_s,
                retries=spec.retries if spec else 0)
            ok, result, error = outcome.ok, outcome.result, outcome.error
            rollback = outcome.rollback.model_dump() if outcome.rollback else step.rollback
        except StepClaimedElsewhere:
            return True  # another worker has it
        except ToolCallRefused as exc:
            return await self._refused(task, step, str(exc))
        except ToolError as exc:
            ok, result, error, rollback = False, None, str(exc), None
        running = step.model_copy(update={"state": StepState.running})
        core.metrics.tool_calls.labels(step.tool, "ok" if ok else "failed").inc()
        finished = core.clock().isoformat()

        async def record(t: TaskOps) -> None:
            await step_moves.move(t, running, StepState.succeeded if ok else StepState.failed,
                             reason=error or "tool call succeeded", result=result, error=error,
                             rollback=rollback if ok else None, finished_at=finished)
            name = ev.EXECUTED if ok else ev.FAILED
            t.event(Event(name, task.id, {"step": step.name, "tool": step.tool, "ok": ok, "error": error}))
            if not ok:
                await t.set_state(task.id, TaskState.executing, TaskState.failed_terminal, actor="system",
                                  reason=f"{step.name} failed", outcome=f"step {step.name} failed: {error}")

        if not await self._record_result(record, task, step, ok):
            return False
        log.info("step.done", task_id=task.id, step=step.name, tool=step.tool, ok=ok)
        return ok

    async def _refused(self, task: Task, step: StepRecord, refusal: str) -> bool:
        """The gateway would not run a step the gate let through (the kill switch was pulled, an
        approval no longer counts): it stays pending and a person looks at the task."""
        reason = f"{step.name} was not run: {refusal}"
        await self.core.store.transact(lambda t: t.set_state(
            task.id, TaskState.executing, TaskState.escalated_to_human, actor="system", reason=reason,
            outcome=reason))
        log.warning("step.refused", task_id=task.id, step=step.name, reason=refusal)
        return False

    # -- review ----------------------------------------------------------------------------------

    async def _review(self, task: Task, playbook: Playbook) -> Task:
        if playbook.verify is None:
            return await self._finish(task.id, TaskState.completed, "all steps succeeded")
        verify = playbook.verify
        deadline = asyncio.get_running_loop().time() + verify.within_s
        signals = await load_signals(self.core, task.id)
        context = template_context(self.core, task, signals, {})
        last_error = "never checked"
        attempt = 0
        while True:
            attempt += 1
            try:
                params = render_params(verify.params, context, where="verify.params",
                                       rules=step_param_rules(self.core, playbook, verify.tool))
                outcome = await self.core.gateway.read(
                    StepCall(tool=verify.tool, params=params), purpose="verify", task_id=task.id,
                    reason_code=f"verify:{playbook.id}",
                    idempotency_key=step_key(task.id, StepKind.verify, attempt, verify.tool), timeout_s=10, retries=0,
                )
                if outcome.ok and evaluate(verify.expect, {**context, "result": outcome.result or {}},
                                           where="verify.expect"):
                    return await self._finish(task.id, TaskState.completed,
                                              f"all steps succeeded; verified with {verify.tool}")
                last_error = outcome.error or f"expectation not met: {verify.expect}"
            except TemplateRenderError as exc:
                # The playbook's verify block itself is at fault: waiting will not fix it, and an
                # exception here would leave the task executing with nobody told.
                return await self._finish(task.id, TaskState.escalated_to_human,
                                          f"verify could not be evaluated: {exc}")
            except ToolError as exc:
                last_error = str(exc)
            if asyncio.get_running_loop().time() + verify.interval_s > deadline:
                return await self._finish(task.id, TaskState.escalated_to_human,
                                          f"verify failed within {verify.within_s:g}s: {last_error}")
            await self._sleep(verify.interval_s)

    async def _finish(self, task_id: int, target: TaskState, outcome: str) -> Task:
        return await self.core.store.transact(
            lambda t: t.set_state(task_id, TaskState.executing, target, actor="system", reason=outcome,
                                  outcome=outcome)
        )

    # -- undo ------------------------------------------------------------------------------------

    async def undo(self, task: Task, actor: Actor) -> Task:
        """Ask for the undo of a finished task and run it: the rollbacks of its executed reversible
        steps, newest first. The request (task back to executing, one pending rollback row per
        step, the undo recorded as the actor's) commits before any rollback runs, so a crash at any
        point leaves an undo that the restart finishes or hands to a person (``recover``)."""
        async with self._locks[task.id]:
            rollbacks = await self.core.store.steps_of_task(task.id, StepKind.rollback)
            targets = undo_targets(await self.core.store.steps_of_task(task.id, StepKind.action), rollbacks)
            existing = {s.idempotency_key: s for s in rollbacks}
            unclear = [s for s in rollbacks if s.state is StepState.unknown]
            if not targets:
                if unclear:
                    raise Conflict(f"task {task.id}: the rollback of {', '.join(s.name for s in unclear)} was "
                                   "interrupted and may have taken effect; check it by hand, Ooda will not run it "
                                   "again")
                raise Conflict(f"task {task.id} has no executed reversible step left to undo")
            reason = f"undo requested by {actor.display}"

            async def request(t: TaskOps) -> Task:
                moved = await t.set_state(task.id, UNDO_FROM, TaskState.executing, actor=actor.id, reason=reason)
                await t.add_approval(task.id, actor.id, actor.display, UNDO_VERDICT, None, None)
                decision = Decision(verdict="allow", rule="undo", reason=reason).model_dump()
                for s in targets:
                    call = StepCall.model_validate(s.rollback)
                    row = existing.get(rollback_key(task.id, s))
                    if row is not None:
                        await step_moves.move(t, row, StepState.pending, actor=actor.id, reason=reason,
                                              decision=decision, error=None)
                        continue
                    await t.insert_step(task_id=task.id, kind=StepKind.rollback, idx=s.idx, name=s.name,
                                        tool=call.tool, category=s.category, params=call.params, rollback=None,
                                        decision=decision, state=StepState.pending,
                                        idempotency_key=rollback_key(task.id, s))
                names = [s.name for s in sorted(targets, key=lambda s: s.idx, reverse=True)]
                t.event(Event(ev.UNDO_REQUESTED, task.id, {"actor": actor.id, "display": actor.display,
                                                           "steps": names}))
                t.audit(AuditEntry(actor.id, "task.undo_requested", task.id, {"via": actor.via, "steps": names}))
                return moved

            moved = await self.core.store.transact(request)
            return await self._run_undo(moved)

    async def _run_undo(self, task: Task) -> Task:
        """Run the task's pending rollbacks newest first, then end the undo from what the rows say."""
        requester = await self._undo_requester(task.id)
        rows = sorted(await self.core.store.steps_of_task(task.id, StepKind.rollback), key=lambda s: s.idx,
                      reverse=True)
        for row in rows:
            if row.state is not StepState.pending:
                continue
            with self.core.tracing.phase(f"undo {row.name}", task, actor=requester[0]):
                rolled = await self._rollback(task, row, requester)
            if not rolled:
                break
        return await self._end_undo(task, requester)

    async def _undo_requester(self, task_id: int) -> tuple[str, str]:
        """(id, display) of whoever asked for the undo last: the rollbacks run on their request."""
        asked = [a for a in await self.core.store.approvals_of_task(task_id) if a.verdict == UNDO_VERDICT]
        return (asked[-1].actor, asked[-1].display) if asked else ("system", "Ooda")

    async def _end_undo(self, task: Task, requester: tuple[str, str]) -> Task:
        actor_id, display = requester

        async def end(t: TaskOps) -> Task:
            rows = sorted(await t.steps(task.id, StepKind.rollback), key=lambda s: s.idx, reverse=True)
            done = [r.name for r in rows if r.state is StepState.succeeded]
            failed = next((r for r in rows if r.state is StepState.failed), None)
            if failed is not None:
                for r in rows:
                    if r.state is StepState.pending:
                        await step_moves.move(t, r, StepState.skipped, reason=f"undo stopped: {failed.name} failed")
                outcome = (f"undo failed at {failed.name}: {failed.error or 'failed'}; rolled back so far: "
                           f"{', '.join(done) or 'nothing'}")
                return await t.set_state(task.id, TaskState.executing, TaskState.failed_terminal, actor="system",
                                         reason=outcome, outcome=outcome)
            if any(r.state is not StepState.succeeded for r in rows):
                return await t.get_task(task.id)  # another worker is still on it
            actions = {s.name: s for s in await t.steps(task.id, StepKind.action)}
            undone, words = [], []
            for r in rows:
                action = actions.get(r.name)
                if action is not None and action.state is StepState.succeeded:
                    await step_moves.move(t, action, StepState.rolled_back, actor=actor_id,
                                     reason=f"rolled back by {r.tool}")
                    undone.append(r.name)
                if r.state is StepState.succeeded:
                    words.append(undo_action(r.tool, r.params))  # "flag checkout.throttle back to 0%"
            outcome = f"Undone by {display}: {'; '.join(words) or ', '.join(undone or done)}"
            t.event(Event(ev.UNDONE, task.id, {"actor": actor_id, "display": display, "steps": undone or done}))
            return await t.set_state(task.id, TaskState.executing, TaskState.completed, actor="system",
                                     reason=outcome, outcome=outcome)

        return await self.core.store.transact(end)

    async def _rollback(self, task: Task, row: StepRecord, requester: tuple[str, str]) -> bool:
        """Claim and run one rollback row; True when it succeeded."""
        actor_id, _ = requester
        try:
            # The gateway checks the recorded undo request and the kill switch, and claims the row.
            outcome = await self.core.gateway.write(task, row, timeout_s=self.core.settings.engine.step_timeout_s,
                                                    retries=2)
            ok, result, error = outcome.ok, outcome.result, outcome.error
        except StepClaimedElsewhere:
            return True  # another worker has it
        except ToolCallRefused as exc:
            # Not run: the row fails, and the next undo asks for it again (failed -> pending).
            refusal = str(exc)
            await self.core.store.transact(lambda t: self._not_run(t, row, refusal, actor_id))
            return False
        except ToolError as exc:
            ok, result, error = False, None, str(exc)
        running = row.model_copy(update={"state": StepState.running})

        async def record(t: TaskOps) -> None:
            await step_moves.move(t, running, StepState.succeeded if ok else StepState.failed,
                             reason=error or "rollback succeeded", result=result, error=error,
                             finished_at=self.core.clock().isoformat())

        return await self._record_result(record, task, row, ok) and ok

    async def _record_result(self, record: Callable[[TaskOps], Awaitable[None]], task: Task, step: StepRecord,
                             ok: bool) -> bool:
        """Commit a step's result; False when the step was resolved elsewhere meanwhile: the leader
        took it for interrupted (this replica's owner lock was absent at two looks) and escalated it
        or ran it again. That stands; the call's own audit record keeps what this run returned."""
        try:
            await self.core.store.transact(record)
        except Conflict:
            log.warning("step.result_refused", task_id=task.id, step=step.name, tool=step.tool, ok=ok)
            return False
        return True

    @staticmethod
    async def _not_run(t: TaskOps, row: StepRecord, refusal: str, actor: str) -> None:
        claimed = await step_moves.claim(t, row, row.started_at.isoformat() if row.started_at else "")
        if claimed:
            await step_moves.move(t, row.model_copy(update={"state": StepState.running}), StepState.failed, actor=actor,
                             reason=refusal, error=f"not run: {refusal}")

    # -- recovery --------------------------------------------------------------------------------

    async def recover(self, *, interrupted_only: bool = False,
                      confirmed: Callable[[Hashable], bool] | None = None) -> list[Task]:
        """Resolve steps that were running when the process died; returns tasks to resume.

        An interrupted step (of the plan or of an undo) runs again only when its tool is idempotent
        (the same call with the same idempotency key); otherwise the task goes to a person with
        the reason, and an interrupted undo stops there (its other rollbacks are skipped).
        ``interrupted_only``: resume only the tasks that had such steps (the leader's periodic look
        for steps a dead replica left, while live replicas drive the other executing tasks).
        ``confirmed``: asked about each step whose owner is gone; its steps are resolved only when
        it answers True for each (the leader's grace, bot/loop/orphans.py).
        """
        resume = []
        for task in await self.core.store.tasks_in_states([TaskState.executing.value]):
            interrupted = [s for s in await self.core.store.steps_of_task(task.id) if s.state is StepState.running]
            if interrupted and await self.core.store.steps_held_by_live_processes([s.id for s in interrupted]):
                log.info("recovery.left_to_live_replica", task_id=task.id)  # it is running them right now
                continue
            if interrupted_only and not interrupted:
                continue
            # A list, not a generator: every step is registered with the look, also after a False.
            if confirmed is not None and not all([confirmed(("step", task.id, s.id, s.attempts)) for s in interrupted]):
                continue
            unsafe = [s for s in interrupted if not self._idempotent(s.tool)]
            if unsafe:
                reason = _interrupted_reason(unsafe)

                async def escalate(t: TaskOps, task: Task = task, unsafe: list[StepRecord] = unsafe,
                                   reason: str = reason) -> None:
                    for s in unsafe:
                        await step_moves.move(t, s, StepState.unknown, reason=reason, error="interrupted by a restart")
                    if any(s.kind is StepKind.rollback for s in unsafe):
                        for s in await t.steps(task.id, StepKind.rollback):
                            if s.state is StepState.pending:
                                await step_moves.move(t, s, StepState.skipped, reason="the undo was interrupted")
                    await t.set_state(task.id, TaskState.executing, TaskState.escalated_to_human, actor="system",
                                      reason=reason, outcome=reason)

                await self.core.store.transact(escalate)
                log.warning("recovery.escalated", task_id=task.id, steps=[s.name for s in unsafe])
                continue

            async def requeue(t: TaskOps, task: Task = task, interrupted: list[StepRecord] = interrupted) -> None:
                for s in interrupted:
                    await step_moves.move(t, s, StepState.pending,
                                          reason="interrupted by a restart; its tool is idempotent")
                    t.audit(AuditEntry("system", "step.rerun_after_restart", task.id,
                                       {"step": s.name, "kind": str(s.kind), "tool": s.tool,
                                        "idempotency_key": s.idempotency_key}))

            if interrupted:
                await self.core.store.transact(requeue)
                log.info("recovery.rerun_idempotent", task_id=task.id, steps=[s.name for s in interrupted])
            resume.append(task)
        return resume

    def _idempotent(self, tool_name: str) -> bool:
        try:
            return bool(self.core.gateway.registry.get(tool_name).idempotent)
        except ToolError:
            return False


def rollback_key(task_id: int, step: StepRecord) -> str:
    """The idempotency key of the rollback of ``step``: the same for every attempt and restart."""
    return step_key(task_id, StepKind.rollback, step.idx, step.name)


def _interrupted_reason(unsafe: list[StepRecord]) -> str:
    names = ", ".join(f"{s.name} ({s.tool})" for s in unsafe)
    if any(s.kind is StepKind.rollback for s in unsafe):
        return (f"the undo was interrupted while rolling back {names}; the tool is not idempotent, so Ooda will "
                "not run it again: check by hand whether it took effect, and finish the undo by hand")
    return (f"interrupted while running {names}; the tool is not idempotent, so Ooda will not run it "
            "again: check its effect by hand, then undo or close the task")


