"""A stand-in for the gateway's policy authority, for tests of the gateway and of single tools.

``ScriptedAuthority`` answers every write with the decision a test scripted and keeps the audit
records in memory; ``call_tool`` runs one call through the gateway by the path its category takes
(a read, a dry run, or a write of a stored step built here).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bot.audit.chain import AuditEntry
from bot.loop.gateway import Authorization, ToolGateway, ToolOutcome, parse_params
from bot.model.proposals import Decision
from bot.model.steps import StepKind, StepRecord, StepState
from bot.model.tasks import Task, TaskState
from bot.ports import StepCall

ALLOW = Decision(verdict="allow", rule="autonomy.L2", reason="reversible write in staging")


class ScriptedAuthority:
    def __init__(self, decision: Decision = ALLOW) -> None:
        self.decision = decision
        self.reason_code: str | None = "error_rate_high"
        self.approval_ids: list[int] = []
        self.records: list[AuditEntry] = []

    @property
    def audit(self) -> list[dict[str, Any]]:
        return [entry.data for entry in self.records]

    def audit_view(self) -> _AuditView:
        """A list-like view of the records' data that follows later calls."""
        return _AuditView(self)

    async def authorize(self, task: Task, step: StepRecord) -> Authorization:
        return Authorization(call=StepCall(tool=step.tool, params=step.params), decision=self.decision,
                             reason_code=self.reason_code or "", approval_ids=self.approval_ids)

    async def record(self, entry: AuditEntry) -> None:
        self.records.append(entry)


class _AuditView:
    def __init__(self, authority: ScriptedAuthority) -> None:
        self._authority = authority

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self._authority.audit[index]

    def __len__(self) -> int:
        return len(self._authority.records)


def stored_step(call: StepCall, idempotency_key: str = "task-7/step-1") -> tuple[Task, StepRecord]:
    now = datetime.now(UTC)
    task = Task(id=7, playbook_id="pb", state=TaskState.executing, group_key="g", title="t", environment="dev",
                requester="someone", created_at=now, updated_at=now)
    step = StepRecord(id=1, task_id=7, kind=StepKind.action, idx=0, name="step-1", tool=call.tool,
                      category="write_reversible", params=call.params, state=StepState.pending,
                      idempotency_key=idempotency_key)
    return task, step


async def call_tool(gateway: ToolGateway, call: StepCall, *, dry_run: bool = False, timeout_s: float = 5,
                    retries: int = 0, idempotency_key: str = "task-7/step-1") -> ToolOutcome:
    """One call by the path its category takes: a dry run, a read, or a write of a stored step."""
    if dry_run:
        return await gateway.dry_run(call, task_id=7, idempotency_key=idempotency_key, timeout_s=timeout_s)
    info = gateway.registry.get(call.tool)
    if not info.category_of(parse_params(info, call.params)).writes:
        return await gateway.read(call, task_id=7, idempotency_key=idempotency_key, timeout_s=timeout_s,
                                  retries=retries)
    task, step = stored_step(call, idempotency_key)
    return await gateway.write(task, step, timeout_s=timeout_s, retries=retries)
