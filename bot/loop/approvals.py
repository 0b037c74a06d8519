"""Approve, reject and edit a proposal: who may, how many, and what happens when quorum is reached.

Everything is decided inside one store transaction, and the single writer serializes those, so
two people clicking Approve at the same moment cannot both start the execution: the transaction
that reaches quorum moves the task to ``executing`` and only its caller queues the work. The same
person approving twice counts once (a unique row per person and verdict). The same transaction
refuses an approval of a task that ended meanwhile (every alert resolved: ``ClosedAsResolved``)
or whose plan was decided again after the approver looked at it.
"""

from __future__ import annotations

import math
import re
from typing import Any, NamedTuple

from bot.audit.chain import AuditEntry
from bot.errors import ConfirmationRequired, Conflict, Forbidden, UserError
from bot.loop.core import Core
from bot.loop.gateway import parse_params
from bot.loop.planner import dry_run_preview
from bot.model import events as ev
from bot.model.events import Event
from bot.model.proposals import Category, Decision, ParamBound, Proposal, RiskBand
from bot.model.steps import RUNNABLE, UNSTARTED, StepKind, StepRecord, undo_phase
from bot.model.tasks import Task, TaskState, clock_text
from bot.playbooks.param_paths import param_at, with_param
from bot.policy.identity import Actor
from bot.policy.rules import check_approver, counted_approvers, quorum_reached, tier_of
from bot.store.protocol import TaskOps

APPROVABLE = {TaskState.needs_approval, TaskState.escalated_to_human}


class ClosedAsResolved(Conflict):
    """The task ended because every alert of it resolved before anyone acted; nothing ran."""


def decided_refusal(task: Task, *, just_now: bool = False) -> Conflict:
    """Why ``task`` can no longer be approved, rejected or edited, worded for the person who tried."""
    if task.closed_by_resolution:
        at = f" (resolved at {clock_text(task.resolved_at)})" if task.resolved_at else ""
        return ClosedAsResolved(f"task #{task.id} was closed: every alert resolved before anyone acted{at}; "
                                "nothing ran")
    if just_now:
        return Conflict(f"task {task.id} was decided a moment ago: it is {task.state.value}")
    return Conflict(f"task {task.id} is already decided: it is {task.state.value}"
                    + (f" ({task.outcome})" if task.outcome else ""))


def confirmation_phrase(task_id: int) -> str:
    return f"approve {task_id}"


def confirmation_required(task_id: int, score: int) -> ConfirmationRequired:
    """What a critical-risk approval lacks, said without saying where to type the phrase: that
    differs per surface (a chat command, a form, the CLI's ``--confirm``) and each adds its own."""
    phrase = confirmation_phrase(task_id)
    return ConfirmationRequired(
        f"task {task_id} is critical risk ({score}/100): approving it needs the confirmation phrase `{phrase}`",
        phrase)


_WHOLE_NUMBER = re.compile(r"[+-]?[0-9]{1,18}")
_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}


def _bound_text(bound: ParamBound) -> str:
    if bound.min is not None and bound.max is not None:
        return f" from {bound.min:g} to {bound.max:g}"
    if bound.min is not None:
        return f" of at least {bound.min:g}"
    if bound.max is not None:
        return f" of at most {bound.max:g}"
    return ""


def _coerce(value: Any, bound: ParamBound) -> Any:
    """``value`` as the bound's type; raises ValueError for anything that is not exactly that.

    Nothing is rounded or guessed: ``10.5`` for an int would otherwise run as 10, and "banana"
    for a bool as false (values come from chat forms and API bodies, so text is normal).
    """
    if isinstance(value, dict | list):
        raise ValueError("a single value, not a list or mapping")
    if bound.type == "int":
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ValueError("a whole number")
        if isinstance(value, str):
            if not _WHOLE_NUMBER.fullmatch(value.strip()):
                raise ValueError("a whole number")
            return int(value.strip())
        return value
    if bound.type == "float":
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError("a number")
        try:
            number = float(value) if not isinstance(value, str) or len(value) <= 40 else math.nan
        except (ValueError, OverflowError):
            number = math.nan
        if not math.isfinite(number):
            raise ValueError("a finite number")
        return number
    if bound.type == "bool":
        if isinstance(value, bool):
            return value
        word = str(value).strip().lower() if isinstance(value, str) else None
        if word in _TRUE | _FALSE:
            return word in _TRUE
        raise ValueError("true or false")
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise ValueError("text")
    return str(value)


def check_edit(name: str, value: Any, bound: ParamBound) -> tuple[Any, str | None]:
    """An edited value as its bound's type, checked against the bound; returns (value, problem).

    The one place an edit is judged (API, chat buttons and forms all call it), so the problem is
    worded to be shown as is: it names the param and the bound.
    """
    try:
        value = _coerce(value, bound)
    except ValueError as exc:
        kind = "a whole number" if bound.type == "int" else str(exc)
        shown = repr(value)[:60]
        if bound.type in {"int", "float"}:
            return value, f"{name} must be {kind}{_bound_text(bound)}, got {shown}"
        return value, f"{name} must be {kind}, got {shown}"
    if bound.min is not None and isinstance(value, int | float) and value < bound.min:
        return value, f"{name} must be at least {bound.min:g}, got {value}"
    if bound.max is not None and isinstance(value, int | float) and value > bound.max:
        return value, f"{name} must be at most {bound.max:g}, got {value}"
    if bound.choices is not None and str(value) not in bound.choices:
        return value, f"{name} must be one of {', '.join(bound.choices)}, got {value!r}"
    if bound.max_length is not None and isinstance(value, str) and len(value) > bound.max_length:
        return value, f"{name} must be at most {bound.max_length} characters"
    return value, None


class Approved(NamedTuple):
    """What one approval did: the task after it, whether it started execution, and whether it was
    this person's approval already (a second click, on any replica, that counted nothing new)."""

    task: Task
    started: bool
    repeated: bool = False


class Approvals:
    def __init__(self, core: Core) -> None:
        self.core = core

    async def _pending_decisions(self, task: Task) -> list[tuple[StepRecord, Decision, int]]:
        """Steps not yet run, each decided again now, with its permission tier."""
        out = []
        for step in await self.core.store.steps_of_task(task.id, StepKind.action):
            if step.state not in RUNNABLE:
                continue
            risk, decision = await self.core.assess_step(task, step)
            out.append((step, decision, tier_of(self.core.policy, Category(step.category), risk.band)))
        return out

    async def check_may_approve(self, task: Task, actor: Actor) -> tuple[
            list[tuple[StepRecord, Decision, int]], list[tuple[StepRecord, Decision, int]]]:
        """Raise the refusal ``actor`` would get approving ``task`` now; else (pending, needing) steps.

        Chat surfaces call it before they open a form (edit, critical-risk confirmation), so a
        person who would be refused is told at once instead of after filling it in.
        """
        if task.state not in APPROVABLE:
            raise decided_refusal(task)
        if (await self.core.kill_switch()).on:
            raise Forbidden("the kill switch is on: nothing runs until someone with the operator role resumes "
                            "(`ooda resume` or /ops resume)")
        if undo_phase(await self.core.store.steps_of_task(task.id, StepKind.rollback)) is not None:
            raise Conflict(f"task {task.id} was undone (or an undo of it was tried), so the rest of its plan no "
                           "longer applies; run the playbook again instead")
        pending = await self._pending_decisions(task)
        denied = [(s, d) for s, d, _ in pending if d.verdict == "deny"]
        if denied:
            step, decision = denied[0]
            raise Forbidden(f"policy denies step {step.name} right now ({decision.rule}): {decision.reason}")
        needing = [(s, d, tier) for s, d, tier in pending if d.verdict == "needs_approval"]
        if not needing:
            raise Conflict(f"task {task.id} has no step waiting for approval")
        # Quorum per step: an approval counts for the steps its approver may approve (a tier-3 step
        # needs what tier 3 needs even beside a tier-4 step); refused only if it counts for none.
        refusals = [check_approver(self.core.policy, d, actor, task.requester, tier) for _, d, tier in needing]
        if all(refusals):
            raise Forbidden(next(r for r in refusals if r))
        return pending, needing

    async def approve(self, task: Task, proposal: Proposal, actor: Actor, edits: dict[str, dict[str, Any]] | None,
                      confirmation: str | None, override_dry_run: str | None = None) -> Approved:
        """Record an approval; returns the task and whether this approval started execution.

        A step whose dry run failed is not approved as if it had passed: its dry run runs again
        first, and the approval goes on when it passes now or when ``override_dry_run`` says why
        it may run anyway (audited with the failure)."""
        pending, needing = await self.check_may_approve(task, actor)
        if proposal.risk.band is RiskBand.critical and (confirmation or "").strip().lower() != confirmation_phrase(
                task.id):
            raise confirmation_required(task.id, proposal.risk.score)
        changes = self._validate_edits(task, {s.name: s for s, _, _ in pending}, edits or {})
        previews = await self._dry_runs_again(task, proposal, [s for s, _, _ in needing], changes, override_dry_run)

        async def unit(t: TaskOps) -> Approved:
            current = await t.get_task(task.id)
            if current.state not in APPROVABLE:
                raise decided_refusal(current, just_now=True)
            waiting = {s.id for s in await t.steps(task.id, StepKind.action) if s.state in UNSTARTED}
            if not {s.id for s, _, _ in pending} <= waiting:
                # The plan was decided again (more alerts joined) after this person looked at it.
                raise Conflict(f"the plan of task {task.id} changed a moment ago "
                               f"({current.signal_count} signal(s) now); look at it again before approving")
            if changes:
                # Approvals count towards one quorum: an edit now would count theirs for values
                # they never saw, and a two-person rule would need only one person for the new ones.
                others = sorted({a.display for a in await t.approvals(task.id)
                                 if a.verdict == "approve" and a.actor != actor.id})
                if others:
                    raise Conflict(
                        f"task {task.id} is already approved by {', '.join(others)} as proposed; an edit now would "
                        "count that approval for values they did not see. Approve without edits, or reject the "
                        "task and run the playbook again with the new values.")
            inserted = await t.add_approval(task.id, actor.id, actor.display, "approve", None, edits or None,
                                            roles=sorted(actor.roles))
            for step, params, diff in changes:
                await t.update_step(step.id, params=params)
                t.audit(AuditEntry(actor.id, "step.edited", task.id, {"step": step.name, "diff": diff}))
            if previews:
                await self._record_dry_runs(t, current, previews, actor, override_dry_run)
            if inserted:
                t.audit(AuditEntry(actor.id, "task.approval", task.id, {"via": actor.via, "edits": edits or {}}))
                edited = {f"{step.name}.{name}": [change["from"], change["to"]]
                          for step, _, diff in changes for name, change in diff.items()}
                t.event(Event(ev.APPROVED, task.id, {"actor": actor.id, "display": actor.display, "via": actor.via,
                                                     "edits": edited}))
            approvals = [(a.actor, a.roles) for a in await t.approvals(task.id) if a.verdict == "approve"]
            # Steps run in order: the task runs once the first step waiting for people has its
            # quorum; the executor stops again at a later step that has not (bot/loop/executor.py).
            first = needing[0][1]
            counted = counted_approvers(first, approvals, task.requester)
            if quorum_reached(first, counted):
                moved = await t.set_state(task.id, APPROVABLE, TaskState.executing, actor=actor.id,
                                          reason=f"approved by {', '.join(sorted(counted))}")
                return Approved(moved, True)
            return Approved(current, False, repeated=not inserted)

        return await self.core.store.transact(unit)

    async def _dry_runs_again(self, task: Task, proposal: Proposal, needing: list[StepRecord],
                              changes: list[tuple[StepRecord, dict[str, Any], dict[str, Any]]],
                              override: str | None) -> list[tuple[str, str, bool]]:
        """Run again the failed dry runs of the steps this approval is for: (step, preview, failed)."""
        failed_views = {v.name: v for v in proposal.steps if v.dry_run_failed}
        edited = {step.name: params for step, params, _ in changes}
        previews = []
        for step in needing:
            view = failed_views.get(step.name)
            if view is None:
                continue
            spec = self.core.playbooks.get(task.playbook_id).step(step.name)
            text, failed = await dry_run_preview(self.core, task, step.tool, step.name, step.idx,
                                                 edited.get(step.name, step.params), spec.timeout_s, attempt=1)
            if failed and not (override or "").strip():
                raise Conflict(
                    f"the dry run of {step.name} failed again ({text}); approving it would run a change that "
                    "cannot be previewed. Fix the cause and approve again, or approve with an override and the "
                    "reason it is safe (`--override-dry-run 'why'`)")
            previews.append((step.name, text, failed))
        return previews

    @staticmethod
    async def _record_dry_runs(t: TaskOps, task: Task, previews: list[tuple[str, str, bool]], actor: Actor,
                               override: str | None) -> None:
        saved = dict(task.proposal or {})
        views = {v["name"]: v for v in saved.get("steps", [])}
        for name, text, failed in previews:
            t.audit(AuditEntry(actor.id, "step.dry_run_rerun", task.id, {"step": name, "dry_run": text,
                                                                         "failed": failed}))
            if failed:
                t.audit(AuditEntry(actor.id, "step.dry_run_overridden", task.id,
                                   {"step": name, "reason": (override or "").strip(), "dry_run": text}))
            if name in views:
                views[name].update(dry_run=text, dry_run_failed=failed)
        await t.save_proposal(task.id, saved)

    def _validate_edits(self, task: Task, steps: dict[str, StepRecord],
                        edits: dict[str, dict[str, Any]]) -> list[tuple[StepRecord, dict[str, Any], dict[str, Any]]]:
        playbook = self.core.playbooks.get(task.playbook_id)
        problems, changes = [], []
        for step_name, params in edits.items():
            if step_name not in steps:
                problems.append(f"step {step_name!r} is not waiting to run, so it cannot be edited")
                continue
            spec = playbook.step(step_name)
            record = steps[step_name]
            new_params = dict(record.params)
            diff = {}
            for name, value in params.items():  # name: a param's dotted path (bot/playbooks/param_paths.py)
                bound = spec.editable.get(name)
                if bound is None:
                    allowed = ", ".join(spec.editable) or "none"
                    problems.append(f"{step_name}.{name} is not editable (editable: {allowed})")
                    continue
                coerced, problem = check_edit(f"{step_name}.{name}", value, bound)
                if problem:
                    problems.append(problem)
                    continue
                if (before := param_at(new_params, name)) != coerced:
                    diff[name] = {"from": before, "to": coerced}
                    new_params = with_param(new_params, name, coerced)
            if diff:
                try:
                    parse_params(self.core.gateway.registry.get(record.tool), new_params)
                except UserError as exc:
                    problems.append(str(exc))
                    continue
                except Exception as exc:
                    problems.append(f"{step_name}: {exc}")
                    continue
                changes.append((record, new_params, diff))
        if problems:
            raise UserError("edits refused: " + "; ".join(problems))
        return changes

    async def check_may_reject(self, task: Task, actor: Actor) -> None:
        """Raise the refusal ``actor`` would get rejecting ``task`` now (before the reason form opens)."""
        if task.state not in APPROVABLE | {TaskState.queued}:
            raise decided_refusal(task)
        pending = await self._pending_decisions(task)
        roles = {r for _, d, _ in pending for r in d.roles}
        if roles and not actor.has_any(roles) and actor.id != task.requester:
            raise Forbidden(f"rejecting needs one of the roles {' or '.join(sorted(roles))}; "
                            f"{actor.display} has {', '.join(sorted(actor.roles)) or 'none'}")

    async def reject(self, task: Task, actor: Actor, reason: str) -> Task:
        if task.state not in APPROVABLE | {TaskState.queued}:
            raise decided_refusal(task)
        if not reason.strip():
            raise UserError("say why you reject it: the reason feeds the playbook's review")
        await self.check_may_reject(task, actor)

        async def unit(t: TaskOps) -> Task:
            current = await t.get_task(task.id)
            if current.state not in APPROVABLE | {TaskState.queued}:
                raise decided_refusal(current, just_now=True)
            await t.add_approval(task.id, actor.id, actor.display, "reject", reason, None)
            return await t.set_state(task.id, APPROVABLE | {TaskState.queued}, TaskState.rejected, actor=actor.id,
                                     reason=reason, outcome=f"rejected by {actor.display}: {reason}")

        return await self.core.store.transact(unit)
