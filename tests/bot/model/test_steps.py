"""The step lifecycle's one transition table, its compare-and-set, and the undo phase read from rows."""

from __future__ import annotations

import json

import pytest

from bot.errors import Conflict, IllegalTransition
from bot.model import steps
from bot.model.steps import StepKind, StepRecord, StepState, UndoPhase, undo_phase
from bot.store import step_moves
from tests.harness import running_app, running_standin


def row(kind: StepKind, state: StepState, idx: int = 0, name: str = "s") -> StepRecord:
    return StepRecord(id=1, task_id=1, kind=kind, idx=idx, name=name, tool="flags.set", category="write_reversible",
                      params={}, state=state, idempotency_key=f"k{idx}{name}")


@pytest.mark.parametrize(("kind", "current", "target"), [
    (StepKind.action, StepState.succeeded, StepState.running),  # a finished step never runs again
    (StepKind.action, StepState.unknown, StepState.pending),  # an interrupted unsafe step waits for a person
    (StepKind.action, StepState.failed, StepState.pending),  # only a rollback is asked for again
    (StepKind.rollback, StepState.succeeded, StepState.rolled_back),  # only actions are rolled back
    (StepKind.action, StepState.pending, StepState.succeeded),  # nothing succeeds without running
])
def test_moves_outside_the_table_raise_and_name_the_allowed_ones(kind, current, target):
    with pytest.raises(IllegalTransition, match=f"cannot move from {current} to {target}"):
        steps.check_step_transition(row(kind, current), target)


@pytest.mark.parametrize(("kind", "current", "target"), [
    (StepKind.action, StepState.pending, StepState.running),
    (StepKind.action, StepState.running, StepState.pending),  # interrupted, idempotent: re-run
    (StepKind.action, StepState.succeeded, StepState.rolled_back),
    (StepKind.rollback, StepState.failed, StepState.pending),
])
def test_moves_in_the_table_pass(kind, current, target):
    steps.check_step_transition(row(kind, current), target)


@pytest.mark.parametrize(("states", "phase"), [
    ([], None),
    ([StepState.pending, StepState.pending], UndoPhase.requested),
    ([StepState.succeeded, StepState.pending], UndoPhase.rolling_back),
    ([StepState.running], UndoPhase.rolling_back),
    ([StepState.succeeded, StepState.failed, StepState.skipped], UndoPhase.failed),
    ([StepState.unknown, StepState.skipped], UndoPhase.escalated),
    ([StepState.succeeded, StepState.succeeded], UndoPhase.undone),
])
def test_the_undo_phase_is_read_from_the_rollback_rows(states, phase):
    assert undo_phase([row(StepKind.rollback, s, i) for i, s in enumerate(states)]) == phase


async def test_a_move_is_compare_and_set_with_its_event_and_audit_record(tmp_path):
    async with running_standin() as standin, running_app(tmp_path, standin) as app:
        task = await app.commands.run_playbook("http-5xx-ratio", {"service": "checkout"},
                                               app.identities.by_id("local-admin"))
        await app.engine.wait_idle()
        [pending] = [s for s in await app.store.steps_of_task(task.id, StepKind.action)
                     if s.state is StepState.pending]

        await app.store.transact(lambda t: step_moves.move(t, pending, StepState.skipped, reason="test"))
        with pytest.raises(Conflict, match="no longer pending"):  # read as pending, moved meanwhile
            await app.store.transact(lambda t: step_moves.move(t, pending, StepState.denied, reason="stale"))
        events = [e.name for e in await app.store.events_of_task(task.id)]
        audit = [(row[3], json.loads(row[6])) async for row in app.store.audit_rows(task.id)]

    assert "ops.agent_task.step_changed" in events
    assert ("step.skipped", {"step": pending.name, "kind": "step", "tool": pending.tool, "from": "pending",
                             "to": "skipped", "reason": "test"}) in audit
    assert not any(action == "step.denied" for action, _ in audit)
