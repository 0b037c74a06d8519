"""Observe: turn stored signals into tasks, and drive tasks through the loop.

Signals reach the engine with the event that announces their commit, in ``seq`` order. Behind
them is a cursor kept in the store: at start, and whenever the bounded inbox would overflow, the
engine reads the store from the cursor instead, so nothing acknowledged is skipped. Signals that
match a playbook are grouped in one transaction that also moves the cursor: a crash either keeps
both or neither. Signals that match nothing cost no I/O; the cursor passes them and is saved every
few seconds (regrouping them after a crash changes nothing). A storm of 10k alerts for one service
becomes one task with a count.

Grouping rule: a firing signal joins the latest task of its group while that task is open, or
within ``group_window_s`` of the task's creation, or within ``cooldown_s`` after it closed;
otherwise it opens a new task. A signal starts at most one task: the first matching playbook,
in file-name order. Signals that join a task still waiting for its first approval make its plan
be decided again with the new count; after an approval the plan stands and a note says so.

Resolution closes the loop: a resolved signal is recorded on its task as an event, and when every
signal of a task is resolved, a task nobody acted on yet is cancelled (its pending steps skipped)
while any other records the time. A firing signal already in a task is a redelivery, unless every
alert of that task had resolved: then it is grouped again like a new one (same rule, so within
the cooldown it joins the closed task, with an event saying so). A firing alert of a closed task
is grouped again too, once per close and always after the cooldown (bot/loop/refire.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from datetime import datetime, timedelta
from typing import Any, Protocol

import structlog

from bot.audit.chain import AuditEntry
from bot.audit.redaction import redact_text
from bot.errors import StoreUnavailable
from bot.loop import refire
from bot.loop.core import Core
from bot.loop.executor import Executor
from bot.loop.orphans import TaskOwnership, TwoLooks
from bot.loop.planner import Planner, more_alerts
from bot.model import events as ev
from bot.model.events import Event
from bot.model.signals import Signal, SignalStatus
from bot.model.steps import StepKind, StepState
from bot.model.tasks import (
    ENDED_BY_RESOLUTION,
    OPEN_STATES,
    Task,
    TaskState,
    clock_text,
    redecidable,
    resolution_outcome,
    steps_started,
)
from bot.playbooks.schema import Playbook
from bot.store import step_moves
from bot.store.ports import SettingReads, SignalReads, TaskReads, UnitOfWork
from bot.store.protocol import TaskOps
from bot.store.signal_claims import CursorMoved, claim_after, save_cursor
from bot.tracing import bind_task_trace

log = structlog.get_logger(__name__)

CURSOR_KEY = "engine.cursor"
CURSOR_SAVE_S = 5.0  # at most this much grouping is redone after a crash (it is idempotent)
BATCH = 500
REDECIDE_SETTLE_S = 0.25  # a re-decision waits this long while signals are still arriving
REDECIDE_MIN_INTERVAL_S = 1.0  # and comes at most this often per task
PEER_POLL_S = 1.0  # on a shared store, how often an idle engine looks for signals other replicas took in
STORE_RETRY_S = 2.0  # a task whose step met an unavailable store is tried again after this


TITLE_CHARS = 200


def target_of(labels: dict[str, str]) -> str:
    """What an alert is about, in a few words, from its (normalized) labels: ``shop/checkout``,
    ``db-01 /var``, ``consumer group warehouse-loader``; "" when the labels do not say."""
    namespace = labels.get("namespace", "")
    if labels.get("workload"):
        return f"{namespace}/{labels['workload']}" if namespace else labels["workload"]
    if labels.get("job_name"):
        return f"{namespace}/{labels['job_name']}" if namespace else labels["job_name"]
    if labels.get("mountpoint") and (labels.get("host") or labels.get("instance")):
        return f"{labels.get('host') or labels['instance']} {labels['mountpoint']}"
    if labels.get("consumer_group"):
        return f"consumer group {labels['consumer_group']}"
    for key in ("service", "instance", "host"):
        if labels.get(key):
            return labels[key]
    return ""


def _title(signal: Signal, playbook_id: str) -> str:
    """The alert's summary with its target when the summary does not name it (upstream summaries
    are often generic: "Pod is crash looping.")."""
    title = signal.title or signal.labels.get("alertname") or playbook_id
    target = target_of(signal.labels)
    if target and target not in title and target.split()[0] not in title:
        title = f"{title.rstrip()} · {target}"
    return title if len(title) <= TITLE_CHARS else title[: TITLE_CHARS - 1] + "…"


def _severity_rank(value: str) -> int:
    return {"critical": 2, "warning": 1}.get(value, 0)


def _plan_signal(plan: dict[str, dict[str, Any]], playbook: Playbook, signal: Signal) -> None:
    """Add a firing signal to the new signals of its group; the most severe one names the task."""
    key = playbook.group_key(signal.labels)
    entry = plan.setdefault(key, {"playbook": playbook, "signals": {}, "first": signal})
    entry["signals"][signal.id] = None  # a dict: ordered, and one entry per signal
    if _severity_rank(signal.severity.value) > _severity_rank(entry["first"].severity.value):
        entry["first"] = signal


def _duration(seconds: float) -> str:
    """A span as people say it in an incident: "under a minute", "7 min", "2 h 5 min"."""
    minutes = int(abs(seconds) // 60)
    if minutes < 1:
        return "under a minute"
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


async def _after_join(t: TaskOps, task: Task, joined: int) -> bool:
    """Signals joined ``task``; True when its plan must be decided again (no approval yet)."""
    if task.state in (TaskState.queued, TaskState.running) or not task.state.is_open:
        return False  # planning will count them / a closed task keeps its history
    approvals = await t.approvals(task.id)
    if redecidable(task, approvals, await t.steps(task.id, StepKind.action)):
        return True
    if any(a.verdict == "approve" for a in approvals):
        note = f"{more_alerts(joined)} joined after the first approval; the approved plan stands"
    else:
        note = f"{more_alerts(joined)} joined after the plan started running; the plan stands"
    t.event(Event(ev.PLAN_STANDS, task.id, {"added": joined, "note": note}))
    return False


async def settle_resolution(t: TaskOps, task_id: int, now: datetime) -> str | None:
    """Some signals of the task resolved. When every one has (status in the store), a task nobody
    acted on yet ends (cancelled, its pending steps skipped); any other task only records when.

    Runs inside the grouping transaction, so an approval is either committed before it (the task
    is executing and is left to run) or after it (and finds the task cancelled): never both.
    Returns "closed" or "recorded" when every signal resolved, None otherwise.
    """
    tally = await t.signal_tally(task_id)
    if not tally.all_resolved:
        return None  # a partial resolution (2 of 3 pods): the signals_resolved event is all
    task = await t.get_task(task_id)
    if task.alerts_resolved:
        return None  # a redelivered resolution, recorded already
    at = min(tally.last_ended_at, now) if tally.last_ended_at else now
    await t.record_resolution(task_id, at.isoformat())
    steps = await t.steps(task_id, StepKind.action)
    record = {"resolved_at": at.isoformat(), "signals": tally.total}
    if task.state in ENDED_BY_RESOLUTION and not steps_started(steps):
        outcome = resolution_outcome(at)
        skipped = []
        for step in steps:
            if step.state is StepState.pending:  # nothing may claim them now; each move leaves its record
                await step_moves.move(t, step, StepState.skipped, reason=outcome, finished_at=now.isoformat())
                skipped.append(step.name)
        t.event(Event(ev.RESOLVED, task_id, {**record, "closed": True, "skipped": skipped}))
        t.audit(AuditEntry("system", "task.resolved", task_id, {**record, "closed": True, "skipped": skipped}))
        await t.set_state(task_id, task.state, TaskState.cancelled, actor="system", reason=outcome, outcome=outcome)
        return "closed"
    ran = [s for s in steps if s.state in {StepState.succeeded, StepState.rolled_back} and s.finished_at is not None]
    fix = max(ran, key=lambda s: s.finished_at or at, default=None)
    note = f"every alert resolved at {clock_text(at)}"
    after_fix_s = None
    if fix is not None and fix.finished_at is not None:
        after_fix_s = (at - fix.finished_at).total_seconds()
        note += (f", {_duration(after_fix_s)} after {fix.name} ran" if after_fix_s >= 0
                 else f", {_duration(after_fix_s)} before {fix.name} finished")
    payload = {**record, "closed": False, "state": task.state.value, "after_fix_s": after_fix_s,
               "fix_step": fix.name if fix else None}
    t.event(Event(ev.RESOLVED, task_id, {**payload, "note": note}))
    t.audit(AuditEntry("system", "task.resolved", task_id, payload))
    return "recorded"


class EngineStore(SignalReads, TaskReads, SettingReads, UnitOfWork, Protocol):
    """The store ports the engine uses: signals behind its cursor, tasks to resume, the cursor, and units of work."""


class Engine:
    def __init__(self, core: Core, planner: Planner, executor: Executor, owners: TaskOwnership | None = None) -> None:
        self.core = core
        self.store: EngineStore = core.store
        self.planner = planner
        self.executor = executor
        self._owners = owners  # on a shared store: which replica drives which task (bot/loop/orphans.py)
        self._looks = TwoLooks()
        self._wake = asyncio.Event()
        self._work: asyncio.Queue[int] = asyncio.Queue(maxsize=core.settings.engine.queue_size)
        self._tasks: list[asyncio.Task[Any]] = []
        self._inflight: set[int] = set()
        # Re-decisions put off while a storm is still arriving (task id -> its timer), and when
        # each task was last decided again: a storm re-decides a task a few times, not per request.
        self._deferred: dict[int, asyncio.TimerHandle] = {}
        self._redecided_at: dict[int, float] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        # Stored signals arrive with the event that announces their commit; the inbox holds them
        # (bounded by signal count). When it would overflow, or at start, the engine reads the
        # store behind its cursor instead ("catch-up"), so nothing stored is ever skipped.
        self._inbox: deque[list[tuple[int, Signal]]] = deque()
        self._inbox_signals = 0
        self._inbox_limit = core.settings.engine.queue_size
        self._catch_up = True
        self._cursor = 0  # every signal with seq <= cursor has been grouped
        self._saved_cursor = 0
        self._saved_at = 0.0
        # On PostgreSQL several replicas share the store: each reads the signals from the store
        # (its own intake events only wake it) and claims them through the shared cursor
        # (bot/store/signal_claims.py), so each is grouped once, whichever replica took it in.
        self._shared_store = core.settings.store_target.backend == "postgresql"
        self._unsubscribe = core.bus.subscribe(ev.SIGNALS_STORED, self._on_stored)
        core.metrics.track_queue(core.metrics.engine_queue_depth, lambda: self._work.qsize() + self._inbox_signals)

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        for task in await self.executor.recover():
            await self.submit(task.id)
        for task in await self.store.tasks_in_states([TaskState.queued.value, TaskState.running.value]):
            await self.submit(task.id)
        # Signals that joined a waiting task just before a stop: its plan is decided again now.
        for task in await self.store.tasks_in_states([TaskState.needs_approval.value]):
            if task.plan_is_stale:
                await self.submit(task.id)
        if self._owners is not None:  # driven from here now: the leader leaves them to this replica
            for orphan in await self._owners.orphaned_tasks():
                await self._owners.take_over(orphan.task_id, orphan)
        setting = await self.store.get_setting(CURSOR_KEY)
        self._cursor = self._saved_cursor = int(setting.value) if setting else 0
        self._saved_at = time.monotonic()
        self._tasks.append(asyncio.create_task(self._observe(), name="engine-observe"))
        self._tasks += [asyncio.create_task(self._worker(), name=f"engine-worker-{i}")
                        for i in range(self.core.settings.engine.workers)]

    async def stop(self) -> None:
        self._unsubscribe()
        for timer in self._deferred.values():
            timer.cancel()  # a stale plan is decided again at the next start (see start)
        self._deferred.clear()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        with contextlib.suppress(Exception):
            await self._save_cursor()

    async def recover_orphaned(self) -> None:
        """Resolve what a replica that is gone left, as a start would (run by the leader every
        ORPHAN_CHECK_S): the steps it left running, and the tasks it was planning or executing.
        Each is acted on at the second look that finds it so (the grace, bot/loop/orphans.py)."""
        owners, looks = self._owners, self._looks
        if owners is not None and not owners.holds_own_lock():
            # What it took over would look orphaned again at once, and it could claim no step of it.
            log.warning("orphans.look_skipped", reason="this replica does not hold its own owner lock")
            looks.forget()
            return
        looks.begin()
        try:
            for task in await self.executor.recover(interrupted_only=True, confirmed=looks.confirmed):
                if owners is not None:
                    await owners.take_over(task.id)  # driven from here now, and by the next leader if this one dies
                await self.submit(task.id)
            if owners is None:
                return
            for orphan in await owners.orphaned_tasks():
                if not looks.confirmed(("task", orphan.task_id, orphan.state, orphan.owner, orphan.updated_at)):
                    continue
                if await owners.take_over(orphan.task_id, orphan):
                    log.warning("orphans.task_taken_over", task_id=orphan.task_id, state=orphan.state,
                                from_owner=orphan.owner)
                    await self.submit(orphan.task_id)  # planned or advanced here, as a start would
        finally:
            looks.end()

    async def submit(self, task_id: int) -> None:
        """Queue a task for planning or execution (bounded: waits when the queue is full)."""
        self._idle.clear()
        self._inflight.add(task_id)
        await self._work.put(task_id)

    async def wait_idle(self) -> None:
        """Until every stored signal is grouped and every queued task was worked on (tests, bench)."""
        while True:
            caught_up = not self._inbox and not await self.store.signals_after(self._cursor, 1)
            if caught_up and self._work.empty() and not self._inflight and not self._deferred:
                return
            self._idle.clear()
            self._wake.set()
            await self._idle.wait()

    # -- observe ---------------------------------------------------------------------------------

    def _on_stored(self, event: Event) -> None:
        stored = event.payload.get("signals") or []
        if self._shared_store:
            self._wake.set()  # the signals are read from the store, with the other replicas' ones
            return
        if self._inbox_signals + len(stored) > self._inbox_limit:
            self._catch_up = True  # drop the inbox: the store has all of it
            self._inbox.clear()
            self._inbox_signals = 0
        elif stored:
            self._inbox.append(stored)
            self._inbox_signals += len(stored)
        self._wake.set()

    async def _next_batch(self) -> list[tuple[int, Signal, int | None]] | None:
        """The next signals to group as (seq, signal, task id if known); None when there are none."""
        if self._catch_up or self._shared_store:
            rows = await self.store.signals_after(self._cursor, BATCH)
            if rows:
                return [(row.seq, row.signal, row.task_id) for row in rows]
            self._catch_up = False
            if self._shared_store:
                return None
        # Everything that arrived while the last group was being committed becomes one batch, so
        # a busy engine commits fewer, larger transactions instead of falling behind one by one.
        batch: list[tuple[int, Signal, int | None]] = []
        while self._inbox and len(batch) < BATCH:
            stored = self._inbox.popleft()
            self._inbox_signals -= len(stored)
            batch += [(seq, signal, None) for seq, signal in stored if seq > self._cursor]
        if batch:
            return batch
        return None

    async def _observe(self) -> None:
        while True:
            self._wake.clear()
            try:
                batch = await self._next_batch()
                work = await self._group(batch) if batch else []
            except CursorMoved as moved:
                log.info("engine.cursor_moved", cursor=self._cursor, to=moved.to)
                self._cursor = self._saved_cursor = moved.to
                continue
            except Exception:
                log.exception("engine.observe_failed", cursor=self._cursor)
                self._catch_up = True  # read again from the store, behind the cursor
                await asyncio.sleep(1)  # the store is failing; do not spin
                continue
            if batch is None:
                if self._work.empty() and not self._inflight and not self._deferred:
                    self._idle.set()
                await self._idle_until_woken()
                continue
            self._cursor = max(self._cursor, batch[-1][0])
            if time.monotonic() - self._saved_at > CURSOR_SAVE_S:
                await self._save_cursor()
            for task_id in work:
                await self.submit(task_id)

    async def _idle_until_woken(self) -> None:
        """Wait for signals; save a moved cursor once CURSOR_SAVE_S passed since the last save.

        Not on every idle moment: under load the inbox empties after each intake commit, and a
        cursor transaction there would sit between every two of them.
        """
        if self._shared_store:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(PEER_POLL_S):
                    await self._wake.wait()
            if time.monotonic() - self._saved_at > CURSOR_SAVE_S:
                await self._save_cursor()
            return
        if self._cursor == self._saved_cursor:
            await self._wake.wait()
            return
        try:
            async with asyncio.timeout(max(0.0, CURSOR_SAVE_S - (time.monotonic() - self._saved_at))):
                await self._wake.wait()
        except TimeoutError:
            await self._save_cursor()

    async def _save_cursor(self) -> None:
        """Persist the cursor when it moved past signals that needed no task (no transaction did)."""
        if self._cursor == self._saved_cursor:
            return
        cursor = self._cursor
        try:
            await self.store.transact(lambda t: save_cursor(t, CURSOR_KEY, cursor, "engine"))
        except StoreUnavailable as exc:
            # The cursor only shortens the catch-up after a restart: observing goes on, and the
            # next save (at the latest the one at stop) tries again.
            log.warning("engine.cursor_not_saved", cursor=cursor, error=str(exc))
            self._saved_at = time.monotonic()
            return
        self._saved_cursor, self._saved_at = cursor, time.monotonic()

    async def _group(self, batch: list[tuple[int, Signal, int | None]]) -> list[int]:
        core = self.core
        now = core.clock()
        position = self._cursor  # every signal of the batch comes after it
        matched = [(seq, signal, task_id, playbooks[0]) for seq, signal, task_id in batch
                   if (playbooks := core.playbooks.match(signal))]
        self._count_unmatched(batch, matched)
        if not matched:
            return []  # most signals of a storm of unknown alerts end here, with no I/O
        unknown = [signal.id for _, signal, task_id, _ in matched if task_id is None]
        stored_tasks = await core.store.task_ids_of_signals(unknown) if unknown else {}
        plan: dict[str, dict[str, Any]] = {}  # group key -> the new signals of that group
        resolved: dict[int, list[str]] = {}
        # Firing signals already in a task: redeliveries, unless every alert of that task had
        # resolved (then the problem is back, and the signal is grouped again like a new one).
        in_task: dict[str, tuple[int, Signal, Playbook]] = {}
        for _, signal, known_task, playbook in matched:
            task_id = known_task if known_task is not None else stored_tasks.get(signal.id)
            if signal.status is SignalStatus.resolved:
                if task_id:
                    resolved.setdefault(task_id, []).append(signal.id)
                continue
            if task_id:
                in_task[signal.id] = (task_id, signal, playbook)
                continue
            _plan_signal(plan, playbook, signal)
        last_seq = batch[-1][0]

        settled: dict[int, str] = {}  # task id -> what every signal of it resolving did

        opened: list[tuple[Task, Signal]] = []  # new tasks with their first signal, for their traces

        async def unit(t: TaskOps) -> list[int]:
            if self._shared_store:
                await claim_after(t, CURSOR_KEY, position)
            settled.clear()
            opened.clear()
            groups = {key: {**entry, "signals": dict(entry["signals"])} for key, entry in plan.items()}
            fired_again = await refire.fired_again(t, in_task, now)
            for signal_id in fired_again:
                _plan_signal(groups, in_task[signal_id][2], in_task[signal_id][1])
            work = []  # tasks to plan: the new ones, and those whose plan must be decided again
            for key, entry in groups.items():
                playbook, first = entry["playbook"], entry["first"]
                trigger = playbook.trigger
                window_s, cooldown_s = (trigger.group_window_s, trigger.cooldown_s) if trigger else (0, 0)
                latest = await t.latest_task_for_group(key)
                if latest is not None and self._joins(latest[0], now, window_s, cooldown_s):
                    task = latest[0]
                    back = [sid for sid in entry["signals"] if fired_again.get(sid) == task.id]
                    joined = [sid for sid in entry["signals"] if sid not in back]
                    if back:
                        await refire.record_refire(t, task, [in_task[sid][1] for sid in back], now,
                                                   window_s, cooldown_s)
                    if joined:
                        await t.attach_signals(task.id, joined, now.isoformat())
                        if await _after_join(t, task, len(joined)):
                            work.append(task.id)
                    continue
                task = await t.create_task(
                    playbook_id=playbook.id, playbook_version=playbook.version, group_key=key,
                    title=_title(first, playbook.id), environment=first.labels.get("env", core.environment),
                    severity=first.severity.value, requester=f"source:{first.source}", args={},
                    signal_ids=list(entry["signals"]), last_signal_at=now.isoformat(),
                )
                work.append(task.id)
                opened.append((task, first))
                core.metrics.tasks_created.labels(playbook.id).inc()
            for task_id, ids in resolved.items():
                t.event(Event(ev.SIGNALS_RESOLVED, task_id, {"signals": ids}))
                if (what := await settle_resolution(t, task_id, now)) is not None:
                    settled[task_id] = what
            await t.set_setting(CURSOR_KEY, last_seq, "engine")
            return work

        work = await core.store.transact(unit)
        for task, first in opened:
            core.tracing.record("intake", task, min(first.starts_at or now, now), now, source=first.source,
                                alertname=first.labels.get("alertname"), fingerprint=first.fingerprint)
            core.tracing.record("match", task, now, core.clock(), group_key=task.group_key, signals=task.signal_count)
        self._saved_cursor, self._saved_at = last_seq, time.monotonic()
        for task_id, what in settled.items():
            log.info("task.alerts_resolved", task_id=task_id, closed=what == "closed")
        return work

    @staticmethod
    def _joins(task: Task, now: datetime, window_s: int | float, cooldown_s: int | float) -> bool:
        if task.state in OPEN_STATES:
            return True
        if now - task.created_at <= timedelta(seconds=window_s):
            return True
        return task.closed_at is not None and now - task.closed_at <= timedelta(seconds=cooldown_s)

    # -- workers ---------------------------------------------------------------------------------

    async def _worker(self) -> None:
        while True:
            task_id = await self._work.get()
            try:
                structlog.contextvars.clear_contextvars()
                structlog.contextvars.bind_contextvars(correlation_id=f"task-{task_id}", task_id=task_id)
                await self._step(task_id)
            except StoreUnavailable as exc:
                # The store went away mid-step (PostgreSQL failing over, say): everything committed
                # is still there, so the same step is tried again once the store is back.
                log.warning("engine.task_deferred", task_id=task_id, error=str(exc), retry_in_s=STORE_RETRY_S)
                self._defer(task_id, STORE_RETRY_S)
            except Exception as exc:
                log.exception("engine.task_failed", task_id=task_id)
                await self._escalate_after_error(task_id, exc)
            finally:
                self._inflight.discard(task_id)
                self._work.task_done()
                if self._work.empty() and not self._inflight and not self._deferred:
                    self._idle.set()

    async def _escalate_after_error(self, task_id: int, exc: Exception) -> None:
        """An unexpected failure must not leave a task half-way through with nobody told."""
        reason = (f"internal error while working on this task ({type(exc).__name__}: {redact_text(str(exc))}); "
                  f"see the server log for correlation id task-{task_id}")

        async def escalate(t: TaskOps) -> None:
            task = await t.get_task(task_id)
            if task is None or task.state not in (TaskState.queued, TaskState.running, TaskState.executing):
                return
            if task.state is TaskState.queued:  # queued tasks reach a person by way of planning
                await t.set_state(task_id, TaskState.queued, TaskState.running, actor="system", reason=reason)
            await t.set_state(task_id, {TaskState.running, TaskState.executing}, TaskState.escalated_to_human,
                              actor="system", reason=reason, outcome=reason)

        try:
            await self.store.transact(escalate)
        except Exception:
            log.exception("engine.escalation_failed", task_id=task_id)

    async def _step(self, task_id: int) -> None:
        task = await self.store.get_task(task_id)
        if task is None:
            return
        bind_task_trace(task)
        if task.state in (TaskState.queued, TaskState.running):
            task = await self.planner.plan(task)
        if task.state is TaskState.needs_approval and task.plan_is_stale:
            # Signals joined after (or while) it was planned. While more are on their way (a
            # storm), or right after the last re-decision, wait: each re-decision reads all the
            # evidence again, and the person needs the plan for the whole group, not each step.
            wait = self._redecide_wait(task.id)
            if wait > 0:
                self._defer(task.id, wait)
                return
            task = await self.planner.redecide(task)
            self._redecided_at[task.id] = time.monotonic()
        if task.state is TaskState.executing:
            await self.executor.advance(task.id)

    def _redecide_wait(self, task_id: int) -> float:
        """Seconds to put off re-deciding ``task_id``: 0 to do it now."""
        since = time.monotonic() - self._redecided_at.get(task_id, -REDECIDE_MIN_INTERVAL_S)
        if since < REDECIDE_MIN_INTERVAL_S:
            return REDECIDE_MIN_INTERVAL_S - since
        return REDECIDE_SETTLE_S if (self._inbox or self._catch_up) else 0.0

    def _defer(self, task_id: int, delay: float) -> None:
        if task_id in self._deferred:
            return
        if len(self._redecided_at) > 10_000:  # bounded: old entries only ever shorten a wait
            cutoff = time.monotonic() - REDECIDE_MIN_INTERVAL_S
            self._redecided_at = {k: v for k, v in self._redecided_at.items() if v > cutoff}

        def resubmit() -> None:
            # In flight before it stops being deferred, so wait_idle never sees a moment with neither.
            self._idle.clear()
            self._inflight.add(task_id)
            self._deferred.pop(task_id, None)
            self._tasks.append(asyncio.create_task(self._work.put(task_id), name=f"engine-redecide-{task_id}"))
            self._tasks[:] = [t for t in self._tasks if not t.done()]

        self._deferred[task_id] = asyncio.get_running_loop().call_later(delay, resubmit)

    def _count_unmatched(self, batch: list[tuple[int, Signal, int | None]], matched: list[Any]) -> None:
        """Count what matched no playbook (ooda_unmatched_signals_total), still without I/O: the
        store lists those signals later (``ooda signals --unmatched``), the metric shows them now."""
        if len(matched) == len(batch):
            return
        grouped = {seq for seq, *_ in matched}
        self.core.metrics.unmatched.observe(
            (signal.id, signal.labels.get("alertname") or signal.title, signal.status is SignalStatus.firing)
            for seq, signal, _ in batch if seq not in grouped)
