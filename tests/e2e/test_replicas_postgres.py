"""Several real ``ooda serve`` processes on one PostgreSQL: each piece of work is done once.

Three replicas share one database. The same Alertmanager notification sent to two of them (an HA
pair of Alertmanagers delivers every notification to each replica it knows) gives one task with
one signal; approvals sent to two replicas at the same moment run the step once (the platform API
counts the calls); when the leader is killed with SIGKILL another replica leads within 10 s; and a
signal stored but never grouped by the replica that took it in (here: written into the store
beside the replicas, so none of them heard of it) is grouped by the others, once. At volume:
10,000 alerts in notifications of 100, round-robin over three replicas with some sent to two, leave
exactly one stored signal each, all grouped; 50 tasks approved on two replicas at once run 50 steps.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time

import asyncpg
import httpx

from bot.audit.chain import AuditEntry
from bot.model.events import EventBus
from bot.model.signals import Signal, SignalStatus
from bot.store.postgres import PostgresStore
from tests.e2e.test_crash_execution import Child, HangingPlatform
from tests.harness import ADMIN, AM, SECOND
from tests.replicas import NOTIFICATION, Platform, roles, start_replicas, stop_child, until


async def test_replicas_on_one_postgresql_do_each_piece_of_work_once(tmp_path, postgres_url):
    platform = Platform()
    async with platform.running() as platform_port, contextlib.AsyncExitStack() as stack:
        replicas = await start_replicas(stack, tmp_path, platform_port, postgres_url, "a", "b", "c")
        (_, a), (_, b), (_, c) = replicas

        # The HA pair: the same notification to two replicas at once.
        sent = await asyncio.gather(*(http.post("/webhooks/alertmanager", json=NOTIFICATION, headers=AM)
                                      for http in (a, b)))
        assert [r.status_code for r in sent] == [202, 202]

        async def planned() -> list[dict] | None:
            tasks = (await c.get("/api/v1/tasks", headers=ADMIN)).json()["tasks"]
            return tasks if tasks and all(t["state"] == "needs_approval" for t in tasks) else None

        tasks = await until(planned)
        await asyncio.sleep(1)  # a second task would have been opened by now; none may be
        tasks = (await c.get("/api/v1/tasks", headers=ADMIN)).json()["tasks"]
        assert len(tasks) == 1, tasks
        (task,) = tasks
        assert task["signal_count"] == 1

        # Both approvers click on two replicas at the same moment.
        clicks = await asyncio.gather(*(http.post(f"/api/v1/tasks/{task['id']}/approve", headers=who, json={})
                                        for http in (a, b) for who in (ADMIN, SECOND)))
        assert all(r.status_code in (200, 409) for r in clicks), [r.text for r in clicks]

        async def completed() -> dict | None:
            proposal = (await c.get(f"/api/v1/tasks/{task['id']}", headers=ADMIN)).json()["proposal"]
            return proposal if proposal["state"] in ("completed", "failed_terminal", "escalated_to_human") else None

        proposal = await until(completed)
        assert proposal["state"] == "completed" and proposal["steps"][0]["state"] == "succeeded"
        await asyncio.sleep(1)  # a second run would have reached the platform by now
        assert platform.restarts == 1

        # The leader dies without a word; another replica leads within 10 s.
        before = await until(lambda: _one_leader(replicas))
        leader = before.index("leader")
        killed_at = time.monotonic()
        assert await replicas[leader][0].kill(signal.SIGKILL) == -signal.SIGKILL
        after = await until(lambda: _one_leader(replicas), deadline_s=10)
        assert time.monotonic() - killed_at < 10
        assert after[leader] == "down" and after.count("leader") == 1

        # A signal taken in by a replica that died before grouping it.
        alive = next(http for i, (_, http) in enumerate(replicas) if i != leader)
        beside = PostgresStore(postgres_url, EventBus())
        await beside.open()
        try:
            await beside.ingest_signals([Signal(
                source="alertmanager", fingerprint="0ddba11", status=SignalStatus.firing, title="ReplicaDrill",
                labels={"alertname": "ReplicaDrill", "service": "cart", "severity": "critical"},
                annotations={}, raw={})], AuditEntry("source:alertmanager", "signals.received", None, {"count": 1}))
        finally:
            await beside.close()

        async def second_task() -> list[dict] | None:
            tasks = (await alive.get("/api/v1/tasks?state=all", headers=ADMIN)).json()["tasks"]
            return tasks if len(tasks) == 2 else None

        await until(second_task)
        await asyncio.sleep(1.5)  # past a poll of every replica: a duplicate would be there now
        tasks = (await alive.get("/api/v1/tasks?state=all", headers=ADMIN)).json()["tasks"]
        assert len(tasks) == 2 and all(t["signal_count"] == 1 for t in tasks)


async def test_a_replica_restarting_leaves_the_step_another_replica_runs_alone(tmp_path, postgres_url):
    """Recovery at start resolves steps a crash interrupted, not the ones a live replica is running."""
    platform = HangingPlatform()
    async with platform.running() as platform_port, contextlib.AsyncExitStack() as stack:
        replicas = await start_replicas(stack, tmp_path, platform_port, postgres_url, "a", "b")
        (_, a), (other, b) = replicas
        assert (await a.post("/webhooks/alertmanager", json=NOTIFICATION, headers=AM)).status_code == 202

        async def planned() -> dict | None:
            tasks = (await a.get("/api/v1/tasks", headers=ADMIN)).json()["tasks"]
            return tasks[0] if tasks and tasks[0]["state"] == "needs_approval" else None

        task = await until(planned)
        for who in (ADMIN, SECOND):
            r = await a.post(f"/api/v1/tasks/{task['id']}/approve", headers=who, json={})
            assert r.status_code in (200, 409), r.text
        await asyncio.wait_for(platform.arrived.wait(), 20)  # replica a is inside the step now

        assert await other.kill(signal.SIGTERM) == 0
        restarted = Child(other.config)
        await restarted.start()  # its recovery ran before it reported started
        stack.push_async_callback(stop_child, restarted)
        proposal = (await b.get(f"/api/v1/tasks/{task['id']}", headers=ADMIN)).json()["proposal"]
        assert proposal["state"] == "executing" and proposal["steps"][0]["state"] == "running"

        platform.release.set()

        async def completed() -> dict | None:
            proposal = (await b.get(f"/api/v1/tasks/{task['id']}", headers=ADMIN)).json()["proposal"]
            return proposal if proposal["state"] != "executing" else None

        proposal = await until(completed)
        assert proposal["state"] == "completed" and proposal["steps"][0]["state"] == "succeeded"
        assert platform.posts == ["/platform/workloads/shop/api/restart"]


async def test_a_step_left_running_by_a_killed_replica_is_resolved_by_the_leader(tmp_path, postgres_url):
    """No replica restarts: the leader's periodic recovery finds the step whose owner is gone."""
    platform = HangingPlatform()
    async with platform.running() as platform_port, contextlib.AsyncExitStack() as stack:
        replicas = await start_replicas(stack, tmp_path, platform_port, postgres_url, "a", "b")
        (runner, a), (_, b) = replicas
        assert (await a.post("/webhooks/alertmanager", json=NOTIFICATION, headers=AM)).status_code == 202

        async def planned() -> dict | None:
            tasks = (await a.get("/api/v1/tasks", headers=ADMIN)).json()["tasks"]
            return tasks[0] if tasks and tasks[0]["state"] == "needs_approval" else None

        task = await until(planned)
        for who in (ADMIN, SECOND):
            r = await a.post(f"/api/v1/tasks/{task['id']}/approve", headers=who, json={})
            assert r.status_code in (200, 409), r.text
        await asyncio.wait_for(platform.arrived.wait(), 20)
        assert await runner.kill(signal.SIGKILL) == -signal.SIGKILL

        async def resolved() -> dict | None:
            proposal = (await b.get(f"/api/v1/tasks/{task['id']}", headers=ADMIN)).json()["proposal"]
            return proposal if proposal["state"] != "executing" else None

        # Leadership moves within a few seconds, and the leader looks every ORPHAN_CHECK_S.
        proposal = await until(resolved, deadline_s=30)
        assert proposal["state"] == "escalated_to_human" and proposal["steps"][0]["state"] == "unknown"
        assert "not idempotent" in proposal["outcome"]
        assert platform.posts == ["/platform/workloads/shop/api/restart"]


async def _one_leader(replicas) -> list[str] | None:
    current = await roles(replicas)
    return current if current.count("leader") == 1 else None


SERVICES = 50
ALERTS = 10_000
PER_NOTIFICATION = 100


def _batch(first: int) -> dict:
    """One Alertmanager notification of ``PER_NOTIFICATION`` distinct alerts spread over ``SERVICES`` services."""
    template: dict = NOTIFICATION["alerts"][0]  # type: ignore[index]
    alerts = [{**template, "fingerprint": f"{i:016x}",
               "labels": {"alertname": "ReplicaDrill", "service": f"svc-{i % SERVICES}", "severity": "critical"}}
              for i in range(first, first + PER_NOTIFICATION)]
    return {**NOTIFICATION, "alerts": alerts}


async def test_ten_thousand_alerts_across_three_replicas_are_each_stored_and_grouped_once(tmp_path, postgres_url):
    """Round-robin intake with HA-pair duplicates loses nothing and doubles nothing."""

    platform = Platform()
    async with platform.running() as platform_port, contextlib.AsyncExitStack() as stack:
        replicas = await start_replicas(stack, tmp_path, platform_port, postgres_url, "a", "b", "c")
        clients = [http for _, http in replicas]
        db = await asyncpg.connect(postgres_url)
        stack.push_async_callback(db.close)

        # Round-robin; every fourth notification also goes to the next replica, as an HA pair sends it.
        deliveries = []
        for n, first in enumerate(range(0, ALERTS, PER_NOTIFICATION)):
            deliveries.append((clients[n % 3], first))
            if n % 4 == 0:
                deliveries.append((clients[(n + 1) % 3], first))
        in_flight = asyncio.Semaphore(6)

        async def deliver(http: httpx.AsyncClient, first: int) -> int:
            async with in_flight:
                return (await http.post("/webhooks/alertmanager", json=_batch(first), headers=AM)).status_code

        statuses = await asyncio.gather(*(deliver(http, first) for http, first in deliveries))
        assert set(statuses) == {202}

        async def all_grouped() -> bool:
            row = await db.fetchrow(
                "SELECT count(*) AS n, count(*) FILTER (WHERE task_id IS NULL) AS loose FROM signals")
            return row["n"] == ALERTS and row["loose"] == 0

        await until(all_grouped, deadline_s=60)
        signals = await db.fetchrow(
            "SELECT count(*) AS n, count(DISTINCT fingerprint) AS distinct_fp, sum(deliveries) AS deliveries"
            " FROM signals")
        assert signals["n"] == signals["distinct_fp"] == ALERTS  # 0 lost, 0 duplicated
        assert signals["deliveries"] == len(deliveries) * PER_NOTIFICATION  # every copy counted on its one row
        per_task = await db.fetch("SELECT task_id, count(*) AS n FROM signals GROUP BY task_id")
        assert len(per_task) == SERVICES and {r["n"] for r in per_task} == {ALERTS // SERVICES}
        assert await db.fetchval("SELECT count(*) FROM tasks") == SERVICES



# Tier 4 for the drill's restart: two distinct people must approve it (separation of duties).
TWO_APPROVERS = {"tier_map": {"write_irreversible": {"low": 4, "medium": 4, "high": 4}}}


async def test_fifty_tasks_approved_on_two_replicas_at_once_run_each_step_once(tmp_path, postgres_url):
    """Both approvers click on two replicas at once, for 50 tasks: every quorum is seen, every step runs once."""
    platform = Platform()
    async with platform.running() as platform_port, contextlib.AsyncExitStack() as stack:
        replicas = await start_replicas(stack, tmp_path, platform_port, postgres_url, "a", "b", "c",
                                        overrides={"policy": TWO_APPROVERS})
        clients = [http for _, http in replicas]
        db = await asyncpg.connect(postgres_url)
        stack.push_async_callback(db.close)
        notification = {**_batch(0), "alerts": _batch(0)["alerts"][:SERVICES]}  # one alert per service
        assert (await clients[2].post("/webhooks/alertmanager", json=notification, headers=AM)).status_code == 202

        async def all_planned() -> list[dict] | None:
            tasks = (await clients[0].get("/api/v1/tasks", headers=ADMIN)).json()["tasks"]
            return tasks if len(tasks) == SERVICES and all(t["state"] == "needs_approval" for t in tasks) else None

        tasks = await until(all_planned, deadline_s=60)

        # Each task: both approvers click on two replicas at the same moment.
        async def approve_twice(task_id: int) -> list[httpx.Response]:
            return list(await asyncio.gather(*(http.post(f"/api/v1/tasks/{task_id}/approve", headers=who, json={})
                                               for http in clients[:2] for who in (ADMIN, SECOND))))

        per_task = await asyncio.gather(*(approve_twice(t["id"]) for t in tasks))
        for clicks in per_task:
            assert all(r.status_code in (200, 409) for r in clicks), [r.text for r in clicks]
            # Exactly one click completed the quorum; the others were counted before it, repeated, or late.
            started = [r for r in clicks if r.status_code == 200 and "is executing" in r.json()["message"]]
            assert len(started) == 1, [r.text for r in clicks]
        approvals = await db.fetch("SELECT task_id, count(*) AS n FROM approvals WHERE verdict = 'approve' "
                                   "GROUP BY task_id")
        assert len(approvals) == SERVICES and {r["n"] for r in approvals} == {2}

        async def all_done() -> bool:
            states = await db.fetch("SELECT state FROM steps")
            return len(states) == SERVICES and all(s["state"] == "succeeded" for s in states)

        await until(all_done, deadline_s=60)
        await asyncio.sleep(1)  # a second run of any step would have reached the platform by now
        assert platform.restarts == SERVICES
