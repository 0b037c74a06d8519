"""Every tool call leaves exactly one audit record, whatever path made it: evidence reads, dry
runs, writes, verify calls and rollbacks; and no code but the gateway can make a write run.

The tools of a real App are counted where they run (their ``run`` is wrapped by the test), and the
task's audit trail must hold one ``tool.call`` record per run, naming the tool, a digest of its
params, why it ran, the approvals behind it, how long it took and how it ended.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest

from bot.loop.gateway import ToolCallRefused
from bot.model.steps import StepKind, StepState
from bot.model.tasks import TaskState
from bot.policy.identity import Actor
from tests.harness import running_app, running_standin

REQUESTER = Actor(id="runner", display="Runner", roles=frozenset({"operator"}), via="api")
APPROVER = Actor(id="lead", display="Lead", roles=frozenset({"sre-lead", "oncall"}), via="api")
FIELDS = {"tool", "purpose", "params_digest", "reason_code", "approval_ids", "duration_ms", "outcome"}


def count_runs(app) -> Counter[tuple[str, bool]]:
    """(tool, dry_run) -> how many times the tool really ran."""
    runs: Counter[tuple[str, bool]] = Counter()
    for tool in app.core.gateway.registry.tools_for_instrumenting():
        original = tool.run

        async def counted(params: Any, *, dry_run: bool, _tool=tool, _run=original) -> Any:
            runs[(_tool.name, dry_run)] += 1
            return await _run(params, dry_run=dry_run)

        tool.run = counted
    return runs


async def tool_records(app, task_id: int) -> list[dict[str, Any]]:
    return [json.loads(row[6]) async for row in app.store.audit_rows(task_id) if row[3] == "tool.call"]


async def test_every_tool_call_of_every_path_leaves_exactly_one_audit_record(tmp_path):
    async with running_standin() as standin, running_app(tmp_path, standin) as app:
        runs = count_runs(app)
        task = await app.commands.run_playbook("http-5xx-ratio", {"service": "checkout"}, REQUESTER)
        await app.engine.wait_idle()  # evidence reads, dry runs, the throttle (allowed on its own)
        await app.commands.approve(task.id, APPROVER)
        await app.engine.wait_idle()  # the rollback of the deploy, then verify
        assert (await app.store.get_task(task.id)).state is TaskState.completed
        await app.commands.undo(task.id, APPROVER)  # the throttle's rollback
        records = await tool_records(app, task.id)

    purposes = Counter(r["purpose"] for r in records)
    assert purposes["read"] >= 1 and purposes["dry_run"] >= 1 and purposes["write"] == 2
    assert purposes["verify"] >= 1 and purposes["rollback"] == 1
    audited: Counter[tuple[str, bool]] = Counter()
    for r in records:  # one record per call; a retried call counts its attempts in it
        audited[(r["tool"], r["purpose"] == "dry_run")] += r["attempts"]
    assert +audited == +runs
    for record in records:
        assert record.keys() >= FIELDS, record
        assert len(record["params_digest"]) == 64
    approved = next(r for r in records if r["purpose"] == "write" and r["tool"] == "http.request")
    assert approved["approval_ids"] and approved["reason_code"] == "playbook:http-5xx-ratio:roll_back_deploy"


async def test_the_gateway_refuses_a_write_without_recorded_approvals_whatever_the_caller_claims(tmp_path):
    async with running_standin() as standin, running_app(tmp_path, standin) as app:
        task = await app.commands.run_playbook("http-5xx-ratio", {"service": "checkout"}, REQUESTER)
        await app.engine.wait_idle()
        task = await app.store.get_task(task.id)
        assert task.state is TaskState.needs_approval
        steps = {s.name: s for s in await app.store.steps_of_task(task.id, StepKind.action)}
        waiting = steps["roll_back_deploy"]
        assert waiting.state is StepState.pending
        before = len(standin.calls)

        # A caller that decided on its own that the step may run: the gateway asks the policy and
        # the store, finds no approval, and refuses.
        forged = waiting.model_copy(update={"decision": {"verdict": "allow", "rule": "forged", "reason": "trust me"}})
        with pytest.raises(ToolCallRefused, match="not executing"):
            await app.core.gateway.write(task, forged, timeout_s=5, retries=0)
        # Even with the task moved to executing behind the approvals' back.
        await app.store.transact(lambda t: t.set_state(task.id, TaskState.needs_approval, TaskState.executing,
                                                       actor="forger"))
        with pytest.raises(ToolCallRefused, match="needs approval"):
            await app.core.gateway.write(task, forged, timeout_s=5, retries=0)
        # An approval recorded in the store by the requester does not count either (separation of duties).
        await app.store.transact(lambda t: t.add_approval(task.id, REQUESTER.id, "Runner", "approve", None, None))
        with pytest.raises(ToolCallRefused, match="needs approval"):
            await app.core.gateway.write(task, forged, timeout_s=5, retries=0)
        # Tools are reachable only through the gateway: the registry hands out no callable tool.
        assert not hasattr(app.core.gateway.registry.get("http.request"), "run")
        records = await tool_records(app, task.id)
        assert [s.state for s in await app.store.steps_of_task(task.id, StepKind.action)
                if s.name == "roll_back_deploy"] == [StepState.pending]

    assert [c for c in standin.calls[before:] if "rollback" in c["path"]] == []
    assert [r["outcome"] for r in records if r["purpose"] == "write" and r["tool"] == "http.request"] == [
        "refused", "refused", "refused"]
