"""A Proposal rendered for Discord: one embed plus one row of buttons.

The sentences come from ``bot.chat.wording`` (shared with Slack); this module only fits them into
Discord's limits: title 256, description 4096, field name 256 and value 1024, footer 2048, at
most 25 fields and 6000 characters in the whole embed, 5 buttons in a row and custom_id at most
100 characters. When a proposal is too big, evidence goes first, then steps are cut, each with a
pointer to ``ooda show``.
"""

from __future__ import annotations

import re

import discord

from bot.chat import inert_text as chat_text
from bot.chat import wording
from bot.model.proposals import Proposal, RiskBand

TITLE_MAX = 256
DESCRIPTION_MAX = 4096
FIELD_VALUE_MAX = 1024
FOOTER_MAX = 2048
EMBED_TOTAL_MAX = 6000
CUSTOM_ID_MAX = 100

BAND_COLOURS: dict[RiskBand, discord.Colour] = {
    RiskBand.low: discord.Colour.green(),
    RiskBand.medium: discord.Colour.gold(),
    RiskBand.high: discord.Colour.orange(),
    RiskBand.critical: discord.Colour.red(),
}

# Every button custom_id: "ooda:<action>:<task id>". Parsed back by the DynamicItem after a
# restart, so the format is a contract with messages already posted: extend it, never change it.
ACTIONS = ("approve", "reject", "edit", "details", "undo", "retry", "confirm")
CUSTOM_ID_TEMPLATE = r"ooda:(?P<action>approve|reject|edit|details|undo|retry|confirm):(?P<task>\d+)"
CUSTOM_ID_PATTERN = re.compile(CUSTOM_ID_TEMPLATE)


def custom_id(action: str, task_id: int) -> str:
    value = f"ooda:{action}:{task_id}"
    assert CUSTOM_ID_PATTERN.fullmatch(value) and len(value) <= CUSTOM_ID_MAX
    return value


def _md(text: str) -> str:
    """Outside text made inert for Discord markdown (bot/chat/inert_text.py); URLs stay as they are."""
    return chat_text.discord_markdown(text)


def _lines(lines: list[str], limit: int, task_id: int) -> str:
    return wording.truncate("\n".join(_md(line) for line in lines), limit, wording.show_pointer(task_id)) or "—"


def _link(title: str, url: str) -> str:
    """A masked link whose text is our own word; a URL that cannot be one is shown as it is."""
    if url.startswith(("http://", "https://")) and not any(c in url for c in "()[]<> \n"):
        return f"[{title}]({url})"
    return f"{title} <{url}>"


def to_embed(proposal: Proposal) -> discord.Embed:
    """The proposal as one embed within Discord's limits (``len(embed) <= 6000``)."""
    for evidence_budget, steps_budget in ((1000, FIELD_VALUE_MAX), (400, 600), (0, 300)):
        embed = _embed(proposal, evidence_budget, steps_budget)
        if len(embed) <= EMBED_TOTAL_MAX:
            return embed
    # Only reachable with a huge title, summary and factor list: cut the description to fit.
    overflow = len(embed) - EMBED_TOTAL_MAX
    embed.description = wording.truncate(
        embed.description or "", max(len(embed.description or "") - overflow, 0), wording.show_pointer(proposal.task_id)
    )
    return embed


def _embed(proposal: Proposal, evidence_budget: int, steps_budget: int) -> discord.Embed:
    task_id = proposal.task_id
    description = "\n".join(
        [
            _md(proposal.summary),
            "",
            _md(f"{wording.risk_line(proposal)} · env {proposal.environment} · severity {proposal.severity}"),
        ]
    )
    embed = discord.Embed(
        title=wording.truncate(f"#{task_id} {_md(proposal.title)}", TITLE_MAX),
        description=wording.truncate(description, DESCRIPTION_MAX, wording.show_pointer(task_id)),
        colour=BAND_COLOURS[proposal.risk.band],
        timestamp=proposal.updated_at,
    )
    factors = wording.risk_factor_lines(proposal)
    if factors:
        embed.add_field(name="Risk factors", value=_lines(factors, FIELD_VALUE_MAX, task_id), inline=False)
    embed.add_field(
        name="Blast radius",
        value=wording.truncate(_md(proposal.blast_radius) or "—", FIELD_VALUE_MAX),
        inline=False,
    )
    steps = [line for s in proposal.steps for line in wording.step_lines(s)]
    embed.add_field(name="Steps", value=_lines(steps or ["None (nothing to change)."], steps_budget, task_id),
                    inline=False)
    embed.add_field(name="Rollback plan", value=_lines(wording.rollback_lines(proposal), 600, task_id), inline=False)
    if proposal.evidence and evidence_budget:
        evidence = wording.evidence_lines(proposal, budget=evidence_budget - 60)
        embed.add_field(name="Evidence", value=_lines(evidence, evidence_budget, task_id), inline=False)
    elif proposal.evidence:
        embed.add_field(
            name="Evidence", value=f"{len(proposal.evidence)} items {wording.show_pointer(task_id)}", inline=False
        )
    approvals = [wording.approvals_line(proposal), wording.expiry_line(proposal)]
    embed.add_field(name="Approvals", value=_lines([a for a in approvals if a], FIELD_VALUE_MAX, task_id),
                    inline=False)
    if proposal.links:
        links = " · ".join(_link(link.title, link.url) for link in proposal.links)
        embed.add_field(name="Links", value=wording.truncate(links, FIELD_VALUE_MAX), inline=False)
    if proposal.outcome:
        embed.add_field(name="Outcome", value=_lines([proposal.outcome], 600, task_id), inline=False)
    embed.set_footer(text=wording.truncate(wording.headline(proposal), FOOTER_MAX))
    return embed


def buttons_for(proposal: Proposal) -> list[tuple[str, str, discord.ButtonStyle]]:
    """(action, label, style) of the buttons the proposal shows now; at most 5, one row."""
    buttons: list[tuple[str, str, discord.ButtonStyle]] = []
    if proposal.shadow:  # shadow mode: nothing to approve, nothing to undo; only the details
        return [("details", "Details", discord.ButtonStyle.secondary)]
    if proposal.state == "needs_approval":
        buttons.append(("approve", "Approve", discord.ButtonStyle.success))
        buttons.append(("reject", "Reject", discord.ButtonStyle.danger))
        if any(step.editable for step in proposal.steps):
            buttons.append(("edit", "Edit", discord.ButtonStyle.primary))
    buttons.append(("details", "Details", discord.ButtonStyle.secondary))
    if proposal.can_undo:
        buttons.append(("undo", "Undo", discord.ButtonStyle.secondary))
    if proposal.can_retry:
        buttons.append(("retry", "Retry", discord.ButtonStyle.primary))
    return buttons
