"""Nothing acknowledged is lost: a real ``ooda serve`` process killed with SIGKILL mid-stream.

Clients post alerts with unique fingerprints concurrently; the server is killed the moment a
given number of them got their 202, while the rest are in flight. After a restart every
acknowledged signal is in the database exactly once, and the audit chain is intact.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sqlite3
import sys
from collections import Counter
from pathlib import Path

import httpx

from bot.audit.chain import AUDIT_COLUMNS, verify_chain
from tests.harness import AM, ENV, ROOT, running_standin
from tests.harness import test_config as write_config  # aliased: pytest would collect test_*

TOTAL = 3000  # more than can be acknowledged before the kill
KILL_AFTER = 150  # acknowledgements
CLIENTS = 24  # concurrent posters, so several requests are in flight at the kill
READY_ATTEMPTS = 400
READY_INTERVAL_S = 0.05


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def alert(n: int) -> bytes:
    # No playbook matches this alertname: the test is about intake, not about tasks.
    return json.dumps({
        "version": "4", "status": "firing", "receiver": "ooda", "groupKey": f"crash-{n}",
        "alerts": [{"status": "firing", "labels": {"alertname": "NodeClockSkewDetected", "n": str(n)},
                    "annotations": {"summary": f"probe {n}"}, "startsAt": "2026-01-05T09:00:00Z",
                    "fingerprint": f"crash-probe-{n:05d}"}],
    }).encode()


async def start_server(config: Path, log: Path) -> asyncio.subprocess.Process:
    env = {**ENV, "PATH": os.environ["PATH"]}
    with log.open("ab") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "serve", "--config", str(config),
            cwd=ROOT, env=env, stdout=out, stderr=out,
        )


def tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


async def wait_ready(proc: asyncio.subprocess.Process, http: httpx.AsyncClient, log: Path) -> None:
    for _ in range(READY_ATTEMPTS):
        assert proc.returncode is None, f"server exited with {proc.returncode}:\n{tail(log)}"
        with contextlib.suppress(httpx.TransportError):
            if (await http.get("/readyz")).status_code == 200:
                return
        await asyncio.sleep(READY_INTERVAL_S)  # readiness poll interval
    raise AssertionError(f"server not ready after {READY_ATTEMPTS} attempts:\n{tail(log)}")


async def post_until_killed(proc: asyncio.subprocess.Process, http: httpx.AsyncClient) -> tuple[list[str], int]:
    """Post alerts from CLIENTS concurrent senders; SIGKILL the server at the KILL_AFTER-th 202.

    Returns the acknowledged signal ids and how many requests were sent.
    """
    acked: list[str] = []
    sent = 0
    next_alert = iter(range(TOTAL))

    async def sender() -> None:
        nonlocal sent
        for n in next_alert:
            sent += 1
            try:
                r = await http.post("/webhooks/alertmanager", content=alert(n), headers=AM)
            except httpx.TransportError:
                return  # the server is gone; this request was never acknowledged
            assert r.status_code == 202, r.text
            acked.extend(r.json()["signal_ids"])
            if len(acked) == KILL_AFTER:
                proc.send_signal(signal.SIGKILL)

    async with asyncio.TaskGroup() as group:
        for _ in range(CLIENTS):
            group.create_task(sender())
    return acked, sent


async def stop_server(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
    await proc.wait()


async def test_every_acknowledged_alert_survives_sigkill_exactly_once(tmp_path):
    port = free_port()
    log = tmp_path / "server.log"
    limits = httpx.Limits(max_connections=CLIENTS)
    async with running_standin() as standin:
        standin_port = int(standin.base_url.rsplit(":", 1)[1])
        config = write_config(tmp_path, standin_port, {"server": {"port": port}})
        base = f"http://127.0.0.1:{port}"

        first = await start_server(config, log)
        try:
            async with httpx.AsyncClient(base_url=base, timeout=10, limits=limits) as http:
                await wait_ready(first, http, log)
                acked, sent = await post_until_killed(first, http)
        finally:
            if first.returncode is None:
                first.send_signal(signal.SIGKILL)
            await first.wait()
        assert first.returncode == -signal.SIGKILL
        assert len(acked) >= KILL_AFTER
        assert sent > len(acked), "the kill came after every request was answered: nothing was in flight"

        second = await start_server(config, log)
        try:
            async with httpx.AsyncClient(base_url=base, timeout=10) as http:
                await wait_ready(second, http, log)
                r = await http.post("/webhooks/alertmanager", content=alert(TOTAL), headers=AM)
                assert r.status_code == 202, "the restarted server takes new alerts"
        finally:
            await stop_server(second)
        assert second.returncode == 0, tail(log)

    with contextlib.closing(sqlite3.connect(tmp_path / "data" / "ooda.db")) as conn:
        rows = conn.execute("SELECT id, fingerprint, deliveries, seq FROM signals").fetchall()
        audit = conn.execute(f"SELECT {AUDIT_COLUMNS} FROM audit ORDER BY rowid").fetchall()

    stored = {r[0]: r for r in rows}
    missing = [i for i in acked if i not in stored]
    assert missing == [], f"{len(missing)} acknowledged signals were lost"
    assert all(stored[i][2] == 1 for i in acked), "an acknowledged alert was applied twice"
    assert len(rows) == len({r[1] for r in rows})  # one row per fingerprint
    assert len(rows) <= sent + 1  # nothing invented: at most what was sent, plus the post-restart alert
    assert sorted(r[3] for r in rows) == list(range(1, len(rows) + 1))  # the engine's cursor needs no gaps

    received = Counter(sid for row in audit if row[3] == "signals.received" for sid in json.loads(row[6])["signal_ids"])
    assert all(received[i] == 1 for i in acked), "an acknowledged alert was recorded twice in the audit log"
    assert set(received) == set(stored)  # every stored signal has its audit record, and vice versa
    result = verify_chain(audit, ENV["OODA_AUDIT_HMAC_KEY"].encode())
    assert result.ok, result.reason
