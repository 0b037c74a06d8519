"""The daily digest for managers: incidents, time to approve, MTTR, success rate, denials, noise."""

from __future__ import annotations

from datetime import datetime
from statistics import median

from bot.store import Store
from bot.tasks import TaskState


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


async def build_digest(store: Store, since: datetime, now: datetime) -> str:
    tasks = await store.tasks_since(since.isoformat())
    lines = [f"Ooda digest {since:%Y-%m-%d %H:%M} to {now:%Y-%m-%d %H:%M} UTC"]
    if not tasks:
        lines.append("No incidents. Quiet day.")
    to_approve, to_resolve, denials = [], [], 0
    by_state: dict[str, int] = {}
    for task in tasks:
        by_state[task.state.value] = by_state.get(task.state.value, 0) + 1
        events = await store.events_of_task(task.id)
        approved = next((e for e in events if e["name"].endswith(".approved")), None)
        if approved:
            to_approve.append((datetime.fromisoformat(approved["at"]) - task.created_at).total_seconds())
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
    noisy = await store.noisiest_alerts(since.isoformat())
    if noisy:
        lines.append("Noisiest alerts: " + ", ".join(f"{name} ({count})" for name, count in noisy))
    return "\n".join(lines)
