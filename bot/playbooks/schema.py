"""Playbooks: the YAML schema, loading with errors that name file, line and field, and the set.

A playbook says when it triggers (``trigger``), what to read first (``evidence``), whether to go
on (``condition``), what to change (``steps``, each with its rollback and blast radius), how to
check that it worked (``verify``) and how far it may act alone (``autonomy_cap``). Params are
Jinja2 templates rendered by ``bot.playbooks.templates`` in a sandbox; labels are data, never templates.

Loading validates everything that can be known before an incident: the schema here (unknown
keys, types, regexes) and the static checks in ``bot.playbooks.checks`` (template syntax, the
names templates refer to and, given the tool registry, tool names and param keys). All problems
of all files are reported at once, each as ``file:line: field: problem``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import structlog
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
)

from bot.errors import ConfigError, UserError
from bot.model.proposals import Category, ParamBound
from bot.model.signals import Severity, Signal
from bot.playbooks import matching
from bot.playbooks.checks import static_problems
from bot.playbooks.cron import cron_trigger
from bot.policy.autonomy import Autonomy, AutonomyLevel
from bot.policy.risk import BlastRadius
from bot.yamlfile import YamlDocument, load_yaml, parse_yaml

log = structlog.get_logger(__name__)


def _scalar_to_str(value: Any) -> Any:
    # YAML reads `version: 3` and `code: 500` as ints; labels and versions are strings.
    return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


Text = Annotated[str, BeforeValidator(_scalar_to_str)]
StepName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)]


def _compile_fullmatch(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from exc


def _valid_regex(pattern: str) -> str:
    _compile_fullmatch(pattern)
    return pattern


Regex = Annotated[str, AfterValidator(_valid_regex)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Matchers(_Strict):
    """Which signals a trigger takes: source, label matchers and severity (all must hold)."""

    sources: list[str] | None = None
    match: dict[str, Text] = Field(default_factory=dict)
    match_re: dict[str, Regex] = Field(default_factory=dict)
    match_in: dict[str, list[Text]] = Field(default_factory=dict)
    severity: list[Severity] | None = None

    _matcher: matching.Matcher | None = PrivateAttr(default=None)

    def model_post_init(self, context: Any) -> None:
        self._matcher = matching.Matcher(self)

    @property
    def matcher(self) -> matching.Matcher:
        """The compiled form ``bot.playbooks.matching`` runs for every signal."""
        assert self._matcher is not None  # set in model_post_init
        return self._matcher

    def alertnames(self) -> list[str] | None:
        """The alert names this trigger is limited to, or None when it takes any (an index key)."""
        if "alertname" in self.match:
            return [self.match["alertname"]]
        if "alertname" in self.match_in:
            return list(self.match_in["alertname"])
        return None


class ExtraTrigger(Matchers):
    """``triggers.<playbook id>`` in config: a team's own alert that runs a shipped playbook."""


class Trigger(Matchers):
    """When a signal opens (or joins) a task of this playbook."""

    group_by: list[str] = Field(default_factory=list)
    group_window_s: float = Field(default=300, ge=0)
    cooldown_s: float = Field(default=600, ge=0)


class ArgSpec(_Strict):
    """One argument of a manual run (``ooda run PLAYBOOK key=value``, ``/ops run``)."""

    required: bool = False
    default: Text | None = None
    pattern: Regex | None = None  # fullmatch
    description: str = ""


class ReadStep(_Strict):
    """An evidence step. All of them run concurrently; results are ``evidence.<name>``.

    The engine must refuse a call that the tool does not classify as a read.
    """

    name: StepName
    tool: str
    description: str = ""
    params: dict[str, Any] = Field(default_factory=dict)
    timeout_s: float = Field(default=10, gt=0, le=600)
    retries: int = Field(default=0, ge=0, le=5)


class StepCallSpec(_Strict):
    """A tool call written in a playbook: a rollback, for example.

    A rollback's params may use ``result``: the result of the step it undoes, as a dict.
    """

    tool: str
    params: dict[str, Any] = Field(default_factory=dict)


class Schedule(_Strict):
    """A scheduled check: the playbook runs on a clock, as ``ooda run`` would with these args.

    A run is skipped while the previous run of the same args is still open, so a slow approval
    does not pile up one proposal per tick.
    """

    cron: str  # minute hour day month weekday, as in crontab
    timezone: str = "UTC"
    args: dict[str, Text] = Field(default_factory=dict)
    # A shipped check can be off until a team turns it on; an off one is listed, never run.
    enabled: bool = True

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        cron_trigger(value)  # the time zone is checked on its own field
        return value

    @field_validator("timezone")
    @classmethod
    def _valid_zone(cls, value: str) -> str:
        cron_trigger("* * * * *", value)
        return value


class Step(_Strict):
    """A step that may change something. Steps run in order."""

    name: StepName
    tool: str
    description: str = ""
    params: dict[str, Any] = Field(default_factory=dict)
    category: Category | None = None  # None: the tool decides (Tool.category_of)
    # Assume a whole service is affected unless the author says it is narrower.
    blast_radius: BlastRadius = BlastRadius.service
    # Params an approver may change, with bounds (checked in bot/loop/approvals.py); a dotted key
    # reaches inside a param (bot/playbooks/param_paths.py).
    editable: dict[str, ParamBound] = Field(default_factory=dict)
    rollback: StepCallSpec | None = None  # tools that know their own rollback (flags.set) need none
    timeout_s: float = Field(default=30, gt=0, le=3600)
    retries: int = Field(default=0, ge=0, le=5)


class Verify(_Strict):
    """After the steps: call ``tool`` every ``interval_s`` until ``expect`` is true or ``within_s``
    has passed. ``expect`` sees the usual context plus ``result``, the verify call's result as a
    dict (for ``http.request``: ``status``, ``headers``, ``body``; ``body | from_json`` parses it).
    """

    tool: str
    params: dict[str, Any] = Field(default_factory=dict)
    expect: str
    within_s: float = Field(default=300, gt=0, le=86400)
    interval_s: float = Field(default=15, gt=0)


class Playbook(_Strict):
    id: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]*$", max_length=64)]
    version: Text = "1"
    description: str = ""
    trigger: Trigger | None = None  # None: manual runs only
    args: dict[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")], ArgSpec] = Field(default_factory=dict)
    evidence: list[ReadStep] = Field(default_factory=list)
    condition: str | None = None
    steps: list[Step] = Field(default_factory=list)
    verify: Verify | None = None
    autonomy_cap: AutonomyLevel = Autonomy.L2
    # shadow: runs through decide on live alerts, proposes, never acts (bot/loop/shadow.py).
    mode: Literal["active", "shadow"] = "active"
    routing: dict[str, str] = Field(default_factory=dict)
    schedules: list[Schedule] = Field(default_factory=list)

    _source: str = PrivateAttr(default="")

    @property
    def source(self) -> str:
        """``file:line`` the playbook was loaded from (empty when built in code)."""
        return self._source

    def step(self, name: str) -> Step:
        for step in self.steps:
            if step.name == name:
                return step
        known = ", ".join(s.name for s in self.steps) or "none"
        raise UserError(f"playbook {self.id!r} has no step {name!r}; its steps: {known}")

    def resolve_args(self, given: Mapping[str, str]) -> dict[str, str]:
        """Check manual-run args against ``args`` and fill in defaults.

        Raises:
            UserError: unknown, missing or malformed args, worded for the person running it.
        """
        problems = []
        unknown = sorted(set(given) - set(self.args))
        if unknown:
            known = ", ".join(sorted(self.args)) or "none"
            problems.append(f"unknown argument(s) {', '.join(unknown)} (this playbook takes: {known})")
        resolved: dict[str, str] = {}
        for name, spec in self.args.items():
            value = given.get(name, spec.default)
            if value is None:
                if spec.required:
                    hint = f" ({spec.description})" if spec.description else ""
                    problems.append(f"missing required argument {name}=…{hint}")
                continue
            if spec.pattern is not None and re.fullmatch(spec.pattern, value) is None:
                problems.append(f"argument {name}={value[:80]!r} does not match the pattern {spec.pattern!r}")
                continue
            resolved[name] = value
        if problems:
            raise UserError(f"cannot run playbook {self.id!r}: " + "; ".join(problems))
        return resolved

    def group_key(self, labels: Mapping[str, str]) -> str:
        return matching.group_key(self, labels)


class PlaybookSet:
    """The loaded playbooks, by id, with a fast path for matching by ``alertname``."""

    def __init__(self, playbooks: Iterable[Playbook]) -> None:
        self._by_id: dict[str, Playbook] = {}
        for playbook in playbooks:
            if playbook.id in self._by_id:
                raise ConfigError(f"duplicate playbook id {playbook.id!r}")
            self._by_id[playbook.id] = playbook
        # Most triggers pin alertname; indexing on it keeps a storm's matching cost flat.
        self._by_alertname: dict[str, list[tuple[Playbook, matching.Matcher]]] = {}
        self._unindexed: list[tuple[Playbook, matching.Matcher]] = []
        for playbook in self._by_id.values():
            if playbook.trigger is not None:
                self._index(playbook, playbook.trigger)

    def _index(self, playbook: Playbook, trigger: Matchers) -> None:
        entry = (playbook, trigger.matcher)
        names = trigger.alertnames()
        if names is None:
            self._unindexed.append(entry)
        for name in names or ():
            self._by_alertname.setdefault(name, []).append(entry)

    def add_triggers(self, extra: Mapping[str, Iterable[ExtraTrigger]]) -> None:
        """Let more alerts trigger loaded playbooks (``triggers:`` in config).

        Raises:
            ConfigError: a playbook id that is not loaded, or one that only runs by hand.
        """
        problems = []
        for playbook_id, triggers in extra.items():
            if playbook_id not in self._by_id:
                close = difflib.get_close_matches(playbook_id, self._by_id, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                problems.append(f"triggers.{playbook_id}: no playbook {playbook_id!r} is loaded{hint} "
                                f"(loaded: {', '.join(self.ids) or 'none'})")
                continue
            playbook = self._by_id[playbook_id]
            if playbook.trigger is None:
                problems.append(f"triggers.{playbook_id}: playbook {playbook_id!r} has no trigger (it runs by "
                                "hand only), so alerts cannot be mapped onto it")
                continue
            for trigger in triggers:
                self._index(playbook, trigger)
        if problems:
            raise ConfigError(f"{len(problems)} problem(s) in triggers", problems)

    def __iter__(self) -> Iterator[Playbook]:
        return iter(self._by_id.values())

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, playbook_id: object) -> bool:
        return playbook_id in self._by_id

    @property
    def ids(self) -> list[str]:
        return sorted(self._by_id)

    def get(self, playbook_id: str) -> Playbook:
        """Raises ``UserError`` naming the known ids, with a "did you mean" when one is close."""
        try:
            return self._by_id[playbook_id]
        except KeyError:
            close = difflib.get_close_matches(playbook_id, self._by_id, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            known = ", ".join(self.ids) or "none loaded"
            raise UserError(f"no playbook {playbook_id!r}.{hint} Known playbooks: {known}") from None

    def match(self, signal: Signal) -> list[Playbook]:
        """Every playbook whose trigger matches ``signal``, in id order, those in shadow mode (by
        their file) last: the engine gives an alert to the first, so a shadow playbook never takes
        one from a playbook that acts."""
        candidates = self._by_alertname.get(signal.labels.get("alertname", ""))
        if candidates is None and not self._unindexed:
            return []  # most alerts of a storm nobody wrote a playbook for
        found = [p for p, matcher in (*(candidates or ()), *self._unindexed) if matcher(signal)]
        if len(found) > 1:
            # A playbook can match through its own trigger and a config one: list it once.
            found = sorted({p.id: p for p in found}.values(), key=lambda p: (p.mode == "shadow", p.id))
        return found


# --- loading -------------------------------------------------------------------------------

def load_playbooks(
    directory: Path | str, known_tools: Mapping[str, type[BaseModel]] | None = None
) -> PlaybookSet:
    """Load every ``*.yaml`` / ``*.yml`` file in ``directory``.

    Args:
        directory: one playbook per file.
        known_tools: tool name -> params model, from the tool registry. When given, tool names
            and param keys are checked too (values are templates, so only keys are static).

    Raises:
        ConfigError: with one ``file:line: field: problem`` line per problem, for all files.
    """
    path = Path(directory)
    if not path.is_dir():
        raise ConfigError(f"playbook directory {path} does not exist; create it or fix playbooks.directory")
    files = sorted([*path.glob("*.yaml"), *path.glob("*.yml")])
    if not files:
        log.warning("playbooks.none_found", directory=str(path))
    return load_playbook_files(files, known_tools)


def load_playbook_files(
    files: Iterable[Path], known_tools: Mapping[str, type[BaseModel]] | None = None
) -> PlaybookSet:
    """Like ``load_playbooks`` for an explicit list of files (lint, replay of one version)."""
    return load_playbook_texts({Path(f): None for f in files}, known_tools)


def load_playbook_texts(
    texts: Mapping[Path, str | None], known_tools: Mapping[str, type[BaseModel]] | None = None
) -> PlaybookSet:
    """Like ``load_playbook_files`` for playbooks given as text, each under the name its problems
    are reported with (None: read the file of that name). ``ooda replay`` sends the server the
    files of a version that is not deployed."""
    problems: list[str] = []
    loaded: list[tuple[Playbook, YamlDocument]] = []
    for file, text in texts.items():
        try:
            doc = load_yaml(file) if text is None else parse_yaml(text, file)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        playbook, file_problems = _validate(doc, known_tools)
        problems.extend(file_problems)
        if playbook is not None:
            loaded.append((playbook, doc))
    first_seen: dict[str, str] = {}
    for playbook, doc in loaded:
        where = f"{doc.path}:{doc.line_of(('id',))}"
        if playbook.id in first_seen:
            other = first_seen[playbook.id]
            problems.append(f"{where}: id: duplicate playbook id {playbook.id!r}, also defined at {other}")
        else:
            first_seen[playbook.id] = where
    if problems:
        count = len(problems)
        raise ConfigError(f"{count} problem{'s' if count > 1 else ''} in playbooks; fix them and reload", problems)
    playbooks = []
    for playbook, doc in loaded:
        playbook._source = str(doc.path)
        playbooks.append(playbook)
    log.info("playbooks.loaded", count=len(playbooks), ids=[p.id for p in playbooks])
    return PlaybookSet(playbooks)


def _validate(
    doc: YamlDocument, known_tools: Mapping[str, type[BaseModel]] | None
) -> tuple[Playbook | None, list[str]]:
    if not isinstance(doc.data, dict):
        return None, [f"{doc.path}:1: (top level): a playbook must be a mapping with id, trigger, steps, …"]
    problems: list[tuple[int, str]] = []
    playbook = None
    try:
        playbook = Playbook.model_validate(doc.data)
    except ValidationError as exc:
        for text in doc.problems(exc):
            problems.append((_line_number(text, doc), text))
    if playbook is not None:
        problems += _schedule_arg_problems(playbook, doc)
    for loc, message in static_problems(doc.data, known_tools):
        field = ".".join(str(p) for p in loc)
        line = doc.line_of(loc)
        problems.append((line, f"{doc.path}:{line}: {field}: {message}"))
    problems.sort(key=lambda item: item[0])
    return (playbook if not problems else None), [message for _, message in problems]


def _schedule_arg_problems(playbook: Playbook, doc: YamlDocument) -> list[tuple[int, str]]:
    """Each schedule's args checked as a manual run's would be: a typo fails at load, not at 3 am."""
    problems = []
    for i, schedule in enumerate(playbook.schedules):
        try:
            playbook.resolve_args(schedule.args)
        except UserError as exc:
            line = doc.line_of(("schedules", i, "args"))
            problems.append((line, f"{doc.path}:{line}: schedules.{i}.args: {exc}"))
    return problems


def _line_number(problem: str, doc: YamlDocument) -> int:
    number = problem.removeprefix(f"{doc.path}:").split(":", 1)[0]
    return int(number) if number.isdigit() else 0
