import json
from datetime import UTC, datetime

import pytest

from adapters.alerts.alertmanager import AlertmanagerSource
from bot.errors import InvalidPayload, Unauthorized
from bot.model.signals import Severity, SignalStatus, fingerprint_of

NEVER = "0001-01-01T00:00:00Z"


def alert(
    instance: str, status: str = "firing", fingerprint: str = "", startsAt: str = "", endsAt: str = "", **labels: str
) -> dict:
    return {
        "status": status,
        "labels": {"alertname": "HostHighCpuLoad", "instance": instance, "severity": "critical", **labels},
        "annotations": {"summary": f"CPU at 97% on {instance}"},
        "startsAt": startsAt or "2026-01-05T09:58:10.021Z",
        "endsAt": endsAt or ("2026-01-05T10:12:40.551Z" if status == "resolved" else NEVER),
        "generatorURL": "http://prometheus:9090/graph?g0.expr=cpu",
        "fingerprint": fingerprint,
    }


def group(*alerts: dict) -> bytes:
    return json.dumps(
        {
            "version": "4",
            "groupKey": '{}:{alertname="HostHighCpuLoad"}',
            "truncatedAlerts": 0,
            "status": "firing",
            "receiver": "ooda",
            "groupLabels": {"alertname": "HostHighCpuLoad"},
            "commonLabels": {"alertname": "HostHighCpuLoad"},
            "commonAnnotations": {},
            "externalURL": "http://alertmanager:9093",
            "alerts": list(alerts),
        }
    ).encode()


def parse(body: bytes):
    return AlertmanagerSource().parse(body, {})


def test_a_group_becomes_one_signal_per_alert_with_its_own_status_and_fingerprint():
    signals = parse(
        group(
            alert("web-01:9100", fingerprint="0f7a3c91d2e4b586"),
            alert("web-02:9100", fingerprint="93b1e6d07a2c4f58"),
            alert("web-03:9100", status="resolved", fingerprint="e4c2a8f1093b7d6a"),
        )
    )

    assert [(s.labels["instance"], s.status, s.fingerprint) for s in signals] == [
        ("web-01:9100", SignalStatus.firing, "0f7a3c91d2e4b586"),
        ("web-02:9100", SignalStatus.firing, "93b1e6d07a2c4f58"),
        ("web-03:9100", SignalStatus.resolved, "e4c2a8f1093b7d6a"),
    ]
    assert {s.source for s in signals} == {"alertmanager"}
    assert len({s.id for s in signals}) == 3


def test_fields_map_onto_the_signal():
    (signal,) = parse(group(alert("web-01:9100", fingerprint="0f7a3c91d2e4b586")))

    assert signal.severity is Severity.critical
    assert signal.title == "CPU at 97% on web-01:9100"
    assert signal.url == "http://prometheus:9090/graph?g0.expr=cpu"
    assert signal.starts_at == datetime(2026, 1, 5, 9, 58, 10, 21000, tzinfo=UTC)
    # 0001-01-01 is Alertmanager's "still firing", not a real end time.
    assert signal.ends_at is None


def test_resolved_alert_keeps_its_end_time():
    (signal,) = parse(group(alert("web-03:9100", status="resolved", fingerprint="e4c2a8f1093b7d6a")))

    assert signal.status is SignalStatus.resolved
    assert signal.ends_at == datetime(2026, 1, 5, 10, 12, 40, 551000, tzinfo=UTC)


def test_raw_keeps_the_alert_and_the_group_context_for_evidence():
    (signal,) = parse(group(alert("web-01:9100", fingerprint="0f7a3c91d2e4b586")))

    assert signal.raw["labels"]["instance"] == "web-01:9100"
    assert signal.raw["fingerprint"] == "0f7a3c91d2e4b586"
    assert signal.raw["groupKey"] == '{}:{alertname="HostHighCpuLoad"}'
    assert signal.raw["receiver"] == "ooda"
    assert signal.raw["externalURL"] == "http://alertmanager:9093"
    assert (signal.raw["startsAt"], signal.raw["endsAt"]) == ("2026-01-05T09:58:10.021Z", NEVER)  # verbatim
    json.dumps(signal.raw)  # stored as JSON: plain values only


def test_go_nanosecond_times_are_read():
    (signal,) = parse(group(alert("db-01", startsAt="2026-01-05T09:58:10.123456789Z")))

    assert signal.starts_at == datetime(2026, 1, 5, 9, 58, 10, 123456, tzinfo=UTC)


def test_a_time_that_is_not_rfc3339_names_the_field():
    with pytest.raises(InvalidPayload) as caught:
        parse(group(alert("db-01"), alert("db-02", endsAt="yesterday")))

    assert caught.value.field == "alerts.1.endsAt"
    assert "not an RFC 3339 time (got 'yesterday')" in str(caught.value)


def test_title_falls_back_to_alertname_and_severity_to_info():
    body = alert("db-01", fingerprint="abc")
    body["annotations"] = {}
    del body["labels"]["severity"]

    (signal,) = parse(group(body))

    assert signal.title == "HostHighCpuLoad"
    assert signal.severity is Severity.info


def test_missing_fingerprint_falls_back_to_a_stable_hash_of_the_labels():
    first = parse(group(alert("db-01")))[0]
    again = parse(group(alert("db-01", status="resolved")))[0]

    assert first.fingerprint == fingerprint_of("alertmanager", first.labels)
    assert first.id == again.id


def test_unknown_vendor_fields_are_ignored():
    body = json.loads(group(alert("db-01", fingerprint="abc")))
    body["somethingNew"] = {"x": 1}
    body["alerts"][0]["valueString"] = "[ var='A' value=1 ]"

    assert parse(json.dumps(body).encode())[0].fingerprint == "abc"


def test_malformed_json_says_where():
    with pytest.raises(InvalidPayload) as caught:
        parse(b'{"version": "4",\n "alerts": [}')

    assert caught.value.field is None
    assert "not valid JSON" in str(caught.value)
    assert "line 2 column" in str(caught.value)


def test_a_body_that_is_not_an_object_is_rejected():
    with pytest.raises(InvalidPayload, match="must be a JSON object"):
        parse(b"[]")


def test_schema_violation_names_the_field_path():
    body = json.loads(group(alert("db-01"), alert("db-02")))
    del body["alerts"][1]["labels"]

    with pytest.raises(InvalidPayload) as caught:
        parse(json.dumps(body).encode())

    assert caught.value.field == "alerts.1.labels"
    assert "alerts.1.labels is required" in str(caught.value)
    assert caught.value.to_json()["field"] == "alerts.1.labels"


def test_a_non_string_label_value_names_the_label():
    body = json.loads(group(alert("db-01")))
    body["alerts"][0]["labels"]["port"] = 9100

    with pytest.raises(InvalidPayload) as caught:
        parse(json.dumps(body).encode())

    assert caught.value.field == "alerts.0.labels.port"


def test_unknown_status_is_rejected_with_the_allowed_values():
    with pytest.raises(InvalidPayload) as caught:
        parse(group(alert("db-01", status="pending")))

    assert caught.value.field == "alerts.0.status"
    assert "'firing' or 'resolved'" in str(caught.value)


def test_a_long_label_value_is_kept_whole_by_the_adapter_for_intake_to_cut():
    (signal,) = parse(group(alert("db-01", note="x" * (16 * 1024 + 1))))

    assert len(signal.labels["note"]) == 16 * 1024 + 1


def test_more_than_1000_alerts_in_one_request_is_rejected_with_the_limit():
    with pytest.raises(InvalidPayload) as caught:
        parse(group(*[alert(f"db-{i}", fingerprint=f"{i:016x}") for i in range(1001)]))

    assert caught.value.field == "alerts"
    assert "1001" in str(caught.value)
    assert "at most 1000" in str(caught.value)


def test_1000_alerts_are_accepted():
    assert len(parse(group(*[alert(f"db-{i}", fingerprint=f"{i:016x}") for i in range(1000)]))) == 1000


def test_signature_verification_is_refused_with_the_fix():
    with pytest.raises(Unauthorized, match="auth: bearer"):
        AlertmanagerSource().verify_signature({}, group(alert("db-01")), b"s3cret", 0.0)
