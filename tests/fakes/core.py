"""A small in-memory stand-in for ``bot.chat.commands.Commands`` used by the Slack and Discord surface tests.

It keeps the rules the surfaces must render faithfully: only ``approver`` may approve, the
requester never approves their own task, a decided task refuses a second decision (so a double
click executes once), the kill switch refuses approvals, a critical proposal needs a typed
confirmation, and edits are validated against the step's bounds.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime
from typing import Any

from bot.chat.commands import ActionResult, Commands, Status
from bot.chat.digest_post import Delivery
from bot.chat.digest_text import Digest, DigestSection
from bot.errors import ConfirmationRequired, Conflict, Forbidden, UnknownTask, UserError
from bot.model.proposals import (
    ApprovalView,
    Category,
    Decision,
    Evidence,
    ParamBound,
    Proposal,
    RiskBand,
    RiskFactor,
    RiskScore,
    StepState,
    StepView,
)
from bot.model.tasks import Task, TaskState
from bot.policy.identity import Actor
from bot.store.digest_figures import Figures

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def make_proposal(task_id: int = 7, *, band: RiskBand = RiskBand.high, requester: str = "alertmanager",
                  evidence_snippet: str = "disk /var at 97%", title: str = "DiskFull on db-01 @here") -> Proposal:
    return Proposal(
        task_id=task_id,
        playbook_id="disk-cleanup",
        playbook_version="3",
        title=title,
        summary="Rotate logs on db-01 to free /var",
        state="needs_approval",
        environment="prod",
        severity="critical",
        team="storage",
        requester=requester,
        risk=RiskScore(score=90 if band is RiskBand.critical else 72, band=band, factors=[
            RiskFactor(name="environment", points=30, detail="prod"),
            RiskFactor(name="blast_radius", points=20, detail="1 host"),
        ]),
        blast_radius="db-01 only",
        evidence=[Evidence(kind="alert", title="DiskFull", url="http://prom:9090/graph", snippet=evidence_snippet)],
        steps=[
            StepView(index=0, name="rotate", tool="shell.run", category=Category.write_reversible,
                     params={"keep": 5, "host": "db-01"},
                     decision=Decision(verdict="needs_approval", rule="prod-writes", reason="prod",
                                       approvals_required=1, roles=["approver"]),
                     editable={"keep": ParamBound(type="int", min=1, max=10)},
                     rollback="restore rotated logs"),
        ],
        rollback_plan=["restore rotated logs from /var/backup"],
        approvals_required=1,
        approver_roles=["approver"],
        created_at=NOW,
        updated_at=NOW,
    )


class FakeCommands(Commands):
    def __init__(self, *proposals: Proposal) -> None:
        self.proposals = {p.task_id: p for p in proposals}
        self.executed: list[tuple[int, str, dict[str, Any] | None]] = []
        self.rejected: list[tuple[int, str, str]] = []
        self.undone: list[int] = []
        self.digests_posted = 0
        self.digest_jobs: list[asyncio.Task[Any]] = []
        self.runs: list[tuple[str, dict[str, str], str]] = []
        self.paused_by: str | None = None
        self.paused_reason: str | None = None

    def _get(self, task_id: int) -> Proposal:
        if task_id not in self.proposals:
            raise UnknownTask(f"No task #{task_id}. `/ops tasks` lists the open ones.")
        return self.proposals[task_id]

    async def may_approve(self, task_id: int, actor: Actor) -> None:
        p = self._get(task_id)
        if self.paused_by:
            raise Forbidden("The kill switch is on; nothing runs until `/ops resume`.")
        if not actor.has_any(p.approver_roles):
            raise Forbidden(f"{actor.display} is not an approver for task #{task_id} (needs role approver).")
        if actor.id == p.requester:
            raise Forbidden(f"Separation of duties: {actor.display} requested task #{task_id} and cannot approve it.")
        if p.state != "needs_approval":
            raise Conflict(f"Task #{task_id} is already {p.state}.")

    async def may_reject(self, task_id: int, actor: Actor) -> None:
        p = self._get(task_id)
        if p.state != "needs_approval":
            raise Conflict(f"Task #{task_id} is already {p.state}.")
        if not actor.has_any(p.approver_roles) and actor.id != p.requester:
            raise Forbidden(f"rejecting needs the role approver; {actor.display} has none")

    async def approve(self, task_id: int, actor: Actor, *, edits: dict[str, dict[str, Any]] | None = None,
                      confirmation: str | None = None) -> ActionResult:
        p = self._get(task_id)
        await self.may_approve(task_id, actor)
        if p.risk.band is RiskBand.critical and confirmation != f"approve {task_id}":
            raise ConfirmationRequired(f"Task #{task_id} is critical risk.", phrase=f"approve {task_id}")
        for step_name, changes in (edits or {}).items():
            step = next(s for s in p.steps if s.name == step_name)
            for key, value in changes.items():
                bound = step.editable.get(key)
                if bound is None or (bound.max is not None and float(value) > bound.max):
                    raise UserError(f"{step_name}.{key}={value} is out of bounds")
        steps = [s.model_copy(update={"state": StepState.succeeded, "result": "ok"}) for s in p.steps]
        p = p.model_copy(update={
            "state": "completed", "steps": steps, "can_undo": True, "outcome": "1 step ran",
            "approvals": [*p.approvals, ApprovalView(actor=actor.display, at=NOW)],
        })
        self.proposals[task_id] = p
        self.executed.append((task_id, actor.id, edits))
        return ActionResult(message=f"Approved task #{task_id}: 1 step ran.", proposal=p, executed=True)

    async def reject(self, task_id: int, actor: Actor, reason: str) -> ActionResult:
        p = self._get(task_id)
        if p.state != "needs_approval":
            raise Conflict(f"Task #{task_id} is already {p.state}.")
        p = p.model_copy(update={"state": "rejected", "outcome": f"rejected: {reason}"})
        self.proposals[task_id] = p
        self.rejected.append((task_id, actor.id, reason))
        return ActionResult(message=f"Rejected task #{task_id}.", proposal=p)

    async def undo(self, task_id: int, actor: Actor) -> ActionResult:
        p = self._get(task_id)
        if not p.can_undo:
            raise Conflict(f"Task #{task_id} has nothing to undo.")
        p = p.model_copy(update={"can_undo": False, "outcome": "rolled back"})
        self.proposals[task_id] = p
        self.undone.append(task_id)
        return ActionResult(message=f"Rolled back task #{task_id}.", proposal=p, executed=True)

    async def pause(self, actor: Actor, reason: str = "") -> Status:
        self.paused_by, self.paused_reason = actor.display, reason
        return await self.status()

    async def resume(self, actor: Actor) -> Status:
        self.paused_by = self.paused_reason = None
        return await self.status()

    async def run_playbook(self, playbook_id: str, args: dict[str, str], actor: Actor) -> Task:
        if playbook_id != "disk-cleanup":
            raise UnknownTask(f"No playbook {playbook_id!r}.")
        self.runs.append((playbook_id, args, actor.id))
        return Task(id=99, playbook_id=playbook_id, state=TaskState.queued, group_key="chat", title="by hand",
                    environment="prod", requester=actor.id, created_at=NOW, updated_at=NOW, args=args)

    async def status(self) -> Status:
        open_ = [p for p in self.proposals.values() if p.state == "needs_approval"]
        return Status(paused=self.paused_by is not None, paused_by=self.paused_by, paused_reason=self.paused_reason,
                      environment="prod", autonomy_cap="L2", open_tasks=len(open_), needs_approval=len(open_),
                      recent_failures=["#3 restart-api: timeout"])

    async def list_tasks(self, *, open_only: bool = True, limit: int = 20) -> list[Task]:
        return [
            Task(id=p.task_id, playbook_id=p.playbook_id, state=TaskState(p.state), group_key="g", title=p.title,
                 environment=p.environment, requester=p.requester, created_at=NOW, updated_at=NOW)
            for p in self.proposals.values()
            if not open_only or p.state == "needs_approval"
        ][:limit]

    async def show(self, task_id: int) -> Proposal:
        return self._get(task_id)

    async def digest(self, *, day: date | None = None, chart: bool = False) -> Digest:
        sections = [DigestSection("Response times", ["MTTR (completed tasks): 12.0 min   ▁▃█  week median 9 min"])]
        return Digest(title="Ooda digest: the 24 hours to now (UTC)", day=NOW.date(), zone="UTC", sections=sections,
                      figures=Figures(days=[]))

    async def post_digest(self, surfaces: list[Any] | None = None) -> tuple[Digest, list[Delivery]]:
        self.digests_posted += 1
        return await self.digest(chart=True), []

    def post_digest_soon(self) -> tuple[list[tuple[str, str | None]], asyncio.Task[Any]]:
        job = asyncio.get_running_loop().create_task(self.post_digest())
        self.digest_jobs.append(job)
        return [("slack", "C_DIGEST")], job


APPROVER = Actor(id="alice", display="alice", roles=frozenset({"approver"}), via="slack")
VIEWER = Actor(id="slack:U_VIEW", display="victor", roles=frozenset(), via="slack")
