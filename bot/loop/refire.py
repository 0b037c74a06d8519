"""An alert that fires again after its task: a new task past the cooldown, a notice within it.

A firing delivery for a signal that already belongs to a task is usually a redelivery
(Alertmanager repeats a firing group every ``repeat_interval``, and after every change in it).
It counts as the problem coming back, and is grouped again like a new alert, when:

- every alert of the task had resolved (the delivery starts a new firing), or
- the task is closed (completed, failed, rejected, cancelled...) and the alert is still or again
  firing: the first such delivery after the close, and any once the playbook's ``cooldown_s``
  has passed since the close. A sender that does not send resolved notifications
  (``send_resolved: false``) is covered by this too.

Grouped again, it opens a new task once the cooldown has passed; within it, it stays on the
closed task and the task's thread gets a notice saying when it fired and until when the cooldown
holds ("fired again at 14:26 UTC ...; cooldown until 14:31 UTC"), once per close, so repeats of a
still-firing alert do not flood the thread.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bot.model import events as ev
from bot.model.events import Event
from bot.model.signals import Signal
from bot.model.tasks import Task
from bot.playbooks.schema import Playbook
from bot.store.protocol import TaskOps


def _cooldown_s(playbook: Playbook) -> float:
    return playbook.trigger.cooldown_s if playbook.trigger else 0


def _hhmm(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%H:%M UTC")


async def fired_again(t: TaskOps, in_task: dict[str, tuple[int, Signal, Playbook]],
                      now: datetime) -> dict[str, int]:
    """The firing signals (id -> task id) of ``in_task`` that are not redeliveries (see above)."""
    if not in_task:
        return {}
    task_ids = sorted({task_id for task_id, _, _ in in_task.values()})
    back = set(await t.tasks_with_resolved_alerts(task_ids))
    for task_id in task_ids:
        if task_id in back:
            continue
        task = await t.get_task(task_id)
        if task.closed_at is None:
            continue  # an open task takes a repeat of its alerts as what it is
        noticed = task.refired_at is not None and task.refired_at >= task.closed_at
        cooldown = max(_cooldown_s(p) for tid, _, p in in_task.values() if tid == task_id)
        if not noticed or now - task.closed_at > timedelta(seconds=cooldown):
            back.add(task_id)
    return {signal_id: task_id for signal_id, (task_id, _, _) in in_task.items() if task_id in back}


async def record_refire(t: TaskOps, task: Task, signals: list[Signal], now: datetime, window_s: float,
                        cooldown_s: float) -> None:
    """Alerts of ``task`` fired again and the grouping rule kept them on it: say so in its thread."""
    await t.record_refire(task.id, now.isoformat())
    what = "1 alert" if len(signals) == 1 else f"{len(signals)} alerts"
    names = sorted({s.labels.get("alertname") or s.title for s in signals} - {""})
    if names:
        what += f" ({', '.join(names[:3])}{', …' if len(names) > 3 else ''})"
    if task.resolved_at is not None and task.refired_at is None:
        since = _duration((now - task.resolved_at).total_seconds())
        note = f"{what} fired again at {_hhmm(now)}, {since} after every alert of this task resolved"
    elif task.closed_at is not None:
        started = [s.starts_at for s in signals if s.starts_at is not None]
        still = bool(started) and max(started) <= task.closed_at  # a repeat of a firing that never ended
        verb = "is still firing" if still and len(signals) == 1 else "are still firing" if still else "fired again"
        note = f"{what} {verb} at {_hhmm(now)} after this task was {task.state.value}"
    else:
        note = f"{what} fired again at {_hhmm(now)}"
    if not task.state.is_open and task.closed_at is not None:
        until = task.closed_at + timedelta(seconds=cooldown_s)
        note += (f"; they join this {task.state.value} task instead of opening a new one: cooldown until "
                 f"{_hhmm(until)}, a firing after that opens a new task (the playbook groups alerts for "
                 f"{window_s:g} s after a task opens and {cooldown_s:g} s after it closes)")
    t.event(Event(ev.SIGNALS_REFIRED, task.id, {"signals": [s.id for s in signals], "note": note}))


def _duration(seconds: float) -> str:
    """A span as people say it in an incident: "under a minute", "7 min", "2 h 5 min"."""
    minutes = int(abs(seconds) // 60)
    if minutes < 1:
        return "under a minute"
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"
