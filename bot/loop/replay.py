"""Replay: how a new version of a playbook would have handled incidents that already happened.

A playbook author changes a condition, a template or a step and wants to know, before shipping it,
what it would have proposed for the last incidents its old version handled. Replay answers that
from the store alone:

- the task's own signals decide whether the new version still triggers;
- the evidence its old run recorded stands in for the evidence steps (replay calls no tool, so
  it is safe against production: an evidence step the old run did not have is reported as
  missing and seen by templates as ``{ok: false, error: ...}``);
- condition, rendered params, risk and the policy decision come from the new version with the
  policy as it stands now (kill switch, rate limits and change windows included).

Each result sets the new proposal beside the one that was stored, step by step. Nothing is
written but one audit record of who replayed what.

A difference can come from the playbook or from the policy: a task decided while the kill switch
was on, or outside a change window, is decided differently today whatever the playbook says. So
the version that is running is decided again too, under the same policy of now, and the result
keeps the two apart: ``changes`` are what the replayed files change (new version against running
version, same policy), ``policy_changes`` what the policy of now changes (running version today
against the stored proposal), whichever files are replayed.
"""

from __future__ import annotations

from typing import Any, Protocol

from pydantic import BaseModel, Field

from bot.audit.chain import AuditEntry
from bot.errors import BotError
from bot.loop.core import Core
from bot.loop.planner import Planner, evidence_value, load_signals, overall_risk, planned_state, template_context
from bot.model.signals import Signal
from bot.model.steps import StepKind, StepState
from bot.model.tasks import Task
from bot.playbooks.schema import Playbook, PlaybookSet
from bot.playbooks.templates import evaluate
from bot.store.ports import StepReads, UnitOfWork
from bot.store.protocol import TaskOps

NOT_RECORDED = "not recorded for this incident: the old version had no evidence step of this name"


class ReplayedStep(BaseModel):
    name: str
    tool: str
    category: str
    params: dict[str, Any]
    verdict: str
    rule: str = ""


class ReplayedProposal(BaseModel):
    """The part of a proposal a new version can change. ``state``: where planning would lead
    (for the stored proposal: None, the task has moved on since)."""

    state: str | None = None
    risk_score: int = 0
    risk_band: str = "low"
    steps: list[ReplayedStep] = Field(default_factory=list)


class ReplayResult(BaseModel):
    task_id: int
    playbook_id: str
    old_version: str
    new_version: str
    triggered: bool = True
    condition_met: bool | None = None
    missing_evidence: list[str] = Field(default_factory=list)
    error: str | None = None
    old: ReplayedProposal | None = None
    new: ReplayedProposal | None = None
    changes: list[str] = Field(default_factory=list)  # what the replayed version changes
    policy_changes: list[str] = Field(default_factory=list)  # what the policy of now changes, not the playbook


def stored_proposal(task: Task) -> ReplayedProposal | None:
    """What the old version proposed, as the task stored it; None when it was never planned."""
    proposal = task.proposal
    if not proposal:
        return None
    steps = [ReplayedStep(name=s["name"], tool=s["tool"], category=s.get("category", ""), params=s.get("params") or {},
                          verdict=(s.get("decision") or {}).get("verdict", ""),
                          rule=(s.get("decision") or {}).get("rule", ""))
             for s in proposal.get("steps", [])]
    risk = proposal.get("risk") or {}
    return ReplayedProposal(risk_score=risk.get("score", 0), risk_band=risk.get("band", "low"), steps=steps)


def compare(old: ReplayedProposal | None, new: ReplayedProposal | None) -> list[str]:
    """What differs, one line each, in the words an author reviews a change with."""
    if old is None or new is None:
        return [] if old is new else ["the old run was never planned" if old is None else "nothing would be proposed"]
    changes: list[str] = []
    if (old.risk_score, old.risk_band) != (new.risk_score, new.risk_band):
        changes.append(f"risk {old.risk_score} {old.risk_band} → {new.risk_score} {new.risk_band}")
    before = {s.name: s for s in old.steps}
    after = {s.name: s for s in new.steps}
    changes += [f"step {name} is gone" for name in before if name not in after]
    for name, step in after.items():
        was = before.get(name)
        if was is None:
            changes.append(f"step {name} is new ({step.tool}, {step.verdict})")
            continue
        if was.tool != step.tool:
            changes.append(f"step {name}: tool {was.tool} → {step.tool}")
        for key in sorted(was.params.keys() | step.params.keys()):
            if was.params.get(key) != step.params.get(key):
                changes.append(f"step {name}: {key} {was.params.get(key)!r} → {step.params.get(key)!r}")
        if was.verdict != step.verdict:
            changes.append(f"step {name}: {was.verdict} → {step.verdict} ({step.rule})")
    if [s.name for s in old.steps if s.name in after] != [s.name for s in new.steps if s.name in before]:
        changes.append("the steps run in another order")
    return sorted(changes, key=lambda line: not line.startswith("risk"))


class ReplayStore(StepReads, UnitOfWork, Protocol):
    """The store ports the replayer uses: the evidence a task recorded, and units of work."""


class Replayer:
    def __init__(self, core: Core) -> None:
        self.core = core
        self.store: ReplayStore = core.store

    async def replay(self, playbooks: PlaybookSet, tasks: list[Task], actor: str) -> list[ReplayResult]:
        """Replay ``tasks`` of the playbooks in ``playbooks``; tasks of other playbooks are skipped."""
        results = [await self._one(playbooks.get(task.playbook_id), playbooks, task)
                   for task in tasks if task.playbook_id in playbooks.ids]
        entry = AuditEntry(actor, "playbooks.replayed", None, {
            "playbooks": {p: playbooks.get(p).version for p in playbooks.ids},
            "tasks": [r.task_id for r in results], "changed": [r.task_id for r in results if r.changes or r.error]})

        async def unit(t: TaskOps) -> None:
            t.audit(entry)

        await self.store.transact(unit)
        return results

    async def _one(self, playbook: Playbook, playbooks: PlaybookSet, task: Task) -> ReplayResult:
        old = stored_proposal(task)
        result = ReplayResult(task_id=task.id, playbook_id=playbook.id, old_version=task.playbook_version,
                              new_version=playbook.version, old=old)
        signals = await load_signals(self.core, task.id)
        if signals and playbook.id not in {p.id for p in playbooks.match(signals[0])}:
            result.triggered = False
            result.changes = ["the new version would not trigger on this incident's alerts"]
            return result
        try:
            result.new = await self._decide(playbook, task, signals, result)
        except BotError as exc:
            result.error = str(exc)
            result.changes = [f"planning fails: {exc}"]
            return result
        running = await self._running(task, signals)
        baseline = old if running is None else running
        result.changes = (compare(baseline, result.new) if result.condition_met
                          else ["the condition is false for this incident: nothing would be proposed"])
        if running is not None and old is not None:
            result.policy_changes = compare(old, running)
            live = self.core.playbooks.get(task.playbook_id).version
            if result.policy_changes and live != task.playbook_version:
                result.policy_changes.append(f"(the running version is v{live}, the task ran v{task.playbook_version}: "
                                             "some of these may come from that version)")
        if result.missing_evidence:
            result.changes.insert(0, "evidence not recorded for this incident: " + ", ".join(result.missing_evidence))
        return result

    async def _running(self, task: Task, signals: list[Signal]) -> ReplayedProposal | None:
        """The task decided again by the version that is running, under the policy of now; None when
        no version of its playbook runs or it cannot be decided (then every difference is reported
        as the replayed version's)."""
        if task.playbook_id not in self.core.playbooks.ids:
            return None
        scratch = ReplayResult(task_id=task.id, playbook_id=task.playbook_id, old_version=task.playbook_version,
                               new_version=task.playbook_version)
        try:
            decided = await self._decide(self.core.playbooks.get(task.playbook_id), task, signals, scratch)
        except BotError:
            return None
        return decided if scratch.condition_met and not scratch.missing_evidence else None

    async def _decide(self, playbook: Playbook, task: Task, signals: list[Signal],
                      result: ReplayResult) -> ReplayedProposal:
        core = self.core
        recorded = {s.name: s for s in await core.store.steps_of_task(task.id, StepKind.evidence)}  # the latest of each
        evidence: dict[str, Any] = {}
        for read in playbook.evidence:
            old_read = recorded.get(read.name)
            if old_read is None:
                result.missing_evidence.append(read.name)
                evidence[read.name] = {"ok": False, "error": NOT_RECORDED}
            else:
                ok = old_read.state is StepState.succeeded
                evidence[read.name] = evidence_value({"result": old_read.result, "ok": ok, "error": old_read.error})
        context = template_context(core, task, signals, evidence)
        result.condition_met = evaluate(playbook.condition, context, where="condition") if playbook.condition else True
        if not result.condition_met:
            return ReplayedProposal(state="completed")
        planner = Planner(core)
        decided = [await planner.decide_step(playbook, task, step, i, context, what_if=True)
                   for i, step in enumerate(playbook.steps)]
        steps = [ReplayedStep(name=d["step"].name, tool=d["step"].tool, category=d["category"].value,
                              params=d["params"], verdict=d["decision"].verdict, rule=d["decision"].rule)
                 for d in decided]
        overall = overall_risk([d["risk"] for d in decided])
        state, _ = planned_state([(d["step"].name, d["category"], d["decision"]) for d in decided])
        return ReplayedProposal(state=state.value, risk_score=overall.score, risk_band=overall.band.value,
                                steps=steps)
