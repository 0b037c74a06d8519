"""The whole loop through the real server: alert in, proposal, approval, tool call, audit."""

from __future__ import annotations

from importlib import resources

from tests.harness import ADMIN, AM, client, running_app, running_standin


def sample(name: str) -> bytes:
    return (resources.files("bot") / "samples" / f"{name}.json").read_bytes()


async def test_disk_pressure_alert_is_proposed_approved_and_executed(tmp_path):
    scratch = tmp_path / "work" / "scratch"
    scratch.mkdir(parents=True)
    async with running_standin() as standin, running_app(tmp_path, standin) as app, client(app) as http:
        r = await http.post("/webhooks/alertmanager", content=sample("alertmanager-disk-pressure"), headers=AM)
        assert r.status_code == 202
        await app.engine.wait_idle()

        tasks = (await http.get("/api/v1/tasks", headers=ADMIN)).json()["tasks"]
        assert [t["playbook_id"] for t in tasks] == ["disk-pressure"]
        task_id = tasks[0]["id"]
        proposal = (await http.get(f"/api/v1/tasks/{task_id}", headers=ADMIN)).json()["proposal"]
        assert proposal["state"] == "needs_approval"
        assert proposal["steps"][0]["decision"]["verdict"] == "needs_approval"
        assert {e["title"] for e in proposal["evidence"]} >= {"usage", "filesystem"}

        r = await http.post(f"/api/v1/tasks/{task_id}/approve", headers=ADMIN, json={})
        assert r.status_code == 200, r.text
        await app.engine.wait_idle()
        proposal = (await http.get(f"/api/v1/tasks/{task_id}", headers=ADMIN)).json()["proposal"]
        assert proposal["state"] == "completed"
        assert proposal["steps"][0]["state"] == "succeeded"

        verify = (await http.get("/api/v1/audit/verify", headers=ADMIN)).json()
        assert verify["ok"] and verify["checked"] > 5
