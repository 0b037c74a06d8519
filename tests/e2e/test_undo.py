"""Undo through the real executor: the shipped http-5xx-ratio playbook throttles checkout with a
flag on the stand-in, and undo must put the flag back exactly as it was."""

from __future__ import annotations

import pytest

from bot.errors import Conflict, Forbidden
from bot.model.tasks import TaskState
from bot.policy.identity import Actor
from tests.harness import running_app, running_standin

REQUESTER = Actor(id="runner", display="Runner", roles=frozenset({"operator"}), via="api")
APPROVER = Actor(id="lead", display="Lead", roles=frozenset({"sre-lead", "oncall"}), via="api")


def production(standin, flag: str = "throttle-checkout") -> tuple[bool, str | None]:
    env = standin.flags[flag]["environments"][1]
    strategies = env["strategies"]
    return env["enabled"], strategies[0]["parameters"]["rollout"] if strategies else None


async def run_spike(app) -> int:
    """A manual run in dev: the throttle runs alone (reversible, medium risk, L2); the rollback waits."""
    task = await app.commands.run_playbook("http-5xx-ratio", {"service": "checkout"}, REQUESTER)
    await app.engine.wait_idle()
    assert (await app.store.get_task(task.id)).state is TaskState.needs_approval
    return task.id


async def test_undo_restores_the_flag_after_the_playbook_completed(tmp_path):
    async with running_standin() as standin, running_app(tmp_path, standin) as app:
        before = production(standin)
        task_id = await run_spike(app)
        assert production(standin) == (True, "50")
        await app.commands.approve(task_id, APPROVER)
        await app.engine.wait_idle()
        assert (await app.store.get_task(task_id)).state is TaskState.completed
        assert (await app.commands.show(task_id)).can_undo

        result = await app.commands.undo(task_id, APPROVER)

        assert production(standin) == before
        assert "throttle" in result.message
        proposal = await app.commands.show(task_id)
        assert proposal.state == "completed" and not proposal.can_undo
        assert proposal.steps[0].state.value == "rolled_back"
        [rollback] = await app.store.steps_of_task(task_id, "rollback")
        assert rollback.state == "succeeded" and rollback.params["enabled"] is False
        with pytest.raises(Conflict, match="no executed reversible step left to undo"):
            await app.commands.undo(task_id, APPROVER)
        assert production(standin) == before


async def test_undo_after_a_partial_failure_rolls_back_the_step_that_ran(tmp_path):
    async with running_standin() as standin, running_app(tmp_path, standin) as app:
        before = production(standin)
        task_id = await run_spike(app)
        standin.fail_next("/platform/services/checkout/rollback", status=500)
        await app.commands.approve(task_id, APPROVER)
        await app.engine.wait_idle()
        task = await app.store.get_task(task_id)
        assert task.state is TaskState.failed_terminal
        assert "roll_back_deploy" in task.outcome
        steps = {s.name: s.state for s in await app.store.steps_of_task(task_id, "step")}
        assert steps == {"throttle": "succeeded", "roll_back_deploy": "failed"}
        assert production(standin) == (True, "50")

        await app.commands.undo(task_id, APPROVER)

        assert production(standin) == before
        # Worded as a colleague would: who, and what was put back.
        assert (await app.store.get_task(task_id)).outcome == (
            f"Undone by {APPROVER.display}: flag throttle-checkout back to off, rollout 0%")


async def test_undo_is_refused_while_the_kill_switch_is_on_and_changes_nothing(tmp_path):
    async with running_standin() as standin, running_app(tmp_path, standin) as app:
        task_id = await run_spike(app)
        await app.commands.reject(task_id, APPROVER, "rollback not needed")
        admin = app.identities.by_id("local-admin")
        await app.commands.pause(admin, "drill")
        with pytest.raises(Forbidden, match="kill switch"):
            await app.commands.undo(task_id, APPROVER)
        assert production(standin) == (True, "50")


async def test_undo_needs_an_approver_or_operator_role(tmp_path):
    async with running_standin() as standin, running_app(tmp_path, standin) as app:
        task_id = await run_spike(app)
        await app.commands.approve(task_id, APPROVER)
        await app.engine.wait_idle()
        viewer = Actor(id="viewer", display="Viewer", roles=frozenset({"viewer"}), via="api")
        with pytest.raises(Forbidden, match="undo needs one of the roles"):
            await app.commands.undo(task_id, viewer)
        assert production(standin) == (True, "50")


async def test_rejecting_the_rest_still_lets_people_undo_what_already_ran(tmp_path):
    async with running_standin() as standin, running_app(tmp_path, standin) as app:
        before = production(standin)
        task_id = await run_spike(app)  # the throttle already ran on its own
        await app.commands.reject(task_id, APPROVER, "no rollback needed")
        await app.commands.undo(task_id, APPROVER)
        assert production(standin) == before
