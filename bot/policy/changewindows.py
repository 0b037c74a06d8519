"""Change windows (when risky changes may happen) and freezes (when no change may happen).

Public API:
    ChangeWindow      name, timezone, days, start, end ("HH:MM"), environments
    Freeze            name, start, end (aware datetimes), environments, allow_tiers, reason
    ChangeWindow.is_open(now) -> bool
    ChangeWindow.applies_to(environment) -> bool         (also on Freeze)
    open_window(windows, environment, now) -> ChangeWindow | None
    next_opening(windows, environment, now) -> datetime | None
    active_freeze(freezes, environment, now) -> Freeze | None

A window is wall-clock time in its own timezone: "sat 22:00-02:00 Europe/Berlin" opens at 22:00
local time on Saturday and closes at 02:00 local time on Sunday, whatever the UTC offset is that
night. On the night clocks spring forward a window is an hour shorter in real time, and a window
that lies wholly inside the skipped hour does not open at all; on the night they fall back it is an
hour longer. That is what people who wrote "22:00" in their change calendar mean.

An empty ``environments`` list means every environment. Pure: ``now`` is always an argument.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_serializer, field_validator, model_validator

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_ALIASES = {full: short for short, full in zip(DAY_NAMES, (
    "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"), strict=True)}
MINUTES_PER_DAY = 24 * 60


def _parse_day(text: str) -> int:
    name = text.strip().lower()
    name = _DAY_ALIASES.get(name, name)
    if name not in DAY_NAMES:
        raise ValueError(f"day {text!r} is not one of {', '.join(DAY_NAMES)}")
    return DAY_NAMES.index(name)


def _parse_days(value: object) -> list[str]:
    """Day names and ranges ("mon-fri", "sat") to short names in week order."""
    items = [value] if isinstance(value, str) else list(value)  # type: ignore[call-overload]
    picked: set[int] = set()
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"day {item!r} must be a name like mon or a range like mon-fri")
        for part in item.split(","):
            if "-" in part:
                first, last = (_parse_day(p) for p in part.split("-", 1))
                span = (last - first) % 7  # "fri-mon" wraps over the weekend
                picked.update((first + i) % 7 for i in range(span + 1))
            else:
                picked.add(_parse_day(part))
    return [DAY_NAMES[i] for i in sorted(picked)]


def _parse_minutes(value: object, *, allow_24: bool) -> int:
    """"HH:MM" to minutes since midnight.

    YAML 1.1 reads an unquoted 22:00 as the base-60 integer 1320 (but 08:00 as a string), so an
    int here is already minutes since midnight.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        minutes = value
    elif isinstance(value, str) and ":" in value:
        hours, _, mins = value.strip().partition(":")
        if not (hours.isdigit() and mins.isdigit() and len(mins) == 2 and int(mins) < 60):
            raise ValueError(f"time {value!r} must look like HH:MM, e.g. 09:30")
        minutes = int(hours) * 60 + int(mins)
    else:
        raise ValueError(f"time {value!r} must look like HH:MM, e.g. 09:30")
    limit = MINUTES_PER_DAY if allow_24 else MINUTES_PER_DAY - 1
    if not 0 <= minutes <= limit:
        raise ValueError(f"time {value!r} is outside 00:00-{'24:00' if allow_24 else '23:59'}")
    return minutes


def format_minutes(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _applies(environments: list[str], environment: str) -> bool:
    return not environments or environment in environments


class ChangeWindow(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    timezone: str = "UTC"
    days: list[str] = Field(default_factory=lambda: list(DAY_NAMES))
    start: int  # minutes since local midnight; config says "22:00"
    end: int  # minutes since local midnight, 1..1440; at or before start means the next day
    environments: list[str] = Field(default_factory=list)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"timezone {value!r} is not a known IANA zone, e.g. Europe/Berlin or UTC") from exc
        return value

    @field_validator("days", mode="before")
    @classmethod
    def _days(cls, value: object) -> list[str]:
        return _parse_days(value)

    @field_validator("start", mode="before")
    @classmethod
    def _start(cls, value: object) -> int:
        return _parse_minutes(value, allow_24=False)

    @field_validator("end", mode="before")
    @classmethod
    def _end(cls, value: object) -> int:
        return _parse_minutes(value, allow_24=True)

    @field_serializer("start", "end", when_used="json")
    def _as_clock(self, minutes: int) -> str:
        return format_minutes(minutes)

    @model_validator(mode="after")
    def _not_empty(self) -> ChangeWindow:
        if self.start == self.end:
            raise ValueError(
                f"change window {self.name!r} starts and ends at {format_minutes(self.start)}; "
                "for a whole day use start 00:00 and end 24:00"
            )
        if not self.days:
            raise ValueError(f"change window {self.name!r} has no days")
        return self

    @property
    def crosses_midnight(self) -> bool:
        return self.end <= self.start

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def applies_to(self, environment: str) -> bool:
        return _applies(self.environments, environment)

    def is_open(self, now: datetime) -> bool:
        """Whether ``now`` (aware) falls in this window. Start is inclusive, end exclusive."""
        local = now.astimezone(self.zone)
        minute = local.hour * 60 + local.minute
        today = DAY_NAMES[local.weekday()]
        yesterday = DAY_NAMES[(local.weekday() - 1) % 7]
        if not self.crosses_midnight:
            return today in self.days and self.start <= minute < self.end
        # The part after midnight belongs to the day the window started on.
        return (today in self.days and minute >= self.start) or (yesterday in self.days and minute < self.end)

    def next_opening(self, now: datetime) -> datetime | None:
        """The next instant after ``now`` at which this window opens (in the window's zone)."""
        local = now.astimezone(self.zone)
        for offset in range(8):
            day = local.date() + timedelta(days=offset)
            if DAY_NAMES[day.weekday()] not in self.days:
                continue
            opens = self._opening_on(day)
            if opens.astimezone(UTC) > now.astimezone(UTC):
                return opens
        return None

    def _opening_on(self, day: date) -> datetime:
        wall = datetime.combine(day, time(self.start // 60, self.start % 60))
        opens = wall.replace(tzinfo=self.zone)
        if opens.astimezone(UTC).astimezone(self.zone).replace(tzinfo=None) == wall:
            return opens
        # The start lies in the hour skipped when clocks spring forward: the window opens at the
        # first instant whose wall clock reads at or after the start, which is the transition.
        # The two readings of the missing time bracket it; transitions fall on whole minutes.
        instant = min(opens.astimezone(UTC), opens.replace(fold=1).astimezone(UTC))
        while instant.astimezone(self.zone).replace(tzinfo=None) < wall:
            instant += timedelta(minutes=1)
        return instant.astimezone(self.zone)

    def describe(self) -> str:
        days = ",".join(self.days) if len(self.days) < 7 else "every day"
        envs = ", ".join(self.environments) or "all environments"
        end = format_minutes(self.end) + (" next day" if self.crosses_midnight else "")
        return f"{self.name}: {days} {format_minutes(self.start)}-{end} {self.timezone} ({envs})"


class Freeze(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    start: AwareDatetime
    end: AwareDatetime
    environments: list[str] = Field(default_factory=list)
    allow_tiers: list[int] = Field(default_factory=list)  # tiers that may still change things
    reason: str = ""

    @model_validator(mode="after")
    def _ordered(self) -> Freeze:
        if self.end <= self.start:
            raise ValueError(f"freeze {self.name!r} ends ({self.end.isoformat()}) before it starts")
        if any(t not in (1, 2, 3, 4) for t in self.allow_tiers):
            raise ValueError(f"freeze {self.name!r} allow_tiers must be tiers 1-4, got {self.allow_tiers}")
        return self

    def applies_to(self, environment: str) -> bool:
        return _applies(self.environments, environment)

    def is_active(self, now: datetime) -> bool:
        return self.start <= now < self.end

    def describe(self) -> str:
        envs = ", ".join(self.environments) or "all environments"
        allowed = f"; tiers {', '.join(map(str, self.allow_tiers))} still allowed" if self.allow_tiers else ""
        why = f" ({self.reason})" if self.reason else ""
        return f"{self.name}: {self.start.isoformat()} to {self.end.isoformat()} in {envs}{allowed}{why}"


def open_window(windows: Iterable[ChangeWindow], environment: str, now: datetime) -> ChangeWindow | None:
    """The first window for ``environment`` that is open at ``now``, or None."""
    return next((w for w in windows if w.applies_to(environment) and w.is_open(now)), None)


def next_opening(windows: Iterable[ChangeWindow], environment: str, now: datetime) -> datetime | None:
    """The soonest time after ``now`` that a window for ``environment`` opens, or None if none does."""
    openings = [o for w in windows if w.applies_to(environment) and (o := w.next_opening(now)) is not None]
    # Compare in UTC: aware datetimes sharing a tzinfo compare by wall clock, which DST breaks.
    return min(openings, key=lambda o: o.astimezone(UTC), default=None)


def active_freeze(freezes: Iterable[Freeze], environment: str, now: datetime) -> Freeze | None:
    """The first freeze covering ``environment`` at ``now``, or None."""
    return next((f for f in freezes if f.applies_to(environment) and f.is_active(now)), None)
