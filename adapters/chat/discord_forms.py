"""The modals a Discord user fills in: reject reason, edited step params, typed confirmation.

Edits are checked here against each step's ``ParamBound`` before the core sees them (the core
checks again): a modal only ever delivers strings, so this is where "5" becomes 5 and "50" for a
param bounded 1..10 becomes a refusal the person can act on.

Submits are handled statelessly from the raw payload (``ooda:modal:<kind>:<task id>`` plus the
typed values), not by the Modal object discord.py would keep in memory: a modal left open across a
restart, or submitted twice, is still answered.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import discord

from bot.chat import wording
from bot.errors import UserError
from bot.loop.approvals import check_edit, confirmation_phrase
from bot.loop.readable import bound_text
from bot.model.proposals import ParamBound, Proposal, RiskBand
from bot.playbooks.param_paths import param_at

MODAL_TITLE_MAX = 45
LABEL_MAX = 45
DESCRIPTION_MAX = 100
MAX_INPUTS = 5  # a modal holds at most 5 top-level components
CONFIRM_INPUT = "confirmation"

MODAL_ID_PATTERN = re.compile(r"ooda:modal:(?P<kind>reject|edit|confirm):(?P<task>\d+)")


class InvalidEdit(UserError):
    """An edited value outside the step's bounds; nothing was approved."""


class FormModal(discord.ui.Modal):
    """A modal of labelled text inputs; its submit is read by ``modal_values`` from the payload."""

    def __init__(self, *, title: str, custom_id: str) -> None:
        super().__init__(title=wording.truncate(title, MODAL_TITLE_MAX), custom_id=custom_id, timeout=None)

    def add_input(self, key: str, label: str, *, description: str | None = None, default: str | None = None,
                  placeholder: str | None = None, long: bool = False, required: bool = True) -> None:
        text: discord.ui.TextInput[Any] = discord.ui.TextInput(
            custom_id=key,
            style=discord.TextStyle.paragraph if long else discord.TextStyle.short,
            default=default,
            placeholder=wording.truncate(placeholder, 100) if placeholder else None,
            required=required,
            max_length=1000,
        )
        self.add_item(discord.ui.Label(
            text=wording.truncate(label, LABEL_MAX),
            description=wording.truncate(description, DESCRIPTION_MAX) if description else None,
            component=text,
        ))



def modal_values(data: Mapping[str, Any]) -> dict[str, str]:
    """Text input values keyed by custom_id from a modal submit payload (rows or labels)."""
    values: dict[str, str] = {}
    pending = list(data.get("components", []))
    while pending:
        component = pending.pop(0)
        if component.get("type") == 1:
            pending.extend(component.get("components", []))
        elif component.get("type") == 18:
            pending.append(component.get("component", {}))
        elif component.get("type") == 4 and "custom_id" in component:
            values[component["custom_id"]] = str(component.get("value") or "")
    return values


def reject_modal(task_id: int) -> FormModal:
    modal = FormModal(title=f"Reject task #{task_id}", custom_id=f"ooda:modal:reject:{task_id}")
    modal.add_input("reason", "Why reject?", placeholder="wrong service, not during the freeze, ...", long=True)
    return modal


def confirm_modal(task_id: int) -> FormModal:
    modal = FormModal(title=f"Approve task #{task_id}", custom_id=f"ooda:modal:confirm:{task_id}")
    modal.add_input(CONFIRM_INPUT, "Confirmation phrase",
                    description=f"Critical risk: type `{confirmation_phrase(task_id)}` exactly.")
    return modal


def edit_keys(proposal: Proposal) -> list[tuple[str, str, str, ParamBound]]:
    """(input key, step name, param, bound) of the editable params a modal can hold."""
    keys = [
        (f"{step.index}.{param}"[:100], step.name, param, bound)
        for step in proposal.steps
        for param, bound in step.editable.items()
    ]
    room = MAX_INPUTS - (1 if proposal.risk.band is RiskBand.critical else 0)
    return keys[:room]


def describe_bound(bound: ParamBound) -> str:
    return bound_text(bound)  # the same words as Slack's hint and the core's refusals


def edit_modal(proposal: Proposal) -> FormModal:
    modal = FormModal(title=f"Edit and approve #{proposal.task_id}", custom_id=f"ooda:modal:edit:{proposal.task_id}")
    params = {s.name: s.params for s in proposal.steps}
    for key, step_name, param, bound in edit_keys(proposal):
        current = param_at(params[step_name], param)
        modal.add_input(key, f"{step_name}: {param}", description=describe_bound(bound),
                        default=None if current is None else str(current))
    if proposal.risk.band is RiskBand.critical:
        modal.add_input(CONFIRM_INPUT, "Confirmation phrase", required=False,
                        description=f"Critical risk: type `{confirmation_phrase(proposal.task_id)}` exactly.")
    return modal


def parse_value(label: str, raw: str, bound: ParamBound) -> Any:
    """``raw`` converted to the bound's type and checked by the core's rule; raises InvalidEdit."""
    raw = raw.strip()
    if bound.type == "bool" and raw.lower() not in {"true", "false", "yes", "no", "on", "off", "1", "0"}:
        # The core reads any other text as false; a typo in a modal must not flip a flag off.
        raise InvalidEdit(f"{label} must be true or false, got {wording.truncate(raw, 40)!r}.")
    value, problem = check_edit(label, raw, bound)
    if problem:
        raise InvalidEdit(f"{wording.neutralize_mentions(problem)}. Allowed: {describe_bound(bound)}.")
    return value


def parse_edits(proposal: Proposal, values: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The changed params, as ``Commands.approve(edits=...)`` takes them, from the modal values.

    Bounds come from the proposal as it stands at submit time, not when the modal was opened.
    """
    params = {s.name: s.params for s in proposal.steps}
    edits: dict[str, dict[str, Any]] = {}
    for key, step_name, param, bound in edit_keys(proposal):
        if key not in values:
            continue
        value = parse_value(f"{step_name}.{param}", values[key], bound)
        if param_at(params[step_name], param) != value:
            edits.setdefault(step_name, {})[param] = value
    return edits
