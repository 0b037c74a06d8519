"""The gateway's authority: whether a stored step may run now, judged from the store, not the caller.

The gateway asks it for every write (bot/loop/gateway.py). It reads the task, the step and the
approvals from the store, asks the policy now (kill switch, freeze, change window, rate limits,
autonomy), counts the approvals that still hold for the decision made now (a person once, never
Ooda itself, never the requester where the tier needs separation of duties), and then claims
the step (pending -> running) in a transaction that reads the kill switch again, so a switch
pulled after the policy was asked still stops the call.

A rollback runs on a recorded undo request (stored with the approvals, verdict ``undo``) by someone
who may undo: the kill switch stops it like any write.

An approver's roles are checked when the approval is recorded (bot/loop/approvals.py), not again
here: chat platforms grant roles per click (Slack user groups, Discord roles), so the directory
alone cannot tell them later.
"""

from __future__ import annotations

from bot.audit.chain import AuditEntry
from bot.loop.core import Core
from bot.loop.gateway import Authorization
from bot.loop.step_claim import claim_step
from bot.model.proposals import Category, Decision
from bot.model.steps import StepKind, StepRecord, StepState
from bot.model.tasks import ApprovalRecord, Task, TaskState
from bot.policy.identity import SYSTEM
from bot.policy.rules import needs_separation_of_duties, quorum_reached, tier_of
from bot.ports import StepCall
from bot.store.protocol import TaskOps

UNDO_VERDICT = "undo"  # an undo request is recorded with the approvals: who asked, when


class PolicyAuthority:
    def __init__(self, core: Core) -> None:
        self.core = core

    async def record(self, entry: AuditEntry) -> None:
        async def write(t: TaskOps) -> None:
            t.audit(entry)

        await self.core.store.transact(write)

    async def authorize(self, task: Task, step: StepRecord) -> Authorization:
        store = self.core.store
        current = await store.get_task(task.id)
        stored = next((s for s in await store.steps_of_task(task.id, step.kind) if s.id == step.id), None)
        call = StepCall(tool=(stored or step).tool, params=(stored or step).params)
        refused = Decision(verdict="deny", rule="gateway", reason="refused by the gateway")
        if current is None or stored is None:
            return Authorization(call=call, decision=refused, reason_code="",
                                 refusal=f"task {task.id} has no stored step {step.name}; only stored steps run")
        if current.state is not TaskState.executing:
            return Authorization(call=call, decision=refused, reason_code="",
                                 refusal=f"task {task.id} is {current.state.value}, not executing; nothing of it runs")
        approvals = await store.approvals_of_task(task.id)
        if stored.kind is StepKind.rollback:
            answer = self._undo(current, stored, call, approvals)
        else:
            answer = await self._action(current, stored, call, approvals)
        if answer.refusal is not None or answer.decision.verdict == "deny":
            return answer
        return await self._claim(task, stored, answer)

    def _undo(self, task: Task, step: StepRecord, call: StepCall, approvals: list[ApprovalRecord]) -> Authorization:
        asked = [a for a in approvals if a.verdict == UNDO_VERDICT]
        reason_code = f"undo:{task.playbook_id}:{step.name}"
        if not asked:
            return Authorization(call=call, reason_code=reason_code, refusal="no undo of this task is recorded",
                                 decision=Decision(verdict="deny", rule="undo", reason="nobody asked for an undo"))
        requester = asked[-1]
        if requester.actor == SYSTEM.id:
            return Authorization(call=call, reason_code=reason_code, actor=requester.actor,
                                 refusal="Ooda cannot ask for an undo itself; a person has to",
                                 decision=Decision(verdict="deny", rule="undo", reason="no person asked"))
        return Authorization(call=call, reason_code=reason_code, approval_ids=[requester.id], actor=requester.actor,
                             decision=Decision(verdict="allow", rule="undo",
                                               reason=f"undo requested by {requester.display}"))

    async def _action(self, task: Task, step: StepRecord, call: StepCall,
                      approvals: list[ApprovalRecord]) -> Authorization:
        core = self.core
        await core.load_kill_switch()  # the store's switch, not this process's memory of it
        risk, decision = await core.assess_step(task, step)
        reason_code = f"playbook:{task.playbook_id}:{step.name}"
        if decision.verdict == "allow":
            return Authorization(call=call, decision=decision, reason_code=reason_code)
        if decision.verdict == "deny":
            return Authorization(call=call, decision=decision, reason_code=reason_code,
                                 refusal=f"{step.tool} is denied by policy rule {decision.rule!r}: {decision.reason}")
        tier = tier_of(core.policy, Category(step.category), risk.band)
        counted = [a for a in approvals if a.verdict == "approve" and self._counts(a, decision, task, tier)]
        if not quorum_reached(decision, {a.actor for a in counted}):
            return Authorization(
                call=call, decision=decision, reason_code=reason_code,
                refusal=(f"{step.tool} needs approval under policy rule {decision.rule!r}: "
                         f"{len({a.actor for a in counted})} of {decision.approvals_required} valid approvals "
                         "are recorded"))
        return Authorization(call=call, decision=decision, reason_code=reason_code,
                             approval_ids=[a.id for a in counted])

    def _counts(self, approval: ApprovalRecord, decision: Decision, task: Task, tier: int) -> bool:
        if approval.actor == SYSTEM.id:
            return False
        return not (approval.actor == task.requester and needs_separation_of_duties(self.core.policy, tier))

    async def _claim(self, task: Task, step: StepRecord, answer: Authorization) -> Authorization:
        now = self.core.clock()

        async def take(t: TaskOps) -> str | None:
            if step.state is not StepState.pending:
                return "" if step.state is StepState.running else f"step {step.name} is {step.state}, not pending"
            # The kill switch and the rate limits are read again inside the claim's transaction:
            # another process may have paused or run the same tool since the decision.
            claim = await claim_step(t, self.core.policy, task, step, now)
            if claim.refusal is not None:
                return f"{claim.refusal.reason} ({claim.refusal.rule})"
            return None if claim.claimed else ""

        problem = await self.core.store.transact(take)
        if problem == "":
            return answer.model_copy(update={"elsewhere": True})
        if problem is not None:
            return answer.model_copy(update={"refusal": problem})
        return answer
