"""The whole loop with the store on PostgreSQL: alert in, proposal, two approvals, the step, audit."""

from __future__ import annotations

from tests.bot.web.test_api import metric
from tests.bot.web.test_readiness import NOTHING_WAITS
from tests.e2e.test_loop import sample
from tests.harness import ADMIN, AM, SECOND, client, running_app, running_standin


async def test_an_alert_is_proposed_approved_and_acted_on_with_the_store_on_postgresql(tmp_path, postgres_url):
    async with running_standin() as standin, running_app(tmp_path, standin, {"store": {"url": postgres_url}}) as app, \
            client(app) as http:
        assert type(app.store).__name__ == "PostgresStore"
        r = await http.post("/webhooks/alertmanager", content=sample("alertmanager-node-filesystem-space"), headers=AM)
        assert r.status_code == 202
        await app.engine.wait_idle()
        (task,) = (await http.get("/api/v1/tasks", headers=ADMIN)).json()["tasks"]
        assert task["playbook_id"] == "node-filesystem-space" and task["state"] == "needs_approval"

        r = await http.post("/api/v1/pause", headers=ADMIN, json={"reason": "drill"})
        assert r.status_code == 200
        r = await http.post(f"/api/v1/tasks/{task['id']}/approve", headers=ADMIN, json={})
        assert r.status_code == 403 and "kill switch" in r.text
        assert (await http.post("/api/v1/resume", headers=ADMIN, json={})).status_code == 200

        for who in (ADMIN, SECOND):
            r = await http.post(f"/api/v1/tasks/{task['id']}/approve", headers=who, json={})
            assert r.status_code == 200, r.text
        await app.engine.wait_idle()
        proposal = (await http.get(f"/api/v1/tasks/{task['id']}", headers=ADMIN)).json()["proposal"]
        assert proposal["state"] == "completed" and proposal["steps"][0]["state"] == "succeeded"
        assert "71% /var" in standin.ssh_host.filesystem.df(["-P", "/var"])[1]
        ready = (await http.get("/readyz")).json()
        assert (ready["status"], ready["store"]) == ("ready", "writable")
        assert ready["lag"] == NOTHING_WAITS  # grouped, acted on, nothing left running or undelivered
        assert await metric(http, "ooda_store_seconds_count", backend="postgresql", operation="ingest_signals") == 1
        assert await metric(http, "ooda_store_seconds_count", backend="postgresql", operation="transact") > 0
        verify = (await http.get("/api/v1/audit/verify", headers=ADMIN)).json()
        assert verify["ok"] and verify["checked"] > 5
