"""Web console benchmark: inbox and task pages with 10,000 tasks and 1M signals stored.

1. A real Ooda (the example config, the local stand-in) takes KubePodCrashLooping through the
   loop once: evidence, proposal, approval, the restart and its verify. That task's proposal and
   steps are the template for the seeded ones.
2. The store is seeded in bulk through its own write paths: 1,000,000 signals in batches of
   10,000 (``upsert_signals``, as intake stores them), and 10,000 tasks through ``transact`` with
   the same operations the engine uses (create with 50 signals each, proposal, evidence and step
   rows with their outputs, approvals, state changes, each with its audit record and events).
   200 tasks wait for a decision, the rest are closed (completed, rejected, cancelled, failed).
3. Ooda starts again on that store, a person signs in to the console, and the pages are fetched
   one after another over one keep-alive connection: the inbox, its live refresh, and the task
   pages of random tasks (each a page view that is also audited, a committed write). In the same
   run, the floor (``/healthz``) and the API's JSON of the same tasks, for comparison.

    python bench/console.py [--tasks 10000] [--signals 1000000] [--requests 300] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import secrets
import statistics
import tempfile
import time
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import orjson
from bench_config import free_port, write_bench_config

from bot.app import App
from bot.audit.chain import AuditEntry
from bot.config import load_settings
from bot.loop.engine import CURSOR_KEY
from bot.model.events import EventBus
from bot.model.steps import StepRecord
from bot.model.tasks import TaskState
from bot.policy.identity import Actor
from bot.store.protocol import TaskOps
from bot.store.sqlite import SqliteStore

TARGET_P95_MS = 100.0
WAITING = 200
SIGNALS_PER_TASK = 50
SIGNAL_BATCH = 10_000
TASK_BATCH = 250
CLOSED_STATES = [TaskState.completed, TaskState.rejected, TaskState.cancelled, TaskState.failed_terminal]
ADMIN = Actor(id="local-admin", display="Local admin", roles=frozenset({"admin", "operator", "oncall", "sre",
                                                                        "sre-lead"}), via="api")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def template_task(settings: Any, doc: Any, env: dict[str, str]) -> tuple[dict[str, Any], list[StepRecord]]:
    """One real run of the crash-looping alert: its proposal and its evidence and step rows."""
    sample = (resources.files("bot") / "samples" / "alertmanager-kube-pod-crashlooping.json").read_bytes()
    async with App(settings, doc=doc, env=env) as app, httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{app.port}", timeout=30) as http:
        r = await http.post("/webhooks/alertmanager", content=sample,
                            headers={"Authorization": f"Bearer {env['OODA_ALERTMANAGER_TOKEN']}"})
        r.raise_for_status()
        await app.engine.wait_idle()
        (task,) = await app.store.list_tasks()
        await app.commands.approve(task.id, ADMIN)
        await app.engine.wait_idle()
        done = await app.store.get_task(task.id)
        assert done is not None and done.proposal is not None, "the template task did not plan"
        return done.proposal, await app.store.steps_of_task(task.id)


def signal_row(n: int, received: str) -> list[Any]:
    """A signals row as intake writes it (bot/store/sqlite.py to_signal_row), without its seq."""
    labels = {"alertname": "KubePodCrashLooping", "cluster": f"prod-eu-{n % 7}", "namespace": f"team-{n % 40}",
              "pod": f"api-{n % 997}-{n:07d}", "container": "api", "job": "kube-state-metrics",
              "severity": "warning", "workload": f"api-{n % 997}", "workload_kind": "deployment", "env": "prod"}
    annotations = {"summary": "Pod is crash looping.", "runbook_url": "https://runbooks.example/KubePodCrashLooping"}
    return [f"bench-{n:07d}", "alertmanager", f"fp{n:013d}", "firing", "warning", "Pod is crash looping.",
            orjson.dumps(labels).decode(), orjson.dumps(annotations).decode(), received, None, None,
            '{"_ooda_moved_to_columns":["labels","annotations"]}', received, received]


async def seed(store: SqliteStore, proposal: dict[str, Any], steps: list[StepRecord], tasks: int,
               signals: int) -> None:
    started = time.perf_counter()
    received = datetime.now(UTC).isoformat()
    for first in range(0, signals, SIGNAL_BATCH):
        rows = [signal_row(n, received) for n in range(first, min(signals, first + SIGNAL_BATCH))]
        # No engine listens on this store's bus, so the rows travel without their Signal objects.
        await store.writer.upsert_signals(rows, AuditEntry("source:alertmanager", "signals.received", None,
                                                           {"count": len(rows)}), [None] * len(rows))
    print(f"seeded {signals:,} signals in {time.perf_counter() - started:.0f} s", flush=True)
    started = time.perf_counter()
    rng = random.Random(7)
    made = 1  # the template task
    while made < tasks:
        batch = range(made, min(tasks, made + TASK_BATCH))

        async def unit(t: TaskOps, batch: range = batch) -> None:
            for n in batch:
                await seed_task(t, n, proposal, steps, rng)

        await store.transact(unit)
        made = batch.stop
    print(f"seeded {tasks:,} tasks in {time.perf_counter() - started:.0f} s", flush=True)


async def seed_task(t: TaskOps, n: int, proposal: dict[str, Any], steps: list[StepRecord],
                    rng: random.Random) -> None:
    ids = [f"bench-{i:07d}" for i in range(n * SIGNALS_PER_TASK, (n + 1) * SIGNALS_PER_TASK)]
    workload = f"api-{n % 997}"
    task = await t.create_task(
        playbook_id="kube-pod-crashlooping", playbook_version="1", group_key=f"bench|team-{n % 40}|{workload}|{n}",
        title=f"Pod is crash looping. · team-{n % 40}/{workload}", environment="prod", severity="warning",
        requester="source:alertmanager", args={}, signal_ids=ids, last_signal_at=None)
    # The proposal counts the signals it was decided on: equal to the task's, so nothing re-plans at start.
    plan = {**proposal, "task_id": task.id, "title": task.title, "signal_count": len(ids),
            "risk": {**proposal["risk"], "score": rng.randint(20, 95)}}
    await t.set_state(task.id, TaskState.queued, TaskState.running, actor="system", reason="planning")
    for s in steps:
        if s.kind != "evidence":
            continue
        step_id = await t.insert_step(task_id=task.id, kind="evidence", idx=s.idx, name=s.name, tool=s.tool,
                                      category=s.category, params=s.params, rollback=None, decision=s.decision,
                                      state=s.state, idempotency_key=f"bench-{task.id}-evidence-{s.name}")
        await t.update_step(step_id, result=s.result, started_at=s.started_at and s.started_at.isoformat(),
                            finished_at=s.finished_at and s.finished_at.isoformat())
    await t.save_proposal(task.id, plan)
    await t.set_state(task.id, TaskState.running, TaskState.needs_approval, actor="system", reason="proposal ready")
    if n <= WAITING:
        for s in steps:
            if s.kind == "step":
                await t.insert_step(task_id=task.id, kind="step", idx=s.idx, name=s.name, tool=s.tool,
                                    category=s.category, params=s.params, rollback=None, decision=s.decision,
                                    state="pending", idempotency_key=f"bench-{task.id}-step-{s.name}")
        return
    end = CLOSED_STATES[n % len(CLOSED_STATES)]
    if end is TaskState.rejected:
        await t.add_approval(task.id, "second-approver", "Second approver", "reject", "not during the sale", None)
        await t.set_state(task.id, TaskState.needs_approval, end, actor="second-approver", reason="not now",
                          outcome="rejected by Second approver: not now")
        return
    if end is TaskState.cancelled:
        await t.set_state(task.id, TaskState.needs_approval, end, actor="scheduler", reason="expired",
                          outcome="expired: no decision within 4:00:00")
        return
    await t.add_approval(task.id, "local-admin", "Local admin", "approve", None, None)
    await t.set_state(task.id, TaskState.needs_approval, TaskState.executing, actor="local-admin",
                      reason="approved by local-admin")
    for s in steps:
        if s.kind == "step":
            ok = end is TaskState.completed
            step_id = await t.insert_step(task_id=task.id, kind="step", idx=s.idx, name=s.name, tool=s.tool,
                                          category=s.category, params=s.params, rollback=None, decision=s.decision,
                                          state="succeeded" if ok else "failed",
                                          idempotency_key=f"bench-{task.id}-step-{s.name}")
            await t.update_step(step_id, result=s.result if ok else None, error=None if ok else "HTTP 503",
                                started_at=s.started_at and s.started_at.isoformat(),
                                finished_at=s.finished_at and s.finished_at.isoformat())
            t.audit(AuditEntry("system", "tool.call", task.id, {"tool": s.tool, "params": s.params, "ok": ok}))
    await t.set_state(task.id, TaskState.executing, end, actor="system", reason="done",
                      outcome="all steps succeeded" if end is TaskState.completed else "step restart failed")


CPU_MS: dict[int, float] = {}  # id of a timings list -> CPU ms per request of this process while it ran


async def timed(http: httpx.AsyncClient, paths: list[str], headers: dict[str, str] | None = None) -> list[float]:
    """Wall time of each GET in ms; the process's CPU per request (server, client and SQLite's
    thread together) is kept in ``CPU_MS``: it moves far less than wall time when the machine is busy."""
    took: list[float] = []
    cpu = time.process_time()
    for path in paths:
        start = time.perf_counter()
        r = await http.get(path, headers=headers)
        took.append((time.perf_counter() - start) * 1000)
        if r.status_code != 200:
            raise SystemExit(f"GET {path}: {r.status_code} {r.text[:300]}")
    CPU_MS[id(took)] = (time.process_time() - cpu) * 1000 / len(paths)
    return took


async def measure(settings: Any, doc: Any, env: dict[str, str], tasks: int, requests: int) -> dict[str, Any]:
    rng = random.Random(11)
    async with App(settings, doc=doc, env=env) as app, httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{app.port}", timeout=30) as http:
        page = await http.get("/ui/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf is not None
        r = await http.post("/ui/login", data={"csrf": csrf.group(1), "token": env["OODA_API_TOKEN"]})
        assert r.status_code == 303, r.text
        inbox = await http.get("/ui/inbox")
        waiting = len(await app.store.tasks_in_states([TaskState.needs_approval.value]))
        api = {"Authorization": f"Bearer {env['OODA_API_TOKEN']}"}
        task_paths = [f"/ui/tasks/{rng.randint(1, tasks)}" for _ in range(requests)]
        await timed(http, ["/ui/inbox", *task_paths[:20], "/healthz"])  # warm caches and connections
        results = {
            "healthz (floor)": await timed(http, ["/healthz"] * requests),
            "api task JSON": await timed(http, [p.replace("/ui/", "/api/v1/") for p in task_paths], api),
            "inbox": await timed(http, ["/ui/inbox"] * requests),
            "inbox live refresh": await timed(http, ["/ui/inbox/live"] * requests),
            "task page": await timed(http, task_paths),
        }
        sizes = {"inbox": len(inbox.content), "task page": len((await http.get(task_paths[0])).content)}
        return {"waiting_in_inbox": waiting, "bytes": sizes,
                "ms": {name: {"p50": percentile(v, 0.50), "p95": percentile(v, 0.95), "p99": percentile(v, 0.99),
                              "max": max(v), "mean": statistics.fmean(v), "cpu": CPU_MS[id(v)]}
                       for name, v in results.items()}}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--signals", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    if args.signals < args.tasks * SIGNALS_PER_TASK:
        raise SystemExit(f"--signals must be at least {SIGNALS_PER_TASK} per task ({args.tasks * SIGNALS_PER_TASK:,})")
    with tempfile.TemporaryDirectory(prefix="ooda-bench-console-") as tmp_dir:
        tmp = Path(tmp_dir)
        path = write_bench_config(tmp, server_port=free_port(), log_level="warning")
        settings, doc = load_settings(path)
        env = {name: secrets.token_hex(16) for name in (
            "OODA_API_TOKEN", "OODA_API_TOKEN_2", "OODA_ALERTMANAGER_TOKEN", "OODA_GRAFANA_TOKEN",
            "OODA_PAGERDUTY_SECRET", "OODA_GENERIC_SECRET", "OODA_AUDIT_HMAC_KEY", "OODA_FLAGS_TOKEN")}
        proposal, steps = await template_task(settings, doc, env)

        store = SqliteStore(settings.db_path, EventBus(), synchronous="normal")  # seeding only; serving is FULL
        await store.open()
        try:
            await seed(store, proposal, steps, args.tasks, args.signals)
            # Every seeded signal counts as seen by the engine (seqs run from 1 without gaps here).
            last_seq = await store.signal_count()
            await store.transact(lambda t: t.set_setting(CURSOR_KEY, last_seq, "bench"))
        finally:
            await store.close()
        db_mb = sum(f.stat().st_size for f in settings.db_path.parent.glob("ooda.db*")) / 1e6
        figures = await measure(settings, doc, env, args.tasks, args.requests)
    figures.update(load_average=round(os.getloadavg()[0], 1), cpus=os.cpu_count(), tasks=args.tasks,
                   signals=args.signals, requests=args.requests, store_mb=round(db_mb))
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"\n{args.tasks:,} tasks ({figures['waiting_in_inbox']} waiting for a decision, the inbox shows the riskiest "
          f"50), {args.signals:,} signals, "
          f"store {figures['store_mb']} MB; {args.requests} sequential GETs each over one keep-alive connection")
    print(f"{'page':<22}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}{'CPU ms':>9}")
    for name, ms in figures["ms"].items():
        print(f"{name:<22}{ms['p50']:>9.1f}{ms['p95']:>9.1f}{ms['p99']:>9.1f}{ms['max']:>9.1f}{ms['cpu']:>9.1f}")
    print(f"load average {figures['load_average']} on {figures['cpus']} CPUs (above {figures['cpus']}: the wall "
          "times are mostly waiting for a CPU; CPU ms per request is this process's own work)")
    sizes = figures["bytes"]
    print(f"page sizes: inbox {sizes['inbox'] / 1024:.0f} KiB, task {sizes['task page'] / 1024:.0f} KiB")
    for name in ("inbox", "task page"):
        p95 = figures["ms"][name]["p95"]
        verdict = "met" if p95 <= TARGET_P95_MS else "MISSED"
        print(f"{name}: p95 {p95:.1f} ms, target <= {TARGET_P95_MS:.0f} ms: {verdict}")


if __name__ == "__main__":
    asyncio.run(main())
