import hashlib
import hmac
import json
from datetime import UTC, datetime

import pytest

from adapters.alerts.generic import GenericSource
from bot.errors import InvalidPayload, Unauthorized
from bot.model.signals import Severity, SignalStatus

SECRET = b"generic-webhook-secret"
NOW = 1_767_603_600.0


def alert(**overrides) -> dict:
    body = {
        "source": "cron-check",
        "external_id": "backup-2026-01-05",
        "status": "firing",
        "severity": "warning",
        "title": "Nightly backup missing",
        "summary": "No successful backup since 2026-01-04 03:10 UTC",
        "labels": {"service": "backup", "env": "prod"},
        "annotations": {"runbook_url": "https://runbooks.example.com/backup"},
        "starts_at": "2026-01-05T03:10:00Z",
        "url": "https://cron-check.example.com/checks/nightly-orders-backup",
    }
    body.update(overrides)
    return body


def encode(body: dict) -> bytes:
    return json.dumps(body).encode()


def parse(body: dict):
    (signal,) = GenericSource().parse(encode(body), {})
    return signal


def signed_headers(body: bytes, sent_at: float, secret: bytes = SECRET) -> dict:
    ts = str(int(sent_at))
    digest = hmac.new(secret, f"{ts}:".encode() + body, hashlib.sha256).hexdigest()
    return {"X-Ooda-Timestamp": ts, "X-Ooda-Signature": f"v1={digest}"}


def test_generic_alert_becomes_a_signal():
    signal = parse(alert())

    assert signal.source == "generic"
    assert signal.fingerprint == "cron-check:backup-2026-01-05"
    assert signal.status is SignalStatus.firing
    assert signal.severity is Severity.warning
    assert signal.title == "Nightly backup missing"
    assert signal.labels == {"service": "backup", "env": "prod", "source": "cron-check"}
    assert signal.annotations == {
        "runbook_url": "https://runbooks.example.com/backup",
        "summary": "No successful backup since 2026-01-04 03:10 UTC",
    }
    assert signal.starts_at == datetime(2026, 1, 5, 3, 10, tzinfo=UTC)
    assert signal.url == "https://cron-check.example.com/checks/nightly-orders-backup"
    assert signal.raw["external_id"] == "backup-2026-01-05"


def test_resolved_updates_the_same_signal():
    firing = parse(alert())
    resolved = parse(alert(status="resolved", ends_at="2026-01-05T04:02:00+01:00"))

    assert resolved.status is SignalStatus.resolved
    assert resolved.id == firing.id
    assert resolved.ends_at == datetime(2026, 1, 5, 3, 2, tzinfo=UTC)


def test_minimal_alert():
    body = {"source": "uptime", "external_id": "home", "status": "firing", "severity": "critical", "title": "Down"}

    signal = parse(body)

    assert signal.labels == {"source": "uptime"}
    assert signal.starts_at is None
    assert signal.url is None


def test_unknown_field_is_rejected_by_name():
    with pytest.raises(InvalidPayload) as caught:
        GenericSource().parse(encode(alert(sevrity="warning")), {})

    assert caught.value.field == "sevrity"
    assert "not part of the schema" in str(caught.value)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"status": "ok"}, "status"),
        ({"severity": "major"}, "severity"),
        ({"title": ""}, "title"),
        ({"labels": {"service": ["backup"]}}, "labels.service"),
        ({"annotations": {"count": 3}}, "annotations.count"),
        ({"starts_at": "2026-01-05 03:10"}, "starts_at"),
        ({"starts_at": 1767582600}, "starts_at"),
        ({"starts_at": "2026-01-05T03:10:00"}, "starts_at"),
        ({"source": "cron check"}, "source"),
        ({"external_id": ""}, "external_id"),
        ({"url": "javascript:alert(1)"}, "url"),
    ],
)
def test_schema_violations_name_the_field(change, field):
    with pytest.raises(InvalidPayload) as caught:
        GenericSource().parse(encode(alert(**change)), {})

    assert caught.value.field == field
    assert field in str(caught.value)


def test_missing_required_field_is_named():
    body = alert()
    del body["external_id"]

    with pytest.raises(InvalidPayload, match="external_id is required") as caught:
        GenericSource().parse(encode(body), {})

    assert caught.value.field == "external_id"


def test_a_long_title_is_kept_for_intake_to_cut_instead_of_refusing_the_alert():
    [signal] = GenericSource().parse(encode(alert(title="x" * 5000)), {})
    assert signal.title == "x" * 5000


def test_a_source_label_that_contradicts_the_source_is_rejected():
    with pytest.raises(InvalidPayload) as caught:
        parse(alert(labels={"source": "alertmanager"}))

    assert caught.value.field == "labels.source"


def test_summary_and_a_different_summary_annotation_are_rejected():
    with pytest.raises(InvalidPayload) as caught:
        parse(alert(annotations={"summary": "something else"}))

    assert caught.value.field == "annotations.summary"


def test_malformed_json_says_where():
    with pytest.raises(InvalidPayload, match=r"not valid JSON.*line 1 column") as caught:
        GenericSource().parse(b'{"source": "cron-check",}', {})

    assert caught.value.field is None


def test_signature_accepted():
    body = encode(alert())

    GenericSource().verify_signature(signed_headers(body, NOW - 10), body, SECRET, NOW)


def test_signature_with_a_rotated_secret_accepted():
    body = encode(alert())
    headers = signed_headers(body, NOW)
    old = signed_headers(body, NOW, b"old-secret")["X-Ooda-Signature"]
    headers["X-Ooda-Signature"] = f"{old},{headers['X-Ooda-Signature']}"

    GenericSource().verify_signature(headers, body, SECRET, NOW)


def test_wrong_signature_is_refused():
    body = encode(alert())

    with pytest.raises(Unauthorized, match="X-Ooda-Signature") as caught:
        GenericSource().verify_signature(signed_headers(body, NOW, b"wrong"), body, SECRET, NOW)

    assert SECRET.decode() not in str(caught.value)


def test_signature_does_not_carry_over_to_another_timestamp():
    body = encode(alert())
    headers = signed_headers(body, NOW)
    headers["X-Ooda-Timestamp"] = str(int(NOW) + 1)

    with pytest.raises(Unauthorized, match="No v1 entry"):
        GenericSource().verify_signature(headers, body, SECRET, NOW)


def test_stale_timestamp_is_refused():
    body = encode(alert())

    with pytest.raises(Unauthorized, match="X-Ooda-Timestamp header is 301 s old"):
        GenericSource().verify_signature(signed_headers(body, NOW - 301), body, SECRET, NOW)


def test_future_timestamp_is_refused():
    body = encode(alert())

    with pytest.raises(Unauthorized, match="in the future"):
        GenericSource().verify_signature(signed_headers(body, NOW + 400), body, SECRET, NOW)


def test_window_is_configurable():
    body = encode(alert())

    GenericSource(max_skew_s=900).verify_signature(signed_headers(body, NOW - 600), body, SECRET, NOW)


def test_non_numeric_timestamp_is_refused():
    body = encode(alert())
    headers = signed_headers(body, NOW)
    headers["X-Ooda-Timestamp"] = "2026-01-05T09:00:00Z"

    with pytest.raises(Unauthorized, match="Unix time in whole seconds"):
        GenericSource().verify_signature(headers, body, SECRET, NOW)


def test_missing_headers_are_refused_by_name():
    body = encode(alert())
    headers = signed_headers(body, NOW)

    with pytest.raises(Unauthorized, match="X-Ooda-Signature header is missing"):
        GenericSource().verify_signature({"X-Ooda-Timestamp": headers["X-Ooda-Timestamp"]}, body, SECRET, NOW)
    with pytest.raises(Unauthorized, match="X-Ooda-Timestamp header is missing"):
        GenericSource().verify_signature({"X-Ooda-Signature": headers["X-Ooda-Signature"]}, body, SECRET, NOW)
