"""The core commands every surface calls: approve, reject, undo, pause, resume, run, status, ...

Slack buttons, Discord buttons, ``/ops`` on both, the HTTP API and the CLI all end here, so the
policy sees one actor model and one set of rules. Refusals raise ``UserError`` subclasses whose
text is written for the person who clicked (``Forbidden``, ``Conflict``, ``UnknownTask``,
``ConfirmationRequired``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from bot.identity import Actor
from bot.proposals import Proposal
from bot.tasks import Task


class ActionResult(BaseModel):
    """What a command did, worded for the person who asked, plus the proposal as it now stands."""

    message: str
    proposal: Proposal | None = None
    executed: bool = False


class Status(BaseModel):
    paused: bool
    paused_by: str | None = None
    paused_reason: str | None = None
    environment: str
    autonomy_cap: str
    open_tasks: int
    needs_approval: int
    recent_failures: list[str] = []


class Commands:
    """Implemented in the core (see bot/engine.py); this class is the public entry point.

    Methods:
        approve(task_id, actor, *, edits=None, confirmation=None) -> ActionResult
            ``edits`` maps step name -> {param: new value}; validated against the playbook's bounds.
        reject(task_id, actor, reason) -> ActionResult
        undo(task_id, actor) -> ActionResult
        pause(actor, reason) -> Status            (kill switch on)
        resume(actor) -> Status                   (kill switch off)
        run_playbook(playbook_id, args, actor) -> Task
        status() -> Status
        list_tasks(*, open_only=True, limit=20) -> list[Task]
        show(task_id) -> Proposal
        digest(*, since=None) -> str
    """

    async def approve(
        self,
        task_id: int,
        actor: Actor,
        *,
        edits: dict[str, dict[str, Any]] | None = None,
        confirmation: str | None = None,
    ) -> ActionResult:
        raise NotImplementedError

    async def reject(self, task_id: int, actor: Actor, reason: str) -> ActionResult:
        raise NotImplementedError

    async def undo(self, task_id: int, actor: Actor) -> ActionResult:
        raise NotImplementedError

    async def pause(self, actor: Actor, reason: str = "") -> Status:
        raise NotImplementedError

    async def resume(self, actor: Actor) -> Status:
        raise NotImplementedError

    async def run_playbook(self, playbook_id: str, args: dict[str, str], actor: Actor) -> Task:
        raise NotImplementedError

    async def status(self) -> Status:
        raise NotImplementedError

    async def list_tasks(self, *, open_only: bool = True, limit: int = 20) -> list[Task]:
        raise NotImplementedError

    async def show(self, task_id: int) -> Proposal:
        raise NotImplementedError

    async def digest(self, *, since: datetime | None = None) -> str:
        raise NotImplementedError
