"""Build the stored database of a release: the schema-migration fixture (``fixtures/release-N.db``).

Run with the code of the release being captured checked out, from the repository root::

    python -m tests.store.release_db

It drives a real Ooda (shipped playbooks, the stand-in for the outside systems) through what a
team's store holds after a day: alerts that opened tasks, an approved and completed step with
its verify call, a task waiting for approval, a rejected one, an alert no playbook matched, a
kill switch pulled and released, settings, events and the signed audit chain. The file is then
compacted (1 KiB pages, no WAL) so it stays small in the repository, and ``release-N.json``
records what a test must find in it after any later migration: rows per table and the audit
chain's head.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

from bot.store.sqlite_migrations import MIGRATIONS
from tests.harness import ADMIN, AM, ENV, SECOND, client, running_app, running_standin

FIXTURES = Path(__file__).parent / "fixtures"
AUDIT_KEY = ENV["OODA_AUDIT_HMAC_KEY"].encode()
TABLES = ["signals", "tasks", "steps", "approvals", "events", "audit", "settings", "outbox", "digests"]


def sample(name: str) -> bytes:
    return (resources.files("bot") / "samples" / f"{name}.json").read_bytes()


async def populate(workdir: Path) -> Path:
    async with running_standin() as standin, running_app(workdir, standin) as app, client(app) as http:
        for name in ("alertmanager-kube-pod-crashlooping", "alertmanager-node-filesystem-space",
                     "alertmanager-kube-deployment-replicas", "alertmanager-watchdog"):
            r = await http.post("/webhooks/alertmanager", content=sample(name),
                                headers={**AM, "Content-Type": "application/json"})
            assert r.status_code == 202, r.text
        await app.engine.wait_idle()
        tasks = {t.playbook_id: t.id for t in await app.store.list_tasks(open_only=False)}
        await http.post("/api/v1/pause", json={"reason": "fixture drill"}, headers=ADMIN)
        await http.post("/api/v1/resume", json={}, headers=ADMIN)
        r = await http.post(f"/api/v1/tasks/{tasks['kube-pod-crashlooping']}/approve", json={}, headers=ADMIN)
        assert r.status_code == 200, r.text
        r = await http.post(f"/api/v1/tasks/{tasks['node-filesystem-space']}/reject",
                            json={"reason": "the disk is being grown instead"}, headers=SECOND)
        assert r.status_code == 200, r.text
        await app.engine.wait_idle()
        db = app.settings.db_path
    return db  # closed: the engine saved its cursor, the writer committed everything


def compact(source: Path, target: Path) -> None:
    target.unlink(missing_ok=True)
    with sqlite3.connect(source) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute(f"VACUUM INTO '{target}'")
    with sqlite3.connect(target) as conn:
        conn.execute("PRAGMA journal_mode=DELETE")
        conn.execute("PRAGMA page_size=1024")
        conn.execute("VACUUM")


def manifest(path: Path) -> dict[str, Any]:
    with sqlite3.connect(path) as conn:
        rows = {table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in TABLES}
        head = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        version = conn.execute("SELECT max(version) FROM schema_version").fetchone()[0]
    return {"schema_version": version, "rows": rows, "audit_head": f"{head[0]}:{head[1]}"}


async def main() -> None:
    version = len(MIGRATIONS)
    with tempfile.TemporaryDirectory() as tmp:
        db = await populate(Path(tmp))
        FIXTURES.mkdir(exist_ok=True)
        target = FIXTURES / f"release-{version}.db"
        compact(db, target)
        shutil.rmtree(tmp, ignore_errors=True)
    (FIXTURES / f"release-{version}.json").write_text(json.dumps(manifest(target), indent=2) + "\n")
    print(f"wrote {target} ({target.stat().st_size} bytes) and its manifest")


if __name__ == "__main__":
    asyncio.run(main())
