"""Which process runs the singletons (scheduled checks, reminders, retention, the outbox retry).

With SQLite there is one ``ooda serve`` per store, so it leads. With PostgreSQL, the leader is the
process holding a session-level advisory lock (``LEADER_LOCK``) on a connection of its own: the
lock lives exactly as long as that connection, so when the leader dies (even by SIGKILL) PostgreSQL
drops its connection, releases the lock, and a standby that tries every ``interval_s`` takes over.
A leader whose connection breaks stops leading at once and competes again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import structlog

from bot.metrics import Metrics
from bot.store.postgres import UNAVAILABLE, PostgresStore

log = structlog.get_logger(__name__)

LEADER_LOCK = 0x4F4F4443
ROLES = ("leader", "standby")


RoleListener = Callable[[bool], Awaitable[None]]


class SoleLeader:
    """The only process on its store: always the leader."""

    role = "leader"
    shared = False  # no other process competes: singletons start with the process

    def is_leader(self) -> bool:
        return True

    def on_change(self, listener: RoleListener) -> None:
        return None  # the role never changes

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


class AdvisoryLockLeader:
    """Leadership by a PostgreSQL advisory lock held on a dedicated connection.

    Singletons that are not scheduled jobs (the Discord gateway session) follow the role through
    ``on_change``: each listener is called with the new role when it changes, one call at a time
    and in order, so a quick lose-and-regain is seen as both.
    """

    shared = True

    def __init__(self, connect: Callable[[], Awaitable[asyncpg.Connection]], metrics: Metrics, *,
                 interval_s: float = 2.0) -> None:
        self._connect = connect
        self._metrics = metrics
        self._interval_s = interval_s
        self._leading = False
        self._task: asyncio.Task[None] | None = None
        self._conn: asyncpg.Connection | None = None
        self._listeners: list[RoleListener] = []
        self._changes: asyncio.Queue[bool] = asyncio.Queue()
        self._notifier: asyncio.Task[None] | None = None
        self._set_role(False)

    @property
    def role(self) -> str:
        return "leader" if self._leading else "standby"

    def is_leader(self) -> bool:
        return self._leading

    def on_change(self, listener: RoleListener) -> None:
        """Call ``listener(leading)`` at each change of role from now on (and now, if leading)."""
        self._listeners.append(listener)
        if self._leading:
            self._changes.put_nowait(True)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="leadership")
        self._notifier = asyncio.create_task(self._notify(), name="leadership-listeners")

    async def stop(self) -> None:
        for task in (self._task, self._notifier):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._notifier = None
        await self._drop()

    async def _notify(self) -> None:
        while True:
            leading = await self._changes.get()
            for listener in self._listeners:
                try:
                    await listener(leading)
                except Exception:
                    log.exception("leadership.listener_failed", leading=leading)

    async def _run(self) -> None:
        while True:
            try:
                if self._conn is None or self._conn.is_closed():
                    await self._drop()
                    self._conn = await self._connect()
                if self._leading:
                    await self._conn.fetchval("SELECT 1")  # still connected, so still holding the lock
                elif await self._conn.fetchval("SELECT pg_try_advisory_lock($1)", LEADER_LOCK):
                    self._set_role(True)
                    log.warning("leadership.acquired")
            # Whatever makes the store unavailable (a failover's faces included, see UNAVAILABLE) or
            # fails a statement may not end the loop: it competes again in a moment.
            except (*UNAVAILABLE, asyncpg.PostgresError) as exc:
                if self._leading:
                    log.warning("leadership.lost", error=f"{type(exc).__name__}: {exc}")
                await self._drop()
            await asyncio.sleep(self._interval_s)

    async def _drop(self) -> None:
        self._set_role(False)
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)

    def _set_role(self, leading: bool) -> None:
        if leading != self._leading and self._listeners:
            self._changes.put_nowait(leading)
        self._leading = leading
        for role in ROLES:
            self._metrics.leader.labels(role).set(1 if (role == "leader") == leading else 0)


def leadership_for(store: Any, metrics: Metrics) -> SoleLeader | AdvisoryLockLeader:
    """An advisory-lock leader on PostgreSQL; the sole leader on an embedded store."""
    if isinstance(store, PostgresStore):
        return AdvisoryLockLeader(store.connect, metrics)
    return SoleLeader()
