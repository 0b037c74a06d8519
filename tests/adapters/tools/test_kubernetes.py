import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp import web
from pydantic import ValidationError

from adapters.tools.kubernetes import RESTARTED_AT_ANNOTATION, REVISION_ANNOTATION, KubernetesToolConfig
from adapters.tools.kubernetes_logs import LogsTool
from adapters.tools.kubernetes_rollouts import RolloutHistoryTool, RolloutRestartTool, RolloutUndoTool
from adapters.tools.kubernetes_scale import ScaleTool
from adapters.tools.kubernetes_workloads import EventsTool, WorkloadStatusTool
from bot.audit.redaction import redact_text
from bot.errors import ConfigError
from bot.loop.gateway import ToolCallRefused, ToolGateway, ToolOutcome, ToolRegistry
from bot.ports import StepCall
from demo.kubernetes import KUBERNETES_CLUSTER, add_routes
from tests.fakes.authority import ScriptedAuthority, call_tool
from tests.fakes.kubernetes import FakeKubernetes, PodState, Revision

TOKEN = "k8s-test-token-6c1f0e9a2b7d"
ENV = {"K8S_TOKEN": TOKEN}
TOOLS = (WorkloadStatusTool, EventsTool, LogsTool, RolloutHistoryTool, RolloutRestartTool, ScaleTool,
         RolloutUndoTool)
CRASHING = "checkout-6f9c7b8d5-x7k2p"
OLD_IMAGE = "registry.example.com/shop/checkout:2.41.0"
NEW_IMAGE = "registry.example.com/shop/checkout:2.42.0"
STACK_TRACE = "".join(f"line {i}\n" for i in range(200)) + "java.lang.OutOfMemoryError: Java heap space\n"


def seed(fake: FakeKubernetes) -> None:
    cluster = fake.cluster
    cluster.add_deployment("shop", "checkout", [
        Revision(4, OLD_IMAGE, "5d8b7c9f4", "release 2.41.0", timedelta(days=6)),
        Revision(5, NEW_IMAGE, "6f9c7b8d5", "release 2.42.0", timedelta(hours=2)),
    ], replicas=3, pods=[
        PodState(), PodState(),
        PodState(name=CRASHING, ready=False, restarts=14, waiting_reason="CrashLoopBackOff", last_reason="OOMKilled",
                 exit_code=137, log="starting\n", previous_log=STACK_TRACE),
    ])
    cluster.add_deployment("shop", "payments", [Revision(1, "registry.example.com/shop/payments:1.0.0")], replicas=1)
    cluster.add_event("shop", "Deployment", "checkout", "ScalingReplicaSet",
                      "Scaled up replica set checkout-6f9c7b8d5 to 3", age=timedelta(hours=2))
    cluster.add_event("shop", "Pod", CRASHING, "BackOff", "Back-off restarting failed container checkout",
                      type_="Warning", count=57, age=timedelta(minutes=1))
    cluster.add_event("shop", "Pod", CRASHING, "OOMKilling", "Memory cgroup out of memory",
                      type_="Warning", count=14, age=timedelta(minutes=4))
    cluster.add_event("shop", "Deployment", "payments", "ScalingReplicaSet", "Scaled up replica set payments-x to 1",
                      age=timedelta(seconds=5))
    cluster.add_job("batch", "nightly-report-29145600", "registry.example.com/batch/report:3.2.1", pods=[
        PodState(ready=False, phase="Failed", terminated_reason="Error", exit_code=1) for _ in range(3)])


@dataclass
class Harness:
    gateway: ToolGateway
    audit: list[dict[str, Any]] = field(default_factory=list)

    async def call(self, tool: str, params: dict[str, Any], *, dry_run: bool = False, retries: int = 0) -> ToolOutcome:
        outcome = await call_tool(self.gateway, StepCall(tool=tool, params=params), dry_run=dry_run,
                                  retries=retries)
        self.audit.append(self.gateway._authority.records[-1].data)  # type: ignore[attr-defined]
        return outcome


@pytest.fixture
async def fake() -> AsyncIterator[FakeKubernetes]:
    server = FakeKubernetes(token=TOKEN)
    seed(server)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def harness_for(config: KubernetesToolConfig) -> tuple[Harness, list[Any]]:
    registry = ToolRegistry()
    tools = [cls(config, ENV) for cls in TOOLS]
    for tool in tools:
        registry.register(tool)

    async def no_sleep(seconds: float) -> None:
        return None

    return Harness(ToolGateway(registry, authority=ScriptedAuthority(), sleep=no_sleep, random=lambda: 0.0)), tools


@pytest.fixture
async def k8s(fake: FakeKubernetes) -> AsyncIterator[Harness]:
    harness, tools = await harness_for(KubernetesToolConfig(api_url=fake.url, token_env="K8S_TOKEN",
                                                            max_log_bytes=1024))
    yield harness
    for tool in tools:
        await tool.aclose()
        await tool.aclose()  # closing twice is harmless


def result(outcome: ToolOutcome) -> dict[str, Any]:
    assert outcome.ok, outcome.error
    assert outcome.result is not None
    return outcome.result


async def test_status_of_a_crash_looping_deployment_names_the_stuck_pod_and_why(fake, k8s):
    status = result(await k8s.call("k8s.workload_status", {"namespace": "shop", "kind": "deployment",
                                                           "name": "checkout"}))

    assert status["summary"].startswith(
        "deployment shop/checkout: 2/3 ready, 1 pod in CrashLoopBackOff (last exit 137 OOMKilled), 14 restarts")
    assert (status["desired"], status["ready"], status["updated"]) == (3, 2, 3)
    worst = status["pods"][0]
    assert worst["name"] == CRASHING and worst["waiting_reason"] == "CrashLoopBackOff"
    assert (worst["last_terminated_reason"], worst["last_exit_code"], worst["restarts"]) == ("OOMKilled", 137, 14)
    assert [p["name"] for p in status["pods"]].count(CRASHING) == 1 and len(status["pods"]) == 3
    pod_list = next(r for r in fake.requests if r["path"] == "/api/v1/namespaces/shop/pods")
    assert pod_list["query"]["labelSelector"] == "app=checkout"


async def test_status_of_a_failed_job_finds_its_pods_by_controller_uid(fake, k8s):
    status = result(await k8s.call("k8s.workload_status", {"namespace": "batch", "kind": "job",
                                                           "name": "nightly-report-29145600"}))

    assert status["summary"].startswith("job batch/nightly-report-29145600: failed (BackoffLimitExceeded), "
                                        "0/1 succeeded, 3 pods failed")
    assert len(status["pods"]) == 3 and all(p["last_exit_code"] == 1 for p in status["pods"])
    pod_list = next(r for r in fake.requests if r["path"] == "/api/v1/namespaces/batch/pods")
    assert pod_list["query"]["labelSelector"].startswith("batch.kubernetes.io/controller-uid=")


async def test_events_of_a_workload_and_its_pods_newest_first(k8s):
    events = result(await k8s.call("k8s.events", {"namespace": "shop", "name": "checkout"}))

    assert [(e["reason"], e["object"]) for e in events["events"]] == [
        ("BackOff", f"pod/{CRASHING}"), ("OOMKilling", f"pod/{CRASHING}"), ("ScalingReplicaSet", "deployment/checkout"),
    ]
    assert events["summary"].startswith("3 events for workload shop/checkout (2 warnings); newest: Warning BackOff")

    limited = result(await k8s.call("k8s.events", {"namespace": "shop", "name": "checkout", "limit": 1}))
    assert [e["reason"] for e in limited["events"]] == ["BackOff"]


async def test_previous_logs_of_a_crashed_container_keep_the_end(fake, k8s):
    logs = result(await k8s.call("k8s.logs", {"namespace": "shop", "pod": CRASHING, "tail_lines": 500}))

    assert (logs["container"], logs["previous"], logs["truncated"]) == ("checkout", True, True)
    assert logs["text"].endswith("java.lang.OutOfMemoryError: Java heap space\n")
    assert logs["text"].startswith("line ") and len(logs["text"].encode()) <= 1024
    log_call = fake.requests[-1]
    assert log_call["path"] == f"/api/v1/namespaces/shop/pods/{CRASHING}/log"
    assert (log_call["query"]["previous"].lower(), log_call["query"]["tailLines"]) == ("true", "500")


async def test_previous_logs_of_a_pod_that_never_restarted_say_so(fake, k8s):
    healthy = next(p["metadata"]["name"] for p in fake.cluster.of_kind("Pod", "shop")
                   if p["metadata"]["name"].startswith("payments-"))

    outcome = await k8s.call("k8s.logs", {"namespace": "shop", "pod": healthy})

    assert not outcome.ok and "has no previous container" in (outcome.error or "")
    assert "previous: false" in (outcome.error or "")
    assert not any(r["path"].endswith("/log") for r in fake.requests)
    current = result(await k8s.call("k8s.logs", {"namespace": "shop", "pod": healthy, "previous": False}))
    assert current["text"] == "ready to serve\n"


async def test_rollout_history_lists_revisions_newest_first(k8s):
    history = result(await k8s.call("k8s.rollout_history", {"namespace": "shop", "deployment": "checkout"}))

    assert (history["current_revision"], history["previous_revision"]) == (5, 4)
    assert [(r["revision"], r["replicaset"], r["images"], r["change_cause"]) for r in history["revisions"]] == [
        (5, "checkout-6f9c7b8d5", [NEW_IMAGE], "release 2.42.0"),
        (4, "checkout-5d8b7c9f4", [OLD_IMAGE], "release 2.41.0"),
    ]


async def test_restart_patches_the_restarted_at_annotation_and_the_pods_come_back_ready(fake, k8s):
    params = {"namespace": "shop", "kind": "deployment", "name": "checkout"}

    restart = result(await k8s.call("k8s.rollout_restart", params))

    patch = fake.writes()[-1]
    assert patch["path"] == "/apis/apps/v1/namespaces/shop/deployments/checkout"
    assert patch["content_type"] == "application/strategic-merge-patch+json" and "dryRun" not in patch["query"]
    assert patch["body"] == {"spec": {"template": {"metadata": {"annotations": {
        RESTARTED_AT_ANNOTATION: restart["restarted_at"]}}}}}
    assert restart["restarted_at"].endswith("Z") and restart["dry_run"] is False
    status = result(await k8s.call("k8s.workload_status", params))
    assert status["summary"] == "deployment shop/checkout: 3/3 ready"


async def test_restart_dry_run_asks_the_server_for_a_dry_run_and_changes_nothing(fake, k8s):
    before = fake.cluster.get("Deployment", "shop", "checkout")

    preview = result(await k8s.call("k8s.rollout_restart", {"namespace": "shop", "name": "checkout"}, dry_run=True))

    assert preview["dry_run"] is True and preview["preview"].startswith("dry run accepted by the API server")
    assert fake.writes()[-1]["query"] == {"dryRun": "All"}
    after = fake.cluster.get("Deployment", "shop", "checkout")
    assert after is before and "annotations" not in after["spec"]["template"]["metadata"]
    assert after["metadata"]["annotations"][REVISION_ANNOTATION] == "5"


async def test_scale_records_the_previous_count_and_its_rollback_restores_it(fake, k8s):
    outcome = await k8s.call("k8s.scale", {"namespace": "shop", "name": "checkout", "replicas": 5})

    assert result(outcome)["previous_replicas"] == 3
    assert fake.cluster.get("Deployment", "shop", "checkout")["spec"]["replicas"] == 5
    assert fake.writes()[-1]["path"] == "/apis/apps/v1/namespaces/shop/deployments/checkout/scale"
    assert outcome.rollback == StepCall(tool="k8s.scale", params={
        "namespace": "shop", "kind": "deployment", "name": "checkout", "replicas": 3})

    undone = await k8s.call(outcome.rollback.tool, outcome.rollback.params)

    assert result(undone)["replicas"] == 3
    assert fake.cluster.get("Deployment", "shop", "checkout")["spec"]["replicas"] == 3
    status = result(await k8s.call("k8s.workload_status", {"namespace": "shop", "name": "checkout"}))
    assert status["desired"] == 3 and status["pods_total"] == 3


async def test_scale_dry_run_sends_a_dry_run_and_offers_no_rollback(fake, k8s):
    outcome = await k8s.call("k8s.scale", {"namespace": "shop", "name": "checkout", "replicas": 0}, dry_run=True)

    assert result(outcome)["changed"] is True and outcome.rollback is None
    assert fake.writes()[-1]["query"] == {"dryRun": "All"}
    assert fake.cluster.get("Deployment", "shop", "checkout")["spec"]["replicas"] == 3


async def test_undo_puts_the_named_revisions_template_back(fake, k8s):
    undo = result(await k8s.call("k8s.rollout_undo", {"namespace": "shop", "deployment": "checkout",
                                                      "to_revision": 4}))

    assert (undo["from_revision"], undo["to_revision"]) == (5, 4)
    assert (undo["images_before"], undo["images_after"]) == ([NEW_IMAGE], [OLD_IMAGE])
    patch = fake.writes()[-1]
    assert patch["content_type"] == "application/json-patch+json"
    assert [op["path"] for op in patch["body"]] == ["/spec/template", "/metadata/annotations"]
    assert "pod-template-hash" not in patch["body"][0]["value"]["metadata"]["labels"]
    deployment = fake.cluster.get("Deployment", "shop", "checkout")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == OLD_IMAGE
    history = result(await k8s.call("k8s.rollout_history", {"namespace": "shop", "deployment": "checkout"}))
    assert history["current_revision"] == 6 and history["revisions"][0]["images"] == [OLD_IMAGE]
    status = result(await k8s.call("k8s.workload_status", {"namespace": "shop", "name": "checkout"}))
    assert status["summary"] == "deployment shop/checkout: 3/3 ready"


async def test_undo_to_an_unknown_revision_lists_the_known_ones(fake, k8s):
    outcome = await k8s.call("k8s.rollout_undo", {"namespace": "shop", "deployment": "checkout", "to_revision": 9})

    assert not outcome.ok
    assert outcome.error == ("deployment shop/checkout has no revision 9; known revisions: 4, 5 "
                             "(see k8s.rollout_history)")
    assert fake.writes() == []


async def test_a_namespace_outside_the_allowlist_is_refused_before_any_request(fake):
    harness, tools = await harness_for(KubernetesToolConfig(api_url=fake.url, token_env="K8S_TOKEN",
                                                            namespaces=["shop", "data-*"]))
    try:
        outcome = await harness.call("k8s.scale", {"namespace": "kube-system", "name": "coredns", "replicas": 0})
        allowed = await harness.call("k8s.rollout_history", {"namespace": "shop", "deployment": "checkout"})
    finally:
        for tool in tools:
            await tool.aclose()

    assert not outcome.ok
    assert "namespace 'kube-system' is outside tools.kubernetes.namespaces (shop, data-*)" in (outcome.error or "")
    assert allowed.ok
    assert not any("kube-system" in r["path"] for r in fake.requests)


@pytest.mark.parametrize("hostile", ["../../x", "a/b", "%2e%2e", "..", "Checkout", "a" * 254, "x?watch=1"])
async def test_hostile_names_are_refused_by_params_validation(fake, k8s, hostile):
    for tool, params in [
        ("k8s.workload_status", {"namespace": "shop", "name": hostile}),
        ("k8s.logs", {"namespace": "shop", "pod": hostile}),
        ("k8s.rollout_undo", {"namespace": "shop", "deployment": hostile, "to_revision": 1}),
        ("k8s.scale", {"namespace": hostile, "name": "checkout", "replicas": 1}),
    ]:
        with pytest.raises(ToolCallRefused, match="invalid params"):
            await k8s.call(tool, params)
    assert fake.requests == []


async def test_forbidden_and_not_found_read_as_words(fake, k8s):
    fake.fail_next(403, "/apis/apps/v1/namespaces/shop/deployments/checkout/scale")
    forbidden = await k8s.call("k8s.scale", {"namespace": "shop", "name": "checkout", "replicas": 4})
    missing = await k8s.call("k8s.workload_status", {"namespace": "shop", "name": "nope"})

    assert not forbidden.ok and not forbidden.retryable
    assert "refused to get deployment shop/checkout (HTTP 403)" in (forbidden.error or "")
    assert "RBAC permission verb 'get' on resource 'deployments/scale' in apiGroup 'apps'" in (forbidden.error or "")
    assert missing.error == "deployment shop/nope not found"


async def test_server_errors_are_retried_for_reads_and_conflicts_are_not_retried_for_restarts(fake, k8s):
    fake.fail_next(503, "/apis/apps/v1/namespaces/shop/deployments/checkout")
    read = await k8s.call("k8s.rollout_history", {"namespace": "shop", "deployment": "checkout"}, retries=2)
    fake.fail_next(409, "/apis/apps/v1/namespaces/shop/deployments/checkout", times=2)
    restart = await k8s.call("k8s.rollout_restart", {"namespace": "shop", "name": "checkout"}, retries=2)

    assert read.ok and read.attempts == 2
    assert not restart.ok and restart.retryable and restart.attempts == 1
    assert "HTTP 409" in (restart.error or "")


async def test_the_token_never_appears_in_results_errors_audit_or_logs(fake, k8s):
    fake.fail_next(403, "/api/v1/namespaces/shop/pods")
    with structlog.testing.capture_logs() as logs:
        outcomes = [
            await k8s.call("k8s.workload_status", {"namespace": "shop", "name": "checkout"}),
            await k8s.call("k8s.logs", {"namespace": "shop", "pod": CRASHING}),
            await k8s.call("k8s.scale", {"namespace": "shop", "name": "checkout", "replicas": 4}),
        ]

    assert not outcomes[0].ok and all(o.ok for o in outcomes[1:])  # the 403 hit the first call only
    assert fake.requests  # the fake checks the token, so it was sent on every call
    everything = repr([o.model_dump() for o in outcomes]) + repr(k8s.audit) + repr(logs)
    assert TOKEN not in everything and logs


async def test_wrong_token_is_a_plain_error(fake):
    tool = WorkloadStatusTool(KubernetesToolConfig(api_url=fake.url, token_env="K8S_TOKEN"),
                              {"K8S_TOKEN": "wrong-token-value-123"})
    registry = ToolRegistry()
    registry.register(tool)
    try:
        outcome = await Harness(ToolGateway(registry)).call("k8s.workload_status", {"namespace": "shop",
                                                                                     "name": "checkout"})
    finally:
        await tool.aclose()
    assert "rejected the bot's credentials (HTTP 401)" in (outcome.error or "")
    assert "wrong-token-value-123" not in (outcome.error or "")


def test_config_problems_are_reported_before_any_call():
    with pytest.raises(ConfigError, match="K8S_TOKEN"):
        WorkloadStatusTool(KubernetesToolConfig(api_url="http://127.0.0.1:1", token_env="K8S_TOKEN"), {})
    with pytest.raises(ValidationError, match="api_url or kubeconfig, not both"):
        KubernetesToolConfig(api_url="https://k8s:6443", kubeconfig="kubeconfig.yaml")
    with pytest.raises(ValidationError, match="apply only with api_url"):
        KubernetesToolConfig(token_env="K8S_TOKEN")


async def test_the_demo_cluster_tells_the_crashloop_story_and_an_undo_fixes_it():
    app = web.Application()
    add_routes(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    harness, tools = await harness_for(KubernetesToolConfig(api_url=url, token_env="K8S_TOKEN"))
    try:
        before = result(await harness.call("k8s.workload_status", {"namespace": "shop", "name": "checkout"}))
        logs = result(await harness.call("k8s.logs", {"namespace": "shop", "pod": CRASHING}))
        job = result(await harness.call("k8s.workload_status", {"namespace": "batch", "kind": "job",
                                                                "name": "nightly-report-29145600"}))
        loader = result(await harness.call("k8s.workload_status", {"namespace": "data", "name": "warehouse-loader"}))
        result(await harness.call("k8s.rollout_undo", {"namespace": "shop", "deployment": "checkout",
                                                       "to_revision": 4}))
        after = result(await harness.call("k8s.workload_status", {"namespace": "shop", "name": "checkout"}))
    finally:
        for tool in tools:
            await tool.aclose()
        await runner.cleanup()

    assert "1 pod in CrashLoopBackOff (last exit 137 OOMKilled)" in before["summary"]
    assert "OutOfMemoryError" in logs["text"]
    assert job["summary"].startswith("job batch/nightly-report-29145600: failed (BackoffLimitExceeded)")
    assert loader["summary"] == "deployment data/warehouse-loader: 2/2 ready"
    assert after["summary"] == "deployment shop/checkout: 3/3 ready"
    assert app[KUBERNETES_CLUSTER].get("Deployment", "shop", "checkout")["metadata"]["annotations"][
        REVISION_ANNOTATION] == "6"


async def test_a_kubeconfig_context_connects_and_its_token_is_masked(fake, tmp_path):
    kubeconfig = tmp_path / "kubeconfig.yaml"
    kubeconfig.write_text(f"""
apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster: {{server: "{fake.url}"}}
users:
- name: bot
  user: {{token: "{TOKEN}"}}
- name: nobody
  user: {{token: "not-the-right-token"}}
contexts:
- name: ooda
  context: {{cluster: fake, user: bot}}
- name: other
  context: {{cluster: fake, user: nobody}}
current-context: other
""")
    tool = RolloutHistoryTool(KubernetesToolConfig(kubeconfig=str(kubeconfig), context="ooda"), {})
    registry = ToolRegistry()
    registry.register(tool)
    assert redact_text(TOKEN) == TOKEN  # nothing registered yet: the token is only read on first use
    try:
        outcome = await Harness(ToolGateway(registry)).call("k8s.rollout_history", {"namespace": "shop",
                                                                                     "deployment": "checkout"})
    finally:
        await tool.aclose()

    assert result(outcome)["current_revision"] == 5
    assert TOKEN not in redact_text(f"seen {TOKEN} in a message")


async def test_without_any_connection_config_the_in_cluster_failure_says_what_to_set(monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    tool = WorkloadStatusTool(KubernetesToolConfig(), {})
    registry = ToolRegistry()
    registry.register(tool)
    try:
        outcome = await Harness(ToolGateway(registry)).call("k8s.workload_status", {"namespace": "shop",
                                                                                     "name": "checkout"})
    finally:
        await tool.aclose()
    assert "cannot load the Kubernetes connection from the in-cluster service account" in (outcome.error or "")
    assert "tools.kubernetes.api_url" in (outcome.error or "")


def test_kubernetes_asyncio_is_loaded_only_when_a_tool_first_talks_to_a_cluster():
    # Its API models cost about 60 MB: an Ooda that has made no Kubernetes call must not carry them.
    code = ("import sys\n"
            "from adapters.tools.kubernetes import KubernetesToolConfig\n"
            "from adapters.tools import kubernetes_logs, kubernetes_rollouts, kubernetes_scale, kubernetes_workloads\n"
            "kubernetes_workloads.WorkloadStatusTool(KubernetesToolConfig(api_url='http://127.0.0.1:1'), {})\n"
            "print('kubernetes_asyncio' in sys.modules)\n")
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[3])
    assert ran.stdout.strip() == "False", ran.stderr
