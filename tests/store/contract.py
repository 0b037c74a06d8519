"""Helpers the store contract tests share: small builders of rows through the ports."""

from __future__ import annotations

import dataclasses
from typing import Any

from bot.audit.chain import AuditEntry
from bot.model.signals import Signal, SignalStatus
from bot.model.tasks import Task
from bot.store.protocol import Store, TaskOps


def signal(n: int, status: SignalStatus = SignalStatus.firing, **labels: str) -> Signal:
    return Signal(source="test", fingerprint=f"fp-{n}", status=status, title=f"alert {n}",
                  labels={"alertname": "NodeClockSkewDetected", "n": str(n), **labels},
                  annotations={"summary": f"skew {n}"}, raw={"fingerprint": f"fp-{n}", "extra": [1, 2]})


def without_raw(signals: list[Signal]) -> list[Signal]:
    """Signals as the reads return them: ``raw`` stays in the store (``raw_signals_of_task``)."""
    return [dataclasses.replace(s, raw={}) for s in signals]


def received(n: int = 1) -> AuditEntry:
    return AuditEntry(actor="source:test", action="signals.received", data={"count": n})


async def new_task(store: Store, *, signal_ids: list[str] | None = None, group_key: str = "g",
                   playbook_id: str = "pb", **fields: Any) -> Task:
    async def unit(t: TaskOps) -> Task:
        return await t.create_task(playbook_id=playbook_id, playbook_version="1", group_key=group_key,
                                   title=fields.get("title", "a task"), environment=fields.get("environment", "dev"),
                                   severity="warning", requester="test", args=fields.get("args", {}),
                                   signal_ids=signal_ids or [], last_signal_at=None)

    return await store.transact(unit)


async def new_step(store: Store, task_id: int, *, name: str = "act", tool: str = "flags.set", kind: str = "step",
                   category: str = "write_reversible", idx: int = 0, state: str = "pending") -> int:
    async def unit(t: TaskOps) -> int:
        return await t.insert_step(task_id=task_id, kind=kind, idx=idx, name=name, tool=tool, category=category,
                                   params={"flag": "f", "rollout": 50}, rollback=None, decision=None, state=state,
                                   idempotency_key=f"task-{task_id}:{kind}:{idx}:{name}")

    return await store.transact(unit)
