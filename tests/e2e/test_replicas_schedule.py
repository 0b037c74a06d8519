"""Scheduled checks on real ``ooda serve`` replicas on one PostgreSQL: every slot fires once.

Two replicas run a playbook scheduled every minute (cron's smallest unit). The leader is killed
with SIGKILL a moment before a slot, so the slot passes while nobody leads (the standby takes the
lead a second or two later): the new leader runs that slot late, and no slot of the window runs
twice. Runs are counted in the store (one task each) and in the audit trail (one slot claim each).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx

from tests.replicas import Platform, start_replicas, until

PLAYBOOK = """
id: heartbeat
version: "1"
description: A check on the clock, every minute; it reads nothing and changes nothing.
schedules:
  - cron: "* * * * *"
"""
KILL_BEFORE_SLOT_S = 0.3  # the leader dies this long before the slot: the slot passes while nobody leads
LEAD_IN_S = 5.0  # at least this long after the start before the slot, so that someone leads by then


def slot_of(created_at: str) -> datetime:
    """The minute a run belongs to (runs start within seconds of their slot)."""
    return datetime.fromisoformat(created_at).astimezone(UTC).replace(second=0, microsecond=0)


async def test_a_slot_passing_while_the_leader_is_killed_fires_once_on_the_new_leader(tmp_path, postgres_url):
    platform = Platform()
    async with platform.running() as platform_port, contextlib.AsyncExitStack() as stack:
        replicas = await start_replicas(stack, tmp_path, platform_port, postgres_url, "a", "b",
                                        playbooks={"heartbeat.yaml": PLAYBOOK})
        db = await asyncpg.connect(postgres_url)
        stack.push_async_callback(db.close)

        async def roles() -> list[str] | None:
            out = []
            for _, http in replicas:
                try:
                    out.append((await http.get("/readyz")).json().get("role", "?"))
                except httpx.HTTPError:
                    out.append("down")
            return out if out.count("leader") == 1 else None

        leader = (await until(roles)).index("leader")
        started = datetime.now(UTC)
        slot = (started + timedelta(seconds=LEAD_IN_S)).replace(second=0, microsecond=0) + timedelta(minutes=1)
        # Not waiting for something to happen: the kill is timed to the wall clock, as the slot is.
        await asyncio.sleep((slot - datetime.now(UTC)).total_seconds() - KILL_BEFORE_SLOT_S)
        assert await replicas[leader][0].kill(signal.SIGKILL) == -signal.SIGKILL
        killed_at = time.monotonic()

        async def ran() -> list | None:
            rows = await db.fetch("SELECT id, created_at FROM tasks WHERE playbook_id = 'heartbeat'")
            return rows if any(slot_of(r["created_at"]) == slot for r in rows) else None

        await until(ran, deadline_s=20)
        after = await until(roles, deadline_s=10)
        assert after[leader] == "down" and time.monotonic() - killed_at < 20
        await asyncio.sleep(2)  # past the new leader's catching up: a second run of the slot would be here now

        rows = await db.fetch("SELECT created_at FROM tasks WHERE playbook_id = 'heartbeat'")
        runs = Counter(slot_of(r["created_at"]) for r in rows)
        window = [s for s in (slot - timedelta(minutes=1), slot) if s > started]  # slots passed since one led
        assert {s: runs[s] for s in window} == {s: 1 for s in window}, runs
        assert set(runs.values()) == {1}, runs  # and no slot ran twice, before the window either
        claims = await db.fetch("SELECT data FROM audit WHERE action = 'schedule.slot_claimed'")
        assert len(claims) == len(rows)
