"""Recovery after a crash, in-process: the store is left as a crash mid-step leaves it (an approved
task ``executing`` with its step claimed ``running``), then a fresh App opens the same data dir."""

from __future__ import annotations

from pathlib import Path

from bot.model.tasks import TaskState
from tests.harness import running_app, running_standin

PLAYBOOKS = {
    "throttle.yaml": """
id: throttle
version: "1"
args:
  flag: {default: throttle-checkout}
steps:
  - name: throttle
    tool: flags.set
    params: {flag: "{{ args.flag }}", enabled: true, rollout: 50}
    category: write_reversible
    blast_radius: single
autonomy_cap: L1
""",
    "restart.yaml": """
id: restart
version: "1"
steps:
  - name: restart
    tool: http.request
    params:
      method: POST
      url: "{{ vars.platform_api }}/platform/workloads/shop/api/restart"
      expect_status: [200]
    category: write_irreversible
    blast_radius: single
autonomy_cap: L1
""",
}


def overrides(root: Path) -> dict:
    folder = root / "recovery-playbooks"
    folder.mkdir(exist_ok=True)
    for name, text in PLAYBOOKS.items():
        (folder / name).write_text(text)
    return {"playbooks_dir": str(folder)}


async def crash_mid_step(app, playbook: str) -> int:
    """Plan a run, approve it in the store, claim its step, and stop before the tool is called."""
    runner = app.identities.by_id("local-admin")
    task = await app.commands.run_playbook(playbook, {}, runner)
    await app.engine.wait_idle()
    assert (await app.store.get_task(task.id)).state is TaskState.needs_approval
    [step] = await app.store.steps_of_task(task.id, "step")

    async def approved_and_claimed(t) -> None:
        await t.add_approval(task.id, "second-approver", "Second approver", "approve", None, None)
        await t.set_state(task.id, TaskState.needs_approval, TaskState.executing, actor="second-approver")
        assert await t.claim_step(step.id, "2026-01-05T14:00:00+00:00")

    await app.store.transact(approved_and_claimed)
    return task.id


def writes(standin, path_part: str) -> list[dict]:
    return [c for c in standin.calls if c["method"] != "GET" and path_part in c["path"]]


async def test_an_interrupted_idempotent_step_runs_again_once_after_restart(tmp_path):
    async with running_standin() as standin:
        async with running_app(tmp_path, standin, overrides(tmp_path)) as app:
            task_id = await crash_mid_step(app, "throttle")
        assert writes(standin, "throttle-checkout") == []

        async with running_app(tmp_path, standin, overrides(tmp_path)) as app:
            await app.engine.wait_idle()
            assert await app.executor.recover() == []  # nothing left running: a second pass is a no-op
            task = await app.store.get_task(task_id)
            [step] = await app.store.steps_of_task(task_id, "step")
            audit = [row[3] async for row in app.store.audit_rows(task_id)]

    assert task.state is TaskState.completed
    assert step.state == "succeeded" and step.attempts == 2
    assert audit.count("step.rerun_after_restart") == 1
    production = standin.flags["throttle-checkout"]["environments"][1]
    assert production["enabled"] is True
    # One enable (and one rollout change): the step ran once after the restart, not twice.
    assert len([c for c in writes(standin, "throttle-checkout") if c["path"].endswith("/on")]) == 1


async def test_an_interrupted_non_idempotent_step_is_escalated_not_rerun(tmp_path):
    async with running_standin() as standin:
        async with running_app(tmp_path, standin, overrides(tmp_path)) as app:
            task_id = await crash_mid_step(app, "restart")

        async with running_app(tmp_path, standin, overrides(tmp_path)) as app:
            await app.engine.wait_idle()
            task = await app.store.get_task(task_id)
            [step] = await app.store.steps_of_task(task_id, "step")

    assert writes(standin, "/restart") == []
    assert task.state is TaskState.escalated_to_human
    assert "interrupted while running restart (http.request)" in task.outcome
    assert step.state == "unknown" and step.error == "interrupted by a restart"
