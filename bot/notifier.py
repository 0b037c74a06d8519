"""Keeps every chat surface's proposal message in step with the task.

Task events mark the task dirty; one loop posts the proposal the first time and edits the same
message afterwards (with a note saying who did what). A surface that fails does not lose the
proposal: the delivery goes to the outbox in the store and is retried by the scheduler, and the
task stays approvable from the CLI and the API meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
from typing import Protocol

import structlog

from bot import events as ev
from bot.core import Core
from bot.errors import BotError
from bot.events import Event
from bot.evidence_fit import fit_evidence
from bot.ports import ChatSurface
from bot.proposal_view import current_proposal
from bot.proposals import MessageRef
from bot.store import TaskOps
from bot.store_ports import ApprovalReads, OutboxItem, OutboxReads, StepReads, TaskReads, UnitOfWork

log = structlog.get_logger(__name__)

NOTE_EVENTS = {ev.APPROVED, ev.REJECTED, ev.EXECUTED, ev.FAILED, ev.COMPLETED, ev.ESCALATED, ev.CANCELLED,
               ev.UNDONE, ev.PROPOSED_ACTION}
# Events that carry their own sentence for the thread in ``payload["note"]``.
WORDED_EVENTS = {ev.RESOLVED, ev.SIGNALS_REFIRED, ev.REDECIDED, ev.PLAN_STANDS}


def _note(event: Event) -> str | None:
    p = event.payload
    who = p.get("display") or p.get("actor") or "Ooda"
    short = event.name.removeprefix(ev.PREFIX)
    if event.name in WORDED_EVENTS:
        return p.get("note")  # a task closed by its resolution says why in its cancelled note
    if event.name == ev.EXECUTED:
        return f"{p.get('step')} ran ({p.get('tool')}): ok"
    if event.name == ev.FAILED and p.get("step"):
        return f"{p.get('step')} failed ({p.get('tool')}): {p.get('error')}"
    if event.name == ev.UNDONE:
        return f"Undone by {who}: {'; '.join(p.get('steps', []))}"
    if event.name == ev.APPROVED and p.get("edits"):
        edits = ", ".join(f"{name} {old} → {new}" for name, (old, new) in p["edits"].items())
        return f"approved by {who}, with edits: {edits}"
    if event.name in NOTE_EVENTS:
        reason = p.get("reason")
        return f"{short} by {who}" + (f": {reason}" if reason else "")
    return None


class NotifierStore(TaskReads, StepReads, ApprovalReads, OutboxReads, UnitOfWork, Protocol):
    """The store ports the notifier uses: the proposal as it stands, the outbox, and units of work."""


class Notifier:
    def __init__(self, core: Core, surfaces: list[ChatSurface]) -> None:
        self.core = core
        self.store: NotifierStore = core.store
        self.surfaces = surfaces
        self._dirty: dict[int, list[str]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._idle = asyncio.Event()
        self._busy = False
        self._unsubscribe = core.bus.subscribe(ev.PREFIX, self._on_event)

    def _on_event(self, event: Event) -> None:
        if not self.surfaces or event.task_id is None or event.name in {ev.CREATED, ev.SIGNALS_ATTACHED}:
            return
        notes = self._dirty.setdefault(event.task_id, [])
        note = _note(self._named(event))
        if note and event.name != ev.STATE_CHANGED:
            notes.append(note)
        self._wake.set()

    def _named(self, event: Event) -> Event:
        """The event with the person's display name, so a note names them as every message does."""
        actor = event.payload.get("actor")
        person = self.core.identities.by_id(str(actor)) if actor and not event.payload.get("display") else None
        return dataclasses.replace(event, payload={**event.payload, "display": person.display}) if person else event

    def start(self) -> None:
        if self.surfaces:
            self._task = asyncio.create_task(self._run(), name="notifier")

    async def stop(self) -> None:
        self._unsubscribe()
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            self._busy = True
            try:
                while self._dirty:
                    task_id, notes = self._dirty.popitem()
                    try:
                        await self.sync(task_id, "; ".join(notes) or None)
                    except Exception:
                        log.exception("notifier.sync_failed", task_id=task_id)
            finally:
                self._busy = False
                self._idle.set()

    async def wait_idle(self) -> None:
        """Until every task change seen so far was delivered (or sent to the outbox)."""
        while self._task is not None and (self._dirty or self._wake.is_set() or self._busy):
            self._idle.clear()
            await self._idle.wait()

    async def sync(self, task_id: int, note: str | None) -> None:
        """Post or update the proposal of ``task_id`` on every surface; failures go to the outbox."""
        async with self._lock:
            task = await self.store.get_task(task_id)
            if task is None or task.proposal is None:
                return  # nothing to show until the proposal exists
            proposal = fit_evidence(await current_proposal(self.store, task))
            if proposal.shadow and not self.core.settings.shadow.post:
                return  # shadow proposals are only recorded (config shadow.post: false)
            playbook = self.core.playbooks.get(task.playbook_id) if task.playbook_id in self.core.playbooks else None
            messages = list(task.messages)
            refs = {m["surface"]: MessageRef.model_validate(m) for m in messages}
            changed = False
            for surface in self.surfaces:
                try:
                    if surface.name in refs:
                        await surface.update_proposal(refs[surface.name], proposal, note)
                    else:
                        channel = playbook.routing.get(surface.name) if playbook else None
                        ref = await surface.post_proposal(proposal, channel)
                        messages.append(ref.model_dump())
                        changed = True
                    self.core.metrics.chat_deliveries.labels(surface.name, "ok").inc()
                except (BotError, OSError, TimeoutError) as exc:
                    self.core.metrics.chat_deliveries.labels(surface.name, "failed").inc()
                    log.warning("chat.delivery_failed", surface=surface.name, task_id=task_id, error=str(exc))
                    await self.store.transact(functools.partial(
                        _add_outbox, task_id=task_id, surface=surface.name, note=note, error=str(exc)))
            if changed:
                await self.store.transact(lambda t: t.save_messages(task_id, messages))

    async def retry_outbox(self) -> int:
        """Deliver what failed before; returns how many deliveries are still waiting."""
        items = await self.store.outbox_items()
        waiting = 0
        for item in items:
            before = len(await self._failures(item.task_id))
            await self._drop(item.id)
            await self.sync(item.task_id, item.note)
            if len(await self._failures(item.task_id)) > before:
                waiting += 1
        return waiting

    async def _failures(self, task_id: int) -> list[OutboxItem]:
        return [i for i in await self.store.outbox_items(1000) if i.task_id == task_id]

    async def _drop(self, outbox_id: int) -> None:
        async def unit(t: TaskOps) -> None:
            await t.remove_outbox(outbox_id)

        await self.store.transact(unit)


async def _add_outbox(t: TaskOps, *, task_id: int, surface: str, note: str | None, error: str) -> None:
    await t.add_outbox(task_id, surface, note, error)
