"""Every shipped sample parses with the adapter its file name names, with the labels playbooks match."""

import json
from pathlib import Path
from typing import Any

import pytest

import bot
from adapters.alerts.alertmanager import AlertmanagerSource
from adapters.alerts.generic import GenericSource
from adapters.alerts.grafana import GrafanaSource
from adapters.alerts.pagerduty import PagerDutySource
from bot.model.signals import Severity, SignalStatus

SAMPLES = Path(bot.__file__).parent / "samples"
SOURCES: dict[str, Any] = {
    "alertmanager": AlertmanagerSource(),
    "grafana": GrafanaSource(),
    "pagerduty": PagerDutySource(),
    "generic": GenericSource(),
}
SAMPLE_FILES = sorted(SAMPLES.glob("*.json"))
KSM_SCRAPE = {"job": "kube-state-metrics", "container": "kube-state-metrics", "endpoint": "http",
              "service": "kube-prometheus-stack-kube-state-metrics"}


def parse_sample(name: str):
    return SOURCES[name.split("-", 1)[0]].parse((SAMPLES / f"{name}.json").read_bytes(), {})


def test_samples_exist():
    assert {path.stem for path in SAMPLE_FILES} == {
        "alertmanager-node-filesystem-space",
        "alertmanager-node-filesystem-space-resolved",
        "alertmanager-kube-pod-crashlooping",
        "alertmanager-kube-deployment-replicas",
        "alertmanager-kube-job-failed",
        "alertmanager-target-down",
        "alertmanager-http-5xx",
        "alertmanager-kafka-consumer-lag",
        "alertmanager-certificate-expiry",
        "alertmanager-group",
        "alertmanager-watchdog",
        "grafana-login-failures",
        "grafana-disk-space",
        "pagerduty-triggered",
        "pagerduty-resolved",
        "generic-backup",
    }


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda path: path.stem)
def test_every_sample_parses_with_its_adapter(path):
    assert path.stem.split("-", 1)[0] in SOURCES, f"{path.name}: the prefix must name an alert source"

    signals = parse_sample(path.stem)

    assert signals, f"{path.name} produced no signal"
    assert all(signal.title for signal in signals)
    json.dumps([signal.raw for signal in signals])


def test_readme_lists_every_sample():
    readme = (SAMPLES / "README.md").read_text()

    assert [path.stem for path in SAMPLE_FILES if f"`{path.stem}`" not in readme] == []


@pytest.mark.parametrize(
    ("name", "labels", "severity"),
    [
        ("alertmanager-node-filesystem-space",
         {"alertname": "NodeFilesystemAlmostOutOfSpace", "severity": "critical", "instance": "db-01:9100",
          "mountpoint": "/var", "job": "node-exporter", "device": "/dev/nvme1n1p1", "fstype": "xfs"},
         Severity.critical),
        ("alertmanager-kube-pod-crashlooping",
         {"alertname": "KubePodCrashLooping", "severity": "warning", "namespace": "shop",
          "pod": "checkout-6f9c7b8d5-x7k2p", "reason": "CrashLoopBackOff", "cluster": "staging-eu-1", **KSM_SCRAPE,
          "container": "checkout"}, Severity.warning),
        ("alertmanager-kube-deployment-replicas",
         {"alertname": "KubeDeploymentReplicasMismatch", "namespace": "shop", "deployment": "checkout", **KSM_SCRAPE},
         Severity.warning),
        ("alertmanager-kube-job-failed",
         {"alertname": "KubeJobFailed", "namespace": "batch", "job_name": "nightly-report-29145600", **KSM_SCRAPE},
         Severity.warning),
        ("alertmanager-target-down",
         {"alertname": "TargetDown", "namespace": "payments", "job": "payments-api", "service": "payments-api"},
         Severity.warning),
        ("alertmanager-http-5xx", {"alertname": "NGINXTooMany500s", "cluster": "prod-eu-1"}, Severity.warning),
        ("alertmanager-kafka-consumer-lag", {"alertname": "KafkaConsumerGroupLag", "consumergroup": "warehouse-loader"},
         Severity.warning),
        ("alertmanager-certificate-expiry",
         {"alertname": "BlackboxSslCertificateWillExpireSoon", "instance": "https://shop.example.com"},
         Severity.warning),
        ("grafana-login-failures",
         {"alertname": "Login failure ratio high", "grafana_folder": "Auth", "service": "identity-api"},
         Severity.warning),
        ("grafana-disk-space",
         {"alertname": "Disk space low", "instance": "files-02:9100", "mountpoint": "/srv/share"}, Severity.warning),
    ],
)
def test_samples_carry_the_labels_playbooks_match(name, labels, severity):
    (signal,) = parse_sample(name)

    assert signal.labels.items() >= labels.items()
    assert signal.status is SignalStatus.firing
    assert signal.severity is severity


def test_alertmanager_samples_carry_alertmanagers_own_fingerprints():
    # prometheus/common model.LabelSet.Fingerprint: FNV-1a 64 over the sorted names and values.
    def fingerprint(labels: dict[str, str]) -> str:
        value = 0xCBF29CE484222325
        for name in sorted(labels):
            for byte in name.encode() + b"\xff" + labels[name].encode() + b"\xff":
                value = ((value ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
        return f"{value:016x}"

    for path in SAMPLES.glob("alertmanager-*.json"):
        for alert in json.loads(path.read_bytes())["alerts"]:
            assert alert["fingerprint"] == fingerprint(alert["labels"]), path.name


def test_node_filesystem_summary_is_the_rules_text():
    (signal,) = parse_sample("alertmanager-node-filesystem-space")

    assert signal.title == "Filesystem has less than 3% space left."
    assert signal.annotations["runbook_url"].endswith("/runbooks/node/nodefilesystemalmostoutofspace")


def test_node_filesystem_resolved_is_the_same_alert():
    (firing,) = parse_sample("alertmanager-node-filesystem-space")
    (resolved,) = parse_sample("alertmanager-node-filesystem-space-resolved")

    assert resolved.status is SignalStatus.resolved
    assert resolved.id == firing.id
    assert resolved.labels == firing.labels
    assert resolved.ends_at is not None and firing.ends_at is None


def test_group_sample_has_several_instances_of_one_alert_in_mixed_states():
    signals = parse_sample("alertmanager-group")

    assert len(signals) == 3
    assert {signal.labels["alertname"] for signal in signals} == {"NodeFilesystemSpaceFillingUp"}
    assert {signal.labels["instance"] for signal in signals} == {"web-01:9100", "web-02:9100", "web-03:9100"}
    assert sorted(signal.status for signal in signals) == [SignalStatus.firing, SignalStatus.firing,
                                                           SignalStatus.resolved]


def test_watchdog_is_a_heartbeat_without_severity():
    (signal,) = parse_sample("alertmanager-watchdog")

    assert signal.labels["alertname"] == "Watchdog"
    assert signal.labels["severity"] == "none"
    assert signal.severity is Severity.info


def test_grafana_values_become_annotations():
    (signal,) = parse_sample("grafana-login-failures")

    assert signal.annotations["value_B"] == "12.4"
    assert signal.url is not None and "viewPanel=14" in signal.url


def test_pagerduty_samples_are_one_incident():
    (triggered,) = parse_sample("pagerduty-triggered")
    (resolved,) = parse_sample("pagerduty-resolved")

    assert (triggered.status, resolved.status) == (SignalStatus.firing, SignalStatus.resolved)
    assert triggered.id == resolved.id
    assert triggered.labels.items() >= {"service": "Checkout API", "urgency": "high", "priority": "P1"}.items()
    assert triggered.severity is Severity.critical
