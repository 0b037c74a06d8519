"""/readyz's lag of the work waiting in the store, its gauges, and the store's call timings on /metrics."""

from __future__ import annotations

import time

from prometheus_client.parser import text_string_to_metric_families

from bot.model.events import EventBus
from bot.store.sqlite import SqliteStore
from bot.store.timing import OPERATIONS
from tests.bot.web.test_api import metric, proposed_task, served
from tests.store.contract import received, signal

NOTHING_WAITS = {kind: {"count": 0, "oldest_s": 0.0} for kind in ("signals_ungrouped", "outbox_pending",
                                                                   "steps_running")}


async def test_readyz_shows_the_signals_no_engine_grouped_yet_and_stays_ready(tmp_path):
    async with served(tmp_path) as (app, http):
        await proposed_task(app, http)  # grouped: the transaction that made the task moved the cursor
        ready = await http.get("/readyz")
        assert ready.status_code == 200 and ready.json()["lag"] == NOTHING_WAITS

        # Signals written by another process on the same store: this engine never hears of them.
        other = SqliteStore(app.settings.store_target.path, EventBus())
        await other.open()
        try:
            stored_at = time.monotonic()
            await other.ingest_signals([signal(n) for n in range(3)], received(3))
        finally:
            await other.close()

        ready = await http.get("/readyz")
        lag = ready.json()["lag"]
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        assert lag["signals_ungrouped"]["count"] == 3
        assert 0.0 <= lag["signals_ungrouped"]["oldest_s"] <= time.monotonic() - stored_at + 0.01
        assert lag["outbox_pending"] == lag["steps_running"] == {"count": 0, "oldest_s": 0.0}
        assert await metric(http, "ooda_work_items", kind="signals_ungrouped") == 3
        assert await metric(http, "ooda_work_items", kind="steps_running") == 0

        # A store that does not answer leaves no figures behind that are no longer true.
        await app.store.close()
        assert "ooda_work_items{" not in (await http.get("/metrics")).text


async def test_every_store_call_is_timed_by_backend_and_operation(tmp_path):
    async with served(tmp_path) as (app, http):
        await proposed_task(app, http)
        await http.get("/readyz")
        assert await metric(http, "ooda_store_seconds_count", backend="sqlite", operation="ingest_signals") == 1
        assert await metric(http, "ooda_store_seconds_count", backend="sqlite", operation="heartbeat") == 1
        assert await metric(http, "ooda_store_seconds_count", backend="sqlite", operation="transact") > 0
        assert await metric(http, "ooda_store_seconds_sum", backend="sqlite", operation="transact") > 0

        series = [s for family in text_string_to_metric_families((await http.get("/metrics")).text)
                  for s in family.samples if s.name == "ooda_store_seconds_count"]
        assert {s.labels["backend"] for s in series} == {"sqlite"}
        assert {s.labels["operation"] for s in series} <= set(OPERATIONS)
        assert type(app.store) is SqliteStore  # timed on the instance: the store keeps its type
