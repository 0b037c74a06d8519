"""A step whose dry run failed is shown as failed and cannot be approved as if it had passed: the
approval runs the dry run again (and goes on only if it passes now), or takes an explicit,
audited override with a reason."""

from __future__ import annotations

import json

import pytest

from bot.chat.wording import proposal_text
from bot.errors import Conflict
from bot.model.steps import StepKind, StepState
from bot.model.tasks import TaskState
from bot.policy.identity import Actor
from tests.harness import running_app, running_standin

REQUESTER = Actor(id="runner", display="Runner", roles=frozenset({"operator"}), via="api")
APPROVER = Actor(id="lead", display="Lead", roles=frozenset({"sre-lead", "oncall"}), via="api")
PLAYBOOK = """
id: throttle
version: "1"
steps:
  - name: throttle
    tool: flags.set
    params: {flag: throttle-checkout, enabled: true, rollout: 50}
    category: write_reversible
    blast_radius: single
autonomy_cap: L1
"""


def overrides(root) -> dict:
    folder = root / "dry-run-playbooks"
    folder.mkdir(exist_ok=True)
    (folder / "throttle.yaml").write_text(PLAYBOOK)
    return {"playbooks_dir": str(folder)}


async def planned_with_a_failed_dry_run(app, standin, failures: int) -> int:
    standin.fail_next("/api/admin/", status=500, times=failures)
    task = await app.commands.run_playbook("throttle", {}, REQUESTER)
    await app.engine.wait_idle()
    assert (await app.store.get_task(task.id)).state is TaskState.needs_approval
    return task.id


def enabled(standin) -> bool:
    return bool(standin.flags["throttle-checkout"]["environments"][1]["enabled"])


async def test_a_failed_dry_run_is_shown_and_approving_runs_it_again_first(tmp_path):
    async with running_standin() as standin, running_app(tmp_path, standin, overrides(tmp_path)) as app:
        was = enabled(standin)
        task_id = await planned_with_a_failed_dry_run(app, standin, failures=1)
        proposal = await app.commands.show(task_id)
        assert proposal.steps[0].dry_run_failed
        assert "dry run failed" in proposal_text(proposal)

        await app.commands.approve(task_id, APPROVER)  # the dry run passes now, so the approval stands
        await app.engine.wait_idle()
        task = await app.store.get_task(task_id)
        proposal = await app.commands.show(task_id)
        audit = [row[3] async for row in app.store.audit_rows(task_id)]

    assert not was and task.state is TaskState.completed
    assert not proposal.steps[0].dry_run_failed and "dry run failed" not in (proposal.steps[0].dry_run or "")
    assert "step.dry_run_rerun" in audit


async def test_a_dry_run_that_fails_again_blocks_the_approval_unless_overridden_with_a_reason(tmp_path):
    async with running_standin() as standin, running_app(tmp_path, standin, overrides(tmp_path)) as app:
        task_id = await planned_with_a_failed_dry_run(app, standin, failures=3)  # planning, and each approval

        with pytest.raises(Conflict, match="dry run of throttle failed again"):
            await app.commands.approve(task_id, APPROVER)
        assert await app.store.approvals_of_task(task_id) == []
        assert not enabled(standin)

        await app.commands.approve(task_id, APPROVER, override_dry_run="the flag API flaps; the write is safe")
        await app.engine.wait_idle()
        [step] = await app.store.steps_of_task(task_id, StepKind.action)
        overridden = [json.loads(row[6]) async for row in app.store.audit_rows(task_id)
                      if row[3] == "step.dry_run_overridden"]

    assert step.state is StepState.succeeded and enabled(standin)
    assert overridden == [{"step": "throttle", "reason": "the flag API flaps; the write is safe",
                           "dry_run": overridden[0]["dry_run"]}]
    assert "failed" in overridden[0]["dry_run"]
