"""Store contract: signals (intake, dedup, reads in seq order, raw payloads, purge)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bot.model.signals import SignalStatus
from bot.store.protocol import TaskOps
from tests.store.contract import new_task, received, signal, without_raw


async def test_ingested_signals_read_back_in_seq_order_as_typed_models(store):
    signals = [signal(n) for n in range(3)]
    assert await store.ingest_signals(signals, received(3)) == [s.id for s in signals]
    rows = await store.signals_after(0)
    assert [r.signal for r in rows] == without_raw(signals)
    assert [r.seq for r in rows] == sorted(r.seq for r in rows) and len({r.seq for r in rows}) == 3
    assert all(r.task_id is None for r in rows)
    assert [r.signal for r in await store.signals_after(rows[0].seq, limit=1)] == without_raw(signals[1:2])
    assert await store.signal_count() == 3


async def test_a_redelivery_updates_the_stored_signal_and_moves_it_to_the_end(store):
    await store.ingest_signals([signal(1), signal(2)], received(2))
    await store.ingest_signals([signal(1, SignalStatus.resolved)], received())
    rows = await store.signals_after(0)
    assert await store.signal_count() == 2
    assert [(r.signal.fingerprint, r.signal.status) for r in rows] == [("fp-2", "firing"), ("fp-1", "resolved")]


async def test_one_delivery_naming_a_signal_twice_stores_it_once_as_its_last_version(store):
    await store.ingest_signals([signal(1), signal(2), signal(1, SignalStatus.resolved)], received(3))
    rows = await store.signals_after(0)
    assert await store.signal_count() == 2
    assert [(r.signal.fingerprint, r.signal.status) for r in rows] == [("fp-2", "firing"), ("fp-1", "resolved")]


async def test_signals_of_a_task_and_their_raw_payloads(store):
    signals = [signal(n) for n in range(2)]
    await store.ingest_signals([*signals, signal(9)], received(3))
    task = await new_task(store, signal_ids=[s.id for s in signals])
    assert [r.signal for r in await store.signals_of_task(task.id)] == without_raw(signals)
    assert {r.task_id for r in await store.signals_of_task(task.id)} == {task.id}
    raw = await store.raw_signals_of_task(task.id)
    assert [r.raw for r in raw] == [s.raw for s in signals]
    first = await store.raw_signals_of_task(task.id, limit=1)  # the proposal's silence link reads only this
    assert [(r.id, r.raw) for r in first] == [(signals[0].id, signals[0].raw)]
    assert await store.task_ids_of_signals([signals[0].id, signal(9).id, "unknown"]) == {
        signals[0].id: task.id, signal(9).id: None}


async def test_purge_removes_only_old_signals_that_joined_no_task(store):
    kept_in_task, old = signal(1), signal(2)
    await store.ingest_signals([kept_in_task, old], received(2))
    await new_task(store, signal_ids=[kept_in_task.id])
    assert await store.purge_signals((datetime.now(UTC) - timedelta(hours=1)).isoformat()) == 0
    assert await store.purge_signals((datetime.now(UTC) + timedelta(seconds=1)).isoformat()) == 1
    assert [r.signal for r in await store.signals_after(0)] == without_raw([kept_in_task])


async def test_unmatched_signals_are_those_behind_the_engine_cursor_in_no_task(store):
    await store.ingest_signals([signal(1), signal(2), signal(3, alertname="Watchdog")], received(3))

    async def cursor(t: TaskOps) -> None:
        await t.set_setting("engine.cursor", 3, "engine")

    await store.transact(cursor)
    since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    rows, names = await store.unmatched_signals(since)
    assert names == 2 and [(r.alertname, r.count) for r in rows] == [("NodeClockSkewDetected", 2), ("Watchdog", 1)]
    assert rows[1].example_labels == {"alertname": "Watchdog", "n": "3"}
    assert await store.noisiest_alerts(since) == [("NodeClockSkewDetected", 2), ("Watchdog", 1)]
