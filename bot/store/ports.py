"""Store ports by concept: one small Protocol per thing the loop keeps, each returning typed models.

A stage asks for the ports it uses and nothing more (``bot/store/protocol.py`` composes them into ``Store``
for the app that wires everything). A backend implements every port; ``tests/store/`` holds the
contract tests each backend must pass.

Two kinds of port per concept:
- **reads** (``SignalReads``, ``TaskReads``, ...): outside any transaction, on the store itself;
- **transaction ports** (``TaskWrites``, ``StepWrites``, ...): what a unit of work passed to
  ``UnitOfWork.transact`` may do. Everything done through one transaction commits together or not
  at all; audit records and events recorded in it are written in that same transaction and the
  events are published only after the commit.

Guarantees every backend gives:
- a write returns only after its transaction committed; if it raises, nothing was kept;
- the audit chain is extended in commit order;
- ``GuardReads.guard`` inside a transaction reads the kill switch and the run counts from that
  transaction's own view, so a step claimed in the same transaction cannot slip past a pause or a
  rate limit set by another process (defect: both lived in each process's memory).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol, TypeVar

from bot.audit.chain import AuditEntry
from bot.model.events import Event
from bot.model.signals import Signal
from bot.model.steps import StepRecord
from bot.model.tasks import ApprovalRecord, SignalTally, Task, TaskState
from bot.store.digest_figures import DayWindow, Figures

T = TypeVar("T")

KILL_SWITCH_KEY = "kill_switch"


# -- models ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredSignal:
    """A signal as stored: its place in intake order (``seq``) and the task it joined, if any."""

    seq: int
    task_id: int | None
    signal: Signal


@dataclass(frozen=True, slots=True)
class RawSignal:
    """A signal's payload exactly as its source sent it (the evidence bundle's copy)."""

    id: str
    raw: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "raw": self.raw}


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An ``ops.agent_task.*`` event as stored, in commit order (``id``)."""

    id: int
    task_id: int | None
    name: str
    payload: dict[str, Any]
    correlation_id: str | None
    at: str

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """A chat delivery that failed and waits for a retry."""

    id: int
    task_id: int
    surface: str
    note: str | None
    attempts: int
    error: str | None


@dataclass(frozen=True, slots=True)
class Setting:
    """One settings row: a JSON value, when and by whom it was last set."""

    key: str
    value: Any
    updated_at: str
    updated_by: str


@dataclass(frozen=True, slots=True)
class KillSwitch:
    """The global pause as stored: on, who pulled it and why."""

    on: bool = False
    by: str | None = None
    reason: str | None = None

    @classmethod
    def from_setting(cls, value: Any) -> KillSwitch:
        if not isinstance(value, dict):
            return cls()
        return cls(on=bool(value.get("on")), by=value.get("by"), reason=value.get("reason"))

    def as_setting(self) -> dict[str, Any]:
        return {"on": self.on, "by": self.by, "reason": self.reason or ""}


@dataclass(frozen=True, slots=True)
class RunWindow:
    """Count runs since ``since`` (ISO time): a rate limit's window or the failure-rate history."""

    since: str


@dataclass(frozen=True, slots=True)
class GuardQuery:
    """What a policy decision counts for one step, read together with the kill switch."""

    tool: str
    playbook_id: str
    tool_window: RunWindow | None = None  # the tool's rate-limit window, if it has one
    playbook_window: RunWindow | None = None  # the playbook's rate-limit window, if it has one
    history: RunWindow | None = None  # the failure-rate window of the tool and the playbook


@dataclass(frozen=True, slots=True)
class GuardState:
    """The kill switch and the run counts a policy decision needs, read in one view of the store."""

    kill_switch: KillSwitch = field(default_factory=KillSwitch)
    tool_runs_in_window: int = 0
    playbook_runs_in_window: int = 0
    tool_runs: int = 0  # over ``history``
    tool_failures: int = 0
    playbook_runs: int = 0
    playbook_failures: int = 0


class AuditRow(NamedTuple):
    """An audit record as stored, in ``bot.audit.chain.AUDIT_COLUMNS`` order (what ``verify_chain`` walks)."""

    seq: int
    at: str
    actor: str
    action: str
    task_id: int | None
    correlation_id: str | None
    data: str
    prev_hash: str
    hash: str
    signature: str | None


@dataclass(frozen=True, slots=True)
class UnmatchedAlertRow:
    """Signals of one alert name no playbook matched (see ``SignalReads.unmatched_signals``)."""

    alertname: str
    count: int
    deliveries: int
    first_seen: str
    last_seen: str
    source: str
    severity: str
    example_labels: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Backlog:
    """Unfinished work of one kind in the store: how many items, and since when the oldest waits (ISO)."""

    count: int = 0
    oldest_at: str | None = None

    def age_s(self, now: datetime) -> float:
        """Seconds the oldest item has waited at ``now``; 0 when nothing waits."""
        if not self.oldest_at:
            return 0.0
        try:
            oldest = datetime.fromisoformat(self.oldest_at)
        except ValueError:  # a time the store never writes; an unknown age is no reason to fail /readyz
            return 0.0
        if oldest.tzinfo is None:
            oldest = oldest.replace(tzinfo=UTC)
        return max(0.0, (now - oldest).total_seconds())


@dataclass(frozen=True, slots=True)
class WorkLag:
    """Work the store holds that some process still has to take or finish (``WorkLagReads.work_lag``)."""

    signals_ungrouped: Backlog  # stored, not yet behind the engine's saved cursor
    outbox_pending: Backlog  # chat deliveries waiting for a retry
    steps_running: Backlog  # steps claimed and not finished (oldest: the longest running)

    def by_kind(self) -> dict[str, Backlog]:
        return {"signals_ungrouped": self.signals_ungrouped, "outbox_pending": self.outbox_pending,
                "steps_running": self.steps_running}


# Signals behind the engine's cursor are counted up to this many: the count walks the seq index,
# and past this a bigger number tells an operator nothing more than "far behind".
LAG_COUNT_MAX = 100_000


# -- transaction ports ----------------------------------------------------------------------------


class AuditWrites(Protocol):
    """**Port:** append an audit record to the chain in this transaction."""

    def audit(self, entry: AuditEntry) -> None: ...


class EventWrites(Protocol):
    """**Port:** store an event in this transaction; it is published after the commit."""

    def event(self, event: Event) -> None: ...


class TaskWrites(Protocol):
    """**Port:** tasks inside a transaction."""

    async def get_task(self, task_id: int) -> Task: ...

    async def create_task(self, *, playbook_id: str, playbook_version: str, group_key: str, title: str,
                          environment: str, severity: str, requester: str, args: dict[str, Any],
                          signal_ids: list[str], last_signal_at: str | None) -> Task: ...

    async def attach_signals(self, task_id: int, signal_ids: list[str], last_signal_at: str) -> None: ...

    async def latest_task_for_group(self, group_key: str) -> tuple[Task, str | None] | None: ...

    async def signal_tally(self, task_id: int) -> SignalTally:
        """The task's signal count, how many are resolved (status in the store), and the last ``ends_at``."""
        ...

    async def record_resolution(self, task_id: int, resolved_at: str) -> None:
        """Set ``resolved_at`` (every signal of the task resolved at that time) and clear ``refired_at``."""
        ...

    async def record_refire(self, task_id: int, refired_at: str) -> None:
        """Set ``refired_at``: a signal of the task fired again after every one had resolved."""
        ...

    async def tasks_with_resolved_alerts(self, task_ids: list[int]) -> set[int]:
        """Those of ``task_ids`` whose alerts stand resolved (``Task.alerts_resolved``)."""
        ...

    async def set_state(self, task_id: int, expected: TaskState | set[TaskState], target: TaskState, *,
                        actor: str, reason: str = "", outcome: str | None = None) -> Task:
        """Compare-and-set the task's state along an allowed transition; ``Conflict`` if it moved."""
        ...

    async def save_proposal(self, task_id: int, proposal: dict[str, Any], title: str | None = None) -> None: ...

    async def save_messages(self, task_id: int, messages: list[dict[str, Any]]) -> None: ...


class StepWrites(Protocol):
    """**Port:** steps inside a transaction."""

    async def insert_step(self, *, task_id: int, kind: str, idx: int, name: str, tool: str, category: str,
                          params: dict[str, Any], rollback: dict[str, Any] | None,
                          decision: dict[str, Any] | None, state: str, idempotency_key: str) -> int: ...

    async def get_step(self, step_id: int) -> StepRecord: ...

    async def set_step_state(self, step_id: int, expected: str, target: str, **fields: Any) -> bool:
        """Compare-and-set a step's state (only ``bot.model.steps`` calls it); False if it is not ``expected``."""
        ...

    async def claim_step(self, step_id: int, started_at: str) -> bool:
        """pending -> running; False when someone else claimed it first."""
        ...

    async def update_step(self, step_id: int, **fields: Any) -> None: ...

    async def remove_unstarted_steps(self, task_id: int) -> int:
        """Delete the steps of kind ``step`` that never ran (pending, denied, skipped): a plan being replaced."""
        ...

    async def steps(self, task_id: int, kind: str | None = None) -> list[StepRecord]: ...


class ApprovalWrites(Protocol):
    """**Port:** approvals inside a transaction."""

    async def add_approval(self, task_id: int, actor: str, display: str, verdict: str,
                           reason: str | None, edits: dict[str, Any] | None,
                           roles: list[str] | None = None) -> bool:
        """False when this person already gave this verdict: one person counts once."""
        ...

    async def approvals(self, task_id: int) -> list[ApprovalRecord]: ...


class SettingWrites(Protocol):
    """**Port:** settings inside a transaction (``get_setting`` returns the value only)."""

    async def set_setting(self, key: str, value: Any, actor: str) -> None: ...

    async def get_setting(self, key: str) -> Any: ...


class OutboxWrites(Protocol):
    """**Port:** the chat outbox inside a transaction."""

    async def add_outbox(self, task_id: int, surface: str, note: str | None, error: str) -> None: ...

    async def remove_outbox(self, outbox_id: int) -> None: ...

    async def outbox_failed(self, outbox_id: int, error: str) -> None:
        """One more failed attempt at a queued chat delivery, and why."""
        ...


class GuardReads(Protocol):
    """**Port:** the kill switch and run counts, read in the caller's view of the store."""

    async def guard(self, query: GuardQuery) -> GuardState: ...


class TaskOps(AuditWrites, EventWrites, TaskWrites, StepWrites, ApprovalWrites, SettingWrites, OutboxWrites,
              GuardReads, Protocol):
    """**Protocol:** every transaction port at once: what a unit of work passed to ``transact`` gets.

    A helper that only needs some of them takes those (``async def f(t: StepWrites)``).
    """


class UnitOfWork(Protocol):
    """**Port:** run a unit of work in one transaction."""

    async def transact(self, fn: Callable[[TaskOps], Awaitable[T]]) -> T:
        """Run ``fn`` with the transaction ports; returns its result after the commit."""
        ...


# -- read ports -----------------------------------------------------------------------------------


class Lifecycle(Protocol):
    """**Port:** opening, closing and the health of the store itself."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    @property
    def queue_depth(self) -> int: ...

    async def heartbeat(self) -> None:
        """A real write: what /readyz checks."""
        ...


class WorkLagReads(Protocol):
    """**Port:** how much work waits in the store, whichever process is to take it (what /readyz shows)."""

    async def work_lag(self) -> WorkLag:
        """Signals not yet grouped (counted up to ``LAG_COUNT_MAX``), the chat outbox and the running
        steps: each a count and the time of its oldest item, read through indexes.

        A signal counts until the engine's saved cursor passes it. Signals that start or join a
        task move the cursor in the same transaction; signals that match no playbook move it only
        when the engine saves it, at most ``CURSOR_SAVE_S`` (5 s) later, so a few seconds of
        unmatched alerts is normal, a growing age is an engine that does not keep up.
        """
        ...


class SignalIntake(Protocol):
    """**Port:** what intake needs: store a batch of signals with its audit record."""

    async def ingest_signals(self, signals: list[Signal], audit: AuditEntry) -> list[str]:
        """Upsert by signal id (dedup by fingerprint) plus one audit record; returns the ids after commit."""
        ...


class SignalReads(Protocol):
    """**Port:** stored signals."""

    async def signal_count(self) -> int: ...

    async def purge_signals(self, before: str) -> int:
        """Delete signals that joined no task, last delivered before ``before``; returns how many."""
        ...

    async def task_ids_of_signals(self, signal_ids: list[str]) -> dict[str, int | None]: ...

    async def signals_after(self, seq: int, limit: int = 500) -> list[StoredSignal]: ...

    async def signals_of_task(self, task_id: int, limit: int = 50) -> list[StoredSignal]: ...

    async def raw_signals_of_task(self, task_id: int, limit: int | None = None) -> list[RawSignal]:
        """Each signal's payload as sent, in arrival order; the first ``limit`` when given."""
        ...

    async def noisiest_alerts(self, since: str, limit: int = 5) -> list[tuple[str, int]]: ...

    async def unmatched_signals(self, since: str, limit: int = 100) -> tuple[list[UnmatchedAlertRow], int]:
        """Signals no playbook matched, by alert name, since an ISO time: (up to ``limit`` rows, how many names)."""
        ...


class TaskReads(Protocol):
    """**Port:** stored tasks."""

    async def get_task(self, task_id: int) -> Task | None: ...

    async def list_tasks(self, *, open_only: bool = True, limit: int = 50,
                         playbook_ids: list[str] | None = None) -> list[Task]:
        """Newest first; ``playbook_ids`` keeps the tasks of those playbooks only."""
        ...

    async def tasks_in_states(self, states: list[str]) -> list[Task]: ...

    async def tasks_since(self, since: str) -> list[Task]: ...

    async def playbook_runs_since(self, playbook_id: str, since: str) -> tuple[int, int]:
        """(runs, failed runs) of a playbook since an ISO time; a run is a task that executed a step."""
        ...


class StepReads(Protocol):
    """**Port:** stored steps."""

    async def steps_of_task(self, task_id: int, kind: str | None = None) -> list[StepRecord]: ...

    async def tool_runs_since(self, tool: str, since: str) -> tuple[int, int]:
        """(runs, failures) of a tool since an ISO time: rate limits and the anomaly downgrade."""
        ...

    async def steps_held_by_live_processes(self, step_ids: list[int]) -> set[int]:
        """Those of ``step_ids`` put in running by a process that still runs (another replica at work).

        Recovery leaves these alone. A backend with one process per store answers none of them.
        """
        ...


class ApprovalReads(Protocol):
    """**Port:** stored approvals."""

    async def approvals_of_task(self, task_id: int) -> list[ApprovalRecord]: ...


class AuditReads(Protocol):
    """**Port:** the audit chain."""

    def audit_rows(self, task_id: int | None = None) -> AsyncIterator[AuditRow]:
        """Audit records in storage order; all of them, or one task's."""
        ...

    async def audit_head(self) -> tuple[int, str]: ...


class EventReads(Protocol):
    """**Port:** stored events."""

    async def events_of_task(self, task_id: int) -> list[StoredEvent]: ...

    async def last_event_id(self) -> int: ...

    async def events_after(self, event_id: int, limit: int) -> list[StoredEvent]:
        """Stored events with an id above ``event_id``, oldest first (what event sinks deliver)."""
        ...


class ConsoleReads(Protocol):
    """**Protocol:** the web console's list views, shaped in the database so a page stays cheap."""

    async def audit_page(self, *, task_id: int | None = None, actor: str | None = None, tool: str | None = None,
                         before_seq: int | None = None, limit: int = 100) -> list[tuple[Any, ...]]:
        """Audit records newest first, each filter optional."""

    async def task_summaries(self, states: list[str], limit: int = 500) -> list[dict[str, Any]]:
        """Tasks in ``states`` without their plans, riskiest first, then oldest."""

    async def task_outcomes_by_playbook(self) -> dict[str, dict[str, int]]:
        """Per playbook, how many tasks ended in each state."""


class DigestReads(Protocol):
    """**Protocol:** the daily digest's figures, each computed by one query in the database."""

    async def digest_figures(self, days: list[DayWindow]) -> Figures:
        """Every figure of the digest for each of ``days`` (oldest first; the last is the day reported)."""


class OutboxReads(Protocol):
    """**Port:** chat deliveries waiting for a retry."""

    async def outbox_items(self, limit: int = 100) -> list[OutboxItem]: ...


class Leases(Protocol):
    """**Port:** the right to do one ordered piece of work (deliver to a chat surface, feed an event
    sink), held by one holder at a time across every process on the store.

    The notifier posts and drains the outbox for a surface only while it holds that surface's
    lease, and an event sink sends only while it holds its own, so each is done in order, once,
    whichever process does it.
    """

    def lease(self, name: str) -> AbstractAsyncContextManager[None]:
        """Hold the lease ``name`` until the block exits, waiting while anyone else (another
        process on the same store included) holds it. A holder that dies, even by SIGKILL, loses it.
        """
        ...


class SettingReads(Protocol):
    """**Port:** settings (cursors, marks, the kill switch) and the policy guard outside a transaction."""

    async def get_setting(self, key: str) -> Setting | None: ...

    async def guard(self, query: GuardQuery) -> GuardState: ...
