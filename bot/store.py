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
from bot.signals import Signal

T = TypeVar("T")


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

    async def signals_after(self, seq: int, limit: int = 500) -> list[dict[str, Any]]: ...

    async def signals_of_task(self, task_id: int, limit: int = 50) -> list[dict[str, Any]]: ...

    async def raw_signals_of_task(self, task_id: int) -> list[dict[str, Any]]: ...

    async def get_setting(self, key: str) -> dict[str, Any] | None: ...

    async def heartbeat(self) -> None: ...

    def audit_rows(self, task_id: int | None = None) -> AsyncIterator[tuple[Any, ...]]: ...

    async def events_of_task(self, task_id: int) -> list[dict[str, Any]]: ...

    async def transact(self, fn: Callable[[Any], Awaitable[T]]) -> T:
        """Run a unit of work atomically (the engine's task operations use this)."""
        ...
