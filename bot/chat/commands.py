"""The core commands every surface calls: approve, reject, undo, pause, resume, run, status, ...

Slack buttons, Discord buttons, ``/ops`` on both, the HTTP API and the CLI all end here, so the
policy sees one actor model and one set of rules. Refusals raise ``UserError`` subclasses whose
text is written for the person who clicked (``Forbidden``, ``Conflict``, ``UnknownTask``,
``ConfirmationRequired``).

Who may pull the kill switch: anyone with a role, because stopping is always safe. Who may
release it: the ``admin`` or ``operator`` role.

Refused commands are counted (``ooda_command_refusals_total{command,status}``) and logged as one
``command.refused`` line. Only a policy refusal of an existing task (403 ``Forbidden``: not an
approver, separation of duties, a step the policy denies, the kill switch) is also written to the
audit log, on that task: the audit rules ask for every approval decision with its actor and
reasoning, and "zero unauthorized actions" is shown by the attempts that were refused. Everything
else (unknown task, already decided, a bad edit, a confirmation still to type, a command on no
task) is a person's mistake or a race, not a decision, and an append-only log must not grow by
whatever a client cares to send.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import structlog

from bot.audit.chain import AuditEntry
from bot.audit.redaction import redact, redact_text
from bot.chat import wording
from bot.chat.digest import build_digest
from bot.chat.digest_post import Delivery, deliver_digest
from bot.chat.digest_text import Digest, DigestSection
from bot.chat.proposal_view import current_proposal
from bot.chat.results import ActionResult, Status, UnmatchedAlert, UnmatchedReport
from bot.errors import Forbidden, UnknownTask, UserError
from bot.loop.core import KILL_SWITCH_KEY, Core
from bot.loop.replay import Replayer, ReplayResult
from bot.loop.shadow import set_shadow
from bot.loop.shadow_report import ShadowRow, digest_lines, shadow_report
from bot.model import events as ev
from bot.model.events import Event
from bot.model.proposals import Decision, Proposal
from bot.model.tasks import ATTENTION_STATES, MAX_TASK_ID, Task, TaskState
from bot.playbooks.cron import cron_trigger
from bot.playbooks.schema import load_playbook_texts
from bot.policy.identity import Actor
from bot.policy.rules import autonomy_for, describe_policy, explain_decision
from bot.ports import ChatSurface
from bot.store.ports import (
    ApprovalReads,
    EventReads,
    KillSwitch,
    SettingReads,
    SignalReads,
    StepReads,
    TaskReads,
    UnitOfWork,
)
from bot.store.protocol import TaskOps
from bot.store.slot_claims import claim_slot

if TYPE_CHECKING:
    from bot.loop.approvals import Approvals
    from bot.loop.engine import Engine
    from bot.loop.executor import Executor

log = structlog.get_logger(__name__)

RESUME_ROLES = frozenset({"admin", "operator"})
SCHEDULER = "scheduler"  # the requester of scheduled checks
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def scheduled_check_id(playbook_id: str, index: int) -> str:
    """The scheduler's job id of a playbook's ``schedules[index]``, and the name its slots are claimed by."""
    return f"check:{playbook_id}:{index}"


def _already_approved(task_id: int, actor: Actor, when: str, proposal: Proposal) -> ActionResult:
    """The answer to a click that repeats this person's approval: it counted nothing new."""
    log.info("task.approve_repeated", task_id=task_id, actor=actor.id)
    return ActionResult(message=f"You already approved task #{task_id} {when}. {wording.approvals_line(proposal)}",
                        proposal=proposal, executed=False)


def audited_refusals(command: str) -> Callable[[F], F]:
    """Count and log a refused command (who tried what, and why not), audit a policy refusal of a
    task (see the module docstring), then re-raise."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        async def inner(self: Commands, *args: Any, **kwargs: Any) -> Any:
            try:
                return await fn(self, *args, **kwargs)
            except UserError as exc:
                actor = next((a for a in (*args, *kwargs.values()) if isinstance(a, Actor)), None)
                task_id = args[0] if args and isinstance(args[0], int) else None
                await self._record_refusal(command, actor, task_id, exc)
                raise

        return inner  # type: ignore[return-value]

    return wrap


_DURATION = re.compile(r"^(\d{1,6})([mhdw])$")
_UNIT_SECONDS = {"m": 60, "h": 3600, "d": 86_400, "w": 604_800}
MAX_LOOKBACK = timedelta(days=3650)


def parse_since(text: str, now: datetime) -> datetime:
    """A point in time from an ISO 8601 time or a duration back from ``now`` (``30m``, ``24h``, ``7d``, ``2w``).

    Raises:
        UserError: naming the ``since`` parameter and the forms it takes.
    """
    value = text.strip()
    duration = _DURATION.match(value.lower())
    try:
        if duration:
            since = now - timedelta(seconds=int(duration.group(1)) * _UNIT_SECONDS[duration.group(2)])
        else:
            since = datetime.fromisoformat(value)
            since = since if since.tzinfo else since.replace(tzinfo=UTC)  # a time without a zone is UTC
    except (ValueError, OverflowError):
        raise UserError(f"since: give an ISO 8601 time such as 2026-01-05T09:00:00Z or a duration such as "
                        f"30m, 24h, 7d, 2w; got {text[:50]!r}") from None
    if since < now - MAX_LOOKBACK:
        raise UserError(f"since: at most {MAX_LOOKBACK.days} days back; got {text[:50]!r}")
    return since.astimezone(UTC)


class CommandStore(SignalReads, TaskReads, StepReads, ApprovalReads, EventReads, SettingReads, UnitOfWork,
                   Protocol):
    """The store ports the commands use: tasks and what hangs off them, unmatched alerts, the digest,
    and units of work."""


class Commands:
    def __init__(self, core: Core, engine: Engine, approvals: Approvals, executor: Executor) -> None:
        self.core = core
        self.store: CommandStore = core.store
        self.engine = engine
        self.approvals = approvals
        self.executor = executor
        self.refusals = core.metrics.command_refusals
        self.surfaces: list[ChatSurface] = []  # the App's, once built: the digest is posted on them
        self._background: set[asyncio.Task[Any]] = set()

    async def _record_refusal(self, command: str, actor: Actor | None, task_id: int | None, exc: UserError) -> None:
        self.refusals.labels(command, str(exc.status)).inc()
        reason = redact_text(str(exc))
        log.info("command.refused", command=command, status=exc.status, task_id=task_id,
                 actor=actor.id if actor else None, reason=reason)
        if not isinstance(exc, Forbidden) or task_id is None or not 0 < task_id < 2**63:
            return  # 2**63: past SQLite's integers, so surely no task
        if await self.store.get_task(task_id) is None:
            return
        entry = AuditEntry(actor.id if actor else "unknown", "command.refused", task_id,
                           {"command": command, "reason": reason, "via": actor.via if actor else None})

        async def unit(t: TaskOps) -> None:
            t.audit(entry)

        try:
            await self.store.transact(unit)
        except Exception:
            log.exception("audit.refusal_not_recorded", command=command)

    async def _task(self, task_id: int) -> Task:
        # Chat and the CLI parse ids too: an id past SQLite's integer range exists nowhere, and must
        # not reach a statement (it would fail it, and the batch it shares with other requests).
        task = await self.store.get_task(task_id) if 1 <= task_id <= MAX_TASK_ID else None
        if task is None:
            raise UnknownTask(f"there is no task {task_id}; list tasks with `ooda tasks` or /ops tasks")
        return task

    @audited_refusals("approve")
    async def approve(self, task_id: int, actor: Actor, *, edits: dict[str, dict[str, Any]] | None = None,
                      confirmation: str | None = None, override_dry_run: str | None = None) -> ActionResult:
        task = await self._task(task_id)
        proposal = await current_proposal(self.core.store, task)
        mine = next((a for a in await self.core.store.approvals_of_task(task.id)
                     if a.verdict == "approve" and a.actor == actor.id), None)
        if mine is not None and not edits and task.state is TaskState.needs_approval:
            # A second click is not a second approval: say so, with when the first one was
            # (unless it would be refused now: the steps still waiting may need other roles).
            await self.approvals.check_may_approve(task, actor)
            return _already_approved(task.id, actor, f"at {wording.clock(mine.created_at)}", proposal)
        task, started, repeated = await self.approvals.approve(task, proposal, actor, edits, confirmation,
                                                               override_dry_run)
        if repeated and not edits:
            # The same person clicked on two replicas (or twice) at the same moment: the other
            # click recorded it; this one counted nothing new and says so.
            return _already_approved(task.id, actor, "a moment ago", await current_proposal(self.core.store, task.id))
        if edits and not started:
            # The steps wait for more approvers: their dry run must show the edited params.
            await self.engine.planner.refresh_dry_runs(task.id, set(edits))
        after = await current_proposal(self.core.store, task.id)
        if started:
            await self.engine.submit(task.id)
            message = f"Approved by {actor.display}: task {task.id} is executing."
        else:
            message = f"Approval by {actor.display} recorded for task {task.id}. {wording.approvals_line(after)}"
        log.info("task.approve", task_id=task.id, actor=actor.id, started=started)
        return ActionResult(message=message, proposal=after, executed=started)

    async def may_approve(self, task_id: int, actor: Actor) -> None:
        """Raise what ``approve`` would refuse ``actor`` with, without approving (before a form opens)."""
        await self.approvals.check_may_approve(await self._task(task_id), actor)

    async def may_reject(self, task_id: int, actor: Actor) -> None:
        """Raise what ``reject`` would refuse ``actor`` with, before the form asking for the reason."""
        await self.approvals.check_may_reject(await self._task(task_id), actor)

    @audited_refusals("reject")
    async def reject(self, task_id: int, actor: Actor, reason: str) -> ActionResult:
        task = await self.approvals.reject(await self._task(task_id), actor, reason)
        return ActionResult(message=f"Rejected by {actor.display}: {reason}",
                            proposal=await current_proposal(self.store, task))

    @audited_refusals("undo")
    async def undo(self, task_id: int, actor: Actor) -> ActionResult:
        task = await self._task(task_id)
        if (await self.core.kill_switch()).on:
            raise Forbidden("the kill switch is on: undo is a write too; resume first")
        proposal = await current_proposal(self.store, task)
        allowed = set(proposal.approver_roles) | RESUME_ROLES
        if not actor.has_any(allowed):
            raise Forbidden(f"undo needs one of the roles {', '.join(sorted(allowed))}; "
                            f"{actor.display} has {', '.join(sorted(actor.roles)) or 'none'}")
        task = await self.executor.undo(task, actor)
        return ActionResult(message=task.outcome or f"Undone by {actor.display}",
                            proposal=await current_proposal(self.core.store, task), executed=True)

    @audited_refusals("retry")
    async def retry(self, task_id: int, actor: Actor) -> ActionResult:
        """Decide an escalated task again under the policy of now (bot/chat/retry.py)."""
        from bot.chat.retry import retry

        task = await retry(self.core, self.executor, await self._task(task_id), actor)
        return ActionResult(message=f"Retried by {actor.display}: task {task.id} is now "
                                    f"{task.state.value.replace('_', ' ')}" + (f" ({task.outcome})" if task.outcome
                                                                               and not task.state.is_open else ""),
                            proposal=await current_proposal(self.core.store, task),
                            executed=task.state is TaskState.completed)

    @audited_refusals("pause")
    async def pause(self, actor: Actor, reason: str = "") -> Status:
        if not actor.roles:
            raise Forbidden(f"{actor.display} has no role in Ooda's config, so cannot pull the kill switch")
        await self._set_kill_switch(actor, True, reason)
        return await self.status()

    @audited_refusals("resume")
    async def resume(self, actor: Actor) -> Status:
        if not actor.has_any(RESUME_ROLES):
            raise Forbidden(f"resuming needs the role admin or operator; {actor.display} has "
                            f"{', '.join(sorted(actor.roles)) or 'none'}")
        await self._set_kill_switch(actor, False, "")
        return await self.status()

    async def _set_kill_switch(self, actor: Actor, on: bool, reason: str) -> None:
        value = KillSwitch(on=on, by=actor.display, reason=reason).as_setting()

        async def unit(t: TaskOps) -> None:
            await t.set_setting(KILL_SWITCH_KEY, value, actor.id)
            t.audit(AuditEntry(actor.id, "kill_switch.on" if on else "kill_switch.off", None,
                               {"reason": reason, "via": actor.via}))
            t.event(Event(ev.KILL_SWITCH, None, value))

        await self.store.transact(unit)
        self.core.metrics.kill_switch.set(1 if on else 0)
        log.warning("kill_switch.changed", on=on, actor=actor.id, reason=reason)

    @audited_refusals("run_playbook")
    async def run_playbook(self, playbook_id: str, args: dict[str, str], actor: Actor) -> Task:
        if not actor.roles:
            raise Forbidden(f"{actor.display} has no role in Ooda's config, so cannot run playbooks")
        playbook = self.core.playbooks.get(playbook_id)
        resolved = playbook.resolve_args(args)
        key = f"{playbook.group_key(resolved)}#manual"
        title = f"{playbook.id} run by {actor.display}"

        async def unit(t: TaskOps) -> Task:
            return await t.create_task(
                playbook_id=playbook.id, playbook_version=playbook.version, group_key=key, title=title,
                environment=resolved.get("env", self.core.environment), severity="info", requester=actor.id,
                args=resolved, signal_ids=[], last_signal_at=None,
            )

        task = await self.store.transact(unit)
        await self.engine.submit(task.id)
        return task

    async def run_scheduled(self, playbook_id: str, index: int, slot: datetime | None = None) -> Task | None:
        """One tick of the playbook's ``schedules[index]``: a run as ``ooda run`` would start it,
        requested by the scheduler. None when skipped because the previous run of the same args
        is still open (or waits for a person), so ticks do not pile up proposals.

        With ``slot`` (the time the tick was due), the run claims that slot in the transaction
        that records it (bot/store/slot_claims.py), so a slot runs once across replicas: None
        when another replica ran it already.
        """
        playbook = self.core.playbooks.get(playbook_id)
        resolved = playbook.resolve_args(playbook.schedules[index].args)
        key = f"{playbook.group_key(resolved)}#scheduled"

        async def unit(t: TaskOps) -> Task | str:
            if slot is not None and not await claim_slot(t, scheduled_check_id(playbook_id, index), slot):
                return "another replica ran this slot"
            latest = await t.latest_task_for_group(key)
            if latest is not None and latest[0].state in ATTENTION_STATES:
                return "the previous run is still open"
            return await t.create_task(
                playbook_id=playbook.id, playbook_version=playbook.version, group_key=key,
                title=f"{playbook.id} scheduled check", environment=resolved.get("env", self.core.environment),
                severity="info", requester=SCHEDULER, args=resolved, signal_ids=[], last_signal_at=None,
            )

        task = await self.store.transact(unit)
        if isinstance(task, str):
            log.info("schedule.skipped", playbook=playbook_id, schedule=index,
                     slot=slot.isoformat() if slot else None, reason=task)
            return None
        await self.engine.submit(task.id)
        return task

    @audited_refusals("replay")
    async def replay(self, files: dict[str, str], actor: Actor, *, task_ids: list[int] | None = None,
                     last: int = 20) -> list[ReplayResult]:
        """Replay past tasks against playbooks given as YAML text (see bot/loop/replay.py).

        Raises:
            ConfigError: the playbooks do not load, one ``file:line: field: problem`` each.
            UnknownTask: a named task does not exist.
        """
        registry = self.core.gateway.registry
        known = {name: registry.get(name).params_model for name in registry.names()}
        playbooks = load_playbook_texts({Path(name): text for name, text in files.items()}, known)
        if task_ids:
            tasks = []
            for task_id in task_ids:
                task = await self.store.get_task(task_id)
                if task is None:
                    raise UnknownTask(f"there is no task {task_id}; list tasks with `ooda tasks --all`")
                tasks.append(task)
        else:
            tasks = await self.store.list_tasks(open_only=False, limit=last, playbook_ids=playbooks.ids)
        return await Replayer(self.core).replay(playbooks, tasks, actor.id)

    async def status(self) -> Status:
        paused = await self.core.kill_switch()
        open_tasks = await self.store.list_tasks(open_only=True, limit=1000)
        since = (self.core.clock() - timedelta(days=1)).isoformat()
        failed = [t for t in await self.store.tasks_since(since)
                  if t.state in (TaskState.failed_terminal, TaskState.escalated_to_human)]
        auto = autonomy_for(self.core.policy, environment=self.core.environment, kill_switch=paused.on)
        return Status(
            paused=paused.on, paused_by=paused.by if paused.on else None,
            paused_reason=paused.reason if paused.on else None,
            environment=self.core.environment, autonomy_cap=str(auto.level),
            open_tasks=len(open_tasks), needs_approval=sum(t.state is TaskState.needs_approval for t in open_tasks),
            recent_failures=[f"#{t.id} {t.playbook_id}: {t.outcome or t.state.value}" for t in failed[-5:]],
            scheduled_checks=self._scheduled_checks(),
        )

    def _scheduled_checks(self) -> list[str]:
        now, checks = self.core.clock(), []
        for playbook_id in self.core.playbooks.ids:
            for schedule in self.core.playbooks.get(playbook_id).schedules:
                upcoming = cron_trigger(schedule.cron, schedule.timezone).get_next_fire_time(None, now)
                when = upcoming.isoformat(timespec="minutes") if upcoming else "never"
                run = " ".join([playbook_id, *(f"{k}={v}" for k, v in schedule.args.items())])
                if not schedule.enabled:
                    when = "off (enabled: false in the playbook)"
                checks.append(f"{run} ({schedule.cron} {schedule.timezone}): next {when}")
        return checks

    async def list_tasks(self, *, open_only: bool = True, limit: int = 20) -> list[Task]:
        return await self.store.list_tasks(open_only=open_only, limit=limit)

    async def show(self, task_id: int) -> Proposal:
        return await current_proposal(self.store, await self._task(task_id))

    async def digest(self, *, day: date | None = None, chart: bool = False) -> Digest:
        """The digest of ``day`` (a calendar day in the digest's time zone) or of the 24 hours to now."""
        config = self.core.settings.digest
        size = (config.chart.width_px, config.chart.height_px, config.chart.dpi) if chart else None
        digest = await build_digest(self.core.store, now=self.core.clock(), zone=config.timezone, day=day, chart=size)
        # Shadow playbooks over the same 24 hours: what they would have done, beside what people did.
        until = digest.figures.days[-1].end if digest.figures.days else self.core.clock()
        lines = digest_lines(await shadow_report(self.core.store, self.core.policy, since=until - timedelta(days=1),
                                                 now=until))
        if lines:
            digest.sections.append(DigestSection("Shadow playbooks", lines))
        return digest

    async def post_digest(self, surfaces: list[ChatSurface] | None = None) -> tuple[Digest, list[Delivery]]:
        """Post the digest of the 24 hours to now on every surface (or ``surfaces``), into its digest
        channel, now."""
        digest = await self.digest(chart=self.core.settings.digest.chart.enabled)
        targets = self.surfaces if surfaces is None else surfaces
        return digest, await deliver_digest(targets, self.core.settings.digest, digest)

    async def shadow_report(self, days: int) -> list[ShadowRow]:
        now = self.core.clock()
        return await shadow_report(self.core.store, self.core.policy, since=now - timedelta(days=days), now=now)

    async def set_shadow(self, playbook_id: str, on: bool, actor: Actor) -> dict[str, bool]:
        """Shadow mode on or off for a loaded playbook (bot/loop/shadow.py); admins and operators only."""
        if playbook_id not in self.core.playbooks:
            raise UserError(f"there is no playbook {playbook_id!r}; the loaded ones are "
                            f"{', '.join(self.core.playbooks.ids)}")
        if not actor.has_any(RESUME_ROLES):
            raise Forbidden(f"shadow mode is switched by the roles admin or operator; {actor.display} has "
                            f"{', '.join(sorted(actor.roles)) or 'none'}")
        return await set_shadow(self.core.store, actor, playbook_id, on)
    def post_digest_soon(self) -> tuple[list[tuple[str, str | None]], asyncio.Task[Any]]:
        """``post_digest`` in the background, for chat commands that must answer within seconds
        (drawing the chart and posting it take longer); returns (surface, channel) pairs it goes
        to, and the job (tests await it; a failure is logged, like a scheduled job's)."""

        async def post() -> None:
            try:
                await self.post_digest()
            except Exception:
                log.exception("digest.post_failed")

        job = asyncio.get_running_loop().create_task(post())
        self._background.add(job)
        job.add_done_callback(self._background.discard)
        return [(s.name, self.core.settings.digest.channel_for(s.name)) for s in self.surfaces], job

    async def drain(self) -> None:
        """Wait for background posts (at stop, before the store and the surfaces close)."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    async def unmatched_signals(self, *, since: str | datetime = "24h", limit: int = 100) -> UnmatchedReport:
        """The alert names no playbook matched since a time, most alerts first: which playbooks
        to write next.

        Args:
            since: an ISO 8601 time, a duration back from now (``24h``, ``7d``) or a datetime.
            limit: at most this many alert names.

        Raises:
            UserError: ``since`` is neither a time nor a duration.
        """
        start = parse_since(since, self.core.clock()) if isinstance(since, str) else since.astimezone(UTC)
        rows, names = await self.store.unmatched_signals(start.isoformat(), limit)
        # Labels are the alert's own text, read by people in chat and in the console: no secret
        # or personal data that a rule author templated into one goes further than the store.
        alerts = [UnmatchedAlert.model_validate({**asdict(row), "example_labels": redact(row.example_labels)})
                  for row in rows]
        return UnmatchedReport(since=start, names=names, alerts=alerts)

    async def explain(self, task_id: int) -> str:
        proposal = await self.show(task_id)
        lines = [f"Task {task_id} ({proposal.playbook_id}), environment {proposal.environment}, "
                 f"risk {proposal.risk.score} ({proposal.risk.band.value})"]
        for step in proposal.steps:
            lines.append(f"- {step.name} [{step.tool}, {step.category.value}]: "
                         + explain_decision(Decision.model_validate(step.decision)))
        return "\n".join(lines)

    def describe_policy(self) -> str:
        return describe_policy(self.core.policy)
