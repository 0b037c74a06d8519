"""The embedded store: SQLite in WAL mode through aiosqlite.

One write connection owned by ``GroupCommitWriter`` and one read connection (WAL lets readers run
beside the writer). Migrations run at open. This is the default implementation of
``bot.store.protocol.Store``; nothing outside this module, the writer and the digest's figures
(``bot/store/digest_figures.py``, read-only queries) writes SQL for SQLite.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import structlog

from bot.audit.chain import AUDIT_COLUMNS, GENESIS, AuditChain, AuditEntry
from bot.errors import StoreUnavailable
from bot.jsoncodec import dumps, loads
from bot.model.events import EventBus
from bot.model.signals import Signal, signal_from_row
from bot.model.steps import StepRecord
from bot.model.tasks import ATTENTION_STATES, ApprovalRecord, Task
from bot.store.digest_figures import DayWindow, Figures, compute_figures
from bot.store.ports import (
    LAG_COUNT_MAX,
    AuditRow,
    Backlog,
    GuardQuery,
    GuardState,
    OutboxItem,
    RawSignal,
    Setting,
    StoredEvent,
    StoredSignal,
    TaskOps,
    UnmatchedAlertRow,
    WorkLag,
)
from bot.store.sqlite_migrations import MIGRATIONS
from bot.store.sqlite_tasks import (
    APPROVAL_COLUMNS,
    PLAYBOOK_RUNS_SQL,
    TASK_COLUMNS,
    TOOL_RUNS_SQL,
    TaskTx,
    approval_from_row,
    read_guard,
    step_from_row,
    steps_query,
    task_from_row,
)
from bot.store.sqlite_writer import GroupCommitWriter, Tx

log = structlog.get_logger(__name__)
T = TypeVar("T")

# The engine's setting (bot/loop/engine.py CURSOR_KEY): every signal at or behind it was grouped.
ENGINE_CURSOR = "engine.cursor"
MIN_SQLITE = (3, 35, 0)  # RETURNING and the upsert syntax we use
# What /readyz's lag reads, in one statement: each part walks an index (signals_by_seq, the
# steps_running partial index) or a table that holds only waiting rows (outbox). Both backends
# run it; they differ only in placeholders and the integer type (bot/store/postgres.py).
WORK_LAG_TEMPLATE = """
WITH engine AS (SELECT coalesce((SELECT CAST(value AS {integer}) FROM settings WHERE key = {key}), 0) AS seq)
SELECT (SELECT count(*) FROM (SELECT 1 FROM signals WHERE seq > (SELECT seq FROM engine) LIMIT {limit}) AS behind),
       (SELECT updated_at FROM signals WHERE seq > (SELECT seq FROM engine) ORDER BY seq LIMIT 1),
       (SELECT count(*) FROM outbox), (SELECT min(created_at) FROM outbox),
       (SELECT count(*) FROM steps WHERE state = 'running'),
       (SELECT min(started_at) FROM steps WHERE state = 'running')
"""
WORK_LAG_SQL = WORK_LAG_TEMPLATE.format(integer="INTEGER", key="?", limit="?")
# Page size for new stores (SQLite's default is 4 KiB). Every alert lands at a random place in
# the dedup index, so at 1,600 rows a commit nearly each row dirties an index page of its own,
# and a commit costs a write per dirty page to the log and again at the checkpoint. Larger pages
# are shared by more of a batch's rows: at 100 alerts per request, 16 KiB stored 14% more
# alerts/s with 14% less CPU per alert (bench/intake.py, alternating runs). At 1 alert per
# request a commit of a few rows writes larger pages; that moved within the noise (perhaps 10%
# lower), as did p99 at a fixed 1,000 req/s. SQLite fixes the page size when it creates the
# file, so a store created with another page size keeps it.
PAGE_SIZE = 16 * 1024


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def to_signal_row(signal: Signal, received_at: str) -> list[Any]:
    """A signals row without its seq, which the writer appends at commit time.

    ``raw`` is stored without the labels and annotations it repeats (they have their own
    columns); ``raw_signals_of_task`` puts them back. Half the bytes, one encoding less per alert.
    """
    raw = signal.raw
    moved = [key for key in _COLUMNS_IN_RAW if raw.get(key) == getattr(signal, key)]
    if moved:
        raw = {k: v for k, v in raw.items() if k not in moved}
        raw[MOVED_TO_COLUMNS] = moved
    return [
        # StrEnum members bind as their text: no `.value` (an Enum property lookup) per alert.
        signal.id, signal.source, signal.fingerprint, signal.status, signal.severity,
        signal.title, dumps(signal.labels), dumps(signal.annotations),
        signal.starts_at.isoformat() if signal.starts_at else None,
        signal.ends_at.isoformat() if signal.ends_at else None,
        signal.url, dumps(raw), received_at, received_at,
    ]


_COLUMNS_IN_RAW = ("labels", "annotations")
MOVED_TO_COLUMNS = "_ooda_moved_to_columns"  # which raw keys live in their own columns


class SqliteStore:
    def __init__(self, path: Path, bus: EventBus, *, synchronous: str = "full",
                 audit_key: bytes | None = None, queue_size: int = 10_000, cache_mib: int = 16) -> None:
        self.path = path
        self.bus = bus
        self._synchronous = synchronous.upper()
        self._audit_key = audit_key
        self._queue_size = queue_size
        self._cache_kib = cache_mib * 1024
        self._write_conn: aiosqlite.Connection | None = None
        self._read_conn: aiosqlite.Connection | None = None
        self._writer: GroupCommitWriter | None = None
        self._leases: dict[str, asyncio.Lock] = {}

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        if sqlite3.sqlite_version_info < MIN_SQLITE:
            raise StoreUnavailable(
                f"SQLite {sqlite3.sqlite_version} is too old; Ooda needs {'.'.join(map(str, MIN_SQLITE))} or newer"
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves (the writer batches transactions).
        # check_same_thread=False: the writer writes a batch's rows from the event loop's thread
        # and everything else on aiosqlite's, never both at once (see GroupCommitWriter._commit).
        self._write_conn = await aiosqlite.connect(self.path, isolation_level=None, check_same_thread=False)
        await self._write_conn.execute(f"PRAGMA page_size={PAGE_SIZE}")  # before WAL: new files only
        await self._pragmas(self._write_conn)
        await self._write_conn.execute("PRAGMA journal_mode=WAL")
        await self._migrate(self._write_conn)
        self._read_conn = await aiosqlite.connect(self.path, isolation_level=None)
        await self._pragmas(self._read_conn)
        await self._read_conn.execute("PRAGMA query_only=ON")
        last_seq, last_hash = await self._audit_head()
        signal_seq = (await self._one("SELECT coalesce(max(seq), 0) FROM signals"))[0]
        self._writer = GroupCommitWriter(
            self._write_conn, AuditChain(last_seq, last_hash, self._audit_key), self.bus, signal_seq,
            self._queue_size,
        )
        self._writer.start()
        log.info("store.opened", path=str(self.path), synchronous=self._synchronous, sqlite=sqlite3.sqlite_version)

    async def close(self) -> None:
        """Drain pending writes, then close both connections. Idempotent."""
        if self._writer is not None:
            await self._writer.stop()
            self._writer = None
        for conn in (self._read_conn, self._write_conn):
            if conn is not None:
                await conn.close()
        self._read_conn = self._write_conn = None

    async def _pragmas(self, conn: aiosqlite.Connection) -> None:
        await conn.execute(f"PRAGMA synchronous={self._synchronous}")
        await conn.execute("PRAGMA busy_timeout=5000")
        await conn.execute("PRAGMA foreign_keys=ON")
        await conn.execute(f"PRAGMA cache_size=-{self._cache_kib}")  # negative: KiB, not pages

    async def _migrate(self, conn: aiosqlite.Connection) -> None:
        await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        async with conn.execute("SELECT coalesce(max(version), 0) FROM schema_version") as cur:
            row = await cur.fetchone()
        current = row[0] if row else 0
        if current > len(MIGRATIONS):
            raise StoreUnavailable(
                f"{self.path} has schema version {current}, newer than this Ooda ({len(MIGRATIONS)}); upgrade Ooda"
            )
        for version, sql in enumerate(MIGRATIONS[current:], start=current + 1):
            await conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _split_sql(sql):
                    await conn.execute(statement)
                await conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
                await conn.execute("COMMIT")
            except Exception:
                await conn.execute("ROLLBACK")
                raise
            log.info("store.migrated", version=version)

    async def audit_head(self) -> tuple[int, str]:
        """(seq, hash) of the newest audit record: what operators keep a copy of elsewhere."""
        return await self._audit_head()

    async def _audit_head(self) -> tuple[int, str]:
        row = await self._one("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
        return (row[0], row[1]) if row else (0, GENESIS)

    # -- plumbing ------------------------------------------------------------------------------

    @property
    def writer(self) -> GroupCommitWriter:
        if self._writer is None:
            raise StoreUnavailable("the store is not open")
        return self._writer

    @property
    def queue_depth(self) -> int:
        return self._writer.depth if self._writer else 0

    async def transact(self, fn: Callable[[TaskOps], Awaitable[T]]) -> T:
        """Run ``fn`` with domain operations inside the next transaction; returns after the commit."""

        async def unit(tx: Tx) -> T:
            return await fn(TaskTx(tx))

        return await self.writer.transact(unit)

    async def _one(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        conn = self._read_conn or self._write_conn
        if conn is None:
            raise StoreUnavailable("the store is not open")
        async with conn.execute(sql, params) as cur:
            return await cur.fetchone()

    async def _all(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        conn = self._read_conn
        if conn is None:
            raise StoreUnavailable("the store is not open")
        async with conn.execute(sql, params) as cur:
            return list(await cur.fetchall())

    # -- signals -------------------------------------------------------------------------------

    async def ingest_signals(self, signals: list[Signal], audit: AuditEntry) -> list[str]:
        """Upsert signals by id (dedup by fingerprint) plus one audit record; returns after commit."""
        received = now_iso()
        await self.writer.upsert_signals([to_signal_row(s, received) for s in signals], audit, signals)
        return [s.id for s in signals]

    async def purge_signals(self, before: str, page: int = 5000) -> int:
        """Delete signals that joined no task and were last delivered before ``before`` (ISO);
        returns how many. A delivery gives its signal the next seq and ``updated_at`` alike, so
        walking the seq index from the start visits signals oldest first and stops at the first
        one delivered after the cutoff, without scanning the table. Each page of deletions is its
        own short transaction, so intake is held up for a page at a time, not for the whole purge.
        """
        deleted, after = 0, 0
        while True:
            rows = await self._all("SELECT seq, updated_at FROM signals WHERE seq > ? ORDER BY seq LIMIT ?",
                                   (after, page))
            old = [seq for seq, updated_at in rows if updated_at < before]
            if old:
                deleted += await self.writer.transact(functools.partial(
                    _delete_unused_signals, first=old[0], last=old[-1], before=before))
            if not rows or len(old) < len(rows):
                break  # the rest was delivered after the cutoff
            after = rows[-1][0]
        return deleted

    async def task_ids_of_signals(self, signal_ids: list[str]) -> dict[str, int | None]:
        """The task each stored signal belongs to (None: not in a task yet)."""
        found: dict[str, int | None] = {}
        for start in range(0, len(signal_ids), 500):  # SQLite's bound-parameter limit
            chunk = signal_ids[start:start + 500]
            rows = await self._all(
                f"SELECT id, task_id FROM signals WHERE id IN ({', '.join('?' * len(chunk))})", tuple(chunk))
            found.update({r[0]: r[1] for r in rows})
        return found

    async def signal_count(self) -> int:
        return (await self._one("SELECT count(*) FROM signals"))[0]

    async def signals_after(self, seq: int, limit: int = 500) -> list[StoredSignal]:
        rows = await self._all(
            "SELECT id, seq, source, fingerprint, status, severity, title, labels, annotations, starts_at, "
            "ends_at, url, task_id FROM signals WHERE seq > ? ORDER BY seq LIMIT ?",
            (seq, limit),
        )
        return [_stored_signal(r) for r in rows]

    async def signals_of_task(self, task_id: int, limit: int = 50) -> list[StoredSignal]:
        rows = await self._all(
            "SELECT id, seq, source, fingerprint, status, severity, title, labels, annotations, starts_at, "
            "ends_at, url, task_id FROM signals WHERE task_id = ? ORDER BY seq LIMIT ?",
            (task_id, limit),
        )
        return [_stored_signal(r) for r in rows]

    async def raw_signals_of_task(self, task_id: int, limit: int | None = None) -> list[RawSignal]:
        """Each signal's raw payload as the source sent it (labels and annotations put back)."""
        rows = await self._all(
            "SELECT id, raw, labels, annotations FROM signals WHERE task_id = ? ORDER BY seq LIMIT ?",
            (task_id, -1 if limit is None else limit))
        out = []
        for signal_id, raw_text, labels_text, annotations_text in rows:
            raw = loads(raw_text)
            columns = {"labels": labels_text, "annotations": annotations_text}
            for key in raw.pop(MOVED_TO_COLUMNS, []):
                raw[key] = loads(columns[key])
            out.append(RawSignal(signal_id, raw))
        return out

    # -- settings ------------------------------------------------------------------------------

    async def get_setting(self, key: str) -> Setting | None:
        row = await self._one("SELECT value, updated_at, updated_by FROM settings WHERE key = ?", (key,))
        return Setting(key, loads(row[0]), row[1], row[2]) if row else None

    async def guard(self, query: GuardQuery) -> GuardState:
        """The kill switch and run counts as committed now (inside a unit of work: ``TaskOps.guard``)."""
        conn = self._read_conn
        if conn is None:
            raise StoreUnavailable("the store is not open")
        return await read_guard(conn, query)

    async def heartbeat(self) -> None:
        """A real write through the writer: what /readyz checks."""

        async def write(tx: Tx) -> None:
            await tx.execute(
                "INSERT INTO settings (key, value, updated_at, updated_by) VALUES ('heartbeat', '0', ?, 'readyz') "
                "ON CONFLICT(key) DO UPDATE SET updated_at = excluded.updated_at",
                (now_iso(),),
            )

        await self.writer.transact(write)

    async def work_lag(self) -> WorkLag:
        row = await self._one(WORK_LAG_SQL, (ENGINE_CURSOR, LAG_COUNT_MAX))
        return work_lag_from_row(row)

    # -- audit and events ----------------------------------------------------------------------

    async def audit_rows(self, task_id: int | None = None) -> AsyncIterator[AuditRow]:
        """Audit records in storage order; all of them, or one task's."""
        conn = self._read_conn
        if conn is None:
            raise StoreUnavailable("the store is not open")
        sql = f"SELECT {AUDIT_COLUMNS} FROM audit"
        params: tuple[Any, ...] = ()
        if task_id is not None:
            sql += " WHERE task_id = ?"
            params = (task_id,)
        async with conn.execute(sql + " ORDER BY rowid", params) as cur:
            async for row in cur:
                yield AuditRow(*row)

    async def last_event_id(self) -> int:
        return int((await self._one("SELECT coalesce(max(id), 0) FROM events"))[0])

    async def events_after(self, event_id: int, limit: int) -> list[StoredEvent]:
        rows = await self._all(
            "SELECT id, task_id, name, payload, correlation_id, created_at FROM events "
            "WHERE id > ? ORDER BY id LIMIT ?",
            (event_id, limit),
        )
        return [StoredEvent(r[0], r[1], r[2], loads(r[3]), r[4], r[5]) for r in rows]

    async def events_of_task(self, task_id: int) -> list[StoredEvent]:
        rows = await self._all(
            "SELECT id, task_id, name, payload, correlation_id, created_at FROM events WHERE task_id = ? ORDER BY id",
            (task_id,),
        )
        return [StoredEvent(r[0], r[1], r[2], loads(r[3]), r[4], r[5]) for r in rows]


    # -- tasks (reads) --------------------------------------------------------------------------

    async def get_task(self, task_id: int) -> Task | None:
        row = await self._one(f"SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?", (task_id,))
        return task_from_row(row) if row else None

    async def list_tasks(self, *, open_only: bool = True, limit: int = 50,
                         playbook_ids: list[str] | None = None) -> list[Task]:
        clauses: list[str] = []
        params: tuple[Any, ...] = ()
        if open_only:
            states = sorted(s.value for s in ATTENTION_STATES)
            clauses.append(f"state IN ({', '.join('?' * len(states))})")
            params += tuple(states)
        if playbook_ids is not None:
            clauses.append(f"playbook_id IN ({', '.join('?' * len(playbook_ids))})")
            params += tuple(playbook_ids)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = await self._all(f"SELECT {TASK_COLUMNS} FROM tasks {where} ORDER BY id DESC LIMIT ?", (*params, limit))
        return [task_from_row(r) for r in rows]

    async def tasks_in_states(self, states: list[str]) -> list[Task]:
        rows = await self._all(
            f"SELECT {TASK_COLUMNS} FROM tasks WHERE state IN ({', '.join('?' * len(states))}) ORDER BY id",
            tuple(states),
        )
        return [task_from_row(r) for r in rows]

    async def tasks_since(self, since: str) -> list[Task]:
        rows = await self._all(f"SELECT {TASK_COLUMNS} FROM tasks WHERE created_at >= ? ORDER BY id", (since,))
        return [task_from_row(r) for r in rows]

    async def steps_of_task(self, task_id: int, kind: str | None = None) -> list[StepRecord]:
        return [step_from_row(r) for r in await self._all(*steps_query(task_id, kind))]

    async def approvals_of_task(self, task_id: int) -> list[ApprovalRecord]:
        rows = await self._all(f"SELECT {APPROVAL_COLUMNS} FROM approvals WHERE task_id = ? ORDER BY id", (task_id,))
        return [approval_from_row(r) for r in rows]

    async def tool_runs_since(self, tool: str, since: str) -> tuple[int, int]:
        """(runs, failures) of write/read steps of ``tool`` started since ``since`` (not dry runs)."""
        row = await self._one(TOOL_RUNS_SQL, (tool, since))
        return int(row[0]), int(row[1])

    async def playbook_runs_since(self, playbook_id: str, since: str) -> tuple[int, int]:
        """(runs, failed runs) of a playbook since ``since``: tasks that executed a step, and those where one failed.

        A run is a task, not a step, so a rate limit of "3 per hour" means three incidents.
        """
        row = await self._one(PLAYBOOK_RUNS_SQL, (playbook_id, since))
        return int(row[0]), int(row[1])

    async def outbox_items(self, limit: int = 100) -> list[OutboxItem]:
        rows = await self._all(
            "SELECT id, task_id, surface, note, attempts, last_error FROM outbox ORDER BY id LIMIT ?", (limit,)
        )
        return [OutboxItem(*r) for r in rows]

    def lease(self, name: str) -> asyncio.Lock:
        """One process owns a SQLite store, so a lock of this process is the whole lease."""
        return self._leases.setdefault(name, asyncio.Lock())

    async def noisiest_alerts(self, since: str, limit: int = 5) -> list[tuple[str, int]]:
        rows = await self._all(
            "SELECT coalesce(json_extract(labels, '$.alertname'), title), sum(deliveries) AS n FROM signals "
            "WHERE received_at >= ? GROUP BY 1 ORDER BY n DESC LIMIT ?",
            (since, limit),
        )
        return [(r[0] or "(untitled)", int(r[1])) for r in rows]

    async def steps_held_by_live_processes(self, step_ids: list[int]) -> set[int]:
        """One ``ooda serve`` per SQLite store: a running step at its start was left by a crash."""
        return set()

    async def audit_page(self, *, task_id: int | None = None, actor: str | None = None, tool: str | None = None,
                         before_seq: int | None = None, limit: int = 100) -> list[tuple[Any, ...]]:
        """Audit records newest first (the console's audit viewer), each filter optional.

        Walks the primary key backwards from ``before_seq``, so a page costs ``limit`` rows when
        nothing is filtered; a task filter uses ``audit_by_task``.
        """
        clauses, params = [], []
        filters = (("task_id = ?", task_id), ("actor = ?", actor), ("json_extract(data, '$.tool') = ?", tool),
                   ("seq < ?", before_seq))
        for clause, value in filters:
            if value is not None:
                clauses.append(clause)
                params.append(value)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = await self._all(f"SELECT {AUDIT_COLUMNS} FROM audit {where} ORDER BY seq DESC LIMIT ?",
                               (*params, limit))
        return [tuple(r) for r in rows]

    async def task_summaries(self, states: list[str], limit: int = 500) -> list[dict[str, Any]]:
        """Riskiest first, then oldest. Three fields of each plan are read inside SQLite, with one
        parse of the plan per task (one ``json_extract`` with three paths), instead of decoding
        whole plans (evidence, dry runs) in Python: the console's inbox lists hundreds of tasks
        every few seconds."""
        rows = await self._all(
            "SELECT id, playbook_id, state, title, environment, severity, signal_count, created_at, updated_at, "
            "outcome, json_extract(proposal, '$.risk.score', '$.risk.band', '$.approvals_required') "
            f"FROM tasks WHERE state IN ({', '.join('?' * len(states))})", tuple(states))
        keys = ("id", "playbook_id", "state", "title", "environment", "severity", "signal_count", "created_at",
                "updated_at", "outcome")
        summaries = []
        for row in rows:
            score, band, approvals = loads(row[10]) if row[10] else (None, None, None)
            summaries.append({**dict(zip(keys, row[:10], strict=True)), "risk_score": score or 0,
                              "risk_band": band or "low", "approvals_required": approvals or 0})
        summaries.sort(key=lambda t: (-_BAND_RANK.get(t["risk_band"], 0), -t["risk_score"], t["id"]))
        return summaries[:limit]

    async def task_outcomes_by_playbook(self) -> dict[str, dict[str, int]]:
        counts: dict[str, dict[str, int]] = {}
        for playbook_id, state, n in await self._all(
                "SELECT playbook_id, state, count(*) FROM tasks GROUP BY playbook_id, state"):
            counts.setdefault(playbook_id, {})[state] = int(n)
        return counts

    async def digest_figures(self, days: list[DayWindow]) -> Figures:
        # A read connection of its own: on a large store the figures over signals scan the table
        # for seconds (bench/digest.py), and every API read would wait behind them on the shared one.
        if self._read_conn is None:
            raise StoreUnavailable("the store is not open")
        async with aiosqlite.connect(self.path, isolation_level=None) as conn:
            await self._pragmas(conn)
            await conn.execute("PRAGMA query_only=ON")

            async def query(sql: str, params: tuple[Any, ...]) -> list[Any]:
                async with conn.execute(sql, params) as cur:
                    return list(await cur.fetchall())

            return await compute_figures(query, days)

    async def unmatched_signals(self, since: str, limit: int = 100) -> tuple[list[UnmatchedAlertRow], int]:
        """Signals no playbook matched, by alert name, last delivered at or after ``since`` (ISO).

        Unmatched means: in no task, and at or behind the engine's saved cursor, so the engine
        has looked at the signal already (one it has not reached yet may still start a task).
        The cursor is saved every few seconds, so the newest alerts show up after that.

        Returns:
            (rows, names): up to ``limit`` rows, most signals first, each ``{"alertname", "count"
            (signals), "deliveries", "first_seen", "last_seen", "source" (every source, comma
            separated), "severity" and "example_labels" (of the latest signal)}``; and how many
            alert names there are in all.
        """
        rows = await self._all(
            "WITH unmatched AS ("
            " SELECT coalesce(json_extract(labels, '$.alertname'), nullif(title, ''), '(untitled)') AS alertname,"
            " count(*) AS n, sum(deliveries) AS deliveries, min(received_at) AS first_seen,"
            " max(updated_at) AS last_seen, group_concat(DISTINCT source) AS sources, max(seq) AS example,"
            " count(*) OVER () AS names"
            " FROM signals WHERE task_id IS NULL AND updated_at >= ?"
            " AND seq <= coalesce((SELECT CAST(value AS INTEGER) FROM settings WHERE key = ?), 0)"
            " GROUP BY 1 ORDER BY n DESC, last_seen DESC, alertname LIMIT ?) "
            "SELECT u.alertname, u.n, u.deliveries, u.first_seen, u.last_seen, u.sources, u.names, s.severity,"
            " s.labels FROM unmatched u JOIN signals s ON s.seq = u.example"
            " ORDER BY u.n DESC, u.last_seen DESC, u.alertname",
            (since, ENGINE_CURSOR, limit),
        )
        alerts = [UnmatchedAlertRow(alertname=r[0], count=int(r[1]), deliveries=int(r[2]), first_seen=r[3],
                                    last_seen=r[4], source=", ".join(sorted(set(r[5].split(",")))), severity=r[7],
                                    example_labels=loads(r[8])) for r in rows]
        return alerts, int(rows[0][6]) if rows else 0


_BAND_RANK = {"critical": 4, "high": 3, "medium": 2, "low": 1}


def _stored_signal(row: Any) -> StoredSignal:
    return StoredSignal(seq=row[1], task_id=row[12], signal=signal_from_row({
        "source": row[2], "fingerprint": row[3], "status": row[4], "severity": row[5], "title": row[6],
        "labels": loads(row[7]), "annotations": loads(row[8]), "starts_at": row[9], "ends_at": row[10],
        "url": row[11],
    }))


def work_lag_from_row(row: Any) -> WorkLag:
    """``WORK_LAG_SQL``'s one row (either backend's) as the port's model."""
    return WorkLag(signals_ungrouped=Backlog(int(row[0]), row[1]), outbox_pending=Backlog(int(row[2]), row[3]),
                   steps_running=Backlog(int(row[4]), row[5]))


def _split_sql(script: str) -> list[str]:
    """Split a migration into statements, keeping trigger bodies (BEGIN ... END;) whole."""
    statements, current = [], []
    for line in script.splitlines():
        if not line.strip() or line.strip().startswith("--"):
            continue
        current.append(line)
        text = "\n".join(current).strip()
        if text.endswith(";") and (not text.upper().startswith("CREATE TRIGGER") or text.upper().endswith("END;")):
            statements.append(text)
            current = []
    if current:
        statements.append("\n".join(current))
    return statements


async def _delete_unused_signals(tx: Tx, *, first: int, last: int, before: str) -> int:
    cursor = await tx.execute(
        "DELETE FROM signals WHERE seq BETWEEN ? AND ? AND task_id IS NULL AND updated_at < ?", (first, last, before))
    count = cursor.rowcount
    if count:
        tx.audit(AuditEntry("system", "signals.purged", None, {"count": count, "delivered_before": before}))
    return count
