"""Block Kit for Ooda on Slack: the proposal message and the reject, edit and step-up modals.

Built with slack_sdk's Block Kit models because they validate Slack's limits when serialized
(``to_dict`` raises ``SlackObjectFormationError``); every piece of text is cut to its limit here
first, so a long alert can never make a proposal undeliverable. The sentences come from
``bot.chat.wording`` so Slack and Discord read the same.

Action ids (``ACTION_*``) and modal callback ids (``VIEW_*``) are the contract with the listeners
in ``adapters/chat/slack.py``; button values carry only the task id.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel
from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ContextBlock,
    DividerBlock,
    HeaderBlock,
    InputBlock,
    MarkdownTextObject,
    Option,
    PlainTextInputElement,
    PlainTextObject,
    SectionBlock,
    StaticSelectElement,
)
from slack_sdk.models.views import View

from bot.chat import inert_text as chat_text
from bot.chat import wording
from bot.loop.readable import bound_text
from bot.model.proposals import ParamBound, Proposal
from bot.playbooks.param_paths import param_at

ACTION_APPROVE = "ooda.approve"
ACTION_REJECT = "ooda.reject"
ACTION_EDIT = "ooda.edit"
ACTION_DETAILS = "ooda.details"
ACTION_UNDO = "ooda.undo"
ACTION_RETRY = "ooda.retry"
VIEW_REJECT = "ooda.reject_modal"
VIEW_EDIT = "ooda.edit_modal"
VIEW_CONFIRM = "ooda.confirm_modal"
REASON_BLOCK = "reason"
CONFIRM_BLOCK = "confirm"
VALUE_ACTION = "value"

SECTION_LIMIT = 3000
FIELD_LIMIT = 2000
HEADER_LIMIT = 150
FALLBACK_LIMIT = 4000
EVIDENCE_BUDGET = 1500


def escape(text: str) -> str:
    """Text for mrkdwn that mentions, links and formats nothing; URLs in it stay copyable (bot/chat/inert_text.py)."""
    return chat_text.slack_mrkdwn(text)


def _md(text: str, limit: int = SECTION_LIMIT, pointer: str = "") -> MarkdownTextObject:
    return MarkdownTextObject(text=wording.truncate(text, limit, pointer))


def _link(url: str, title: str) -> str:
    if url.startswith(("http://", "https://")) and not any(c in url for c in "|<> \n"):
        # Slack reads "&amp;" in a link target as "&": the URL a person opens is the alert's own.
        return f"<{url.replace('&', '&amp;')}|{escape(title)}>"
    return f"{escape(title)} ({escape(url)})"


def _evidence_text(p: Proposal) -> str:
    pointer = wording.show_pointer(p.task_id)
    lines: list[str] = []
    used = 0
    for i, ev in enumerate(p.evidence):
        title = _link(ev.url, ev.title) if ev.url else escape(ev.title)
        line = f"• {escape(wording.evidence_kind(ev.kind))}: {title}"
        if ev.meaning:
            line += f" ({escape(ev.meaning)})"
        if ev.snippet:
            line += "\n> " + escape(wording.truncate(ev.snippet.strip(), 300, pointer)).replace("\n", "\n> ")
        if used + len(line) > EVIDENCE_BUDGET:
            lines.append(f"… {len(p.evidence) - i} more {pointer}")
            break
        lines.append(line)
        used += len(line) + 1
    return "*Evidence*\n" + "\n".join(lines)


def _is_open(p: Proposal) -> bool:
    return p.state == "needs_approval"


def proposal_buttons(p: Proposal) -> list[ButtonElement]:
    value = str(p.task_id)
    buttons: list[ButtonElement] = []
    if p.shadow:  # shadow mode: nothing to approve, nothing to undo; only the details
        return [ButtonElement(text="Details", action_id=ACTION_DETAILS, value=value)]
    if _is_open(p):
        buttons.append(ButtonElement(text="Approve", action_id=ACTION_APPROVE, value=value, style="primary"))
        buttons.append(ButtonElement(text="Reject", action_id=ACTION_REJECT, value=value, style="danger"))
        if any(s.editable for s in p.steps):
            buttons.append(ButtonElement(text="Edit", action_id=ACTION_EDIT, value=value))
    buttons.append(ButtonElement(text="Details", action_id=ACTION_DETAILS, value=value))
    if p.can_undo:
        buttons.append(ButtonElement(text="Undo", action_id=ACTION_UNDO, value=value, style="danger"))
    if p.can_retry:
        buttons.append(ButtonElement(text="Retry", action_id=ACTION_RETRY, value=value))
    return buttons


def proposal_blocks(p: Proposal) -> list[Block]:
    pointer = wording.show_pointer(p.task_id)
    factors = "\n".join(escape(line) for line in wording.risk_factor_lines(p)) or "no factors"
    steps = "\n".join(escape(line) for s in p.steps for line in wording.step_lines(s)) or "none (nothing to change)"
    rollback = "\n".join(escape(line) for line in wording.rollback_lines(p))
    links = " · ".join(_link(link.url, link.title) for link in p.links)
    blocks: list[Block] = [
        HeaderBlock(text=wording.truncate(wording.headline(p), HEADER_LIMIT)),
        SectionBlock(text=_md(f"*{escape(p.title)}*\n{escape(p.summary)}", pointer=pointer)),
        SectionBlock(fields=[
            _md(f"*{wording.risk_line(p)}*\n{factors}", FIELD_LIMIT),
            _md(f"*Blast radius*\n{escape(p.blast_radius)}", FIELD_LIMIT),
            _md(f"*Environment*\n{escape(p.environment)} · severity {escape(p.severity)}", FIELD_LIMIT),
            _md(f"*{escape(wording.approvals_line(p))}*" + (f"\n{escape(wording.expiry_line(p))}"
                                                              if p.expires_at else ""), FIELD_LIMIT),
        ]),
        SectionBlock(text=_md(f"*Steps*\n{steps}", pointer=pointer)),
        SectionBlock(text=_md(f"*Rollback plan*\n{rollback}", pointer=pointer)),
    ]
    if links:
        blocks.append(SectionBlock(text=_md(f"*Links* {links}")))
    if p.evidence:
        blocks.append(SectionBlock(text=_md(_evidence_text(p), pointer=pointer)))
    context = f"requested by {escape(p.requester)} · {p.signal_count} signal(s) · updated {p.updated_at:%H:%M UTC}"
    if p.outcome:
        context = f"*{escape(p.outcome)}* · " + context
    blocks += [
        ContextBlock(elements=[_md(context, FIELD_LIMIT)]),
        DividerBlock(),
        ActionsBlock(block_id=f"ooda.task.{p.task_id}", elements=proposal_buttons(p)),
    ]
    return blocks


def proposal_message(p: Proposal) -> dict[str, Any]:
    """``text`` and ``blocks`` for chat.postMessage / chat.update; serializing validates the limits."""
    return {
        # The fallback (notifications, screen readers) is mrkdwn too: escaped like the blocks.
        "text": wording.truncate(escape(f"{wording.headline(p)}: {p.title}"), FALLBACK_LIMIT),
        "blocks": [b.to_dict() for b in proposal_blocks(p)],
    }


class ModalContext(BaseModel):
    """What a modal remembers between opening and submission (``private_metadata``)."""

    task_id: int
    channel: str | None = None
    message_ts: str | None = None
    phrase: str | None = None

    def dump(self) -> str:
        return self.model_dump_json(exclude_none=True)

    @classmethod
    def load(cls, raw: str) -> ModalContext:
        return cls.model_validate_json(raw)


def _modal(callback_id: str, title: str, submit: str, ctx: ModalContext, blocks: list[Block]) -> dict[str, Any]:
    view = View(type="modal", callback_id=callback_id, title=PlainTextObject(text=wording.truncate(title, 24)),
                submit=PlainTextObject(text=submit), close=PlainTextObject(text="Cancel"),
                private_metadata=ctx.dump(), blocks=blocks)
    return view.to_dict()


def reject_modal(ctx: ModalContext) -> dict[str, Any]:
    return _modal(VIEW_REJECT, f"Reject task #{ctx.task_id}", "Reject", ctx, [
        InputBlock(block_id=REASON_BLOCK, label="Why reject it?",
                   element=PlainTextInputElement(action_id=VALUE_ACTION, multiline=True, min_length=3,
                                                 max_length=500)),
    ])


def _confirm_input(phrase: str) -> InputBlock:
    return InputBlock(block_id=CONFIRM_BLOCK, label=wording.truncate(f"Critical risk: type {phrase} to confirm", 2000),
                      element=PlainTextInputElement(action_id=VALUE_ACTION, max_length=200))


def confirm_modal(ctx: ModalContext) -> dict[str, Any]:
    assert ctx.phrase is not None
    return _modal(VIEW_CONFIRM, f"Approve task #{ctx.task_id}", "Approve", ctx, [
        SectionBlock(text=_md("This proposal is *critical risk*. Approving runs its steps now.")),
        _confirm_input(ctx.phrase),
    ])


def edit_block_id(step_index: int, param: str) -> str:
    return f"edit.{step_index}.{param}"[:255]


def bound_hint(bound: ParamBound) -> str:
    return bound_text(bound)  # the same words as Discord's form and the core's refusals


def _edit_element(bound: ParamBound, current: Any) -> PlainTextInputElement | StaticSelectElement:
    choices = bound.choices or (["true", "false"] if bound.type == "bool" else None)
    if choices:
        options = [Option(value=c[:150], text=wording.truncate(c, 75)) for c in choices[:100]]
        initial = next((o for o in options if o.value == _show(current)), None)
        return StaticSelectElement(action_id=VALUE_ACTION, options=options, initial_option=initial)
    return PlainTextInputElement(action_id=VALUE_ACTION, initial_value=_show(current)[:3000])


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def edit_modal(p: Proposal, ctx: ModalContext) -> dict[str, Any]:
    blocks: list[Block] = [SectionBlock(text=_md("Change what the steps will do, then approve. Limits are checked."))]
    for step in p.steps:
        for param, bound in step.editable.items():
            if len(blocks) >= 95:  # a modal holds 100 blocks; the confirm input may follow
                break
            blocks.append(InputBlock(
                block_id=edit_block_id(step.index, param),
                label=wording.truncate(f"{step.name}: {param}", 2000),
                hint=wording.truncate(bound_hint(bound), 2000),
                element=_edit_element(bound, param_at(step.params, param)),
            ))
    if ctx.phrase:
        blocks.append(_confirm_input(ctx.phrase))
    return _modal(VIEW_EDIT, f"Edit task #{p.task_id}", "Approve", ctx, blocks)


def submitted_value(values: dict[str, Any], block_id: str) -> str | None:
    """The text typed or the option picked in one input block of a ``view_submission``."""
    element = values.get(block_id, {}).get(VALUE_ACTION, {})
    if element.get("selected_option"):
        return str(element["selected_option"]["value"])
    value = element.get("value")
    return None if value is None else str(value)


def coerce(raw: str, bound: ParamBound) -> Any:
    """Turn the typed text into the param's type, or raise ValueError with words for the person."""
    text = raw.strip()
    if bound.choices is not None and text not in bound.choices:
        raise ValueError("Pick one of " + ", ".join(bound.choices))
    value: Any
    if bound.type == "int":
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a whole number") from None
    elif bound.type == "float":
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a number") from None
    elif bound.type == "bool":
        if text.lower() not in {"true", "false"}:
            raise ValueError("Type true or false")
        value = text.lower() == "true"
    else:
        value = raw
        if bound.max_length is not None and len(value) > bound.max_length:
            raise ValueError(f"At most {bound.max_length} characters")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if bound.min is not None and value < bound.min:
            raise ValueError(f"{value} is below the minimum {bound.min:g}")
        if bound.max is not None and value > bound.max:
            raise ValueError(f"{value} is above the maximum {bound.max:g}")
    return value


def read_edits(p: Proposal, values: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """The changed params as ``{step name: {param: value}}`` and the per-block errors for the modal."""
    edits: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}
    for step in p.steps:
        for param, bound in step.editable.items():
            block_id = edit_block_id(step.index, param)
            raw = submitted_value(values, block_id)
            if raw is None:
                continue
            try:
                value = coerce(raw, bound)
            except ValueError as exc:
                errors[block_id] = str(exc)[:150]
                continue
            if value != param_at(step.params, param):
                edits.setdefault(step.name, {})[param] = value
    return edits, errors


def describe_edits(p: Proposal, edits: dict[str, dict[str, Any]]) -> str:
    """``rotate.keep 5 → 8``: the diff as a person reads it in the thread."""
    before = {s.name: s.params for s in p.steps}
    return ", ".join(
        f"{step}.{param} {json.dumps(param_at(before.get(step, {}), param))} → {json.dumps(value)}"
        for step, changes in edits.items()
        for param, value in changes.items()
    )
