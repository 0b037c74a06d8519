"""The Signal: one normalized alert or request, with its fingerprint and dedup rule.

Every alert source turns its payload into Signals. Two deliveries of the same alert share a
fingerprint, and therefore a signal id, so storing a Signal is an upsert: a resolved delivery
updates the firing one instead of adding a second row.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class SignalStatus(StrEnum):
    firing = "firing"
    resolved = "resolved"

    @classmethod
    def of(cls, value: str) -> SignalStatus:
        """The member for ``value``; a dict lookup, where ``SignalStatus(value)`` costs a
        microsecond per alert in Enum's machinery. Raises ValueError like the constructor."""
        try:
            return _STATUSES[value]
        except KeyError:
            raise ValueError(f"{value!r} is not a valid SignalStatus") from None


class Severity(StrEnum):
    critical = "critical"
    warning = "warning"
    info = "info"

    @classmethod
    def of(cls, value: str) -> Severity:
        """Like ``SignalStatus.of``: the member for one of our own values."""
        try:
            return _SEVERITIES[value]
        except KeyError:
            raise ValueError(f"{value!r} is not a valid Severity") from None

    @classmethod
    def from_label(cls, value: str | None) -> Severity:
        """Map the many spellings monitoring systems use onto our three levels."""
        text = (value or "").strip().lower()
        if text in {"critical", "crit", "page", "high", "error", "p1", "p2", "sev1", "sev2"}:
            return cls.critical
        if text in {"warning", "warn", "medium", "p3", "sev3"}:
            return cls.warning
        return cls.info


_STATUSES = {member.value: member for member in SignalStatus}
_SEVERITIES = {member.value: member for member in Severity}


@dataclass(frozen=True, slots=True, kw_only=True)
class Signal:
    """One normalized alert. ``raw`` keeps the source's own record as evidence.

    A plain dataclass, not a pydantic model: adapters build Signals from vendor models that
    pydantic has just validated, and validating every field a second time cost more per alert
    than parsing the whole body. Status and severity given as strings are converted.
    """

    source: str
    fingerprint: str
    status: SignalStatus
    severity: Severity = Severity.info
    title: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    url: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)
    id: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # frozen: object.__setattr__ is how a frozen dataclass finishes its own construction.
        if type(self.status) is not SignalStatus:
            object.__setattr__(self, "status", SignalStatus.of(self.status))
        if type(self.severity) is not Severity:
            object.__setattr__(self, "severity", Severity.of(self.severity))
        # Stable id: the same alert always maps to the same stored row.
        object.__setattr__(self, "id", signal_id(self.source, self.fingerprint))


    def with_labels(self, labels: dict[str, str]) -> Signal:
        """This signal with other labels, keeping its fingerprint and id (those of the labels the
        sender sent). Intake adds derived labels to every alert, so this copies the fields as they
        are instead of constructing (and hashing the id) again."""
        clone = object.__new__(Signal)
        for name in Signal.__slots__:
            object.__setattr__(clone, name, labels if name == "labels" else getattr(self, name))
        return clone


def signal_id(source: str, fingerprint: str) -> str:
    digest = hashlib.sha256(f"{source}\x00{fingerprint}".encode()).hexdigest()
    return "sig_" + digest[:20]


def fingerprint_of(source: str, labels: dict[str, str]) -> str:
    """A stable hash of source and labels, for sources that do not fingerprint their alerts."""
    canonical = json.dumps([source, sorted(labels.items())], separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


ZERO_TIME = datetime(1, 1, 1, tzinfo=UTC)


def parse_time(value: datetime | None) -> datetime | None:
    """Alertmanager sends 0001-01-01T00:00:00Z for "not yet ended"; treat it as absent."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return None if value.year <= 1 else value


def signal_from_row(row: Mapping[str, Any]) -> Signal:
    """A Signal from a stored signals row as the store returns it (``raw`` is not loaded)."""
    return Signal(
        source=row["source"], fingerprint=row["fingerprint"], status=row["status"], severity=row["severity"],
        title=row["title"], labels=row["labels"], annotations=row["annotations"], url=row["url"],
        starts_at=datetime.fromisoformat(row["starts_at"]) if row["starts_at"] else None,
        ends_at=datetime.fromisoformat(row["ends_at"]) if row["ends_at"] else None,
    )
