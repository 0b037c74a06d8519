"""Leases on a PostgreSQL store shared by several replicas: one advisory lock per lease name.

A lease (a chat surface's deliveries, an event sink's feed) is a session advisory lock (first key
``LEASE_LOCK``, second a stable hash of its name) taken on a pool connection kept for as long as
the lease is held. Waiting for it is waiting for the lock, in PostgreSQL's queue. A holder killed,
even by SIGKILL, loses its connection, and PostgreSQL drops the lock with it, so the next replica
in the queue goes on. The write transactions of the holder run on other connections: the lease
never holds the store's write lock across a call to a chat platform or a sink's receiver.
"""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections.abc import AsyncIterator

import asyncpg

LEASE_LOCK = 0x4F4F43  # the first key of every lease's lock (the owner locks use 0x4F4F44)


def lease_key(name: str) -> int:
    """The lock's second key: the same for a name in every process (``hash()`` is salted per process)."""
    crc = zlib.crc32(name.encode())
    return crc - 2**32 if crc >= 2**31 else crc  # an int4


@contextlib.asynccontextmanager
async def lease(pool: asyncpg.Pool, name: str) -> AsyncIterator[None]:
    async with pool.acquire() as conn:
        try:
            await conn.execute("SELECT pg_advisory_lock($1::int, $2::int)", LEASE_LOCK, lease_key(name))
            yield
        finally:
            # Pooled connections go back without a session reset (bot/store/postgres.py), so no lock
            # may outlive the lease on one. Unlock everything this session holds (a pooled connection
            # holds nothing else; a wait cancelled as it was granted holds the lock all the same);
            # when that cannot be done, close the connection, and PostgreSQL drops its locks with it.
            try:
                await conn.execute("SELECT pg_advisory_unlock_all()")
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncio.CancelledError):
                conn.terminate()
