"""Scheduled work on APScheduler 3.x: the daily digest, approval expiry, chat outbox retries,
and the optional FYI about alerts no playbook matched.

Jobs live in a MemoryJobStore and are rebuilt from settings at every start (a persistent job store
would pickle functions and break on renames). The digest records the day it was sent in the store,
so a restart the same day does not send it twice. Each job binds its own correlation id: jobs run
in the scheduler's context, not in the context of whoever scheduled them.

Jobs run on the leader only. A scheduled check claims its slot (the time it was due) in the
transaction that records the run (bot/store/slot_claims.py), so a slot runs once however many
replicas think they lead. A slot that passed while nobody led (the leader was killed a moment
before it) is not lost: a process that becomes leader runs, for each check, the latest slot that
passed since it started, within ``CHECK_CATCH_UP_S``, unless a replica claimed it already, and sends
the digest if its time passed within the hour and nobody sent today's.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import structlog
from apscheduler.job import Job
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from bot.chat.commands import Commands, UnmatchedAlert, scheduled_check_id
from bot.chat.notifier import Notifier
from bot.chat.wording import neutralize_mentions, truncate
from bot.config import DigestConfig
from bot.loop.core import Core
from bot.loop.orphans import ORPHAN_CHECK_S
from bot.model.tasks import Task, TaskState
from bot.playbooks.cron import cron_trigger, digest_days_trigger
from bot.ports import ChatSurface
from bot.store.ports import AuditReads, SettingReads, SignalReads, TaskReads, UnitOfWork
from bot.store.protocol import TaskOps

log = structlog.get_logger(__name__)


def _job(name: str, fn: Callable[[], Awaitable[Any]], leading: Callable[[], bool] = lambda: True,
         ) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        if not leading():
            return  # another process leads and runs the singletons
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(correlation_id=f"job-{name}")
        try:
            await fn()
        except Exception:
            log.exception("scheduler.job_failed", job=name)

    return run


class DigestUndelivered(Exception):
    """No surface took the digest; the day is not marked sent, so the next trigger tries again."""


UNMATCHED_FYI_CHECK_S = 60
CHECK_CATCH_UP_S = 300  # a check's slot missed by more than this is skipped, not run late
DIGEST_CATCH_UP_S = 3600
LEADERSHIP_WATCH_S = 1  # how soon a process that became leader catches up on what it missed
UNMATCHED_FYI_PER_RUN = 10  # more due at once are summed up in one notice: a storm must not flood the channel
# Labels that say where an alert comes from, in the order the FYI looks for one to name.
WHERE_LABELS = ("instance", "pod", "service", "job", "namespace", "cluster")


def _period(seconds: int) -> str:
    if seconds % 3600 == 0:
        return "hour" if seconds == 3600 else f"{seconds // 3600} hours"
    return f"{seconds // 60} min"


def unmatched_fyi_text(alert: UnmatchedAlert, window_s: int) -> str:
    """The chat notice about one alert name no playbook matched.

    Label values come from the alert: they are cut short and their mentions defused, so a label
    cannot page a channel or flood it.
    """
    detail = [truncate(alert.severity, 20)]
    where = next((key for key in WHERE_LABELS if alert.example_labels.get(key)), None)
    if where:
        detail.append(f"{where} {truncate(str(alert.example_labels[where]), 60)}")
    times = "once" if alert.count == 1 else f"{alert.count} times"
    text = (f"FYI: {truncate(alert.alertname, 100)} ({', '.join(detail)}) matched no playbook; {times} in the "
            f"last {_period(window_s)}. `ooda signals --unmatched` lists all.")
    return neutralize_mentions(text)


def due_slot(trigger: BaseTrigger, now: datetime, since: datetime) -> datetime | None:
    """The latest time ``trigger`` fires at in (``since``, ``now``]: the slot a run at ``now`` is for."""
    slot = None
    at = trigger.get_next_fire_time(None, since + timedelta(microseconds=1))
    while at is not None and at <= now:
        slot = at
        at = trigger.get_next_fire_time(at, at + timedelta(microseconds=1))
    return slot


def digest_trigger(config: DigestConfig) -> CronTrigger:
    """``digest.cron`` when set, else ``digest.at`` on ``digest.days``, in ``digest.timezone``."""
    if config.cron:
        return cron_trigger(config.cron, config.timezone)
    return digest_days_trigger(config.at, config.days, config.timezone)


class SchedulerStore(SignalReads, TaskReads, AuditReads, SettingReads, UnitOfWork, Protocol):
    """The store ports the scheduler uses: retention, reminders and expiry of tasks, marks of what
    was sent, the audit head."""


class Scheduler:
    def __init__(self, core: Core, commands: Commands, notifier: Notifier, surfaces: list[ChatSurface],
                 leading: Callable[[], bool] = lambda: True) -> None:
        self.core = core
        self._leading = leading
        self.store: SchedulerStore = core.store
        self.commands = commands
        self.notifier = notifier
        self.surfaces = surfaces
        self._scheduler: AsyncIOScheduler | None = None
        self._started_at = core.clock()
        self._led = False  # whether this process led at the last look (``watch_leadership``)
        self._checks: dict[str, tuple[str, int]] = {}  # job id -> (playbook, schedule index)
        self._digest_lock = asyncio.Lock()  # the digest's job and a catch-up of it, one after the other

    def start(self) -> None:
        s = self.core.settings
        sched = AsyncIOScheduler(timezone="UTC")
        self._started_at = self.core.clock()
        if s.digest.enabled:
            sched.add_job(_job("digest", self.send_digest, self._leading), digest_trigger(s.digest),
                          id="digest", replace_existing=True, misfire_grace_time=3600, coalesce=True)
        sched.add_job(_job("expire", self.expire_approvals, self._leading), IntervalTrigger(seconds=60), id="expire",
                      replace_existing=True, misfire_grace_time=60)
        sched.add_job(_job("remind", self.remind_approvers, self._leading), IntervalTrigger(seconds=60), id="remind",
                      replace_existing=True, misfire_grace_time=60)
        sched.add_job(_job("outbox", self.notifier.retry_outbox, self._leading), IntervalTrigger(seconds=30),
                      id="outbox", replace_existing=True, misfire_grace_time=30)
        sched.add_job(_job("audit_head", self.log_audit_head, self._leading), IntervalTrigger(minutes=10),
                      id="audit_head", replace_existing=True, misfire_grace_time=600)
        if s.engine.unmatched_fyi.enabled:
            sched.add_job(_job("unmatched_fyi", self.post_unmatched_fyi, self._leading),
                          IntervalTrigger(seconds=UNMATCHED_FYI_CHECK_S), id="unmatched_fyi", replace_existing=True,
                          misfire_grace_time=UNMATCHED_FYI_CHECK_S, coalesce=True, max_instances=1)
        if s.store_target.backend == "postgresql":  # replicas: steps and tasks a dead one left (bot/loop/orphans.py)
            sched.add_job(_job("recover", self.commands.engine.recover_orphaned, self._leading),
                          IntervalTrigger(seconds=ORPHAN_CHECK_S), id="recover", replace_existing=True,
                          misfire_grace_time=ORPHAN_CHECK_S, coalesce=True, max_instances=1)
        if s.store.retention_days is not None:
            sched.add_job(_job("retention", self.purge_signals, self._leading), IntervalTrigger(hours=1),
                          id="retention", replace_existing=True, misfire_grace_time=3600, coalesce=True)
        for playbook_id in self.core.playbooks.ids:
            for i, schedule in enumerate(self.core.playbooks.get(playbook_id).schedules):
                if not schedule.enabled:
                    continue
                name = scheduled_check_id(playbook_id, i)
                self._checks[name] = (playbook_id, i)
                # A tick missed by more than 5 minutes (the process was down) is skipped, not run late.
                sched.add_job(_job(name, functools.partial(self.run_check, playbook_id, i), self._leading),
                              cron_trigger(schedule.cron, schedule.timezone), id=name, replace_existing=True,
                              misfire_grace_time=CHECK_CATCH_UP_S, coalesce=True, max_instances=1)
        # On every process, leader or not: the one that becomes leader catches up.
        sched.add_job(_job("leadership", self.watch_leadership), IntervalTrigger(seconds=LEADERSHIP_WATCH_S),
                      id="leadership", replace_existing=True, coalesce=True, max_instances=1)
        sched.start()
        self._scheduler = sched

    def job(self, job_id: str) -> Job:
        """A started job by id: ``digest``, ``expire``, ``check:<playbook>:<n>`` for scheduled checks."""
        job = self._scheduler.get_job(job_id) if self._scheduler is not None else None
        if job is None:
            raise KeyError(f"no scheduled job {job_id!r}")
        return job

    async def run_check(self, playbook_id: str, index: int) -> Task | None:
        """The scheduled check's run for the slot that just came, claimed once across replicas."""
        now = datetime.now(UTC)  # APScheduler's clock: the triggers' slots are wall-clock times
        slot = due_slot(self.job(scheduled_check_id(playbook_id, index)).trigger, now,
                        now - timedelta(seconds=CHECK_CATCH_UP_S))
        if slot is None:
            return None
        return await self.commands.run_scheduled(playbook_id, index, slot)

    async def watch_leadership(self) -> None:
        leading = self._leading()
        if leading and not self._led:
            await self.catch_up()
        self._led = leading

    async def catch_up(self) -> None:
        """Run what passed while this process did not lead: for each scheduled check, the latest
        slot since this process started (within ``CHECK_CATCH_UP_S``) that no replica ran; the
        digest, if its time passed within ``DIGEST_CATCH_UP_S`` and today's was not sent."""
        if self._scheduler is None:
            return
        now = self.core.clock()
        for job in self._scheduler.get_jobs():
            if job.id in self._checks:
                since = max(self._started_at, now - timedelta(seconds=CHECK_CATCH_UP_S))
            elif job.id == "digest":
                since = max(self._started_at, now - timedelta(seconds=DIGEST_CATCH_UP_S))
            else:
                continue
            slot = due_slot(job.trigger, now, since)
            if slot is None:
                continue
            log.info("scheduler.catch_up", job=job.id, slot=slot.isoformat())
            try:
                if job.id == "digest":
                    await self.send_digest()
                else:
                    await self.commands.run_scheduled(*self._checks[job.id], slot)
            except Exception:
                log.exception("scheduler.catch_up_failed", job=job.id, slot=slot.isoformat())

    def stop(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None

    async def log_audit_head(self) -> tuple[int, str]:
        """Log the audit chain's head. Shipped logs are the copy outside the store that shows
        records cut off the end of the chain, which the chain alone cannot reveal."""
        seq, digest = await self.store.audit_head()
        # ``head`` in the form ``ooda audit verify --expect-head`` takes.
        log.info("audit.head", seq=seq, hash=digest, head=f"{seq}:{digest}")
        return seq, digest

    async def purge_signals(self) -> int:
        """Apply ``store.retention_days`` to signals that never joined a task."""
        days = self.core.settings.store.retention_days
        if days is None:
            return 0
        before = self.core.clock() - timedelta(days=days)
        count = await self.store.purge_signals(before.isoformat())
        if count:
            log.info("retention.signals_purged", count=count, delivered_before=before.isoformat())
        return count

    async def send_digest(self) -> bool:
        """Post the digest once per day; returns False when today's was already sent."""
        async with self._digest_lock:
            return await self._send_digest()

    async def _send_digest(self) -> bool:
        today = self.core.clock().date().isoformat()
        sent = await self.store.get_setting(f"digest.sent.{today}")
        if sent:
            return False
        _, deliveries = await self.commands.post_digest(self.surfaces)
        if deliveries and all(d.outcome == "failed" for d in deliveries):
            raise DigestUndelivered("; ".join(f"{d.surface}: {d.error}" for d in deliveries))

        async def mark(t: TaskOps) -> None:
            await t.set_setting(f"digest.sent.{today}", True, "scheduler")

        await self.store.transact(mark)
        log.info("digest.sent", day=today)
        return True

    async def post_unmatched_fyi(self) -> list[str]:
        """Tell chat about alert names no playbook matched, each at most once per
        ``engine.unmatched_fyi.min_interval_s`` and only when it was seen again since the last
        notice; returns the names told about."""
        config = self.core.settings.engine.unmatched_fyi
        now = self.core.clock()
        window = timedelta(seconds=config.min_interval_s)
        report = await self.commands.unmatched_signals(since=now - window, limit=200)
        due: list[tuple[UnmatchedAlert, str]] = []
        for alert in report.alerts:
            key = f"unmatched_fyi.{alert.alertname[:100]}"
            told = await self.store.get_setting(key)
            # Each time against its own clock: ``at`` is ours, ``last_seen`` is the store's.
            if told and (now - datetime.fromisoformat(told.value["at"]) < window
                         or alert.last_seen <= datetime.fromisoformat(told.value["last_seen"])):
                continue
            due.append((alert, key))
        texts = [unmatched_fyi_text(alert, config.min_interval_s) for alert, _ in due[:UNMATCHED_FYI_PER_RUN]]
        if len(due) > UNMATCHED_FYI_PER_RUN:
            texts.append(f"FYI: {len(due) - UNMATCHED_FYI_PER_RUN} more alert names matched no playbook in the last "
                         f"{_period(config.min_interval_s)}. `ooda signals --unmatched` lists all.")
        for text in texts:
            for surface in self.surfaces:
                try:
                    await surface.post_notice(config.channel, text)
                except Exception as exc:
                    log.warning("unmatched_fyi.delivery_failed", surface=surface.name, error=str(exc))
        if due:
            marks = {key: {"at": now.isoformat(), "last_seen": alert.last_seen.isoformat()} for alert, key in due}

            async def mark(t: TaskOps) -> None:
                for key, value in marks.items():
                    await t.set_setting(key, value, "scheduler")

            await self.store.transact(mark)
            log.info("unmatched_fyi.posted", names=len(due), notices=len(texts))
        return [alert.alertname for alert, _ in due]

    async def remind_approvers(self) -> list[int]:
        """Nudge the routed channels once about proposals waiting longer than ``engine.reminder_after_s``."""
        after = timedelta(seconds=self.core.settings.engine.reminder_after_s)
        now = self.core.clock()
        reminded = []
        for task in await self.store.tasks_in_states([TaskState.needs_approval.value]):
            key = f"reminded.{task.id}"
            if now - task.updated_at < after or await self.store.get_setting(key):
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

            await self.store.transact(mark)
            reminded.append(task.id)
        return reminded

    async def expire_approvals(self) -> list[int]:
        """Cancel proposals nobody decided on within ``engine.approval_expiry_s``."""
        limit = timedelta(seconds=self.core.settings.engine.approval_expiry_s)
        now = self.core.clock()
        expired = []
        reason = f"expired: no decision within {limit}"
        for task in await self.store.tasks_in_states([TaskState.needs_approval.value]):
            if now - task.updated_at < limit:
                continue
            try:
                await self.store.transact(functools.partial(_expire, task_id=task.id, reason=reason))
            except Exception:
                log.exception("expire.failed", task_id=task.id)
                continue
            expired.append(task.id)
        return expired


async def _expire(t: TaskOps, *, task_id: int, reason: str) -> Task:
    return await t.set_state(task_id, TaskState.needs_approval, TaskState.cancelled, actor="scheduler",
                             reason=reason, outcome=reason)
