"""Failures that are nobody's step end the task with a reason instead of leaving it half-way:
a verify block that cannot be evaluated, an unexpected error in the engine."""

from __future__ import annotations

from pathlib import Path

from bot.model.tasks import TaskState
from bot.policy.identity import Actor
from tests.harness import running_app, running_standin

# A reversible write of low risk in dev runs on its own (L2); then verify checks the result.
PLAYBOOK = """
id: verify-broken
version: "1"
args:
  env: {required: true}
steps:
  - name: act
    tool: flags.set
    params: {flag: "new-search", enabled: true, rollout: 30}
    blast_radius: single
verify:
  tool: flags.get
  params: {flag: "new-search"}
  expect: "result.rollout"
  within_s: 60
  interval_s: 1
"""
LEAD = Actor(id="alice", display="Alice", roles=frozenset({"sre-lead"}), via="api")


def write_playbook(root: Path) -> Path:
    folder = root / "verify-playbooks"
    folder.mkdir()
    (folder / "verify-broken.yaml").write_text(PLAYBOOK)
    return folder


async def test_a_verify_expectation_that_cannot_be_evaluated_escalates_at_once(tmp_path):
    async with running_standin() as standin, \
            running_app(tmp_path, standin, {"playbooks_dir": str(write_playbook(tmp_path))}) as app:
        task = await app.commands.run_playbook("verify-broken", {"env": "dev"}, LEAD)
        await app.engine.wait_idle()
        task = await app.store.get_task(task.id)

    assert task.state is TaskState.escalated_to_human  # not left executing, and not after 60 s of retries
    assert "verify could not be evaluated" in task.outcome and "expected true or false" in task.outcome


async def test_an_unexpected_error_while_planning_escalates_the_task(tmp_path, monkeypatch):
    async with running_standin() as standin, \
            running_app(tmp_path, standin, {"playbooks_dir": str(write_playbook(tmp_path))}) as app:
        async def broken_plan(task):
            raise RuntimeError("a bug in planning")

        monkeypatch.setattr(app.engine.planner, "plan", broken_plan)
        task = await app.commands.run_playbook("verify-broken", {"env": "dev"}, LEAD)
        await app.engine.wait_idle()
        task = await app.store.get_task(task.id)

    assert task.state is TaskState.escalated_to_human  # not left queued with nobody told
    assert "internal error" in task.outcome and "RuntimeError: a bug in planning" in task.outcome
