"""Store contract: audit chain, events, outbox and settings."""

from __future__ import annotations

from bot.audit.chain import AUDIT_COLUMNS, AuditEntry, verify_chain
from bot.model import events as ev
from bot.model.events import Event
from bot.store.ports import AuditRow
from bot.store.protocol import TaskOps
from tests.store.conftest import KEY
from tests.store.contract import new_task, received, signal


async def test_audit_records_chain_in_commit_order_and_verify(store):
    await store.ingest_signals([signal(1)], received())
    task = await new_task(store)

    async def unit(t: TaskOps) -> None:
        t.audit(AuditEntry("alice", "step.approved", task.id, {"step": "act"}))

    await store.transact(unit)
    rows = [row async for row in store.audit_rows()]
    assert AuditRow._fields == tuple(c.strip() for c in AUDIT_COLUMNS.split(","))
    assert [r.action for r in rows] == ["signals.received", "task.created", "step.approved"]
    assert [r.seq for r in rows] == [1, 2, 3]
    assert verify_chain(rows, KEY).ok
    assert await store.audit_head() == (3, rows[-1].hash)
    assert [r.action async for r in store.audit_rows(task.id)] == ["task.created", "step.approved"]


async def test_events_are_stored_with_their_change_and_read_in_order(store):
    task = await new_task(store)

    async def unit(t: TaskOps) -> None:
        t.event(Event(ev.EXECUTED, task.id, {"step": "act", "ok": True}))

    await store.transact(unit)
    events = await store.events_of_task(task.id)
    assert [e.name for e in events] == [ev.CREATED, ev.EXECUTED]
    assert events[-1].payload == {"step": "act", "ok": True} and events[-1].task_id == task.id
    assert await store.last_event_id() == events[-1].id
    assert await store.events_after(events[0].id, 10) == events[1:]


async def test_outbox_items_wait_until_removed(store):
    task = await new_task(store)
    await store.transact(lambda t: t.add_outbox(task.id, "slack", "approved", "slack unreachable" * 100))
    [item] = await store.outbox_items()
    assert (item.task_id, item.surface, item.note, item.attempts) == (task.id, "slack", "approved", 1)
    assert item.error is not None and len(item.error) == 500
    await store.transact(lambda t: t.remove_outbox(item.id))
    assert await store.outbox_items() == []


async def test_settings_hold_json_values_with_who_set_them(store):
    assert await store.get_setting("digest.sent.2026-01-05") is None
    await store.transact(lambda t: t.set_setting("digest.sent.2026-01-05", {"at": "now", "n": [1]}, "scheduler"))
    setting = await store.get_setting("digest.sent.2026-01-05")
    assert setting is not None and (setting.value, setting.updated_by) == ({"at": "now", "n": [1]}, "scheduler")
    assert await store.transact(lambda t: t.get_setting("digest.sent.2026-01-05")) == {"at": "now", "n": [1]}
    await store.heartbeat()
    heartbeat = await store.get_setting("heartbeat")
    assert heartbeat is not None and heartbeat.updated_by == "readyz"
