"""Store administration: ``ooda migrate`` and ``ooda store copy``.

``copy`` moves a team from SQLite onto PostgreSQL: every row of every table, with its ids, signal
numbers and audit hashes unchanged, so ``ooda audit verify`` holds on the copy and task numbers
people wrote down still point at the same tasks. Run it with the server stopped (or paused and
drained): rows written to the source after the copy started are not in the copy. The target must
be empty; both stores are migrated to this version first.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import structlog

from bot.config import Settings
from bot.errors import BotError
from bot.model.events import EventBus
from bot.store_url import StoreTarget, store_target

log = structlog.get_logger(__name__)

# Parents before children (steps and approvals reference tasks).
TABLES = ["tasks", "signals", "steps", "approvals", "events", "audit", "settings", "outbox", "digests"]
SERIAL_TABLES = ["tasks", "steps", "approvals", "events", "outbox"]
CHUNK = 5000


async def migrate(settings: Settings, env: Mapping[str, str]) -> str:
    """Bring the configured store to this version's schema; returns what was done, for people."""
    from bot.stores import build_store

    store = build_store(settings, EventBus(), audit_key=None, env=env)
    await store.open()  # each backend migrates at open, under its lock
    await store.close()
    target = settings.store_target
    if target.backend == "sqlite":
        from bot.store.sqlite_migrations import MIGRATIONS
    else:
        from bot.store.postgres_migrations import MIGRATIONS
    return f"{target.describe()}: schema version {len(MIGRATIONS)} ({target.backend})"


async def copy_store(source_url: str, target_url: str, *, password: str | None,
                     resolve: Any = Path) -> dict[str, int]:
    """Copy a SQLite store into an empty PostgreSQL database; returns rows copied per table."""
    source = store_target(source_url, resolve)
    target = store_target(target_url, resolve)
    if source.backend != "sqlite" or target.backend != "postgresql":
        raise BotError("ooda store copy moves a SQLite store onto PostgreSQL: "
                       "--from sqlite:///path/ooda.db --to postgresql://user@host/db")
    assert source.path is not None and target.dsn is not None
    if not source.path.exists():
        raise BotError(f"no SQLite store at {source.path}")
    await _migrated_sqlite(source)

    import asyncpg

    from bot.store.postgres import PostgresStore

    pg = PostgresStore(target.dsn, EventBus(), password=password, min_size=1, max_size=2)
    await pg.open()
    try:
        async with pg.pool.acquire() as conn, conn.transaction():
            nonempty = [t for t in TABLES if await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {t})")]
            if nonempty:
                raise BotError(f"{target.describe()} already holds {', '.join(nonempty)}; copy into an empty "
                               "database")
            copied = {}
            with sqlite3.connect(f"file:{source.path}?mode=ro", uri=True) as lite:
                for table in TABLES:
                    copied[table] = await _copy_table(lite, conn, table)
            for table in SERIAL_TABLES:
                await conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                                   f"coalesce(max(id), 1), max(id) IS NOT NULL) FROM {table}")
    except asyncpg.PostgresError as exc:
        raise BotError(f"the copy into {target.describe()} failed and was rolled back: {exc}") from exc
    finally:
        await pg.close()
    log.info("store.copied", source=source.describe(), target=target.describe(), rows=copied)
    return copied


async def _migrated_sqlite(source: StoreTarget) -> None:
    from bot.store.sqlite import SqliteStore

    assert source.path is not None
    store = SqliteStore(source.path, EventBus())
    await store.open()
    await store.close()


async def _copy_table(lite: sqlite3.Connection, conn: Any, table: str) -> int:
    columns = [r[1] for r in lite.execute(f"PRAGMA table_info({table})")]
    cursor = lite.execute(f"SELECT {', '.join(columns)} FROM {table} ORDER BY rowid")
    count = 0
    while rows := cursor.fetchmany(CHUNK):
        await conn.copy_records_to_table(table, records=rows, columns=columns)
        count += len(rows)
    return count
