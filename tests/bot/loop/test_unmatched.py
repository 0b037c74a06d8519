"""Alerts that match no playbook are counted, listed (API, CLI, digest) and optionally told to chat.

The App runs in-process on the example config and receives Alertmanager bodies of alerts teams
really run: Watchdog (kube-prometheus), NodeClockSkewDetected (node-mixin) and CPUThrottlingHigh
(kubernetes-mixin), next to kube-prometheus's TargetDown, which the one playbook the tests load
handles (their own, so a playbook shipped later for one of these alerts changes nothing here).
The engine saves its cursor with every group it commits, so the matched alert also marks
everything before it as looked at.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter
from structlog.testing import capture_logs

from bot.app import App
from bot.audit.chain import AuditEntry
from bot.chat.commands import UnmatchedAlert
from bot.chat.wording import ZWSP
from bot.cli import main
from bot.loop.engine import CURSOR_KEY
from bot.metrics import UNMATCHED_NAMES_MAX, UnmatchedCounter
from bot.model.events import EventBus
from bot.model.signals import Signal, fingerprint_of
from bot.scheduler import unmatched_fyi_text
from bot.store.protocol import TaskOps
from bot.store.sqlite import SqliteStore
from tests.bot.web.test_api import metric
from tests.harness import ADMIN, AM, ENV, client, running_app, running_standin

WATCHDOG = {
    "labels": {"alertname": "Watchdog", "prometheus": "monitoring/k8s", "severity": "none"},
    "annotations": {
        "summary": "An alert that should always be firing to certify that Alertmanager is working properly.",
        "runbook_url": "https://runbooks.prometheus-operator.dev/runbooks/general/watchdog",
    },
}


def clock_skew(instance: str) -> dict[str, Any]:
    return {
        "labels": {"alertname": "NodeClockSkewDetected", "container": "kube-rbac-proxy", "endpoint": "https",
                   "instance": instance, "job": "node-exporter", "namespace": "monitoring",
                   "pod": f"node-exporter-{instance.split(':')[0]}", "service": "node-exporter",
                   "severity": "warning"},
        "annotations": {
            "summary": "Clock skew detected.",
            "description": f"Clock at {instance} is out of sync by more than 0.05s. Ensure NTP is configured "
                           "correctly on this host.",
            "runbook_url": "https://runbooks.prometheus-operator.dev/runbooks/node/nodeclockskewdetected",
        },
    }


def cpu_throttling(pod: str) -> dict[str, Any]:
    return {
        "labels": {"alertname": "CPUThrottlingHigh", "container": "api", "namespace": "shop", "pod": pod,
                   "severity": "info"},
        "annotations": {
            "summary": "Processes experience elevated CPU throttling.",
            "description": f"41.7% throttling of CPU in namespace shop for container api in pod {pod}.",
            "runbook_url": "https://runbooks.prometheus-operator.dev/runbooks/kubernetes/cputhrottlinghigh",
        },
    }


def body(*alerts: dict[str, Any], status: str = "firing") -> dict[str, Any]:
    """An Alertmanager webhook body (version 4); each alert's fingerprint stands for its label set."""
    return {
        "receiver": "ooda", "status": status, "version": "4", "groupKey": "{}:{}", "truncatedAlerts": 0,
        "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
        "externalURL": "http://alertmanager.monitoring:9093",
        "alerts": [{**alert, "status": status, "startsAt": "2026-01-05T09:00:12.482Z",
                    "endsAt": "2026-01-05T09:30:12.482Z" if status == "resolved" else "0001-01-01T00:00:00Z",
                    "generatorURL": "http://prometheus.monitoring:9090/graph",
                    "fingerprint": fingerprint_of("alertmanager", alert["labels"])}
                   for alert in alerts],
    }


TARGET_DOWN = {
    "labels": {"alertname": "TargetDown", "job": "node-exporter", "namespace": "monitoring",
               "service": "node-exporter", "severity": "warning"},
    "annotations": {
        "summary": "One or more targets are unreachable.",
        "description": "100% of the node-exporter/node-exporter targets in monitoring namespace are down.",
        "runbook_url": "https://runbooks.prometheus-operator.dev/runbooks/general/targetdown",
    },
}
PLAYBOOK = """\
id: target-down
version: "1"
description: Scrape targets are unreachable; a person looks at which.
trigger:
  match: {alertname: TargetDown}
  group_by: [namespace, job]
autonomy_cap: L1
"""


def with_playbook(tmp_path: Path, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Config overrides loading only the target-down playbook above."""
    folder = tmp_path / "playbooks"
    folder.mkdir(exist_ok=True)
    (folder / "target-down.yaml").write_text(PLAYBOOK, encoding="utf-8")
    return {"playbooks_dir": str(folder), **(overrides or {})}


@asynccontextmanager
async def served(tmp_path: Path, overrides: dict[str, Any] | None = None,
                 **app_kwargs: Any) -> AsyncIterator[tuple[App, httpx.AsyncClient]]:
    """The App on the example config, with only the target-down playbook loaded."""
    async with running_standin() as standin, \
            running_app(tmp_path, standin, with_playbook(tmp_path, overrides), **app_kwargs) as app, \
            client(app) as http:
        yield app, http


async def post(http: httpx.AsyncClient, payload: dict[str, Any]) -> None:
    r = await http.post("/webhooks/alertmanager", json=payload, headers=AM)
    assert r.status_code == 202, r.text


async def settle(app: App, http: httpx.AsyncClient) -> None:
    """Deliver the matched TargetDown alert and wait: its group commit saves the engine's cursor."""
    await post(http, body(TARGET_DOWN))
    await app.engine.wait_idle()


async def fire_the_unmatched(app: App, http: httpx.AsyncClient) -> None:
    await post(http, body(WATCHDOG))
    await post(http, body(clock_skew("db-03:9100"), clock_skew("db-02:9100"), clock_skew("db-01:9100")))
    await post(http, body(cpu_throttling("api-7c9f8d-x2xkq"), cpu_throttling("api-7c9f8d-5bnwz")))
    # Alertmanager repeats a firing alert and later sends it resolved: still one alert.
    await post(http, body(clock_skew("db-02:9100")))
    await post(http, body(clock_skew("db-02:9100"), status="resolved"))
    await settle(app, http)


async def test_the_api_lists_unmatched_alert_names_and_not_a_matched_one(tmp_path):
    async with served(tmp_path) as (app, http):
        await fire_the_unmatched(app, http)

        r = await http.get("/api/v1/signals", params={"unmatched": "true", "since": "24h"}, headers=ADMIN)
        assert r.status_code == 200, r.text
        data = r.json()
        assert data["names"] == 3
        listed = [(a["alertname"], a["count"], a["deliveries"]) for a in data["alerts"]]
        assert listed == [("NodeClockSkewDetected", 3, 5), ("CPUThrottlingHigh", 2, 2), ("Watchdog", 1, 1)]
        skew = data["alerts"][0]
        assert skew["source"] == "alertmanager" and skew["severity"] == "warning"
        assert skew["example_labels"]["instance"] == "db-02:9100"  # the latest delivery: the resolved one
        assert skew["first_seen"] <= skew["last_seen"]
        assert (await app.store.list_tasks(open_only=False))[0].playbook_id == "target-down"

        first = await http.get("/api/v1/signals", params={"unmatched": "true", "limit": "1"}, headers=ADMIN)
        assert first.json()["names"] == 3 and [a["alertname"] for a in first.json()["alerts"]] == [
            "NodeClockSkewDetected"]
        later = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
        none = await http.get("/api/v1/signals", params={"unmatched": "true", "since": later}, headers=ADMIN)
        assert none.json()["names"] == 0 and none.json()["alerts"] == []

        reads = [row async for row in app.store.audit_rows() if row[3] == "api.read" and "/api/v1/signals" in row[6]]
        assert len(reads) == 3 and {row[2] for row in reads} == {"local-admin"}


async def test_the_counter_moves_once_per_alert_that_starts_firing(tmp_path):
    async with served(tmp_path) as (app, http):
        await fire_the_unmatched(app, http)
        name = "ooda_unmatched_signals_total"
        assert await metric(http, name, alertname="NodeClockSkewDetected") == 3  # not the repeat, not the resolve
        assert await metric(http, name, alertname="CPUThrottlingHigh") == 2
        assert await metric(http, name, alertname="Watchdog") == 1
        assert await metric(http, name, alertname="TargetDown") == 0

        await post(http, body(clock_skew("db-02:9100")))  # fires again after it resolved: a new episode
        await settle(app, http)
        assert await metric(http, name, alertname="NodeClockSkewDetected") == 4


def test_the_counter_bounds_its_label_values():
    registry = CollectorRegistry()
    unmatched = UnmatchedCounter(Counter("unmatched", "test", ["alertname"], registry=registry))
    unmatched.observe((f"sig-{n}", f"TemplatedAlert{n}", True) for n in range(UNMATCHED_NAMES_MAX + 50))
    unmatched.observe([("sig-long", "X" * 500, True), ("sig-0", "TemplatedAlert0", True)])

    samples = {s.labels["alertname"]: s.value for family in registry.collect()
               for s in family.samples if s.name == "unmatched_total"}
    assert len(samples) == UNMATCHED_NAMES_MAX + 1
    assert samples["other"] == 51  # the 50 names past the cap, and the long one
    assert samples["TemplatedAlert0"] == 1  # its redelivery was not counted
    assert all(len(label) <= 100 for label in samples)


async def test_bad_query_parameters_are_refused_naming_the_parameter(tmp_path):
    async with served(tmp_path) as (app, http):
        assert await app.store.signal_count() == 0
        cases = {
            "unmatched: the allowed value is true": [{}, {"unmatched": "false"}, {"unmatched": "yes"}],
            "since: give an ISO 8601 time": [{"unmatched": "true", "since": "yesterday"},
                                             {"unmatched": "true", "since": "24"}],
            "since: at most 3650 days back": [{"unmatched": "true", "since": "1999-01-01T00:00:00Z"}],
            "limit must be a whole number from 1 to 1000": [{"unmatched": "true", "limit": v}
                                                            for v in ("0", "1001", "ten")],
        }
        for message, queries in cases.items():
            for query in queries:
                r = await http.get("/api/v1/signals", params=query, headers=ADMIN)
                assert r.status_code == 400, (query, r.text)
                assert r.json()["error"] in {"bad_request", "invalid_parameter"}, r.text
                assert r.json()["message"].startswith(message), r.text
        ok = await http.get("/api/v1/signals", params={"unmatched": "TRUE", "since": "7d", "limit": "1000"},
                            headers=ADMIN)
        assert ok.status_code == 200 and ok.json()["names"] == 0
        assert (await http.get("/api/v1/signals", params={"unmatched": "true"})).status_code == 401


async def test_the_cli_lists_them_and_says_what_to_do(tmp_path, capsys, monkeypatch):
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    config = str(tmp_path / "config.yaml")

    async def ooda(*argv: str) -> tuple[int, str, str]:
        code = await asyncio.to_thread(main, [*argv, "--config", config])
        out, err = capsys.readouterr()
        return code, out, err

    with capture_logs():  # the server's log lines stay out of the CLI's output
        async with served(tmp_path) as (app, http):
            monkeypatch.setenv("OODA_URL", f"http://127.0.0.1:{app.port}")
            await fire_the_unmatched(app, http)

            code, out, _ = await ooda("signals", "--unmatched", "--since", "24h")
            assert code == 0, out
            lines = out.splitlines()
            assert lines[0].split() == ["ALERTNAME", "COUNT", "LAST", "SEEN", "SOURCE", "EXAMPLE", "LABELS"]
            assert lines[1].split()[:2] == ["NodeClockSkewDetected", "3"]
            assert datetime.now(UTC).strftime("%Y-%m-%dT") in lines[1] and "alertmanager" in lines[1]
            assert "instance=db-02:9100, pod=node-exporter-db-02" in lines[1]  # where it fired comes first
            assert [line.split()[0] for line in lines[2:4]] == ["CPUThrottlingHigh", "Watchdog"]
            assert "TargetDown" not in out
            assert lines[-1] == ("3 alert names matched no playbook: write one, or map a team's alert name onto "
                                 "an existing playbook under `triggers:` in the config")

            code, out, _ = await ooda("signals", "--unmatched", "--limit", "2", "--json")
            data = json.loads(out)
            assert code == 0 and data["names"] == 3 and len(data["alerts"]) == 2

            code, out, _ = await ooda("signals", "--unmatched", "--limit", "1")
            assert "(the first 1 of 3; raise --limit to see more)" in out

            code, _, err = await ooda("signals")
            assert code == 1 and "add --unmatched" in err
            code, _, err = await ooda("signals", "--unmatched", "--since", "last tuesday")
            assert code == 1 and "400" in err and "since: give an ISO 8601 time" in err


async def test_the_digest_names_the_top_unmatched_alerts(tmp_path):
    async with served(tmp_path) as (app, http):
        await fire_the_unmatched(app, http)
        digest = await app.commands.digest()
    times = "\N{MULTIPLICATION SIGN}"
    [unmatched] = [s for s in digest.sections if s.heading.startswith("Unmatched alerts")]
    assert unmatched.lines == [f"NodeClockSkewDetected {times}3", f"CPUThrottlingHigh {times}2", f"Watchdog {times}1"]
    assert "NodeClockSkewDetected" in digest.text


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def notices(logs: list[dict[str, Any]]) -> list[tuple[str | None, str]]:
    return [(e["channel"], e["text"]) for e in logs if e["event"] == "notice"]


async def test_the_fyi_tells_chat_once_per_alert_name_per_interval(tmp_path):
    clock = Clock()
    fyi = {"engine": {"unmatched_fyi": {"enabled": True, "channel": "#ops-fyi", "min_interval_s": 3600}}}
    async with served(tmp_path, fyi, clock=clock) as (app, http):
        assert app.scheduler.job("unmatched_fyi")
        await fire_the_unmatched(app, http)
        with capture_logs() as logs:
            told = await app.scheduler.post_unmatched_fyi()
        assert sorted(told) == ["CPUThrottlingHigh", "NodeClockSkewDetected", "Watchdog"]
        posted = notices(logs)
        assert {channel for channel, _ in posted} == {"#ops-fyi"} and len(posted) == 3
        assert ("FYI: CPUThrottlingHigh (info, pod api-7c9f8d-5bnwz) matched no playbook; 2 times in the last "
                "hour. `ooda signals --unmatched` lists all.") in [text for _, text in posted]
        assert ("FYI: NodeClockSkewDetected (warning, instance db-02:9100) matched no playbook; 3 times in the "
                "last hour. `ooda signals --unmatched` lists all.") in [text for _, text in posted]

        with capture_logs() as logs:
            assert await app.scheduler.post_unmatched_fyi() == []
        assert notices(logs) == []

        await post(http, body(clock_skew("db-04:9100")))  # new, but within the hour of the last notice
        await settle(app, http)
        assert await app.scheduler.post_unmatched_fyi() == []

        clock.now += timedelta(hours=1)
        with capture_logs() as logs:
            told = await app.scheduler.post_unmatched_fyi()
        # Only the name seen again since its notice; Watchdog and CPUThrottlingHigh stayed quiet.
        assert told == ["NodeClockSkewDetected"]
        assert [text for _, text in notices(logs)] == [
            "FYI: NodeClockSkewDetected (warning, instance db-04:9100) matched no playbook; 4 times in the last "
            "hour. `ooda signals --unmatched` lists all."]
        assert await app.scheduler.post_unmatched_fyi() == []


async def test_the_fyi_is_off_unless_configured(tmp_path):
    async with served(tmp_path) as (app, _):
        with pytest.raises(KeyError):
            app.scheduler.job("unmatched_fyi")


def test_the_fyi_text_defuses_mentions_and_caps_label_values():
    now = datetime.now(UTC)
    alert = UnmatchedAlert(alertname="<!channel> @everyone " + "A" * 300, count=1, deliveries=1, first_seen=now,
                           last_seen=now, source="alertmanager", severity="warning",
                           example_labels={"instance": "@here " + "h" * 500})
    text = unmatched_fyi_text(alert, 7200)
    assert "<!channel>" not in text and "@everyone" not in text and "@here" not in text
    assert f"<{ZWSP}!channel>" in text and f"@{ZWSP}everyone" in text and f"@{ZWSP}here" in text
    assert "A" * 101 not in text and "h" * 61 not in text
    assert "matched no playbook; once in the last 2 hours." in text
    assert len(text) < 300


async def test_only_signals_behind_the_engine_cursor_and_in_no_task_are_unmatched(tmp_path):
    store = SqliteStore(tmp_path / "ooda.db", EventBus())
    await store.open()
    try:
        signals = [Signal(source="alertmanager", fingerprint=f"fp{n}", status="firing",
                          labels={"alertname": name, "instance": f"h{n}"})
                   for n, name in enumerate(["Watchdog", "Watchdog", "NodeClockSkewDetected", "CPUThrottlingHigh"])]
        await store.ingest_signals(signals, AuditEntry("source:alertmanager", "signals.received", None, {}))
        since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
        assert await store.unmatched_signals(since) == ([], 0)  # the engine has seen none of them

        async def cursor_at(t: TaskOps, seq: int) -> None:
            await t.set_setting(CURSOR_KEY, seq, "engine")

        await store.transact(lambda t: cursor_at(t, 3))
        rows, names = await store.unmatched_signals(since)
        assert names == 2 and [(r.alertname, r.count) for r in rows] == [
            ("Watchdog", 2), ("NodeClockSkewDetected", 1)]
        assert rows[0].example_labels == {"alertname": "Watchdog", "instance": "h1"}

        async def grouped(t: TaskOps) -> None:
            await t.create_task(playbook_id="p", playbook_version="1", group_key="g", title="t", environment="dev",
                                severity="info", requester="test", args={}, signal_ids=[signals[2].id],
                                last_signal_at=None)

        await store.transact(grouped)
        await store.transact(lambda t: cursor_at(t, 4))
        rows, names = await store.unmatched_signals(since, limit=1)
        assert names == 2 and [r.alertname for r in rows] == ["Watchdog"]
    finally:
        await store.close()
