"""Replicas benchmark: Ooda on PostgreSQL with one and two replicas, against SQLite in the same run.

Starts a real PostgreSQL 15 in a temp dir (tests/postgres.py, with production durability: fsync,
full-page writes and synchronous commit on) and real ``python -m bot serve`` processes on the
example config (temp data dirs, free ports, each replica with its own local stand-in), and
drives them with bench/loadgen.py. Measures, in order:

1. intake of 100 alerts/request: SQLite (one process), PostgreSQL with one replica, PostgreSQL
   with two replicas sharing the load (one load generator each), each on a fresh store;
   then the RSS of each of the two replicas;
2. approval -> step started on the two replicas: alerts of the kube-pod-crashlooping playbook
   (env=dev, one task each, a restart that needs one approval), approved one after the other
   over HTTP on alternate replicas; latency from the approve call to the step's ``started_at``
   (set as the step is claimed to run) in the store. The same on the SQLite server of phase 1,
   as the baseline;
3. failover: ``kill -9`` of the leader, time until the other replica answers ``/readyz`` with
   ``"role": "leader"`` (then the killed one is started again, for the next round);
4. per-alert intake cost with 10k and with 1M stored alerts on each backend (seeded with bulk
   SQL, bench/signal_seed.py): the CPU of Ooda and of PostgreSQL per alert over a fixed number of
   requests, each size measured twice (on fresh copies of its seeded store, alternating), and
   the ratio between the two sizes' least figures.

    python bench/replicas.py [--quick] [--json] [--stored N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script from a checkout: tests.postgres

import asyncpg  # noqa: E402
import httpx  # noqa: E402
from bench_config import free_port, write_bench_config  # noqa: E402
from intake import cpu_seconds, proc_status, settle, start, wait_http  # noqa: E402
from loop import alert, body  # noqa: E402
from signal_seed import seed_postgres, seed_sqlite  # noqa: E402

from tests.postgres import PostgresServer, start_postgres  # noqa: E402

PYTHON = sys.executable
TARGETS = {
    "postgres_vs_sqlite": 0.50,  # at least: 1 replica's alerts/s over SQLite's, 100 alerts/request
    "two_vs_one_replica": 1.00,  # at least
    "approval_p99_ms": 50.0,  # at most
    "rss_mb_per_replica": 150.0,  # at most
    "cost_change_sqlite": 0.20,  # at most: |cost at the large store / cost at 10k - 1|
    "cost_change_postgresql": 0.20,
}
SMALL_STORE = 10_000
CONNECTIONS = 32  # as bench/intake.py's 100-alert phase; split evenly over the replicas


@dataclass
class Server:
    """One ``ooda serve`` process: where it lives, its store, and its port and process while it runs."""

    name: str
    home: Path
    store: dict[str, Any]
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @classmethod
    def create(cls, tmp: Path, name: str, store: dict[str, Any]) -> Server:
        return cls(name, tmp / name, store)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def db(self) -> Path:
        return self.home / "data" / "ooda.db"

    def start(self, env: dict[str, str]) -> None:
        # Fresh ports (the server's and its stand-in's) at every start, written just before it: on a
        # shared machine a free port picked minutes earlier may be some client's by now. The same
        # race in the instant between the two is met by trying again.
        for attempt in range(3):
            self.starts += 1
            self.port = free_port()
            config = write_bench_config(self.home, server_port=self.port, log_level="info", store=self.store)
            log = self.home / f"ooda.{self.starts}.log"
            self.proc = start([PYTHON, "-m", "bot", "serve", "--config", str(config)], env, log)
            try:
                wait_http(f"http://127.0.0.1:{self.port}/healthz", self.proc, log, timeout=120)
                return
            except SystemExit:
                if attempt == 2 or "address already in use" not in log.read_text():
                    raise

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def role(self) -> str:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=1) as r:
                return str(json.loads(r.read()).get("role", "?"))
        except (OSError, ValueError):
            return "down"


def postgres_cpu(pid: int | None) -> float:
    """CPU seconds of the postmaster, of its live children (the backends) and of those it reaped."""
    if pid is None:
        return 0.0
    ticks = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if entry.name == str(pid):
            ticks += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
        elif int(fields[1]) == pid:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def load(servers: list[Server], env: dict[str, str], postgres: int | None, *, tag: str, seconds: float = 0,
         requests: int = 0) -> dict[str, Any]:
    """100 alerts/request, closed loop, one load generator per server (``CONNECTIONS`` in all),
    for ``seconds`` after 1 s of warm-up or for ``requests`` requests. CPU counted until idle."""
    cmds = [[PYTHON, str(BENCH / "loadgen.py"), "--port", str(s.port), "--token", env["OODA_ALERTMANAGER_TOKEN"],
             "--alerts", "100", "--connections", str(CONNECTIONS // len(servers)), "--duration", str(seconds),
             "--warmup", "1", "--requests", str(requests // len(servers)), "--tag", f"{tag}-{s.name}"]
            for s in servers]
    ooda0, pg0 = sum(sum(cpu_seconds(s.pid)) for s in servers), postgres_cpu(postgres)
    gens = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for cmd in cmds]
    outs = [json.loads(g.communicate(timeout=seconds + 600)[0]) for g in gens]
    settle_s = max(settle(s.pid, timeout=120) for s in servers)
    ooda1, pg1 = sum(sum(cpu_seconds(s.pid)) for s in servers), postgres_cpu(postgres)
    sent = sum(o["alerts_sent"] for o in outs)
    return {
        "alerts_per_s": round(sum(o["alerts_per_s"] for o in outs)), "alerts_sent": sent,
        "refused": sum(o["requests"] - o["accepted"] for o in outs),
        "p50_ms": max(o["p50_ms"] for o in outs), "p99_ms": max(o["p99_ms"] for o in outs),
        "ooda_cpu_us_per_alert": round((ooda1 - ooda0) / sent * 1e6, 1),
        "postgres_cpu_us_per_alert": round((pg1 - pg0) / sent * 1e6, 1), "settle_s": settle_s,
    }


def intake(tmp: Path, pg: PostgresServer, env: dict[str, str], seconds: float,
           approvals_count: int) -> tuple[dict[str, Any], list[Server], str]:
    """The three intake phases (and the approval phase on SQLite, the baseline for the one on the
    replicas); returns their figures, and the two replicas (still running) and their store."""
    out: dict[str, Any] = {}
    sqlite = Server.create(tmp, "sqlite", {"synchronous": "full"})
    sqlite.start(env)
    try:
        out["sqlite"] = load([sqlite], env, None, tag="sqlite", seconds=seconds)
        out["sqlite_approvals"] = asyncio.run(approvals([sqlite], Reads(db=sqlite.db), env, approvals_count))
    finally:
        sqlite.stop()
    one = Server.create(tmp, "one", {"url": asyncio.run(pg.new_database())})
    one.start(env)
    try:
        out["postgres_1"] = load([one], env, pg.pid, tag="one", seconds=seconds)
    finally:
        one.stop()
    url = asyncio.run(pg.new_database())
    replicas = [Server.create(tmp, name, {"url": url}) for name in ("a", "b")]
    try:
        for replica in replicas:
            replica.start(env)
        out["postgres_2"] = load(replicas, env, pg.pid, tag="two", seconds=seconds)
        out["rss_mb"] = [round(proc_status(r.pid, "VmRSS"), 1) for r in replicas]
        out["peak_rss_mb"] = [round(proc_status(r.pid, "VmHWM"), 1) for r in replicas]
    except BaseException:
        for replica in replicas:
            replica.stop()
        raise
    return out, replicas, url


class Reads:
    """The approval phase's reads of the store, on either backend (the servers write it meanwhile)."""

    def __init__(self, *, url: str = "", db: Path | None = None) -> None:
        self._url, self._db = url, db
        self._conn: asyncpg.Connection | None = None

    async def fetch(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        if self._db is not None:
            with contextlib.closing(sqlite3.connect(f"file:{self._db}?mode=ro", uri=True)) as conn:
                return conn.execute(re.sub(r"\$\d+", "?", sql), args).fetchall()
        if self._conn is None:
            self._conn = await asyncpg.connect(self._url)
        return [tuple(row) for row in await self._conn.fetch(sql, *args)]

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()


async def approvals(servers: list[Server], reads: Reads, env: dict[str, str], count: int) -> dict[str, Any]:
    """Approve ``count`` proposals one after the other over HTTP, on the servers in turn."""
    am = {"Authorization": f"Bearer {env['OODA_ALERTMANAGER_TOKEN']}", "Content-Type": "application/json"}
    admin = {"Authorization": f"Bearer {env['OODA_API_TOKEN']}"}
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(reads.close)
        clients = [await stack.enter_async_context(httpx.AsyncClient(base_url=f"http://127.0.0.1:{r.port}",
                                                                     timeout=30)) for r in servers]
        for i in range(count):  # one task each (a cluster of its own), spread over the replicas
            r = await clients[i % len(clients)].post("/webhooks/alertmanager", content=body([alert(f"ap-{i}", i)]),
                                                     headers=am)
            r.raise_for_status()
        deadline = time.monotonic() + 300
        while True:
            states = {row[0]: row[1] for row in await reads.fetch("SELECT state, count(*) FROM tasks GROUP BY state")}
            if sum(states.values()) >= count and not states.get("queued") and not states.get("running"):
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"tasks not planned within 300 s: {states}")
            await asyncio.sleep(0.2)
        waiting = [row[0] for row in
                   await reads.fetch("SELECT id FROM tasks WHERE state = 'needs_approval' ORDER BY id")]
        latencies: list[float] = []
        for i, task_id in enumerate(waiting):
            t0 = time.time()  # the replicas stamp started_at with the same (wall) clock
            r = await clients[i % len(clients)].post(f"/api/v1/tasks/{task_id}/approve", headers=admin, json={})
            r.raise_for_status()
            started = None
            until = time.monotonic() + 10
            while started is None and time.monotonic() < until:
                started = (await reads.fetch(
                    "SELECT min(started_at) FROM steps WHERE task_id = $1 AND kind = 'step'", task_id))[0][0]
                if started is None:
                    await asyncio.sleep(0.005)
            if started is not None:
                latencies.append(datetime.fromisoformat(started).timestamp() - t0)
            await asyncio.sleep(0.05)
    return {"tasks": count, "planned_states": states, "approved": len(waiting), "steps_started": len(latencies),
            "p50_ms": pct(latencies, 0.50), "p99_ms": pct(latencies, 0.99), "max_ms": pct(latencies, 1.0)}


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return round(values[min(len(values) - 1, int(q * len(values)))] * 1000, 1) if values else 0.0


def failover(replicas: list[Server], env: dict[str, str], rounds: int) -> list[float]:
    """Seconds from ``kill -9`` of the leader until another replica reports itself leader, per round."""
    times = []
    for _ in range(rounds):
        deadline = time.monotonic() + 30
        while (roles := [r.role() for r in replicas]).count("leader") != 1:
            if time.monotonic() > deadline:
                raise SystemExit(f"no single leader within 30 s: {roles}")
            time.sleep(0.05)
        leader = replicas[roles.index("leader")]
        assert leader.proc is not None
        leader.proc.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        leader.proc.wait()
        others = [r for r in replicas if r is not leader]
        while not any(r.role() == "leader" for r in others):
            if time.monotonic() - killed_at > 60:
                raise SystemExit("no replica took over within 60 s")
            time.sleep(0.02)
        times.append(round(time.monotonic() - killed_at, 2))
        leader.start(env)  # back, as a standby, for the next round
    return times


def flatness(tmp: Path, pg: PostgresServer, env: dict[str, str], large: int, requests: int,
             rounds: int) -> dict[str, Any]:
    """Per-alert intake cost on a store of ``SMALL_STORE`` and of ``large`` alerts, per backend.

    Each size is seeded once and kept as a pristine store; every measurement runs on a fresh copy
    of it (so the small store is still 10k when measured again), the sizes alternating over
    ``rounds`` rounds. The least CPU per alert of the rounds is the size's figure: on a shared
    machine a phase can only be slowed down by the others, never sped up.
    """
    out: dict[str, Any] = {}
    for backend in ("sqlite", "postgresql"):
        store = {"url": asyncio.run(pg.new_database())} if backend == "postgresql" else {"synchronous": "full"}
        first = Server.create(tmp, f"{backend}-seeded", store)
        first.start(env)
        try:
            load([first], env, None, tag=f"{backend}-first", requests=20)  # rows for the seeder to copy
        finally:
            first.stop()
        pristine: dict[int, str | Path] = {}
        seeding: dict[int, dict[str, Any]] = {}
        for size in (SMALL_STORE, large):
            began = time.perf_counter()
            added = asyncio.run(seed_postgres(store["url"], size)) if "url" in store else seed_sqlite(first.db, size)
            seeding[size] = {"seeded": added, "seed_s": round(time.perf_counter() - began, 1)}
            if size == large:  # the last seeding: the seeded store itself is the pristine one
                pristine[size] = store.get("url") or first.home / "data"
            else:
                pristine[size] = (asyncio.run(copy_database(pg, store["url"], f"pristine_{size}")) if "url" in store
                                  else shutil.copytree(first.home / "data", tmp / f"{backend}-pristine-{size}"))
        runs: dict[int, list[dict[str, Any]]] = {SMALL_STORE: [], large: []}
        for n in range(rounds):
            for size in (SMALL_STORE, large) if n % 2 == 0 else (large, SMALL_STORE):
                runs[size].append(measure_copy(tmp, pg, env, backend, pristine[size], f"{size}_{n}", requests))
        best = {size: min(r, key=lambda run: run["cpu_us_per_alert"]) for size, r in runs.items()}
        out[backend] = {
            **{key: {**best[size], "stored": size, **seeding[size],
                     "best_alerts_per_s": max(r["alerts_per_s"] for r in runs[size]),
                     "cpu_us_per_alert_by_round": [r["cpu_us_per_alert"] for r in runs[size]]}
               for key, size in (("small", SMALL_STORE), ("large", large))},
            "rounds": {str(size): r for size, r in runs.items()},
            "cost_ratio": round(best[large]["cpu_us_per_alert"] / best[SMALL_STORE]["cpu_us_per_alert"], 3),
            "rate_ratio": round(max(r["alerts_per_s"] for r in runs[large])
                                / max(r["alerts_per_s"] for r in runs[SMALL_STORE]), 3),
        }
    return out


def measure_copy(tmp: Path, pg: PostgresServer, env: dict[str, str], backend: str, pristine: str | Path,
                 name: str, requests: int) -> dict[str, Any]:
    """Start a server on a copy of a pristine store, warm it up, measure ``requests`` requests, drop the copy."""
    if isinstance(pristine, Path):
        server = Server.create(tmp, f"{backend}-{name}", {"synchronous": "full"})
        shutil.copytree(pristine, server.home / "data")
        postgres = None
    else:
        url = asyncio.run(copy_database(pg, pristine, f"copy_{name}"))
        server = Server.create(tmp, f"{backend}-{name}", {"url": url})
        postgres = pg.pid
    server.start(env)
    try:
        load([server], env, postgres, tag=f"{backend}-{name}-warm", requests=20)
        run = load([server], env, postgres, tag=f"{backend}-{name}", requests=requests)
    finally:
        server.stop()
    if postgres is None:
        shutil.rmtree(server.home / "data")
    else:
        asyncio.run(drop_database(pg, f"copy_{name}"))
    run["cpu_us_per_alert"] = round(run["ooda_cpu_us_per_alert"] + run["postgres_cpu_us_per_alert"], 1)
    return run


async def copy_database(pg: PostgresServer, url: str, name: str) -> str:
    conn = await asyncpg.connect(pg.admin_url)
    try:
        await conn.execute(f"CREATE DATABASE {name} TEMPLATE {url.rsplit('/', 1)[1]} STRATEGY FILE_COPY")
    finally:
        await conn.close()
    return pg.url(name)


async def drop_database(pg: PostgresServer, name: str) -> None:
    conn = await asyncpg.connect(pg.admin_url)
    try:
        await conn.execute(f"DROP DATABASE {name} WITH (FORCE)")
    finally:
        await conn.close()


def report(res: dict[str, Any], quick: bool) -> dict[str, Any]:
    it, ap, fl = res["intake"], res["approvals"], res["flatness"]
    figures = {
        "postgres_vs_sqlite": round(it["postgres_1"]["alerts_per_s"] / it["sqlite"]["alerts_per_s"], 3),
        "two_vs_one_replica": round(it["postgres_2"]["alerts_per_s"] / it["postgres_1"]["alerts_per_s"], 3),
        "approval_p99_ms": ap["p99_ms"],
        "rss_mb_per_replica": max(it["rss_mb"]),
        "cost_change_sqlite": round(abs(fl["sqlite"]["cost_ratio"] - 1), 3),
        "cost_change_postgresql": round(abs(fl["postgresql"]["cost_ratio"] - 1), 3),
    }
    at_least = ("postgres_vs_sqlite", "two_vs_one_replica")
    met = {k: v >= TARGETS[k] if k in at_least else v <= TARGETS[k] for k, v in figures.items()}
    print(f"\nReplicas benchmark: {os.cpu_count()} CPUs, PostgreSQL 15 on the same host (fsync on), SQLite "
          f"synchronous=FULL; load average {res['load_before']} before, {res['load_after']} after"
          f"{' (--quick)' if quick else ''}.\n")
    print(f"{'intake, 100 alerts/request':<36}{'alerts/s':>10}{'p50 ms':>9}{'p99 ms':>9}"
          f"{'CPU µs/alert (Ooda + PostgreSQL)':>36}{'idle s':>8}")
    print("-" * 108)
    for key, label in (("sqlite", "SQLite, 1 process"), ("postgres_1", "PostgreSQL, 1 replica"),
                       ("postgres_2", "PostgreSQL, 2 replicas")):
        r = it[key]
        cpu = f"{r['ooda_cpu_us_per_alert'] + r['postgres_cpu_us_per_alert']:.1f} " \
              f"({r['ooda_cpu_us_per_alert']:.1f} + {r['postgres_cpu_us_per_alert']:.1f})"
        refused = f"  ({r['refused']} refused)" if r["refused"] else ""
        print(f"{label:<36}{r['alerts_per_s']:>10,}{r['p50_ms']:>9.1f}{r['p99_ms']:>9.1f}{cpu:>36}"
              f"{r['settle_s']:>8.1f}{refused}")
    print(f"\nRSS of the two replicas after intake: {it['rss_mb']} MB (peak {it['peak_rss_mb']} MB)")
    for label, a in (("SQLite, 1 process", it["sqlite_approvals"]), ("PostgreSQL, 2 replicas", ap)):
        print(f"approval -> step started, {label} ({a['steps_started']} of {a['approved']} approved; tasks "
              f"{a['planned_states']}): p50 {a['p50_ms']} ms, p99 {a['p99_ms']} ms, max {a['max_ms']} ms")
    print(f"failover (kill -9 of the leader -> the other reports leader): {res['failover_s']} s")
    print(f"\n{'per-alert intake cost':<24}{'stored':>11}{'seeded in s':>13}{'alerts/s':>10}"
          f"{'CPU µs/alert (Ooda + PostgreSQL)':>36}   each round")
    print("-" * 108)
    for backend in ("sqlite", "postgresql"):
        for size in ("small", "large"):
            r = fl[backend][size]
            cpu = (f"{r['cpu_us_per_alert']:.1f} ({r['ooda_cpu_us_per_alert']:.1f} + "
                   f"{r['postgres_cpu_us_per_alert']:.1f})")
            print(f"{backend:<24}{r['stored']:>11,}{r['seed_s']:>13}{r['best_alerts_per_s']:>10,}{cpu:>36}   "
                  f"{r['cpu_us_per_alert_by_round']}")
        print(f"{'':<24}{'large/small':>11}{'':>13}{fl[backend]['rate_ratio']:>10.2f}{fl[backend]['cost_ratio']:>36.2f}")
    print("\ntarget                                        figure      target   met")
    labels = {
        "postgres_vs_sqlite": ("PostgreSQL 1 replica / SQLite, alerts/s", "{:.0%}", ">= {:.0%}"),
        "two_vs_one_replica": ("2 replicas / 1 replica, alerts/s", "{:.2f}", ">= {:.2f}"),
        "approval_p99_ms": ("approval -> step started p99 ms", "{:.1f}", "<= {:.0f}"),
        "rss_mb_per_replica": ("RSS MB per replica", "{:.1f}", "<= {:.0f}"),
        "cost_change_sqlite": ("SQLite: CPU per alert, large vs 10k", "{:+.0%}", "±{:.0%}"),
        "cost_change_postgresql": ("PostgreSQL: CPU per alert, large vs 10k", "{:+.0%}", "±{:.0%}"),
    }
    signed = {"cost_change_sqlite": fl["sqlite"]["cost_ratio"] - 1, "cost_change_postgresql":
              fl["postgresql"]["cost_ratio"] - 1}
    for key, (label, fig, tgt) in labels.items():
        print(f"{label:<42}{fig.format(signed.get(key, figures[key])):>10}{tgt.format(TARGETS[key]):>12}   "
              f"{'yes' if met[key] else 'NO'}")
    print(f"{'failover s (measured; no target)':<42}{max(res['failover_s']):>10.2f}")
    return {"figures": {**figures, "failover_s_max": max(res["failover_s"])}, "targets": TARGETS, "met": met, **res}


def run(args: argparse.Namespace) -> dict[str, Any]:
    seconds = 3.0 if args.quick else 8.0
    large = args.stored or (200_000 if args.quick else 1_000_000)
    env = {name: secrets.token_hex(16) for name in (
        "OODA_API_TOKEN", "OODA_API_TOKEN_2", "OODA_ALERTMANAGER_TOKEN", "OODA_GRAFANA_TOKEN",
        "OODA_PAGERDUTY_SECRET", "OODA_GENERIC_SECRET", "OODA_AUDIT_HMAC_KEY", "OODA_FLAGS_TOKEN")}
    res: dict[str, Any] = {"load_before": [round(x, 2) for x in os.getloadavg()]}
    with tempfile.TemporaryDirectory(prefix="ooda-replicas-") as tmp_dir, \
            contextlib.contextmanager(start_postgres)(durable=True) as pg:
        tmp = Path(tmp_dir)
        count = 40 if args.quick else 100
        res["intake"], replicas, url = intake(tmp, pg, env, seconds, count)
        try:
            res["approvals"] = asyncio.run(approvals(replicas, Reads(url=url), env, count))
            res["failover_s"] = failover(replicas, env, 1 if args.quick else 3)
        finally:
            for replica in replicas:
                replica.stop()
        res["flatness"] = flatness(tmp, pg, env, large, 200 if args.quick else 500, 1 if args.quick else 2)
    res["load_after"] = [round(x, 2) for x in os.getloadavg()]
    return report(res, args.quick)


def main() -> int:
    p = argparse.ArgumentParser(description="Ooda on PostgreSQL with replicas, against SQLite (see bench/README.md)")
    p.add_argument("--quick", action="store_true",
                   help="shorter phases, fewer approvals, 200k alerts as the large store")
    p.add_argument("--json", action="store_true", help="print the figures as JSON at the end")
    p.add_argument("--stored", type=int, default=0, help="alerts in the large store (default 1,000,000)")
    args = p.parse_args()
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
