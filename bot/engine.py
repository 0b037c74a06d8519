"""Observe: turn stored signals into tasks, and drive tasks through the loop.

The engine reads signals from the store in ``seq`` order behind a cursor kept in the store, so
the work queue is rebuilt from the store at start and nothing acknowledged is skipped. A batch of
signals is grouped in one transaction that also moves the cursor: a crash either keeps both or
neither. A storm of 10k alerts for one service becomes one task with a count.

Grouping rule: a firing signal joins the latest task of its group while that task is open, or
within ``group_window_s`` of the task's creation, or within ``cooldown_s`` after it closed;
otherwise it opens a new task. A signal starts at most one task: the first matching playbook,
in file-name order. A resolved signal is recorded on its task as an event.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta
from typing import Any

import structlog

from bot import events as ev
from bot.core import Core
from bot.events import Event
from bot.executor import Executor
from bot.planner import Planner
from bot.signals import Severity, Signal
from bot.store import TaskOps
from bot.tasks import OPEN_STATES, Task, TaskState

log = structlog.get_logger(__name__)

CURSOR_KEY = "engine.cursor"
BATCH = 500
WORKERS = 4


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
        self._unsubscribe = core.bus.subscribe(ev.SIGNALS_STORED, lambda _: self._wake.set())
        core.metrics.track_queue(core.metrics.engine_queue_depth, self._work.qsize)

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        for task in await self.executor.recover():
            await self.submit(task.id)
        for task in await self.core.store.tasks_in_states([TaskState.queued.value, TaskState.running.value]):
            await self.submit(task.id)
        self._tasks.append(asyncio.create_task(self._observe(), name="engine-observe"))
        self._tasks += [asyncio.create_task(self._worker(), name=f"engine-worker-{i}") for i in range(WORKERS)]

    async def stop(self) -> None:
        self._unsubscribe()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def submit(self, task_id: int) -> None:
        """Queue a task for planning or execution (bounded: waits when the queue is full)."""
        self._idle.clear()
        self._inflight.add(task_id)
        await self._work.put(task_id)

    async def wait_idle(self) -> None:
        """Until every stored signal is grouped and every queued task was worked on (tests, bench)."""
        while True:
            caught_up = not await self.core.store.signals_after(await self._cursor(), 1)
            if caught_up and self._work.empty() and not self._inflight:
                return
            self._idle.clear()
            self._wake.set()
            await self._idle.wait()

    # -- observe ---------------------------------------------------------------------------------

    async def _cursor(self) -> int:
        setting = await self.core.store.get_setting(CURSOR_KEY)
        return int(setting["value"]) if setting else 0

    async def _observe(self) -> None:
        cursor = await self._cursor()
        while True:
            batch = await self.core.store.signals_after(cursor, BATCH)
            if not batch:
                if self._work.empty() and not self._inflight:
                    self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                created = await self._group(batch)
            except Exception:
                log.exception("engine.group_failed", first_seq=batch[0]["seq"])
                await asyncio.sleep(1)  # the store is failing; do not spin
                continue
            cursor = batch[-1]["seq"]
            for task_id in created:
                await self.submit(task_id)

    async def _group(self, batch: list[dict[str, Any]]) -> list[int]:
        core = self.core
        now = core.clock()
        plan: dict[str, dict[str, Any]] = {}  # group key -> new or existing task and its new signals
        resolved: dict[int, list[str]] = {}
        for row in batch:
            signal = Signal.model_construct(
                source=row["source"], fingerprint=row["fingerprint"], status=row["status"],
                severity=Severity(row["severity"]), title=row["title"], labels=row["labels"],
                annotations=row["annotations"], url=row["url"], starts_at=None, ends_at=None, raw={},
            )
            if row["status"] == "resolved":
                if row["task_id"]:
                    resolved.setdefault(row["task_id"], []).append(row["id"])
                continue
            if row["task_id"]:
                continue  # a redelivery of a firing signal already in a task
            playbooks = core.playbooks.match(signal)
            if not playbooks:
                continue
            playbook = playbooks[0]
            key = playbook.group_key(signal.labels)
            entry = plan.setdefault(key, {"playbook": playbook, "signals": [], "first": signal})
            entry["signals"].append(row["id"])
            if _severity_rank(signal.severity.value) > _severity_rank(entry["first"].severity.value):
                entry["first"] = signal
        last_seq = batch[-1]["seq"]

        async def unit(t: TaskOps) -> list[int]:
            created = []
            for key, entry in plan.items():
                playbook, first = entry["playbook"], entry["first"]
                trigger = playbook.trigger
                latest = await t.latest_task_for_group(key)
                if latest is not None and self._joins(latest[0], now, trigger.group_window_s if trigger else 0,
                                                      trigger.cooldown_s if trigger else 0):
                    await t.attach_signals(latest[0].id, entry["signals"], now.isoformat())
                    continue
                task = await t.create_task(
                    playbook_id=playbook.id, playbook_version=playbook.version, group_key=key,
                    title=_title(first, playbook.id), environment=first.labels.get("env", core.environment),
                    severity=first.severity.value, requester=f"source:{first.source}", args={},
                    signal_ids=entry["signals"], last_signal_at=now.isoformat(),
                )
                created.append(task.id)
                core.metrics.tasks_created.labels(playbook.id).inc()
            for task_id, ids in resolved.items():
                t.event(Event(ev.PREFIX + "signals_resolved", task_id, {"signals": ids}))
            await t.set_setting(CURSOR_KEY, last_seq, "engine")
            return created

        return await core.store.transact(unit)

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
            except Exception:
                log.exception("engine.task_failed", task_id=task_id)
            finally:
                self._inflight.discard(task_id)
                self._work.task_done()
                if self._work.empty() and not self._inflight:
                    self._idle.set()

    async def _step(self, task_id: int) -> None:
        task = await self.core.store.get_task(task_id)
        if task is None:
            return
        if task.state in (TaskState.queued, TaskState.running):
            task = await self.planner.plan(task)
        if task.state is TaskState.executing:
            await self.executor.advance(task.id)
