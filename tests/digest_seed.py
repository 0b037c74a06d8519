"""Stores seeded with a known history for the digest: one small day whose every figure is worked
out by hand in ``EXPECTED`` (tests/store/test_digest_figures.py holds the store to it), and a busy
week for the README's chart (docs/make_digest_chart.py).

Rows are written with plain sqlite3 into a store whose migrations ran, at the times the scenario
needs; audit records are sealed into a real chain (``AuditChain``) with those times.
"""

from __future__ import annotations

import json
import random
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, Protocol

from bot.audit.chain import GENESIS, AuditChain, AuditEntry
from bot.model.events import EventBus
from bot.store.sqlite import SqliteStore

DAY = date(2026, 1, 15)


def at(day_offset: int, hh: int, mm: int = 0, ss: int = 0) -> datetime:
    """A moment ``day_offset`` days from DAY (UTC)."""
    return datetime.combine(DAY + timedelta(days=day_offset), time(hh, mm, ss), UTC)


class Executes(Protocol):
    """Where the seeder writes: a sqlite3 connection, or anything that takes ``?`` statements the same way."""

    def execute(self, sql: str, parameters: Sequence[Any], /) -> Any: ...


@dataclass
class Seeder:
    conn: Executes
    chain: AuditChain = field(default_factory=lambda: AuditChain(0, GENESIS, None))
    _signals: int = 0
    _steps: int = 0

    def signal(self, when: datetime, source: str, labels: dict[str, str], deliveries: int = 1) -> None:
        self._signals += 1
        n = self._signals
        self.conn.execute(
            "INSERT INTO signals (id, seq, source, fingerprint, status, severity, title, labels, annotations, raw,"
            " received_at, updated_at, deliveries) VALUES (?, ?, ?, ?, 'firing', 'warning', ?, ?, '{}', '{}', ?, ?, ?)",
            (f"sig_{n}", n, source, f"fp{n}", labels.get("alertname", ""), json.dumps(labels), when.isoformat(),
             when.isoformat(), deliveries))

    def task(self, task_id: int, created: datetime, state: str, *, closed: datetime | None = None,
             requester: str = "alertmanager", playbook: str = "pod-crashloop") -> None:
        self.conn.execute(
            "INSERT INTO tasks (id, playbook_id, playbook_version, state, group_key, title, environment, severity,"
            " requester, created_at, updated_at, closed_at) VALUES (?, ?, '1', ?, ?, ?, 'prod', 'warning', ?, ?, ?, ?)",
            (task_id, playbook, state, f"g{task_id}", f"task {task_id}", requester, created.isoformat(),
             (closed or created).isoformat(), closed.isoformat() if closed else None))

    def step(self, task_id: int, started: datetime, verdict: str, autonomy: str | None, *,
             kind: str = "step", category: str = "write_reversible", state: str = "succeeded") -> None:
        self._steps += 1
        decision = {"verdict": verdict, "rule": "x", "reason": "x", "autonomy": autonomy}
        self.conn.execute(
            "INSERT INTO steps (task_id, kind, idx, name, tool, category, params, decision, state, idempotency_key,"
            " started_at, finished_at) VALUES (?, ?, 0, 'restart', 'k8s.restart', ?, '{}', ?, ?, ?, ?, ?)",
            (task_id, kind, category, json.dumps(decision), state, f"k{self._steps}", started.isoformat(),
             (started + timedelta(seconds=5)).isoformat()))

    def approval(self, task_id: int, display: str, verdict: str, when: datetime) -> None:
        self.conn.execute(
            "INSERT INTO approvals (task_id, actor, display, verdict, created_at) VALUES (?, ?, ?, ?, ?)",
            (task_id, display.lower(), display, verdict, when.isoformat()))

    def audit(self, when: datetime, action: str, task_id: int | None = None, data: dict[str, Any] | None = None,
              actor: str = "system") -> None:
        record = self.chain.seal(AuditEntry(actor, action, task_id, data or {}, correlation_id=None, at=when))
        self.conn.execute(
            "INSERT INTO audit (seq, at, actor, action, task_id, correlation_id, data, prev_hash, hash, signature)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", record.as_row())

    def proposal(self, task_id: int, when: datetime, steps: list[dict[str, str]] | None = None) -> None:
        self.audit(when, "task.proposal", task_id, {"risk": {}, "steps": steps or []})


async def migrated_store(path: Path) -> None:
    store = SqliteStore(path, EventBus())
    await store.open()
    await store.close()


async def seed_known_day(path: Path) -> None:
    """The scenario of ``EXPECTED``: DAY and the day before it, plus a signal just outside the week."""
    await migrated_store(path)
    with sqlite3.connect(path) as conn:
        known_day(Seeder(conn))


def known_day(s: Seeder) -> None:
    """Write the scenario of ``EXPECTED`` through ``s``."""
    # Alerts: on DAY three from alertmanager, one from grafana; one the day before; one 7 days before.
    s.signal(at(0, 9), "alertmanager", {"alertname": "HighLatency", "service": "checkout"}, deliveries=4)
    s.signal(at(0, 9, 30), "alertmanager", {"alertname": "HighLatency", "service": "checkout"}, deliveries=2)
    s.signal(at(0, 10), "alertmanager", {"alertname": "DiskFull", "service": "db"})
    s.signal(at(0, 11), "grafana", {"alertname": "CPUHigh", "service": "api"})
    s.signal(at(-1, 8), "alertmanager", {"alertname": "HighLatency", "service": "checkout"}, deliveries=5)
    s.signal(at(-7, 12), "alertmanager", {"alertname": "Old", "service": "old"})

    # T1: proposed after 30 s, approved by Ana after 300 s, completed after 1200 s.
    s.task(1, at(0, 10), "completed", closed=at(0, 10, 20))
    s.proposal(1, at(0, 10, 0, 30))
    s.approval(1, "Ana", "approve", at(0, 10, 5))
    s.step(1, at(0, 10, 5, 1), "needs_approval", "L1")
    s.step(1, at(0, 10, 0, 10), "allow", None, kind="evidence", category="read")
    # T2: 90 s, approved by Ana after 180 s, completed after 1800 s, then undone.
    s.task(2, at(0, 11), "completed", closed=at(0, 11, 30))
    s.proposal(2, at(0, 11, 1, 30))
    s.approval(2, "Ana", "approve", at(0, 11, 3))
    s.step(2, at(0, 11, 3, 1), "needs_approval", "L2")
    s.step(2, at(0, 11, 59, 55), "allow", None, kind="rollback")
    # T3: 10 s, denied by a rate limit when planned, rejected by Bo after 600 s.
    s.task(3, at(0, 12), "rejected", closed=at(0, 12, 10))
    s.proposal(3, at(0, 12, 0, 10), [{"name": "restart", "tool": "k8s.restart", "verdict": "deny",
                                       "rule": "rate_limit:tool:k8s.restart(3/3600s)"},
                                      {"name": "logs", "tool": "k8s.logs", "verdict": "allow", "rule": "read"}])
    s.approval(3, "Bo", "reject", at(0, 12, 10))
    # T4: a scheduled check, 20 s to its proposal, then failed.
    s.task(4, at(0, 13), "failed_terminal", closed=at(0, 13, 5), requester="scheduler", playbook="disk-check")
    s.proposal(4, at(0, 13, 0, 20))
    # T5, the day before: 60 s, approved by Bo after 660 s, completed after 3600 s.
    s.task(5, at(-1, 9), "completed", closed=at(-1, 10))
    s.proposal(5, at(-1, 9, 1))
    s.approval(5, "Bo", "approve", at(-1, 9, 11))
    # T6: opened the day before (40 s to its proposal), escalated on DAY: denied at run time.
    s.task(6, at(-1, 23, 50), "escalated_to_human", closed=at(0, 0, 10))
    s.proposal(6, at(-1, 23, 50, 40))
    s.audit(at(0, 0, 10), "task.escalated_to_human", 6, {
        "from": "executing", "reason": "policy denied restart at run time (kill_switch: The kill switch is on: "
                                       "no write runs until someone resumes the bot.)"})
    # T7: runs automatically at L2 (two write steps), completed after 120 s.
    s.task(7, at(0, 14), "completed", closed=at(0, 14, 2))
    s.proposal(7, at(0, 14, 0, 5))
    s.step(7, at(0, 14, 0, 6), "allow", "L2")
    s.step(7, at(0, 14, 0, 20), "allow", "L2")

    # Guardrails and the kill switch.
    s.audit(at(0, 15), "tool.call", 7, {"tool": "shell.run", "outcome": "refused", "policy_rule": "tier3"})
    s.audit(at(0, 15, 1), "command.refused", 3, {"command": "approve", "reason": "x"}, actor="eve")
    s.audit(at(0, 15, 2), "command.refused", 3, {"command": "approve", "reason": "x"}, actor="eve")
    s.audit(at(0, 0, 5), "kill_switch.on", None, {"reason": "bad deploy"}, actor="ana")
    s.audit(at(0, 0, 30), "kill_switch.off", None, {}, actor="ana")


def _week(*today: int) -> list[int]:
    return [0, 0, 0, 0, 0, *today]


EXPECTED: dict[str, Any] = {
    "alerts_by_source": {"alertmanager": _week(1, 3), "grafana": _week(0, 1)},
    "tasks": {"opened": _week(2, 5), "completed": _week(1, 3), "failed": _week(0, 1), "rejected": _week(0, 1),
              "escalated": _week(0, 1), "undone": _week(0, 1)},
    "time_to_proposal": {"count": _week(2, 5), "p50_s": [None] * 5 + [40.0, 20.0], "p90_s": [None] * 5 + [60.0, 90.0]},
    "time_to_approval": {"count": _week(1, 2), "p50_s": [None] * 5 + [660.0, 180.0],
                         "p90_s": [None] * 5 + [660.0, 300.0]},
    "time_to_resolution": {"count": _week(1, 3), "p50_s": [None] * 5 + [3600.0, 1200.0],
                           "p90_s": [None] * 5 + [3600.0, 1800.0]},
    "mtta_s": [None] * 5 + [660.0, 360.0],
    "mttr_s": [None] * 5 + [3600.0, 1040.0],
    "automatic_steps": {"L1": {"automatic": _week(0, 0), "all": _week(0, 1)},
                        "L2": {"automatic": _week(0, 2), "all": _week(0, 3)}},
    "policy_denials": {"kill_switch": _week(0, 1), "rate_limit:tool:k8s.restart": _week(0, 1)},
    "guardrail_hits": {"command refused: approve": _week(0, 2), "tool refused: shell.run (tier3)": _week(0, 1)},
    "kill_switch": {"pulled": _week(0, 1), "released": _week(0, 1)},
    "noisiest_alerts": {"HighLatency": _week(5, 6), "CPUHigh": _week(0, 1), "DiskFull": _week(0, 1)},
    "noisiest_services": {"checkout": _week(5, 6), "api": _week(0, 1), "db": _week(0, 1)},
    "approvals_by_person": {"Ana": _week(0, 2), "Bo": _week(1, 0)},
    "failed_checks": {"disk-check": _week(0, 1)},
}


async def seed_busy_week(path: Path, *, seed: int = 7) -> None:
    """A plausible week ending on DAY for the README's chart: one noisy day, then quieter ones."""
    await migrated_store(path)
    with sqlite3.connect(path) as conn:
        busy_week(Seeder(conn), seed=seed)


def busy_week(s: Seeder, *, seed: int = 7) -> None:
    """Write the busy week through ``s``."""
    rng = random.Random(seed)
    volume = [38, 52, 140, 61, 44, 12, 9]  # alerts per day, oldest first
    task_id = 0
    for day, alerts in enumerate(volume):
        offset = day - 6
        for _ in range(alerts):
            source = rng.choices(["alertmanager", "grafana", "pagerduty"], [6, 3, 1])[0]
            s.signal(at(offset, rng.randrange(24), rng.randrange(60)), source,
                     {"alertname": rng.choice(["KubePodCrashLooping", "HighLatency", "DiskFull"]),
                      "service": rng.choice(["checkout", "cart", "search", "db"])},
                     deliveries=rng.randint(1, 4))
        for _ in range(max(2, alerts // 6)):
            task_id += 1
            created = at(offset, rng.randrange(20), rng.randrange(60))
            state = rng.choices(["completed", "failed_terminal", "rejected", "escalated_to_human"],
                                [12, 2, 1, 2])[0]
            resolve_s = rng.lognormvariate(7.0 - day * 0.08, 0.5)  # minutes to an hour or so, improving
            closed = created + timedelta(seconds=resolve_s)
            s.task(task_id, created, state, closed=closed)
            s.proposal(task_id, created + timedelta(seconds=rng.randint(5, 90)))
