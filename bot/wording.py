"""How the bot words things in chat, whatever the surface.

Slack renders a Proposal as Block Kit and Discord as an embed, but the sentences are the same and
live here, so a person reading either sees the same words. Everything returns plain text with
light markdown (``*bold*`` is avoided on purpose: Slack and Discord disagree on it); surfaces
escape for their own markup.

Public API (stable; the Slack and Discord surfaces both rely on it):

    neutralize_mentions(text) -> str       defuse @here/@everyone/@channel, <!here>, <@..> in user text
    truncate(text, limit, pointer="") -> str
    headline(proposal) -> str              "Task #12 · restart-api v3 · needs approval"
    risk_line(proposal) -> str             "Risk 72/100 (high)"
    risk_factor_lines(proposal) -> list[str]
    step_line(step) -> str                 "1. restart api: service.restart (write_reversible) · needs approval ..."
    approvals_line(proposal) -> str        "Approvals: 2 of 3: alice, bob"
    evidence_line(evidence, snippet_limit) -> str
    evidence_lines(proposal, budget) -> list[str]   long evidence ends with a pointer to `ooda show`
    rollback_lines(proposal) -> list[str]
    proposal_text(proposal, *, budget=3500) -> str  the whole proposal as text (fallbacks, Discord, CLI)
    action_note(actor, verb, result, at) -> str     thread reply: who did what, when, with what result
    refusal(error) -> str                  a UserError worded for the person who caused it
    internal_error(correlation_id) -> str  what a person sees when something broke on our side
    status_text(status) -> str
    tasks_text(tasks) -> str
    help_text(prefix="/ops", *, suggestion=None, problem=None) -> str
    SHOW_POINTER                           the pointer appended to truncated evidence
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING

from bot.errors import ConfirmationRequired, UserError
from bot.proposals import Evidence, Proposal, StepView
from bot.steps import StepState
from bot.tasks import Task

if TYPE_CHECKING:  # annotations only: commands builds the digest, whose text this module words
    from bot.commands import Status

ZWSP = "\u200b"
ELLIPSIS = "…"

# Broadcast mentions on Slack (@here, <!channel>, <!subteam^S1>) and Discord (@everyone, <@&role>)
# and direct user mentions: user-provided text (alert labels, reasons) must never page anyone.
_AT_WORD = re.compile(r"@(?=(here|everyone|channel)\b)", re.IGNORECASE)
_ANGLE_MENTION = re.compile(r"<(?=[!@#])")


def neutralize_mentions(text: str) -> str:
    """Return ``text`` with every mention defused by a zero-width space; the words stay readable."""
    text = _AT_WORD.sub("@" + ZWSP, text)
    return _ANGLE_MENTION.sub("<" + ZWSP, text)


def truncate(text: str, limit: int, pointer: str = "") -> str:
    """Cut ``text`` to at most ``limit`` characters, ending with an ellipsis and ``pointer``."""
    if len(text) <= limit:
        return text
    tail = ELLIPSIS + (f" {pointer}" if pointer else "")
    keep = max(limit - len(tail), 0)
    return (text[:keep].rstrip() + tail)[:limit]


def show_pointer(task_id: int) -> str:
    return f"(full text: `ooda show {task_id}`)"


SHOW_POINTER = "(full text: `ooda show ID`)"


def _state_words(state: str) -> str:
    return state.replace("_", " ")


def headline(proposal: Proposal) -> str:
    version = f" v{proposal.playbook_version}" if proposal.playbook_version else ""
    undo = f" · {proposal.undo.words}" if proposal.undo else ""  # the undo phase: chat shows it with the state
    return f"Task #{proposal.task_id} · {proposal.playbook_id}{version} · {_state_words(proposal.state)}{undo}"


def risk_line(proposal: Proposal) -> str:
    return f"Risk {proposal.risk.score}/100 ({proposal.risk.band})"


def risk_factor_lines(proposal: Proposal) -> list[str]:
    return [
        f"{f.points:+d} {neutralize_mentions(f.name)}: {neutralize_mentions(f.detail)}"
        for f in sorted(proposal.risk.factors, key=lambda f: -abs(f.points))
    ]


def _decision_words(step: StepView) -> str:
    d = step.decision
    if d.verdict == "allow":
        words = "allowed"
    elif d.verdict == "deny":
        words = f"denied: {d.reason}" if d.reason else "denied"
    else:
        roles = f" ({', '.join(d.roles)})" if d.roles else ""
        count = f"{d.approvals_required} approval{'s' if d.approvals_required != 1 else ''}"
        words = f"needs {count}{roles}"
    return f"{words} [{d.rule}]" if d.rule else words


def step_line(step: StepView) -> str:
    line = f"{step.index + 1}. {step.name}: {step.tool} ({step.category}) · {_decision_words(step)}"
    if step.state is not StepState.pending:
        line += f" · {_state_words(step.state)}"
    if step.result:
        line += f": {truncate(step.result, 200)}"
    if step.dry_run_failed and step.state is StepState.pending:
        line += f" · dry run failed, approving runs it again: {truncate(step.dry_run or '', 160)}"
    return neutralize_mentions(line)


def approvals_line(proposal: Proposal) -> str:
    names = ", ".join(neutralize_mentions(a.actor) for a in proposal.approvals)
    if proposal.approvals_required <= 0:
        return f"Approvals: {names}" if names else "Approvals: none needed"
    got = f"{len(proposal.approvals)} of {proposal.approvals_required}"
    return f"Approvals: {got}: {names}" if names else f"Approvals: {got}"


def evidence_line(evidence: Evidence, snippet_limit: int = 300, pointer: str = SHOW_POINTER) -> str:
    title = neutralize_mentions(evidence.title)
    line = f"{evidence.kind}: {title}"
    if evidence.url:
        line += f" <{evidence.url}>"
    if evidence.snippet:
        snippet = neutralize_mentions(evidence.snippet.strip())
        line += f"\n    {truncate(snippet, snippet_limit, pointer)}"
    return line


def evidence_lines(proposal: Proposal, budget: int = 1500, snippet_limit: int = 300) -> list[str]:
    """Evidence worded within ``budget`` characters; what does not fit is counted, with a pointer."""
    pointer = show_pointer(proposal.task_id)
    lines: list[str] = []
    used = 0
    for i, ev in enumerate(proposal.evidence):
        line = evidence_line(ev, snippet_limit, pointer)
        if used + len(line) > budget:
            lines.append(f"… {len(proposal.evidence) - i} more {pointer}")
            break
        lines.append(line)
        used += len(line) + 1
    return lines


def rollback_lines(proposal: Proposal) -> list[str]:
    if not proposal.rollback_plan:
        return ["No automatic rollback: the steps are read-only or irreversible."]
    return [neutralize_mentions(line) for line in proposal.rollback_plan]


def proposal_text(proposal: Proposal, *, budget: int = 3500) -> str:
    """The whole proposal as plain text, cut to ``budget`` with a pointer to ``ooda show``."""
    parts = [
        headline(proposal),
        neutralize_mentions(proposal.title),
        neutralize_mentions(proposal.summary),
        f"{risk_line(proposal)} · env {proposal.environment} · severity {proposal.severity}",
        *(f"  {line}" for line in risk_factor_lines(proposal)),
        f"Blast radius: {neutralize_mentions(proposal.blast_radius)}",
        "Steps:",
        *(f"  {step_line(s)}" for s in proposal.steps),
        "Rollback:",
        *(f"  {line}" for line in rollback_lines(proposal)),
        approvals_line(proposal),
    ]
    if proposal.evidence:
        parts += ["Evidence:", *(f"  {line}" for line in evidence_lines(proposal, budget=budget // 3))]
    if proposal.outcome:
        parts.append(f"Outcome: {neutralize_mentions(proposal.outcome)}")
    return truncate("\n".join(p for p in parts if p), budget, show_pointer(proposal.task_id))


def action_note(actor: str, verb: str, result: str, at: datetime) -> str:
    """One thread reply: ``alice approved at 2026-01-05 09:01 UTC: 2 steps ran``."""
    when = at.strftime("%Y-%m-%d %H:%M UTC")
    text = f"{neutralize_mentions(actor)} {verb} at {when}"
    return f"{text}: {neutralize_mentions(result)}" if result else text


def refusal(error: UserError) -> str:
    """A refusal (not an approver, separation of duties, kill switch, already decided, expired)."""
    text = f"Not done: {neutralize_mentions(str(error))}"
    if isinstance(error, ConfirmationRequired):
        text += f"\nType `{error.phrase}` to confirm."
    return text


def internal_error(correlation_id: str) -> str:
    return (
        "Something went wrong on our side and nothing was changed by this request. "
        f"Ask an operator to look up correlation id {correlation_id} in the logs."
    )


def status_text(status: Status) -> str:
    if status.paused:
        by = f" by {neutralize_mentions(status.paused_by)}" if status.paused_by else ""
        why = f": {neutralize_mentions(status.paused_reason)}" if status.paused_reason else ""
        switch = f"Kill switch ON (paused{by}{why}). No write runs until `/ops resume`."
    else:
        switch = "Kill switch off: approved steps run."
    lines = [
        switch,
        f"Environment {status.environment} · autonomy cap {status.autonomy_cap}",
        f"Open tasks: {status.open_tasks} ({status.needs_approval} waiting for approval)",
    ]
    if status.recent_failures:
        lines.append("Recent failures:")
        lines += [f"  {neutralize_mentions(f)}" for f in status.recent_failures[:10]]
    else:
        lines.append("No recent failures.")
    if status.scheduled_checks:
        lines.append("Scheduled checks:")
        lines += [f"  {neutralize_mentions(c)}" for c in status.scheduled_checks[:10]]
    return "\n".join(lines)


def tasks_text(tasks: Iterable[Task]) -> str:
    lines = [
        f"#{t.id} {_state_words(t.state)} · {t.playbook_id} · {neutralize_mentions(truncate(t.title, 80))}"
        for t in tasks
    ]
    return "\n".join(lines) if lines else "No open tasks."


_HELP = [
    ("help", "this text"),
    ("status", "kill switch, autonomy caps, open tasks, recent failures"),
    ("tasks", "open tasks"),
    ("show ID", "one task's proposal"),
    ("approve ID [PHRASE]", "approve a proposal (PHRASE: the confirmation a critical one asks for)"),
    ("reject ID REASON...", "reject a proposal"),
    ("run PLAYBOOK key=value...", "start a playbook by hand"),
    ("pause [REASON...]", "kill switch on: no write runs"),
    ("resume", "kill switch off"),
    ("undo ID", "run the rollback of a finished task"),
    ("digest", "the digest since yesterday"),
]


def help_text(prefix: str = "/ops", *, suggestion: str | None = None, problem: str | None = None) -> str:
    lines: list[str] = []
    if problem:
        lines.append(neutralize_mentions(problem))
    if suggestion:
        lines.append(f"Did you mean `{prefix} {suggestion}`?")
    lines.append(f"Usage: `{prefix} <command>`")
    lines += [f"  `{prefix} {usage}`: {what}" for usage, what in _HELP]
    return "\n".join(lines)
