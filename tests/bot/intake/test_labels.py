"""Label normalization: the workload, environment, host and consumer group of real alerts."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.intake.labels import EnvironmentRule, LabelNormalizer, host_of, workload_of
from bot.model.signals import Signal

RULES = [
    EnvironmentRule(environment="prod", label="cluster", match="prod-.*"),
    EnvironmentRule(environment="staging", label="cluster", match="staging-.*"),
    EnvironmentRule(environment="prod", label="namespace", match="payments"),
]
NORMALIZE = LabelNormalizer("dev", RULES)


@pytest.mark.parametrize(("labels", "expected"), [
    # KubePodCrashLooping: a Deployment's pod is <deployment>-<pod-template-hash>-<suffix>.
    ({"pod": "checkout-6f9c7b8d5-x7k2p"}, ("deployment", "checkout")),
    ({"pod": "warehouse-loader-5c7d9b4f8-qzt2v"}, ("deployment", "warehouse-loader")),
    ({"pod": "coredns-76f75df574-9rwx8"}, ("deployment", "coredns")),
    # A StatefulSet's pod is <statefulset>-<ordinal>.
    ({"pod": "redis-0"}, ("statefulset", "redis")),
    ({"pod": "kafka-broker-12"}, ("statefulset", "kafka-broker")),
    # A DaemonSet's (or a Job's) pod cannot be told apart by name: no guess.
    ({"pod": "node-exporter-x7k2p"}, None),
    # The object label of the alert wins over a pod name.
    ({"deployment": "checkout", "pod": "kube-state-metrics-6d8f7c5b9-abcde"}, ("deployment", "checkout")),
    ({"statefulset": "redis", "namespace": "cache"}, ("statefulset", "redis")),
    ({"daemonset": "node-exporter"}, ("daemonset", "node-exporter")),
    ({"job_name": "nightly-report-29145600", "job": "kube-state-metrics"}, ("job", "nightly-report-29145600")),
    # kube-state-metrics' kube_pod_owner: a ReplicaSet's name without its hash is the Deployment.
    ({"owner_kind": "ReplicaSet", "owner_name": "checkout-6f9c7b8d5"}, ("deployment", "checkout")),
    ({"owner_kind": "StatefulSet", "owner_name": "redis"}, ("statefulset", "redis")),
    # kubernetes-mixin's namespace_workload_pod:kube_pod_owner:relabel names it outright.
    ({"workload": "checkout", "workload_type": "deployment"}, ("deployment", "checkout")),
    ({"alertname": "NodeFilesystemAlmostOutOfSpace", "instance": "db-01:9100"}, None),
])
def test_the_workload_comes_from_the_labels_real_alerts_carry(labels, expected):
    assert workload_of(labels) == expected


@pytest.mark.parametrize(("instance", "host"), [
    ("db-01:9100", "db-01"),
    ("10.0.3.17:9100", "10.0.3.17"),
    ("[2001:db8::1]:9100", "2001:db8::1"),
    ("https://shop.example.com/health", "shop.example.com"),
    ("db-01.internal", "db-01.internal"),
    ("", None),
])
def test_host_is_the_instance_without_its_port(instance, host):
    assert host_of(instance) == host


@pytest.mark.parametrize(("labels", "env"), [
    ({"cluster": "prod-eu-1"}, "prod"),  # a prod cluster is prod without an env label
    ({"cluster": "staging-eu-1"}, "staging"),
    ({"namespace": "payments"}, "prod"),
    ({"env": "production"}, "prod"),
    ({"environment": "stage"}, "staging"),
    ({"env": "dev", "cluster": "prod-eu-1"}, "prod"),  # a label never makes an alert less protected
    ({"env": "prod", "cluster": "staging-eu-1"}, "prod"),
    ({"env": "qa"}, "dev"),
    ({}, "dev"),  # nothing says: the config's environment
    ({"env": "mars"}, "dev"),
])
def test_environment_is_the_strictest_that_any_label_or_rule_names(labels, env):
    assert NORMALIZE.labels(labels)["env"] == env


def test_normalized_signal_keeps_its_identity_and_the_sent_labels():
    sent = {"alertname": "KubePodCrashLooping", "namespace": "shop", "pod": "checkout-6f9c7b8d5-x7k2p",
            "container": "checkout", "cluster": "prod-eu-1", "instance": "10.2.0.7:8080",
            "consumergroup": "warehouse-loader"}
    signal = Signal(source="alertmanager", fingerprint="41f09c3a7be826d5", status="firing", labels=sent)

    normalized = NORMALIZE.signal(signal)

    assert normalized.id == signal.id
    assert normalized.labels == {**sent, "workload": "checkout", "workload_kind": "deployment", "env": "prod",
                                 "host": "10.2.0.7", "consumer_group": "warehouse-loader"}


def test_labels_the_sender_set_are_not_replaced():
    labels = NORMALIZE.labels({"pod": "checkout-6f9c7b8d5-x7k2p", "workload": "shop-api", "host": "db-01.internal",
                               "instance": "10.0.0.1:9100"})

    assert (labels["workload"], labels["workload_kind"], labels["host"]) == ("shop-api", "deployment", "db-01.internal")


@given(st.dictionaries(st.text(min_size=1, max_size=20), st.text(max_size=60), max_size=8))
def test_normalization_is_idempotent_and_only_adds_labels(labels):
    once = NORMALIZE.labels(labels)
    assert NORMALIZE.labels(once) == once
    assert {k: v for k, v in once.items() if k in labels and k != "env"} == {
        k: v for k, v in labels.items() if k != "env"}
    assert once["env"] in {"dev", "staging", "prod"}


def test_a_rule_must_name_a_known_environment_and_a_valid_regex():
    with pytest.raises(ValueError, match="must be one of dev, staging, prod"):
        EnvironmentRule(environment="production", label="cluster", match="prod-.*")
    with pytest.raises(ValueError, match="invalid regular expression"):
        EnvironmentRule(environment="prod", label="cluster", match="prod-(")
