"""Chat leases on a PostgreSQL store shared by several replicas: one advisory lock per surface.

The lease on a surface is a session advisory lock (first key ``CHAT_LOCK``, second a stable hash
of the surface's name) taken on a pool connection kept for as long as the lease is held. Waiting
for it is waiting for the lock, in PostgreSQL's queue. A holder killed, even by SIGKILL, loses its
connection, and PostgreSQL drops the lock with it, so the next replica in the queue goes on. The
write transactions of the holder run on other connections: the lease never holds the store's
write lock across a call to a chat platform.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import AsyncIterator

import asyncpg

CHAT_LOCK = 0x4F4F43  # the first key of every surface's lock (the owner locks use 0x4F4F44)


def surface_key(surface: str) -> int:
    """The lock's second key: the same for a surface in every process (``hash()`` is salted per process)."""
    crc = zlib.crc32(surface.encode())
    return crc - 2**32 if crc >= 2**31 else crc  # an int4


@contextlib.asynccontextmanager
async def chat_lease(pool: asyncpg.Pool, surface: str) -> AsyncIterator[None]:
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_advisory_lock($1::int, $2::int)", CHAT_LOCK, surface_key(surface))
        try:
            yield
        finally:
            # A connection that broke meanwhile lost the lock already. asyncpg also unlocks every
            # advisory lock of a connection it takes back into the pool, a cancelled wait's included.
            with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                await conn.execute("SELECT pg_advisory_unlock($1::int, $2::int)", CHAT_LOCK, surface_key(surface))
