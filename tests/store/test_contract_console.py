"""Store contract: the web console's list views, approval roles and failed outbox deliveries."""

from __future__ import annotations

from bot.audit.chain import AUDIT_COLUMNS, AuditEntry
from bot.model.tasks import TaskState
from bot.store.protocol import TaskOps
from tests.store.contract import new_task


async def _audit(store, *entries: AuditEntry) -> None:
    async def unit(t: TaskOps) -> None:
        for entry in entries:
            t.audit(entry)

    await store.transact(unit)


async def test_audit_page_is_newest_first_with_each_filter(store):
    task = await new_task(store)
    await _audit(store, AuditEntry("alice", "tool.call", task.id, {"tool": "k8s.restart"}),
                 AuditEntry("bob", "tool.call", task.id, {"tool": "flags.set"}),
                 AuditEntry("alice", "kill_switch.on", None, {"reason": "bad deploy"}))
    page = await store.audit_page()
    assert len(page[0]) == len(AUDIT_COLUMNS.split(","))
    assert [r[3] for r in page] == ["kill_switch.on", "tool.call", "tool.call", "task.created"]
    assert [r[0] for r in page] == sorted((r[0] for r in page), reverse=True)
    assert [r[2] for r in await store.audit_page(actor="alice")] == ["alice", "alice"]
    [by_tool] = await store.audit_page(tool="k8s.restart")
    assert by_tool[2] == "alice" and by_tool[4] == task.id
    assert [r[3] for r in await store.audit_page(task_id=task.id, limit=2)] == ["tool.call", "tool.call"]
    older = await store.audit_page(before_seq=page[1][0])
    assert [r[0] for r in older] == [r[0] for r in page[2:]]


async def test_task_summaries_put_the_riskiest_first_then_the_oldest(store):
    quiet = await new_task(store, group_key="a", title="no plan yet")
    medium = await new_task(store, group_key="b")
    high = await new_task(store, group_key="c")
    closed = await new_task(store, group_key="d")

    async def unit(t: TaskOps) -> None:
        await t.save_proposal(medium.id, {"risk": {"score": 40, "band": "medium"}, "approvals_required": 1})
        await t.save_proposal(high.id, {"risk": {"score": 75.5, "band": "high"}, "approvals_required": 2,
                                        "evidence": [{"big": "x" * 1000}]})
        await t.set_state(closed.id, TaskState.queued, TaskState.cancelled, actor="test", reason="duplicate")

    await store.transact(unit)
    summaries = await store.task_summaries([TaskState.queued.value])
    assert [s["id"] for s in summaries] == [high.id, medium.id, quiet.id]
    top = summaries[0]
    assert (top["risk_score"], top["risk_band"], top["approvals_required"]) == (75.5, "high", 2)
    assert "proposal" not in top and top["state"] == "queued" and top["playbook_id"] == "pb"
    assert (summaries[2]["risk_score"], summaries[2]["risk_band"], summaries[2]["approvals_required"]) == (0, "low", 0)
    assert [s["id"] for s in await store.task_summaries([TaskState.queued.value], limit=1)] == [high.id]


async def test_task_outcomes_count_tasks_per_playbook_and_state(store):
    await new_task(store, group_key="a", playbook_id="restart")
    await new_task(store, group_key="b", playbook_id="restart")
    done = await new_task(store, group_key="c", playbook_id="disk")
    await store.transact(lambda t: t.set_state(done.id, TaskState.queued, TaskState.cancelled, actor="test"))
    assert await store.task_outcomes_by_playbook() == {"restart": {"queued": 2}, "disk": {"cancelled": 1}}


async def test_approvals_keep_the_roles_the_approver_held(store):
    task = await new_task(store)
    assert await store.transact(lambda t: t.add_approval(task.id, "U1", "Ana", "approve", None, None,
                                                         roles=["sre", "db-owner"]))
    assert not await store.transact(lambda t: t.add_approval(task.id, "U1", "Ana", "approve", None, None,
                                                             roles=["sre"]))
    assert await store.transact(lambda t: t.add_approval(task.id, "U2", "Bo", "approve", "ok", {"rollout": 10}))
    ana, bo = await store.approvals_of_task(task.id)
    assert ana.roles == ["db-owner", "sre"] and bo.roles is None and bo.edits == {"rollout": 10}


async def test_a_failed_outbox_delivery_counts_its_attempts_and_keeps_the_last_error(store):
    task = await new_task(store)
    await store.transact(lambda t: t.add_outbox(task.id, "slack", None, "timeout"))
    [item] = await store.outbox_items()
    await store.transact(lambda t: t.outbox_failed(item.id, "rate limited " * 100))
    [again] = await store.outbox_items()
    assert again.id == item.id and again.attempts == 2
    assert again.error is not None and again.error.startswith("rate limited") and len(again.error) == 500
