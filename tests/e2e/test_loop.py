"""The whole loop through the real server: alert in, proposal, approval, tool call, audit."""

from __future__ import annotations

from importlib import resources

from structlog.testing import capture_logs

from tests.harness import ADMIN, AM, SECOND, client, running_app, running_standin


def sample(name: str) -> bytes:
    return (resources.files("bot") / "samples" / f"{name}.json").read_bytes()


async def test_a_filesystem_alert_is_proposed_approved_and_acted_on_on_the_host_it_names(tmp_path):
    async with running_standin() as standin, running_app(tmp_path, standin) as app, client(app) as http:
        r = await http.post("/webhooks/alertmanager", content=sample("alertmanager-node-filesystem-space"), headers=AM)
        assert r.status_code == 202
        await app.engine.wait_idle()

        tasks = (await http.get("/api/v1/tasks", headers=ADMIN)).json()["tasks"]
        assert [t["playbook_id"] for t in tasks] == ["node-filesystem-space"]
        task_id = tasks[0]["id"]
        proposal = (await http.get(f"/api/v1/tasks/{task_id}", headers=ADMIN)).json()["proposal"]
        assert proposal["state"] == "needs_approval" and proposal["environment"] == "staging"
        (step,) = proposal["steps"]
        assert step["params"] == {"host": "db-01", "argv": ["find", "/var", "-xdev", "-type", "f", "-name", "*.tmp",
                                                           "-mmin", "+60", "-delete"]}
        assert step["decision"]["verdict"] == "needs_approval"
        evidence = {e["title"]: e["snippet"] for e in proposal["evidence"]}
        assert "93% /var" in evidence["df"] and "/var/tmp" in evidence["largest"]
        assert "db-01:9100" in evidence["usage"]
        (alert,) = [e for e in proposal["evidence"] if e["kind"] == "signal"]
        assert "less than 3% space left" in alert["snippet"] or "space left" in alert["snippet"]
        assert (proposal["links"][0]["title"], proposal["links"][0]["url"]) == (
            "runbook", "https://runbooks.prometheus-operator.dev/runbooks/node/nodefilesystemalmostoutofspace")
        assert standin.ssh_host is not None
        # Reads only: the dry run lists what find would delete with -print in place of -delete.
        assert {argv[0] for argv in standin.ssh_host.commands_run} == {"/usr/bin/df", "/usr/bin/du", "/usr/bin/find"}
        assert not any("-delete" in argv for argv in standin.ssh_host.commands_run)
        assert "would delete 12 files:\n  /var/tmp/reports/export-0001.tmp" in step["dry_run"]

        # Critical and irreversible: tier 4, two different people.
        for who in (ADMIN, SECOND):
            r = await http.post(f"/api/v1/tasks/{task_id}/approve", headers=who, json={})
            assert r.status_code == 200, r.text
        await app.engine.wait_idle()
        proposal = (await http.get(f"/api/v1/tasks/{task_id}", headers=ADMIN)).json()["proposal"]
        assert proposal["state"] == "completed", proposal
        assert proposal["steps"][0]["state"] == "succeeded"
        # It ran on the host the alert named (the demo host db-01), never on this machine.
        assert ["/usr/bin/find", "/var", "-xdev", "-type", "f", "-name", "*.tmp", "-mmin", "+60", "-delete"] in \
            standin.ssh_host.commands_run
        assert "71% /var" in standin.ssh_host.filesystem.df(["-P", "/var"])[1]

        verify = (await http.get("/api/v1/audit/verify", headers=ADMIN)).json()
        assert verify["ok"] and verify["checked"] > 5


async def test_a_template_that_cannot_render_escalates_with_words_naming_playbook_step_param_and_label(tmp_path):
    # A DaemonSet's pod (node-exporter-x7k2p) does not name its workload: no rule can guess it.
    body = sample("alertmanager-kube-pod-crashlooping").replace(
        b"checkout-6f9c7b8d5-x7k2p", b"node-exporter-x7k2p").replace(b'"container": "checkout"', b'"container": "x"')
    async with running_standin() as standin, running_app(tmp_path, standin) as app, client(app) as http:
        with capture_logs() as logs:
            r = await http.post("/webhooks/alertmanager", content=body, headers=AM)
            assert r.status_code == 202
            await app.engine.wait_idle()

        (task,) = (await http.get("/api/v1/tasks", headers=ADMIN)).json()["tasks"]
        assert task["state"] == "escalated_to_human"
        assert task["outcome"].startswith(
            "planning failed: playbook kube-pod-crashlooping, step restart, param kind: the alert has no label "
            "'workload_kind' (its labels: alertname, cluster, container, ")
        (warning,) = [e for e in logs if e["event"] == "task.planning_failed"]
        assert warning["log_level"] == "warning" and "workload_kind" in warning["error"]
