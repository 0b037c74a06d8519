import pytest

from bot.errors import ConfigError
from bot.model.signals import Severity, Signal, SignalStatus
from bot.playbooks.matching import group_key, matches
from bot.playbooks.schema import ExtraTrigger, Playbook, PlaybookSet, Trigger


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
    t = trigger(match={"alertname": "NginxHighHttp5xxErrorRate", "env": "prod"})

    assert matches(t, signal(alertname="NginxHighHttp5xxErrorRate", env="prod", service="checkout"))
    assert not matches(t, signal(alertname="NginxHighHttp5xxErrorRate", env="staging"))
    assert not matches(t, signal(alertname="NginxHighHttp5xxErrorRate"))


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
            playbook("z-by-name", match={"alertname": "NginxHighHttp5xxErrorRate"}),
            playbook("a-by-regex", match_re={"alertname": ".*High.*"}),
            playbook("other", match={"alertname": "NodeFilesystemAlmostOutOfSpace"}),
            Playbook.model_validate({"id": "manual-only"}),
        ]
    )

    assert [p.id for p in playbooks.match(signal(alertname="NginxHighHttp5xxErrorRate"))] == ["a-by-regex", "z-by-name"]
    assert [p.id for p in playbooks.match(signal(alertname="NodeFilesystemAlmostOutOfSpace"))] == ["other"]
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


def test_match_in_alertnames_are_indexed_like_a_single_name() -> None:
    playbooks = PlaybookSet([playbook("node-filesystem-space", match_in={
        "alertname": ["NodeFilesystemSpaceFillingUp", "NodeFilesystemAlmostOutOfSpace"]})])

    assert [p.id for p in playbooks.match(signal(alertname="NodeFilesystemSpaceFillingUp"))] == [
        "node-filesystem-space"]
    assert [p.id for p in playbooks.match(signal(alertname="NodeFilesystemAlmostOutOfSpace"))] == [
        "node-filesystem-space"]
    assert playbooks.match(signal(alertname="NodeFilesystemAlmostOutOfFiles")) == []


def test_a_teams_own_alert_name_maps_onto_a_shipped_playbook_without_copying_it() -> None:
    playbooks = PlaybookSet([playbook("node-filesystem-space", match={"alertname": "NodeFilesystemAlmostOutOfSpace"},
                                      group_by=["instance", "mountpoint"])])
    playbooks.add_triggers({"node-filesystem-space": [
        ExtraTrigger.model_validate({"sources": ["grafana"], "match": {"alertname": "Disk space low"}}),
        ExtraTrigger.model_validate({"match_re": {"alertname": "NodeFilesystem.*"}}),
    ]})

    grafana = signal(source="grafana", alertname="Disk space low", instance="db-01:9100", mountpoint="/var")
    assert [p.id for p in playbooks.match(grafana)] == ["node-filesystem-space"]
    assert playbooks.match(signal(source="alertmanager", alertname="Disk space low")) == []  # sources hold
    # Its own trigger and a config one both match: the playbook is listed once.
    assert [p.id for p in playbooks.match(signal(alertname="NodeFilesystemAlmostOutOfSpace"))] == [
        "node-filesystem-space"]


def test_a_trigger_for_an_unknown_or_manual_playbook_is_a_config_error_naming_it() -> None:
    playbooks = PlaybookSet([playbook("node-filesystem-space", match={"alertname": "X"}),
                             Playbook.model_validate({"id": "manual-only"})])
    extra = [ExtraTrigger.model_validate({"match": {"alertname": "Disk space low"}})]

    with pytest.raises(ConfigError) as caught:
        playbooks.add_triggers({"node-filesytem-space": extra, "manual-only": extra})

    assert caught.value.problems == [
        "triggers.node-filesytem-space: no playbook 'node-filesytem-space' is loaded; did you mean "
        "'node-filesystem-space'? (loaded: manual-only, node-filesystem-space)",
        "triggers.manual-only: playbook 'manual-only' has no trigger (it runs by hand only), so alerts cannot be "
        "mapped onto it",
    ]
