"""Backends the store contract tests run against.

``backend`` is parametrized by name; each test gets ``open_store``, which opens a store instance on
one fresh database of that backend. Call it twice for two instances on the same database: they
stand for two processes sharing the store (separate connections and writers).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from bot.model.events import EventBus
from bot.store.postgres import PostgresStore
from bot.store.protocol import Store
from bot.store.sqlite import SqliteStore

KEY = b"contract-test-audit-key"
BACKENDS = ["sqlite", "postgresql"]

OpenStore = Callable[[], Awaitable[Store]]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def open_store(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[OpenStore]:
    # The PostgreSQL server starts only for the tests that ask for it.
    url = await request.getfixturevalue("postgres_server").new_database() if backend == "postgresql" else None
    async with contextlib.AsyncExitStack() as stack:
        async def opened() -> Store:
            store: Store
            if backend == "sqlite":
                store = SqliteStore(tmp_path / "ooda.db", EventBus(), audit_key=KEY)
            elif url is not None:
                store = PostgresStore(url, EventBus(), audit_key=KEY)
            else:  # pragma: no cover - every backend is listed in BACKENDS
                raise AssertionError(f"unknown backend {backend}")
            await store.open()
            stack.push_async_callback(store.close)
            return store

        yield opened


@pytest.fixture
async def store(open_store: OpenStore) -> Store:
    return await open_store()
