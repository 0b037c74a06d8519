"""Store contract: the work waiting in the store (``WorkLagReads.work_lag``, what /readyz shows)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.store import postgres, sqlite
from bot.store.ports import Backlog
from bot.store.signal_claims import save_cursor
from bot.store.sqlite import ENGINE_CURSOR
from tests.store.contract import new_step, new_task, received, signal


async def test_an_empty_store_has_nothing_waiting(store):
    lag = await store.work_lag()
    assert lag.by_kind() == {"signals_ungrouped": Backlog(), "outbox_pending": Backlog(), "steps_running": Backlog()}


async def test_signals_wait_until_the_engine_cursor_passes_them_and_a_redelivery_waits_again(open_store):
    intake, other = await open_store(), await open_store()  # two processes on one store
    before = datetime.now(UTC)
    await intake.ingest_signals([signal(1), signal(2), signal(3)], received(3))
    after = datetime.now(UTC)

    waiting = (await other.work_lag()).signals_ungrouped
    assert waiting.count == 3
    assert waiting.oldest_at is not None and before <= datetime.fromisoformat(waiting.oldest_at) <= after

    second = (await intake.signals_after(0))[1].seq
    await intake.transact(lambda t: save_cursor(t, ENGINE_CURSOR, second, "engine"))
    assert (await other.work_lag()).signals_ungrouped.count == 1

    # A redelivery gives the signal the next seq: the engine reads it again, so it waits again.
    await intake.ingest_signals([signal(1)], received())
    assert (await other.work_lag()).signals_ungrouped.count == 2
    last = (await intake.signals_after(second))[-1].seq
    await intake.transact(lambda t: save_cursor(t, ENGINE_CURSOR, last, "engine"))
    assert (await other.work_lag()).signals_ungrouped == Backlog()


async def test_signals_behind_the_cursor_are_counted_up_to_the_bound(store, monkeypatch):
    for module in (sqlite, postgres):
        monkeypatch.setattr(module, "LAG_COUNT_MAX", 2)
    await store.ingest_signals([signal(n) for n in range(5)], received(5))
    assert (await store.work_lag()).signals_ungrouped.count == 2


async def test_outbox_items_wait_until_delivered(store):
    task = await new_task(store)
    before = datetime.now(UTC)
    for surface in ("slack", "discord"):
        await store.transact(lambda t, s=surface: t.add_outbox(task.id, s, None, "unreachable"))
    pending = (await store.work_lag()).outbox_pending
    assert pending.count == 2 and pending.oldest_at is not None
    assert datetime.fromisoformat(pending.oldest_at) >= before

    first, _ = await store.outbox_items()
    await store.transact(lambda t: t.remove_outbox(first.id))
    assert (await store.work_lag()).outbox_pending.count == 1


async def test_running_steps_count_from_their_claim_until_they_end(store):
    task = await new_task(store)
    steps = [await new_step(store, task.id, name=f"act{i}", idx=i) for i in range(3)]
    assert (await store.work_lag()).steps_running == Backlog()  # pending is not claimed yet

    started = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
    for offset, step_id in enumerate(steps[:2]):
        at = (started + timedelta(minutes=offset)).isoformat()
        assert await store.transact(lambda t, s=step_id, a=at: t.claim_step(s, a))
    running = (await store.work_lag()).steps_running
    assert running == Backlog(2, started.isoformat())
    assert running.age_s(started + timedelta(seconds=90)) == 90.0

    assert await store.transact(lambda t: t.set_step_state(steps[0], "running", "succeeded",
                                                           finished_at=started.isoformat()))
    assert (await store.work_lag()).steps_running == Backlog(1, (started + timedelta(minutes=1)).isoformat())


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_the_lag_reads_walk_indexes_not_tables(store):
    """SQLite's plan for the lag query: no full scan of signals or steps (they grow with history)."""
    conn = store._read_conn
    async with conn.execute(f"EXPLAIN QUERY PLAN {sqlite.WORK_LAG_SQL}", (ENGINE_CURSOR, 10)) as cur:
        plan = [row[3] for row in await cur.fetchall()]
    assert not {"SCAN signals", "SCAN steps"} & set(plan), plan
    assert "SEARCH signals USING COVERING INDEX signals_by_seq (seq>?)" in plan
    assert "SEARCH steps USING INDEX steps_running" in plan
