"""Store contract: the digest's figures, the same numbers on every backend for the same history."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from typing import Any
from zoneinfo import ZoneInfo

from bot.model.events import EventBus
from bot.store.digest_figures import SQL, calendar_days
from bot.store.postgres import PostgresStore
from bot.store.postgres_digest_figures import PG_SQL
from bot.store.protocol import Store
from bot.store.sqlite import SqliteStore
from tests.digest_seed import DAY, EXPECTED, Seeder, busy_week, known_day

UTC = ZoneInfo("UTC")


class Statements:
    """Collects the seeder's ``?`` statements, to write them into whichever backend a test has."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, Sequence[Any]]] = []

    def execute(self, sql: str, parameters: Sequence[Any], /) -> None:
        self.rows.append((sql, parameters))


def numbered_parameters(sql: str) -> str:
    """``?`` placeholders as PostgreSQL's ``$1, $2, ...`` (the seeder writes none inside literals)."""
    count = 0

    def number(_: re.Match[str]) -> str:
        nonlocal count
        count += 1
        return f"${count}"

    return re.sub(r"\?", number, sql)


async def seed(store: Store, scenario: Any) -> None:
    statements = Statements()
    scenario(Seeder(statements))
    if isinstance(store, SqliteStore):
        with sqlite3.connect(store.path) as conn:
            for sql, params in statements.rows:
                conn.execute(sql, params)
    else:
        assert isinstance(store, PostgresStore)
        async with store.pool.acquire() as conn, conn.transaction():
            for sql, params in statements.rows:
                await conn.execute(numbered_parameters(sql), *params)


def test_every_figure_has_a_statement_in_every_dialect():
    assert set(PG_SQL) == set(SQL)


async def test_each_figure_equals_the_hand_computed_one(store):
    await seed(store, known_day)
    figures = await store.digest_figures(calendar_days(DAY, UTC))
    assert {name: figures.as_json()[name] for name in EXPECTED} == EXPECTED
    assert list(figures.noisiest_alerts) == ["HighLatency", "CPUHigh", "DiskFull"]
    assert list(figures.approvals_by_person) == ["Ana", "Bo"]


async def test_a_busy_week_gives_the_same_figures_on_both_backends(tmp_path, postgres_url):
    """Hundreds of rows over seven days: percentiles, means, top five and trends all agree."""
    sqlite, postgres = SqliteStore(tmp_path / "ooda.db", EventBus()), PostgresStore(postgres_url, EventBus())
    figures = []
    for store in (sqlite, postgres):
        await store.open()
        try:
            await seed(store, busy_week)
            figures.append((await store.digest_figures(calendar_days(DAY, ZoneInfo("Europe/Berlin")))).as_json())
        finally:
            await store.close()
    assert figures[0]["tasks"]["opened"][2] > 0 and figures[0]["time_to_resolution"]["p90_s"][2] is not None
    assert figures[0] == figures[1]
