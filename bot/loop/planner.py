"""Orient and decide: evidence, condition, rendered steps, risk, policy, the proposal.

Planning only reads (evidence tools and dry runs change nothing), and its result is saved in one
transaction at the end, so a crash in the middle leaves the task ``running`` with nothing half
written and recovery simply plans it again. That transaction checks the task first: a task
decided meanwhile (rejected, or cancelled because every alert resolved) keeps no plan.

A task still waiting for its first approval is decided again when signals join it (``redecide``):
the new plan replaces the pending steps, so the proposal, its risk and its count follow the signals.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from pydantic import BaseModel

from bot.audit.chain import AuditEntry
from bot.audit.redaction import redact_text
from bot.errors import BotError, ToolError
from bot.loop.alert_links import links_of, silence_link
from bot.loop.core import Core
from bot.loop.gateway import ToolCallRefused, parse_params
from bot.loop.readable import result_text, step_action
from bot.loop.shadow import is_shadow, shadow_outcome
from bot.model import events as ev
from bot.model.events import Event
from bot.model.proposals import Category, Decision, Evidence, Proposal, RiskScore, StepView
from bot.model.signals import Signal
from bot.model.steps import StepKind, StepState
from bot.model.tasks import Task, TaskState, redecidable
from bot.playbooks.param_checks import ParamRules, param_rules
from bot.playbooks.schema import Playbook, ReadStep, Step
from bot.playbooks.templates import build_context, evaluate, render_params
from bot.policy.risk import BlastRadius, band_for
from bot.ports import StepCall
from bot.store.ports import ApprovalReads, StepReads, TaskReads, UnitOfWork
from bot.store.protocol import TaskOps

log = structlog.get_logger(__name__)

READ_DECISION = Decision(verdict="allow", rule="read", reason="Reading evidence changes nothing.")
SNIPPET_CHARS = 600
# A log cut to its tail starts with this, so chat evidence fitting knows to keep its last lines.
EARLIER_LINES_CUT = "(earlier lines cut; see `ooda show`) … "
EVIDENCE_LIMIT = 20
BLAST_ORDER = [b.value for b in BlastRadius]
# Where a task may be when its first plan is saved; anything else was decided meanwhile.
PLANNABLE = frozenset({TaskState.queued, TaskState.running, TaskState.failed_retryable})


def step_key(task_id: int, kind: str, index: int, name: str) -> str:
    """The idempotency key of a step: stable across restarts, unique per task."""
    return f"task-{task_id}:{kind}:{index}:{name}"


async def load_signals(core: Core, task_id: int) -> list[Signal]:
    rows = await core.store.signals_of_task(task_id, limit=20)
    return [row.signal for row in rows]


def template_context(core: Core, task: Task, signals: list[Signal], evidence: dict[str, Any]) -> dict[str, Any]:
    return build_context(signals, evidence, task.args, core.settings.vars,
                         {"id": task.id, "environment": task.environment, "playbook_id": task.playbook_id})


def step_param_rules(core: Core, playbook: Playbook, tool_name: str) -> ParamRules:
    """What a value filling this tool's params must satisfy: the playbook's arg patterns (an
    alert's labels are held to what a manual run's args are) and the tool's URL params."""
    try:
        model: type[BaseModel] | None = core.gateway.registry.get(tool_name).params_model
    except ToolCallRefused:
        model = None  # an unknown tool is reported where the step is decided
    return param_rules({name: arg.pattern for name, arg in playbook.args.items()}, model)


def effective_category(core: Core, tool_name: str, params: dict[str, Any], declared: Category | None) -> Category:
    """The tool's own classification of this call, raised (never lowered) by the playbook's."""
    tool = core.gateway.registry.get(tool_name)
    own = tool.category_of(parse_params(tool, params))
    order = list(Category)
    return max(own, declared or own, key=order.index)


async def _read(core: Core, task: Task, playbook: Playbook, step: ReadStep,
                context: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    try:
        # A value refused here fails this evidence only (recorded on it), never the planning.
        params = render_params(step.params, context, where=f"evidence.{step.name}.params",
                               rules=step_param_rules(core, playbook, step.tool))
        if effective_category(core, step.tool, params, None).writes:
            raise ToolCallRefused(f"evidence step {step.name!r} calls {step.tool} as a write; evidence must only read")
        outcome = await core.gateway.read(
            StepCall(tool=step.tool, params=params), task_id=task.id, reason_code=f"evidence:{playbook.id}",
            idempotency_key=step_key(task.id, StepKind.evidence, 0, step.name),
            timeout_s=min(step.timeout_s, core.settings.engine.evidence_timeout_s), retries=step.retries,
        )
        result = {"ok": outcome.ok, "result": outcome.result, "error": outcome.error, "params": params,
                  "tool": step.tool}
    except (BotError, ToolError) as exc:
        result = {"ok": False, "result": None, "error": str(exc), "params": {}, "tool": step.tool}
    core.metrics.tool_calls.labels(step.tool, "ok" if result["ok"] else "failed").inc()
    return step.name, result


async def dry_run_preview(core: Core, task: Task, tool: str, name: str, index: int, params: dict[str, Any],
                          timeout_s: float, attempt: int = 0) -> tuple[str, bool]:
    """Preview one write through the gateway: (what it would do, or why the preview failed; failed?)."""
    key = step_key(task.id, "dry-run", index, name) + (f"#{attempt}" if attempt else "")
    try:
        outcome = await core.gateway.dry_run(StepCall(tool=tool, params=params), task_id=task.id,
                                             reason_code=f"dry-run:{task.playbook_id}", idempotency_key=key,
                                             timeout_s=timeout_s)
    except ToolError as exc:
        return f"dry run refused: {exc}", True
    if not outcome.ok:
        return f"dry run failed: {outcome.error}", True
    preview = outcome.result or {}
    if preview.get("preview"):  # the tool's own words (k8s: what the API server accepted)
        return str(preview["preview"]), False
    if preview.get("command"):  # ssh.run: the exact remote command line
        return f"would run on {preview.get('host', 'the host')}: {preview['command']}", False
    if "previous_enabled" in preview:  # flags.set: the flag's value now and after
        return "would change " + result_text(preview), False
    if tool == "http.request" and isinstance(preview.get("request"), dict):
        request = preview["request"]  # what would be sent, credentials masked
        return "would send " + step_action("http.request", {"method": request.get("method"), "url": request.get("url"),
                                                            "json": request.get("json")}), False
    return result_text(preview), False


def evidence_value(result: dict[str, Any]) -> Any:
    """What templates see as ``evidence.<name>``: the tool's result, plus ok/error."""
    value = dict(result["result"] or {})
    value.setdefault("ok", result["ok"])
    if result["error"]:
        value["error"] = result["error"]
    return value


# The field of a tool's result a person reads first, by what tools return: a summary sentence
# (prometheus.query, k8s.*), a log's text, a command's output, an HTTP body.
_READABLE_FIELDS = ("summary", "text", "stdout", "body")
# Of these, the end is what matters: the last lines a crashed container or a command wrote.
_TAIL_FIELDS = frozenset({"text", "stdout"})


def _snippet(result: dict[str, Any]) -> str:
    if not result["ok"]:
        text = f"failed: {result['error']}"
        return text if len(text) <= SNIPPET_CHARS else text[:SNIPPET_CHARS] + " … (truncated; see `ooda show`)"
    body = result["result"]
    field = next((f for f in _READABLE_FIELDS if isinstance(body, dict) and body.get(f)), None)
    text = result_text(body)
    if len(text) <= SNIPPET_CHARS:
        return text
    if field in _TAIL_FIELDS:
        return EARLIER_LINES_CUT + text[-SNIPPET_CHARS:]
    return text[:SNIPPET_CHARS] + " … (truncated; see `ooda show`)"


def _evidence_url(result: dict[str, Any]) -> str | None:
    """A link to see the evidence where it came from (Prometheus's graph of the query)."""
    body = result["result"] if result["ok"] else None
    url = body.get("graph_url") if isinstance(body, dict) else None
    return url if isinstance(url, str) and url.startswith(("http://", "https://")) else None


_SHOWN_ANNOTATIONS = frozenset({"summary", "description", "message", "runbook_url", "dashboard_url"})


def _signal_evidence(signal: Signal) -> list[Evidence]:
    """The alert itself: what its rule says (description), its labels, its source and runbook links."""
    notes = signal.annotations
    said = notes.get("description") or notes.get("message") or ""
    labels = ", ".join(f"{k}={v}" for k, v in list(signal.labels.items())[:12])
    snippet = f"{said.strip()} ({labels})" if said.strip() else labels
    # Other annotations teams add (deploy version, commit, owner) are part of what the alert says.
    extra = [f"{k}={v}" for k, v in notes.items() if k not in _SHOWN_ANNOTATIONS and not k.startswith("__")]
    if extra:
        snippet += "; " + ", ".join(extra[:8])
    if len(snippet) > SNIPPET_CHARS:
        snippet = snippet[:SNIPPET_CHARS] + " …"
    # The alert's links (runbook, dashboard, source, silence) are the proposal's ``links``.
    return [Evidence(kind="signal", title=signal.title or signal.labels.get("alertname", signal.fingerprint),
                     snippet=snippet)]


def _rollback_text(step: Step, category: Category, rollback: dict[str, Any] | None) -> str | None:
    """How a step would be undone, for the proposal; None when nothing can undo it."""
    if rollback:
        return step_action(rollback["tool"], rollback["params"])
    if category is Category.write_reversible:
        return f"{step.tool} puts back the value it replaced (recorded when it runs)"
    return None


def planned_state(steps: list[tuple[str, Category, Decision]]) -> tuple[TaskState, str | None]:
    """Where a plan of (name, category, decision) steps sends its task, and the outcome to record."""
    writes = [(name, decision) for name, category, decision in steps if category.writes]
    denied = [(name, decision) for name, decision in writes if decision.verdict == "deny"]
    if not writes:
        return TaskState.completed, "observed only: the playbook has no write steps"
    if denied and all(is_shadow(decision) for _, decision in denied):
        return TaskState.completed, shadow_outcome(denied)
    if denied:
        return TaskState.escalated_to_human, "policy denied " + "; ".join(
            f"{name} ({decision.rule}: {decision.reason})" for name, decision in denied)
    if steps[0][2].verdict == "needs_approval":
        # Steps run in order: the executor runs allowed ones until one needs a human.
        return TaskState.needs_approval, None
    return TaskState.executing, None


def overall_risk(scores: list[RiskScore]) -> RiskScore:
    if not scores:
        return RiskScore(score=0, band=band_for(0), factors=[])
    return max(scores, key=lambda r: r.score)


@dataclass(frozen=True)
class _Decided:
    """What orient and decide produced for a task, before it is saved."""

    signals: list[Signal]
    results: dict[str, dict[str, Any]]  # evidence step name -> its read
    steps: list[dict[str, Any]]  # decide_step's answers
    condition_met: bool = True
    error: str | None = None


def more_alerts(count: int) -> str:
    return f"{count} more alert" + ("" if count == 1 else "s")


class PlannerStore(TaskReads, StepReads, ApprovalReads, UnitOfWork, Protocol):
    """The store ports the planner uses: the task, its steps and approvals, and units of work."""


class Planner:
    def __init__(self, core: Core) -> None:
        self.core = core
        self.store: PlannerStore = core.store

    async def plan(self, task: Task) -> Task:
        """Run orient and decide for a queued (or interrupted) task; returns it in its next state."""
        playbook = self.core.playbooks.get(task.playbook_id)
        # Planning only reads, so a task enters ``running`` in the same transaction that saves its
        # plan (one commit per task instead of two); a crash before that leaves it queued, and
        # recovery plans queued and running tasks alike.
        return await self._save(task, playbook, await self._decide(task, playbook))

    async def redecide(self, task: Task) -> Task:
        """Decide the plan of a waiting task again because signals joined it; returns the task now.

        Only while nobody has approved it and none of its steps ran (``bot.model.tasks.redecidable``):
        the summary, the risk (its ``targets`` factor) and the blast radius then follow the
        signals, and the new steps replace the pending ones in one transaction. Once someone
        approved, the plan they saw stands.
        """
        store = self.store
        steps = await store.steps_of_task(task.id, StepKind.action)
        if not redecidable(task, await store.approvals_of_task(task.id), steps):
            return task
        playbook = self.core.playbooks.get(task.playbook_id)
        return await self._save(task, playbook, await self._decide(task, playbook), replacing=True)

    async def _decide(self, task: Task, playbook: Playbook) -> _Decided:
        core = self.core
        signals = await load_signals(core, task.id)
        context = template_context(core, task, signals, {})
        with core.tracing.phase("evidence", task, reads=len(playbook.evidence)):
            results = dict(await asyncio.gather(*(_read(core, task, playbook, s, context) for s in playbook.evidence)))
        evidence_values = {name: evidence_value(r) for name, r in results.items()}
        context = template_context(core, task, signals, evidence_values)

        try:
            with core.tracing.phase("decide", task, steps=len(playbook.steps)):
                condition_met = evaluate(playbook.condition, context, where="condition") if playbook.condition else True
                steps = [] if not condition_met else [await self.decide_step(playbook, task, s, i, context)
                                                       for i, s in enumerate(playbook.steps)]
        except BotError as exc:
            log.warning("task.planning_failed", task_id=task.id, playbook=playbook.id, error=redact_text(str(exc)))
            return _Decided(signals, results, [], error=str(exc))
        return _Decided(signals, results, steps, condition_met=condition_met)

    async def decide_step(self, playbook: Playbook, task: Task, step: Step, index: int,
                          context: dict[str, Any], *, what_if: bool = False) -> dict[str, Any]:
        """Render one step, score its risk and ask the policy. ``what_if`` (a replay): no dry run,
        and the decision is kept out of the metrics.

        Raises:
            BotError: a template that cannot be rendered, a tool that does not exist.
        """
        core = self.core
        where = f"steps.{step.name}.params"
        params = render_params(step.params, context, where=where, rules=step_param_rules(core, playbook, step.tool))
        category = effective_category(core, step.tool, params, step.category)
        rollback = None
        if step.rollback:
            rollback = {"tool": step.rollback.tool,
                        "params": render_params(step.rollback.params, context, where=f"steps.{step.name}.rollback",
                                                rules=step_param_rules(core, playbook, step.rollback.tool))}
        risk, decision = await core.assess(
            playbook, tool=step.tool, category=category, blast_radius=step.blast_radius,
            environment=task.environment, severity=task.severity, targets=task.signal_count, counted=not what_if,
        )
        dry_run, dry_run_failed = None, False
        if (not what_if and category.writes and decision.verdict != "deny"
                and core.gateway.registry.get(step.tool).supports_dry_run):
            dry_run, dry_run_failed = await dry_run_preview(core, task, step.tool, step.name, index, params,
                                                            step.timeout_s)
        return {"index": index, "step": step, "params": params, "category": category, "rollback": rollback,
                "risk": risk, "decision": decision, "dry_run": dry_run, "dry_run_failed": dry_run_failed}

    async def refresh_dry_runs(self, task_id: int, names: set[str]) -> None:
        """Dry-run edited steps again, so the dry run people read is of the params that will run."""
        task = await self.core.store.get_task(task_id)
        if task is None or task.proposal is None:
            return
        playbook = self.core.playbooks.get(task.playbook_id)
        fresh: dict[str, tuple[str, bool]] = {}
        attempt = int(self.core.clock().timestamp())  # a new idempotency key: these are new params
        for record in await self.core.store.steps_of_task(task_id, StepKind.action):
            if (record.name not in names or record.state is not StepState.pending
                    or not self.core.gateway.registry.get(record.tool).supports_dry_run):
                continue
            fresh[record.name] = await dry_run_preview(self.core, task, record.tool, record.name, record.idx,
                                                       record.params, playbook.step(record.name).timeout_s, attempt)
        if not fresh:
            return

        async def unit(t: TaskOps) -> None:
            proposal = dict((await t.get_task(task_id)).proposal or {})
            proposal["steps"] = [
                {**step, "dry_run": fresh[step["name"]][0], "dry_run_failed": fresh[step["name"]][1]}
                if step["name"] in fresh else step for step in proposal.get("steps", [])]
            await t.save_proposal(task_id, proposal)

        await self.core.store.transact(unit)

    async def _save(self, task: Task, playbook: Playbook, decided: _Decided, *, replacing: bool = False) -> Task:
        """Save the plan and move the task on, in one transaction; ``replacing``: a plan decided again."""
        core = self.core
        signals, results, steps = decided.signals, decided.results, decided.steps
        risk = overall_risk([s["risk"] for s in steps])
        evidence = [item for s in signals[:5] for item in _signal_evidence(s)]
        meanings = {step.name: step.description.strip() for step in playbook.evidence}
        evidence += [Evidence(kind=f"tool:{r['tool']}", title=name, url=_evidence_url(r), snippet=_snippet(r),
                              meaning=meanings.get(name, "")) for name, r in results.items()]
        views = [StepView(
            index=s["index"], name=s["step"].name, tool=s["step"].tool, category=s["category"], params=s["params"],
            decision=s["decision"], blast_radius=s["step"].blast_radius.value,
            rollback=_rollback_text(s["step"], s["category"], s["rollback"]), dry_run=s["dry_run"],
            dry_run_failed=s["dry_run_failed"],
            editable=s["step"].editable,
        ) for s in steps]
        writes = [v for v in views if v.category.writes]
        needing = [v.decision for v in writes if v.decision.verdict == "needs_approval"]
        summary = playbook.description.strip().splitlines()[0] if playbook.description.strip() else playbook.id
        if signals:
            summary = f"{summary} — {task.signal_count} signal(s), first: {signals[0].title or signals[0].fingerprint}"
        now = core.clock()
        silence = None
        if signals:
            sent = await core.store.raw_signals_of_task(task.id, limit=1)
            silence = silence_link(signals[0], sent[0].raw if sent else None, core.settings.intake.max_value_bytes)
        proposal = Proposal(
            task_id=task.id, playbook_id=playbook.id, playbook_version=playbook.version, title=task.title,
            summary=summary, state=task.state.value, environment=task.environment, severity=task.severity,
            team=(signals[0].labels.get("team") if signals else task.args.get("team")), requester=task.requester,
            signal_count=task.signal_count, risk=risk,
            blast_radius=max((v.blast_radius for v in writes), key=BLAST_ORDER.index, default="none"),
            evidence=evidence[:EVIDENCE_LIMIT], steps=views,
            rollback_plan=[f"{v.name}: {v.rollback or 'no rollback: irreversible'}" for v in reversed(writes)],
            approvals_required=max((d.approvals_required for d in needing), default=0),
            approver_roles=sorted({r for d in needing for r in d.roles}), created_at=task.created_at, updated_at=now,
            links=links_of(signals, silence), expiry_s=core.settings.engine.approval_expiry_s,
            shadow=any(is_shadow(v.decision) for v in writes),
        )
        outcome: str | None
        if decided.error:
            target, outcome = TaskState.escalated_to_human, f"planning failed: playbook {playbook.id}, {decided.error}"
        elif not decided.condition_met:
            target, outcome = TaskState.completed, "condition not met; nothing to do"
        else:
            target, outcome = planned_state([(v.name, v.category, v.decision) for v in views])

        async def unit(t: TaskOps) -> tuple[Task, bool]:
            current = await t.get_task(task.id)
            if replacing:
                if await _keep_current_plan(t, current, task.signal_count):
                    return current, False
                await t.remove_unstarted_steps(task.id)  # the plan being replaced; none of it ran
            elif current.state not in PLANNABLE:
                # Decided while this plan was being made: rejected, or cancelled because every
                # alert resolved. Nothing of the plan is kept, so nothing of it can run.
                return current, False
            for name, r in results.items():
                step_id = await t.insert_step(
                    task_id=task.id, kind=StepKind.evidence, idx=0, name=name, tool=r["tool"], category="read",
                    params=r["params"], rollback=None, decision=READ_DECISION.model_dump(),
                    state=StepState.succeeded if r["ok"] else StepState.failed,
                    # Evidence may be collected again (a re-plan), so its key carries the time.
                    idempotency_key=f"{step_key(task.id, 'evidence', 0, name)}@{now.isoformat()}",
                )
                await t.update_step(step_id, result=r["result"], error=r["error"], attempts=1,
                                    started_at=now.isoformat(), finished_at=now.isoformat())
            if results:
                t.event(Event(ev.EVIDENCE_ATTACHED, task.id, {"evidence": sorted(results)}))
            for s, view in zip(steps, views, strict=True):
                await t.insert_step(
                    task_id=task.id, kind=StepKind.action, idx=view.index, name=view.name, tool=view.tool,
                    category=view.category.value, params=view.params, rollback=s["rollback"],
                    decision=view.decision.model_dump(),
                    state=StepState.denied if view.decision.verdict == "deny" else StepState.pending,
                    idempotency_key=step_key(task.id, "step", view.index, view.name),
                )
            await t.save_proposal(task.id, proposal.model_dump(mode="json"))
            summary_record: dict[str, Any] = {
                "risk": risk.model_dump(), "steps": [{"name": v.name, "tool": v.tool, "verdict": v.decision.verdict,
                                                      "rule": v.decision.rule} for v in views]}
            if replacing:
                before = current.proposal or {}
                summary_record["replaces"] = {"signal_count": before.get("signal_count"),
                                      "risk": (before.get("risk") or {}).get("score")}
            t.audit(AuditEntry("system", "task.proposal", task.id, summary_record))
            if replacing:
                return await _moved_on_after_redecide(t, current, task.signal_count, risk.score, target, outcome), True
            if task.state is not TaskState.running:
                await t.set_state(task.id, {TaskState.queued, TaskState.failed_retryable}, TaskState.running,
                                  actor="system", reason="planning")
            return await t.set_state(task.id, TaskState.running, target, actor="system",
                                     reason=outcome or "proposal ready", outcome=outcome), True

        saved, kept = await core.store.transact(unit)
        if not kept:
            log.info("task.plan_discarded", task_id=task.id, playbook=playbook.id, state=saved.state.value,
                     reason="the task moved on while its plan was being decided")
            return saved
        log.info("task.redecided" if replacing else "task.planned", task_id=task.id, playbook=playbook.id,
                 state=saved.state.value, risk=risk.score, band=risk.band.value, steps=len(views),
                 signals=task.signal_count)
        return saved


async def _keep_current_plan(t: TaskOps, current: Task, signal_count: int) -> bool:
    """Whether a plan decided again must be dropped, checked inside the transaction that would save it."""
    if current.state is not TaskState.needs_approval:
        return True  # approved, rejected or cancelled meanwhile
    if (current.proposal or {}).get("signal_count", 0) >= signal_count:
        return True  # a plan counting as many signals was saved meanwhile
    approvals = await t.approvals(current.id)
    if redecidable(current, approvals, await t.steps(current.id, StepKind.action)):
        return False
    if any(a.verdict == "approve" for a in approvals):
        added = signal_count - (current.proposal or {}).get("signal_count", 0)
        t.event(Event(ev.PLAN_STANDS, current.id, {
            "added": added, "note": f"{more_alerts(added)} joined after the first approval; the approved plan stands"}))
    return True


async def _moved_on_after_redecide(t: TaskOps, current: Task, signal_count: int, risk: int, target: TaskState,
                                   outcome: str | None) -> Task:
    """Announce a plan decided again and move the task where the new plan sends it."""
    before = current.proposal or {}
    added = signal_count - before.get("signal_count", 0)
    old_risk = (before.get("risk") or {}).get("score")
    note = f"{more_alerts(added)} joined; risk {old_risk} → {risk}"
    if target is not TaskState.needs_approval:
        note += f"; the new plan moves the task to {target.value.replace('_', ' ')}"
    t.event(Event(ev.REDECIDED, current.id, {"added": added, "signal_count": signal_count, "risk_from": old_risk,
                                             "risk_to": risk, "note": note}))
    if target is TaskState.needs_approval:
        return await t.get_task(current.id)
    return await t.set_state(current.id, TaskState.needs_approval, target, actor="system",
                             reason=outcome or "decided again after signals joined", outcome=outcome)

