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
in file-name order. A resolved signal is recorded on its task as an event.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from datetime import datetime, timedelta
from typing import Any

import structlog

from bot import events as ev
from bot.core import Core
from bot.errors import StoreUnavailable
from bot.events import Event
from bot.executor import Executor
from bot.planner import Planner
from bot.redaction import redact_text
from bot.signals import Signal, SignalStatus, signal_from_row
from bot.store import TaskOps
from bot.tasks import OPEN_STATES, Task, TaskState

log = structlog.get_logger(__name__)

CURSOR_KEY = "engine.cursor"
CURSOR_SAVE_S = 5.0  # at most this much grouping is redone after a crash (it is idempotent)
BATCH = 500


def _title(signal: Signal, playbook_id: str) -> str:
    return signal.title or signal.labels.get("alertname") or playbook_id


def _severity_rank(value: str) -> int:
    return {"critical": 2, "warning": 1}.get(value, 0)


class Engine:
    def __init__(self, core: Core, planner: Planner, executor: Executor) -> None:
        self.core = core
        self.planner = planner
        self.executor = executor
        self._wake = asyncio.Event()
        self._work: asyncio.Queue[int] = asyncio.Queue(maxsize=core.settings.engine.queue_size)
        self._tasks: list[asyncio.Task[Any]] = []
        self._inflight: set[int] = set()
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
        self._unsubscribe = core.bus.subscribe(ev.SIGNALS_STORED, self._on_stored)
        core.metrics.track_queue(core.metrics.engine_queue_depth, lambda: self._work.qsize() + self._inbox_signals)

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        for task in await self.executor.recover():
            await self.submit(task.id)
        for task in await self.core.store.tasks_in_states([TaskState.queued.value, TaskState.running.value]):
            await self.submit(task.id)
        setting = await self.core.store.get_setting(CURSOR_KEY)
        self._cursor = self._saved_cursor = int(setting["value"]) if setting else 0
        self._saved_at = time.monotonic()
        self._tasks.append(asyncio.create_task(self._observe(), name="engine-observe"))
        self._tasks += [asyncio.create_task(self._worker(), name=f"engine-worker-{i}")
                        for i in range(self.core.settings.engine.workers)]

    async def stop(self) -> None:
        self._unsubscribe()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        with contextlib.suppress(Exception):
            await self._save_cursor()

    async def submit(self, task_id: int) -> None:
        """Queue a task for planning or execution (bounded: waits when the queue is full)."""
        self._idle.clear()
        self._inflight.add(task_id)
        await self._work.put(task_id)

    async def wait_idle(self) -> None:
        """Until every stored signal is grouped and every queued task was worked on (tests, bench)."""
        while True:
            caught_up = not self._inbox and not await self.core.store.signals_after(self._cursor, 1)
            if caught_up and self._work.empty() and not self._inflight:
                return
            self._idle.clear()
            self._wake.set()
            await self._idle.wait()

    # -- observe ---------------------------------------------------------------------------------

    def _on_stored(self, event: Event) -> None:
        stored = event.payload.get("signals") or []
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
        if self._catch_up:
            rows = await self.core.store.signals_after(self._cursor, BATCH)
            if rows:
                return [(row["seq"], signal_from_row(row), row["task_id"]) for row in rows]
            self._catch_up = False
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
                created = await self._group(batch) if batch else []
            except Exception:
                log.exception("engine.observe_failed", cursor=self._cursor)
                self._catch_up = True  # read again from the store, behind the cursor
                await asyncio.sleep(1)  # the store is failing; do not spin
                continue
            if batch is None:
                if self._work.empty() and not self._inflight:
                    self._idle.set()
                await self._idle_until_woken()
                continue
            self._cursor = max(self._cursor, batch[-1][0])
            if time.monotonic() - self._saved_at > CURSOR_SAVE_S:
                await self._save_cursor()
            for task_id in created:
                await self.submit(task_id)

    async def _idle_until_woken(self) -> None:
        """Wait for signals; save a moved cursor once CURSOR_SAVE_S passed since the last save.

        Not on every idle moment: under load the inbox empties after each intake commit, and a
        cursor transaction there would sit between every two of them.
        """
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
            await self.core.store.transact(lambda t: t.set_setting(CURSOR_KEY, cursor, "engine"))
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
        matched = [(seq, signal, task_id, playbooks[0]) for seq, signal, task_id in batch
                   if (playbooks := core.playbooks.match(signal))]
        if not matched:
            return []  # most signals of a storm of unknown alerts end here, with no I/O
        unknown = [signal.id for _, signal, task_id, _ in matched if task_id is None]
        stored_tasks = await core.store.task_ids_of_signals(unknown) if unknown else {}
        plan: dict[str, dict[str, Any]] = {}  # group key -> the new signals of that group
        resolved: dict[int, list[str]] = {}
        for _, signal, known_task, playbook in matched:
            task_id = known_task if known_task is not None else stored_tasks.get(signal.id)
            if signal.status is SignalStatus.resolved:
                if task_id:
                    resolved.setdefault(task_id, []).append(signal.id)
                continue
            if task_id:
                continue  # a redelivery of a firing signal already in a task
            key = playbook.group_key(signal.labels)
            entry = plan.setdefault(key, {"playbook": playbook, "signals": {}, "first": signal})
            entry["signals"][signal.id] = None  # a dict: ordered, and one entry per signal
            if _severity_rank(signal.severity.value) > _severity_rank(entry["first"].severity.value):
                entry["first"] = signal
        last_seq = batch[-1][0]

        async def unit(t: TaskOps) -> list[int]:
            created = []
            for key, entry in plan.items():
                playbook, first = entry["playbook"], entry["first"]
                trigger = playbook.trigger
                latest = await t.latest_task_for_group(key)
                if latest is not None and self._joins(latest[0], now, trigger.group_window_s if trigger else 0,
                                                      trigger.cooldown_s if trigger else 0):
                    await t.attach_signals(latest[0].id, list(entry["signals"]), now.isoformat())
                    continue
                task = await t.create_task(
                    playbook_id=playbook.id, playbook_version=playbook.version, group_key=key,
                    title=_title(first, playbook.id), environment=first.labels.get("env", core.environment),
                    severity=first.severity.value, requester=f"source:{first.source}", args={},
                    signal_ids=list(entry["signals"]), last_signal_at=now.isoformat(),
                )
                created.append(task.id)
                core.metrics.tasks_created.labels(playbook.id).inc()
            for task_id, ids in resolved.items():
                t.event(Event(ev.PREFIX + "signals_resolved", task_id, {"signals": ids}))
            await t.set_setting(CURSOR_KEY, last_seq, "engine")
            return created

        created = await core.store.transact(unit)
        self._saved_cursor, self._saved_at = last_seq, time.monotonic()
        return created

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
            except StoreUnavailable:
                log.exception("engine.task_failed", task_id=task_id)  # resumed from the store at restart
            except Exception as exc:
                log.exception("engine.task_failed", task_id=task_id)
                await self._escalate_after_error(task_id, exc)
            finally:
                self._inflight.discard(task_id)
                self._work.task_done()
                if self._work.empty() and not self._inflight:
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
            await self.core.store.transact(escalate)
        except Exception:
            log.exception("engine.escalation_failed", task_id=task_id)

    async def _step(self, task_id: int) -> None:
        task = await self.core.store.get_task(task_id)
        if task is None:
            return
        if task.state in (TaskState.queued, TaskState.running):
            task = await self.planner.plan(task)
        if task.state is TaskState.executing:
            await self.executor.advance(task.id)
