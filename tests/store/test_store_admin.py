"""store.url, ``ooda migrate`` and ``ooda store copy`` through the real CLI and a real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest
import yaml

from bot.audit.chain import parse_head, verify_chain
from bot.cli import main
from bot.config import load_settings
from bot.errors import ConfigError
from bot.model.events import EventBus
from bot.store.postgres import PostgresStore
from bot.store.postgres_migrations import MIGRATIONS as PG_MIGRATIONS
from tests.harness import ENV
from tests.store.release_db import AUDIT_KEY, FIXTURES, TABLES

ROOT = Path(__file__).resolve().parents[2]


async def ooda(capsys, *argv: str) -> tuple[int, str, str]:
    code = await asyncio.to_thread(main, list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def config(tmp_path: Path, store: dict) -> Path:
    data = yaml.safe_load((ROOT / "config.example.yaml").read_text())
    data.update({"data_dir": str(tmp_path / "data"), "playbooks_dir": str(ROOT / "playbooks"), "store": store})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(("url", "names"), [
    ("postgresql://ooda:hunter2@db/ooda", "must not carry a password"),
    ("postgresql://ooda@db/ooda?password=hunter2", "must not carry a password"),
    ("mysql://ooda@db/ooda", "must start with sqlite:/// or postgresql://"),
    ("postgresql://ooda@db", "names a host and a database"),
    ("sqlite://data/ooda.db", "sqlite:///relative/path.db"),
])
def test_a_bad_store_url_is_refused_naming_what_is_wrong_and_never_echoing_a_password(tmp_path, url, names):
    with pytest.raises(ConfigError) as refused:
        load_settings(config(tmp_path, {"url": url}))
    assert names in str(refused.value) and "hunter2" not in str(refused.value)


def test_store_url_selects_the_backend_and_a_sqlite_path_is_relative_to_the_config(tmp_path):
    settings, _ = load_settings(config(tmp_path, {"url": "sqlite:///state/ooda.db"}))
    assert settings.store_target.backend == "sqlite" and settings.db_path == tmp_path / "state" / "ooda.db"
    settings, _ = load_settings(config(tmp_path, {"url": "postgresql://ooda@127.0.0.1:5432/ooda",
                                                  "password_env": "OODA_PG_PASSWORD"}))
    assert settings.store_target.dsn == "postgresql://ooda@127.0.0.1:5432/ooda"


async def test_migrate_brings_a_postgresql_database_to_the_schema(tmp_path, capsys, postgres_url, monkeypatch):
    path = config(tmp_path, {"url": postgres_url})
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    code, out, err = await ooda(capsys, "migrate", "--config", str(path))
    assert code == 0, err
    assert out.strip() == f"{postgres_url}: schema version {len(PG_MIGRATIONS)} (postgresql)"
    code, out, _ = await ooda(capsys, "migrate", "--config", str(path))  # again: nothing to do
    assert code == 0 and f"schema version {len(PG_MIGRATIONS)}" in out


async def test_a_missing_password_variable_is_named(tmp_path, capsys, postgres_url, monkeypatch):
    monkeypatch.delenv("OODA_PG_PASSWORD", raising=False)
    path = config(tmp_path, {"url": postgres_url, "password_env": "OODA_PG_PASSWORD"})
    code, _, err = await ooda(capsys, "migrate", "--config", str(path))
    assert code == 2 and "store.password_env names OODA_PG_PASSWORD, which is not set" in err


async def test_store_copy_moves_every_row_and_the_audit_chain_verifies_on_postgresql(
        tmp_path, capsys, postgres_url, monkeypatch):
    db = tmp_path / "ooda.db"
    shutil.copyfile(FIXTURES / "release-2.db", db)
    manifest = json.loads((FIXTURES / "release-2.json").read_text())
    code, out, err = await ooda(capsys, "store", "copy", "--from", f"sqlite:///{db}", "--to", postgres_url, "--json")
    assert code == 0, err
    assert json.loads(out)["copied"] == manifest["rows"]

    store = PostgresStore(postgres_url, EventBus(), audit_key=AUDIT_KEY)
    await store.open()
    try:
        rows = [row async for row in store.audit_rows()]
        assert verify_chain(rows, AUDIT_KEY, parse_head(manifest["audit_head"])).ok
        tasks = await store.list_tasks(open_only=False)
        assert {t.playbook_id: t.state.value for t in tasks}["kube-pod-crashlooping"] == "completed"
        # New rows continue the ids and the chain of the copy.
        async def unit(t):
            return await t.create_task(playbook_id="p", playbook_version="1", group_key="g", title="t",
                                       environment="dev", severity="info", requester="test", args={},
                                       signal_ids=[], last_signal_at=None)

        created = await store.transact(unit)
        assert created.id == max(t.id for t in tasks) + 1
        assert verify_chain([row async for row in store.audit_rows()], AUDIT_KEY).ok
    finally:
        await store.close()

    code, _, err = await ooda(capsys, "store", "copy", "--from", f"sqlite:///{db}", "--to", postgres_url)
    assert code == 1 and "already holds" in err and "copy into an empty database" in err
    assert set(manifest["rows"]) == set(TABLES)


async def test_store_copy_refuses_urls_it_cannot_use(tmp_path, capsys):
    code, _, err = await ooda(capsys, "store", "copy", "--from", "sqlite:///x.db", "--to", "postgresql://u:pw@h/db")
    assert code == 1 and "--to: store.url must not carry a password" in err and "pw@" not in err
    code, _, err = await ooda(capsys, "store", "copy", "--from", "postgresql://u@h/db", "--to", "sqlite:///x.db")
    assert code == 1 and "moves a SQLite store onto PostgreSQL" in err
