"""Store calls timed on the store instance (``bot/store/timing.py``), on every backend."""

from __future__ import annotations

import pytest

from bot.errors import StoreUnavailable
from bot.model.events import EventBus
from bot.store.postgres import PostgresStore
from bot.store.sqlite import SqliteStore
from bot.store.timing import OPERATIONS, time_store_calls
from tests.store.contract import received, signal


def recorder() -> tuple[list[tuple[str, float]], object]:
    calls: list[tuple[str, float]] = []
    return calls, lambda operation: lambda seconds: calls.append((operation, seconds))


def test_the_operations_are_the_store_ports_methods_every_backend_has():
    assert {"ingest_signals", "transact", "heartbeat", "work_lag", "signals_after"} <= set(OPERATIONS)
    assert not {"audit_rows", "queue_depth"} & set(OPERATIONS)  # a stream and a property: not calls to time
    for backend in (SqliteStore, PostgresStore):
        assert all(callable(getattr(backend, name)) for name in OPERATIONS), backend


async def test_each_call_is_observed_under_its_operation_even_when_it_fails(open_store, backend):
    store = await open_store()
    calls, observer = recorder()
    time_store_calls(store, observer)

    await store.ingest_signals([signal(1)], received())
    assert await store.signal_count() == 1
    assert [name for name, _ in calls] == ["ingest_signals", "signal_count"]
    assert all(seconds > 0 for _, seconds in calls)

    async def failing(_: object) -> None:
        raise RuntimeError("the unit of work failed")

    with pytest.raises(RuntimeError):
        await store.transact(failing)
    assert calls[-1][0] == "transact"

    del calls[:]
    await store.heartbeat()
    assert [name for name, _ in calls] == ["heartbeat"]  # once, not also as the unit of work inside it
    assert type(store).__name__ == {"sqlite": "SqliteStore", "postgresql": "PostgresStore"}[backend]


async def test_a_store_timed_before_it_opens_times_its_opening_and_its_refusals(tmp_path):
    store = SqliteStore(tmp_path / "ooda.db", EventBus())
    calls, observer = recorder()
    time_store_calls(store, observer)
    with pytest.raises(StoreUnavailable):
        await store.get_task(1)
    await store.open()
    await store.close()
    assert [name for name, _ in calls] == ["get_task", "open", "close"]
