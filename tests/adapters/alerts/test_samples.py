"""Every shipped sample parses with the adapter its file name names, with the labels playbooks match."""

import json
from pathlib import Path

import pytest

import bot
from adapters.alerts.alertmanager import AlertmanagerSource
from adapters.alerts.generic import GenericSource
from adapters.alerts.grafana import GrafanaSource
from adapters.alerts.pagerduty import PagerDutySource
from bot.signals import SignalStatus

SAMPLES = Path(bot.__file__).parent / "samples"
SOURCES = {
    "alertmanager": AlertmanagerSource(),
    "grafana": GrafanaSource(),
    "pagerduty": PagerDutySource(),
    "generic": GenericSource(),
}
SAMPLE_FILES = sorted(SAMPLES.glob("*.json"))


def parse_sample(name: str):
    return SOURCES[name.split("-", 1)[0]].parse((SAMPLES / f"{name}.json").read_bytes(), {})


def test_samples_exist():
    assert {path.stem for path in SAMPLE_FILES} >= {
        "alertmanager-disk-pressure",
        "alertmanager-disk-pressure-resolved",
        "alertmanager-5xx-spike",
        "alertmanager-crashloop",
        "alertmanager-login-failures",
        "alertmanager-consumer-lag",
        "alertmanager-group",
        "grafana-high-cpu",
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
    ("name", "labels"),
    [
        (
            "alertmanager-disk-pressure",
            {
                "alertname": "DiskPressure",
                "severity": "warning",
                "env": "dev",
                "service": "storage",
                "team": "platform",
                "instance": "scratch-01",
                "mountpoint": "/var/scratch",
            },
        ),
        (
            "alertmanager-5xx-spike",
            {
                "alertname": "High5xxRate",
                "severity": "critical",
                "env": "prod",
                "service": "checkout",
                "team": "payments",
                "route": "/api/cart",
            },
        ),
        (
            "alertmanager-crashloop",
            {
                "alertname": "KubePodCrashLooping",
                "severity": "warning",
                "env": "staging",
                "namespace": "payments",
                "deployment": "ledger",
                "pod": "ledger-7d9f-abc12",
                "team": "payments",
            },
        ),
        (
            "alertmanager-login-failures",
            {
                "alertname": "LoginFailureSpike",
                "severity": "warning",
                "env": "prod",
                "service": "identity",
                "team": "identity",
                "user_id": "u-48213",
            },
        ),
        (
            "alertmanager-consumer-lag",
            {
                "alertname": "KafkaConsumerLag",
                "severity": "warning",
                "env": "prod",
                "service": "warehouse-loader",
                "team": "data",
                "consumer_group": "warehouse-loader",
                "topic": "orders",
            },
        ),
    ],
)
def test_alertmanager_samples_carry_the_labels_playbooks_match(name, labels):
    (signal,) = parse_sample(name)

    assert signal.labels.items() >= labels.items()
    assert signal.status is SignalStatus.firing


def test_disk_pressure_summary():
    (signal,) = parse_sample("alertmanager-disk-pressure")

    assert signal.title == "/var/scratch at 93% on scratch-01"


def test_disk_pressure_resolved_is_the_same_alert():
    (firing,) = parse_sample("alertmanager-disk-pressure")
    (resolved,) = parse_sample("alertmanager-disk-pressure-resolved")

    assert resolved.status is SignalStatus.resolved
    assert resolved.id == firing.id
    assert resolved.labels == firing.labels


def test_group_sample_has_several_instances_of_one_alert_in_mixed_states():
    signals = parse_sample("alertmanager-group")

    assert len(signals) == 3
    assert len({signal.labels["alertname"] for signal in signals}) == 1
    assert len({signal.id for signal in signals}) == 3
    assert {signal.status for signal in signals} == {SignalStatus.firing, SignalStatus.resolved}


def test_pagerduty_samples_are_one_incident():
    (triggered,) = parse_sample("pagerduty-triggered")
    (resolved,) = parse_sample("pagerduty-resolved")

    assert (triggered.status, resolved.status) == (SignalStatus.firing, SignalStatus.resolved)
    assert triggered.id == resolved.id
