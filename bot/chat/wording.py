"""How the bot words things in chat, whatever the surface.

Slack renders a Proposal as Block Kit and Discord as an embed, but the sentences are the same and
live here, so a person reading either sees the same words. Everything returns plain text with
light markdown (``*bold*`` is avoided on purpose: Slack and Discord disagree on it); surfaces
escape outside text for their own markup (``bot/chat/inert_text.py``), and the CLI's ``ooda show``
prints the same words, in full.

Public API (stable; the Slack and Discord surfaces both rely on it):

    neutralize_mentions(text) -> str       defuse @here/@everyone/@channel, <!here>, <@..>, bidi; URLs kept
    truncate(text, limit, pointer="") -> str
    headline(proposal) -> str              "Task #12 · restart-api v3 · needs approval"
    risk_line(proposal) -> str             "Risk 72/100 (high)"
    risk_factor_lines(proposal) -> list[str]
    step_line(step) -> str                 "1. restart: `rolling restart of deployment shop/checkout`"
    step_lines(step) -> list[str]          the step line, its tool, decision and quorum, dry run, result
    approvals_line(proposal) -> str        "Approvals: 1 of 2: alice · needs 1 more from sre-lead"
    expiry_line(proposal) -> str           "Expires 2026-01-05 14:00 UTC if nobody decides"
    links_line(proposal) -> str            "runbook <https://…> · silence <https://…>"
    evidence_line(evidence, snippet_limit) -> str
    evidence_lines(proposal, budget) -> list[str]   long evidence ends with a pointer to `/ops show`
    rollback_lines(proposal) -> list[str]
    proposal_text(proposal, *, budget=3500, full=False) -> str  the whole proposal as text (full: ooda show)
    action_note(actor, verb, result, at) -> str     thread reply: who did what, when, with what result
    refusal(error) -> str                  a UserError worded for the person who caused it
    clock(at) -> str                       "2026-01-05 10:42 UTC", the one way times are shown
    internal_error(correlation_id) -> str  what a person sees when something broke on our side
    status_text(status) -> str
    tasks_text(tasks) -> str
    help_text(prefix="/ops", *, suggestion=None, problem=None) -> str
    SHOW_POINTER                           the pointer appended to truncated evidence
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from bot.chat import inert_text as chat_text
from bot.errors import ConfirmationRequired, UserError
from bot.loop import readable
from bot.model.proposals import Evidence, Proposal, StepView
from bot.model.steps import StepState
from bot.model.tasks import Task

if TYPE_CHECKING:  # annotations only: commands builds the digest, whose text this module words
    from bot.chat.results import Status

ZWSP = chat_text.ZWSP
ELLIPSIS = "…"


def neutralize_mentions(text: str) -> str:
    """Return ``text`` with every mention defused and bidi controls dropped; URLs stay as they are."""
    return chat_text.neutralize(text)


def truncate(text: str, limit: int, pointer: str = "") -> str:
    """Cut ``text`` to at most ``limit`` characters at a word boundary, ending with an ellipsis and ``pointer``."""
    if len(text) <= limit:
        return text
    tail = ELLIPSIS + (f" {pointer}" if pointer else "")
    keep = max(limit - len(tail), 0)
    cut = text[:keep]
    # Never in the middle of a word (or a URL): back to the last space when one is near enough.
    space = max(cut.rfind(" "), cut.rfind("\n"))
    if keep - space < 40 and space > keep // 2 and keep < len(text) and not text[keep].isspace():
        cut = cut[:space]
    return (cut.rstrip() + tail)[:limit]


def show_pointer(task_id: int) -> str:
    return f"(full text: `/ops show {task_id}` or `ooda show {task_id}`)"


SHOW_POINTER = "(full text: `/ops show ID` or `ooda show ID`)"


def clock(at: datetime) -> str:
    """A time as people in different places read it: ``10:42 UTC`` today, with the date otherwise."""
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _roles(roles: Iterable[str]) -> str:
    return " or ".join(roles) or "anyone with a role"


def _category_words(step: StepView) -> str:
    return {"read": "read-only", "write_reversible": "reversible",
            "write_irreversible": "irreversible"}[step.category.value]


def _state_words(state: str) -> str:
    return state.replace("_", " ")


def headline(proposal: Proposal) -> str:
    version = f" v{proposal.playbook_version}" if proposal.playbook_version else ""
    shadow = " · shadow: proposed only, nothing will run" if proposal.shadow else ""
    undo = f" · {proposal.undo.words}" if proposal.undo else ""  # the undo phase: chat shows it with the state
    return f"Task #{proposal.task_id} · {proposal.playbook_id}{version} · {_state_words(proposal.state)}{undo}{shadow}"


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
        return "runs without approval"
    if d.verdict == "deny":
        return f"denied: {d.reason}" if d.reason else "denied"
    tier = f" ({d.rule.replace('tier', 'tier ')})" if d.rule.startswith("tier") else ""
    count = f"{d.approvals_required} approval{'s' if d.approvals_required != 1 else ''}"
    return f"needs {count} from {_roles(d.roles)}{tier}"


_DONE_WORDS = {StepState.succeeded: "done", StepState.failed: "failed", StepState.skipped: "skipped",
               StepState.denied: "denied", StepState.rolled_back: "done, then undone",
               StepState.unknown: "unknown: it was running when Ooda stopped", StepState.running: "running now"}


def step_progress(step: StepView) -> str:
    """Where the step's quorum stands: ``1 of 2: Alice``; empty once it ran or when none is needed."""
    d = step.decision
    if d.verdict != "needs_approval" or step.state is not StepState.pending:
        return ""
    got = f"{len(step.approved_by)} of {d.approvals_required}"
    return f"approved {got}: {', '.join(neutralize_mentions(a) for a in step.approved_by)}" if step.approved_by \
        else f"approved {got}"


def step_line(step: StepView) -> str:
    """The step's first line: its number, name and the exact action it takes."""
    action = readable.step_action(step.tool, step.params)
    # As code: chat formats nothing inside it and a command stays exactly as it runs, to copy.
    shown = f"`{action}`" if "`" not in action and "\n" not in action else neutralize_mentions(action)
    return f"{step.index + 1}. {neutralize_mentions(step.name)}: {shown}"


def step_lines(step: StepView) -> list[str]:
    """The step in full: what it does, how it is decided and where it stands, its dry run and result."""
    status = _DONE_WORDS.get(step.state) if step.state not in {StepState.pending, StepState.denied} else None
    detail = f"{step.tool} · {_category_words(step)} · " + (status or _decision_words(step))
    progress = step_progress(step)
    lines = [step_line(step), "   " + neutralize_mentions(detail + (f" · {progress}" if progress else ""))]
    if step.dry_run and step.state is StepState.pending:
        dry = neutralize_mentions(step.dry_run.strip()).splitlines()
        failed = " failed, approving runs it again" if step.dry_run_failed else ""
        lines.append(f"   dry run{failed}: {dry[0]}")
        lines += [f"     {line.strip()}" for line in dry[1:]]
    if step.result:
        lines.append(f"   result: {truncate(neutralize_mentions(step.result), 300)}")
    return lines


def approvals_line(proposal: Proposal) -> str:
    """Who approved and how many more are needed, by the step waiting first (quorum is per step)."""
    names = ", ".join(neutralize_mentions(a.actor) for a in proposal.approvals)
    waiting = [s for s in proposal.steps if s.decision.verdict == "needs_approval" and s.state is StepState.pending]
    if not waiting:
        if proposal.approvals_required <= 0 and not names:
            return "Approvals: none needed"
        return f"Approvals: {names}" if names else f"Approvals: 0 of {proposal.approvals_required}"
    first = waiting[0]
    got = f"{len(first.approved_by)} of {first.decision.approvals_required}"
    counted = ", ".join(neutralize_mentions(a) for a in first.approved_by)
    line = f"Approvals: {got}: {counted}" if counted else f"Approvals: {got}"
    missing = first.decision.approvals_required - len(first.approved_by)
    if missing > 0:
        line += f" · needs {missing} more from {_roles(first.decision.roles)}"
    others = [s for s in waiting[1:] if s.decision.approvals_required != first.decision.approvals_required
              or s.decision.roles != first.decision.roles]
    for s in others:
        line += (f" · step {s.index + 1}: {len(s.approved_by)} of {s.decision.approvals_required} "
                 f"from {_roles(s.decision.roles)}")
    return line


def expiry_line(proposal: Proposal) -> str:
    return f"Expires {clock(proposal.expires_at)} if nobody decides" if proposal.expires_at else ""


def links_line(proposal: Proposal) -> str:
    return " · ".join(f"{link.title} <{link.url}>" for link in proposal.links)


def evidence_line(evidence: Evidence, snippet_limit: int = 300, pointer: str = SHOW_POINTER) -> str:
    title = neutralize_mentions(evidence.title)
    line = f"{evidence_kind(evidence.kind)}: {title}"
    if evidence.meaning:
        line += f" ({neutralize_mentions(evidence.meaning)})"
    if evidence.url:
        line += f" <{evidence.url}>"
    if evidence.snippet:
        snippet = truncate(neutralize_mentions(evidence.snippet.strip()), snippet_limit, pointer)
        line += "\n    " + snippet.replace("\n", "\n    ")
    return line


def evidence_kind(kind: str) -> str:
    """``tool:prometheus.query`` reads as ``prometheus.query``; ``signal`` as ``alert``."""
    return "alert" if kind == "signal" else kind.removeprefix("tool:")


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


def proposal_text(proposal: Proposal, *, budget: int = 3500, full: bool = False) -> str:
    """The whole proposal as plain text, cut to ``budget`` with a pointer to ``/ops show``.

    ``full`` (``ooda show``, ``/ops show``): every evidence item with its whole snippet, no cut.
    """
    evidence = ([evidence_line(e, snippet_limit=100_000) for e in proposal.evidence] if full
                else evidence_lines(proposal, budget=budget // 3))
    parts = [
        headline(proposal),
        neutralize_mentions(proposal.title),
        neutralize_mentions(proposal.summary),
        f"{risk_line(proposal)} · env {proposal.environment} · severity {proposal.severity}",
        *(f"  {line}" for line in risk_factor_lines(proposal)),
        f"Blast radius: {neutralize_mentions(proposal.blast_radius)}",
        "Steps:" if proposal.steps else "Steps: none (nothing to change)",
        *(f"  {line}" for s in proposal.steps for line in step_lines(s)),
        "Rollback:",
        *(f"  {line}" for line in rollback_lines(proposal)),
        approvals_line(proposal),
        expiry_line(proposal),
    ]
    if proposal.links:
        parts.append(f"Links: {links_line(proposal)}")
    if evidence:
        parts += ["Evidence:", *(f"  {line}" for line in evidence)]
    if proposal.outcome:
        parts.append(f"Outcome: {neutralize_mentions(proposal.outcome)}")
    text = "\n".join(p for p in parts if p)
    return text if full else truncate(text, budget, show_pointer(proposal.task_id))


def action_note(actor: str, verb: str, result: str, at: datetime) -> str:
    """One thread reply: ``alice approved at 2026-01-05 09:01 UTC: 2 steps ran``."""
    when = clock(at)
    text = f"{neutralize_mentions(actor)} {verb} at {when}"
    return f"{text}: {neutralize_mentions(result)}" if result else text


def refusal(error: UserError) -> str:
    """A refusal (not an approver, separation of duties, kill switch, already decided, expired)."""
    text = f"Not done: {neutralize_mentions(str(error))}"
    if isinstance(error, ConfirmationRequired) and f"`{error.phrase}`" not in str(error):
        # Said once: the core's own refusal already names the phrase to type.
        text += f"\nType `{error.phrase}` to confirm."
    return text


def confirmation_needed(error: ConfirmationRequired, instruction: str) -> str:
    """The critical-risk prompt: what is needed, then the one instruction that works where it is
    shown (a chat command, a button that opens the form); the core's words name no surface."""
    return f"Not done: {neutralize_mentions(str(error)).rstrip('.')}.\n{instruction}"


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
    ("retry ID", "decide a task the policy stopped again, under the policy of now"),
    ("digest", "post the digest of the last 24 hours, with its chart, to the digest channel now"),
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
