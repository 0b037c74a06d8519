"""Which live process runs a step or drives a task, on a PostgreSQL store shared by several replicas.

Each store instance picks an owner number at open and holds a session advisory lock on it
(``OWNER_LOCK``, the owner) on a connection of its own for as long as it is open. Every step it
puts in running records the number (``steps.claimed_by``), and so does every task it opens or
moves (``tasks.claimed_by``): the process that last moved a task into ``queued``, ``running`` or
``executing`` is the one driving it on. PostgreSQL drops the lock with the connection, also when
the process is killed, so "the owner's lock is held" means "the process that started this step
(or drives this task) is alive": a replica starting beside it leaves such steps alone instead of
treating them as interrupted by a crash, and the leader takes over only what a gone owner left
(``bot/loop/orphans.py``).

The lock's connection may die while the process lives (a proxy cut it, the server restarted,
``pg_terminate_backend``). ``OwnerLock`` notices (asyncpg's termination listener, and a probe every
``PROBE_S`` for a connection that died without a word) and takes the same number again on a new
connection. Until it holds it again the process claims no step (``OwnerLockLost``): the leader
resolves the running steps of an owner whose lock stays absent, so a step claimed meanwhile could
be resolved under a live runner.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

import asyncpg
import structlog

from bot.audit.chain import AuditEntry
from bot.errors import StoreUnavailable

log = structlog.get_logger(__name__)

OWNER_LOCK = 0x4F4F44  # the first key of every owner's advisory lock (the second is the owner)
PROBE_S = 5.0  # how often the lock's connection is checked when no termination was reported
RETRY_S = 1.0  # how often a dropped lock is tried again
CLAIM_WAIT_S = 2.0  # how long a claim waits for a dropped lock to be taken again before it is refused
# Tasks a live process drives: opened and being planned, or running their steps.
DRIVEN_STATES = ("queued", "running", "executing")

_HELD = """
EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted AND l.classid = $1::oid
    AND l.objsubid = 2 AND l.objid = CAST({owner} AS oid)
    AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()))
"""
LIVE_STEPS_SQL = f"""
SELECT s.id FROM steps s
WHERE s.id = ANY($2::bigint[]) AND s.claimed_by IS NOT NULL AND {_HELD.format(owner="s.claimed_by")}
"""
# Tasks in a driven state whose owner holds no lock (or none was recorded: opened before owners
# were, or copied from SQLite). A task with a running step is left to the steps' own check.
ORPHANED_TASKS_SQL = f"""
SELECT t.id, t.state, t.claimed_by, t.updated_at FROM tasks t
WHERE t.state = ANY($2::text[])
    AND NOT (t.claimed_by IS NOT NULL AND {_HELD.format(owner="t.claimed_by")})
    AND NOT EXISTS (SELECT 1 FROM steps s WHERE s.task_id = t.id AND s.state = 'running')
ORDER BY t.id
"""


class OwnerLockLost(StoreUnavailable):
    """A step was to be claimed while this process does not hold its owner lock; nothing was claimed."""

    def __init__(self, step_id: int, owner: int | None) -> None:
        super().__init__(f"this replica lost its owner lock ({owner}) on PostgreSQL and claims no step until it "
                         f"holds it again (step {step_id} was left pending for another replica)")
        self.step_id = step_id
        self.owner = owner


class Orphan(NamedTuple):
    """A task in a driven state whose owner holds no lock, as one look found it."""

    task_id: int
    state: str
    owner: int | None
    updated_at: str


def new_owner() -> int:
    """A number for this process: positive, fits the lock's 32-bit key."""
    return secrets.randbelow(2**31 - 2) + 1


async def hold(conn: asyncpg.Connection) -> int:
    """Take an owner's lock on ``conn`` (kept until the connection closes); returns the owner.

    A number another live process holds (one chance in two billion) is not shared: pick again.
    """
    while True:
        owner = new_owner()
        if await conn.fetchval("SELECT pg_try_advisory_lock($1::int, $2::int)", OWNER_LOCK, owner):
            return owner


class OwnerLock:
    """This process's owner number and the session advisory lock that shows it alive, kept held."""

    def __init__(self, connect: Callable[[], Awaitable[asyncpg.Connection]], *, probe_s: float = PROBE_S,
                 retry_s: float = RETRY_S) -> None:
        self._connect = connect
        self._probe_s, self._retry_s = probe_s, retry_s
        self.number: int | None = None
        self._conn: asyncpg.Connection | None = None
        self._held = asyncio.Event()
        self._dropped_event = asyncio.Event()
        self._dropped_at = 0.0
        self._keeper: asyncio.Task[None] | None = None

    @property
    def held(self) -> bool:
        return self._held.is_set()

    @property
    def backend_pid(self) -> int | None:
        """The PostgreSQL backend holding the lock now (tests terminate it to drop the lock)."""
        return self._conn.get_server_pid() if self._conn is not None and self.held else None

    async def take(self) -> int:
        """Pick a number and hold its lock; keep it held until ``release``."""
        conn = await self._connect()
        try:
            self.number = await hold(conn)
        except BaseException:
            await conn.close()
            raise
        self._keep(conn)
        self._keeper = asyncio.create_task(self._keep_held(), name="owner-lock")
        return self.number

    async def wait_held(self, timeout_s: float) -> bool:
        """True once the lock is held (at once when it is), False when ``timeout_s`` passed first."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._held.wait()
        return self.held

    async def release(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
            self._keeper = None
        self._held.clear()
        conn, self._conn = self._conn, None  # closing it is no drop to report
        if conn is not None and not conn.is_closed():
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)

    def _keep(self, conn: asyncpg.Connection) -> None:
        self._conn = conn
        conn.add_termination_listener(self._on_terminated)
        self._held.set()

    def _on_terminated(self, conn: asyncpg.Connection) -> None:
        if conn is self._conn:
            self._drop("its connection closed")

    def _drop(self, why: str) -> None:
        if not self.held:
            return
        self._held.clear()
        self._dropped_at = time.monotonic()
        self._dropped_event.set()
        log.warning("owner.lock_dropped", owner=self.number, reason=why,
                    claims="none until the lock is taken again")

    async def _keep_held(self) -> None:
        told = False
        while True:
            if self.held:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._probe_s):
                        await self._dropped_event.wait()
                self._dropped_event.clear()
                if self.held:
                    await self._probe()
                continue
            reason = await self._retake()
            if reason is None:
                log.warning("owner.lock_taken_again", owner=self.number,
                            after_ms=round((time.monotonic() - self._dropped_at) * 1000))
                told = False
                continue
            if not told:  # once per drop: the retries go on quietly
                log.error("owner.lock_unavailable", owner=self.number, reason=reason,
                          claims="stopped: this replica claims no step until it holds its owner lock again; "
                                 "the leader takes over the tasks it drives")
                told = True
            await asyncio.sleep(self._retry_s)

    async def _probe(self) -> None:
        """A connection that died without a word (a half-open TCP session) fails this."""
        conn = self._conn
        try:
            assert conn is not None
            async with asyncio.timeout(self._probe_s):
                await conn.fetchval("SELECT 1")
        except Exception as exc:  # whatever failed, this connection proves nothing any more
            self._drop(f"{type(exc).__name__}: {exc}")
            self._conn = None
            if conn is not None:
                conn.terminate()

    async def _retake(self) -> str | None:
        """Take the same number again on a new connection; None when held, else why not."""
        conn = None
        try:
            conn = await self._connect()
            if await conn.fetchval("SELECT pg_try_advisory_lock($1::int, $2::int)", OWNER_LOCK, self.number):
                self._keep(conn)
                return None
            # The old session may still be alive on the server (a half-open connection): PostgreSQL
            # ends it, and then the lock is free again.
            reason = "another session holds it"
        except Exception as exc:  # the keeper outlives any failure: it tries again in a moment
            reason = f"{type(exc).__name__}: {exc}"
        if conn is not None:
            conn.terminate()
        return reason


async def live_steps(conn: asyncpg.Connection, step_ids: list[int]) -> set[int]:
    return {int(r[0]) for r in await conn.fetch(LIVE_STEPS_SQL, OWNER_LOCK, step_ids)}


async def hand_over(conn: asyncpg.Connection, step_id: int, owner: int | None) -> bool:
    """Give up the task of a step this process may not claim: no owner, so the leader takes it over."""
    status = await conn.execute(
        "UPDATE tasks SET claimed_by = NULL WHERE id = (SELECT task_id FROM steps WHERE id = $1) "
        "AND claimed_by IS NOT DISTINCT FROM $2", step_id, owner)
    return status == "UPDATE 1"


class TaskOwners:
    """The tasks of owners that are gone, and their taking over by this process (the leader)."""

    def __init__(self, store: Any) -> None:
        self._store = store  # a PostgresStore: its pool, its owner lock and its units of work

    def holds_own_lock(self) -> bool:
        return bool(self._store.owner_lock.held)

    async def orphaned_tasks(self) -> list[Orphan]:
        rows = await self._store.pool.fetch(ORPHANED_TASKS_SQL, OWNER_LOCK, list(DRIVEN_STATES))
        return [Orphan(int(r[0]), r[1], None if r[2] is None else int(r[2]), r[3]) for r in rows]

    async def take_over(self, task_id: int, found: Orphan | None = None) -> bool:
        """Record this process as the task's owner, with an audit record; with ``found``, only if
        the task is still as that look found it (its owner may have moved it on meanwhile)."""
        mine = self._store.owner_lock.number

        async def unit(t: Any) -> bool:
            if found is None:
                before = await t.conn.fetchrow(
                    "SELECT state, claimed_by FROM tasks WHERE id = $1 AND claimed_by IS DISTINCT FROM $2 FOR UPDATE",
                    task_id, mine)
                if before is None:
                    return False  # this process drives it already
                state, previous = before[0], before[1]
                reason = "the replica running its step is gone (its owner lock is absent)"
            else:
                state, previous = found.state, found.owner
                reason = "the replica driving it is gone (its owner lock is absent)"
            status = await t.conn.execute(
                "UPDATE tasks SET claimed_by = $1 WHERE id = $2 AND state = $3 AND claimed_by IS NOT DISTINCT FROM $4"
                + ("" if found is None else " AND updated_at = $5"),
                mine, task_id, state, previous, *(() if found is None else (found.updated_at,)))
            if status != "UPDATE 1":
                return False
            t.audit(AuditEntry("system", "task.taken_over", task_id,
                               {"from_owner": previous, "owner": mine, "state": state, "reason": reason}))
            return True

        taken: bool = await self._store.transact(unit)
        return taken


def task_owners_for(store: Any) -> TaskOwners | None:
    """Owners on PostgreSQL; None where one process owns the store (SQLite)."""
    from bot.store.postgres import PostgresStore

    return TaskOwners(store) if isinstance(store, PostgresStore) else None
