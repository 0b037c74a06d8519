"""Cron lines for scheduled checks, read with cron's weekdays (0 and 7 are Sunday)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bot.playbooks.cron import cron_trigger

SUNDAY_NOON = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def next_days(expression: str, count: int = 3) -> list[str]:
    trigger, after, days = cron_trigger(expression), SUNDAY_NOON, []
    for _ in range(count):
        after = trigger.get_next_fire_time(None, after)
        days.append(after.strftime("%a"))
        after = after.replace(hour=23, minute=59)
    return days


@pytest.mark.parametrize(("expression", "days"), [
    ("0 9 * * 1", ["Mon", "Mon", "Mon"]),
    ("0 9 * * 0", ["Sun", "Sun", "Sun"]),
    ("0 9 * * 7", ["Sun", "Sun", "Sun"]),
    ("0 9 * * 1-5", ["Mon", "Tue", "Wed"]),
    ("0 9 * * fri-sun", ["Fri", "Sat", "Sun"]),
    ("0 9 * * 5-7", ["Fri", "Sat", "Sun"]),
    ("0 9 * * */3", ["Wed", "Sat", "Sun"]),
    ("0 9 * * 2,4", ["Tue", "Thu", "Tue"]),
])
def test_weekdays_are_crons_not_apschedulers(expression, days):
    assert next_days(expression) == days


@pytest.mark.parametrize(("expression", "timezone", "problem"), [
    ("* * * *", "UTC", "has 4 fields; write five"),
    ("0 9 * * 8", "UTC", "'8' is not a weekday"),
    ("0 9 * * 5-1", "UTC", "runs backwards"),
    ("0 24 * * *", "UTC", "is not valid"),
    ("0 9 * * *", "Mars/Olympus", "unknown time zone"),
])
def test_mistakes_are_named(expression, timezone, problem):
    with pytest.raises(ValueError, match=problem):
        cron_trigger(expression, timezone)
