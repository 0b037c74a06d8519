"""``ooda eval record``: a real past task, rejected in chat with a reason, becomes a suite file that
``ooda eval`` replays with the same evidence, redacted, holding the playbook to the rejection."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import yaml

from bot.cli import main
from bot.evaluation.runner import SuiteClock
from bot.policy.identity import Actor
from tests.harness import AM, ENV, ROOT, client, running_app, running_standin

# Inside the prod change window, so the restart waits for a person (who rejects it).
DAYTIME = SuiteClock(datetime(2026, 5, 12, 9, 15, tzinfo=UTC))
ONCALL = Actor(id="local-admin", display="Local admin", roles=frozenset({"oncall", "sre", "sre-lead"}), via="slack")


async def test_a_rejected_task_is_recorded_with_its_reason_and_replays(tmp_path, monkeypatch):
    body = json.loads((ROOT / "incidents" / "08-kube-crashloop-checkout.json").read_text())
    body["alerts"][0]["annotations"]["description"] = "Pod is crash looping; owner alice@example.com"
    async with running_standin() as standin, running_app(tmp_path, standin, clock=DAYTIME) as app, client(app) as http:
        response = await http.post("/webhooks/alertmanager", json=body, headers=AM)
        assert response.status_code == 202
        await app.engine.wait_idle()
        [task] = await app.store.list_tasks(open_only=False)
        await app.commands.reject(task.id, ONCALL, "checkout is mid-deploy; restarting would hide the bad build")

    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    suite = tmp_path / "suite"
    # The CLI runs its own event loop, as it does from a shell: in a thread here.
    record = ["eval", "record", str(task.id), "--output", str(suite), "--config", str(tmp_path / "config.yaml")]
    assert await asyncio.to_thread(main, record) == 0

    [recorded] = suite.glob("*.yaml")
    incident = yaml.safe_load(recorded.read_text())
    assert incident["expect"] == {
        "tasks": 1, "playbook": "kube-pod-crashlooping", "never": ["auto_write"],
        "feedback": "checkout is mid-deploy; restarting would hide the bad build"}
    assert {e["tool"] for e in incident["evidence"]} >= {"k8s.workload_status", "k8s.logs", "prometheus.query"}
    [delivery] = incident["deliveries"]
    sent = json.loads((suite / delivery["body_file"]).read_text())
    assert delivery["sender"] == "alertmanager"
    assert sent["alerts"][0]["labels"]["pod"] == "checkout-6f9c7b8d5-x7k2p"
    assert "alice@example.com" not in (suite / delivery["body_file"]).read_text()

    # Replayed by `ooda eval` with the tools answering from the recording.
    report_file = tmp_path / "report.json"
    code = await asyncio.to_thread(main, ["eval", str(suite), "--config", str(tmp_path / "config.yaml"),
                                          "--write-baseline", str(report_file)])
    assert code == 0
    assert json.loads(report_file.read_text())["playbooks"]["kube-pod-crashlooping"]["recall"] == 1.0


def test_recording_a_task_that_does_not_exist_names_it(tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"data_dir": str(tmp_path), "store": {"path": str(tmp_path / "ooda.db")}}))
    (tmp_path / "ooda.db").touch()
    assert main(["eval", "record", "7", "--output", str(tmp_path / "suite"), "--config", str(config)]) == 1
    assert "no task 7 in the store" in capsys.readouterr().err
