"""The digest's figures from a seeded store equal the ones worked out by hand (tests/digest_seed.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from bot.model.events import EventBus
from bot.store.digest_figures import SQL, calendar_days, rolling_days
from bot.store.sqlite import SqliteStore
from tests.digest_seed import DAY, EXPECTED, seed_known_day

UTC_ZONE = ZoneInfo("UTC")


@pytest.fixture
async def store(tmp_path):
    path = tmp_path / "ooda.db"
    await seed_known_day(path)
    store = SqliteStore(path, EventBus())
    await store.open()
    yield store
    await store.close()


@pytest.mark.parametrize("figure", sorted(EXPECTED))
async def test_each_figure_equals_the_hand_computed_one(store, figure):
    figures = (await store.digest_figures(calendar_days(DAY, UTC_ZONE))).as_json()
    assert figures[figure] == EXPECTED[figure]


async def test_the_order_of_ranked_figures_is_loudest_on_the_day_first(store):
    figures = await store.digest_figures(calendar_days(DAY, UTC_ZONE))
    assert list(figures.noisiest_alerts) == ["HighLatency", "CPUHigh", "DiskFull"]
    assert list(figures.approvals_by_person) == ["Ana", "Bo"]


def test_every_figure_is_one_statement():
    for name, sql in SQL.items():
        assert sql.count("SELECT") >= 1 and ";" not in sql, name


def test_calendar_days_follow_the_zone_and_its_daylight_saving():
    days = calendar_days(DAY.replace(month=3, day=29), ZoneInfo("Europe/Berlin"))
    assert [d.label.day for d in days] == [23, 24, 25, 26, 27, 28, 29]
    last = days[-1]  # the spring-forward day; aware datetimes in one zone subtract as wall clocks, so in UTC:
    assert (last.end.astimezone(UTC) - last.start.astimezone(UTC)).total_seconds() == 23 * 3600


def test_rolling_days_end_now_and_are_named_by_their_local_end():
    until = datetime(2026, 1, 15, 8, 0, tzinfo=UTC)
    days = rolling_days(until, ZoneInfo("Asia/Tokyo"))
    assert days[-1].end == until and days[0].start == datetime(2026, 1, 8, 8, 0, tzinfo=UTC)
    assert days[-1].label.isoformat() == "2026-01-15"
