"""Scheduled work on APScheduler 3.x: the daily digest, approval expiry, chat outbox retries.

Jobs live in a MemoryJobStore and are rebuilt from settings at every start (a persistent job store
would pickle functions and break on renames). The digest records the day it was sent in the store,
so a restart the same day does not send it twice. Each job binds its own correlation id: jobs run
in the scheduler's context, not in the context of whoever scheduled them.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

import structlog
from apscheduler.job import Job
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from bot.commands import Commands
from bot.core import Core
from bot.cron import cron_trigger
from bot.notifier import Notifier
from bot.ports import ChatSurface
from bot.store import TaskOps
from bot.tasks import Task, TaskState

log = structlog.get_logger(__name__)


def _job(name: str, fn: Callable[[], Awaitable[Any]]) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(correlation_id=f"job-{name}")
        try:
            await fn()
        except Exception:
            log.exception("scheduler.job_failed", job=name)

    return run


def digest_trigger(at: str, days: str, timezone: str) -> CronTrigger:
    hour, minute = (int(x) for x in at.split(":"))
    # Day names, not numbers: APScheduler 3 counts 0 as Monday, unlike cron.
    return CronTrigger(hour=hour, minute=minute, day_of_week=days, timezone=ZoneInfo(timezone))


class Scheduler:
    def __init__(self, core: Core, commands: Commands, notifier: Notifier, surfaces: list[ChatSurface]) -> None:
        self.core = core
        self.commands = commands
        self.notifier = notifier
        self.surfaces = surfaces
        self._scheduler: AsyncIOScheduler | None = None

    def start(self) -> None:
        s = self.core.settings
        sched = AsyncIOScheduler(timezone="UTC")
        if s.digest.enabled:
            sched.add_job(_job("digest", self.send_digest), digest_trigger(s.digest.at, s.digest.days,
                                                                           s.digest.timezone),
                          id="digest", replace_existing=True, misfire_grace_time=3600, coalesce=True)
        sched.add_job(_job("expire", self.expire_approvals), IntervalTrigger(seconds=60), id="expire",
                      replace_existing=True, misfire_grace_time=60)
        sched.add_job(_job("remind", self.remind_approvers), IntervalTrigger(seconds=60), id="remind",
                      replace_existing=True, misfire_grace_time=60)
        sched.add_job(_job("outbox", self.notifier.retry_outbox), IntervalTrigger(seconds=30), id="outbox",
                      replace_existing=True, misfire_grace_time=30)
        sched.add_job(_job("audit_head", self.log_audit_head), IntervalTrigger(minutes=10), id="audit_head",
                      replace_existing=True, misfire_grace_time=600)
        if s.store.retention_days is not None:
            sched.add_job(_job("retention", self.purge_signals), IntervalTrigger(hours=1), id="retention",
                          replace_existing=True, misfire_grace_time=3600, coalesce=True)
        for playbook_id in self.core.playbooks.ids:
            for i, schedule in enumerate(self.core.playbooks.get(playbook_id).schedules):
                name = f"check:{playbook_id}:{i}"
                # A tick missed by more than 5 minutes (the process was down) is skipped, not run late.
                sched.add_job(_job(name, functools.partial(self.commands.run_scheduled, playbook_id, i)),
                              cron_trigger(schedule.cron, schedule.timezone), id=name, replace_existing=True,
                              misfire_grace_time=300, coalesce=True, max_instances=1)
        sched.start()
        self._scheduler = sched

    def job(self, job_id: str) -> Job:
        """A started job by id: ``digest``, ``expire``, ``check:<playbook>:<n>`` for scheduled checks."""
        job = self._scheduler.get_job(job_id) if self._scheduler is not None else None
        if job is None:
            raise KeyError(f"no scheduled job {job_id!r}")
        return job

    def stop(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None

    async def log_audit_head(self) -> tuple[int, str]:
        """Log the audit chain's head. Shipped logs are the copy outside the store that shows
        records cut off the end of the chain, which the chain alone cannot reveal."""
        seq, digest = await self.core.store.audit_head()
        # ``head`` in the form ``ooda audit verify --expect-head`` takes.
        log.info("audit.head", seq=seq, hash=digest, head=f"{seq}:{digest}")
        return seq, digest

    async def purge_signals(self) -> int:
        """Apply ``store.retention_days`` to signals that never joined a task."""
        days = self.core.settings.store.retention_days
        if days is None:
            return 0
        before = self.core.clock() - timedelta(days=days)
        count = await self.core.store.purge_signals(before.isoformat())
        if count:
            log.info("retention.signals_purged", count=count, delivered_before=before.isoformat())
        return count

    async def send_digest(self) -> bool:
        """Post the digest once per day; returns False when today's was already sent."""
        today = self.core.clock().date().isoformat()
        sent = await self.core.store.get_setting(f"digest.sent.{today}")
        if sent:
            return False
        text = await self.commands.digest()
        for surface in self.surfaces:
            await surface.post_notice(self.core.settings.digest.channel, text)

        async def mark(t: TaskOps) -> None:
            await t.set_setting(f"digest.sent.{today}", True, "scheduler")

        await self.core.store.transact(mark)
        log.info("digest.sent", day=today)
        return True

    async def remind_approvers(self) -> list[int]:
        """Nudge the routed channels once about proposals waiting longer than ``engine.reminder_after_s``."""
        after = timedelta(seconds=self.core.settings.engine.reminder_after_s)
        now = self.core.clock()
        reminded = []
        for task in await self.core.store.tasks_in_states([TaskState.needs_approval.value]):
            key = f"reminded.{task.id}"
            if now - task.updated_at < after or await self.core.store.get_setting(key):
                continue
            playbook = self.core.playbooks.get(task.playbook_id) if task.playbook_id in self.core.playbooks else None
            waited = int((now - task.updated_at).total_seconds() // 60)
            text = (f"Reminder: task {task.id} ({task.playbook_id}: {task.title}) has waited {waited} min for "
                    f"approval. `ooda show {task.id}` or /ops show {task.id}")
            for surface in self.surfaces:
                channel = playbook.routing.get(surface.name) if playbook else None
                try:
                    await surface.post_notice(channel, text)
                except Exception as exc:
                    log.warning("remind.delivery_failed", surface=surface.name, task_id=task.id, error=str(exc))

            async def mark(t: TaskOps, key: str = key) -> None:
                await t.set_setting(key, True, "scheduler")

            await self.core.store.transact(mark)
            reminded.append(task.id)
        return reminded

    async def expire_approvals(self) -> list[int]:
        """Cancel proposals nobody decided on within ``engine.approval_expiry_s``."""
        limit = timedelta(seconds=self.core.settings.engine.approval_expiry_s)
        now = self.core.clock()
        expired = []
        reason = f"expired: no decision within {limit}"
        for task in await self.core.store.tasks_in_states([TaskState.needs_approval.value]):
            if now - task.updated_at < limit:
                continue
            try:
                await self.core.store.transact(functools.partial(_expire, task_id=task.id, reason=reason))
            except Exception:
                log.exception("expire.failed", task_id=task.id)
                continue
            expired.append(task.id)
        return expired


async def _expire(t: TaskOps, *, task_id: int, reason: str) -> Task:
    return await t.set_state(task_id, TaskState.needs_approval, TaskState.cancelled, actor="scheduler",
                             reason=reason, outcome=reason)
