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
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from bot import events as ev
from bot.audit import AuditEntry
from bot.core import Core
from bot.errors import Conflict, ToolError
from bot.events import Event
from bot.identity import Actor
from bot.planner import load_signals, step_key, step_param_rules, template_context
from bot.playbooks import Playbook
from bot.policy import counted_approvers, quorum_reached
from bot.ports import StepCall
from bot.proposals import Decision
from bot.readable import undo_action
from bot.step_claim import claim_step
from bot.store import TaskOps
from bot.tasks import StepRecord, Task, TaskState
from bot.templates import TemplateRenderError, evaluate, render_params

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
        """Run the task's pending steps in order, as far as the policy and approvals allow."""
        async with self._locks[task_id]:
            task = await self.core.store.get_task(task_id)
            if task is None or task.state is not TaskState.executing:
                return task
            playbook = self.core.playbooks.get(task.playbook_id)
            approvals = [a for a in await self.core.store.approvals_of_task(task_id) if a.verdict == "approve"]
            approvers = {a.actor for a in approvals}
            for step in await self.core.store.steps_of_task(task_id, "step"):
                if step.state == "succeeded":
                    continue
                if step.state != "pending" and step.state != "denied":
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
            return await self._deny(task, step, decision)
        counted = counted_approvers(decision, approvals, task.requester)  # quorum per step
        if decision.verdict == "needs_approval" and not quorum_reached(decision, counted):
            async def wait(t: TaskOps) -> Task:
                await t.update_step(step.id, decision=decision.model_dump(), state="pending")
                return await t.set_state(task.id, TaskState.executing, TaskState.needs_approval, actor="system",
                                         reason=f"{step.name} needs approval ({decision.rule})")

            return await self.core.store.transact(wait)
        return None

    async def _deny(self, task: Task, step: StepRecord, decision: Decision) -> Task:
        reason = f"policy denied {step.name} at run time ({decision.rule}: {decision.reason})"

        async def deny(t: TaskOps) -> Task:
            await t.update_step(step.id, state="denied", decision=decision.model_dump())
            return await t.set_state(task.id, TaskState.executing, TaskState.escalated_to_human,
                                     actor="system", reason=reason, outcome=reason)

        return await self.core.store.transact(deny)

    async def _run_step(self, task: Task, playbook: Playbook, step: StepRecord, approvers: set[str]) -> bool:
        core = self.core
        decision = Decision.model_validate(step.decision)
        now = core.clock()
        if step.state == "denied":
            await core.store.transact(lambda t: t.update_step(step.id, state="pending"))
        claim = await core.store.transact(lambda t: claim_step(t, core.policy, task, step, now))
        if claim.refusal is not None:  # paused or rate-limited since the decision, maybe by another process
            await self._deny(task, step, claim.refusal)
            return False
        if not claim.claimed:
            return True  # another worker has it
        if self.on_step_started:
            self.on_step_started(task.id)
        spec = next((s for s in playbook.steps if s.name == step.name), None)
        records: list[dict[str, Any]] = []

        async def sink(record: dict[str, Any]) -> None:
            records.append(record)

        approval_id = f"task-{task.id}:approved-by:{','.join(sorted(approvers))}" if approvers else None
        try:
            outcome = await core.gateway.call(
                StepCall(tool=step.tool, params=step.params), decision=decision,
                reason_code=f"playbook:{playbook.id}:{step.name}", approval_id=approval_id, dry_run=False,
                idempotency_key=step.idempotency_key,
                timeout_s=spec.timeout_s if spec else core.settings.engine.step_timeout_s,
                retries=spec.retries if spec else 0, audit=sink,
            )
            ok, result, error = outcome.ok, outcome.result, outcome.error
            rollback = outcome.rollback.model_dump() if outcome.rollback else step.rollback
        except ToolError as exc:
            ok, result, error, rollback = False, None, str(exc), None
        core.metrics.tool_calls.labels(step.tool, "ok" if ok else "failed").inc()
        finished = core.clock().isoformat()

        async def record(t: TaskOps) -> None:
            await t.update_step(step.id, state="succeeded" if ok else "failed", result=result, error=error,
                                rollback=rollback if ok else None, finished_at=finished)
            for r in records:
                t.audit(AuditEntry("system", "tool.call", task.id, r))
            name = ev.EXECUTED if ok else ev.FAILED
            t.event(Event(name, task.id, {"step": step.name, "tool": step.tool, "ok": ok, "error": error}))
            if not ok:
                await t.set_state(task.id, TaskState.executing, TaskState.failed_terminal, actor="system",
                                  reason=f"{step.name} failed", outcome=f"step {step.name} failed: {error}")

        await core.store.transact(record)
        log.info("step.done", task_id=task.id, step=step.name, tool=step.tool, ok=ok)
        return ok

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
                outcome = await self.core.gateway.call(
                    StepCall(tool=verify.tool, params=params),
                    decision=Decision(verdict="allow", rule="verify", reason="verification reads only"),
                    reason_code=None, approval_id=None, dry_run=False,
                    idempotency_key=step_key(task.id, "verify", attempt, verify.tool), timeout_s=10, retries=0,
                    audit=_ignore,
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
        """Run the recorded rollbacks of executed reversible steps, newest first."""
        async with self._locks[task.id]:
            steps = [s for s in await self.core.store.steps_of_task(task.id, "step")
                     if s.state == "succeeded" and s.rollback]
            done = {s.name for s in await self.core.store.steps_of_task(task.id, "rollback") if s.state == "succeeded"}
            steps = [s for s in steps if s.name not in done]
            if not steps:
                raise Conflict(f"task {task.id} has no executed reversible step left to undo")
            await self.core.store.transact(
                lambda t: t.set_state(task.id, UNDO_FROM, TaskState.executing, actor=actor.id, reason="undo")
            )
            undone: list[str] = []
            for step in sorted(steps, key=lambda s: s.idx, reverse=True):
                with self.core.tracing.phase(f"undo {step.name}", task, actor=actor.id):
                    error = await self._rollback(task, step, actor)
                if error is not None:
                    outcome = (f"undo failed at {step.name}: {error}; rolled back so far: "
                               f"{', '.join(undone) or 'nothing'}")
                    return await self._finish(task.id, TaskState.failed_terminal, outcome)
                rollback = StepCall.model_validate(step.rollback)
                undone.append(undo_action(rollback.tool, rollback.params))  # "flag x back to off"
            result = await self._finish(task.id, TaskState.completed, f"Undone by {actor.display}: {'; '.join(undone)}")
            self.core.bus.publish(Event(ev.UNDONE, task.id, {"actor": actor.id, "display": actor.display,
                                                             "steps": undone}))
            return result

    async def _rollback(self, task: Task, step: StepRecord, actor: Actor) -> str | None:
        assert step.rollback is not None
        call = StepCall.model_validate(step.rollback)
        records: list[dict[str, Any]] = []

        async def sink(record: dict[str, Any]) -> None:
            records.append(record)

        key = step_key(task.id, "rollback", step.idx, step.name)

        async def claim(t: TaskOps) -> int:
            existing = [s for s in await t.steps(task.id, "rollback") if s.idempotency_key == key]
            if existing:
                await t.update_step(existing[0].id, state="running", started_at=self.core.clock().isoformat())
                return existing[0].id
            step_id = await t.insert_step(task_id=task.id, kind="rollback", idx=step.idx, name=step.name,
                                          tool=call.tool, category=step.category, params=call.params, rollback=None,
                                          decision=None, state="running", idempotency_key=key)
            await t.update_step(step_id, started_at=self.core.clock().isoformat(), attempts=1)
            return step_id

        rollback_id = await self.core.store.transact(claim)
        try:
            outcome = await self.core.gateway.call(
                call, decision=Decision(verdict="allow", rule="undo", reason=f"undo requested by {actor.display}"),
                reason_code=f"undo:{task.playbook_id}:{step.name}", approval_id=f"undo-by:{actor.id}",
                dry_run=False, idempotency_key=key, timeout_s=self.core.settings.engine.step_timeout_s, retries=2,
                audit=sink,
            )
            ok, result, error = outcome.ok, outcome.result, outcome.error
        except ToolError as exc:
            ok, result, error = False, None, str(exc)

        async def record(t: TaskOps) -> None:
            await t.update_step(rollback_id, state="succeeded" if ok else "failed", result=result, error=error,
                                finished_at=self.core.clock().isoformat())
            for r in records:
                t.audit(AuditEntry(actor.id, "tool.rollback", task.id, r))

        await self.core.store.transact(record)
        return None if ok else (error or "failed")

    # -- recovery --------------------------------------------------------------------------------

    async def recover(self, *, interrupted_only: bool = False) -> list[Task]:
        """Resolve steps that were running when the process died; returns tasks to resume.

        ``interrupted_only``: resume only the tasks that had such steps (the leader's periodic look
        for steps a dead replica left, while live replicas drive the other executing tasks).
        """
        resume = []
        for task in await self.core.store.tasks_in_states([TaskState.executing.value]):
            interrupted = [s for s in await self.core.store.steps_of_task(task.id) if s.state == "running"]
            if interrupted and await self.core.store.steps_held_by_live_processes([s.id for s in interrupted]):
                log.info("recovery.left_to_live_replica", task_id=task.id)  # it is running them right now
                continue
            if interrupted_only and not interrupted:
                continue
            unsafe = [s for s in interrupted if not self._idempotent(s.tool)]
            if unsafe:
                names = ", ".join(f"{s.name} ({s.tool})" for s in unsafe)
                reason = (f"interrupted while running {names}; the tool is not idempotent, so Ooda will not run it "
                          "again: check its effect by hand, then undo or close the task")

                async def escalate(t: TaskOps, task: Task = task, unsafe: list[StepRecord] = unsafe,
                                   reason: str = reason) -> None:
                    for s in unsafe:
                        await t.update_step(s.id, state="unknown", error="interrupted by a restart")
                    await t.set_state(task.id, TaskState.executing, TaskState.escalated_to_human, actor="system",
                                      reason=reason, outcome=reason)

                await self.core.store.transact(escalate)
                log.warning("recovery.escalated", task_id=task.id, steps=names)
                continue

            async def requeue(t: TaskOps, task: Task = task, steps: list[StepRecord] = interrupted) -> None:
                for s in steps:
                    await t.update_step(s.id, state="pending")
                    t.audit(AuditEntry("system", "step.rerun_after_restart", task.id,
                                       {"step": s.name, "tool": s.tool, "idempotency_key": s.idempotency_key}))

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


async def _ignore(record: dict[str, Any]) -> None:
    """Verification only reads; its calls are summarized in the task outcome instead."""
