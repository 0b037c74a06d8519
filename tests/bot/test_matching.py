from bot.matching import group_key, matches
from bot.playbooks import Playbook, PlaybookSet, Trigger
from bot.signals import Severity, Signal, SignalStatus


def signal(source: str = "alertmanager", severity: Severity = Severity.critical, **labels: str) -> Signal:
    return Signal(
        source=source,
        fingerprint="fp-" + "-".join(labels.values()),
        status=SignalStatus.firing,
        severity=severity,
        labels=labels,
    )


def trigger(**fields) -> Trigger:
    return Trigger.model_validate(fields)


def test_equality_matchers() -> None:
    t = trigger(match={"alertname": "High5xxRate", "env": "prod"})

    assert matches(t, signal(alertname="High5xxRate", env="prod", service="checkout"))
    assert not matches(t, signal(alertname="High5xxRate", env="staging"))
    assert not matches(t, signal(alertname="High5xxRate"))


def test_regex_matchers_are_anchored() -> None:
    t = trigger(match_re={"service": "checkout|cart"})

    assert matches(t, signal(service="checkout"))
    assert matches(t, signal(service="cart"))
    assert not matches(t, signal(service="checkout-v2"))
    assert not matches(t, signal(service="my-cart"))
    assert not matches(t, signal())


def test_set_matchers() -> None:
    t = trigger(match_in={"env": ["prod", "staging"]})

    assert matches(t, signal(env="prod"))
    assert matches(t, signal(env="staging"))
    assert not matches(t, signal(env="dev"))


def test_missing_label_counts_as_empty_like_alertmanager() -> None:
    assert matches(trigger(match={"team": ""}), signal(alertname="X"))
    assert matches(trigger(match_re={"team": ".*"}), signal(alertname="X"))
    assert not matches(trigger(match_re={"team": ".+"}), signal(alertname="X"))


def test_severity_and_source() -> None:
    t = trigger(sources=["alertmanager", "grafana"], severity=["critical", "warning"])

    assert matches(t, signal(source="grafana", severity=Severity.warning))
    assert not matches(t, signal(source="pagerduty"))
    assert not matches(t, signal(severity=Severity.info))
    assert matches(trigger(), signal(source="anything", severity=Severity.info))


def test_yaml_numbers_compare_as_label_strings() -> None:
    assert matches(trigger(match={"code": 500}, match_in={"port": [8080]}), signal(code="500", port="8080"))


def playbook(pid: str, **trig) -> Playbook:
    return Playbook.model_validate({"id": pid, "trigger": trig})


def test_group_key_is_stable_and_independent_of_group_by_order() -> None:
    a = playbook("disk-pressure", group_by=["instance", "mountpoint"])
    b = playbook("disk-pressure", group_by=["mountpoint", "instance"])
    labels = {"instance": "scratch-01", "mountpoint": "/var/scratch", "env": "dev"}

    assert group_key(a, labels) == 'disk-pressure{instance="scratch-01",mountpoint="/var/scratch"}'
    assert group_key(b, dict(reversed(labels.items()))) == group_key(a, labels)
    assert a.group_key({"instance": "scratch-02", "mountpoint": "/var/scratch"}) != group_key(a, labels)


def test_group_key_includes_playbook_id_and_renders_missing_labels_empty() -> None:
    labels = {"service": "checkout"}

    assert group_key(playbook("a", group_by=["service", "zone"]), labels) == 'a{service="checkout",zone=""}'
    svc = ["service"]
    assert group_key(playbook("b", group_by=svc), labels) != group_key(playbook("c", group_by=svc), labels)
    assert group_key(playbook("d"), labels) == "d{}"


def test_group_key_values_cannot_forge_other_labels() -> None:
    pb = playbook("p", group_by=["a", "b"])

    forged = group_key(pb, {"a": 'x",b="y', "b": ""})
    assert forged != group_key(pb, {"a": "x", "b": "y"})


def test_playbook_set_matches_indexed_and_unindexed_triggers_in_id_order() -> None:
    playbooks = PlaybookSet(
        [
            playbook("z-by-name", match={"alertname": "High5xxRate"}),
            playbook("a-by-regex", match_re={"alertname": "High.*"}),
            playbook("other", match={"alertname": "DiskPressure"}),
            Playbook.model_validate({"id": "manual-only"}),
        ]
    )

    assert [p.id for p in playbooks.match(signal(alertname="High5xxRate"))] == ["a-by-regex", "z-by-name"]
    assert [p.id for p in playbooks.match(signal(alertname="DiskPressure"))] == ["other"]
    assert playbooks.match(signal(alertname="Unrelated")) == []


def test_alert_storm_matches_every_signal_to_the_right_playbooks() -> None:
    playbooks = PlaybookSet(
        [playbook(f"pb-{i}", match={"alertname": f"Alert{i}"}, match_re={"service": "svc-[0-9]+"}) for i in range(40)]
        + [playbook(f"re-{i}", match_re={"alertname": f"Alert{i}[0-9]"}) for i in range(5)]
    )
    storm = [signal(alertname=f"Alert{i % 50}", service=f"svc-{i}") for i in range(10_000)]

    matched = [[p.id for p in playbooks.match(s)] for s in storm]

    assert matched[7] == ["pb-7"]
    assert matched[13] == ["pb-13", "re-1"]
    assert matched[45] == ["re-4"]  # no playbook by name for Alert45; the regex one still sees it
    assert matched[5] == ["pb-5"]
    # Alert0..39 match one pb-*, Alert10..49 one re-*: 40 of every 50 names each.
    assert sum(map(len, matched)) == 8_000 + 8_000
