"""Hostile alert labels through the real App: they fill no param the playbook did not promise.

A KubePodCrashLooping alert (kubernetes-mixin, labels as kube-state-metrics sets them) whose
values are path tricks: the shipped playbook's arg patterns refuse them wherever they would fill a
param, so nothing reaches the Kubernetes API and the task escalates saying why. A playbook that
builds a URL from the same labels gets each value as one encoded path segment of the route it names.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from bot.policy.identity import Actor
from tests.harness import ADMIN, AM, client, running_app, running_standin

ATTACK = "../../../services/checkout/rollback?x="
WORKLOAD_PATTERN = "[a-z0-9]([-a-z0-9.]*[a-z0-9])?"
ONCALL = Actor(id="oncall", display="On-call", roles=frozenset({"oncall"}), via="api")
# The example's prod change window would make the decision depend on the hour; point it elsewhere.
POLICY = {"policy": {"change_windows": {"prod-changes": {"environments": ["nowhere"]}}}}


def crashloop_alert(**labels: str) -> bytes:
    """The shipped KubePodCrashLooping sample with some label values replaced."""
    body = json.loads((resources.files("bot") / "samples" / "alertmanager-kube-pod-crashlooping.json").read_text())
    for alert in body["alerts"]:
        alert["labels"].update(labels)
    body["commonLabels"].update(labels)
    return json.dumps(body).encode()


def kubernetes_calls(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c for c in calls if c["path"].startswith(("/api/v1/namespaces", "/apis/"))]


async def test_hostile_labels_reach_no_kubernetes_call_and_the_task_escalates_naming_label_and_pattern(tmp_path):
    body = crashloop_alert(deployment=ATTACK, pod="../../../x")
    async with running_standin() as standin, running_app(tmp_path, standin) as app, client(app) as http:
        r = await http.post("/webhooks/alertmanager", content=body, headers=AM)
        assert r.status_code == 202
        await app.engine.wait_idle()

        (task,) = (await http.get("/api/v1/tasks", headers=ADMIN)).json()["tasks"]
        assert task["state"] == "escalated_to_human"
        assert task["outcome"] == (
            "planning failed: playbook kube-pod-crashlooping, step restart, param name: label 'workload' value "
            f"'{ATTACK}' does not match the playbook's pattern {WORKLOAD_PATTERN}")
        proposal = (await http.get(f"/api/v1/tasks/{task['id']}", headers=ADMIN)).json()["proposal"]
        evidence = {e["title"]: e["snippet"] for e in proposal["evidence"]}
        # Each evidence step that would have carried a hostile value failed on its own, in words.
        assert evidence["status"] == (
            f"failed: evidence step status, param name: label 'workload' value '{ATTACK}' does not match the "
            f"playbook's pattern {WORKLOAD_PATTERN}")
        assert evidence["previous_logs"].startswith(
            "failed: evidence step previous_logs, param pod: label 'pod' value '../../../x' does not match")
        assert "label 'workload'" in evidence["rollout"]  # the PromQL too: `| promql` escapes, the pattern refuses
        assert proposal["steps"] == []
        assert kubernetes_calls(standin.calls) == []


RESTART_OVER_HTTP = """
id: pod-crashloop-http
version: "1"
description: Pods of a workload are crash-looping; restart it through the platform API.
trigger:
  match: {alertname: KubePodCrashLooping}
  group_by: [namespace, workload]
evidence:
  - name: events
    tool: http.request
    params:
      url: "{{ vars.platform_api }}/platform/workloads/{{ labels.namespace }}/{{ labels.workload }}/events"
steps:
  - name: restart
    tool: http.request
    params:
      method: POST
      url: "{{ vars.platform_api }}/platform/workloads/{{ labels.namespace }}/{{ labels.workload }}/restart"
      expect_status: [200]
    category: write_irreversible
    blast_radius: single
autonomy_cap: L1
"""


def playbook_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "playbooks"
    directory.mkdir()
    (directory / "pod-crashloop-http.yaml").write_text(RESTART_OVER_HTTP)
    return directory


async def test_a_label_inserted_into_a_url_stays_one_segment_of_the_route_the_approver_saw(tmp_path):
    overrides = {**POLICY, "playbooks_dir": str(playbook_dir(tmp_path))}
    async with running_standin() as standin, running_app(tmp_path, standin, overrides) as app, \
            client(app) as http:
        r = await http.post("/webhooks/alertmanager", content=crashloop_alert(deployment=ATTACK), headers=AM)
        assert r.status_code == 202
        await app.engine.wait_idle()

        (task,) = (await http.get("/api/v1/tasks", headers=ADMIN)).json()["tasks"]
        assert task["state"] == "needs_approval", task
        proposal = (await http.get(f"/api/v1/tasks/{task['id']}", headers=ADMIN)).json()["proposal"]
        (step,) = proposal["steps"]
        shown = (f"{standin.base_url}/platform/workloads/shop/..%2F..%2F..%2Fservices%2Fcheckout%2Frollback%3Fx%3D"
                 "/restart")
        assert step["params"]["url"] == shown

        assert (await app.commands.approve(task["id"], ONCALL)).executed
        await app.engine.wait_idle()

        posts = [c["path"] for c in standin.calls if c["method"] == "POST"]
        assert posts == [f"/platform/workloads/shop/{ATTACK}/restart"]  # decoded by the server: one name
        assert standin.workloads[f"shop/{ATTACK}"]["restarts"] == 1
        assert standin.services == {}  # no rollback of any service was asked for
