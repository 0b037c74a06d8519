"""How long the digest takes on a large store: every figure (one SQL query each) and the chart.

    python bench/digest.py [--signals 1000000] [--tasks 10000]

Seeds a temporary store with a week of signals and tasks (plain sqlite3, as tests/digest_seed.py
does), then times, on one process and one core, the figures one by one, the whole digest, and
the chart. The baseline from the same run is one scan of the signals table grouped by source,
with no time condition: the floor any figure over the signals pays while ``received_at`` has no
index (intake stays free of a second index on its hot path; the digest runs once a day).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from datetime import time as clock_time
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.chat.digest import build_digest  # noqa: E402
from bot.chat.digest_chart import render_chart  # noqa: E402
from bot.model.events import EventBus  # noqa: E402
from bot.store.digest_figures import SQL, calendar_days, figure_sql  # noqa: E402
from bot.store.sqlite import SqliteStore  # noqa: E402
from tests.digest_seed import DAY, migrated_store  # noqa: E402


def seed(path: Path, signals: int, tasks: int) -> None:
    rng = random.Random(1)
    start = datetime.combine(DAY - timedelta(days=6), clock_time(), UTC)
    week_s = 7 * 86400
    names = [f"Alert{i}" for i in range(200)]
    with sqlite3.connect(path) as conn:
        conn.executemany(
            "INSERT INTO signals (id, seq, source, fingerprint, status, severity, title, labels, annotations, raw,"
            " received_at, updated_at, deliveries)"
            " VALUES (?, ?, ?, ?, 'firing', 'warning', '', ?, '{}', '{}', ?, ?, ?)",
            ((f"s{n}", n, rng.choice(("alertmanager", "grafana", "pagerduty")), f"f{n}",
              json.dumps({"alertname": rng.choice(names), "service": f"svc{rng.randrange(50)}"}),
              at := (start + timedelta(seconds=rng.randrange(week_s))).isoformat(), at, rng.randint(1, 3))
             for n in range(1, signals + 1)))
        states = ("completed", "failed_terminal", "rejected", "escalated_to_human")
        rows, approvals, audit = [], [], []
        for t in range(1, tasks + 1):
            created = start + timedelta(seconds=rng.randrange(week_s))
            closed = created + timedelta(seconds=rng.randrange(60, 7200))
            rows.append((t, rng.choice(states), created.isoformat(), closed.isoformat(), closed.isoformat()))
            approvals.append((t, rng.choice(("ana", "bo", "cy")), (created + timedelta(seconds=300)).isoformat()))
            audit.append((t, (created + timedelta(seconds=30)).isoformat(), t))
        conn.executemany(
            "INSERT INTO tasks (id, playbook_id, playbook_version, state, group_key, title, environment, severity,"
            " requester, created_at, updated_at, closed_at) VALUES (?, 'p', '1', ?, 'g', 't', 'prod', 'warning',"
            " 'source:alertmanager', ?, ?, ?)", rows)
        conn.executemany("INSERT INTO approvals (task_id, actor, display, verdict, created_at)"
                         " VALUES (?, ?, ?, 'approve', ?)", [(a, b, b, c) for a, b, c in approvals])
        conn.executemany("INSERT INTO audit (seq, at, actor, action, task_id, data, prev_hash, hash)"
                         " VALUES (?, ?, 'system', 'task.proposal', ?, '{\"steps\": []}', '', '')", audit)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--signals", type=int, default=1_000_000)
    parser.add_argument("--tasks", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "ooda.db"
        await migrated_store(path)
        began = time.perf_counter()
        seed(path, args.signals, args.tasks)
        print(f"seeded {args.signals:,} signals and {args.tasks:,} tasks in {time.perf_counter() - began:.1f} s")
        store = SqliteStore(path, EventBus())
        await store.open()
        try:
            days = calendar_days(DAY, ZoneInfo("UTC"))
            began = time.perf_counter()
            await store._all("SELECT source, count(*) FROM signals GROUP BY source", ())
            baseline = time.perf_counter() - began
            print(f"{'baseline: one scan of the signals':40} {baseline * 1000:8.0f} ms")
            for name in SQL:
                sql, params = figure_sql(name, days)
                began = time.perf_counter()
                await store._all(sql, params)
                print(f"{name:40} {(time.perf_counter() - began) * 1000:8.0f} ms")
            began = time.perf_counter()
            digest = await build_digest(store, now=datetime.now(UTC), day=DAY)
            whole = time.perf_counter() - began
            print(f"{'the whole digest (figures + text)':40} {whole * 1000:8.0f} ms ({whole / baseline:.1f}x baseline)")
            began = time.perf_counter()
            png = render_chart(digest.figures)
            print(f"{'the chart (1200x900 PNG)':40} {(time.perf_counter() - began) * 1000:8.0f} ms, {len(png):,} bytes")
        finally:
            await store.close()


if __name__ == "__main__":
    asyncio.run(main())
