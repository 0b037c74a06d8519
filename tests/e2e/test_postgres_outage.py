"""PostgreSQL stopped under a running Ooda: intake refuses with 503 (nothing acknowledged is lost),
and once PostgreSQL is back Ooda recovers by itself."""

from __future__ import annotations

import asyncio
import json
import time

from tests.harness import AM, client, running_app, running_standin


def alert(n: int) -> dict:
    return {"status": "firing", "labels": {"alertname": "OutageDrill", "n": str(n), "severity": "warning"},
            "annotations": {}, "startsAt": "2026-01-05T14:21:47Z", "endsAt": "0001-01-01T00:00:00Z",
            "fingerprint": f"outage-{n}"}


def body(n: int) -> dict:
    return {"receiver": "ooda", "status": "firing", "alerts": [alert(n)], "groupLabels": {}, "commonLabels": {},
            "commonAnnotations": {}, "externalURL": "http://am", "version": "4", "groupKey": "{}", "truncatedAlerts": 0}


async def test_intake_answers_503_while_postgresql_is_down_and_recovers_by_itself(
        tmp_path, postgres_server, postgres_url):
    acknowledged: list[str] = []
    async with running_standin() as standin, running_app(tmp_path, standin, {"store": {"url": postgres_url}}) as app, \
            client(app) as http:
        r = await http.post("/webhooks/alertmanager", json=body(0), headers=AM)
        assert r.status_code == 202
        acknowledged += r.json()["signal_ids"]

        postgres_server.stop()
        try:
            r = await http.post("/webhooks/alertmanager", json=body(1), headers=AM)
            assert r.status_code == 503 and r.json()["error"] == "store_unavailable"
            assert "retry later" in r.json()["message"] and "postgresql://" not in r.text
            assert (await http.get("/readyz")).status_code == 503
        finally:
            postgres_server.start()

        # Back: the pool replaces its dead connections; a sender's retry is stored.
        deadline, n = time.monotonic() + 20, 2
        while True:
            r = await http.post("/webhooks/alertmanager", json=body(n), headers=AM)
            if r.status_code == 202:
                acknowledged += r.json()["signal_ids"]
                break
            assert r.status_code == 503 and time.monotonic() < deadline, r.text
            n += 1
            await asyncio.sleep(0.2)  # a sender's retry interval, not a wait for a condition
        assert (await http.get("/readyz")).status_code == 200
        stored = await app.store.task_ids_of_signals(acknowledged)
        assert sorted(stored) == sorted(acknowledged), json.dumps(acknowledged)
