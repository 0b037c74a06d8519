"""The chat lease of a surface: one holder at a time, on every backend (bot/store/ports.py ``Leases``).

On PostgreSQL the lease is shared by every process on the database, and a holder that dies loses it
(bot/store/postgres_leases.py): two store instances stand for two replicas.
"""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg

from bot.model.events import EventBus
from bot.store.postgres import PostgresStore
from bot.store.postgres_leases import LEASE_LOCK, lease_key
from tests.replicas import until


async def hold(store, surface: str, log: list[str], name: str, release: asyncio.Event) -> None:
    async with store.lease(surface):
        log.append(f"{name} in")
        await release.wait()
        log.append(f"{name} out")


async def test_a_surface_has_one_lease_holder_at_a_time_and_other_surfaces_go_on(store):
    log: list[str] = []
    first_done, second_done = asyncio.Event(), asyncio.Event()
    first = asyncio.create_task(hold(store, "slack", log, "first", first_done))
    await until(lambda: _has(log, "first in"))
    second = asyncio.create_task(hold(store, "slack", log, "second", second_done))

    async with asyncio.timeout(10), store.lease("discord"):  # another surface: not kept waiting
        log.append("discord")
    await asyncio.sleep(0.3)  # time enough for the second to get in, were the lease not exclusive
    assert log == ["first in", "discord"]

    first_done.set()
    await until(lambda: _has(log, "second in"))
    second_done.set()
    await asyncio.gather(first, second)
    assert log == ["first in", "discord", "first out", "second in", "second out"]


async def test_a_lease_is_one_for_every_replica_on_postgresql_and_dies_with_its_holder(postgres_url):
    replicas = [PostgresStore(postgres_url, EventBus()) for _ in range(2)]
    for replica in replicas:
        await replica.open()
    db = await asyncpg.connect(postgres_url)
    try:
        log: list[str] = []
        never = asyncio.Event()
        holder = asyncio.create_task(hold(replicas[0], "slack", log, "a", never))
        await until(lambda: _has(log, "a in"))
        waiter = asyncio.create_task(hold(replicas[1], "slack", log, "b", asyncio.Event()))
        await asyncio.sleep(0.3)  # b would be in by now if the lease were per process
        assert log == ["a in"]

        # Replica a dies without a word: PostgreSQL drops its connection, and the lock with it.
        killed = await db.fetchval(
            "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND classid = $1::oid AND objid = $2::oid AND objsubid = 2",
            LEASE_LOCK, lease_key("slack") % 2**32)
        assert killed
        await until(lambda: _has(log, "b in"))
        assert log == ["a in", "b in"]
        waiter.cancel()
        holder.cancel()
        await asyncio.gather(holder, waiter, return_exceptions=True)
    finally:
        await db.close()
        for replica in replicas:
            await replica.close()


async def _has(log: list[str], entry: str) -> bool:
    return entry in log


async def test_a_lease_wait_given_up_leaves_no_lock_on_the_pooled_connection(postgres_url):
    # Pooled connections go back without a session reset: a cancelled wait must not keep the lock.
    store = PostgresStore(postgres_url, EventBus())
    await store.open()
    db = await asyncpg.connect(postgres_url)
    try:
        log: list[str] = []
        release = asyncio.Event()
        holder = asyncio.create_task(hold(store, "slack", log, "holder", release))
        await until(lambda: _has(log, "holder in"))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.2), store.lease("slack"):
                raise AssertionError("the lease is held: this wait must time out")
        release.set()
        await holder
        held = await db.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = $1::oid "
                                 "AND objid = $2::oid", LEASE_LOCK, lease_key("slack") & 0xFFFFFFFF)
        assert held == 0
        async with asyncio.timeout(5), store.lease("slack"):  # free for the next holder
            pass
    finally:
        await db.close()
        await store.close()
