"""Group commit: one writer task owns the SQLite write connection.

Requests that arrive while a commit is in flight queue up and share the next transaction, so the
commit itself is the batching window (no timer). Each request is answered only after the
transaction holding its rows committed. Doing "insert then commit" per request on a shared
connection would instead commit other requests' half-done rows, and one rollback could drop rows
that were already acknowledged.

Two kinds of work share a batch:
- bulk signal upserts (the intake hot path): merged into one ``executemany``;
- transactional functions (engine and commands): each runs in its own SAVEPOINT, so one that
  raises is rolled back alone and only its caller sees the error.
Audit records are sealed into the hash chain only for work that succeeded; events are written in
the same transaction and published on the bus after the commit.

One bad item never fails its neighbours. When the batch's bulk rows or its COMMIT are refused for
something an item carries (a constraint, an integer past SQLite's range, a value it cannot bind:
``ITEM_ERRORS``), the transaction is rolled back and the batch split in halves, each committed on
its own, down to the one item that fails alone: its caller gets ``WriteRefused``, everyone else
commits and is answered as usual. That costs about 2·log2(batch) extra transactions, and only
after a failure: a batch that commits pays nothing for it (no savepoint per bulk item). Units may
therefore run more than once; that is safe because a unit's effects are its transaction's, which
was rolled back. A failure of the store itself (disk, lock, corruption) still fails the batch.

Threads: BEGIN, COMMIT and the units' statements run on aiosqlite's thread for this connection;
the batch's bulk rows are written from the event loop's thread, in between (see ``_commit``).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiosqlite
import structlog

from bot.audit.chain import AUDIT_COLUMNS, AuditChain, AuditEntry, AuditRecord, current_correlation_id, current_trace_id
from bot.errors import StoreUnavailable
from bot.jsoncodec import dumps
from bot.model.events import SIGNALS_STORED, Event, EventBus

log = structlog.get_logger(__name__)
T = TypeVar("T")

MAX_BATCH = 2000
# The rows of a batch are written from the event loop's thread (see _commit), about 8 µs each:
# this bounds how long one batch holds up everything else the loop serves (~40 ms).
MAX_BATCH_ROWS = 5000

SIGNAL_UPSERT = """
INSERT INTO signals (id, source, fingerprint, status, severity, title, labels, annotations,
                     starts_at, ends_at, url, raw, received_at, updated_at, seq)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(id) DO UPDATE SET
    seq = excluded.seq, status = excluded.status, severity = excluded.severity, title = excluded.title,
    labels = excluded.labels, annotations = excluded.annotations, starts_at = excluded.starts_at,
    ends_at = excluded.ends_at, url = excluded.url, raw = excluded.raw, updated_at = excluded.updated_at,
    deliveries = signals.deliveries + 1
"""


# The heads another process sharing the file may have moved: the last signal seq and the audit
# chain's last record. One indexed look-up each, in one round trip per transaction.
HEADS_SQL = ("SELECT (SELECT coalesce(max(seq), 0) FROM signals), "
             "(SELECT seq FROM audit ORDER BY seq DESC LIMIT 1), (SELECT hash FROM audit ORDER BY seq DESC LIMIT 1)")

# What an item can carry that SQLite refuses; anything else (OperationalError: disk, lock, I/O)
# is the store's own failure and no split would help.
ITEM_ERRORS: tuple[type[BaseException], ...] = (
    sqlite3.IntegrityError, sqlite3.DataError, sqlite3.InterfaceError, sqlite3.ProgrammingError,
    OverflowError, ValueError, TypeError,
)


class WriteRefused(StoreUnavailable):
    """SQLite refused what this one request tried to write; the rest of its batch committed."""


def _write_rows(conn: sqlite3.Connection, signal_rows: list[Any], audit_rows: list[Any],
               event_rows: list[Any]) -> None:
    if signal_rows:
        conn.executemany(SIGNAL_UPSERT, signal_rows)
    if audit_rows:
        conn.executemany(f"INSERT INTO audit ({AUDIT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", audit_rows)
    if event_rows:
        conn.executemany(
            "INSERT INTO events (task_id, name, payload, correlation_id, created_at) VALUES (?, ?, ?, ?, ?)",
            event_rows)


def sqlite_connection(conn: aiosqlite.Connection) -> sqlite3.Connection:
    """The sqlite3 connection inside an aiosqlite one. aiosqlite has no public accessor, so this
    reads its ``_conn`` (stable since 0.17; the version is bounded in pyproject.toml for that
    reason). The connection must be opened with ``check_same_thread=False``."""
    raw: sqlite3.Connection = conn._conn
    return raw


class Tx:
    """What a transactional function may do: SQL on the write connection, audit, events."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.conn = conn
        self.audits: list[AuditEntry] = []
        self.events: list[Event] = []

    async def execute(self, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> aiosqlite.Cursor:
        return await self.conn.execute(sql, params)

    # One hop to the connection's thread per query (execute_fetchall) instead of three (execute,
    # fetch, close the cursor): every hop inside a transaction holds up the whole batch.
    async def fetchone(self, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> Any:
        """The first row or None; for queries that select one row (by key or with LIMIT 1)."""
        rows = list(await self.conn.execute_fetchall(sql, params))
        return rows[0] if rows else None

    async def fetchall(self, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> list[Any]:
        return list(await self.conn.execute_fetchall(sql, params))

    def audit(self, entry: AuditEntry) -> None:
        self.audits.append(entry)

    def event(self, event: Event) -> None:
        self.events.append(event)


@dataclass(slots=True, eq=False)
class _Work:
    future: asyncio.Future[Any]
    fn: Callable[[Tx], Awaitable[Any]] | None = None
    signal_rows: list[list[Any]] = field(default_factory=list)
    signals: list[Any] = field(default_factory=list)  # the Signals of signal_rows, same order
    audits: list[AuditEntry] = field(default_factory=list)
    correlation_id: str | None = field(default_factory=current_correlation_id)
    trace_id: str | None = field(default_factory=current_trace_id)


class GroupCommitWriter:
    def __init__(
        self, conn: aiosqlite.Connection, chain: AuditChain, bus: EventBus, next_signal_seq: int,
        queue_size: int = 10_000,
    ) -> None:
        self._conn = conn
        self._chain = chain
        self._bus = bus
        self._signal_seq = next_signal_seq
        self._queue: asyncio.Queue[_Work] = asyncio.Queue(maxsize=queue_size)
        self._task: asyncio.Task[None] | None = None
        self.healthy = True

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="store-writer")

    async def stop(self) -> None:
        """Finish what is queued, then stop. Idempotent."""
        if self._task is None:
            return
        await self._queue.join()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def upsert_signals(self, rows: list[list[Any]], audit: AuditEntry, signals: list[Any]) -> None:
        """Store signal rows (without their seq column) and one audit record; returns after commit.

        ``signals`` (the rows' Signal objects) travel with the stored-signals event, so the engine
        groups them without reading them back from the store.
        """
        await self._submit(_Work(asyncio.get_running_loop().create_future(), signal_rows=rows,
                                 signals=signals, audits=[audit]))

    async def transact(self, fn: Callable[[Tx], Awaitable[T]]) -> T:
        """Run ``fn`` inside the next transaction; returns its result after the commit."""
        result: T = await self._submit(_Work(asyncio.get_running_loop().create_future(), fn=fn))
        return result

    async def _submit(self, work: _Work) -> Any:
        if self._task is None or self._task.done():
            raise StoreUnavailable("the store writer is not running; check the server log and restart")
        await self._queue.put(work)
        return await work.future

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            rows = len(batch[0].signal_rows)
            while len(batch) < MAX_BATCH and rows < MAX_BATCH_ROWS and not self._queue.empty():
                batch.append(self._queue.get_nowait())
                rows += len(batch[-1].signal_rows)
            try:
                await self._commit(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _commit(self, batch: list[_Work]) -> None:
        chain_state = self._chain.snapshot()
        seq_state = self._signal_seq
        results: dict[int, Any] = {}
        errors: dict[int, BaseException] = {}
        records: list[AuditRecord] = []
        events: list[tuple[Event, str | None]] = []
        signal_rows: list[list[Any]] = []
        stored: list[tuple[int, Any]] = []
        numbered: list[list[Any]] = []
        try:
            # On aiosqlite's thread: waiting for the write lock must not hold up the event loop.
            await self._conn.execute("BEGIN IMMEDIATE")
            await self._follow_other_writers()
            for i, work in enumerate(batch):
                if work.fn is not None:
                    tx = Tx(self._conn)
                    await self._conn.execute("SAVEPOINT work")
                    try:
                        results[i] = await work.fn(tx)
                    except Exception as exc:
                        await self._conn.execute("ROLLBACK TO work")
                        await self._conn.execute("RELEASE work")
                        errors[i] = exc
                        continue
                    await self._conn.execute("RELEASE work")
                    audits, work_events = tx.audits, tx.events
                else:
                    for row, signal in zip(work.signal_rows, work.signals, strict=True):
                        self._signal_seq += 1
                        row.append(self._signal_seq)
                        numbered.append(row)
                        stored.append((self._signal_seq, signal))
                    signal_rows += work.signal_rows
                    audits, work_events = work.audits, []
                for entry in audits:
                    if (entry.correlation_id is None and work.correlation_id) or (entry.trace_id is None
                                                                                   and work.trace_id):
                        entry = AuditEntry(entry.actor, entry.action, entry.task_id, entry.data,
                                           entry.correlation_id or work.correlation_id, entry.at,
                                           entry.trace_id or work.trace_id)
                    records.append(self._chain.seal(entry))
                events.extend((e, work.correlation_id) for e in work_events)
            event_rows = [(e.task_id, e.name, dumps(e.payload), cid, e.at.isoformat()) for e, cid in events]
            # The batch's rows are written right here, on the event loop's thread. The CPU they
            # cost is the same on any thread (the GIL serialises it), but on aiosqlite's thread
            # sqlite3 hands the GIL back for every row's step and, while the loop is busy parsing
            # requests, each hand-back waits up to a switch interval: at 100 alerts per request
            # that cost 10-17% of the throughput. COMMIT, the disk wait, stays on aiosqlite's thread.
            _write_rows(sqlite_connection(self._conn), signal_rows, [r.as_row() for r in records], event_rows)
            await self._conn.execute("COMMIT")
        except Exception as exc:
            self._chain.restore(chain_state)
            self._signal_seq = seq_state
            for row in numbered:
                row.pop()  # its seq: a retry numbers the rows again
            if self._conn.in_transaction:
                try:
                    await self._conn.execute("ROLLBACK")
                except Exception:
                    log.warning("store.rollback_failed")
            if isinstance(exc, ITEM_ERRORS):
                await self._isolate(batch, exc)
                return
            self.healthy = False
            log.error("store.commit_failed", error=str(exc), batch=len(batch))
            failure = StoreUnavailable(f"the store could not commit ({exc}); nothing from this request was kept")
            for work in batch:
                if not work.future.done():
                    work.future.set_exception(failure)
            return
        self.healthy = True
        for i, work in enumerate(batch):
            if work.future.done():
                continue  # the caller went away (cancelled); its rows are committed regardless
            if i in errors:
                work.future.set_exception(errors[i])
            else:
                work.future.set_result(results.get(i))
        for event, _ in events:
            self._bus.publish(event)
        if signal_rows:
            self._bus.publish(Event(SIGNALS_STORED, payload={"max_seq": self._signal_seq, "signals": stored}))

    async def _follow_other_writers(self) -> None:
        """Continue the signal numbering and the audit chain from what is committed now.

        Inside the write lock, so nobody moves them until this transaction ends. Only another
        process writing the same file (a second ``ooda serve``, an ``ooda`` command) moves them;
        without this its records and ours would claim the same seq.
        """
        async with self._conn.execute(HEADS_SQL) as cur:
            row = await cur.fetchone()
        assert row is not None  # a SELECT of scalar subqueries always returns one row
        signal_seq, audit_seq, audit_hash = row
        self._signal_seq = max(self._signal_seq, int(signal_seq))
        if audit_seq is not None and audit_seq != self._chain.last_seq:
            self._chain.restore((int(audit_seq), str(audit_hash)))

    async def _isolate(self, batch: list[_Work], exc: BaseException) -> None:
        """Commit ``batch`` without the item(s) that made it fail with ``exc``, by halves."""
        if len(batch) > 1:
            log.warning("store.batch_split", error=str(exc), batch=len(batch))
            middle = len(batch) // 2
            await self._commit(batch[:middle])
            await self._commit(batch[middle:])
            return
        (work,) = batch
        kind = "transaction" if work.fn is not None else "signals"
        log.error("store.item_refused", error=str(exc), kind=kind, rows=len(work.signal_rows),
                  correlation_id=work.correlation_id)
        if not work.future.done():
            refused = WriteRefused(f"the store refused this request's write ({exc}); nothing from it was kept, "
                                   "and other requests were not affected")
            refused.__cause__ = exc
            work.future.set_exception(refused)
