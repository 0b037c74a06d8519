"""Owner locks on a real PostgreSQL: kept across a dropped connection, refused claims without one,
the tasks of a gone owner, and results refused once the leader resolved a step.

Each ``PostgresStore`` stands for one replica (its own pool and owner lock); the test's own
connection plays the database administrator who ends a backend.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg
import pytest
from structlog.testing import capture_logs

from bot.errors import Conflict
from bot.model.events import EventBus
from bot.model.steps import StepState
from bot.store import step_moves
from bot.store.postgres import PostgresStore
from bot.store.postgres_owner import OWNER_LOCK, Orphan, OwnerLockLost, TaskOwners
from tests.replicas import until
from tests.store.contract import new_step, new_task

STARTED = "2026-01-05T10:00:00+00:00"


@pytest.fixture
async def replicas(postgres_url: str) -> AsyncIterator[tuple[PostgresStore, PostgresStore, asyncpg.Connection]]:
    """Two stores on one database (two replicas) and an administrator's connection."""
    async with contextlib.AsyncExitStack() as stack:
        stores = []
        for _ in range(2):
            store = PostgresStore(postgres_url, EventBus())
            await store.open()
            stack.push_async_callback(store.close)
            stores.append(store)
        admin = await asyncpg.connect(postgres_url)
        stack.push_async_callback(admin.close)
        yield stores[0], stores[1], admin


async def lock_holder(admin: asyncpg.Connection, owner: int | None) -> int | None:
    """The backend holding ``owner``'s lock, as pg_locks shows it to every session."""
    return await admin.fetchval(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = $1::oid "
        "AND objid = $2::oid AND objsubid = 2", OWNER_LOCK, owner)


async def test_an_owner_lock_whose_connection_was_ended_is_taken_again_with_the_same_number(replicas):
    store, _, admin = replicas
    owner, pid = store.owner_lock.number, await lock_holder(admin, store.owner_lock.number)
    assert pid == store.owner_lock.backend_pid is not None
    with capture_logs() as logs:
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)

        async def held_elsewhere() -> int | None:
            holder = await lock_holder(admin, owner)
            return holder if holder not in (None, pid) and store.owner_lock.held else None

        await until(held_elsewhere, deadline_s=5)
    assert store.owner_lock.number == owner
    events = [e["event"] for e in logs]
    assert events.index("owner.lock_dropped") < events.index("owner.lock_taken_again")


async def test_a_replica_that_cannot_take_its_owner_lock_again_claims_no_step_and_hands_its_task_over(replicas):
    store, _, admin = replicas
    owner = store.owner_lock.number
    task = await new_task(store)
    step = await new_step(store, task.id)
    assert await admin.fetchval("SELECT claimed_by FROM tasks WHERE id = $1", task.id) == owner

    # Another session waits for the same lock: it gets it the moment the replica's backend ends.
    squatter = await asyncpg.connect(store._dsn)
    try:
        waiting = asyncio.create_task(squatter.execute("SELECT pg_advisory_lock($1::int, $2::int)", OWNER_LOCK, owner))
        await until(lambda: admin.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND objid = $1::oid", owner))
        with capture_logs() as logs:
            await admin.fetchval("SELECT pg_terminate_backend($1)", await lock_holder(admin, owner))
            await waiting

            async def told() -> bool:
                return any(e["event"] == "owner.lock_unavailable" for e in logs)

            await until(told, deadline_s=5)
            assert not store.owner_lock.held
            with pytest.raises(OwnerLockLost, match="claims no step"):
                await store.transact(lambda t: t.claim_step(step, STARTED))
        events = [e["event"] for e in logs]
        assert {"owner.lock_dropped", "owner.lock_unavailable", "owner.claim_refused",
                "owner.task_handed_over"} <= set(events)
        row = await admin.fetchrow("SELECT s.state, t.claimed_by FROM steps s JOIN tasks t ON t.id = s.task_id "
                                   "WHERE s.id = $1", step)
        assert (row["state"], row["claimed_by"]) == ("pending", None)  # nothing claimed; the leader's to take
        assert [o.task_id for o in await TaskOwners(store).orphaned_tasks()] == [task.id]

        await squatter.execute("SELECT pg_advisory_unlock($1::int, $2::int)", OWNER_LOCK, owner)

        async def held() -> bool:
            return store.owner_lock.held

        await until(held, deadline_s=5)
    finally:
        await squatter.close()
    assert await store.transact(lambda t: t.claim_step(step, STARTED))
    assert await admin.fetchval("SELECT claimed_by FROM steps WHERE id = $1", step) == owner


async def test_the_tasks_of_an_owner_that_is_gone_are_found_and_taken_over_once(postgres_url):
    leader, gone = PostgresStore(postgres_url, EventBus()), PostgresStore(postgres_url, EventBus())
    await leader.open()
    await gone.open()
    try:
        owners = TaskOwners(leader)
        task = await new_task(gone)
        assert await owners.orphaned_tasks() == []  # its owner is alive
        await gone.close()  # the process ends (a SIGKILL drops its connections the same way)
        [found] = await owners.orphaned_tasks()
        assert (found.task_id, found.state, found.owner) == (task.id, "queued", gone.owner_lock.number)
        moved = Orphan(found.task_id, found.state, found.owner, "2020-01-01T00:00:00+00:00")
        assert not await owners.take_over(task.id, moved)  # not as that look found it: left alone
        assert await owners.take_over(task.id, found)
        assert not await owners.take_over(task.id, found)  # taken already
        assert await owners.orphaned_tasks() == []  # the leader is alive: the task is its own now
        audit = [r async for r in leader.audit_rows(task.id)]
        assert [r.action for r in audit].count("task.taken_over") == 1
    finally:
        await leader.close()


async def test_a_late_result_is_refused_once_the_leader_resolved_the_step(replicas):
    runner, leader, _ = replicas
    task = await new_task(runner)

    async def claimed(store: PostgresStore, step_id: int):
        assert await store.transact(lambda t: t.claim_step(step_id, STARTED))
        [row] = [s for s in await store.steps_of_task(task.id) if s.id == step_id]
        return row

    async def finish(store: PostgresStore, row, target=StepState.succeeded):
        return await store.transact(lambda t: step_moves.move(t, row, target, reason="the tool answered"))

    # Escalated: running -> unknown by the leader; the runner's result finds the step moved.
    escalated = await claimed(runner, await new_step(runner, task.id, name="one", idx=0))
    await finish(leader, escalated, StepState.unknown)
    with pytest.raises(Conflict, match="no longer running"):
        await finish(runner, escalated)

    # Run again (idempotent tool): running -> pending -> running under the leader. The state reads
    # "running" again, but not the runner's: its late result is refused, the leader's is kept.
    rerun = await claimed(runner, await new_step(runner, task.id, name="two", idx=1))
    await leader.transact(lambda t: step_moves.move(t, rerun, StepState.pending, reason="interrupted"))
    again = await claimed(leader, rerun.id)
    with pytest.raises(Conflict, match="no longer running"):
        await finish(runner, rerun)
    assert (await finish(leader, again)).state is StepState.succeeded
