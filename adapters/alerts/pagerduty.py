"""PagerDuty v3 webhook subscription -> at most one Signal per delivery.

Each delivery carries exactly one event in ``{"event": {...}}``. Only events that change an
incident's state become a Signal; the others (notes, status updates, responder requests, service
events) are accepted and produce nothing, so PagerDuty does not retry them.

The Signal's fingerprint is the incident id, so triggered, acknowledged and resolved deliveries all
update one stored Signal, and a redelivery (same ``X-Webhook-Id``) is an idempotent upsert.

``X-PagerDuty-Signature`` carries one or more comma-separated ``v1=<hex HMAC-SHA256 of the raw
body>`` entries; during a secret rotation there are several and any one may match.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from adapters.alerts.payloads import LabelValue, to_invalid_payload, validate_body
from adapters.alerts.signatures import hmac_sha256_hex, matches_any, require_header, versioned_entries
from bot.errors import Unauthorized
from bot.model.signals import Severity, Signal, SignalStatus, parse_time

# An allowlist rather than a denylist: an event type PagerDuty adds later is stored only once
# someone decides what it means for an incident's state.
INCIDENT_STATE_EVENTS = frozenset(
    {
        "incident.triggered",
        "incident.acknowledged",
        "incident.unacknowledged",
        "incident.reopened",
        "incident.escalated",
        "incident.reassigned",
        "incident.delegated",
        "incident.priority_updated",
        "incident.resolved",
    }
)


MAX_DETAIL_LABELS = 20


def custom_details(data: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """The incident's custom details where PagerDuty puts them: ``body.details`` (an incident's
    body) or ``custom_details`` (an alert's); empty when absent or not a mapping."""
    if not data:
        return {}
    body = data.get("body")
    for found in ((body or {}).get("details") if isinstance(body, dict) else None, data.get("custom_details")):
        if isinstance(found, dict):
            return found
    return {}


class PagerDutyEvent(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    event_type: str
    resource_type: str = ""
    occurred_at: datetime | None = None
    # Validated as an incident only for incident state events; other resources have other shapes.
    data: dict[str, Any] | None = None


class PagerDutyEnvelope(BaseModel):
    model_config = ConfigDict(extra="ignore")

    event: PagerDutyEvent


class Reference(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: LabelValue = ""
    summary: LabelValue = ""
    html_url: str = ""


class Incident(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: LabelValue
    number: int | None = None
    title: str = ""
    status: str = ""
    urgency: LabelValue = ""
    html_url: str = ""
    created_at: datetime | None = None
    incident_key: str | None = None
    service: Reference | None = None
    priority: Reference | None = None


class PagerDutySource:
    """Alert source for PagerDuty v3 webhook subscriptions."""

    name: ClassVar[str] = "pagerduty"

    def __init__(self, *, signature_header: str = "X-PagerDuty-Signature") -> None:
        self.signature_header = signature_header

    def verify_signature(self, headers: Mapping[str, str], body: bytes, secret: bytes, now: float) -> None:
        # PagerDuty signs no timestamp; replays are harmless because the Signal upsert is idempotent.
        given = versioned_entries(require_header(headers, self.signature_header), self.signature_header)
        if not matches_any(hmac_sha256_hex(secret, body), given):
            raise Unauthorized(
                f"No v1 entry in the {self.signature_header} header matches the HMAC-SHA256 of the raw body. "
                f"Check that this source's secret is the webhook subscription's signing secret."
            )

    def parse(self, body: bytes, headers: Mapping[str, str]) -> list[Signal]:
        event = validate_body(PagerDutyEnvelope, body, "PagerDuty").event
        if event.event_type not in INCIDENT_STATE_EVENTS:
            return []
        try:
            incident = Incident.model_validate(event.data)
        except ValidationError as exc:
            raise to_invalid_payload(exc, "PagerDuty", prefix=("event", "data")) from exc
        return [to_signal(self.name, event, incident)]


def to_signal(source: str, event: PagerDutyEvent, incident: Incident) -> Signal:
    resolved = event.event_type == "incident.resolved"
    labels = {
        "alertname": "PagerDutyIncident",
        "event_type": event.event_type,
        "urgency": incident.urgency,
    }
    if incident.status:
        labels["status"] = incident.status
    if incident.title:
        labels["title"] = incident.title
    if incident.incident_key:
        labels["incident_key"] = incident.incident_key
    if incident.number is not None:
        labels["incident_number"] = str(incident.number)
    if incident.service is not None:
        labels["service_id"] = incident.service.id
        if incident.service.summary:
            labels["service"] = incident.service.summary
    if incident.priority is not None and incident.priority.summary:
        labels["priority"] = incident.priority.summary
    # Custom details (an Events API v2 alert's ``custom_details``, when the subscription includes
    # them) become ``detail_<key>`` labels a playbook can match, e.g. the alertname and instance an
    # upstream Alertmanager put there. Only scalars, a bounded number, never overwriting a label.
    for key, value in list(custom_details(event.data).items())[:MAX_DETAIL_LABELS]:
        name = "detail_" + "".join(c if c.isalnum() or c == "_" else "_" for c in str(key))[:60]
        if isinstance(value, str | int | float | bool) and name not in labels:
            labels[name] = str(value)
    return Signal(
        source=source,
        fingerprint=incident.id,
        status=SignalStatus.resolved if resolved else SignalStatus.firing,
        severity=Severity.critical if incident.urgency == "high" else Severity.warning,
        title=incident.title,
        labels=labels,
        starts_at=parse_time(incident.created_at) or parse_time(event.occurred_at),
        ends_at=parse_time(event.occurred_at) if resolved else None,
        url=incident.html_url or None,
        raw={
            "event_id": event.id,
            "event_type": event.event_type,
            "resource_type": event.resource_type,
            "occurred_at": None if event.occurred_at is None else event.occurred_at.isoformat(),
            "incident": event.data,
        },
    )
