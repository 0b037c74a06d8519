"""The audit chain: ``verify_chain`` and ``ooda audit verify`` on an intact and on a tampered log.

The log is written by the real store; the tampering is done the way an attacker with the database
file would do it: plain sqlite3, after dropping the triggers that forbid UPDATE and DELETE.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
import structlog

from bot.audit.chain import AUDIT_COLUMNS, GENESIS, AuditChain, AuditEntry, parse_head, verify_chain
from bot.cli import main
from bot.model.events import EventBus
from bot.store.sqlite import SqliteStore
from tests.harness import ENV
from tests.harness import test_config as write_config  # aliased: pytest would collect test_*

KEY = ENV["OODA_AUDIT_HMAC_KEY"].encode()
RECORDS = 6
UNUSED_PORT = 9  # audit commands read the store file and never call the outside systems


async def write_records(db: Path, key: bytes | None) -> None:
    store = SqliteStore(db, EventBus(), audit_key=key)
    await store.open()
    try:
        for i in range(1, RECORDS + 1):
            with structlog.contextvars.bound_contextvars(correlation_id=f"corr-{i}"):
                entry = AuditEntry(f"actor-{i}", "test.action", None, {"n": i, "note": "ünïcode ok"})

            async def unit(t, entry=entry):
                t.audit(entry)

            await store.transact(unit)
    finally:
        await store.close()


@pytest.fixture
def audited(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """(config path, db path) of a store holding RECORDS signed audit records."""
    monkeypatch.setenv("OODA_AUDIT_HMAC_KEY", ENV["OODA_AUDIT_HMAC_KEY"])
    config = write_config(tmp_path, UNUSED_PORT)
    db = tmp_path / "data" / "ooda.db"
    asyncio.run(write_records(db, KEY))
    return config, db


def rows(db: Path) -> list[tuple]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return conn.execute(f"SELECT {AUDIT_COLUMNS} FROM audit ORDER BY rowid").fetchall()


def tamper(db: Path, *statements: str) -> None:
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as conn:
        conn.execute("DROP TRIGGER audit_no_update")
        conn.execute("DROP TRIGGER audit_no_delete")
        for statement in statements:
            conn.execute(statement)


def cli_verify(config: Path, capsys, *extra: str) -> tuple[int, str, str]:
    code = main(["audit", "verify", "--config", str(config), *extra])
    out, err = capsys.readouterr()
    return code, out, err


def test_untouched_log_verifies(audited, capsys):
    config, db = audited
    result = verify_chain(rows(db), KEY)
    assert (result.ok, result.checked, result.broken_seq) == (True, RECORDS, None)

    code, out, _ = cli_verify(config, capsys)
    assert code == 0
    assert f"{RECORDS} records" in out


def test_records_carry_the_correlation_id_of_where_they_were_made(audited):
    _, db = audited
    assert [r[5] for r in rows(db)] == [f"corr-{i}" for i in range(1, RECORDS + 1)]
    assert [r[0] for r in rows(db)] == list(range(1, RECORDS + 1))
    assert rows(db)[0][7] == GENESIS


SWAP_2_AND_3 = (
    "UPDATE audit SET seq = -2 WHERE seq = 2",
    "UPDATE audit SET seq = 2 WHERE seq = 3",
    "UPDATE audit SET seq = 3 WHERE seq = -2",
)

TAMPERING = [
    pytest.param(("UPDATE audit SET data = '{\"n\":99}' WHERE seq = 3",), 3, "changed after it was written",
                 id="changed-data"),
    pytest.param(("UPDATE audit SET actor = 'mallory' WHERE seq = 4",), 4, "changed after it was written",
                 id="changed-actor"),
    pytest.param(("UPDATE audit SET at = '2020-01-01T00:00:00+00:00' WHERE seq = 1",), 1,
                 "changed after it was written", id="changed-time-of-first"),
    pytest.param(("DELETE FROM audit WHERE seq = 3",), 3, "missing (deleted?)", id="deleted"),
    pytest.param(SWAP_2_AND_3, 2, "does not follow record 1", id="two-swapped"),
    pytest.param((f"UPDATE audit SET signature = '{'0' * 64}' WHERE seq = 5",), 5, "HMAC signature",
                 id="wrong-signature"),
    pytest.param(("UPDATE audit SET signature = NULL WHERE seq = 2",), 2, "HMAC signature", id="signature-removed"),
]


@pytest.mark.parametrize(("statements", "broken", "reason"), TAMPERING)
def test_tampering_is_detected_at_the_first_broken_record(audited, capsys, statements, broken, reason):
    config, db = audited
    assert verify_chain(rows(db), KEY).ok

    tamper(db, *statements)

    result = verify_chain(rows(db), KEY)
    assert result.ok is False
    assert result.broken_seq == broken
    assert result.checked == broken - 1
    assert reason in result.reason

    code, out, err = cli_verify(config, capsys)
    assert code == 1
    assert f"BROKEN at record {broken}" in err
    assert "OK" not in out

    code, out, _ = cli_verify(config, capsys, "--json")
    assert code == 1
    assert json.loads(out.strip().splitlines()[-1])["broken_seq"] == broken


def test_a_chain_rebuilt_without_the_key_fails_only_with_the_key(audited, capsys):
    """A forger edits record 2 and recomputes every hash after it; only the HMAC catches that."""
    config, db = audited
    forger = AuditChain(0, GENESIS, key=None)
    forged = []
    for row in rows(db):
        seq, at, actor, action, task_id, correlation_id, data = row[:7]
        entry = AuditEntry("mallory" if seq == 2 else actor, action, task_id, json.loads(data), correlation_id,
                           datetime.fromisoformat(at))
        forged.append(forger.seal(entry).as_row())
    placeholders = ", ".join("?" * 10)
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as conn:
        conn.execute("DROP TRIGGER audit_no_update")
        conn.execute("DROP TRIGGER audit_no_delete")
        conn.execute("DELETE FROM audit")
        conn.executemany(f"INSERT INTO audit ({AUDIT_COLUMNS}) VALUES ({placeholders})", forged)

    assert rows(db)[1][2] == "mallory"
    assert verify_chain(rows(db), None).ok  # a plain hash chain cannot tell
    result = verify_chain(rows(db), KEY)
    assert (result.ok, result.broken_seq) == (False, 1)
    assert cli_verify(config, capsys)[0] == 1


def test_verifying_with_another_key_fails_at_the_first_record(audited):
    _, db = audited
    result = verify_chain(rows(db), b"some-other-key")
    assert (result.ok, result.broken_seq, result.checked) == (False, 1, 0)


def test_empty_log_verifies():
    assert verify_chain([], KEY).ok
    assert verify_chain([], KEY).checked == 0


def test_sealing_is_deterministic_for_the_same_input():
    # verify recomputes exactly what seal computed; any drift (key order, unicode) would break old logs.
    at = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    entries = [AuditEntry("a", "x", 7, {"b": 1, "a": "ü"}, "c1", at),
               AuditEntry("a", "x", 7, {"a": "ü", "b": 1}, "c1", at)]
    first, second = (AuditChain(0, GENESIS, KEY).seal(e) for e in entries)
    assert first == second
    assert verify_chain([first.as_row()], KEY).ok


def test_records_sealed_with_the_standard_library_encoder_still_verify():
    """Chains written before the digest moved to orjson hashed json.dumps' bytes; they must verify."""
    tricky = 'quote " backslash \\ tab \t newline \n nul \x00 del \x7f é \u2028 \U0001f600'
    at = "2026-01-05T09:00:00+00:00"
    data = json.dumps({"text": tricky}, ensure_ascii=False)
    material = json.dumps([1, at, tricky, "x", None, tricky, data, GENESIS], separators=(",", ":"),
                          ensure_ascii=False).encode()
    digest = hashlib.sha256(material).hexdigest()
    signature = hmac.new(KEY, digest.encode(), hashlib.sha256).hexdigest()
    row = (1, at, tricky, "x", None, tricky, data, GENESIS, digest, signature)

    assert verify_chain([row], KEY).ok


def test_json_output_is_nothing_but_json(audited, capsys):
    config, _ = audited
    code, out, _ = cli_verify(config, capsys, "--json")
    assert code == 0
    report = json.loads(out)
    assert {k: report[k] for k in ("ok", "checked", "broken_seq", "reason")} == {
        "ok": True, "checked": RECORDS, "broken_seq": None, "reason": ""}
    assert report["head_seq"] == RECORDS and len(report["head_hash"]) == 64


def test_records_cut_off_the_end_are_found_only_against_an_expected_head(audited, capsys):
    config, db = audited
    logged_head = f"{RECORDS}:{rows(db)[-1][8]}"  # what the server's audit.head line carried
    assert cli_verify(config, capsys, "--expect-head", logged_head)[0] == 0

    tamper(db, f"DELETE FROM audit WHERE seq > {RECORDS - 2}")

    assert verify_chain(rows(db), KEY).ok  # the chain alone cannot tell
    result = verify_chain(rows(db), KEY, parse_head(logged_head))
    assert (result.ok, result.broken_seq, result.head_seq) == (False, RECORDS - 1, RECORDS - 2)
    assert "cut off its end" in result.reason
    code, _, err = cli_verify(config, capsys, "--expect-head", logged_head)
    assert code == 1 and f"BROKEN at record {RECORDS - 1}" in err


def test_a_chain_rewritten_without_a_key_fails_against_an_expected_head():
    honest, forger = AuditChain(0, GENESIS, key=None), AuditChain(0, GENESIS, key=None)
    at = datetime(2026, 1, 5, tzinfo=UTC)
    written = [honest.seal(AuditEntry("alice", "task.approved", 1, {"n": n}, None, at)).as_row() for n in range(3)]
    rewritten = [forger.seal(AuditEntry("mallory" if n == 1 else "alice", "task.approved", 1, {"n": n}, None,
                                        at)).as_row() for n in range(3)]
    anchor = (3, written[-1][8])

    assert verify_chain(written, None, anchor).ok
    assert verify_chain(rewritten, None).ok  # a plain hash chain cannot tell
    result = verify_chain(rewritten, None, anchor)
    assert (result.ok, result.broken_seq) == (False, 3)
    assert "not the record that was written" in result.reason


@pytest.mark.parametrize("text", ["", "12", "12:abc", f"0:{'a' * 64}", f"x:{'a' * 64}", f"3:{'g' * 64}"])
def test_a_malformed_expected_head_is_refused_with_the_form_it_takes(audited, capsys, text):
    config, _ = audited
    with pytest.raises(ValueError, match="SEQ:HASH"):
        parse_head(text)
    code, out, err = cli_verify(config, capsys, "--expect-head", text)
    assert code == 1 and "--expect-head" in err and "SEQ:HASH" in err and out == ""
