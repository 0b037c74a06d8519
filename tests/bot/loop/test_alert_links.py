"""The silence link a proposal shows: built from the alert as Alertmanager sent it, or none."""

from __future__ import annotations

from urllib.parse import unquote

from bot.loop.alert_links import SILENCE_ANNOTATION, links_of, silence_link
from bot.model.signals import Signal

SENT_LABELS = {"alertname": "KubePodCrashLooping", "namespace": "shop", "pod": "checkout-6f9c7b8d5-x7k2p",
               "env": "dev"}
SENT = {"labels": SENT_LABELS, "externalURL": "http://alertmanager:9093/", "groupKey": "{}:{}"}


def stored(labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None) -> Signal:
    # Intake adds derived labels and may make env stricter: the stored labels are not the sent ones.
    return Signal(source="alertmanager", fingerprint="f00d", status="firing", title="crash looping",
                  labels=labels or {**SENT_LABELS, "env": "prod", "workload": "checkout"},
                  annotations=annotations or {"summary": "crash looping"})


def test_the_silence_matches_the_labels_as_sent_not_the_normalized_ones():
    url = silence_link(stored(), SENT, 4096)
    assert url is not None and url.startswith("http://alertmanager:9093/#/silences/new?filter=")
    matchers = unquote(url.split("filter=", 1)[1])
    assert matchers == ('{alertname="KubePodCrashLooping",env="dev",namespace="shop",'
                        'pod="checkout-6f9c7b8d5-x7k2p"}')
    assert "workload" not in matchers  # a label Alertmanager never had would match nothing


def test_quotes_and_backslashes_in_a_label_are_escaped_in_the_matcher():
    url = silence_link(stored(), {**SENT, "labels": {"alertname": 'say "hi"\\'}}, 4096)
    assert unquote(url.split("filter=", 1)[1]) == '{alertname="say \\"hi\\"\\\\"}'


def test_grafanas_own_link_is_shown_as_sent():
    own = "https://grafana.example/alerting/silence/new?alertmanager=grafana"
    assert silence_link(stored(annotations={SILENCE_ANNOTATION: own}), SENT, 4096) == own


def test_no_link_when_it_would_match_nothing_or_open_the_wrong_page():
    cut = {**SENT, "labels": {**SENT_LABELS, "stack": "s" * 10 + "… [cut by Ooda: 17408 bytes, first 4096 kept]"}}
    assert silence_link(stored(), cut, 4096) is None  # a cut value matches no alert
    many = {**SENT, "labels": {f"label{i}": "v" * 500 for i in range(12)}}
    assert silence_link(stored(), many, 4096) is None  # longer than intake keeps any value
    assert silence_link(stored(), {**SENT, "externalURL": "javascript:alert(1)"}, 4096) is None
    assert silence_link(stored(), {**SENT, "silenceURL": "ftp://not-a-web-page"}, 4096) is None
    assert silence_link(stored(), None, 4096) is None  # nothing kept of what was sent


def test_the_silence_is_the_last_of_the_links_and_shown_once():
    signal = stored(annotations={"runbook_url": "https://runbooks.example/kubepodcrashlooping"})
    links = links_of([signal], silence_link(signal, SENT, 4096))
    assert [link.title for link in links] == ["runbook", "silence"]
