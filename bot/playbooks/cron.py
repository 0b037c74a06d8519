"""Cron expressions for scheduled checks: read once, at playbook load, with an error a playbook
author can act on, and turned into the APScheduler trigger the scheduler runs."""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger


def cron_trigger(expression: str, timezone: str = "UTC") -> CronTrigger:
    """The trigger for a five-field crontab line (minute hour day month weekday) in ``timezone``.

    Weekdays are cron's (0 and 7 are Sunday). One difference from classic cron: when both day and
    weekday are restricted, a run needs both to hold (APScheduler's rule), not either.

    Raises:
        ValueError: naming what is wrong with the expression or the time zone.
    """
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {timezone!r}; use an IANA name such as UTC or Europe/Berlin") from None
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(f"cron {expression!r} has {len(fields)} fields; write five: minute hour day month weekday "
                         "(for example '*/15 * * * *' for every 15 minutes)")
    minute, hour, day, month, weekday = fields
    try:
        return CronTrigger(minute=minute, hour=hour, day=day, month=month, day_of_week=_weekdays(weekday),
                           timezone=zone)
    except ValueError as exc:
        raise ValueError(f"cron {expression!r} is not valid: {exc}") from None


def digest_days_trigger(at: str, days: str, timezone: str = "UTC") -> CronTrigger:
    """The trigger for ``at`` ("HH:MM") on ``days`` (APScheduler day names such as ``mon-fri``)."""
    hour, minute = (int(x) for x in at.split(":"))
    # Day names, not numbers: APScheduler 3 counts 0 as Monday, unlike cron.
    return CronTrigger(hour=hour, minute=minute, day_of_week=days, timezone=ZoneInfo(timezone))


_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]


def _weekdays(field: str) -> str:
    """Cron's weekday field as day names. Cron counts 0 (and 7) as Sunday, APScheduler 3 counts 0
    as Monday: handing it the numbers would run every "1" (Monday) check on Tuesday."""
    if field == "*":
        return field
    days: set[int] = set()
    for part in field.split(","):
        span, _, step = part.partition("/")
        if step and not step.isdigit():
            raise ValueError(f"weekday step {step!r} is not a number")
        if span == "*":
            first, last = 0, 6
        elif "-" in span:
            first, last = (_day(end) for end in span.split("-", 1))
            last = 7 if last == 0 else last  # fri-sun: Sunday closes the week
        else:
            first = _day(span)
            last = 6 if step else first
        if first > last:
            raise ValueError(f"weekday range {span!r} runs backwards")
        days.update(d % 7 for d in range(first, last + 1, int(step or 1)))
    return ",".join(_DAYS[d] for d in sorted(days))


def _day(text: str) -> int:
    name = text.lower()[:3]
    if name in _DAYS:
        return _DAYS.index(name)
    if text.isdigit() and int(text) <= 7:
        return int(text)
    raise ValueError(f"{text!r} is not a weekday: use 0-7 (0 and 7 are Sunday) or sun..sat")
