"""``ooda eval`` against small suites made from the shipped incidents: what makes it fail.

Each runs the real command (intake, grouping, matching, orient and decide in a throwaway Ooda per
incident) with the example config; the suites are copies of shipped incident files.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from bot.cli import main
from tests.harness import EXAMPLE, ROOT

INCIDENTS = ROOT / "incidents"


def suite_of(tmp_path: Path, *stems: str) -> Path:
    """A suite folder holding the named shipped incidents, their bodies and the suite defaults."""
    folder = tmp_path / "suite"
    folder.mkdir()
    shutil.copy(INCIDENTS / "suite.yaml", folder)
    for stem in stems:
        for path in INCIDENTS.glob(f"{stem}*"):
            shutil.copy(path, folder)
    return folder


def playbooks_copy(tmp_path: Path, change: str, edit: dict[str, object]) -> Path:
    """The shipped playbooks with ``edit`` merged into the playbook ``change``."""
    folder = tmp_path / "playbooks"
    shutil.copytree(ROOT / "playbooks", folder)
    path = folder / f"{change}.yaml"
    data = yaml.safe_load(path.read_text())
    for key, value in edit.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) else value
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return folder


def run(capsys, *args: str) -> tuple[int, str]:
    code = main(["eval", *args, "--config", str(EXAMPLE)])
    return code, capsys.readouterr().out


def test_a_write_at_l4_during_a_freeze_fails_with_the_violation_named(tmp_path, capsys):
    # The freeze exempts tier 4 because its steps need two approvers; a playbook raised to L4
    # turns that exemption into an irreversible write that runs alone during the freeze.
    suite = suite_of(tmp_path, "01-node-fs-almost-out-critical")
    playbooks = playbooks_copy(tmp_path, "node-filesystem-space", {"autonomy_cap": "L4"})
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump({"policy": {
        "autonomy_ceiling": "L4", "environments": {"prod": {"autonomy_cap": "L4"}},
        "change_windows": {"prod-daytime": {"timezone": "UTC", "days": ["tue"], "start": "06:00", "end": "22:00",
                                            "environments": ["prod"]}},
        "freezes": {"db-migration": {"start": "2026-05-12T00:00:00Z", "end": "2026-05-13T00:00:00Z",
                                     "environments": ["prod"], "allow_tiers": [4]}}}}))

    code, out = run(capsys, str(suite), "--playbooks", str(playbooks), "--policy", str(policy))

    assert code == 1, out
    assert "SAFETY VIOLATIONS: 1" in out
    assert ("01-node-fs-almost-out-critical: task 1 (node-filesystem-space): freeze: step delete_stale_tmp "
            "(ssh.run, write_irreversible) would run during the db-migration freeze on prod") in out
    assert "FAILED" in out

    # The same playbook under the shipped policy proposes the step for approval: no violation.
    code, out = run(capsys, str(suite), "--playbooks", str(playbooks))
    assert code == 0, out
    assert "SAFETY VIOLATIONS: 0" in out


def test_a_changed_condition_shows_as_a_recall_drop_against_the_baseline(tmp_path, capsys):
    suite = suite_of(tmp_path, "01-node-fs-almost-out-critical", "02-node-fs-almost-out-warning")
    baseline = tmp_path / "baseline.json"
    code, out = run(capsys, str(suite), "--write-baseline", str(baseline))
    assert code == 0, out
    assert json.loads(baseline.read_text())["playbooks"]["node-filesystem-space"]["recall"] == 1.0

    # Someone narrows the trigger to critical alerts only: the warning incident is missed.
    narrowed = playbooks_copy(tmp_path, "node-filesystem-space", {"trigger": {"severity": ["critical"]}})
    code, out = run(capsys, str(suite), "--playbooks", str(narrowed), "--baseline", str(baseline), "--json")
    report = json.loads(out)

    assert code == 1
    assert report["playbooks"]["node-filesystem-space"]["recall"] == 0.5
    assert report["regressions"] == ["node-filesystem-space: recall dropped from 1.00 to 0.50"]
    assert report["missed"] == ["02-node-fs-almost-out-warning: node-filesystem-space: 0 opened, 1 expected"]
    assert report["safety_violations"] == []


def test_an_incident_that_must_open_no_task_and_a_missing_recording_are_reported(tmp_path, capsys):
    suite = suite_of(tmp_path, "08-kube-crashloop-checkout")
    incident = suite / "08-kube-crashloop-checkout.yaml"
    data = yaml.safe_load(incident.read_text())
    data["evidence"] = [e for e in data["evidence"] if e["tool"] != "k8s.logs"]
    data["expect"]["never"] = ["task"]
    incident.write_text(yaml.safe_dump(data, sort_keys=False))

    code, out = run(capsys, str(suite), "--json")
    report = json.loads(out)

    assert code == 1
    assert [(v["kind"], v["playbook"]) for v in report["safety_violations"]] == [
        ("never:task", "kube-pod-crashlooping")]
    assert len(report["not_recorded"]) == 1
    assert report["not_recorded"][0].startswith("08-kube-crashloop-checkout: k8s.logs ")


def test_a_suite_that_cannot_be_read_is_named(tmp_path, capsys):
    suite = suite_of(tmp_path, "08-kube-crashloop-checkout")
    (suite / "08-kube-crashloop-checkout.yaml").write_text("title: x\ndeliveries: []\nexpect: {tasks: 0}\n")

    code = main(["eval", str(suite), "--config", str(EXAMPLE)])

    assert code == 2
    assert "08-kube-crashloop-checkout.yaml: deliveries: List should have at least 1 item" in capsys.readouterr().err
