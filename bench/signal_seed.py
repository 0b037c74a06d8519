"""Fill a store's signals table to a given size with bulk SQL, for benchmarks of a big store.

Each seeded row is a copy of the newest stored signal (one that intake wrote, so its size and
JSON are what intake writes) with a fresh id, fingerprint and seq. Ids are random-looking like
intake's (a hash), so the index of them grows at random places as in production. The engine's
cursor is moved past the seeded rows, so a server started on the store does not group them.
Nothing here goes through the server: seeding 1M rows over HTTP would take longer than the
benchmark, and intake's speed is what is measured afterwards.

SQLite through sqlite3 on the store file, PostgreSQL through asyncpg's COPY; the server must be
stopped while seeding (its engine keeps its cursor in memory).
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

CURSOR_KEY = "engine.cursor"  # bot/loop/engine.py
BATCH = 50_000


def _copies(template: dict[str, Any], first_seq: int, count: int) -> Iterator[dict[str, Any]]:
    for seq in range(first_seq, first_seq + count):
        digest = hashlib.blake2b(f"seeded-{seq}".encode(), digest_size=18).hexdigest()
        yield {**template, "id": "sig_" + digest[:20], "fingerprint": digest[20:36], "seq": seq, "task_id": None}


def seed_sqlite(db: Path, total: int) -> int:
    """Add signals until ``db`` holds ``total``; returns how many were added."""
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA synchronous=OFF")  # seeding only; the server serves with its own setting
        conn.execute("PRAGMA cache_size=-1000000")
        conn.row_factory = sqlite3.Row
        row = conn.execute("SELECT * FROM signals ORDER BY seq DESC LIMIT 1").fetchone()
        if row is None:
            raise SystemExit("seed_sqlite: the store holds no signal to copy; send some first")
        count, last = conn.execute("SELECT count(*), max(seq) FROM signals").fetchone()
        missing = max(0, total - count)
        columns = list(row.keys())
        insert = f"INSERT INTO signals ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        rows = _copies(dict(row), last + 1, missing)
        while batch := [tuple(r[c] for c in columns) for _, r in zip(range(BATCH), rows, strict=False)]:
            conn.executemany(insert, batch)
        _set_cursor_sqlite(conn, last + missing)
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return missing


def _set_cursor_sqlite(conn: sqlite3.Connection, seq: int) -> None:
    conn.execute("INSERT INTO settings (key, value, updated_at, updated_by) VALUES (?, ?, ?, 'bench') "
                 "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (CURSOR_KEY, str(seq), _now()))


async def seed_postgres(url: str, total: int) -> int:
    """Add signals until the database at ``url`` holds ``total``; returns how many were added."""
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow("SELECT * FROM signals ORDER BY seq DESC LIMIT 1")
        if row is None:
            raise SystemExit("seed_postgres: the store holds no signal to copy; send some first")
        count, last = await conn.fetchrow("SELECT count(*), max(seq) FROM signals")
        missing = max(0, total - count)
        columns = list(row.keys())
        rows = _copies(dict(row), last + 1, missing)
        while batch := [tuple(r[c] for c in columns) for _, r in zip(range(BATCH), rows, strict=False)]:
            await conn.copy_records_to_table("signals", records=batch, columns=columns)
        await conn.execute(
            "INSERT INTO settings (key, value, updated_at, updated_by) VALUES ($1, $2, $3, 'bench') "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value", CURSOR_KEY, str(last + missing), _now())
        # What a bulk load leaves behind (statistics to gather, dirty pages to write) is done now,
        # not by autovacuum or a checkpoint in the middle of the measurement that follows.
        await conn.execute("VACUUM ANALYZE signals")
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()
    return missing


def _now() -> str:
    return datetime.now(UTC).isoformat()
