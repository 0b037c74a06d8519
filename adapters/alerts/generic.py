"""Generic JSON webhook: our own schema for anything that is not Alertmanager, Grafana or PagerDuty.

One alert per request::

    {
      "source": "cron-check",              required; the sending system, 1-100 chars [A-Za-z0-9._-]
      "external_id": "backup-2026-01-05",  required; the sender's id for this alert (dedup key)
      "status": "firing",                  required; "firing" | "resolved"
      "severity": "warning",               required; "critical" | "warning" | "info"
      "title": "Nightly backup missing",   required; a longer one than 4 KiB is cut, not refused
      "summary": "No backup since 03:00",  optional; becomes annotations.summary
      "labels": {"service": "backup"},     optional; string -> string (values over 4 KiB are cut)
      "annotations": {"runbook": "..."},   optional; string -> string
      "starts_at": "2026-01-05T03:10:00Z", optional; RFC 3339 with a UTC offset
      "ends_at": null,                     optional; RFC 3339 with a UTC offset
      "url": "https://..."                 optional; http(s) link back to the sender
    }

Unknown fields are rejected, so a misspelt field fails loudly instead of being dropped.

The Signal's source is ``generic``: a sender cannot pose as another alert source. The sender's
``source`` becomes the ``source`` label (playbooks match on it) and prefixes the fingerprint,
``"{source}:{external_id}"``, so a firing and a later resolved request update the same Signal.

Signing (``auth: hmac``): send ``X-Ooda-Timestamp: <Unix seconds>`` and
``X-Ooda-Signature: v1=<hex HMAC-SHA256(secret, "{timestamp}:{raw body}")>``. Requests more than
``max_skew_s`` (300 s) away from the server's clock are refused. Several comma-separated ``v1=``
entries are accepted so a secret can be rotated without downtime.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, ClassVar, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from adapters.alerts.payloads import Labels, validate_body
from adapters.alerts.signatures import (
    check_timestamp,
    hmac_sha256_hex,
    matches_any,
    require_header,
    versioned_entries,
)
from bot.errors import ConfigError, InvalidPayload, Unauthorized
from bot.model.signals import Severity, Signal, SignalStatus

# Strict: only RFC 3339 strings; pydantic would otherwise also read bare numbers as Unix times.
Timestamp = Annotated[AwareDatetime, Field(strict=True)]


class GenericAlert(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._-]+$")]
    external_id: Annotated[str, StringConstraints(min_length=1, max_length=1024)]
    status: Literal["firing", "resolved"]
    severity: Literal["critical", "warning", "info"]
    # Any length: intake cuts it at intake.max_value_bytes rather than lose the alert (bot/intake/value_cuts.py).
    title: Annotated[str, StringConstraints(min_length=1)]
    summary: str = ""
    labels: Labels = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    starts_at: Timestamp | None = None
    ends_at: Timestamp | None = None
    # Shown as a link in chat; other schemes (javascript:, file:) have no business there.
    url: Annotated[str, StringConstraints(max_length=2048, pattern=r"^https?://")] | None = None


class GenericSource:
    """Alert source for senders that speak our generic JSON schema."""

    name: ClassVar[str] = "generic"

    def __init__(
        self,
        *,
        signature_header: str = "X-Ooda-Signature",
        timestamp_header: str = "X-Ooda-Timestamp",
        max_skew_s: float = 300,
    ) -> None:
        if max_skew_s <= 0:
            raise ConfigError(f"generic: max_skew_s must be a positive number of seconds, got {max_skew_s}.")
        self.signature_header = signature_header
        self.timestamp_header = timestamp_header
        self.max_skew_s = max_skew_s

    def verify_signature(self, headers: Mapping[str, str], body: bytes, secret: bytes, now: float) -> None:
        given = versioned_entries(require_header(headers, self.signature_header), self.signature_header)
        timestamp = require_header(headers, self.timestamp_header)
        check_timestamp(timestamp, self.timestamp_header, now, self.max_skew_s)
        if not matches_any(hmac_sha256_hex(secret, timestamp.encode(), b":", body), given):
            raise Unauthorized(
                f"No v1 entry in the {self.signature_header} header matches HMAC-SHA256 of "
                f"'<{self.timestamp_header}>:<raw body>'. Check the sender's secret and that it signs the "
                f"exact bytes it sends."
            )

    def parse(self, body: bytes, headers: Mapping[str, str]) -> list[Signal]:
        alert = validate_body(GenericAlert, body, "generic")
        return [to_signal(self.name, alert)]


def to_signal(source: str, alert: GenericAlert) -> Signal:
    labels = {**alert.labels, "source": alert.source}
    if alert.labels.get("source", alert.source) != alert.source:
        raise InvalidPayload(
            "Invalid generic payload: labels.source differs from the top-level source; drop the label "
            "or make them equal (the top-level source becomes the source label).",
            field="labels.source",
        )
    annotations = alert.annotations
    if alert.summary:
        if annotations.get("summary", alert.summary) != alert.summary:
            raise InvalidPayload(
                "Invalid generic payload: annotations.summary differs from summary; send one of them.",
                field="annotations.summary",
            )
        annotations = {**annotations, "summary": alert.summary}
    return Signal(
        source=source,
        fingerprint=f"{alert.source}:{alert.external_id}",
        status=SignalStatus.of(alert.status),
        severity=Severity.of(alert.severity),
        title=alert.title,
        labels=labels,
        annotations=annotations,
        starts_at=alert.starts_at,
        ends_at=alert.ends_at,
        url=alert.url,
        raw=alert.model_dump(mode="json"),
    )
