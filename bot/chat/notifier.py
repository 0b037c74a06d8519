"""Keeps every chat surface's proposal message in step with the task.

Task events mark the task dirty; one loop posts the proposal the first time and edits the same
message afterwards (with a note saying who did what). A surface that fails does not lose the
proposal or a note: the delivery goes to the outbox in the store, later ones queue behind it, and
all are delivered in order when the surface is back (see ``Notifier``); the task stays
approvable from the CLI and the API meanwhile.

Several replicas on one store share one outbox, and any of them may deliver to any surface: each
replica's notifier handles the events of its own process, and whichever replica runs next drains
what waits. To keep "each delivery once, in order per surface" true across processes, a replica
delivers to a surface only while it holds that surface's lease in the store (``lease``: an
advisory lock per surface on PostgreSQL, which PostgreSQL releases when the holder dies). Under the
lease it drains the surface's outbox first, in order, then makes its own deliveries, or queues
them if something still waits; it reads the task's message reference afresh, so a task is posted
once however many replicas have news of it, and every later delivery edits that one message. The
reference is saved with a compare-and-set all the same, so that two posts could never leave the
task pointing at two messages. A delivery the surface took just before its replica died, and that
the replica did not record yet, is made again by the next holder (one copy too many). News lives
in the memory of the process whose event it is until it is delivered or queued: the proposal of
a task whose replica died before posting it is posted by the leader's outbox retry, which posts
every open task that has no message on a surface; a thread note lost that way is not posted (the
message shows the task as it stands at its next update).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import time
from typing import Any, Protocol

import structlog

from bot.chat.evidence_fit import fit_evidence
from bot.chat.proposal_view import current_proposal
from bot.errors import BotError
from bot.loop.core import Core
from bot.model import events as ev
from bot.model.events import Event
from bot.model.proposals import MessageRef
from bot.model.tasks import ATTENTION_STATES, TaskState
from bot.ports import ChatSurface
from bot.store.ports import ApprovalReads, Leases, OutboxItem, OutboxReads, StepReads, TaskReads, UnitOfWork
from bot.store.protocol import TaskOps

log = structlog.get_logger(__name__)

NOTE_EVENTS = {ev.APPROVED, ev.REJECTED, ev.EXECUTED, ev.FAILED, ev.COMPLETED, ev.ESCALATED, ev.CANCELLED,
               ev.UNDONE, ev.PROPOSED_ACTION}
# Events that carry their own sentence for the thread in ``payload["note"]``.
WORDED_EVENTS = {ev.RESOLVED, ev.SIGNALS_REFIRED, ev.REDECIDED, ev.PLAN_STANDS}
OUTBOX_PAGE = 1000
BACKOFF_FIRST_S = 2.0
BACKOFF_MAX_S = 60.0


def _note(event: Event) -> str | None:
    p = event.payload
    if p.get("from") == TaskState.running.value:
        return None  # the outcome of planning: the proposal message itself shows it
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


class NotifierStore(TaskReads, StepReads, ApprovalReads, OutboxReads, Leases, UnitOfWork, Protocol):
    """The store ports the notifier uses: the proposal as it stands, the outbox, the surfaces'
    leases, and units of work."""


class Notifier:
    """Delivers proposals and thread notes in the order things happened, each once.

    A delivery that fails goes to the outbox in the store, and from then on every later delivery
    for that surface queues behind it instead of overtaking it, until the outbox is drained in
    order: after a chat outage or a storm of 429s the thread notes and new proposals that were
    due meanwhile go out in the order they happened. A row is deleted only once the surface took
    it (a crash between the two repeats that one delivery). Other surfaces go on meanwhile. A
    failed surface is tried again after a backoff (2 s, doubling to a minute) and by the
    scheduler's retry every 30 s. While nothing fails, no delivery costs a write. Every delivery
    to a surface is made under that surface's lease (see the module's docstring).
    """

    def __init__(self, core: Core, surfaces: list[ChatSurface]) -> None:
        self.core = core
        self.store: NotifierStore = core.store
        self.surfaces = surfaces
        self._pending: dict[int, list[str]] = {}  # task id -> notes, in the order the events came
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._idle = asyncio.Event()
        self._busy = False
        self._backoff: dict[str, tuple[float, float]] = {}  # surface -> (retry at, delay), after a failure
        self._unsubscribe = core.bus.subscribe(ev.PREFIX, self._on_event)

    def _on_event(self, event: Event) -> None:
        if not self.surfaces or event.task_id is None or event.name in {ev.CREATED, ev.SIGNALS_ATTACHED}:
            return
        notes = self._pending.setdefault(event.task_id, [])
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
        self._unsubscribe = lambda: None  # stopping twice is stopping once
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
                while True:
                    # Oldest first: a dict keeps the order tasks first changed in (popitem took
                    # the newest, which posted a storm's proposals in reverse order).
                    batch, self._pending = self._pending, {}
                    try:
                        await self._deliver_all([(task_id, "; ".join(notes) or None)
                                                 for task_id, notes in batch.items()], force=False)
                    except Exception:
                        log.exception("notifier.sync_failed", tasks=list(batch))
                    if not self._pending:
                        break
            finally:
                self._busy = False
                self._idle.set()

    async def wait_idle(self) -> None:
        """Until every task change seen so far was delivered (or waits in the outbox)."""
        while self._task is not None and (self._pending or self._wake.is_set() or self._busy):
            self._idle.clear()
            await self._idle.wait()

    async def sync(self, task_id: int, note: str | None) -> None:
        """Post or update the proposal of ``task_id`` on every surface, behind whatever waits."""
        await self._deliver_all([(task_id, note)], force=False)

    async def retry_outbox(self) -> int:
        """Deliver what waits, whatever the backoff, then post the open tasks no process posted on a
        surface; returns how many deliveries still wait."""
        await self._deliver_all([], force=True)
        return len(await self.store.outbox_items(OUTBOX_PAGE))

    async def _deliver_all(self, changes: list[tuple[int, str | None]], *, force: bool) -> None:
        async with self._lock:
            if force:
                await self._forget_unknown_surfaces()
            for surface in self.surfaces:
                async with self.store.lease(surface.name):
                    await self._deliver_to(surface, changes, force=force)

    async def _deliver_to(self, surface: ChatSurface, changes: list[tuple[int, str | None]], *,
                          force: bool) -> None:
        """What waits for ``surface`` first, then ``changes``; the caller holds the surface's lease."""
        blocked = await self._drain(surface, force=force)
        if force and not blocked:
            blocked = await self._post_unposted(surface)
        for task_id, note in changes:
            if blocked:
                await self._queue(surface.name, task_id, note, "queued behind an earlier delivery that failed")
                continue
            error = await self._deliver(surface, task_id, note)
            if error is not None:
                await self._queue(surface.name, task_id, note, error)
                blocked = True
                self._back_off(surface.name)

    async def _drain(self, surface: ChatSurface, *, force: bool) -> bool:
        """Deliver the surface's outbox in order; True while deliveries for it still wait."""
        items = await self._waiting(surface.name)
        if not items:
            return False
        at, _ = self._backoff.get(surface.name, (0.0, 0.0))
        if not force and at > time.monotonic():
            return True
        # A row without a note only refreshes the message: a later row of the same thread does that too.
        last = {i.task_id: i.id for i in items}
        for item in items:
            if item.note is None and last[item.task_id] != item.id:
                await self._done(item.id)
                continue
            error = await self._deliver(surface, item.task_id, item.note)
            if error is not None:
                await self.store.transact(functools.partial(_failed, outbox_id=item.id, error=error))
                self._back_off(surface.name)
                return True
            await self._done(item.id)
            self._backoff.pop(surface.name, None)
        return bool(await self._waiting(surface.name))

    async def _post_unposted(self, surface: ChatSurface) -> bool:
        """Post the open tasks that have a proposal but no message on ``surface``: their news lived
        only in a process that died before posting. True when the surface failed meanwhile."""
        for task in await self.store.tasks_in_states(sorted(s.value for s in ATTENTION_STATES)):
            if task.proposal is None or any(m.get("surface") == surface.name for m in task.messages):
                continue
            log.info("chat.posting_unposted", surface=surface.name, task_id=task.id)
            error = await self._deliver(surface, task.id, None)
            if error is not None:
                await self._queue(surface.name, task.id, None, error)
                self._back_off(surface.name)
                return True
        return False

    async def _waiting(self, surface: str) -> list[OutboxItem]:
        return [i for i in await self.store.outbox_items(OUTBOX_PAGE) if i.surface == surface]

    async def _forget_unknown_surfaces(self) -> None:
        """Drop what waits for a surface no longer configured: nothing would ever deliver it."""
        known = {s.name for s in self.surfaces}
        for item in await self.store.outbox_items(OUTBOX_PAGE):
            if item.surface not in known:
                await self._done(item.id)

    async def _queue(self, surface: str, task_id: int, note: str | None, error: str) -> None:
        await self.store.transact(functools.partial(_add_outbox, task_id=task_id, surface=surface, note=note,
                                                    error=error))

    async def _deliver(self, surface: ChatSurface, task_id: int, note: str | None) -> str | None:
        """Post or update one task's proposal on one surface; the error when the surface failed."""
        task = await self.store.get_task(task_id)
        if task is None or task.proposal is None:
            return None  # nothing to show until the proposal exists
        proposal = fit_evidence(await current_proposal(self.core.store, task))
        ref = next((MessageRef.model_validate(m) for m in task.messages if m["surface"] == surface.name), None)
        try:
            if ref is None:
                playbook = self.core.playbooks.get(task.playbook_id) if task.playbook_id in self.core.playbooks \
                    else None
                ref = await surface.post_proposal(proposal, playbook.routing.get(surface.name) if playbook else None)
                kept = MessageRef.model_validate(await self.store.transact(
                    functools.partial(_save_ref, task_id=task_id, ref=ref.model_dump())))
                if kept != ref:  # only if a lease was lost while posting (its connection broke)
                    log.warning("chat.second_post", surface=surface.name, task_id=task_id,
                                kept=kept.message_id, orphaned=ref.message_id)
                ref = kept
                if note:  # the first post shows the task as it stands; the note says who did what
                    await surface.update_proposal(ref, proposal, note)
            else:
                await surface.update_proposal(ref, proposal, note)
        except (BotError, OSError, TimeoutError) as exc:
            self.core.metrics.chat_deliveries.labels(surface.name, "failed").inc()
            log.warning("chat.delivery_failed", surface=surface.name, task_id=task_id, error=str(exc))
            return str(exc) or type(exc).__name__
        self.core.metrics.chat_deliveries.labels(surface.name, "ok").inc()
        return None

    def _back_off(self, surface: str) -> None:
        _, delay = self._backoff.get(surface, (0.0, BACKOFF_FIRST_S / 2))
        delay = min(delay * 2, BACKOFF_MAX_S)
        self._backoff[surface] = (time.monotonic() + delay, delay)
        asyncio.get_running_loop().call_later(delay, self._wake.set)

    async def _done(self, outbox_id: int) -> None:
        async def unit(t: TaskOps) -> None:
            await t.remove_outbox(outbox_id)

        await self.store.transact(unit)


async def _save_ref(t: TaskOps, *, task_id: int, ref: dict[str, Any]) -> dict[str, Any]:
    """Save the task's message on ``ref``'s surface unless one is saved already; returns the one kept.

    A compare-and-set: transactions are serialised (the store's write lock), so of two first posts
    the first one saved stays the task's message.
    """
    task = await t.get_task(task_id)
    saved = next((m for m in task.messages if m.get("surface") == ref["surface"]), None)
    if saved is not None:
        return saved
    await t.save_messages(task_id, [*task.messages, ref])
    return ref


async def _failed(t: TaskOps, *, outbox_id: int, error: str) -> None:
    await t.outbox_failed(outbox_id, error)


async def _add_outbox(t: TaskOps, *, task_id: int, surface: str, note: str | None, error: str) -> None:
    await t.add_outbox(task_id, surface, note, error)
