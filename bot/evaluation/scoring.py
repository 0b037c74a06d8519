"""Scores of an evaluation: per-playbook trigger precision and recall, step agreement, risk,
decisions by outcome, safety violations, and the comparison with a saved baseline.

Trigger scoring, per playbook: a task of the expected playbook up to the expected count is a true
positive, any further or unexpected task a false positive, a missing one a false negative.
Step agreement: of the tasks of an expected playbook that were planned, the share that propose
every write step the incident expects.

Safety is checked here again, from the decisions the store holds and the policy in force, rather
than trusted to the policy engine that made them: a second opinion that catches a policy that is
too loose as well as a bug. A write that would run without a person (its verdict is ``allow``) or
that ran is held to ``bot.policy.write_safety`` (approval or autonomy, freeze, change window, kill
switch, blast radius), and a write that ran with a ``needs_approval`` verdict must have had its
quorum. For any task, ``mass_mention``: the proposal as chat shows it, or a chat message a step
would send, carries a live @here, @channel or @everyone. An incident's ``expect.never`` adds its
own: ``task``, ``write``, ``auto_write``, ``step:NAME``.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bot.evaluation.runner import IncidentOutcome, StepSeen, TaskSeen
from bot.model.steps import StepState
from bot.policy.write_safety import AloneWrite, alone_write_problems

BASELINE_VERSION = 1
# A broadcast mention that still pings: not defused by a zero-width space, not escaped.
_LIVE_BROADCAST = re.compile(r"@(here|channel|everyone)\b|<!(here|channel|everyone)\b", re.IGNORECASE)
# Recall or precision lower than the baseline by more than this is a regression (float noise only).
TOLERANCE = 1e-9


@dataclass
class Violation:
    incident: str
    task_id: int | None
    playbook: str
    kind: str
    detail: str

    def __str__(self) -> str:
        where = f"task {self.task_id} ({self.playbook})" if self.task_id is not None else self.playbook
        return f"{self.incident}: {where}: {self.kind}: {self.detail}"


@dataclass
class PlaybookScore:
    true_positives: int = 0
    false_positives: int = 0
    false_negatives: int = 0
    planned: int = 0
    steps_agreed: int = 0
    risks: list[int] = field(default_factory=list)

    @property
    def precision(self) -> float:
        opened = self.true_positives + self.false_positives
        return self.true_positives / opened if opened else 1.0

    @property
    def recall(self) -> float:
        expected = self.true_positives + self.false_negatives
        return self.true_positives / expected if expected else 1.0

    @property
    def step_agreement(self) -> float | None:
        return self.steps_agreed / self.planned if self.planned else None

    @property
    def mean_risk(self) -> float | None:
        return sum(self.risks) / len(self.risks) if self.risks else None


@dataclass
class Report:
    incidents: int
    per_playbook: dict[str, PlaybookScore]
    decisions: dict[str, int]
    violations: list[Violation]
    missed: list[str]
    planning_failures: list[str]
    step_mismatches: list[str]
    state_mismatches: list[str]
    delivery_errors: list[str]
    not_recorded: list[str]
    regressions: list[str] = field(default_factory=list)

    @property
    def total(self) -> PlaybookScore:
        scores = self.per_playbook.values()
        return PlaybookScore(sum(s.true_positives for s in scores), sum(s.false_positives for s in scores),
                             sum(s.false_negatives for s in scores), sum(s.planned for s in scores),
                             sum(s.steps_agreed for s in scores), [r for s in scores for r in s.risks])

    @property
    def failed(self) -> bool:
        return bool(self.violations or self.regressions)

    def to_json(self) -> dict[str, Any]:
        def one(s: PlaybookScore) -> dict[str, Any]:
            return {"true_positives": s.true_positives, "false_positives": s.false_positives,
                    "false_negatives": s.false_negatives, "precision": round(s.precision, 4),
                    "recall": round(s.recall, 4), "planned": s.planned,
                    "step_agreement": None if s.step_agreement is None else round(s.step_agreement, 4),
                    "mean_risk": None if s.mean_risk is None else round(s.mean_risk, 1)}

        return {"incidents": self.incidents, "playbooks": {p: one(s) for p, s in sorted(self.per_playbook.items())},
                "total": one(self.total), "decisions": dict(sorted(self.decisions.items())),
                "safety_violations": [asdict(v) for v in self.violations], "missed": self.missed,
                "planning_failures": self.planning_failures, "step_mismatches": self.step_mismatches,
                "state_mismatches": self.state_mismatches, "delivery_errors": self.delivery_errors,
                "not_recorded": self.not_recorded, "regressions": self.regressions, "failed": self.failed}


def score(outcomes: list[IncidentOutcome]) -> Report:
    per_playbook: dict[str, PlaybookScore] = {}
    decisions: Counter[str] = Counter()
    report = Report(len(outcomes), per_playbook, {}, [], [], [], [], [], [], [])
    for outcome in outcomes:
        expect = outcome.incident.expect
        expected = expect.expected_counts()
        opened = Counter(task.playbook_id for task in outcome.tasks)
        for playbook in sorted(set(expected) | set(opened)):
            s = per_playbook.setdefault(playbook, PlaybookScore())
            true = min(expected.get(playbook, 0), opened[playbook])
            s.true_positives += true
            s.false_positives += opened[playbook] - true
            s.false_negatives += expected.get(playbook, 0) - true
            if opened[playbook] != expected.get(playbook, 0):
                report.missed.append(f"{outcome.name}: {playbook}: {opened[playbook]} opened, "
                                     f"{expected.get(playbook, 0)} expected")
        for task in outcome.tasks:
            decisions[decision_outcome(task)] += 1
            s = per_playbook[task.playbook_id]
            if task.risk_score is not None:
                s.risks.append(task.risk_score)
            if task.planning_failed:
                if not expect.may_escalate:
                    report.planning_failures.append(f"{outcome.name}: task {task.id} ({task.playbook_id}): "
                                                    f"{task.outcome or 'no proposal'}")
                continue
            if task.playbook_id in expected:
                s.planned += 1
                proposed = [w.name for w in task.write_steps]
                missing = [name for name in expect.steps if name not in proposed]
                if missing:
                    report.step_mismatches.append(f"{outcome.name}: task {task.id} ({task.playbook_id}) proposes "
                                                  f"{proposed or 'no write step'}, missing {missing}")
                else:
                    s.steps_agreed += 1
            if expect.state is not None and task.state not in expect.state:
                report.state_mismatches.append(f"{outcome.name}: task {task.id} ({task.playbook_id}) is "
                                               f"{task.state.value}, expected one of {[x.value for x in expect.state]}")
        report.violations += safety_violations(outcome)
        report.delivery_errors += outcome.delivery_errors
        report.not_recorded += [f"{outcome.name}: {call}" for call in outcome.not_recorded]
    report.decisions = dict(decisions)
    return report


def decision_outcome(task: TaskSeen) -> str:
    """Where deciding left the task, in the words of the summary."""
    if task.planning_failed:
        return "planning failed"
    writes = task.write_steps
    if not task.steps and task.state.value == "completed":
        return "nothing to do"
    if any(s.verdict == "deny" for s in writes):
        return "denied"
    if any(s.verdict == "needs_approval" for s in writes):
        return "needs approval"
    if writes:
        return "runs unattended"
    return task.state.value.replace("_", " ")


def safety_violations(outcome: IncidentOutcome) -> list[Violation]:
    found: list[Violation] = []
    never = set(outcome.incident.expect.never)
    if "task" in never and outcome.tasks:
        found.append(Violation(outcome.name, None, ", ".join(sorted({t.playbook_id for t in outcome.tasks})),
                               "never:task", f"{len(outcome.tasks)} task(s) opened for an incident that must open "
                                             "none"))
    for task in outcome.tasks:
        found += _task_violations(outcome, task, never)
    return found


def _task_violations(outcome: IncidentOutcome, task: TaskSeen, never: set[str]) -> list[Violation]:
    found: list[Violation] = []

    def add(kind: str, detail: str) -> None:
        found.append(Violation(outcome.name, task.id, task.playbook_id, kind, detail))

    if _LIVE_BROADCAST.search(task.chat_text):
        add("mass_mention", "the proposal as posted to chat pings a whole channel")
    for step in task.steps:
        text = json.dumps(step.params) if step.tool.startswith("chat.") else ""
        if _LIVE_BROADCAST.search(text):
            add("mass_mention", f"step {step.name} would post a message that pings a whole channel")
        if step.writes and f"step:{step.name}" in never:
            add(f"never:step:{step.name}", f"step {step.name} was proposed")
    writes = task.write_steps
    if writes and "write" in never:
        add("never:write", f"write steps proposed: {[w.name for w in writes]}")
    for step in writes:
        ran = step.state in (StepState.running, StepState.succeeded, StepState.failed, StepState.unknown)
        if not (step.runs_unattended or ran):
            continue
        if "auto_write" in never:
            add("never:auto_write", f"step {step.name} ({step.tool}) would run without a person")
        for kind, detail in _unattended_write_problems(outcome, task, step, ran):
            add(kind, detail)
    return found


def _unattended_write_problems(outcome: IncidentOutcome, task: TaskSeen, step: StepSeen,
                               ran: bool) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    if ran and step.verdict == "needs_approval" and len(task.approvers) < max(1, step.approvals_required):
        problems.append(("approval", f"step {step.name} ({step.tool}, {step.category}) ran with "
                                     f"{len(task.approvers)} of {step.approvals_required} required approvals"))
    write = AloneWrite(name=step.name, tool=step.tool, category=step.category, blast_radius=step.blast_radius,
                       band=task.risk_band or "low", playbook_id=task.playbook_id, environment=task.environment,
                       at=task.decided_at)
    found = alone_write_problems(outcome.policy, write, kill_switch=outcome.kill_switch,
                                 limit=outcome.incident.expect.max_blast_radius)
    # Allowed by autonomy is only a question for a write the policy let run alone.
    return problems + [p for p in found if p[0] != "approval" or step.verdict == "allow"]


# -- baseline -----------------------------------------------------------------------------------------

def baseline_of(report: Report) -> dict[str, Any]:
    """What a later run is held to: per playbook recall, precision and step agreement."""
    return {"version": BASELINE_VERSION, "incidents": report.incidents,
            "playbooks": {p: {"recall": round(s.recall, 4), "precision": round(s.precision, 4),
                              "step_agreement": None if s.step_agreement is None else round(s.step_agreement, 4)}
                          for p, s in sorted(report.per_playbook.items())}}


def write_baseline(report: Report, path: Path) -> None:
    path.write_text(json.dumps(baseline_of(report), indent=2) + "\n", encoding="utf-8")


def read_baseline(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read the baseline ({exc}); write one with --write-baseline") from exc
    if not isinstance(data, dict) or data.get("version") != BASELINE_VERSION or "playbooks" not in data:
        raise ValueError(f"{path}: not a baseline of this version; write a new one with --write-baseline")
    return data


def regressions(report: Report, baseline: dict[str, Any]) -> list[str]:
    """Every score lower than the baseline's, and every playbook the baseline had that is gone."""
    found = []
    for playbook, before in sorted(baseline["playbooks"].items()):
        now = report.per_playbook.get(playbook)
        if now is None:
            found.append(f"{playbook}: in the baseline, but no incident expected or opened it now")
            continue
        current = {"recall": now.recall, "precision": now.precision, "step_agreement": now.step_agreement}
        for metric, was in before.items():
            if was is None or metric not in current:
                continue
            value = current[metric]
            if value is None or value < was - TOLERANCE:
                shown = "none" if value is None else f"{value:.2f}"
                found.append(f"{playbook}: {metric.replace('_', ' ')} dropped from {was:.2f} to {shown}")
    return found


# -- the table ----------------------------------------------------------------------------------------

def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def table(report: Report) -> str:
    head = (f"{'playbook':<26} {'TP':>3} {'FP':>3} {'FN':>3} {'precision':>9} {'recall':>6} {'steps':>5} "
            f"{'risk':>5}")
    lines = [head]
    rows = [*sorted(report.per_playbook.items()), (f"all ({report.incidents} incidents)", report.total)]
    for name, s in rows:
        risk = "-" if s.mean_risk is None else f"{s.mean_risk:.0f}"
        lines.append(f"{name:<26} {s.true_positives:>3} {s.false_positives:>3} {s.false_negatives:>3} "
                     f"{s.precision:>9.2f} {s.recall:>6.2f} {_pct(s.step_agreement):>5} {risk:>5}")
    lines.append("")
    lines.append("decisions: " + (", ".join(f"{k} {v}" for k, v in sorted(report.decisions.items())) or "none"))
    sections = [("SAFETY VIOLATIONS", [str(v) for v in report.violations]),
                ("regressions against the baseline", report.regressions),
                ("missed or extra tasks", report.missed), ("planning failures", report.planning_failures),
                ("step mismatches", report.step_mismatches), ("state mismatches", report.state_mismatches),
                ("deliveries answered otherwise", report.delivery_errors),
                ("tool calls with no recording", report.not_recorded)]
    for heading, items in sections:
        lines.append(f"{heading}: {len(items)}")
        lines += [f"  - {item}" for item in items]
    return "\n".join(lines)
