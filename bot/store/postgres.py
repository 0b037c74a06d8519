"""The PostgreSQL store: every store port on a pool of asyncpg connections.

For teams that run PostgreSQL already and want Ooda on more than one machine. Writes take one
transaction-scoped advisory lock (``WRITE_LOCK``) before anything else: the audit chain and the
signal numbering continue from what is committed, in commit order, whichever replica writes,
exactly as SQLite's single writer gives. Reads take no lock. Migrations run at open, under their
own advisory lock, so replicas starting together migrate once.

A connection failure is ``StoreUnavailable`` (intake answers 503 and senders retry); asyncpg's
pool opens new connections when PostgreSQL is back. With several hosts in the URL (a primary and
its standbys, bot/store_url.py) each new connection goes through the list again and keeps the
writable one: after a failover the connections to the old primary fail, and their replacements
reach the promoted server.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

import asyncpg
import structlog

from bot.audit.chain import AUDIT_COLUMNS, GENESIS, AuditChain, AuditEntry, current_correlation_id
from bot.errors import StoreUnavailable
from bot.jsoncodec import dumps, loads
from bot.model.events import SIGNALS_STORED, Event, EventBus
from bot.model.signals import Signal, signal_from_row
from bot.model.steps import StepRecord
from bot.model.tasks import ATTENTION_STATES, ApprovalRecord, Task
from bot.store.digest_figures import DayWindow, Figures, compute_figures
from bot.store.ports import (
    LAG_COUNT_MAX,
    AuditRow,
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
from bot.store.postgres_digest_figures import POSTGRESQL
from bot.store.postgres_leases import lease
from bot.store.postgres_migrations import MIGRATIONS
from bot.store.postgres_owner import CLAIM_WAIT_S, OwnerLock, OwnerLockLost, hand_over, live_steps
from bot.store.postgres_tasks import PLAYBOOK_RUNS_SQL, TOOL_RUNS_SQL, PgTaskTx, read_guard, steps_query
from bot.store.sqlite import (
    ENGINE_CURSOR,
    MOVED_TO_COLUMNS,
    WORK_LAG_TEMPLATE,
    now_iso,
    to_signal_row,
    work_lag_from_row,
)
from bot.store.sqlite_tasks import APPROVAL_COLUMNS, TASK_COLUMNS, approval_from_row, step_from_row, task_from_row

log = structlog.get_logger(__name__)
T = TypeVar("T")
P = ParamSpec("P")

WRITE_LOCK = 0x4F4F4441  # "OODA": every write transaction holds it (pg_advisory_xact_lock)
MIGRATE_LOCK = 0x4F4F4442
# A refused connection, a dropped one, a server shutting down or starting up: the store is down,
# not the request wrong. InternalClientError covers two faces of a failover: every listed host up
# and none writable (TargetServerAttributeNotMatched), and a pooled connection whose server said
# "terminating connection" while it was idle, handed out before asyncpg has seen the socket close
# (its protocol refuses the next query: "another operation is in progress").
UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError, asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError, asyncpg.CrashShutdownError, asyncpg.InternalClientError, TimeoutError,
)
SIGNAL_UPSERT = """
INSERT INTO signals (id, source, fingerprint, status, severity, title, labels, annotations,
                     starts_at, ends_at, url, raw, received_at, updated_at, seq)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
ON CONFLICT (id) DO UPDATE SET
    seq = excluded.seq, status = excluded.status, severity = excluded.severity, title = excluded.title,
    labels = excluded.labels, annotations = excluded.annotations, starts_at = excluded.starts_at,
    ends_at = excluded.ends_at, url = excluded.url, raw = excluded.raw, updated_at = excluded.updated_at,
    deliveries = signals.deliveries + 1
"""
# The same upsert for a whole batch in one statement, its columns passed as arrays: PostgreSQL
# plans and starts one statement instead of one per row, so the write lock is held for less time
# (27-31% more alerts/s at 100 alerts per request on one replica, in alternating runs). One
# statement may not update a row twice, so a batch naming one signal twice takes the row-by-row
# statement above.
SIGNAL_UPSERT_BATCH = """
INSERT INTO signals (id, source, fingerprint, status, severity, title, labels, annotations,
                     starts_at, ends_at, url, raw, received_at, updated_at, seq)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                     $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[],
                     $15::bigint[])
""" + SIGNAL_UPSERT[SIGNAL_UPSERT.index("ON CONFLICT"):]
SUMMARY_KEYS = ("id", "playbook_id", "state", "title", "environment", "severity", "signal_count", "created_at",
                "updated_at", "outcome")
BAND_RANK = {"critical": 4, "high": 3, "medium": 2, "low": 1}  # as SqliteStore ranks them: riskiest first
WORK_LAG_SQL = WORK_LAG_TEMPLATE.format(integer="BIGINT", key="$1", limit="$2")  # see bot/store/sqlite.py
SIGNAL_COLUMNS = ("id, seq, source, fingerprint, status, severity, title, labels, annotations, starts_at, "
                  "ends_at, url, task_id")


def _unavailable(fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    """Turn a lost connection into ``StoreUnavailable``, naming the failure but never the URL."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(*args, **kwargs)
        except UNAVAILABLE as exc:
            raise StoreUnavailable(f"PostgreSQL is unavailable ({type(exc).__name__}: {exc}); "
                                   "nothing from this request was kept") from exc

    return wrapper


class PostgresStore:
    def __init__(self, dsn: str, bus: EventBus, *, password: str | None = None, audit_key: bytes | None = None,
                 min_size: int = 2, max_size: int = 10) -> None:
        self._dsn = dsn
        self._password = password
        self.bus = bus
        self._audit_key = audit_key
        self._min_size, self._max_size = min_size, max_size
        self._pool: asyncpg.Pool | None = None
        # Recorded on the steps this process runs and the tasks it drives (bot/store/postgres_owner.py).
        self.owner_lock = OwnerLock(self.connect)

    # -- lifecycle -----------------------------------------------------------------------------

    @_unavailable
    async def open(self) -> None:
        # synchronous_commit on whatever the server's default: a write is acknowledged (a 202) only
        # once its commit is on disk, as SQLite's synchronous=FULL gives.
        self._pool = await asyncpg.create_pool(self._dsn, password=self._password, min_size=self._min_size,
                                               max_size=self._max_size, command_timeout=30,
                                               server_settings={"synchronous_commit": "on"},
                                               reset=_keep_session)
        async with self.pool.acquire() as conn:
            await migrate(conn)
            version = await conn.fetchval("SHOW server_version")
        await self.owner_lock.take()
        log.info("store.opened", backend="postgresql", server=version)

    async def close(self) -> None:
        await self.owner_lock.release()
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def connect(self) -> asyncpg.Connection:
        """A connection outside the pool, for the ones that hold the leader's and the owner's locks."""
        return await asyncpg.connect(self._dsn, password=self._password, timeout=10)

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreUnavailable("the store is not open")
        return self._pool

    @property
    def queue_depth(self) -> int:
        """Writers waiting for the write lock are PostgreSQL's queue, not ours: nothing queues here."""
        return 0

    @_unavailable
    async def heartbeat(self) -> None:
        async def write(t: TaskOps) -> None:
            await t.set_setting("heartbeat", 0, "readyz")

        await self._write(write)  # not self.transact: a heartbeat is timed as one, not also as a unit of work

    @_unavailable
    async def work_lag(self) -> WorkLag:
        return work_lag_from_row(await self.pool.fetchrow(WORK_LAG_SQL, ENGINE_CURSOR, LAG_COUNT_MAX))

    # -- writes --------------------------------------------------------------------------------

    async def _write(self, fn: Callable[[PgTaskTx], Awaitable[T]]) -> tuple[T, list[Event]]:
        """One unit of work; a step claim made while the owner lock is being taken again waits
        for it a moment (``CLAIM_WAIT_S``) and is tried once more, else refused (``OwnerLockLost``)
        with its task handed over to the leader."""
        try:
            return await self._write_once(fn)
        except OwnerLockLost as lost:
            if await self.owner_lock.wait_held(CLAIM_WAIT_S):
                return await self._write_once(fn)
            log.error("owner.claim_refused", owner=lost.owner, step_id=lost.step_id)
            with contextlib.suppress(*UNAVAILABLE):  # PostgreSQL is gone too: a restart resumes the task
                async with self.pool.acquire() as conn:
                    if await hand_over(conn, lost.step_id, lost.owner):
                        log.warning("owner.task_handed_over", owner=lost.owner, step_id=lost.step_id)
            raise

    async def _write_once(self, fn: Callable[[PgTaskTx], Awaitable[T]]) -> tuple[T, list[Event]]:
        correlation_id = current_correlation_id()
        lock = self.owner_lock
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", WRITE_LOCK)
            tx = PgTaskTx(conn, lock.number, may_claim=lambda: lock.held)
            result = await fn(tx)
            await self._seal(conn, tx.audits, tx.events, correlation_id)
        return result, tx.events

    async def _seal(self, conn: asyncpg.Connection, audits: list[AuditEntry], events: list[Event],
                    correlation_id: str | None) -> None:
        """Chain the audit entries to the committed head and store them and the events."""
        if audits:
            head = await conn.fetchrow("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
            chain = AuditChain(head[0], head[1], self._audit_key) if head else AuditChain(0, GENESIS, self._audit_key)
            records = []
            for entry in audits:
                if entry.correlation_id is None and correlation_id:
                    entry = AuditEntry(entry.actor, entry.action, entry.task_id, entry.data, correlation_id, entry.at)
                records.append(chain.seal(entry).as_row())
            await conn.executemany(
                f"INSERT INTO audit ({AUDIT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)", records)
        if events:
            await conn.executemany(
                "INSERT INTO events (task_id, name, payload, correlation_id, created_at) VALUES ($1, $2, $3, $4, $5)",
                [(e.task_id, e.name, dumps(e.payload), correlation_id, e.at.isoformat()) for e in events])

    @_unavailable
    async def transact(self, fn: Callable[[TaskOps], Awaitable[T]]) -> T:
        result, events = await self._write(fn)
        for event in events:
            self.bus.publish(event)
        return result

    @_unavailable
    async def ingest_signals(self, signals: list[Signal], audit: AuditEntry) -> list[str]:
        received = now_iso()
        stored: list[tuple[int, Signal]] = []

        async def unit(tx: PgTaskTx) -> int:
            seq = int(await tx.conn.fetchval("SELECT coalesce(max(seq), 0) FROM signals"))
            rows = []
            for signal in signals:
                seq += 1
                rows.append([*to_signal_row(signal, received), seq])
                stored.append((seq, signal))
            if len(rows) > 1 and len({s.id for s in signals}) == len(signals):
                await tx.conn.execute(SIGNAL_UPSERT_BATCH, *(list(column) for column in zip(*rows, strict=True)))
            else:
                await tx.conn.executemany(SIGNAL_UPSERT, rows)
            tx.audit(audit)
            return seq

        max_seq, _ = await self._write(unit)
        self.bus.publish(Event(SIGNALS_STORED, payload={"max_seq": max_seq, "signals": stored}))
        return [s.id for s in signals]

    @_unavailable
    async def purge_signals(self, before: str, page: int = 5000) -> int:
        deleted, after = 0, 0
        while True:
            rows = await self.pool.fetch("SELECT seq, updated_at FROM signals WHERE seq > $1 ORDER BY seq LIMIT $2",
                                         after, page)
            old = [r[0] for r in rows if r[1] < before]
            if old:
                count, _ = await self._write(functools.partial(_delete_unused, first=old[0], last=old[-1],
                                                               before=before))
                deleted += count
            if not rows or len(old) < len(rows):
                break
            after = rows[-1][0]
        return deleted

    # -- signals -------------------------------------------------------------------------------

    @_unavailable
    async def signal_count(self) -> int:
        return int(await self.pool.fetchval("SELECT count(*) FROM signals"))

    @_unavailable
    async def task_ids_of_signals(self, signal_ids: list[str]) -> dict[str, int | None]:
        rows = await self.pool.fetch("SELECT id, task_id FROM signals WHERE id = ANY($1::text[])", signal_ids)
        return {r[0]: r[1] for r in rows}

    @_unavailable
    async def signals_after(self, seq: int, limit: int = 500) -> list[StoredSignal]:
        rows = await self.pool.fetch(f"SELECT {SIGNAL_COLUMNS} FROM signals WHERE seq > $1 ORDER BY seq LIMIT $2",
                                     seq, limit)
        return [_stored_signal(r) for r in rows]

    @_unavailable
    async def signals_of_task(self, task_id: int, limit: int = 50) -> list[StoredSignal]:
        rows = await self.pool.fetch(
            f"SELECT {SIGNAL_COLUMNS} FROM signals WHERE task_id = $1 ORDER BY seq LIMIT $2", task_id, limit)
        return [_stored_signal(r) for r in rows]

    @_unavailable
    async def raw_signals_of_task(self, task_id: int, limit: int | None = None) -> list[RawSignal]:
        rows = await self.pool.fetch(
            "SELECT id, raw, labels, annotations FROM signals WHERE task_id = $1 ORDER BY seq LIMIT $2", task_id,
            limit)
        out = []
        for signal_id, raw_text, labels_text, annotations_text in rows:
            raw = loads(raw_text)
            columns = {"labels": labels_text, "annotations": annotations_text}
            for key in raw.pop(MOVED_TO_COLUMNS, []):
                raw[key] = loads(columns[key])
            out.append(RawSignal(signal_id, raw))
        return out

    @_unavailable
    async def noisiest_alerts(self, since: str, limit: int = 5) -> list[tuple[str, int]]:
        rows = await self.pool.fetch(
            "SELECT coalesce(labels::jsonb ->> 'alertname', title), sum(deliveries) AS n FROM signals "
            "WHERE received_at >= $1 GROUP BY 1 ORDER BY n DESC LIMIT $2", since, limit)
        return [(r[0] or "(untitled)", int(r[1])) for r in rows]

    @_unavailable
    async def unmatched_signals(self, since: str, limit: int = 100) -> tuple[list[UnmatchedAlertRow], int]:
        """See ``SqliteStore.unmatched_signals``; names sort bytewise (COLLATE "C") as in SQLite."""
        rows = await self.pool.fetch(
            "WITH unmatched AS ("
            " SELECT coalesce(labels::jsonb ->> 'alertname', nullif(title, ''), '(untitled)')"
            ' COLLATE "C" AS alertname,'
            " count(*) AS n, sum(deliveries) AS deliveries, min(received_at) AS first_seen,"
            " max(updated_at) AS last_seen, string_agg(DISTINCT source, ',') AS sources, max(seq) AS example,"
            " count(*) OVER () AS names"
            " FROM signals WHERE task_id IS NULL AND updated_at >= $1"
            " AND seq <= coalesce((SELECT CAST(value AS BIGINT) FROM settings WHERE key = $2), 0)"
            " GROUP BY 1 ORDER BY n DESC, last_seen DESC, alertname LIMIT $3) "
            "SELECT u.alertname, u.n, u.deliveries, u.first_seen, u.last_seen, u.sources, u.names, s.severity,"
            " s.labels FROM unmatched u JOIN signals s ON s.seq = u.example"
            " ORDER BY u.n DESC, u.last_seen DESC, u.alertname",
            since, ENGINE_CURSOR, limit)
        alerts = [UnmatchedAlertRow(alertname=r[0], count=int(r[1]), deliveries=int(r[2]), first_seen=r[3],
                                    last_seen=r[4], source=", ".join(sorted(set(r[5].split(",")))), severity=r[7],
                                    example_labels=loads(r[8])) for r in rows]
        return alerts, int(rows[0][6]) if rows else 0

    # -- tasks, steps, approvals -------------------------------------------------------------------

    @_unavailable
    async def get_task(self, task_id: int) -> Task | None:
        row = await self.pool.fetchrow(f"SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1", task_id)
        return task_from_row(row) if row else None

    @_unavailable
    async def list_tasks(self, *, open_only: bool = True, limit: int = 50,
                         playbook_ids: list[str] | None = None) -> list[Task]:
        clauses: list[str] = []
        params: list[Any] = []
        if open_only:
            params.append(sorted(s.value for s in ATTENTION_STATES))
            clauses.append(f"state = ANY(${len(params)}::text[])")
        if playbook_ids is not None:
            params.append(playbook_ids)
            clauses.append(f"playbook_id = ANY(${len(params)}::text[])")
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        params.append(limit)
        rows = await self.pool.fetch(f"SELECT {TASK_COLUMNS} FROM tasks {where} ORDER BY id DESC LIMIT ${len(params)}",
                                     *params)
        return [task_from_row(r) for r in rows]

    @_unavailable
    async def tasks_in_states(self, states: list[str]) -> list[Task]:
        rows = await self.pool.fetch(f"SELECT {TASK_COLUMNS} FROM tasks WHERE state = ANY($1::text[]) ORDER BY id",
                                     states)
        return [task_from_row(r) for r in rows]

    @_unavailable
    async def tasks_since(self, since: str) -> list[Task]:
        rows = await self.pool.fetch(f"SELECT {TASK_COLUMNS} FROM tasks WHERE created_at >= $1 ORDER BY id", since)
        return [task_from_row(r) for r in rows]

    @_unavailable
    async def playbook_runs_since(self, playbook_id: str, since: str) -> tuple[int, int]:
        row = await self.pool.fetchrow(PLAYBOOK_RUNS_SQL, playbook_id, since)
        return int(row[0]), int(row[1])

    @_unavailable
    async def steps_of_task(self, task_id: int, kind: str | None = None) -> list[StepRecord]:
        sql, params = steps_query(task_id, kind)
        return [step_from_row(r) for r in await self.pool.fetch(sql, *params)]

    @_unavailable
    async def tool_runs_since(self, tool: str, since: str) -> tuple[int, int]:
        row = await self.pool.fetchrow(TOOL_RUNS_SQL, tool, since)
        return int(row[0]), int(row[1])

    @_unavailable
    async def steps_held_by_live_processes(self, step_ids: list[int]) -> set[int]:
        async with self.pool.acquire() as conn:
            return await live_steps(conn, step_ids)

    @_unavailable
    async def approvals_of_task(self, task_id: int) -> list[ApprovalRecord]:
        rows = await self.pool.fetch(f"SELECT {APPROVAL_COLUMNS} FROM approvals WHERE task_id = $1 ORDER BY id",
                                     task_id)
        return [approval_from_row(r) for r in rows]

    # -- audit, events, outbox, settings ----------------------------------------------------------

    async def audit_rows(self, task_id: int | None = None) -> AsyncIterator[AuditRow]:
        sql = f"SELECT {AUDIT_COLUMNS} FROM audit"
        params: tuple[Any, ...] = ()
        if task_id is not None:
            sql, params = sql + " WHERE task_id = $1", (task_id,)
        try:
            async with self.pool.acquire() as conn, conn.transaction(readonly=True):
                async for row in conn.cursor(sql + " ORDER BY seq", *params):
                    yield AuditRow(*row)
        except UNAVAILABLE as exc:
            raise StoreUnavailable(f"PostgreSQL is unavailable ({type(exc).__name__})") from exc

    @_unavailable
    async def audit_head(self) -> tuple[int, str]:
        row = await self.pool.fetchrow("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
        return (int(row[0]), str(row[1])) if row else (0, GENESIS)

    @_unavailable
    async def events_of_task(self, task_id: int) -> list[StoredEvent]:
        rows = await self.pool.fetch(
            "SELECT id, task_id, name, payload, correlation_id, created_at FROM events WHERE task_id = $1 "
            "ORDER BY id", task_id)
        return [StoredEvent(r[0], r[1], r[2], loads(r[3]), r[4], r[5]) for r in rows]

    @_unavailable
    async def last_event_id(self) -> int:
        return int(await self.pool.fetchval("SELECT coalesce(max(id), 0) FROM events"))

    @_unavailable
    async def events_after(self, event_id: int, limit: int) -> list[StoredEvent]:
        rows = await self.pool.fetch(
            "SELECT id, task_id, name, payload, correlation_id, created_at FROM events WHERE id > $1 "
            "ORDER BY id LIMIT $2", event_id, limit)
        return [StoredEvent(r[0], r[1], r[2], loads(r[3]), r[4], r[5]) for r in rows]

    @_unavailable
    async def outbox_items(self, limit: int = 100) -> list[OutboxItem]:
        rows = await self.pool.fetch(
            "SELECT id, task_id, surface, note, attempts, last_error FROM outbox ORDER BY id LIMIT $1", limit)
        return [OutboxItem(*r) for r in rows]

    def lease(self, name: str) -> contextlib.AbstractAsyncContextManager[None]:
        """See ``bot/store/postgres_leases.py``."""
        return lease(self.pool, name)

    @_unavailable
    async def get_setting(self, key: str) -> Setting | None:
        row = await self.pool.fetchrow("SELECT value, updated_at, updated_by FROM settings WHERE key = $1", key)
        return Setting(key, loads(row[0]), row[1], row[2]) if row else None

    @_unavailable
    async def guard(self, query: GuardQuery) -> GuardState:
        async with self.pool.acquire() as conn:
            return await read_guard(conn, query)

    # -- the console and the digest --------------------------------------------------------------

    @_unavailable
    async def audit_page(self, *, task_id: int | None = None, actor: str | None = None, tool: str | None = None,
                         before_seq: int | None = None, limit: int = 100) -> list[tuple[Any, ...]]:
        """See ``SqliteStore.audit_page``: the primary key walked backwards from ``before_seq``."""
        clauses: list[str] = []
        params: list[Any] = []
        filters = (("task_id = ${}", task_id), ("actor = ${}", actor), ("(data::jsonb ->> 'tool') = ${}", tool),
                   ("seq < ${}", before_seq))
        for clause, value in filters:
            if value is not None:
                params.append(value)
                clauses.append(clause.format(len(params)))
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        params.append(limit)
        rows = await self.pool.fetch(
            f"SELECT {AUDIT_COLUMNS} FROM audit {where} ORDER BY seq DESC LIMIT ${len(params)}", *params)
        return [tuple(r) for r in rows]

    @_unavailable
    async def task_summaries(self, states: list[str], limit: int = 500) -> list[dict[str, Any]]:
        """See ``SqliteStore.task_summaries``: three fields of each plan read in the database."""
        rows = await self.pool.fetch(
            "SELECT id, playbook_id, state, title, environment, severity, signal_count, created_at, updated_at, "
            "outcome, p -> 'risk' -> 'score', p -> 'risk' ->> 'band', p -> 'approvals_required' "
            "FROM (SELECT *, proposal::jsonb AS p FROM tasks WHERE state = ANY($1::text[])) t", states)
        summaries = []
        for row in rows:
            # asyncpg hands jsonb over as its text
            score = loads(row[10]) if row[10] is not None else None
            band = row[11]
            approvals = loads(row[12]) if row[12] is not None else None
            summaries.append({**dict(zip(SUMMARY_KEYS, row[:10], strict=True)), "risk_score": score or 0,
                              "risk_band": band or "low", "approvals_required": approvals or 0})
        summaries.sort(key=lambda t: (-BAND_RANK.get(t["risk_band"], 0), -t["risk_score"], t["id"]))
        return summaries[:limit]

    @_unavailable
    async def task_outcomes_by_playbook(self) -> dict[str, dict[str, int]]:
        counts: dict[str, dict[str, int]] = {}
        for playbook_id, state, n in await self.pool.fetch(
                "SELECT playbook_id, state, count(*) FROM tasks GROUP BY playbook_id, state"):
            counts.setdefault(playbook_id, {})[state] = int(n)
        return counts

    @_unavailable
    async def digest_figures(self, days: list[DayWindow]) -> Figures:
        # One snapshot for every figure (repeatable read), so they agree with each other while
        # intake keeps writing; read-only, so it never takes the write lock.
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            async def query(sql: str, params: tuple[Any, ...]) -> list[Any]:
                return list(await conn.fetch(sql, *params))

            return await compute_figures(query, days, POSTGRESQL)


async def migrate(conn: asyncpg.Connection) -> int:
    """Apply the migrations this database lacks, one transaction each; returns the version."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATE_LOCK)
        await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    current = int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_version"))
    if current > len(MIGRATIONS):
        raise StoreUnavailable(f"the database has schema version {current}, newer than this Ooda "
                               f"({len(MIGRATIONS)}); upgrade Ooda")
    for version, sql in enumerate(MIGRATIONS, start=1):
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATE_LOCK)
            # Read again under the lock: another replica may have applied it meanwhile.
            if int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_version")) >= version:
                continue
            await conn.execute(sql)
            await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", version)
            log.info("store.migrated", backend="postgresql", version=version)
    return len(MIGRATIONS)


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Return a connection to the pool as it is (asyncpg has already rolled back any transaction).

    asyncpg's default resets the session on every release, one more round trip per store call
    (an approval makes dozens). Nothing here leaves session state on a pooled connection: locks
    are transaction-scoped, cursors live inside transactions, settings are fixed at connect, the
    session-level locks (leader, owner) are held on connections of their own, and a lease unlocks
    its connection before giving it back, or closes it (bot/store/postgres_leases.py).
    """


def _stored_signal(row: Any) -> StoredSignal:
    return StoredSignal(seq=row[1], task_id=row[12], signal=signal_from_row({
        "source": row[2], "fingerprint": row[3], "status": row[4], "severity": row[5], "title": row[6],
        "labels": loads(row[7]), "annotations": loads(row[8]), "starts_at": row[9], "ends_at": row[10],
        "url": row[11],
    }))


async def _delete_unused(tx: PgTaskTx, *, first: int, last: int, before: str) -> int:
    status = await tx.conn.execute(
        "DELETE FROM signals WHERE seq BETWEEN $1 AND $2 AND task_id IS NULL AND updated_at < $3", first, last, before)
    count = int(status.rsplit(" ", 1)[-1])
    if count:
        tx.audit(AuditEntry("system", "signals.purged", None, {"count": count, "delivered_before": before}))
    return count
