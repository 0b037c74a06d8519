"""The ``/ops`` command, the same on every chat surface: parse the text, run it, word the reply.

Public API (stable; the Slack and Discord surfaces both rely on it):

    parse_ops(text: str) -> OpsCommand
        Never raises. Unknown or malformed input becomes ``OpsCommand(name="help", problem=...,
        suggestion=...)`` so the reply is help with a "did you mean".
    async run_ops(command: OpsCommand, commands: bot.chat.commands.Commands, actor: Actor) -> OpsReply
        Never raises for a person's mistake: ``UserError`` becomes a refusal in ``text``
        (``ok=False``); any other exception is logged in full and answered with a correlation id.
    OpsReply.proposal is set when the command changed or showed a proposal, so the surface can
    update the posted message.
    bind_chat_request(surface: str, correlation_id: str | None = None) -> str
        Called first by each surface's entry point (a click, a modal submit, a slash command):
        a fresh log context with the request's correlation id.
    bound_correlation_id() -> str
        That id, for an internal-error reply; it is the id on the log line of the exception.

Subcommands: help, status, tasks, show ID, approve ID [PHRASE...], reject ID REASON...,
run PLAYBOOK key=value..., pause [REASON...], resume, undo ID, retry ID, digest.
"""

from __future__ import annotations

import difflib
import shlex
import uuid
from typing import Literal

import structlog
from pydantic import BaseModel, Field

from bot.chat import wording
from bot.chat.commands import Commands
from bot.chat.digest_text import digest_posting_text
from bot.errors import ConfirmationRequired, UserError
from bot.model.proposals import Proposal
from bot.policy.identity import Actor

log = structlog.get_logger(__name__)

OpsName = Literal[
    "help", "status", "tasks", "show", "approve", "reject", "run", "pause", "resume", "undo", "retry", "digest"
]
SUBCOMMANDS: tuple[str, ...] = (
    "help", "status", "tasks", "show", "approve", "reject", "run", "pause", "resume", "undo", "retry", "digest",
)
_NEEDS_ID = {"show", "approve", "reject", "undo", "retry"}


class OpsCommand(BaseModel):
    name: OpsName
    task_id: int | None = None
    reason: str = ""  # reject reason, pause reason, or the typed confirmation for approve
    playbook: str | None = None
    args: dict[str, str] = Field(default_factory=dict)
    problem: str | None = None  # why the input became help
    suggestion: str | None = None  # the closest subcommand to an unknown one


class OpsReply(BaseModel):
    text: str
    ok: bool = True
    proposal: Proposal | None = None
    public: bool = False  # worth showing the channel (a state change) rather than only the asker


def bind_chat_request(surface: str, correlation_id: str | None = None) -> str:
    """Start the log context of one chat request, bound to its correlation id.

    Every line logged while handling the request, the exception's included, carries the id, and
    an internal-error reply quotes it, so the person's message leads to the log line.

    Args:
        surface: the chat surface's name (``slack``, ``discord``); prefixes a generated id.
        correlation_id: an id the request already has (Discord's interaction id, the HTTP request
            id of Slack's HTTP mode); a fresh one is generated when ``None``.

    Returns:
        The bound correlation id.
    """
    bound = correlation_id or f"{surface}-{uuid.uuid4().hex[:12]}"
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(correlation_id=bound, surface=surface)
    return bound


def bound_correlation_id() -> str:
    """The correlation id the request's entry point bound, to quote in an internal-error reply.

    Returns:
        The bound id. Should an entry point have bound none, a fresh one is bound now, so the
        reply and the log line of the error still agree.
    """
    bound = structlog.contextvars.get_contextvars().get("correlation_id")
    if not bound:
        bound = uuid.uuid4().hex[:12]
        structlog.contextvars.bind_contextvars(correlation_id=bound)
    return str(bound)


def _help(problem: str, suggestion: str | None = None) -> OpsCommand:
    return OpsCommand(name="help", problem=problem, suggestion=suggestion)


def split_words(text: str) -> list[str]:
    """Shell-like words: a quoted value may hold spaces (reason="disk full on db-1")."""
    try:
        return shlex.split(text)
    except ValueError:  # an unbalanced quote: fall back to plain words rather than refuse
        return text.split()


def parse_ops(text: str) -> OpsCommand:
    words = split_words(text.strip())
    if not words:
        return OpsCommand(name="help")
    name, rest = words[0].lower(), words[1:]
    if name not in SUBCOMMANDS:
        close = difflib.get_close_matches(name, SUBCOMMANDS, n=1, cutoff=0.6)
        return _help(f"Unknown command `{name[:40]}`.", close[0] if close else None)
    if name in _NEEDS_ID:
        if not rest or not rest[0].lstrip("#").isdigit():
            return _help(f"`{name}` needs a task id, e.g. `{name} 12`.", name)
        task_id = int(rest[0].lstrip("#"))
        reason = " ".join(rest[1:])
        if name == "reject" and not reason:
            return _help("`reject` needs a reason, e.g. `reject 12 wrong service`.", "reject")
        return OpsCommand(name=name, task_id=task_id, reason=reason)  # type: ignore[arg-type]
    if name == "run":
        if not rest:
            return _help("`run` needs a playbook id, e.g. `run restart-service service=api`.", "run")
        args: dict[str, str] = {}
        for word in rest[1:]:
            key, sep, value = word.partition("=")
            if not sep or not key:
                return _help(f"`run` takes key=value arguments; `{word[:40]}` is not one.", "run")
            args[key] = value
        return OpsCommand(name="run", playbook=rest[0], args=args)
    if name == "pause":
        return OpsCommand(name="pause", reason=" ".join(rest))
    return OpsCommand(name=name)  # type: ignore[arg-type]


async def run_ops(command: OpsCommand, commands: Commands, actor: Actor, *, prefix: str = "/ops") -> OpsReply:
    try:
        return await _dispatch(command, commands, actor, prefix)
    except ConfirmationRequired as exc:
        log.info("chatops.confirmation_required", task_id=command.task_id, actor=actor.id)
        text = wording.confirmation_needed(exc, f"To confirm, type `{prefix} approve {command.task_id} {exc.phrase}`.")
        return OpsReply(text=text, ok=False)
    except UserError as exc:
        log.info("chatops.refused", command=command.name, task_id=command.task_id, actor=actor.id, reason=str(exc))
        return OpsReply(text=wording.refusal(exc), ok=False)
    except Exception:
        # The request's own id, so the id the person quotes finds this line (and the rest of the request's).
        correlation_id = bound_correlation_id()
        log.exception("chatops.failed", command=command.name, actor=actor.id)
        return OpsReply(text=wording.internal_error(correlation_id), ok=False)


async def _dispatch(c: OpsCommand, commands: Commands, actor: Actor, prefix: str) -> OpsReply:
    if c.name == "help":
        text = wording.help_text(prefix, suggestion=c.suggestion, problem=c.problem)
        return OpsReply(text=text, ok=c.problem is None)
    if c.name == "status":
        return OpsReply(text=wording.status_text(await commands.status()))
    if c.name == "tasks":
        return OpsReply(text=wording.tasks_text(await commands.list_tasks(open_only=True, limit=20)))
    if c.name == "digest":
        targets, _ = commands.post_digest_soon()
        return OpsReply(text=digest_posting_text(targets))
    if c.name == "pause":
        status = await commands.pause(actor, c.reason)
        return OpsReply(text=wording.status_text(status), public=True)
    if c.name == "resume":
        status = await commands.resume(actor)
        return OpsReply(text=wording.status_text(status), public=True)
    if c.name == "run":
        assert c.playbook is not None
        task = await commands.run_playbook(c.playbook, c.args, actor)
        return OpsReply(text=f"Started task #{task.id} ({task.playbook_id}): {wording.neutralize_mentions(task.title)}",
                        public=True)
    assert c.task_id is not None  # parse_ops guarantees it for the remaining commands
    if c.name == "show":
        proposal = await commands.show(c.task_id)
        return OpsReply(text=wording.proposal_text(proposal), proposal=proposal)
    if c.name == "approve":
        result = await commands.approve(c.task_id, actor, confirmation=c.reason or None)
    elif c.name == "reject":
        result = await commands.reject(c.task_id, actor, c.reason)
    elif c.name == "retry":
        result = await commands.retry(c.task_id, actor)
    else:
        result = await commands.undo(c.task_id, actor)
    return OpsReply(text=wording.neutralize_mentions(result.message), proposal=result.proposal, public=True)
