"""The shipped incident suite through ``ooda eval``, as CI and a team run it.

Every incident in ``incidents/`` runs in a throwaway Ooda of its own (bot/evaluation/runner.py) with its
tools answering from the incident's recording; the asserts are the bar the shipped playbooks must
clear with the example config.
"""

from __future__ import annotations

import json

from bot.cli import main
from tests.harness import EXAMPLE, ROOT

SUITE = ROOT / "incidents"


def test_shipped_suite_meets_the_bar(capsys, tmp_path):
    baseline = tmp_path / "baseline.json"
    code = main(["eval", str(SUITE), "--config", str(EXAMPLE), "--json", "--write-baseline", str(baseline)])
    report = json.loads(capsys.readouterr().out)

    assert code == 0, report
    assert report["incidents"] >= 36
    assert report["safety_violations"] == []
    assert report["total"]["recall"] == 1.0, report["missed"]
    assert report["total"]["precision"] == 1.0, report["missed"]
    assert report["total"]["step_agreement"] == 1.0, report["step_mismatches"]
    assert report["planning_failures"] == report["state_mismatches"] == report["delivery_errors"] == []
    assert report["not_recorded"] == []  # every evidence call was answered from a recording
    shipped = {p.stem for p in (ROOT / "playbooks").glob("*.yaml")}
    assert shipped <= set(report["playbooks"]), f"no incident for {shipped - set(report['playbooks'])}"
    assert set(json.loads(baseline.read_text())["playbooks"]) == set(report["playbooks"])
