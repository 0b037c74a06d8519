"""The incident suite format: recorded incidents with the outcome each should lead to.

A suite is a folder of ``*.yaml`` incident files (format in ``incidents/README.md``), optionally
with a ``suite.yaml`` holding defaults (``start``: the time the first delivery of every incident
is seen at, so change windows and freezes are evaluated against a fixed moment). Each incident
holds the exact webhook bodies senders posted, in order and with their timing, the tool answers
recorded for it (``evidence``), and what it must lead to (``expect``), including what must never
happen.

Loading never runs anything; ``SuiteError`` names the file and the field that is wrong.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from bot.model.tasks import TaskState
from bot.policy.risk import BlastRadius

Sender = Literal["alertmanager", "grafana", "pagerduty", "generic"]
SUITE_DEFAULTS = "suite.yaml"
ACCEPTED = 202

# What an incident may declare must never happen (``expect.never``); the safety checks that
# apply to every incident (bot/evaluation/scoring.py) come on top of these.
NEVER_KINDS = frozenset({
    "task",            # no task at all (a storm of noise, an unknown alert)
    "auto_write",      # no write runs without a human, whatever the autonomy
    "write",           # no write step is even proposed
    "mass_mention",    # no @here / @channel / @everyone reaches chat
})


class SuiteError(Exception):
    """An incident file that cannot be loaded; the message names the file and the field."""


class Delivery(BaseModel):
    """One webhook request: ``at_s`` seconds after the first, by ``sender``, with one body.

    ``status`` is what Ooda must answer: 202 for a body it accepts, a 4xx for a malformed one
    (whose ``body_file`` then need not be JSON)."""

    model_config = ConfigDict(extra="forbid")

    at_s: float = Field(ge=0)
    sender: Sender
    body: dict[str, Any] | None = None
    body_file: str | None = None
    status: int = Field(default=ACCEPTED, ge=200, le=499)
    _raw: bytes = PrivateAttr(default=b"")

    @model_validator(mode="after")
    def one_body(self) -> Delivery:
        if (self.body is None) == (self.body_file is None):
            raise ValueError("give exactly one of body (inline JSON) or body_file (a file beside the incident)")
        return self

    @property
    def raw(self) -> bytes:
        """The exact bytes to post: a body file verbatim, an inline body as compact JSON."""
        return self._raw


class RecordedCall(BaseModel):
    """One tool answer recorded for the incident: what ``tool`` returned for ``params``.

    A call is matched on tool and params; a recording without ``params`` answers any call of its
    tool. ``ok: false`` with ``error`` records a tool that failed."""

    model_config = ConfigDict(extra="forbid")

    tool: str = Field(min_length=1)
    params: dict[str, Any] | None = None
    ok: bool = True
    result: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None


class Setup(BaseModel):
    """The world the incident happens in, beyond the bodies: the kill switch and policy changes
    (a freeze, a tighter cap) merged over the policy under evaluation."""

    model_config = ConfigDict(extra="forbid")

    kill_switch: bool = False
    policy: dict[str, Any] = Field(default_factory=dict)


class Expectation(BaseModel):
    """What the whole incident must lead to."""

    model_config = ConfigDict(extra="forbid")

    tasks: int = Field(ge=0)
    # One playbook id for all tasks, a map of playbook id -> task count, or null for "no playbook".
    playbook: str | dict[str, int] | None = None
    steps: list[str] = Field(default_factory=list)
    state: list[TaskState] | None = None
    never: list[str] = Field(default_factory=list)
    max_blast_radius: BlastRadius | None = None
    # A person's words about what should have happened (a rejection's reason when recorded).
    feedback: str | None = None

    @field_validator("state", mode="before")
    @classmethod
    def one_or_many_states(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("never")
    @classmethod
    def known_never(cls, value: list[str]) -> list[str]:
        for item in value:
            kind = item.split(":", 1)[0]
            if kind not in NEVER_KINDS and kind != "step":
                raise ValueError(f"never: {item!r} is not one of {sorted(NEVER_KINDS)} or step:NAME")
        return value

    @model_validator(mode="after")
    def counts_agree(self) -> Expectation:
        if isinstance(self.playbook, dict) and sum(self.playbook.values()) != self.tasks:
            raise ValueError(f"playbook counts add up to {sum(self.playbook.values())}, but tasks is {self.tasks}")
        if self.playbook is None and self.tasks:
            raise ValueError(f"tasks is {self.tasks} but playbook is null; name the playbook that should open them")
        if self.playbook is not None and not self.tasks:
            raise ValueError("tasks is 0 but a playbook is named; use playbook: null when nothing should trigger")
        return self

    def expected_counts(self) -> dict[str, int]:
        if self.playbook is None:
            return {}
        if isinstance(self.playbook, str):
            return {self.playbook: self.tasks}
        return dict(self.playbook)

    @property
    def may_escalate(self) -> bool:
        """An incident may expect the bot to refuse to plan (hand it to a human) instead of proposing."""
        return self.state is not None and TaskState.escalated_to_human in self.state


class Incident(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = ""  # the file stem, set by the loader
    title: str = Field(min_length=1)
    start: AwareDatetime | None = None
    setup: Setup = Field(default_factory=Setup)
    deliveries: list[Delivery] = Field(min_length=1)
    evidence: list[RecordedCall] = Field(default_factory=list)
    expect: Expectation

    @model_validator(mode="after")
    def in_order(self) -> Incident:
        times = [d.at_s for d in self.deliveries]
        if times != sorted(times):
            raise ValueError(f"deliveries must be in order of at_s, got {times}")
        return self


class Suite(BaseModel):
    folder: Path
    start: datetime | None = None
    incidents: list[Incident]


class SuiteDefaults(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: AwareDatetime | None = None


def load_suite(folder: Path) -> Suite:
    """Load every ``*.yaml`` incident in ``folder`` (but ``suite.yaml``), in file-name order.

    Raises:
        SuiteError: naming the file and the field that is wrong.
    """
    if not folder.is_dir():
        raise SuiteError(f"{folder}: not a folder; give the folder holding the incident files")
    defaults = SuiteDefaults()
    if (folder / SUITE_DEFAULTS).exists():
        defaults = _validated(folder / SUITE_DEFAULTS, SuiteDefaults, {})
    files = sorted(p for p in folder.glob("*.yaml") if p.name != SUITE_DEFAULTS)
    if not files:
        raise SuiteError(f"{folder}: no incident files (*.yaml) found")
    return Suite(folder=folder, start=defaults.start, incidents=[load_incident(path) for path in files])


def _validated(path: Path, model: type[Any], extra: dict[str, Any]) -> Any:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise SuiteError(f"{path.name}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise SuiteError(f"{path.name}: must be a mapping (see incidents/README.md for the format)")
    try:
        return model.model_validate({**data, **extra})
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top level)"
        raise SuiteError(f"{path.name}: {where}: {first['msg']}") from exc


def load_incident(path: Path) -> Incident:
    incident: Incident = _validated(path, Incident, {"name": path.stem})
    for index, delivery in enumerate(incident.deliveries):
        if delivery.body_file is None:
            delivery._raw = json.dumps(delivery.body, separators=(",", ":")).encode()
            continue
        try:
            delivery._raw = (path.parent / delivery.body_file).read_bytes()
        except OSError as exc:
            raise SuiteError(f"{path.name}: deliveries.{index}.body_file: cannot read {delivery.body_file}: "
                             f"{exc.strerror}") from exc
        if delivery.status == ACCEPTED:
            try:
                json.loads(delivery._raw)
            except ValueError as exc:
                raise SuiteError(f"{path.name}: deliveries.{index}.body_file: {delivery.body_file} is not JSON "
                                 f"({exc}); set status: 400 when the body is malformed on purpose") from exc
    return incident
