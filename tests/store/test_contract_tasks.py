"""Store contract: tasks, steps and approvals (compare-and-set, claims, one vote per person)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.errors import Conflict, IllegalTransition, UnknownTask
from bot.model.tasks import TaskState
from bot.store.protocol import TaskOps
from tests.store.contract import new_step, new_task


async def test_a_created_task_reads_back_and_lists(store):
    task = await new_task(store, args={"consumergroup": "warehouse"}, environment="prod")
    assert task.state is TaskState.queued and task.args == {"consumergroup": "warehouse"}
    assert await store.get_task(task.id) == task
    assert await store.get_task(task.id + 1000) is None
    assert [t.id for t in await store.list_tasks()] == [task.id]
    assert [t.id for t in await store.tasks_in_states(["queued"])] == [task.id]
    assert [t.id for t in await store.tasks_since((datetime.now(UTC) - timedelta(minutes=1)).isoformat())] == [task.id]
    assert await store.list_tasks(playbook_ids=["other"]) == []


async def test_state_changes_compare_and_set_and_follow_the_state_machine(store):
    task = await new_task(store)
    moved = await store.transact(lambda t: t.set_state(task.id, TaskState.queued, TaskState.running, actor="a"))
    assert moved.state is TaskState.running
    with pytest.raises(Conflict):
        await store.transact(lambda t: t.set_state(task.id, TaskState.queued, TaskState.running, actor="b"))
    with pytest.raises(IllegalTransition):
        await store.transact(lambda t: t.set_state(task.id, TaskState.running, TaskState.queued, actor="b"))
    with pytest.raises(UnknownTask):
        await store.transact(lambda t: t.get_task(task.id + 1000))
    done = await store.transact(lambda t: t.set_state(task.id, {TaskState.running}, TaskState.completed,
                                                      actor="a", outcome="fixed"))
    stored = await store.get_task(task.id)
    assert stored.state is done.state is TaskState.completed and stored.outcome == "fixed" and stored.closed_at
    assert await store.list_tasks() == []  # open only


async def test_a_unit_of_work_that_raises_keeps_nothing(store):
    task = await new_task(store)

    async def unit(t: TaskOps) -> None:
        await t.set_state(task.id, TaskState.queued, TaskState.running, actor="a")
        await t.set_setting("k", 1, "a")
        raise RuntimeError("changed my mind")

    with pytest.raises(RuntimeError):
        await store.transact(unit)
    assert (await store.get_task(task.id)).state is TaskState.queued
    assert await store.get_setting("k") is None


async def test_a_step_is_claimed_once_and_counted_as_a_run_of_its_tool(store):
    task = await new_task(store)
    step_id = await new_step(store, task.id)
    started = datetime.now(UTC).isoformat()
    assert await store.transact(lambda t: t.claim_step(step_id, started)) is True
    assert await store.transact(lambda t: t.claim_step(step_id, started)) is False
    [step] = await store.steps_of_task(task.id, "step")
    assert step.state == "running" and step.attempts == 1 and step.params == {"flag": "f", "rollout": 50}
    await store.transact(lambda t: t.update_step(step_id, state="failed", error="boom", result={"x": 1}))
    since = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    assert await store.tool_runs_since("flags.set", since) == (1, 1)
    assert await store.playbook_runs_since("pb", since) == (1, 1)
    [step] = await store.steps_of_task(task.id)
    assert (step.state, step.error, step.result) == ("failed", "boom", {"x": 1})


async def test_unstarted_steps_are_removed(store):
    task = await new_task(store)
    await new_step(store, task.id, name="one", idx=0)
    await new_step(store, task.id, name="two", idx=1)
    await new_step(store, task.id, name="proof", kind="evidence", category="read")
    assert await store.transact(lambda t: t.remove_unstarted_steps(task.id)) == 2
    assert [s.name for s in await store.steps_of_task(task.id)] == ["proof"]


async def test_one_person_counts_once_per_verdict(store):
    task = await new_task(store)
    assert await store.transact(lambda t: t.add_approval(task.id, "alice", "Alice", "approve", None, {"a": 1}))
    assert not await store.transact(lambda t: t.add_approval(task.id, "alice", "Alice", "approve", None, None))
    assert await store.transact(lambda t: t.add_approval(task.id, "bob", "Bob", "reject", "no", None))
    approvals = await store.approvals_of_task(task.id)
    assert [(a.actor, a.verdict, a.edits) for a in approvals] == [
        ("alice", "approve", {"a": 1}), ("bob", "reject", None)]
    assert await store.transact(lambda t: t.approvals(task.id)) == approvals


async def test_resolution_marks_of_a_task(store):
    task = await new_task(store)
    at = datetime.now(UTC).isoformat()
    await store.transact(lambda t: t.record_resolution(task.id, at))
    assert await store.transact(lambda t: t.tasks_with_resolved_alerts([task.id])) == {task.id}
    await store.transact(lambda t: t.record_refire(task.id, at))
    assert await store.transact(lambda t: t.tasks_with_resolved_alerts([task.id])) == set()
    latest = await store.transact(lambda t: t.latest_task_for_group("g"))
    assert latest is not None and latest[0].id == task.id


async def test_a_step_running_in_a_live_process_is_told_apart_from_one_whose_process_ended(open_store, backend):
    first, second = await open_store(), await open_store()
    task = await new_task(first)
    step = await new_step(first, task.id)
    assert await first.transact(lambda t: t.claim_step(step, "2026-01-05T10:00:00+00:00"))
    if backend == "sqlite":  # one ooda serve per SQLite store: a running step found at start was left by a crash
        assert await second.steps_held_by_live_processes([step]) == set()
        return
    assert await second.steps_held_by_live_processes([step]) == {step}
    await first.close()  # the process ends (a SIGKILL drops its connections the same way)
    assert await second.steps_held_by_live_processes([step]) == set()
