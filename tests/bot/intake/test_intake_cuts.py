"""Intake keeps every alert of a delivery: over-long values are cut, refusals name what was lost.

Alertmanager never retries a 4xx, so one huge label must not refuse the notification its other
alerts came in. Everything goes over HTTP to the App on the example config.
"""

from __future__ import annotations

import json
from typing import Any

from structlog.testing import capture_logs

from bot.intake.value_cuts import cut_signal
from bot.loop.alert_links import SILENCE_ANNOTATION, alertmanager_silence_url
from bot.model.signals import Signal
from tests.bot.intake.test_intake import AM, ENV, SMALL_LIMIT, db_rows, metric, sample, served, signed

BIG = 20 * 1024


def am_notification_with_one_huge_alert() -> bytes:
    payload = json.loads(sample("alertmanager-group"))
    first = payload["alerts"][0]
    first["labels"]["stack"] = "s" * (17 * 1024)
    first["annotations"]["description"] = "é" * BIG  # two bytes each: cut on a character boundary
    return json.dumps(payload).encode()


async def stored(app: Any) -> dict[str, tuple[dict[str, str], dict[str, str], str]]:
    rows = await db_rows(app, "SELECT fingerprint, labels, annotations, title FROM signals")
    return {fp: (json.loads(labels), json.loads(annotations), title) for fp, labels, annotations, title in rows}


async def test_a_huge_label_and_annotation_are_cut_and_every_other_alert_is_kept(tmp_path):
    body = am_notification_with_one_huge_alert()
    sent = json.loads(body)["alerts"]
    assert len(sent) > 1
    async with served(tmp_path) as (app, http):
        with capture_logs() as logs:
            r = await http.post("/webhooks/alertmanager", content=body, headers=AM)
        assert r.status_code == 202, r.text
        assert r.json()["accepted"] == len(sent)
        signals = await stored(app)
        assert set(signals) == {a["fingerprint"] for a in sent}
        labels, annotations, _ = signals[sent[0]["fingerprint"]]
        assert labels["stack"].startswith("s" * 4096)
        assert labels["stack"].endswith("… [cut by Ooda: 17408 bytes, first 4096 kept]")
        assert annotations["description"].endswith(f"… [cut by Ooda: {2 * BIG} bytes, first 4096 kept]")
        assert len(annotations["description"].split("…")[0].encode()) == 4096
        assert annotations["ooda_cut"] == ("cut to 4096 bytes each: labels.stack (17408 bytes), "
                                           f"annotations.description ({2 * BIG} bytes)")
        # Alertmanager's silence link is built when a proposal shows it, never stored per alert.
        assert SILENCE_ANNOTATION not in annotations
        for other in sent[1:]:
            assert "ooda_cut" not in signals[other["fingerprint"]][1]
            assert SILENCE_ANNOTATION not in signals[other["fingerprint"]][1]
        raw = (await db_rows(app, "SELECT raw FROM signals WHERE fingerprint = ?", (sent[0]["fingerprint"],)))[0][0]
        assert len(raw) < 16 * 1024  # the raw evidence is cut too
        assert await metric(http, "ooda_intake_values_cut_total", source="alertmanager") == 1
    (line,) = [e for e in logs if e["event"] == "intake.values_cut"]
    assert line["alerts"] == [sent[0]["labels"]["alertname"]]


async def test_the_cut_size_is_configured(tmp_path):
    async with served(tmp_path, {"intake": {"max_value_bytes": 10_000}}) as (app, http):
        r = await http.post("/webhooks/alertmanager", content=am_notification_with_one_huge_alert(), headers=AM)
        assert r.status_code == 202
        labels = [labels for labels, _, _ in (await stored(app)).values() if "stack" in labels]
        assert labels[0]["stack"].endswith("… [cut by Ooda: 17408 bytes, first 10000 kept]")


async def test_generic_grafana_and_pagerduty_values_are_cut_too(tmp_path):
    generic = json.loads(sample("generic-backup"))
    generic["annotations"] = {"log": "g" * BIG}
    generic["title"] = "t" * 5000  # refused with 400 before: one alert lost for a long title
    grafana = json.loads(sample("grafana-disk-space"))
    grafana["alerts"][0]["annotations"]["description"] = "f" * BIG
    pagerduty = json.loads(sample("pagerduty-triggered"))
    pagerduty["event"]["data"]["title"] = "p" * BIG
    bodies = {"generic": json.dumps(generic).encode(), "grafana": json.dumps(grafana).encode(),
              "pagerduty": json.dumps(pagerduty).encode()}
    async with served(tmp_path) as (app, http):
        for kind, body in bodies.items():
            headers = ({"Authorization": f"Bearer {ENV['OODA_GRAFANA_TOKEN']}"} if kind == "grafana"
                       else signed(kind, body))
            r = await http.post(f"/webhooks/{kind}", content=body, headers=headers)
            assert r.status_code == 202, (kind, r.text)
        cut = [(annotations["ooda_cut"], title) for _, annotations, title in (await stored(app)).values()
               if "ooda_cut" in annotations]
    assert sorted(text for text, _ in cut) == sorted([
        f"cut to 4096 bytes each: annotations.log ({BIG} bytes), title (5000 bytes)",
        f"cut to 4096 bytes each: annotations.description ({BIG} bytes)",
        f"cut to 4096 bytes each: labels.title ({BIG} bytes), title ({BIG} bytes)",
    ])


async def test_a_refused_notification_is_logged_and_counted_with_its_alert_names(tmp_path):
    payload = json.loads(sample("alertmanager-group"))
    payload["alerts"][1]["status"] = "burning"  # no retry would make this valid
    names = list(dict.fromkeys(a["labels"]["alertname"] for a in payload["alerts"]))
    async with served(tmp_path) as (_, http):
        with capture_logs() as logs:
            r = await http.post("/webhooks/alertmanager", content=json.dumps(payload).encode(), headers=AM)
        assert r.status_code == 400
        for name in names:
            assert await metric(http, "ooda_intake_refused_alerts_total", source="alertmanager",
                                reason="invalid_payload", alertname=name) == 1
    (line,) = [e for e in logs if e["event"] == "intake.refused"]
    assert line["alerts"] == names


async def test_a_body_over_the_limit_is_413_and_names_the_alerts_it_could_read(tmp_path):
    payload = json.loads(sample("alertmanager-node-filesystem-space"))
    payload["alerts"].append({**payload["alerts"][0], "annotations": {"description": "x" * (4 * SMALL_LIMIT)}})
    async with served(tmp_path, {"intake": {"max_body_bytes": SMALL_LIMIT}}) as (_, http):
        with capture_logs() as logs:
            r = await http.post("/webhooks/alertmanager", content=json.dumps(payload).encode(), headers=AM)
        assert r.status_code == 413
        assert "max_alerts" in r.json()["message"]
    (line,) = [e for e in logs if e["event"] == "intake.refused"]
    assert line["alerts"] == ["NodeFilesystemAlmostOutOfSpace"]
    assert line["body_bytes_read"] == SMALL_LIMIT


async def test_an_unauthenticated_body_puts_no_names_into_the_metric(tmp_path):
    body = sample("generic-backup")
    async with served(tmp_path) as (_, http):
        r = await http.post("/webhooks/generic", content=body, headers=signed("generic", body, "wrong-secret-xyz"))
        assert r.status_code == 401
        assert "ooda_intake_refused_alerts_total{" not in (await http.get("/metrics")).text


def test_a_silence_link_too_long_to_keep_is_left_out_whole_and_the_labels_kept():
    # Many labels of a fair size: none is over the limit, but the silence link built from all of them is.
    labels = {f"label{i}": "v" * 500 for i in range(12)}
    link = alertmanager_silence_url("http://alertmanager:9093", labels)
    assert link is not None and len(link) > 4096
    signal = Signal(source="alertmanager", fingerprint="f", status="firing", labels=labels,
                    annotations={"summary": "disk", SILENCE_ANNOTATION: link})
    cut = cut_signal(signal, 4096)
    assert cut.labels == labels
    assert cut.annotations == {"summary": "disk"}  # no broken link, and nothing the sender sent was cut
