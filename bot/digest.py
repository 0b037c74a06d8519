"""The daily digest for managers: incidents, time to approve, MTTR, success rate, denials, noise,
and the alerts no playbook matched (the playbooks to write next)."""

from __future__ import annotations

from datetime import datetime
from statistics import median
from typing import Protocol

from bot.store_ports import EventReads, SignalReads, TaskReads
from bot.tasks import TaskState

UNMATCHED_IN_DIGEST = 5


def _alert_name(name: str) -> str:
    """An alert name as chat shows it: alert names are whatever rule authors wrote."""
    # Imported here: bot.wording imports bot.commands, which imports this module.
    from bot.wording import neutralize_mentions, truncate

    return neutralize_mentions(truncate(name, 80))


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


class DigestStore(TaskReads, EventReads, SignalReads, Protocol):
    """The store ports the digest reads: the day's tasks, their events and the alerts."""


async def build_digest(store: DigestStore, since: datetime, now: datetime) -> str:
    tasks = await store.tasks_since(since.isoformat())
    lines = [f"Ooda digest {since:%Y-%m-%d %H:%M} to {now:%Y-%m-%d %H:%M} UTC"]
    if not tasks:
        lines.append("No incidents. Quiet day.")
    to_approve, to_resolve, denials = [], [], 0
    by_state: dict[str, int] = {}
    for task in tasks:
        by_state[task.state.value] = by_state.get(task.state.value, 0) + 1
        events = await store.events_of_task(task.id)
        approved = next((e for e in events if e.name.endswith(".approved")), None)
        if approved:
            to_approve.append((datetime.fromisoformat(approved.at) - task.created_at).total_seconds())
        if task.state is TaskState.completed and task.closed_at:
            to_resolve.append((task.closed_at - task.created_at).total_seconds())
        if task.outcome and "policy denied" in task.outcome:
            denials += 1
    if tasks:
        finished = sum(by_state.get(s, 0) for s in ("completed", "failed_terminal", "escalated_to_human"))
        success = by_state.get("completed", 0) / finished if finished else 0.0
        lines += [
            f"Incidents (tasks): {len(tasks)} — " + ", ".join(f"{k} {v}" for k, v in sorted(by_state.items())),
            f"Time to approve (median): {_minutes(median(to_approve)) if to_approve else 'n/a'}",
            f"MTTR (median, completed): {_minutes(median(to_resolve)) if to_resolve else 'n/a'}",
            f"Success rate: {success:.0%} of {finished} finished",
            f"Policy denials: {denials}",
        ]
    unmatched, names = await store.unmatched_signals(since.isoformat(), UNMATCHED_IN_DIGEST)
    if unmatched:
        more = f" and {names - len(unmatched)} more" if names > len(unmatched) else ""
        named = (f"{_alert_name(a.alertname)} \N{MULTIPLICATION SIGN}{a.count}" for a in unmatched)
        lines.append("Unmatched alerts (no playbook): " + ", ".join(named) + more)
    noisy = await store.noisiest_alerts(since.isoformat())
    if noisy:
        lines.append("Noisiest alerts: " + ", ".join(f"{_alert_name(name)} ({count})" for name, count in noisy))
    return "\n".join(lines)
