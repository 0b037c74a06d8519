"""Grafana unified alerting webhook (payload version 1) -> Signals, one per alert.

The shape is Alertmanager's plus a few fields per alert (``silenceURL``, ``dashboardURL``,
``panelURL``, ``values``, ``valueString``, ``imageURL``). Grafana lets operators replace the whole
payload with a custom template, so the body is always validated rather than trusted.

Signing is optional in Grafana: a bare lowercase hex HMAC-SHA256 of the body in
``X-Grafana-Alerting-Signature``, or of ``"{timestamp}:{body}"`` when the contact point also sets a
timestamp header (which has no default name, so configure ``timestamp_header`` to match).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import Field

from adapters.alerts import alertmanager
from adapters.alerts.alertmanager import AlertmanagerAlert, AlertmanagerPayload
from adapters.alerts.payloads import MAX_ALERTS_PER_REQUEST, validate_body
from adapters.alerts.signatures import check_timestamp, hmac_sha256_hex, matches_any, require_header
from bot.errors import ConfigError, Unauthorized
from bot.model.signals import Signal


class GrafanaAlert(AlertmanagerAlert, total=False):
    silenceURL: str
    dashboardURL: str
    panelURL: str
    # refID -> value of the query or expression; null when the query returned no data.
    values: dict[str, float | None] | None
    valueString: str
    imageURL: str


class GrafanaPayload(AlertmanagerPayload):
    """Alertmanager's webhook shape plus Grafana's top-level fields and richer alerts."""

    orgId: int | None = None
    state: str = ""
    title: str = ""
    message: str = ""
    alerts: list[GrafanaAlert] = Field(max_length=MAX_ALERTS_PER_REQUEST)  # type: ignore[assignment]


class GrafanaSource:
    """Alert source for Grafana's webhook contact point."""

    name: ClassVar[str] = "grafana"

    def __init__(
        self,
        *,
        signature_header: str = "X-Grafana-Alerting-Signature",
        timestamp_header: str | None = None,
        max_skew_s: float = 300,
    ) -> None:
        if max_skew_s <= 0:
            raise ConfigError(f"grafana: max_skew_s must be a positive number of seconds, got {max_skew_s}.")
        self.signature_header = signature_header
        self.timestamp_header = timestamp_header
        self.max_skew_s = max_skew_s

    def verify_signature(self, headers: Mapping[str, str], body: bytes, secret: bytes, now: float) -> None:
        given = require_header(headers, self.signature_header)
        if self.timestamp_header is None:
            expected = hmac_sha256_hex(secret, body)
            signed = "the raw body"
        else:
            timestamp = require_header(headers, self.timestamp_header)
            check_timestamp(timestamp, self.timestamp_header, now, self.max_skew_s)
            expected = hmac_sha256_hex(secret, timestamp.encode(), b":", body)
            signed = f"'<{self.timestamp_header}>:<raw body>'"
        if not matches_any(expected, [given]):
            raise Unauthorized(
                f"The {self.signature_header} header does not match the HMAC-SHA256 of {signed}. Check that "
                f"the contact point's HMAC secret equals this source's secret and that both sides agree on "
                f"the timestamp header ({self.timestamp_header or 'none configured here'})."
            )

    def parse(self, body: bytes, headers: Mapping[str, str]) -> list[Signal]:
        payload = validate_body(GrafanaPayload, body, "Grafana")
        group = {
            "groupKey": payload.groupKey,
            "receiver": payload.receiver,
            "externalURL": payload.externalURL,
            "orgId": payload.orgId,
        }
        return [to_signal(self.name, alert, index, group) for index, alert in enumerate(payload.alerts)]


def to_signal(source: str, alert: GrafanaAlert, index: int, group: Mapping[str, Any]) -> Signal:
    annotations = alert.get("annotations", {})
    if values := alert.get("values"):
        # Playbooks and proposals read annotations; the numbers stay typed in raw as well.
        annotations = {**{f"value_{ref}": format_value(v) for ref, v in values.items()}, **annotations}
    group = {**group, "silenceURL": alert.get("silenceURL") or ""}
    return alertmanager.to_signal(source, alert, index, group, vendor="Grafana", annotations=annotations,
                                  url=alert.get("panelURL") or alert.get("dashboardURL"))


def format_value(value: float | None) -> str:
    # 15 significant digits: 93.1 stays "93.1" instead of repr noise, integers lose the ".0".
    return "no data" if value is None else format(value, ".15g")
