"""Prometheus Alertmanager webhook (payload version 4) -> Signals, one per alert in the group.

Alertmanager signs nothing, so this source authenticates with ``auth: bearer`` (the receiver's
``http_config.authorization``); ``verify_signature`` says so instead of pretending.

Each alert keeps its own ``fingerprint`` (Alertmanager's hash of the label set), so the firing and
the resolved delivery of one alert land on the same stored Signal, and so do retries after a 5xx.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal, Required

from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import TypedDict  # pydantic takes typing's only from Python 3.12

from adapters.alerts.payloads import MAX_ALERTS_PER_REQUEST, Labels, validate_body, vendor_time
from bot.errors import Unauthorized
from bot.loop.alert_links import SILENCE_ANNOTATION, is_web_url
from bot.model.signals import Severity, Signal, SignalStatus, fingerprint_of


class AlertmanagerAlert(TypedDict, total=False):
    """One alert as Alertmanager's template.Alert serialises it. Grafana extends this shape.

    A TypedDict, not a model: pydantic validates it into a plain dict, a third cheaper per alert
    than building a model instance, and that dict (unknown keys dropped) is the raw record kept
    as evidence, with no copy field by field.
    """

    status: Required[Literal["firing", "resolved"]]
    labels: Required[Labels]
    annotations: dict[str, str]
    # Strings, parsed by vendor_time: see there why.
    startsAt: str
    endsAt: str
    generatorURL: str
    fingerprint: str


class AlertmanagerPayload(BaseModel):
    model_config = ConfigDict(extra="ignore")

    version: str = ""
    groupKey: str = ""
    truncatedAlerts: int = 0
    status: str = ""
    receiver: str = ""
    externalURL: str = ""
    alerts: list[AlertmanagerAlert] = Field(max_length=MAX_ALERTS_PER_REQUEST)


class AlertmanagerSource:
    """Alert source for Alertmanager's webhook receiver."""

    name: ClassVar[str] = "alertmanager"

    def verify_signature(self, headers: Mapping[str, str], body: bytes, secret: bytes, now: float) -> None:
        raise Unauthorized(
            "Alertmanager does not sign webhook requests, so auth: hmac cannot verify this source. "
            "Configure auth: bearer for it and set http_config.authorization (type Bearer, credentials "
            "= the same token) in the Alertmanager receiver."
        )

    def parse(self, body: bytes, headers: Mapping[str, str]) -> list[Signal]:
        payload = validate_body(AlertmanagerPayload, body, "Alertmanager")
        group = {"groupKey": payload.groupKey, "receiver": payload.receiver, "externalURL": payload.externalURL}
        return [to_signal(self.name, alert, index, group) for index, alert in enumerate(payload.alerts)]


def to_signal(source: str, alert: AlertmanagerAlert, index: int, group: Mapping[str, Any], *,
              vendor: str = "Alertmanager", annotations: dict[str, str] | None = None,
              url: str | None = None) -> Signal:
    """Grafana's alerts take this path too, naming itself in errors and passing the annotations
    and link it derives from its extra fields."""
    labels = alert["labels"]
    sent_annotations = alert.get("annotations", {})
    return Signal(
        source=source,
        fingerprint=alert.get("fingerprint") or fingerprint_of(source, labels),
        status=SignalStatus.of(alert["status"]),
        severity=Severity.from_label(labels.get("severity")),
        title=sent_annotations.get("summary") or labels.get("alertname", ""),
        labels=labels,
        annotations=_with_silence_link(sent_annotations if annotations is None else annotations, group),
        starts_at=vendor_time(alert.get("startsAt"), vendor, "alerts", index, "startsAt"),
        ends_at=vendor_time(alert.get("endsAt"), vendor, "alerts", index, "endsAt"),
        url=url or alert.get("generatorURL") or None,
        raw={**alert, **group},
    )


def _with_silence_link(annotations: dict[str, str], group: Mapping[str, Any]) -> dict[str, str]:
    """The alert's annotations plus Grafana's own link to silence it, kept only when it is a web
    address. Alertmanager's prefilled form is built when a proposal shows it (bot/loop/alert_links.py)."""
    sent = group.get("silenceURL")
    return {**annotations, SILENCE_ANNOTATION: sent} if sent and is_web_url(sent) else annotations
