"""The SQLite store and its group-commit writer, on a real database file in tmp_path.

A unit of work that fails at commit time (not at statement time) is made with SQLite's own
``PRAGMA defer_foreign_keys``: the orphan row is accepted by its statement and refused by COMMIT,
so the writer cannot tell from the error whose work it was and must find the item by retrying.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aiosqlite
import pytest

from bot.audit.chain import AUDIT_COLUMNS, AuditEntry, verify_chain
from bot.errors import StoreUnavailable
from bot.model.events import SIGNALS_STORED, EventBus
from bot.model.signals import Signal, SignalStatus
from bot.store import sqlite_writer
from bot.store.sqlite import PAGE_SIZE, SqliteStore
from bot.store.sqlite_tasks import TaskTx
from bot.store.sqlite_writer import Tx, WriteRefused

KEY = b"store-test-audit-key"


def signal(n: int, status: SignalStatus = SignalStatus.firing) -> Signal:
    return Signal(source="test", fingerprint=f"fp-{n}", status=status, title=f"alert {n}",
                  labels={"alertname": "NodeClockSkewDetected", "n": str(n)})


def received(source: str = "test", n: int = 1) -> AuditEntry:
    return AuditEntry(actor=f"source:{source}", action="signals.received", data={"count": n})


@pytest.fixture
async def store(tmp_path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "ooda.db", EventBus(), audit_key=KEY)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


async def query(store: SqliteStore, sql: str, params: tuple = ()) -> list[tuple]:
    """Read through a connection of our own: only committed rows are visible to it."""
    async with aiosqlite.connect(store.path) as conn, conn.execute(sql, params) as cur:
        return [tuple(r) for r in await cur.fetchall()]


async def audit_ok(store: SqliteStore) -> int:
    result = verify_chain([r async for r in store.audit_rows()], KEY)
    assert result.ok, result.reason
    return result.checked


def set_setting(key: str, *, fail: bool = False):
    async def unit(t: TaskTx) -> str:
        await t.set_setting(key, {"v": key}, "tester")
        t.audit(AuditEntry("tester", "setting.set", None, {"key": key}))
        if fail:
            raise ValueError(f"unit {key} failed after writing")
        return key

    return unit


async def orphan_approval(tx: Tx) -> None:
    """A write that every statement accepts and COMMIT refuses (deferred foreign key to no task)."""
    await tx.execute("PRAGMA defer_foreign_keys = ON")
    await tx.execute(
        "INSERT INTO approvals (task_id, actor, display, verdict, created_at) VALUES (424242, 'x', 'x', 'approve', '')"
    )
    tx.audit(AuditEntry("tester", "poison", None, {}))


async def test_concurrent_ingests_all_commit_with_distinct_ordered_seqs(store):
    results = await asyncio.gather(*(store.ingest_signals([signal(i)], received()) for i in range(300)))

    assert [ids for ids in results] == [[signal(i).id] for i in range(300)]
    rows = await query(store, "SELECT seq FROM signals ORDER BY seq")
    assert [r[0] for r in rows] == list(range(1, 301))  # the engine's cursor relies on gap-free seqs
    assert await audit_ok(store) == 300


async def test_signals_stored_is_published_only_after_the_rows_are_committed(store):
    committed_when_published: list[tuple[int, int]] = []

    def on_stored(event) -> None:
        # A separate connection sees only committed rows; the bus calls subscribers inline.
        with contextlib.closing(sqlite3.connect(store.path)) as conn:
            count = conn.execute("SELECT count(*) FROM signals").fetchone()[0]
        committed_when_published.append((event.payload["max_seq"], count))

    store.bus.subscribe(SIGNALS_STORED, on_stored)
    await asyncio.gather(*(store.ingest_signals([signal(i)], received()) for i in range(5)))

    assert committed_when_published
    assert all(max_seq == count for max_seq, count in committed_when_published)
    assert committed_when_published[-1] == (5, 5)


async def test_same_fingerprint_is_one_row_and_resolved_updates_it(store):
    await store.ingest_signals([signal(1)], received())
    await store.ingest_signals([signal(1)], received())
    await store.ingest_signals([signal(1, SignalStatus.resolved)], received())

    rows = await query(store, "SELECT id, status, deliveries FROM signals")
    assert rows == [(signal(1).id, "resolved", 3)]
    assert await store.signal_count() == 1


async def test_a_failing_unit_rolls_back_alone_and_its_neighbours_commit(store):
    units = [set_setting("a"), set_setting("b"), set_setting("bad", fail=True), set_setting("c")]
    results = await asyncio.gather(*(store.transact(u) for u in units), return_exceptions=True)

    assert results[:2] == ["a", "b"] and results[3] == "c"
    assert isinstance(results[2], ValueError) and "unit bad failed" in str(results[2])
    keys = {r[0] for r in await query(store, "SELECT key FROM settings")}
    assert keys == {"a", "b", "c"}
    actions = [(r[0], r[1]) for r in await query(store, "SELECT action, data FROM audit ORDER BY seq")]
    assert [a for a, _ in actions] == ["setting.set"] * 3
    assert all('"bad"' not in d for _, d in actions)  # no audit record for work that did not happen
    assert await audit_ok(store) == 3


async def test_an_item_refused_at_commit_fails_alone_and_its_neighbours_commit(store):
    await store.transact(set_setting("before"))
    audit_before = len(await query(store, "SELECT seq FROM audit"))
    published: list[int] = []
    store.bus.subscribe(SIGNALS_STORED, lambda event: published.append(event.payload["max_seq"]))

    work = [
        store.ingest_signals([signal(1)], received()),
        store.transact(set_setting("neighbour")),
        store.writer.transact(orphan_approval),
        store.ingest_signals([signal(2), signal(3)], received(n=2)),
    ]
    results = await asyncio.gather(*work, return_exceptions=True)

    # Only the caller whose own work SQLite refused is told; it gets the reason, and nothing of it stays.
    assert results[0] == [signal(1).id] and results[1] == "neighbour"
    assert results[3] == [signal(2).id, signal(3).id]
    assert isinstance(results[2], WriteRefused) and isinstance(results[2], StoreUnavailable)
    assert "FOREIGN KEY" in str(results[2]) and "nothing from it was kept" in str(results[2])
    assert store.writer.healthy is True
    assert await query(store, "SELECT id FROM approvals") == []
    assert {r[0] for r in await query(store, "SELECT key FROM settings")} == {"before", "neighbour"}
    # Retried rows are numbered once: gap-free seqs, each published once, and an unbroken chain.
    assert [r[0] for r in await query(store, "SELECT seq FROM signals ORDER BY seq")] == [1, 2, 3]
    assert sorted(published) == sorted(set(published)) and published[-1] == 3
    assert await audit_ok(store) == audit_before + 3
    assert not any(r[0] == "poison" for r in await query(store, "SELECT action FROM audit"))


async def test_an_audit_record_past_sqlites_integers_fails_only_its_own_request(store):
    """GET /api/v1/tasks/99999999999999999999999 once wrote such a record and failed the
    webhooks that shared its batch."""

    async def overflowing(tx: Tx) -> None:
        tx.audit(AuditEntry("hostile", "api.read", 99999999999999999999999, {}))

    results = await asyncio.gather(*(store.ingest_signals([signal(i)], received()) for i in range(30)),
                                   store.transact(overflowing), return_exceptions=True)

    assert results[:30] == [[signal(i).id] for i in range(30)]
    assert isinstance(results[30], WriteRefused) and "64-bit" in str(results[30])
    assert await store.signal_count() == 30
    assert await audit_ok(store) == 30


async def test_a_request_with_a_signal_refused_by_sqlite_keeps_nothing_and_the_chain_resumes(store):
    await store.ingest_signals([signal(1)], received())
    broken = Signal(source="test", fingerprint="fp-broken", status=SignalStatus.firing, title=None)  # type: ignore[arg-type]

    results = await asyncio.gather(store.ingest_signals([signal(2), broken], received(n=2)),  # one row fails
                                   store.ingest_signals([signal(3)], received()), return_exceptions=True)

    assert isinstance(results[0], WriteRefused) and "NOT NULL" in str(results[0])
    assert results[1] == [signal(3).id]
    assert store.writer.healthy is True
    rows = await query(store, "SELECT id, seq FROM signals ORDER BY seq")
    assert rows == [(signal(1).id, 1), (signal(3).id, 2)]  # signal 2 went with its request; no seq is lost
    assert await audit_ok(store) == 2


async def test_a_flood_of_large_requests_is_committed_in_batches_of_bounded_size(store, monkeypatch):
    monkeypatch.setattr(sqlite_writer, "MAX_BATCH_ROWS", 250)
    sizes: list[int] = []
    store.bus.subscribe(SIGNALS_STORED, lambda event: sizes.append(len(event.payload["signals"])))

    await asyncio.gather(*(store.ingest_signals([signal(100 * r + i) for i in range(100)], received(n=100))
                           for r in range(10)))

    assert sum(sizes) == 1000 and max(sizes) <= 300  # a batch stops growing once it holds 250 rows
    assert await store.signal_count() == 1000


async def test_one_batch_with_two_deliveries_of_an_alert_keeps_one_row(store):
    await store.ingest_signals([signal(7), signal(7, SignalStatus.resolved)], received(n=2))

    assert await query(store, "SELECT status, deliveries FROM signals") == [("resolved", 2)]


async def test_heartbeat_is_a_real_committed_write(store):
    await store.heartbeat()
    assert (await store.get_setting("heartbeat")).updated_by == "readyz"
    assert await query(store, "SELECT key FROM settings") == [("heartbeat",)]


async def test_stopped_writer_refuses_writes_and_reads_still_work(store):
    await store.ingest_signals([signal(1)], received())
    await store.writer.stop()

    with pytest.raises(StoreUnavailable, match="not running"):
        await store.ingest_signals([signal(2)], received())
    with pytest.raises(StoreUnavailable):
        await store.heartbeat()
    assert await store.signal_count() == 1


async def test_reopen_continues_the_signal_seq_and_the_audit_chain(tmp_path):
    path = tmp_path / "ooda.db"
    first = SqliteStore(path, EventBus(), audit_key=KEY)
    await first.open()
    await first.ingest_signals([signal(1), signal(2)], received(n=2))
    await first.close()
    await first.close()  # idempotent

    second = SqliteStore(path, EventBus(), audit_key=KEY)
    await second.open()
    try:
        await second.ingest_signals([signal(3)], received())
        seqs = await query(second, "SELECT id, seq FROM signals ORDER BY seq")
        assert seqs == [(signal(1).id, 1), (signal(2).id, 2), (signal(3).id, 3)]
        assert await audit_ok(second) == 2
        rows = await query(second, f"SELECT {AUDIT_COLUMNS} FROM audit ORDER BY seq")
        assert rows[1][7] == rows[0][8]  # prev_hash of the record after the restart
    finally:
        await second.close()


async def test_newer_schema_than_this_code_refuses_to_open(tmp_path):
    path = tmp_path / "ooda.db"
    s = SqliteStore(path, EventBus())
    await s.open()
    await s.close()
    async with aiosqlite.connect(path) as conn:
        await conn.execute("INSERT INTO schema_version (version) VALUES (999)")
        await conn.commit()

    newer = SqliteStore(path, EventBus())
    with pytest.raises(StoreUnavailable, match="schema version 999"):
        await newer.open()
    await newer.close()


async def test_audit_table_refuses_update_and_delete(store):
    await store.ingest_signals([signal(1)], received())
    async with aiosqlite.connect(store.path) as conn:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            await conn.execute("UPDATE audit SET actor = 'mallory'")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            await conn.execute("DELETE FROM audit")
    assert await audit_ok(store) == 1


async def test_new_stores_get_large_pages_and_an_existing_store_keeps_its_own(tmp_path, store):
    assert await query(store, "PRAGMA page_size") == [(PAGE_SIZE,)]

    older = tmp_path / "older.db"  # as the store was created before PAGE_SIZE: SQLite's default
    with contextlib.closing(sqlite3.connect(older)) as conn:
        conn.execute("PRAGMA page_size=4096")
        conn.execute("PRAGMA journal_mode=WAL")
    reopened = SqliteStore(older, EventBus(), audit_key=KEY)
    await reopened.open()
    try:
        await reopened.ingest_signals([signal(1), signal(2)], received(n=2))
        assert await query(reopened, "PRAGMA page_size") == [(4096,)]
        assert await reopened.signal_count() == 2
        assert await audit_ok(reopened) == 1
    finally:
        await reopened.close()


async def test_purge_deletes_old_signals_of_no_task_page_by_page_and_keeps_the_rest(store):
    await store.ingest_signals([signal(n) for n in range(1, 6)], received(n=5))
    in_task = await store.transact(lambda t: t.create_task(
        playbook_id="p", playbook_version="1", group_key="p:n=1", title="one", environment="dev", severity="info",
        requester="test", args={}, signal_ids=[signal(1).id], last_signal_at=None))
    cutoff = datetime.now(UTC).isoformat()
    await store.ingest_signals([signal(2), signal(6)], received(n=2))  # 2 delivered again, 6 is new

    assert await store.purge_signals(cutoff, page=2) == 3  # 3, 4 and 5, over several pages
    kept = await query(store, "SELECT id, task_id FROM signals ORDER BY seq")
    assert kept == [(signal(1).id, in_task.id), (signal(2).id, None), (signal(6).id, None)]
    assert await store.purge_signals(cutoff, page=2) == 0
    purged = [json.loads(row[6]) async for row in store.audit_rows() if row[3] == "signals.purged"]
    assert sum(p["count"] for p in purged) == 3 and {p["delivered_before"] for p in purged} == {cutoff}
    assert await audit_ok(store) > 0
