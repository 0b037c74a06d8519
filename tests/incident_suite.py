"""The incident suite: real alert deliveries replayed against a running Ooda, scored per playbook.

Each file in ``incidents/`` (format in ``incidents/README.md``) is one incident: the exact webhook
bodies senders posted, in order, and what the bot should have done with them. ``run_incident``
posts them to ``/webhooks/<sender>`` of a running App, waits for the engine after each, and reads
what the store then holds: the tasks opened, their proposed steps, the steps that ran and the
approvals recorded. ``score`` turns the outcomes into per-playbook precision and recall, planning
failures and safety violations.

Tasks are read from the store rather than ``GET /api/v1/tasks`` because the steps' policy
decisions and the approval records, which the safety check needs, are not part of that listing.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import httpx
import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from bot.app import App
from bot.cli import sign_headers
from bot.tasks import Task, TaskState
from tests.harness import ENV

Sender = Literal["alertmanager", "grafana", "pagerduty", "generic"]
Sign = Callable[[str, bytes], Mapping[str, str]]

PLANNING_FAILED = "planning failed"
# Where a step that a human had to approve may have run only with an approval on record.
GUARDED_VERDICTS = frozenset({"needs_approval", "deny"})


class SuiteError(Exception):
    """An incident file that cannot be loaded; the message names the file and the field."""


class Delivery(BaseModel):
    """One webhook request: ``at_s`` seconds after the first, by ``sender``, with one body."""

    model_config = ConfigDict(extra="forbid")

    at_s: float = Field(ge=0)
    sender: Sender
    body: dict[str, Any] | None = None
    body_file: str | None = None
    _raw: bytes = PrivateAttr(default=b"")

    @model_validator(mode="after")
    def one_body(self) -> Delivery:
        if (self.body is None) == (self.body_file is None):
            raise ValueError("give exactly one of body (inline JSON) or body_file (a .json beside the incident)")
        return self

    @property
    def raw(self) -> bytes:
        """The exact bytes to post: a body file verbatim, an inline body as compact JSON."""
        return self._raw


class Expectation(BaseModel):
    """What the whole incident must lead to."""

    model_config = ConfigDict(extra="forbid")

    tasks: int = Field(ge=0)
    # One playbook id for all tasks, a map of playbook id -> task count, or null for "no playbook".
    playbook: str | dict[str, int] | None = None
    steps: list[str] = Field(default_factory=list)
    state: list[TaskState] | None = None

    @field_validator("state", mode="before")
    @classmethod
    def one_or_many_states(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

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
    deliveries: list[Delivery] = Field(min_length=1)
    expect: Expectation

    @model_validator(mode="after")
    def in_order(self) -> Incident:
        times = [d.at_s for d in self.deliveries]
        if times != sorted(times):
            raise ValueError(f"deliveries must be in order of at_s, got {times}")
        return self


def load_suite(folder: Path) -> list[Incident]:
    """Load every ``*.yaml`` incident in ``folder``, in file-name order.

    Raises:
        SuiteError: naming the file and the field that is wrong.
    """
    files = sorted(folder.glob("*.yaml"))
    if not files:
        raise SuiteError(f"{folder}: no incident files (*.yaml) found")
    return [load_incident(path) for path in files]


def load_incident(path: Path) -> Incident:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SuiteError(f"{path.name}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise SuiteError(f"{path.name}: must be a mapping with title, deliveries and expect")
    try:
        incident = Incident.model_validate({**data, "name": path.stem})
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top level)"
        raise SuiteError(f"{path.name}: {where}: {first['msg']}") from exc
    for index, delivery in enumerate(incident.deliveries):
        if delivery.body_file is not None:
            body_path = path.parent / delivery.body_file
            try:
                delivery._raw = body_path.read_bytes()
                json.loads(delivery._raw)
            except OSError as exc:
                raise SuiteError(f"{path.name}: deliveries.{index}.body_file: cannot read {delivery.body_file}: "
                                 f"{exc.strerror}") from exc
            except ValueError as exc:
                raise SuiteError(f"{path.name}: deliveries.{index}.body_file: {delivery.body_file} is not JSON: "
                                 f"{exc}") from exc
        else:
            delivery._raw = json.dumps(delivery.body, separators=(",", ":")).encode()
    return incident


class SuiteClock:
    """The App's clock during an incident: ``start`` plus the incident's offset plus real time.

    Real time keeps running under the offset so that ordering by time still holds between
    deliveries that share an ``at_s``.
    """

    def __init__(self, start: datetime) -> None:
        self.start = start
        self.offset_s = 0.0
        self._origin = time.monotonic()

    def __call__(self) -> datetime:
        return self.start + timedelta(seconds=self.offset_s + time.monotonic() - self._origin)

    def advance_to(self, at_s: float) -> None:
        self.offset_s = max(self.offset_s, at_s)


def harness_sign(sender: str, body: bytes) -> dict[str, str]:
    """Headers the example config (``tests.harness``) accepts from each sender."""
    if sender == "alertmanager":
        return {"Authorization": f"Bearer {ENV['OODA_ALERTMANAGER_TOKEN']}"}
    if sender == "grafana":
        return {"Authorization": f"Bearer {ENV['OODA_GRAFANA_TOKEN']}"}
    secret = {"pagerduty": "OODA_PAGERDUTY_SECRET", "generic": "OODA_GENERIC_SECRET"}[sender]
    return sign_headers(sender, body, ENV[secret])


@dataclass
class TaskSeen:
    id: int
    playbook_id: str
    state: TaskState
    outcome: str | None
    proposed: bool
    write_steps: list[str]
    ran_unapproved: list[str]

    @property
    def planning_failed(self) -> bool:
        return not self.proposed or (self.outcome or "").startswith(PLANNING_FAILED)


@dataclass
class Outcome:
    incident: Incident
    tasks: list[TaskSeen]
    delivery_errors: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.incident.name

    def counts(self) -> dict[str, tuple[int, int, int]]:
        """playbook id -> (true positives, false positives, false negatives) in this incident."""
        expected = self.incident.expect.expected_counts()
        opened = Counter(task.playbook_id for task in self.tasks)
        result = {}
        for playbook in sorted(set(expected) | set(opened)):
            true = min(expected.get(playbook, 0), opened[playbook])
            result[playbook] = (true, opened[playbook] - true, expected.get(playbook, 0) - true)
        return result

    def planning_failures(self) -> list[str]:
        if self.incident.expect.may_escalate:
            return []
        return [f"{self.name}: task {t.id} ({t.playbook_id}): {t.outcome or 'no proposal'}"
                for t in self.tasks if t.planning_failed]

    def safety_violations(self) -> list[str]:
        return [f"{self.name}: task {t.id} ({t.playbook_id}) ran {', '.join(t.ran_unapproved)} without an approval"
                for t in self.tasks if t.ran_unapproved]

    def step_mismatches(self) -> list[str]:
        wanted = self.incident.expect.steps
        expected = self.incident.expect.expected_counts()
        problems = []
        for task in self.tasks:
            missing = [s for s in wanted if s not in task.write_steps]
            if task.playbook_id in expected and missing and not task.planning_failed:
                proposed = task.write_steps or "no write step"
                problems.append(f"{self.name}: task {task.id} ({task.playbook_id}) proposes {proposed}, "
                                f"missing {missing}")
        return problems

    def state_mismatches(self) -> list[str]:
        states = self.incident.expect.state
        if states is None:
            return []
        return [f"{self.name}: task {t.id} ({t.playbook_id}) is {t.state.value}, expected one of "
                f"{[s.value for s in states]}" for t in self.tasks if t.state not in states]


async def run_incident(app: App, http: httpx.AsyncClient, incident: Incident, sign: Sign, *,
                       clock: SuiteClock | None = None) -> Outcome:
    """Post the incident's deliveries to a running Ooda with a fresh store and read what it did.

    Args:
        app: a running App whose store holds no tasks yet.
        http: a client with the App's base URL.
        incident: from ``load_suite``.
        sign: headers for a sender and a body (``harness_sign`` for the test config).
        clock: the App's clock, if it was started with a ``SuiteClock``: moved to each ``at_s``.

    Returns:
        The tasks the incident opened and any delivery the bot refused.
    """
    errors = []
    for index, delivery in enumerate(incident.deliveries):
        if clock is not None:
            clock.advance_to(delivery.at_s)
        headers = {"Content-Type": "application/json", **sign(delivery.sender, delivery.raw)}
        response = await http.post(f"/webhooks/{delivery.sender}", content=delivery.raw, headers=headers)
        if response.status_code != 202:
            errors.append(f"{incident.name}: delivery {index} ({delivery.sender}) answered "
                          f"{response.status_code}: {response.text[:300]}")
        await app.engine.wait_idle()
    return Outcome(incident, await tasks_seen(app), errors)


async def tasks_seen(app: App) -> list[TaskSeen]:
    seen = []
    for task in sorted(await app.store.list_tasks(open_only=False, limit=1000), key=lambda t: t.id):
        seen.append(await task_seen(app, task))
    return seen


async def task_seen(app: App, task: Task) -> TaskSeen:
    steps = await app.store.steps_of_task(task.id, "step")
    approved = any(a.verdict == "approve" for a in await app.store.approvals_of_task(task.id))
    ran_unapproved = [s.name for s in steps if s.state == "succeeded" and not approved
                      and (s.decision or {}).get("verdict") in GUARDED_VERDICTS]
    return TaskSeen(
        id=task.id, playbook_id=task.playbook_id, state=task.state, outcome=task.outcome,
        proposed=task.proposal is not None,
        write_steps=[s.name for s in sorted(steps, key=lambda s: s.idx) if s.category != "read"],
        ran_unapproved=ran_unapproved,
    )


@dataclass
class PlaybookScore:
    true_positives: int = 0
    false_positives: int = 0
    false_negatives: int = 0

    @property
    def precision(self) -> float:
        opened = self.true_positives + self.false_positives
        return self.true_positives / opened if opened else 1.0

    @property
    def recall(self) -> float:
        expected = self.true_positives + self.false_negatives
        return self.true_positives / expected if expected else 1.0


@dataclass
class Report:
    incidents: int
    per_playbook: dict[str, PlaybookScore]
    planning_failures: list[str]
    safety_violations: list[str]
    step_mismatches: list[str]
    state_mismatches: list[str]
    delivery_errors: list[str]
    missed: list[str]  # incidents with a false negative or a false positive, for the table

    @property
    def total(self) -> PlaybookScore:
        return PlaybookScore(sum(s.true_positives for s in self.per_playbook.values()),
                             sum(s.false_positives for s in self.per_playbook.values()),
                             sum(s.false_negatives for s in self.per_playbook.values()))

    @property
    def recall(self) -> float:
        return self.total.recall

    @property
    def precision(self) -> float:
        return self.total.precision

    def table(self) -> str:
        lines = [f"{'playbook':<28} {'TP':>4} {'FP':>4} {'FN':>4} {'precision':>10} {'recall':>8}"]
        for playbook, s in sorted(self.per_playbook.items()):
            lines.append(f"{playbook:<28} {s.true_positives:>4} {s.false_positives:>4} {s.false_negatives:>4} "
                         f"{s.precision:>10.2f} {s.recall:>8.2f}")
        t = self.total
        overall = f"all ({self.incidents} incidents)"
        lines.append(f"{overall:<28} {t.true_positives:>4} {t.false_positives:>4} {t.false_negatives:>4} "
                     f"{t.precision:>10.2f} {t.recall:>8.2f}")
        sections = [("missed or extra tasks", self.missed), ("planning failures", self.planning_failures),
                    ("safety violations", self.safety_violations), ("step mismatches", self.step_mismatches),
                    ("state mismatches", self.state_mismatches), ("refused deliveries", self.delivery_errors)]
        for heading, items in sections:
            lines.append(f"{heading}: {len(items)}")
            lines += [f"  - {item}" for item in items]
        return "\n".join(lines)


def score(outcomes: list[Outcome]) -> Report:
    """Per-playbook and overall precision and recall of the tasks the incidents opened."""
    per_playbook: dict[str, PlaybookScore] = {}
    missed = []
    for outcome in outcomes:
        for playbook, (true, false, missing) in outcome.counts().items():
            s = per_playbook.setdefault(playbook, PlaybookScore())
            s.true_positives += true
            s.false_positives += false
            s.false_negatives += missing
            if false or missing:
                missed.append(f"{outcome.name}: {playbook}: {true + false} opened, {true + missing} expected")
    return Report(
        incidents=len(outcomes),
        per_playbook=per_playbook,
        planning_failures=[p for o in outcomes for p in o.planning_failures()],
        safety_violations=[v for o in outcomes for v in o.safety_violations()],
        step_mismatches=[m for o in outcomes for m in o.step_mismatches()],
        state_mismatches=[m for o in outcomes for m in o.state_mismatches()],
        delivery_errors=[e for o in outcomes for e in o.delivery_errors],
        missed=missed,
    )
