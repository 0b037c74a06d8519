"""Task lifecycle events and the in-process bus they are published on.

Events are written by the store in the same transaction as the change they describe and published
only after that transaction committed, so a subscriber never sees a change that was rolled back and
a restart loses none (they stay in the ``events`` table). Subscribers (chat notifier, metrics, the
engine) must be quick: they run inline, so they hand work to their own queue.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

log = structlog.get_logger(__name__)

PREFIX = "ops.agent_task."
CREATED = PREFIX + "created"
EVIDENCE_ATTACHED = PREFIX + "evidence_attached"
PROPOSED_ACTION = PREFIX + "proposed_action"
APPROVED = PREFIX + "approved"
REJECTED = PREFIX + "rejected"
EXECUTED = PREFIX + "executed"
FAILED = PREFIX + "failed"
COMPLETED = PREFIX + "completed"
ESCALATED = PREFIX + "escalated"
CANCELLED = PREFIX + "cancelled"
UNDONE = PREFIX + "undone"
SIGNALS_ATTACHED = PREFIX + "signals_attached"
SIGNALS_RESOLVED = PREFIX + "signals_resolved"  # some signals of the task resolved
# Every signal of the task resolved: it ends the task if nothing ran yet, else it is recorded.
RESOLVED = PREFIX + "resolved"
# A signal fired again after every alert of its task had resolved, and joined that task.
SIGNALS_REFIRED = PREFIX + "signals_refired"
# Signals joined a task still waiting for its first approval, so its plan was decided again.
REDECIDED = PREFIX + "redecided"
# Signals joined a task whose plan was approved or under way: the plan is kept, this says so.
PLAN_STANDS = PREFIX + "plan_stands"
STATE_CHANGED = PREFIX + "state_changed"
# A step of the task moved between states (bot/model/steps.py); undo asked for and its rollbacks too.
STEP_CHANGED = PREFIX + "step_changed"
UNDO_REQUESTED = PREFIX + "undo_requested"
# Not task events: published so the engine and surfaces can react.
SIGNALS_STORED = "ops.signals.stored"
KILL_SWITCH = "ops.kill_switch.changed"


@dataclass(frozen=True, slots=True)
class Event:
    name: str
    task_id: int | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    at: datetime = field(default_factory=lambda: datetime.now(UTC))


Subscriber = Callable[[Event], None]


class EventBus:
    def __init__(self) -> None:
        self._subscribers: list[tuple[str, Subscriber]] = []

    def subscribe(self, prefix: str, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback`` for every event whose name starts with ``prefix``; returns unsubscribe."""
        item = (prefix, callback)
        self._subscribers.append(item)
        return lambda: self._subscribers.remove(item)

    def publish(self, event: Event) -> None:
        for prefix, callback in list(self._subscribers):
            if event.name.startswith(prefix):
                try:
                    callback(event)
                except Exception:
                    # One broken subscriber must not stop the others or the writer that published.
                    log.exception("events.subscriber_failed", event_name=event.name)
