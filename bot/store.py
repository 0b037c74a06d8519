"""The Store Protocol: everything the core asks of persistence.

``bot/sqlite_store.py`` is the embedded default. A PostgreSQL store (several replicas, work claimed
with ``FOR UPDATE SKIP LOCKED``) implements the same methods; callers never see SQL.

Guarantees every implementation must give:
- a write method returns only after its transaction committed; if it raises, nothing was kept;
- audit records and events are written in the same transaction as the change they describe, and
  events are published on the bus only after the commit;
- the audit chain is extended in commit order by one writer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, TypeVar

from bot.audit import AuditEntry
from bot.events import Event
from bot.signals import Signal
from bot.tasks import ApprovalRecord, SignalTally, StepRecord, Task, TaskState

T = TypeVar("T")


class TaskOps(Protocol):
    """**Protocol:** the domain operations a unit of work may do inside ``Store.transact``.

    Everything done through one ``TaskOps`` commits together or not at all; audit entries and
    events recorded here are written in that same transaction.
    """

    def audit(self, entry: AuditEntry) -> None: ...

    def event(self, event: Event) -> None: ...

    async def get_task(self, task_id: int) -> Task: ...

    async def create_task(self, *, playbook_id: str, playbook_version: str, group_key: str, title: str,
                          environment: str, severity: str, requester: str, args: dict[str, Any],
                          signal_ids: list[str], last_signal_at: str | None) -> Task: ...

    async def attach_signals(self, task_id: int, signal_ids: list[str], last_signal_at: str) -> None: ...

    async def latest_task_for_group(self, group_key: str) -> tuple[Task, str | None] | None: ...

    async def signal_tally(self, task_id: int) -> SignalTally:
        """The task's signal count, how many are resolved (status in the store), and the last ``ends_at``."""
        ...

    async def record_resolution(self, task_id: int, resolved_at: str) -> None:
        """Set ``resolved_at`` (every signal of the task resolved at that time) and clear ``refired_at``."""
        ...

    async def record_refire(self, task_id: int, refired_at: str) -> None:
        """Set ``refired_at``: a signal of the task fired again after every one had resolved."""
        ...

    async def tasks_with_resolved_alerts(self, task_ids: list[int]) -> set[int]:
        """Those of ``task_ids`` whose alerts stand resolved (``Task.alerts_resolved``)."""
        ...

    async def set_state(self, task_id: int, expected: TaskState | set[TaskState], target: TaskState, *,
                        actor: str, reason: str = "", outcome: str | None = None) -> Task:
        """Compare-and-set the task's state along an allowed transition; ``Conflict`` if it moved."""
        ...

    async def save_proposal(self, task_id: int, proposal: dict[str, Any], title: str | None = None) -> None: ...

    async def save_messages(self, task_id: int, messages: list[dict[str, Any]]) -> None: ...

    async def insert_step(self, *, task_id: int, kind: str, idx: int, name: str, tool: str, category: str,
                          params: dict[str, Any], rollback: dict[str, Any] | None,
                          decision: dict[str, Any] | None, state: str, idempotency_key: str) -> int: ...

    async def get_step(self, step_id: int) -> StepRecord: ...

    async def set_step_state(self, step_id: int, expected: str, target: str, **fields: Any) -> bool:
        """Compare-and-set a step's state (only ``bot.steps`` calls it); False if it is not ``expected``."""
        ...

    async def claim_step(self, step_id: int, started_at: str) -> bool:
        """pending -> running; False when someone else claimed it first."""
        ...

    async def update_step(self, step_id: int, **fields: Any) -> None: ...

    async def skip_pending_steps(self, task_id: int, finished_at: str) -> list[str]:
        """pending -> skipped for every step of kind ``step`` (nothing may claim them); returns their names."""
        ...

    async def remove_unstarted_steps(self, task_id: int) -> int:
        """Delete the steps of kind ``step`` that never ran (pending, denied, skipped): a plan being replaced."""
        ...

    async def steps(self, task_id: int, kind: str | None = None) -> list[StepRecord]: ...

    async def add_approval(self, task_id: int, actor: str, display: str, verdict: str,
                           reason: str | None, edits: dict[str, Any] | None) -> bool:
        """False when this person already gave this verdict: one person counts once."""
        ...

    async def approvals(self, task_id: int) -> list[ApprovalRecord]: ...

    async def set_setting(self, key: str, value: Any, actor: str) -> None: ...

    async def get_setting(self, key: str) -> Any: ...

    async def add_outbox(self, task_id: int, surface: str, note: str | None, error: str) -> None: ...

    async def remove_outbox(self, outbox_id: int) -> None: ...


class Store(Protocol):
    """**Protocol:** persistence for signals, tasks, steps, approvals, events, audit and settings."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    @property
    def queue_depth(self) -> int: ...

    async def ingest_signals(self, signals: list[Signal], audit: AuditEntry) -> list[str]:
        """Upsert by signal id (dedup by fingerprint) plus one audit record; returns the ids after commit."""
        ...

    async def signal_count(self) -> int: ...

    async def purge_signals(self, before: str) -> int:
        """Delete signals that joined no task, last delivered before ``before``; returns how many."""
        ...

    async def task_ids_of_signals(self, signal_ids: list[str]) -> dict[str, int | None]: ...

    async def signals_after(self, seq: int, limit: int = 500) -> list[dict[str, Any]]: ...

    async def signals_of_task(self, task_id: int, limit: int = 50) -> list[dict[str, Any]]: ...

    async def raw_signals_of_task(self, task_id: int) -> list[dict[str, Any]]: ...

    async def get_setting(self, key: str) -> dict[str, Any] | None: ...

    async def heartbeat(self) -> None: ...

    def audit_rows(self, task_id: int | None = None) -> AsyncIterator[tuple[Any, ...]]: ...

    async def events_of_task(self, task_id: int) -> list[dict[str, Any]]: ...

    async def last_event_id(self) -> int: ...

    async def events_after(self, event_id: int, limit: int) -> list[dict[str, Any]]:
        """Stored events with an id above ``event_id``, oldest first (what event sinks deliver)."""
        ...

    async def transact(self, fn: Callable[[TaskOps], Awaitable[T]]) -> T:
        """Run a unit of work atomically; returns its result after the commit."""
        ...

    async def audit_head(self) -> tuple[int, str]: ...

    async def get_task(self, task_id: int) -> Task | None: ...

    async def list_tasks(self, *, open_only: bool = True, limit: int = 50,
                         playbook_ids: list[str] | None = None) -> list[Task]:
        """Newest first; ``playbook_ids`` keeps the tasks of those playbooks only."""
        ...

    async def tasks_in_states(self, states: list[str]) -> list[Task]: ...

    async def tasks_since(self, since: str) -> list[Task]: ...

    async def steps_of_task(self, task_id: int, kind: str | None = None) -> list[StepRecord]: ...

    async def approvals_of_task(self, task_id: int) -> list[ApprovalRecord]: ...

    async def tool_runs_since(self, tool: str, since: str) -> tuple[int, int]:
        """(runs, failures) of a tool since an ISO time: rate limits and the anomaly downgrade."""
        ...

    async def playbook_runs_since(self, playbook_id: str, since: str) -> tuple[int, int]:
        """(runs, failed runs) of a playbook since an ISO time; a run is a task that executed a step."""
        ...

    async def outbox_items(self, limit: int = 100) -> list[dict[str, Any]]: ...

    async def noisiest_alerts(self, since: str, limit: int = 5) -> list[tuple[str, int]]: ...

    async def unmatched_signals(self, since: str, limit: int = 100) -> tuple[list[dict[str, Any]], int]:
        """Signals no playbook matched, by alert name, since an ISO time: (up to ``limit`` rows, how many names)."""
        ...
