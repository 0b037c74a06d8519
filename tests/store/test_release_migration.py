"""A store written by the last release opens with this code: migrated, nothing lost, the chain holds.

``fixtures/release-2.db`` was made by ``tests/store/release_db.py`` with that release's code (see
its docstring to make the next one). Every row the old schema had must still be there with the
same values after the migrations of this code ran, and the audit chain must verify up to the
head the release recorded, and go on from it.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

from bot.audit.chain import AuditEntry, parse_head, verify_chain
from bot.model.events import EventBus
from bot.model.tasks import TaskState
from bot.store.sqlite import SqliteStore
from bot.store.sqlite_migrations import MIGRATIONS
from tests.store.contract import received, signal
from tests.store.release_db import AUDIT_KEY, FIXTURES, TABLES

RELEASE = 2


def rows_by_table(path: Path, columns: dict[str, list[str]] | None = None) -> dict[str, list[tuple]]:
    with sqlite3.connect(path) as conn:
        out = {}
        for table in TABLES:
            names = (columns or {}).get(table) or [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
            out[table] = conn.execute(f"SELECT {', '.join(names)} FROM {table} ORDER BY rowid").fetchall()
        return out


def column_names(path: Path) -> dict[str, list[str]]:
    with sqlite3.connect(path) as conn:
        return {t: [r[1] for r in conn.execute(f"PRAGMA table_info({t})")] for t in TABLES}


async def test_the_last_release_store_migrates_with_nothing_lost_and_the_chain_verifying(tmp_path):
    db = tmp_path / "ooda.db"
    shutil.copyfile(FIXTURES / f"release-{RELEASE}.db", db)
    manifest = json.loads((FIXTURES / f"release-{RELEASE}.json").read_text())
    old_columns = column_names(db)
    before = rows_by_table(db)
    assert {t: len(rows) for t, rows in before.items()} == manifest["rows"]

    store = SqliteStore(db, EventBus(), audit_key=AUDIT_KEY)
    await store.open()
    try:
        result = verify_chain([row async for row in store.audit_rows()], AUDIT_KEY, parse_head(manifest["audit_head"]))
        assert result.ok and result.checked == manifest["rows"]["audit"], result.reason

        tasks = {t.playbook_id: t for t in await store.list_tasks(open_only=False)}
        assert tasks["kube-pod-crashlooping"].state is TaskState.completed
        assert tasks["node-filesystem-space"].state is TaskState.rejected
        restart = tasks["kube-pod-crashlooping"].id
        assert [s.state for s in await store.steps_of_task(restart, "step")] == ["succeeded"]
        assert [a.verdict for a in await store.approvals_of_task(restart)] == ["approve"]
        assert (await store.raw_signals_of_task(restart))[0].raw["labels"]["alertname"] == "KubePodCrashLooping"
        assert any(e.name.endswith(".completed") for e in await store.events_of_task(restart))
        assert (await store.get_setting("kill_switch")).value["on"] is False

        # This code writes on from the release's head.
        await store.ingest_signals([signal(1)], received())
        await store.transact(lambda t: _audit(t))
        rows = [row async for row in store.audit_rows()]
        assert verify_chain(rows, AUDIT_KEY).ok and len(rows) == manifest["rows"]["audit"] + 2
    finally:
        await store.close()

    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT max(version) FROM schema_version").fetchone()[0] == len(MIGRATIONS)
    after = rows_by_table(db, old_columns)
    for table in TABLES:
        kept = after[table][:len(before[table])] if table in ("audit", "signals") else after[table]
        assert kept == before[table], f"{table} changed in the migration"


async def _audit(t) -> None:
    t.audit(AuditEntry("test", "migration.checked", None, {}))
