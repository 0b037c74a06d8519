"""Two Oodas on one PostgreSQL: exactly one leads the scheduled jobs, and the other takes over when it goes."""

from __future__ import annotations

import asyncio
import contextlib
import time

import asyncpg

from bot.app import App
from bot.store.leadership import LEADER_LOCK
from tests.harness import client, running_app, running_standin


async def until(condition, deadline_s: float = 10.0) -> float:
    """Poll ``condition`` until it holds; returns the seconds it took (fails after the deadline)."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < deadline_s, "condition not reached before the deadline"
        await asyncio.sleep(0.05)
    return time.monotonic() - start


def leaders(*apps: App) -> list[App]:
    return [app for app in apps if app.leadership.is_leader()]


async def lock_holders(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND objid = $1",
            LEADER_LOCK))
    finally:
        await conn.close()


async def test_one_replica_leads_and_another_takes_over_within_ten_seconds_when_it_stops(tmp_path, postgres_url):
    store = {"store": {"url": postgres_url}}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    async with running_standin() as standin, contextlib.AsyncExitStack() as stacks:
        first_stack, second_stack = contextlib.AsyncExitStack(), contextlib.AsyncExitStack()
        stacks.push_async_callback(first_stack.aclose)
        stacks.push_async_callback(second_stack.aclose)
        first = await first_stack.enter_async_context(running_app(tmp_path / "a", standin, store))
        second = await second_stack.enter_async_context(running_app(tmp_path / "b", standin, store))

        await until(lambda: len(leaders(first, second)) == 1)
        assert await lock_holders(postgres_url) == 1
        (leader,) = leaders(first, second)
        standby, standby_stack = (second, second_stack) if leader is first else (first, first_stack)
        leader_stack = first_stack if leader is first else second_stack
        async with client(leader) as http:
            assert (await http.get("/readyz")).json()["role"] == "leader"
        async with client(standby) as http:
            assert (await http.get("/readyz")).json()["role"] == "standby"
        metrics = standby.metrics.render().decode()
        assert 'ooda_leader{role="standby"} 1.0' in metrics and 'ooda_leader{role="leader"} 0.0' in metrics

        await leader_stack.aclose()  # the leader stops; its connection, and with it the lock, goes
        took = await until(standby.leadership.is_leader)
        assert took < 10 and await lock_holders(postgres_url) == 1
        await standby_stack.aclose()
