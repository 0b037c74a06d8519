from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from adapters.alerts.alertmanager import AlertmanagerSource
from adapters.alerts.grafana import GrafanaSource
from adapters.tools.flags import FlagGetParams, FlagSetParams
from adapters.tools.http import HttpParams
from adapters.tools.kubernetes_logs import LogsParams
from adapters.tools.kubernetes_rollouts import HistoryParams, RestartParams, UndoParams
from adapters.tools.kubernetes_scale import ScaleParams
from adapters.tools.kubernetes_workloads import EventsParams, WorkloadParams
from adapters.tools.notify import NotifyParams
from adapters.tools.prometheus import PrometheusParams
from adapters.tools.shell import ShellParams
from adapters.tools.ssh import SshParams
from bot.errors import ConfigError, UserError
from bot.intake.labels import EnvironmentRule, LabelNormalizer
from bot.model.proposals import Category
from bot.model.signals import Signal
from bot.playbooks.schema import BlastRadius, ExtraTrigger, Playbook, PlaybookSet, load_playbook_files, load_playbooks
from bot.policy.autonomy import Autonomy

ROOT = Path(__file__).resolve().parents[3]
SHIPPED = ROOT / "playbooks"
BROKEN = ROOT / "tests" / "playbooks" / "broken"
TOOLS: dict[str, type[BaseModel]] = {
    "http.request": HttpParams,
    "shell.run": ShellParams,
    "flags.get": FlagGetParams,
    "flags.set": FlagSetParams,
    "chat.notify": NotifyParams,
    "prometheus.query": PrometheusParams,
    "ssh.run": SshParams,
    "k8s.workload_status": WorkloadParams,
    "k8s.events": EventsParams,
    "k8s.logs": LogsParams,
    "k8s.rollout_history": HistoryParams,
    "k8s.rollout_restart": RestartParams,
    "k8s.rollout_undo": UndoParams,
    "k8s.scale": ScaleParams,
}
# The sample alerts in bot/samples/ (real upstream alerts) and the playbook each one triggers.
SAMPLES = {
    "alertmanager-node-filesystem-space": "node-filesystem-space",
    "alertmanager-group": "node-filesystem-space",
    "alertmanager-kube-pod-crashlooping": "kube-pod-crashlooping",
    "alertmanager-kube-deployment-replicas": "kube-deployment-replicas",
    "alertmanager-kube-job-failed": "kube-job-failed",
    "alertmanager-target-down": "target-down",
    "alertmanager-http-5xx": "http-5xx-ratio",
    "alertmanager-kafka-consumer-lag": "kafka-consumer-lag",
    "alertmanager-certificate-expiry": "certificate-expiry",
    "grafana-login-failures": "login-failure-ratio",
    "alertmanager-watchdog": None,
}
EXAMPLE = yaml.safe_load((ROOT / "config.example.yaml").read_text())
NORMALIZE = LabelNormalizer("dev", [EnvironmentRule.model_validate(r) for r in EXAMPLE["labels"]["environments"]])


def sample_signals(name: str) -> list[Signal]:
    body = (ROOT / "bot" / "samples" / f"{name}.json").read_bytes()
    source = GrafanaSource() if name.startswith("grafana-") else AlertmanagerSource()
    return NORMALIZE(source.parse(body, {}))


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text)
    return path


# --- the shipped playbooks ------------------------------------------------------------------


def test_shipped_playbooks_load_against_the_real_tool_params() -> None:
    playbooks = load_playbooks(SHIPPED, TOOLS)

    assert playbooks.ids == sorted({*filter(None, SAMPLES.values()), "http-latency", "node-filesystem-inodes"})
    ratio = playbooks.get("http-5xx-ratio")
    assert [s.name for s in ratio.steps] == ["throttle", "roll_back_deploy"]
    assert ratio.steps[0].category is Category.write_reversible
    assert ratio.steps[0].editable["rollout"].max == 100
    assert ratio.steps[1].blast_radius is BlastRadius.service
    assert playbooks.get("node-filesystem-space").steps[0].tool == "ssh.run"
    assert playbooks.get("kube-pod-crashlooping").steps[0].category is Category.write_irreversible
    assert playbooks.get("kube-deployment-replicas").steps[0].tool == "k8s.rollout_undo"
    # FYI playbooks change nothing.
    for fyi in ("certificate-expiry", "http-latency", "kube-job-failed", "login-failure-ratio", "target-down"):
        assert playbooks.get(fyi).steps == []
    assert playbooks.get("node-filesystem-space").autonomy_cap is Autonomy.L3
    assert ratio.source.endswith("http-5xx-ratio.yaml")


@pytest.mark.parametrize(("sample", "playbook_id"), sorted(SAMPLES.items()))
def test_each_real_sample_alert_triggers_exactly_its_playbook(sample: str, playbook_id: str | None) -> None:
    playbooks = load_playbooks(SHIPPED)

    firing = [s for s in sample_signals(sample) if s.status == "firing"]
    assert firing
    for alert in firing:
        assert [p.id for p in playbooks.match(alert)] == ([playbook_id] if playbook_id else [])


@pytest.mark.parametrize("alertname", [
    "NodeFilesystemSpaceFillingUp", "NodeFilesystemAlmostOutOfSpace", "NodeFilesystemFilesFillingUp",
    "NodeFilesystemAlmostOutOfFiles", "KubePodCrashLooping", "KubeDeploymentReplicasMismatch",
    "KubeDeploymentRolloutStuck", "KubeJobFailed", "KubeJobNotCompleted", "TargetDown", "NGINXTooMany500s",
    "KafkaConsumerGroupLag", "KafkaConsumersGroup", "BlackboxSslCertificateWillExpireSoon",
    "CertManagerCertExpirySoon", "KeycloakHighLoginFailureRate",
])
def test_the_upstream_alert_names_each_trigger_one_playbook(alertname: str) -> None:
    alert = Signal(source="alertmanager", fingerprint=alertname, status="firing", severity="warning",
                   labels={"alertname": alertname, "severity": "warning"})

    assert len(load_playbooks(SHIPPED).match(alert)) == 1


@pytest.mark.parametrize("alertname", ["Watchdog", "InfoInhibitor", "NodeClockSkewDetected", "CPUThrottlingHigh",
                                       "KubePodNotReady", "NodeMemoryHighUtilization", "PagerDutyIncident"])
def test_alerts_no_playbook_is_written_for_match_nothing(alertname: str) -> None:
    alert = Signal(source="alertmanager", fingerprint=alertname, status="firing",
                   labels={"alertname": alertname, "severity": "warning"})

    assert load_playbooks(SHIPPED).match(alert) == []


def test_group_keys_of_the_samples_use_the_normalized_labels() -> None:
    playbooks = load_playbooks(SHIPPED)

    (disk,) = sample_signals("alertmanager-node-filesystem-space")
    assert playbooks.get("node-filesystem-space").group_key(disk.labels) == (
        'node-filesystem-space{instance="db-01:9100",mountpoint="/var"}')
    (pod,) = sample_signals("alertmanager-kube-pod-crashlooping")
    assert playbooks.get("kube-pod-crashlooping").group_key(pod.labels) == (
        'kube-pod-crashlooping{cluster="staging-eu-1",namespace="shop",workload="checkout"}')
    (lag,) = sample_signals("alertmanager-kafka-consumer-lag")
    assert playbooks.get("kafka-consumer-lag").group_key(lag.labels) == (
        'kafka-consumer-lag{cluster="prod-eu-1",consumergroup="warehouse-loader"}')


def test_the_example_config_maps_a_teams_grafana_rule_onto_the_disk_playbook() -> None:
    playbooks = load_playbooks(SHIPPED)
    playbooks.add_triggers({pid: [ExtraTrigger.model_validate(t) for t in triggers]
                            for pid, triggers in EXAMPLE["triggers"].items()})

    (alert,) = sample_signals("grafana-disk-space")
    assert alert.labels["alertname"] == "Disk space low"
    assert [p.id for p in playbooks.match(alert)] == ["node-filesystem-space"]


# --- validation errors ----------------------------------------------------------------------


def test_broken_playbooks_report_every_problem_with_file_line_and_field() -> None:
    with pytest.raises(ConfigError) as caught:
        load_playbooks(BROKEN, TOOLS)

    problems = caught.value.problems
    text = "\n".join(problems)

    def has(file: str, line: int, field: str, fragment: str) -> bool:
        prefix = f"{BROKEN / file}:{line}: {field}: "
        return any(p.startswith(prefix) and fragment in p for p in problems)

    assert has("unknown-key.yaml", 8, "steps.0.timeout", "unknown key"), text
    assert has("wrong-type.yaml", 4, "trigger.group_window_s", "valid number"), text
    assert has("bad-regex.yaml", 4, "trigger.match_re.service", "invalid regular expression"), text
    assert has("bad-template.yaml", 8, "evidence.0.params.url", "template syntax error"), text
    assert has("bad-template.yaml", 9, "condition", "template syntax error"), text
    assert has("unknown-tool.yaml", 6, "steps.0.tool", "did you mean 'http.request'"), text
    assert has("unknown-tool.yaml", 10, "steps.1.params.percent",
               "its params: enabled, flag, remove_strategy, rollout"), text
    assert has("dup-b.yaml", 2, "id", f"duplicate playbook id 'dup', also defined at {BROKEN / 'dup-a.yaml'}:1"), text
    assert has("bad-names.yaml", 7, "evidence.0.params.url", "did you mean 'labels'"), text
    assert has("bad-names.yaml", 11, "steps.0.params.url", "no evidence step named 'helth'"), text
    assert has("bad-names.yaml", 11, "steps.0.params.url", "labels.team is not a declared arg"), text
    assert has("bad-names.yaml", 12, "steps.0.editable.rollout", "editable keys must name params"), text
    assert caught.value.args[0].startswith(f"{len(problems)} problems in playbooks")


def test_without_a_tool_registry_only_tool_checks_are_skipped() -> None:
    with pytest.raises(ConfigError) as caught:
        load_playbooks(BROKEN)

    text = "\n".join(caught.value.problems)
    assert "unknown tool" not in text and "has no param" not in text
    assert "invalid regular expression" in text


def test_yaml_syntax_errors_are_collected_with_the_other_files(tmp_path: Path) -> None:
    bad = write(tmp_path, "a.yaml", "id: a\ntrigger: [\n")
    worse = write(tmp_path, "b.yaml", "id: B!\n")
    listy = write(tmp_path, "c.yaml", "- id: c\n")

    with pytest.raises(ConfigError) as caught:
        load_playbook_files([bad, worse, listy])

    problems = caught.value.problems
    assert problems[0].startswith(f"{bad}:") and "invalid YAML" in problems[0]
    assert problems[1].startswith(f"{worse}:1: id: ")
    assert problems[2].startswith(f"{listy}:1: (top level): a playbook must be a mapping")


def test_more_static_checks(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "p.yaml",
        """\
id: p
evidence:
  - name: health
    tool: http.request
    params: {url: "{{ evidence.health.body }}"}
  - name: health
    tool: http.request
condition: "evidence.health.status"
steps:
  - name: call
    tool: shell.run
    params: {argv: ["{{ args.nope }}"]}
    rollback: {tool: http.request, params: {url: "{{ result.body }}", jsonn: {}}}
verify: {tool: http.request, params: {url: "{{ result.x }}"}, expect: "result.status == 200"}
""",
    )

    with pytest.raises(ConfigError) as caught:
        load_playbook_files([path], TOOLS)

    text = "\n".join(caught.value.problems)
    assert f"{path}:5: evidence.0.params.url: evidence is not available here" in text
    assert f"{path}:6: evidence.1.params: http.request needs param 'url'" in text
    assert f"{path}:6: evidence.1.name: duplicate step name 'health'" in text
    assert f"{path}:12: steps.0.params.argv.0: args.nope is not a declared arg" in text
    assert f"{path}:13: steps.0.rollback.params.jsonn: http.request has no param 'jsonn'" in text
    assert f"{path}:14: verify.params.url: unknown name 'result'" in text
    assert "condition" not in text  # it parses; that it is not a bool only shows at run time


def test_editable_keys_may_be_dotted_paths_into_params_but_must_name_one(tmp_path: Path) -> None:
    text = """\
id: p
steps:
  - name: scale
    tool: http.request
    params: {url: "https://platform.example.com/scale", json: {replicas: 3}}
    editable:
      json.replicas: {type: int, min: 1, max: 10}
      json.replicaz: {type: int}
"""
    path = write(tmp_path, "p.yaml", text)
    with pytest.raises(ConfigError) as caught:
        load_playbook_files([path], TOOLS)
    [problem] = caught.value.problems
    assert f"{path}:8: steps.0.editable.json.replicaz: 'json.replicaz' is not a param of this step" in problem

    path.write_text(text.replace("      json.replicaz: {type: int}\n", ""))
    [playbook] = load_playbook_files([path], TOOLS)
    assert playbook.steps[0].editable["json.replicas"].max == 10


def scheduled(playbook_id: str, schedules: str) -> str:
    """A playbook taking one ``service`` arg, with the given ``schedules:`` entries (from line 5)."""
    return (f"id: {playbook_id}\nargs:\n  service: {{required: true, pattern: \"[a-z-]+\"}}\n"
            f"schedules:\n{schedules}")


def test_schedules_are_checked_at_load_with_the_line_of_each_mistake(tmp_path: Path) -> None:
    path = write(tmp_path, "p.yaml", scheduled("p", """\
  - cron: "*/15 * * *"
    args: {service: web}
  - cron: "0 9 * * 1-5"
    timezone: Mars/Olympus
    args: {service: web}
  - cron: "0 9 * * 8"
    args: {service: web}
"""))
    args = write(tmp_path, "q.yaml", scheduled("q", '  - cron: "0 * * * *"\n    args: {servise: web}\n'))
    with pytest.raises(ConfigError) as caught:
        load_playbook_files([path, args], TOOLS)
    text = "\n".join(caught.value.problems)
    assert f"{path}:5: schedules.0.cron: Value error, cron '*/15 * * *' has 4 fields; write five" in text, text
    assert f"{path}:8: schedules.1.timezone: Value error, unknown time zone 'Mars/Olympus'" in text, text
    assert f"{path}:10: schedules.2.cron: Value error, cron '0 9 * * 8' is not valid: '8' is not a weekday" in text
    assert f"{args}:6: schedules.0.args: cannot run playbook 'q': unknown argument(s) servise" in text, text


def test_missing_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_playbooks(tmp_path / "nope")
    assert len(load_playbooks(tmp_path)) == 0


# --- the set and manual runs ----------------------------------------------------------------


def test_get_unknown_id_lists_known_ids_and_suggests_the_closest() -> None:
    playbooks = load_playbooks(SHIPPED)

    with pytest.raises(UserError) as caught:
        playbooks.get("kafka-consumer-lagg")

    message = str(caught.value)
    assert "Did you mean 'kafka-consumer-lag'?" in message
    assert "kube-deployment-replicas, kube-job-failed, kube-pod-crashlooping" in message
    assert "kafka-consumer-lag" in playbooks and "nope" not in playbooks
    assert sorted(p.id for p in playbooks) == playbooks.ids


def test_resolve_args_checks_required_pattern_unknown_and_defaults() -> None:
    playbook = load_playbooks(SHIPPED).get("kube-pod-crashlooping")

    assert playbook.resolve_args({"namespace": "shop", "workload": "checkout"}) == {
        "namespace": "shop", "workload": "checkout", "workload_kind": "deployment", "pod": "", "container": ""}
    with pytest.raises(UserError) as caught:
        playbook.resolve_args({"workload": "x; rm", "colour": "red"})
    message = str(caught.value)
    assert ("unknown argument(s) colour (this playbook takes: container, namespace, pod, workload, "
            "workload_kind)") in message
    assert "missing required argument namespace=…" in message
    assert "does not match the pattern" in message


def test_duplicate_ids_in_code_are_refused() -> None:
    one = Playbook.model_validate({"id": "x"})

    with pytest.raises(ConfigError, match="duplicate playbook id 'x'"):
        PlaybookSet([one, one])


def test_schema_defaults_are_the_cautious_ones() -> None:
    playbook = Playbook.model_validate(
        {"id": "p", "version": 3, "steps": [{"name": "s", "tool": "http.request"}], "autonomy_cap": "l1"}
    )

    assert playbook.version == "3"
    assert playbook.autonomy_cap is Autonomy.L1
    assert playbook.steps[0].blast_radius is BlastRadius.service
    assert playbook.steps[0].category is None  # the tool decides
    assert Playbook.model_validate({"id": "q"}).autonomy_cap is Autonomy.L2
