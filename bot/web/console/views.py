"""What the console's pages show, read from the store and shaped for the templates.

Nothing here renders HTML or decides anything: the inbox rows, a task's trace timeline, a
playbook's recent runs. The templates escape every value (labels, outputs, reasons are whatever
an alert sender or a tool wrote).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from bot.audit.chain import AUDIT_COLUMNS
from bot.jsoncodec import loads
from bot.loop.core import Core
from bot.model.proposals import Proposal
from bot.model.signals import Signal
from bot.model.steps import StepRecord
from bot.model.tasks import Task, TaskState
from bot.store.protocol import Store

WAITING = (TaskState.needs_approval, TaskState.escalated_to_human)
IN_PROGRESS = (TaskState.queued, TaskState.running, TaskState.executing, TaskState.failed_retryable)
SIGNALS_SHOWN = 50
AUDIT_FIELDS = AUDIT_COLUMNS.split(", ")


INBOX_LIMIT = 500


@dataclass(frozen=True)
class InboxRow:
    """A task in a list, without its plan."""

    id: int
    playbook_id: str
    state: TaskState
    title: str
    environment: str
    severity: str
    signal_count: int
    created_at: datetime
    updated_at: datetime
    outcome: str | None
    risk_score: int
    risk_band: str
    approvals_required: int
    age: timedelta
    expires_at: datetime | None  # when the scheduler cancels it undecided; None: it does not expire


def inbox_row(row: dict[str, Any], now: datetime, expiry: timedelta) -> InboxRow:
    state = TaskState(row["state"])
    created, updated = datetime.fromisoformat(row["created_at"]), datetime.fromisoformat(row["updated_at"])
    return InboxRow(
        id=row["id"], playbook_id=row["playbook_id"], state=state, title=row["title"],
        environment=row["environment"], severity=row["severity"], signal_count=row["signal_count"],
        created_at=created, updated_at=updated, outcome=row["outcome"], risk_score=int(row["risk_score"]),
        risk_band=str(row["risk_band"]), approvals_required=int(row["approvals_required"]), age=now - created,
        # Expiry counts from the task's last change, as bot/scheduler.py's expire_approvals does.
        expires_at=updated + expiry if state is TaskState.needs_approval else None,
    )


async def inbox(core: Core, shown: int) -> tuple[list[InboxRow], int, list[InboxRow]]:
    """(the first ``shown`` tasks waiting for a decision, riskiest and oldest first; how many wait
    in all, up to ``INBOX_LIMIT``; the tasks under way, newest first)."""
    now = core.clock()
    expiry = timedelta(seconds=core.settings.engine.approval_expiry_s)
    summaries = await core.store.task_summaries([s.value for s in (*WAITING, *IN_PROGRESS)], INBOX_LIMIT)
    waiting = [r for r in summaries if r["state"] in WAITING]
    busy = sorted((inbox_row(r, now, expiry) for r in summaries if r["state"] in IN_PROGRESS),
                  key=lambda r: r.id, reverse=True)
    return [inbox_row(r, now, expiry) for r in waiting[:shown]], len(waiting), busy


@dataclass
class TimedStep:
    step: StepRecord

    @property
    def duration_s(self) -> float | None:
        if self.step.started_at and self.step.finished_at:
            return (self.step.finished_at - self.step.started_at).total_seconds()
        return None


@dataclass
class Timeline:
    """One task's trace, in the order the loop went: signals, evidence, proposal, decisions, steps,
    verify, undo. Each part keeps the times it happened at."""

    task: Task
    proposal: Proposal
    signals: list[Signal]
    evidence: list[TimedStep]
    decisions: list[dict[str, Any]]  # approvals, rejections, refusals and every state change, in time order
    steps: list[TimedStep]
    verify: dict[str, Any] | None
    rollbacks: list[TimedStep]
    audit: list[dict[str, Any]] = field(default_factory=list)

    @property
    def more_signals(self) -> int:
        return max(0, self.task.signal_count - len(self.signals))


def audit_record(row: tuple[Any, ...]) -> dict[str, Any]:
    record = dict(zip(AUDIT_FIELDS, row, strict=True))
    record["data"] = loads(record["data"]) if record["data"] else {}
    return record


async def timeline(store: Store, core: Core, task: Task, proposal: Proposal) -> Timeline:
    signals = [s.signal for s in await store.signals_of_task(task.id, SIGNALS_SHOWN)]
    steps = await store.steps_of_task(task.id)
    decisions: list[dict[str, Any]] = []
    for approval in await store.approvals_of_task(task.id):
        decisions.append({"at": approval.created_at, "kind": approval.verdict, "who": approval.display,
                          "why": approval.reason or "", "edits": approval.edits or {}})
    audit = [audit_record(r) async for r in store.audit_rows(task.id)]
    for record in audit:
        if record["action"] == "command.refused":
            data = record["data"]
            decisions.append({"at": datetime.fromisoformat(record["at"]), "kind": "refused", "who": record["actor"],
                              "why": f"{data.get('command', '')}: {data.get('reason', '')}", "edits": {}})
    verify_event = None
    for event in await store.events_of_task(task.id):
        if event.name.endswith(".state_changed"):
            payload = event.payload
            decisions.append({"at": datetime.fromisoformat(event.at), "kind": "state", "who": payload.get("actor"),
                              "why": payload.get("reason", ""), "from": payload.get("from"), "to": payload.get("to")})
            if "verif" in str(payload.get("reason", "")):
                verify_event = payload | {"at": datetime.fromisoformat(event.at)}
    decisions.sort(key=lambda d: d["at"])
    playbook = core.playbooks.get(task.playbook_id) if task.playbook_id in core.playbooks else None
    verify = None
    if playbook is not None and playbook.verify is not None:
        verify = {"tool": playbook.verify.tool, "expect": playbook.verify.expect,
                  "within_s": playbook.verify.within_s, "result": verify_event}
    return Timeline(
        task=task, proposal=proposal, signals=signals,
        evidence=[TimedStep(s) for s in steps if s.kind == "evidence"],
        decisions=decisions,
        steps=[TimedStep(s) for s in sorted((s for s in steps if s.kind == "step"), key=lambda s: s.idx)],
        verify=verify,
        rollbacks=[TimedStep(s) for s in steps if s.kind == "rollback"],
        audit=audit,
    )


async def recent_runs(store: Store, playbook_id: str, limit: int = 5) -> list[Task]:
    return await store.list_tasks(open_only=False, limit=limit, playbook_ids=[playbook_id])
