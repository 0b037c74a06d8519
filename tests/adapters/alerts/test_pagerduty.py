import hashlib
import hmac
import json

import pytest

from adapters.alerts.pagerduty import PagerDutySource
from bot.errors import InvalidPayload, Unauthorized
from bot.model.signals import Severity, SignalStatus

SECRET = b"pd-webhook-signing-secret"
OLD_SECRET = b"pd-previous-signing-secret"
NOW = 1_767_603_600.0


def incident(**overrides) -> dict:
    data = {
        "id": "Q2K7ZT4PLXWY1B",
        "type": "incident",
        "self": "https://api.pagerduty.com/incidents/Q2K7ZT4PLXWY1B",
        "html_url": "https://example.pagerduty.com/incidents/Q2K7ZT4PLXWY1B",
        "number": 4821,
        "status": "triggered",
        "incident_key": "f3b0c2a9e1d84c7bb5e6a0d9c8f71234",
        "created_at": "2026-01-05T09:01:00Z",
        "title": "Checkout error rate above 5%",
        "service": {
            "html_url": "https://example.pagerduty.com/service-directory/PSVC1CK",
            "id": "PSVC1CK",
            "self": "https://api.pagerduty.com/services/PSVC1CK",
            "summary": "checkout",
            "type": "service_reference",
        },
        "assignees": [{"id": "PUSR9AB", "summary": "Dana Okafor", "type": "user_reference"}],
        "priority": {"id": "PPRI1P1", "summary": "P1", "type": "priority_reference"},
        "urgency": "high",
        "conference_bridge": None,
    }
    data.update(overrides)
    return data


def event(event_type: str, data: dict | None = None, resource_type: str = "incident") -> bytes:
    return json.dumps(
        {
            "event": {
                "id": "01DEN3B5K1QZ7V4XGQ8WF2M9TA",
                "event_type": event_type,
                "resource_type": resource_type,
                "occurred_at": "2026-01-05T09:38:44.207Z",
                "agent": {"id": "PUSR9AB", "summary": "Dana Okafor", "type": "user_reference"},
                "client": None,
                "data": incident() if data is None else data,
            }
        }
    ).encode()


def signature(body: bytes, secret: bytes = SECRET) -> str:
    return "v1=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify(headers: dict, body: bytes) -> None:
    PagerDutySource().verify_signature(headers, body, SECRET, NOW)


def test_triggered_incident_becomes_a_firing_signal():
    (signal,) = PagerDutySource().parse(event("incident.triggered"), {})

    assert signal.source == "pagerduty"
    assert signal.status is SignalStatus.firing
    assert signal.fingerprint == "Q2K7ZT4PLXWY1B"
    assert signal.severity is Severity.critical
    assert signal.title == "Checkout error rate above 5%"
    assert signal.url == "https://example.pagerduty.com/incidents/Q2K7ZT4PLXWY1B"
    assert signal.ends_at is None
    assert signal.labels == {
        "alertname": "PagerDutyIncident",
        "event_type": "incident.triggered",
        "urgency": "high",
        "status": "triggered",
        "title": "Checkout error rate above 5%",
        "incident_key": "f3b0c2a9e1d84c7bb5e6a0d9c8f71234",
        "incident_number": "4821",
        "service_id": "PSVC1CK",
        "service": "checkout",
        "priority": "P1",
    }
    assert signal.raw["incident"]["incident_key"] == "f3b0c2a9e1d84c7bb5e6a0d9c8f71234"
    assert signal.raw["event_id"] == "01DEN3B5K1QZ7V4XGQ8WF2M9TA"


def test_resolved_updates_the_same_signal_as_triggered():
    (triggered,) = PagerDutySource().parse(event("incident.triggered"), {})
    (resolved,) = PagerDutySource().parse(event("incident.resolved", incident(status="resolved")), {})

    assert resolved.status is SignalStatus.resolved
    assert resolved.id == triggered.id
    assert resolved.ends_at is not None


@pytest.mark.parametrize("event_type", ["incident.acknowledged", "incident.reopened", "incident.escalated"])
def test_other_state_changes_keep_the_incident_firing(event_type):
    (signal,) = PagerDutySource().parse(event(event_type), {})

    assert signal.status is SignalStatus.firing
    assert signal.labels["event_type"] == event_type


def test_low_urgency_is_a_warning():
    (signal,) = PagerDutySource().parse(event("incident.triggered", incident(urgency="low")), {})

    assert signal.severity is Severity.warning


def test_incident_without_service_name_still_carries_its_id():
    data = incident(service={"id": "PSVC1CK", "type": "service_reference"})

    (signal,) = PagerDutySource().parse(event("incident.triggered", data), {})

    assert signal.labels["service_id"] == "PSVC1CK"
    assert "service" not in signal.labels


def test_annotation_is_accepted_but_stores_nothing():
    note = {
        "incident": {"id": "Q2K7ZT4PLXWY1B", "type": "incident_reference"},
        "content": "Rolled back the 14:02 deploy",
        "type": "incident_note",
    }

    assert PagerDutySource().parse(event("incident.annotated", note), {}) == []


def test_service_event_is_accepted_but_stores_nothing():
    service = {"id": "PSVC1CK", "name": "checkout", "type": "service"}

    assert PagerDutySource().parse(event("service.updated", service, resource_type="service"), {}) == []


def test_incident_without_id_names_the_field():
    data = incident()
    del data["id"]

    with pytest.raises(InvalidPayload) as caught:
        PagerDutySource().parse(event("incident.triggered", data), {})

    assert caught.value.field == "event.data.id"


def test_state_event_without_incident_data_names_the_field():
    body = json.dumps({"event": {"id": "01DEN", "event_type": "incident.triggered", "data": None}}).encode()

    with pytest.raises(InvalidPayload, match=r"event\.data must be a JSON object") as caught:
        PagerDutySource().parse(body, {})

    assert caught.value.field == "event.data"


def test_missing_envelope_names_the_field():
    with pytest.raises(InvalidPayload) as caught:
        PagerDutySource().parse(json.dumps({"messages": []}).encode(), {})

    assert caught.value.field == "event"


def test_malformed_json_is_invalid_payload():
    with pytest.raises(InvalidPayload, match=r"not valid JSON.*line 1 column"):
        PagerDutySource().parse(b'{"event": {"id": ', {})


def test_signature_accepted():
    body = event("incident.triggered")

    verify({"X-PagerDuty-Signature": signature(body)}, body)


def test_rotated_secret_any_entry_may_match():
    body = event("incident.triggered")

    verify({"x-pagerduty-signature": f"{signature(body, OLD_SECRET)},{signature(body)}"}, body)


def test_unknown_versions_are_skipped():
    body = event("incident.triggered")

    verify({"X-PagerDuty-Signature": f"v2=abc, {signature(body)}"}, body)


def test_wrong_signature_is_refused():
    body = event("incident.triggered")

    with pytest.raises(Unauthorized) as caught:
        verify({"X-PagerDuty-Signature": f"{signature(body, OLD_SECRET)},{signature(body, b'x')}"}, body)

    assert "X-PagerDuty-Signature" in str(caught.value)
    assert SECRET.decode() not in str(caught.value)


def test_signature_of_a_tampered_body_is_refused():
    body = event("incident.triggered")

    with pytest.raises(Unauthorized):
        verify({"X-PagerDuty-Signature": signature(body)}, body.replace(b'"high"', b'"low"'))


def test_missing_signature_is_refused():
    with pytest.raises(Unauthorized, match="X-PagerDuty-Signature header is missing"):
        verify({"X-Webhook-Id": "d9c2b6a8"}, event("incident.triggered"))


def test_signature_without_v1_entry_is_refused():
    body = event("incident.triggered")

    with pytest.raises(Unauthorized, match="no v1=<hex> entry"):
        verify({"X-PagerDuty-Signature": hmac.new(SECRET, body, hashlib.sha256).hexdigest()}, body)


def test_non_ascii_signature_is_refused_not_crashed():
    body = event("incident.triggered")

    with pytest.raises(Unauthorized):
        verify({"X-PagerDuty-Signature": "v1=é" + "0" * 63}, body)


def test_custom_details_become_detail_labels_a_playbook_can_match():
    data = incident()
    data["body"] = {"type": "incident_body", "details": {"alertname": "NodeFilesystemAlmostOutOfSpace",
                                                         "instance": "db-01:9100", "num firing": 2,
                                                         "nested": {"ignored": True}}}
    (signal,) = PagerDutySource().parse(event("incident.triggered", data), {})

    assert signal.labels["detail_alertname"] == "NodeFilesystemAlmostOutOfSpace"
    assert signal.labels["detail_instance"] == "db-01:9100"
    assert signal.labels["detail_num_firing"] == "2"
    assert "detail_nested" not in signal.labels
    assert signal.labels["alertname"] == "PagerDutyIncident"  # a detail never overwrites a label
