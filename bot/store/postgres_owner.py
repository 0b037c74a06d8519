"""Which live process put a step in running, on a PostgreSQL store shared by several replicas.

Each store instance picks an owner number at open and holds a session advisory lock on it
(``OWNER_LOCK``, the owner) on a connection of its own for as long as it is open; every step it
puts in running records the number (``steps.claimed_by``). PostgreSQL drops the lock with the
connection, also when the process is killed, so "the owner's lock is held" means "the process
that started this step is alive and may still be running it": a replica starting beside it
leaves such steps alone instead of treating them as interrupted by a crash.
"""

from __future__ import annotations

import secrets

import asyncpg

OWNER_LOCK = 0x4F4F44  # the first key of every owner's advisory lock (the second is the owner)

LIVE_STEPS_SQL = """
SELECT s.id FROM steps s
JOIN pg_locks l ON l.locktype = 'advisory' AND l.granted AND l.classid = $2::oid AND l.objsubid = 2
    AND l.objid = CAST(s.claimed_by AS oid)
    AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
WHERE s.id = ANY($1::bigint[]) AND s.claimed_by IS NOT NULL
"""


def new_owner() -> int:
    """A number for this process: positive, fits the lock's 32-bit key."""
    return secrets.randbelow(2**31 - 2) + 1


async def hold(conn: asyncpg.Connection) -> int:
    """Take an owner's lock on ``conn`` (kept until the connection closes); returns the owner.

    A number another live process holds (one chance in two billion) is not shared: pick again.
    """
    while True:
        owner = new_owner()
        if await conn.fetchval("SELECT pg_try_advisory_lock($1::int, $2::int)", OWNER_LOCK, owner):
            return owner


async def live_steps(conn: asyncpg.Connection, step_ids: list[int]) -> set[int]:
    return {int(r[0]) for r in await conn.fetch(LIVE_STEPS_SQL, step_ids, OWNER_LOCK)}
