"""Run recorded incidents through a real Ooda that can touch nothing: the engine of ``ooda eval``.

Each incident gets its own Ooda (``bot.app.App``) in a temporary folder with its own SQLite store,
built from the team's config with these changes, so that what is measured is what would happen
live and nothing of it can reach a system or a person:

- every tool answers from the incident's recording (``bot.evaluation.tools``); writes never run;
- no chat surface, digest, event sink or stand-in; the server listens on 127.0.0.1, a free port;
- each intake source keeps its kind, auth scheme and options but gets a secret made for this run,
  and the bodies are signed with it, so intake checks auth and parses exactly as it does live;
- no credential of the environment is read: tools get placeholders for the variables they name;
- ``--playbooks`` and ``--policy`` replace the config's, and an incident's ``setup.policy`` (a
  freeze, say) is merged over the policy for that incident only;
- the clock starts at the incident's ``start`` (or the suite's) and moves with each ``at_s``.

Intake, label normalization, grouping, matching, orient (evidence, condition) and decide (risk,
policy) run unchanged. What the store then holds is read back as ``IncidentOutcome``; a playbook
in shadow mode is scored by the policy's own answer (what promoting it would do).
"""

from __future__ import annotations

import copy
import re
import secrets
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import yaml

from bot.app import App, build_policy
from bot.chat.wording import proposal_text
from bot.config import load_settings
from bot.errors import ConfigError
from bot.evaluation.suite import Incident, Suite
from bot.evaluation.tools import Recordings, recorded_tools
from bot.intake.signing import signature_headers
from bot.loop.core import utcnow
from bot.model.proposals import Proposal
from bot.model.steps import StepKind
from bot.model.tasks import Task, TaskState
from bot.playbooks.schema import PlaybookSet
from bot.policy.identity import Actor
from bot.policy.rules import PolicyConfig

EVAL_ACTOR = Actor(id="ooda-eval", display="ooda eval", roles=frozenset({"operator"}), via="cli")
# Config keys that name an environment variable holding a credential.
_CREDENTIAL_KEYS = ("token_env", "secret_env", "password_env", "api_key_env")


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


@dataclass
class StepSeen:
    name: str
    tool: str
    category: str
    verdict: str
    rule: str
    approvals_required: int
    blast_radius: str
    state: str
    params: dict[str, Any]

    @property
    def writes(self) -> bool:
        return self.category != "read"

    @property
    def runs_unattended(self) -> bool:
        """The policy let it run without a person: it would have run now."""
        return self.verdict == "allow"


@dataclass
class TaskSeen:
    id: int
    playbook_id: str
    state: TaskState
    outcome: str | None
    environment: str
    proposed: bool
    risk_score: int | None
    risk_band: str | None
    decided_at: datetime | None
    steps: list[StepSeen]
    approvers: list[str]
    chat_text: str

    @property
    def write_steps(self) -> list[StepSeen]:
        return [s for s in self.steps if s.writes]

    @property
    def planning_failed(self) -> bool:
        return not self.proposed or (self.outcome or "").startswith("planning failed")


@dataclass
class IncidentOutcome:
    incident: Incident
    tasks: list[TaskSeen]
    policy: PolicyConfig
    kill_switch: bool = False
    delivery_errors: list[str] = field(default_factory=list)
    not_recorded: list[str] = field(default_factory=list)
    writes_attempted: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.incident.name


class Evaluator:
    """Runs a suite's incidents, one isolated Ooda each, from one config.

    Args:
        config: the team's config file (its policy, labels, triggers, intake options, vars).
        playbooks_dir: playbooks to evaluate instead of the config's ``playbooks_dir``.
        policy_file: a YAML file holding a ``policy:`` section (or the section alone) to use instead.
    """

    def __init__(self, config: Path, *, playbooks_dir: Path | None = None, policy_file: Path | None = None) -> None:
        settings, _ = load_settings(config)
        self.base = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
        self.config_dir = config.resolve().parent
        self.playbooks_dir = (playbooks_dir or settings.resolve(settings.playbooks_dir)).resolve()
        if not self.playbooks_dir.is_dir():
            raise ConfigError(f"{self.playbooks_dir}: no such folder of playbooks; give --playbooks DIR")
        if playbooks_dir is not None:
            # The config's extra triggers name its playbooks; keep those the folder under evaluation has.
            ids = {m.group(1).strip("'\"") for path in self.playbooks_dir.glob("*.y*ml")
                   if (m := re.search(r"^id:\s*(\S+)", path.read_text(encoding="utf-8"), re.MULTILINE))}
            self.base["triggers"] = {k: v for k, v in (self.base.get("triggers") or {}).items() if k in ids}
        self.policy = self.base.get("policy") or {}
        self._playbooks: PlaybookSet | None = None
        if policy_file is not None:
            self.policy = read_policy_file(policy_file)

    async def run_suite(self, suite: Suite) -> list[IncidentOutcome]:
        outcomes = []
        with tempfile.TemporaryDirectory(prefix="ooda-eval-") as tmp:
            for incident in suite.incidents:
                start = incident.start or suite.start or utcnow()
                outcomes.append(await self.run_incident(incident, Path(tmp) / incident.name, start))
        return outcomes

    async def run_incident(self, incident: Incident, workdir: Path, start: datetime) -> IncidentOutcome:
        config, env, senders = self._config_for(incident, workdir)
        settings, doc = load_settings(config)
        policy = build_policy(settings, doc)
        recordings = Recordings(incident.evidence)
        clock = SuiteClock(start.astimezone(UTC))
        outcome = IncidentOutcome(incident, [], policy, kill_switch=incident.setup.kill_switch)
        async with App(settings, doc=doc, env=env, clock=clock, playbooks=self._playbooks,
                       wrap_tools=lambda tools: recorded_tools(tools, recordings)) as app:
            self._playbooks = app.core.playbooks  # the same files for every incident: parsed once
            if incident.setup.kill_switch:
                await app.commands.pause(EVAL_ACTOR, "incident setup: kill switch on")
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.port}", timeout=30) as http:
                for index, delivery in enumerate(incident.deliveries):
                    clock.advance_to(delivery.at_s)
                    source, kind, auth, secret = senders[delivery.sender]
                    headers = {"Content-Type": "application/json", **sign(kind, auth, secret, delivery.raw)}
                    response = await http.post(f"/webhooks/{source}", content=delivery.raw, headers=headers)
                    if response.status_code != delivery.status:
                        outcome.delivery_errors.append(
                            f"{incident.name}: delivery {index} ({delivery.sender}) answered "
                            f"{response.status_code}, expected {delivery.status}: {response.text[:200]}")
                    await app.engine.wait_idle()
            outcome.tasks = [await task_seen(app, task) for task in
                             sorted(await app.store.list_tasks(open_only=False, limit=1000), key=lambda t: t.id)]
        outcome.not_recorded = sorted(set(recordings.missing))
        outcome.writes_attempted = recordings.writes_attempted
        return outcome

    def _config_for(self, incident: Incident, workdir: Path) -> tuple[Path, dict[str, str], dict[str, Any]]:
        """The isolated config for one incident, the environment it reads, and how to sign per sender."""
        workdir.mkdir(parents=True)
        data = copy.deepcopy(self.base)
        env: dict[str, str] = {}
        policy = merge(copy.deepcopy(self.policy), incident.setup.policy)
        tools = copy.deepcopy(data.get("tools") or {})
        for section in tools.values():
            if not isinstance(section, dict):
                continue
            for key in _CREDENTIAL_KEYS:
                if section.get(key):
                    env[section[key]] = placeholder()
            section.pop("private_key_env", None)
            for key in ("private_key_file", "known_hosts", "kubeconfig"):
                if section.get(key):
                    section[key] = str(self.config_dir / section[key])
        if isinstance(tools.get("shell"), dict):
            tools["shell"]["workdir"] = str(workdir / "shell")
        sources, senders = self._sources(data, env)
        data.update({
            "data_dir": str(workdir / "data"),
            "playbooks_dir": str(self.playbooks_dir),
            "server": {"host": "127.0.0.1", "port": 0},
            "store": {"path": str(workdir / "data" / "ooda.db"), "synchronous": "normal"},
            "audit": {"hmac_key_env": None},
            "intake": {**(data.get("intake") or {}), "sources": sources},
            "identities": [{k: v for k, v in i.items() if k != "api_token_env"} for i in data.get("identities") or []],
            "policy": policy,
            "tools": tools,
            "chat": {"local": {"enabled": False}},
            "digest": {"enabled": False},
            "standin": {"enabled": False},
            "event_sinks": [],
            "log": {"level": "warning", "format": "json"},
        })
        path = workdir / "config.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        return path, env, senders

    @staticmethod
    def _sources(data: dict[str, Any], env: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Each configured source with a secret of this run; a sender kind the config lacks gets one."""
        configured = dict((data.get("intake") or {}).get("sources") or {})
        sources: dict[str, Any] = {}
        senders: dict[str, Any] = {}
        for name, source in configured.items():
            kind, auth = source.get("kind", name), source.get("auth", "bearer")
            variable = f"OODA_EVAL_SECRET_{len(sources)}"
            sources[name] = {**source, "secret_env": variable if auth != "none" else None}
            env[variable] = placeholder()
            senders.setdefault(kind, (name, kind, auth, env[variable]))
        for kind in ("alertmanager", "grafana", "pagerduty", "generic"):
            if kind not in senders:
                name = f"eval-{kind}"
                auth = "bearer" if kind in ("alertmanager", "grafana") else "hmac"
                variable = f"OODA_EVAL_SECRET_{len(sources)}"
                env[variable] = placeholder()
                sources[name] = {"kind": kind, "auth": auth, "secret_env": variable}
                senders[kind] = (name, kind, auth, env[variable])
        return sources, senders


def placeholder() -> str:
    return "eval-" + secrets.token_hex(16)


def sign(kind: str, auth: str, secret: str, body: bytes) -> dict[str, str]:
    """Headers a sender of ``kind`` configured with ``auth`` sends."""
    import hashlib
    import hmac

    if auth == "none":
        return {}
    if auth == "bearer":
        return {"Authorization": f"Bearer {secret}"}
    key = secret.encode()
    if kind == "pagerduty":
        return {"X-PagerDuty-Signature": "v1=" + hmac.new(key, body, hashlib.sha256).hexdigest()}
    if kind == "grafana":
        return {"X-Grafana-Alerting-Signature": hmac.new(key, body, hashlib.sha256).hexdigest()}
    return signature_headers(body, key)


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def read_policy_file(path: Path) -> dict[str, Any]:
    """A policy file holds a ``policy:`` section, or the section's contents alone."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the policy file: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a policy file is a mapping (the policy: section of a config)")
    section = data.get("policy", data)
    PolicyConfig.model_validate(section)
    return dict(section)


async def task_seen(app: App, task: Task) -> TaskSeen:
    proposal = task.proposal or {}
    views = {s["name"]: s for s in proposal.get("steps", [])}
    steps = []
    for record in sorted(await app.store.steps_of_task(task.id, StepKind.action), key=lambda s: s.idx):
        # A playbook in shadow mode is scored as if promoted: by the policy's own answer.
        decision = (record.decision or {}).get("shadow_of") or record.decision or {}
        view = views.get(record.name, {})
        steps.append(StepSeen(
            name=record.name, tool=record.tool, category=record.category, verdict=decision.get("verdict", ""),
            rule=decision.get("rule", ""), approvals_required=int(decision.get("approvals_required") or 0),
            blast_radius=view.get("blast_radius", "single"), state=record.state, params=record.params))
    approvers = sorted({a.actor for a in await app.store.approvals_of_task(task.id) if a.verdict == "approve"})
    risk = proposal.get("risk") or {}
    decided_at = datetime.fromisoformat(proposal["updated_at"]) if proposal.get("updated_at") else None
    chat = proposal_text(Proposal.model_validate(proposal)) if proposal else ""
    return TaskSeen(
        id=task.id, playbook_id=task.playbook_id, state=task.state, outcome=task.outcome,
        environment=task.environment or app.settings.environment, proposed=bool(proposal),
        risk_score=risk.get("score") if proposal else None, risk_band=risk.get("band"), decided_at=decided_at,
        steps=steps, approvers=approvers, chat_text=chat,
    )
