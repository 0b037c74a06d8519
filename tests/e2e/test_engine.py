"""The observe stage through the real server: storms, grouping windows, resolved alerts, restarts,
and the task state machine."""

from __future__ import annotations

import asyncio
import itertools
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.errors import IllegalTransition, StoreUnavailable
from bot.loop import engine as engine_module
from bot.loop.engine import CURSOR_KEY
from bot.model.tasks import OPEN_STATES, TRANSITIONS, TaskState, check_transition
from tests.harness import AM, client, running_app, running_standin

# Observe-only: the engine's grouping is under test, not the act stage.
PLAYBOOK = """
id: storm
version: "1"
description: Count a storm.
trigger:
  match: {alertname: TargetDown}
  group_by: [service]
  group_window_s: 60
  cooldown_s: 300
"""


def write_playbooks(root: Path) -> Path:
    folder = root / "engine-playbooks"
    folder.mkdir()
    (folder / "storm.yaml").write_text(PLAYBOOK)
    return folder


def alert(fingerprint: str, service: str, *, alertname: str = "TargetDown", status: str = "firing") -> dict:
    return {
        "status": status,
        "labels": {"alertname": alertname, "service": service, "severity": "warning", "env": "dev"},
        "annotations": {"summary": f"{alertname} on {service}"},
        "startsAt": "2026-01-05T14:21:47.903Z",
        "endsAt": "2026-01-05T14:31:47.903Z" if status == "resolved" else "0001-01-01T00:00:00Z",
        "fingerprint": fingerprint,
    }


def payload(alerts: list[dict]) -> dict:
    return {"receiver": "ooda", "status": alerts[0]["status"], "alerts": alerts, "groupLabels": {},
            "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am", "version": "4",
            "groupKey": "{}:{}", "truncatedAlerts": 0}


class Clock:
    """Real time plus an offset the test moves forward; stored timestamps stay comparable."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


@pytest.fixture
def playbooks(tmp_path):
    return {"playbooks_dir": str(write_playbooks(tmp_path))}


async def test_a_storm_of_two_thousand_alerts_becomes_five_tasks_with_counts(tmp_path, playbooks):
    services = [f"svc-{i}" for i in range(5)]
    alerts = [alert(f"fp-{n:05d}", services[n % 5]) for n in range(2000)]
    async with running_standin() as standin, running_app(tmp_path, standin, playbooks) as app, \
            client(app) as http:
        for start in range(0, len(alerts), 100):
            r = await http.post("/webhooks/alertmanager", json=payload(alerts[start:start + 100]), headers=AM)
            assert r.status_code == 202, r.text
        await app.engine.wait_idle()
        assert await app.store.signal_count() == 2000
        tasks = await app.store.list_tasks(open_only=False, limit=100)

    assert len(tasks) == 5
    assert sorted(t.group_key for t in tasks) == sorted({t.group_key for t in tasks})
    assert [t.signal_count for t in tasks] == [400] * 5
    assert all(t.state is TaskState.completed for t in tasks)


async def test_redelivered_alerts_are_not_counted_twice(tmp_path, playbooks):
    async with running_standin() as standin, running_app(tmp_path, standin, playbooks) as app, \
            client(app) as http:
        batch = payload([alert("fp-a", "api"), alert("fp-b", "api")])
        for _ in range(3):
            assert (await http.post("/webhooks/alertmanager", json=batch, headers=AM)).status_code == 202
        await app.engine.wait_idle()
        tasks = await app.store.list_tasks(open_only=False)
    assert [t.signal_count for t in tasks] == [2]


async def test_a_resolved_alert_is_recorded_on_its_task(tmp_path, playbooks):
    async with running_standin() as standin, running_app(tmp_path, standin, playbooks) as app, \
            client(app) as http:
        await http.post("/webhooks/alertmanager", json=payload([alert("fp-r", "api")]), headers=AM)
        await app.engine.wait_idle()
        await http.post("/webhooks/alertmanager", json=payload([alert("fp-r", "api", status="resolved")]),
                        headers=AM)
        await app.engine.wait_idle()
        [task] = await app.store.list_tasks(open_only=False)
        events = await app.store.events_of_task(task.id)
    resolved = [e for e in events if e.name.endswith("signals_resolved")]
    assert len(resolved) == 1
    assert task.signal_count == 1  # the resolution updates the task; it is not a new signal of it


async def test_an_alert_no_playbook_matches_is_stored_but_opens_no_task(tmp_path, playbooks):
    async with running_standin() as standin, running_app(tmp_path, standin, playbooks) as app, \
            client(app) as http:
        r = await http.post("/webhooks/alertmanager", json=payload([alert("fp-x", "api", alertname="Watchdog")]),
                            headers=AM)
        assert r.status_code == 202
        await app.engine.wait_idle()
        assert await app.store.signal_count() == 1
        assert await app.store.list_tasks(open_only=False) == []


async def test_the_cursor_past_unmatched_alerts_is_saved_at_most_every_few_seconds_and_at_stop(
        tmp_path, playbooks, monkeypatch):
    # Saving it each time the engine went idle put a transaction between every two intake commits.
    monkeypatch.setattr(engine_module, "CURSOR_SAVE_S", 3600.0)
    async with running_standin() as standin, running_app(tmp_path, standin, playbooks) as app, \
            client(app) as http:
        for n in range(5):
            r = await http.post("/webhooks/alertmanager",
                                json=payload([alert(f"fp-u{n}", "api", alertname="Watchdog")]),
                                headers=AM)
            assert r.status_code == 202
            await app.engine.wait_idle()
        assert await app.store.get_setting(CURSOR_KEY) is None
        db = app.store.path
    with sqlite3.connect(db) as conn:  # the app has stopped: its engine saved the cursor on the way out
        [(saved,)] = conn.execute("SELECT value FROM settings WHERE key = ?", (CURSOR_KEY,)).fetchall()
    assert json.loads(saved) == 5


async def test_a_cursor_that_cannot_be_saved_does_not_stop_the_engine(tmp_path, playbooks, monkeypatch):
    monkeypatch.setattr(engine_module, "CURSOR_SAVE_S", 0.0)  # save after every group
    async with running_standin() as standin, running_app(tmp_path, standin, playbooks) as app, \
            client(app) as http:
        real_transact = app.store.transact

        async def failing_transact(unit):
            raise StoreUnavailable("disk full")

        monkeypatch.setattr(app.store, "transact", failing_transact)
        r = await http.post("/webhooks/alertmanager", json=payload([alert("fp-c1", "api", alertname="Watchdog")]),
                            headers=AM)
        assert r.status_code == 202
        async with asyncio.timeout(10):
            await app.engine.wait_idle()  # grouped, and the cursor save failed
        monkeypatch.setattr(app.store, "transact", real_transact)

        r = await http.post("/webhooks/alertmanager", json=payload([alert("fp-c2", "api")]), headers=AM)
        assert r.status_code == 202
        async with asyncio.timeout(10):
            await app.engine.wait_idle()
        tasks = await app.store.list_tasks(open_only=False)
    assert [t.signal_count for t in tasks] == [1]


async def test_a_failed_read_of_the_store_is_retried_and_nothing_is_skipped(tmp_path, playbooks, monkeypatch):
    # A tiny inbox: 20 alerts overflow it, so the engine reads them back from the store.
    async with running_standin() as standin, \
            running_app(tmp_path, standin, {**playbooks, "engine": {"queue_size": 10}}) as app, client(app) as http:
        real_signals_after = app.store.signals_after
        failures = []

        async def signals_after(seq, limit=500):
            if limit > 1 and not failures:  # the engine's read, not wait_idle's peek
                failures.append(seq)
                raise StoreUnavailable("database is locked")
            return await real_signals_after(seq, limit)

        monkeypatch.setattr(app.store, "signals_after", signals_after)
        alerts = [alert(f"fp-r{n}", "api") for n in range(20)]
        assert (await http.post("/webhooks/alertmanager", json=payload(alerts), headers=AM)).status_code == 202
        async with asyncio.timeout(10):
            await app.engine.wait_idle()
        tasks = await app.store.list_tasks(open_only=False)
    assert failures and [t.signal_count for t in tasks] == [20]


async def test_a_task_whose_planning_met_an_unavailable_store_is_planned_when_it_is_back(
        tmp_path, playbooks, monkeypatch):
    # PostgreSQL failing over under a task being planned: no alert comes again to wake it.
    monkeypatch.setattr(engine_module, "STORE_RETRY_S", 0.05)
    async with running_standin() as standin, running_app(tmp_path, standin, playbooks) as app, client(app) as http:
        real_get_task = app.store.get_task
        failures = []

        async def get_task(task_id):
            if not failures:
                failures.append(task_id)
                raise StoreUnavailable("connection to PostgreSQL lost")
            return await real_get_task(task_id)

        monkeypatch.setattr(app.store, "get_task", get_task)
        assert (await http.post("/webhooks/alertmanager", json=payload([alert("fp-u1", "api")]),
                                headers=AM)).status_code == 202
        async with asyncio.timeout(10):
            await app.engine.wait_idle()
        (task,) = await app.store.list_tasks(open_only=False)
    # Planned after all (the storm playbook only observes, so planning completes it), not left queued.
    assert failures == [task.id] and task.state is TaskState.completed


async def test_group_window_and_cooldown_decide_whether_an_alert_joins_or_opens_a_task(tmp_path, playbooks):
    clock = Clock()
    fingerprints = (f"fp-{n}" for n in itertools.count())
    async with running_standin() as standin, running_app(tmp_path, standin, playbooks, clock=clock) as app, \
            client(app) as http:
        async def fire(service: str = "api") -> list:
            await http.post("/webhooks/alertmanager", json=payload([alert(next(fingerprints), service)]),
                            headers=AM)
            await app.engine.wait_idle()
            return await app.store.list_tasks(open_only=False)

        [first] = await fire()
        assert first.state is TaskState.completed  # observe-only: closes at once, so the cooldown applies
        clock.offset = timedelta(seconds=30)  # inside the 60 s group window
        assert [t.signal_count for t in await fire()] == [2]
        clock.offset = timedelta(seconds=200)  # window passed, but within 300 s of closing
        assert [t.signal_count for t in await fire()] == [3]
        assert len(await fire("web")) == 2  # another group opens its own task meanwhile
        clock.offset = timedelta(seconds=1000)  # past both
        tasks = await fire()
    api = sorted((t for t in tasks if t.group_key == first.group_key), key=lambda t: t.id)
    assert [t.signal_count for t in api] == [3, 1]


async def test_queued_tasks_are_resumed_when_the_engine_starts(tmp_path, playbooks):
    async with running_standin() as standin:
        async with running_app(tmp_path, standin, playbooks) as app:
            # Created straight in the store, so no running engine knows about it: a crash right
            # after intake committed the task.
            task = await app.store.transact(lambda t: t.create_task(
                playbook_id="storm", playbook_version="1", group_key="storm:svc=late", title="late",
                environment="dev", severity="warning", requester="source:alertmanager", args={},
                signal_ids=[], last_signal_at=None))
            assert (await app.store.get_task(task.id)).state is TaskState.queued
        async with running_app(tmp_path, standin, playbooks) as app:
            await app.engine.wait_idle()
            resumed = await app.store.get_task(task.id)
    assert resumed.state is TaskState.completed
    assert resumed.outcome == "observed only: the playbook has no write steps"


async def test_an_illegal_transition_in_the_store_raises_and_changes_nothing(tmp_path, playbooks):
    async with running_standin() as standin, running_app(tmp_path, standin, playbooks) as app, \
            client(app) as http:
        await http.post("/webhooks/alertmanager", json=payload([alert("fp-i", "api")]), headers=AM)
        await app.engine.wait_idle()
        [task] = await app.store.list_tasks(open_only=False)
        with pytest.raises(IllegalTransition, match="cannot move from completed to running"):
            await app.store.transact(lambda t: t.set_state(task.id, TaskState.completed, TaskState.running,
                                                           actor="test", reason="illegal"))
        assert (await app.store.get_task(task.id)).state is TaskState.completed


@pytest.mark.parametrize(("current", "target"), list(itertools.product(TaskState, TaskState)))
def test_check_transition_follows_the_table(current, target):
    if target in TRANSITIONS[current]:
        check_transition(1, current, target)
    else:
        with pytest.raises(IllegalTransition, match=f"from {current.value} to {target.value}"):
            check_transition(1, current, target)


def test_the_state_machine_has_the_shape_the_design_describes():
    assert set(TRANSITIONS) == set(TaskState)
    happy = [TaskState.queued, TaskState.running, TaskState.needs_approval, TaskState.executing, TaskState.completed]
    assert all(b in TRANSITIONS[a] for a, b in itertools.pairwise(happy))
    assert TRANSITIONS[TaskState.cancelled] == frozenset()
    # A rejected plan whose automatic steps already ran can still be undone, and nothing else.
    assert TRANSITIONS[TaskState.rejected] == frozenset({TaskState.executing})
    # Nothing skips the decision: work reaches executing only through planning or approval.
    assert TaskState.executing not in TRANSITIONS[TaskState.queued]
    # A finished task only moves again to run its rollbacks (undo).
    assert TRANSITIONS[TaskState.completed] == frozenset({TaskState.executing})
    assert {TaskState.queued, TaskState.running, TaskState.needs_approval, TaskState.executing} <= OPEN_STATES
    assert not OPEN_STATES & {TaskState.completed, TaskState.rejected, TaskState.cancelled}


async def test_concurrent_webhooks_of_one_group_make_one_task(tmp_path, playbooks):
    async with running_standin() as standin, running_app(tmp_path, standin, playbooks) as app, \
            client(app) as http:
        posts = [http.post("/webhooks/alertmanager", json=payload([alert(f"fp-c{n}", "api")]), headers=AM)
                 for n in range(20)]
        assert {r.status_code for r in await asyncio.gather(*posts)} == {202}
        await app.engine.wait_idle()
        tasks = await app.store.list_tasks(open_only=False)
    assert [t.signal_count for t in tasks] == [20]
