import hashlib
import hmac
import json

import pytest

from adapters.alerts.grafana import GrafanaSource
from bot.errors import ConfigError, InvalidPayload, Unauthorized
from bot.model.signals import Severity, SignalStatus

SECRET = b"grafana-hmac-secret"
NOW = 1_767_603_600.0  # 2026-01-05T09:00:00Z


def grafana_alert(**overrides) -> dict:
    alert = {
        "status": "firing",
        "labels": {"alertname": "NodeCPUHighUsage", "host": "web-02", "grafana_folder": "Platform"},
        "annotations": {"description": "CPU above 90% for 5 minutes"},
        "startsAt": "2026-01-05T09:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "https://grafana.example.com/alerting/grafana/ddlk2w9nq1qf4a/view?orgId=1",
        "fingerprint": "a1b2c3d4e5f60718",
        "silenceURL": "https://grafana.example.com/alerting/silence/new?matcher=alertname%3DNodeCPUHighUsage",
        "dashboardURL": "https://grafana.example.com/d/node-exporter?orgId=1",
        "panelURL": "https://grafana.example.com/d/node-exporter?orgId=1&viewPanel=3",
        "values": {"A": 93.1, "B": 93.1, "C": 1},
        "valueString": "[ var='B' labels={host=web-02} value=93.1 ]",
        "orgId": 1,
    }
    alert.update(overrides)
    return alert


def payload(*alerts: dict) -> bytes:
    return json.dumps(
        {
            "receiver": "ooda",
            "status": "firing",
            "orgId": 1,
            "alerts": list(alerts) or [grafana_alert()],
            "groupLabels": {"alertname": "NodeCPUHighUsage"},
            "commonLabels": {"alertname": "NodeCPUHighUsage"},
            "commonAnnotations": {},
            "externalURL": "https://grafana.example.com/",
            "version": "1",
            "groupKey": '{}:{alertname="NodeCPUHighUsage"}',
            "truncatedAlerts": 0,
            "title": "[FIRING:1] NodeCPUHighUsage Platform",
            "state": "alerting",
            "message": "**Firing**\n\nValue: B=93.1",
        }
    ).encode()


def sign(body: bytes, prefix: bytes = b"") -> str:
    return hmac.new(SECRET, prefix + body, hashlib.sha256).hexdigest()


def test_grafana_alert_becomes_a_signal_with_its_extra_fields():
    (signal,) = GrafanaSource().parse(payload(), {})

    assert signal.source == "grafana"
    assert signal.fingerprint == "a1b2c3d4e5f60718"
    assert signal.status is SignalStatus.firing
    assert signal.title == "NodeCPUHighUsage"
    assert signal.severity is Severity.info
    assert signal.ends_at is None
    assert signal.raw["silenceURL"].startswith("https://grafana.example.com/alerting/silence/new")
    assert signal.raw["valueString"] == "[ var='B' labels={host=web-02} value=93.1 ]"
    assert signal.raw["orgId"] == 1
    assert signal.raw["groupKey"] == '{}:{alertname="NodeCPUHighUsage"}'


def test_values_are_kept_in_raw_and_shown_as_annotations():
    (signal,) = GrafanaSource().parse(payload(), {})

    assert signal.raw["values"] == {"A": 93.1, "B": 93.1, "C": 1}
    assert signal.annotations["value_B"] == "93.1"
    assert signal.annotations["value_C"] == "1"
    assert signal.annotations["description"] == "CPU above 90% for 5 minutes"


def test_an_annotation_the_rule_defines_wins_over_a_derived_value():
    alert = grafana_alert(annotations={"value_B": "93.1 %"})

    (signal,) = GrafanaSource().parse(payload(alert), {})

    assert signal.annotations["value_B"] == "93.1 %"


def test_query_without_data_is_shown_not_dropped():
    (signal,) = GrafanaSource().parse(payload(grafana_alert(values={"A": None})), {})

    assert signal.annotations["value_A"] == "no data"


@pytest.mark.parametrize(
    ("urls", "expected"),
    [
        ({}, "https://grafana.example.com/d/node-exporter?orgId=1&viewPanel=3"),
        ({"panelURL": ""}, "https://grafana.example.com/d/node-exporter?orgId=1"),
        (
            {"panelURL": "", "dashboardURL": ""},
            "https://grafana.example.com/alerting/grafana/ddlk2w9nq1qf4a/view?orgId=1",
        ),
        ({"panelURL": "", "dashboardURL": "", "generatorURL": ""}, None),
    ],
)
def test_url_prefers_panel_then_dashboard_then_rule(urls, expected):
    (signal,) = GrafanaSource().parse(payload(grafana_alert(**urls)), {})

    assert signal.url == expected


def test_several_alerts_resolved_and_firing():
    signals = GrafanaSource().parse(
        payload(
            grafana_alert(),
            grafana_alert(
                status="resolved",
                fingerprint="0b1c2d3e4f506172",
                labels={"alertname": "NodeCPUHighUsage", "host": "web-03", "severity": "critical"},
                endsAt="2026-01-05T09:30:00Z",
            ),
        ),
        {},
    )

    assert [(s.labels["host"], s.status) for s in signals] == [
        ("web-02", SignalStatus.firing),
        ("web-03", SignalStatus.resolved),
    ]
    assert signals[1].severity is Severity.critical
    assert signals[1].ends_at is not None


def test_custom_template_body_is_rejected_naming_the_field():
    body = json.dumps({"text": "NodeCPUHighUsage is firing on web-02"}).encode()

    with pytest.raises(InvalidPayload) as caught:
        GrafanaSource().parse(body, {})

    assert caught.value.field == "alerts"


def test_non_numeric_value_names_the_field():
    with pytest.raises(InvalidPayload) as caught:
        GrafanaSource().parse(payload(grafana_alert(values={"B": "high"})), {})

    assert caught.value.field == "alerts.0.values.B"


def test_body_signature_accepted():
    body = payload()

    GrafanaSource().verify_signature({"X-Grafana-Alerting-Signature": sign(body)}, body, SECRET, NOW)


def test_header_names_are_case_insensitive():
    body = payload()

    GrafanaSource().verify_signature({"x-grafana-alerting-signature": sign(body)}, body, SECRET, NOW)


def test_wrong_signature_is_refused_naming_the_header_not_the_secret():
    body = payload()

    with pytest.raises(Unauthorized) as caught:
        GrafanaSource().verify_signature(
            {"X-Grafana-Alerting-Signature": hmac.new(b"other", body, hashlib.sha256).hexdigest()}, body, SECRET, NOW
        )

    assert "X-Grafana-Alerting-Signature" in str(caught.value)
    assert SECRET.decode() not in str(caught.value)
    assert sign(body) not in str(caught.value)


def test_signature_over_a_different_body_is_refused():
    body = payload()

    with pytest.raises(Unauthorized):
        GrafanaSource().verify_signature(
            {"X-Grafana-Alerting-Signature": sign(body)}, body.replace(b"web-02", b"web-99"), SECRET, NOW
        )


def test_missing_signature_is_refused():
    with pytest.raises(Unauthorized, match="X-Grafana-Alerting-Signature header is missing"):
        GrafanaSource().verify_signature({}, payload(), SECRET, NOW)


def test_custom_signature_header():
    body = payload()
    source = GrafanaSource(signature_header="X-Ooda-Grafana-Sig")

    source.verify_signature({"X-Ooda-Grafana-Sig": sign(body)}, body, SECRET, NOW)
    with pytest.raises(Unauthorized, match="X-Ooda-Grafana-Sig"):
        source.verify_signature({"X-Grafana-Alerting-Signature": sign(body)}, body, SECRET, NOW)


def test_timestamped_signature_accepted_within_the_window():
    body = payload()
    source = GrafanaSource(timestamp_header="X-Grafana-Alerting-Timestamp")
    sent = str(int(NOW) - 120)
    headers = {"X-Grafana-Alerting-Signature": sign(body, f"{sent}:".encode()), "X-Grafana-Alerting-Timestamp": sent}

    source.verify_signature(headers, body, SECRET, NOW)


def test_timestamped_source_refuses_a_body_only_signature():
    body = payload()
    source = GrafanaSource(timestamp_header="X-Grafana-Alerting-Timestamp")
    headers = {"X-Grafana-Alerting-Signature": sign(body), "X-Grafana-Alerting-Timestamp": str(int(NOW))}

    with pytest.raises(Unauthorized, match="does not match"):
        source.verify_signature(headers, body, SECRET, NOW)


def test_stale_timestamp_is_refused_even_when_correctly_signed():
    body = payload()
    source = GrafanaSource(timestamp_header="X-Grafana-Alerting-Timestamp", max_skew_s=60)
    sent = str(int(NOW) - 61)
    headers = {"X-Grafana-Alerting-Signature": sign(body, f"{sent}:".encode()), "X-Grafana-Alerting-Timestamp": sent}

    with pytest.raises(Unauthorized, match="X-Grafana-Alerting-Timestamp header is 61 s old"):
        source.verify_signature(headers, body, SECRET, NOW)


def test_missing_timestamp_is_refused():
    body = payload()
    source = GrafanaSource(timestamp_header="X-Grafana-Alerting-Timestamp")

    with pytest.raises(Unauthorized, match="X-Grafana-Alerting-Timestamp header is missing"):
        source.verify_signature({"X-Grafana-Alerting-Signature": sign(body)}, body, SECRET, NOW)


def test_nonsensical_skew_is_a_config_error():
    with pytest.raises(ConfigError, match="max_skew_s"):
        GrafanaSource(max_skew_s=0)
