"""The composition root: config in, a running Ooda out.

This is the one place that knows adapters by name. Each config ``kind:`` maps to a dotted path
loaded with importlib, so ``bot/`` never imports ``adapters/`` statically; adding an alert source,
a tool or a chat platform means one module in ``adapters/`` and one line in these tables.
Startup and shutdown live in one ``async with App(...)``.
"""

from __future__ import annotations

import asyncio
import importlib
import os
from collections.abc import Mapping
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web
from pydantic import BaseModel, ValidationError

from bot.audit.redaction import register_secret
from bot.chat.commands import Commands
from bot.chat.notifier import Notifier
from bot.config import Settings, load_settings
from bot.errors import BotError, ConfigError
from bot.intake.labels import LabelNormalizer
from bot.intake.webhooks import Intake, IntakeSource
from bot.loop.approvals import Approvals
from bot.loop.authority import PolicyAuthority
from bot.loop.core import Core, utcnow
from bot.loop.engine import Engine
from bot.loop.executor import Executor
from bot.loop.gateway import ToolGateway, ToolRegistry
from bot.loop.planner import Planner
from bot.metrics import Metrics
from bot.model.events import EventBus
from bot.playbooks.schema import PlaybookSet, load_playbooks
from bot.policy.identity import IdentityDirectory
from bot.policy.rules import PolicyConfig
from bot.scheduler import Scheduler
from bot.secrets import SecretResolver
from bot.store.leadership import leadership_for
from bot.store.postgres_owner import task_owners_for
from bot.store.protocol import Store
from bot.stores import build_store
from bot.tracing import TaskSpanRecorder, TaskTracing
from bot.web.api import Api
from bot.web.console import Console
from bot.web.event_sinks import WebhookSink
from bot.web.server import build_web_app, serve
from bot.yamlfile import YamlDocument

log = structlog.get_logger(__name__)

ALERT_SOURCES = {
    "alertmanager": "adapters.alerts.alertmanager.AlertmanagerSource",
    "grafana": "adapters.alerts.grafana.GrafanaSource",
    "pagerduty": "adapters.alerts.pagerduty.PagerDutySource",
    "generic": "adapters.alerts.generic.GenericSource",
}
# config section -> (config model, tool classes)
TOOLS = {
    "http": ("adapters.tools.http.HttpToolConfig", ["adapters.tools.http.HttpTool"]),
    "shell": ("adapters.tools.shell.ShellToolConfig", ["adapters.tools.shell.ShellTool"]),
    "flags": ("adapters.tools.flags.FlagsToolConfig",
              ["adapters.tools.flags.FlagsGetTool", "adapters.tools.flags.FlagsSetTool"]),
    "prometheus": ("adapters.tools.prometheus.PrometheusToolConfig",
                   ["adapters.tools.prometheus.PrometheusQueryTool"]),
    "ssh": ("adapters.tools.ssh.SshToolConfig", ["adapters.tools.ssh.SshRunTool"]),
    "kubernetes": ("adapters.tools.kubernetes.KubernetesToolConfig", [
        "adapters.tools.kubernetes_workloads.WorkloadStatusTool",
        "adapters.tools.kubernetes_workloads.EventsTool",
        "adapters.tools.kubernetes_logs.LogsTool",
        "adapters.tools.kubernetes_rollouts.RolloutHistoryTool",
        "adapters.tools.kubernetes_rollouts.RolloutRestartTool",
        "adapters.tools.kubernetes_scale.ScaleTool",
        "adapters.tools.kubernetes_rollouts.RolloutUndoTool",
    ]),
}
NOTIFY_TOOL = "adapters.tools.notify.NotifyTool"
# config section -> (surface class, its config model)
SURFACES = {
    "slack": ("adapters.chat.slack.SlackSurface", "adapters.chat.slack_config.SlackConfig"),
    "discord": ("adapters.chat.discord.DiscordSurface", "adapters.chat.discord.DiscordConfig"),
}
LOCAL_SURFACE = "adapters.chat.local.LocalSurface"
STANDIN = "demo.standin.Standin"


def import_string(dotted: str) -> Any:
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def validate_section(doc: YamlDocument | None, model: type[BaseModel], data: Any, loc: tuple[str, ...]) -> Any:
    """Validate an adapter-owned config section with errors that name file, line and key."""
    try:
        return model.model_validate(data or {})
    except ValidationError as exc:
        if doc is None:
            raise ConfigError(f"{'.'.join(loc)}: invalid", problems=[str(exc)]) from exc
        raise ConfigError(f"{doc.path}: invalid {'.'.join(loc)}", problems=doc.problems(exc, loc)) from exc


def build_policy(settings: Settings, doc: YamlDocument | None) -> PolicyConfig:
    policy: PolicyConfig = validate_section(doc, PolicyConfig, settings.policy, ("policy",))
    return policy


def build_tools(settings: Settings, doc: YamlDocument | None, env: Mapping[str, str]) -> list[Any]:
    tools = []
    for section, (config_path, classes) in TOOLS.items():
        raw = getattr(settings.tools, section)
        if raw is None:
            continue
        if section == "shell" and raw.get("workdir"):
            # Relative to the config file like every other path; created so a fresh machine runs.
            workdir = settings.resolve(Path(raw["workdir"]))
            workdir.mkdir(parents=True, exist_ok=True)
            scratch = settings.vars.get("scratch_dir")
            if scratch and not Path(scratch).is_absolute():
                (workdir / scratch).mkdir(parents=True, exist_ok=True)
            raw = {**raw, "workdir": str(workdir)}
        if section == "ssh":
            # Key and known_hosts files are relative to the config file like every other path.
            raw = {**raw, **{key: str(settings.resolve(Path(raw[key])))
                             for key in ("private_key_file", "known_hosts") if raw.get(key)}}
        config = validate_section(doc, import_string(config_path), raw, ("tools", section))
        tools += [import_string(cls)(config, env) for cls in classes]
    return tools


def tool_param_models(tools: list[Any]) -> dict[str, type[BaseModel]]:
    models = {t.name: t.params_model for t in tools}
    models["chat.notify"] = import_string(NOTIFY_TOOL).params_model
    return models


def load_all_playbooks(settings: Settings, tools: list[Any]) -> PlaybookSet:
    playbooks = load_playbooks(settings.resolve(settings.playbooks_dir), known_tools=tool_param_models(tools))
    playbooks.add_triggers(settings.triggers)
    return playbooks


class App:
    """Everything Ooda runs, started and stopped as one unit."""

    def __init__(self, settings: Settings, *, doc: YamlDocument | None = None,
                 env: Mapping[str, str] | None = None, clock: Any = utcnow,
                 sleep: Any = asyncio.sleep, wrap_tools: Any = None, playbooks: PlaybookSet | None = None,
                 span_exporter: Any = None) -> None:
        self.settings = settings
        self.wrap_tools = wrap_tools  # ``ooda eval``: tools answered from a recording (bot/evaluation/tools.py)
        self.playbooks = playbooks  # ``ooda eval``: loaded once for every incident of a suite
        self.doc = doc
        self.env = dict(os.environ if env is None else env)
        self.clock = clock
        self.sleep = sleep
        self.span_exporter = span_exporter  # tests: OpenTelemetry's InMemorySpanExporter
        self.stack = AsyncExitStack()
        self.port: int | None = None
        self.standin_port: int | None = None

    async def __aenter__(self) -> App:
        try:
            await self._start()
        except BaseException:
            await self.stack.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        # Stopped in the reverse order of starting; the store closes last, once its writer has
        # committed everything queued.
        log.info("ooda.stopping")
        await self.stack.aclose()
        log.info("ooda.stopped")

    async def _start(self) -> None:
        s = self.settings
        secrets = SecretResolver(self.env, s.data_path, generate_missing=s.environment == "dev",
                                 on_resolved=register_secret)
        env = _EnvWithSecrets(self.env, secrets, own_secret_names(s))
        self.secrets = secrets
        self.metrics = Metrics()
        self.bus = EventBus()
        policy = build_policy(s, self.doc)
        tools = build_tools(s, self.doc, env)
        playbooks = self.playbooks or load_all_playbooks(s, tools)
        if self.wrap_tools is not None:
            tools = self.wrap_tools(tools)

        if s.standin.enabled:
            await self._start_standin(env)

        audit_key = secrets.get(s.audit.hmac_key_env).encode() if s.audit.hmac_key_env else None
        self.audit_key = audit_key
        self.store = build_store(s, self.bus, audit_key=audit_key, env=env, metrics=self.metrics)
        await self.store.open()
        self.stack.push_async_callback(self.store.close)
        self.leadership = leadership_for(self.store, self.metrics)
        await self.leadership.start()
        self.stack.push_async_callback(self.leadership.stop)
        self.metrics.track_queue(self.metrics.store_queue_depth, lambda: self.store.queue_depth)

        tokens = {secrets.get(i.api_token_env): i.id for i in s.identities if i.api_token_env}
        surface_configs = self._surface_configs()
        slack_groups = surface_configs["slack"].user_groups if "slack" in surface_configs else {}
        discord_roles = surface_configs["discord"].roles if "discord" in surface_configs else {}
        self.identities = IdentityDirectory(s.identities, tokens, slack_groups, discord_roles)

        registry = ToolRegistry()
        for tool in tools:
            registry.register(tool)
            if hasattr(tool, "aclose"):
                self.stack.push_async_callback(tool.aclose)
        tracing = TaskTracing.create(otlp_endpoint=s.telemetry.otlp_endpoint, exporter=self.span_exporter,
                                     service_name=s.telemetry.service_name, environment=s.environment)
        self.stack.push_async_callback(tracing.aclose)
        self.core = Core(settings=s, store=self.store, bus=self.bus, playbooks=playbooks, policy=policy,
                         gateway=ToolGateway(registry, sleep=self.sleep), identities=self.identities,
                         metrics=self.metrics, clock=self.clock, tracing=tracing)
        self.core.gateway.entrust(PolicyAuthority(self.core))  # writes are judged from the store, at call time
        self.core.gateway.tracing = tracing
        self.span_recorder = TaskSpanRecorder(tracing, self.store)
        self.span_recorder.watch(self.bus)
        self.stack.push_async_callback(self.span_recorder.drain)
        await self.core.load_kill_switch()
        self.executor = Executor(self.core, sleep=self.sleep)
        self.engine = Engine(self.core, Planner(self.core), self.executor, owners=task_owners_for(self.store))
        self.commands = Commands(self.core, self.engine, Approvals(self.core), self.executor)

        self.surfaces = self._build_surfaces(surface_configs, env)
        self.commands.surfaces = self.surfaces
        registry.register(import_string(NOTIFY_TOOL)(self._notify))
        self.notifier = Notifier(self.core, self.surfaces)
        self.event_sinks: list[WebhookSink] = []
        for sink_config in s.event_sinks:
            secret = secrets.get(sink_config.secret_env).encode() if sink_config.secret_env else None
            sink = WebhookSink(sink_config, self.store, self.bus, self.metrics, secret, sleep=self.sleep)
            await sink.start()
            self.stack.push_async_callback(sink.stop)
            self.event_sinks.append(sink)

        routes: list[web.RouteDef] = []
        routes += self._intake(env).routes()
        routes += Api(self.commands, self.identities, self.store, self.metrics, audit_key).routes()
        self.console = Console(self.commands, self.identities, self.store, audit_key)
        routes += self.console.routes()
        for surface in self.surfaces:
            if hasattr(surface, "web_routes"):
                routes += surface.web_routes()
        web_app = build_web_app(routes=routes, store=self.store, metrics=self.metrics, leadership=self.leadership,
                                max_body_bytes=s.intake.max_body_bytes, tracing=tracing.http_middleware())
        server = await serve(web_app, s.server, self.metrics)
        self.stack.push_async_callback(server.stop)
        self.port = server.port

        for surface in self.surfaces:
            if hasattr(surface, "follow_leadership") and self.leadership.shared:
                # A singleton session (Discord's gateway): logged in here, connected by the leader only.
                await surface.start(gateway=False)
                self.leadership.on_change(surface.follow_leadership)
            elif hasattr(surface, "start"):
                await surface.start()
            if hasattr(surface, "stop"):
                self.stack.push_async_callback(surface.stop)
        self.stack.push_async_callback(self.commands.drain)  # a digest being posted, before the surfaces stop
        self.notifier.start()
        self.stack.push_async_callback(self.notifier.stop)
        await self.engine.start()
        self.stack.push_async_callback(self.engine.stop)
        self.scheduler = Scheduler(self.core, self.commands, self.notifier, self.surfaces,
                                   leading=self.leadership.is_leader)
        self.scheduler.start()
        self.stack.callback(self.scheduler.stop)
        log.info("ooda.started", host=s.server.host, port=self.port, environment=s.environment,
                 playbooks=len(playbooks), tools=registry.names(), surfaces=[x.name for x in self.surfaces])

    async def _start_standin(self, env: Mapping[str, str]) -> None:
        token = env.get(self.settings.standin.flags_token_env) if self.settings.standin.flags_token_env else None
        standin = import_string(STANDIN)(**({"token": token} if token else {}),
                                         ssh_dir=self.settings.data_path / "standin" / "ssh",
                                         ssh_port=self.settings.standin.ssh_listen_port)
        self.standin_port = await standin.start("127.0.0.1", self.settings.standin.port)
        self.stack.push_async_callback(standin.stop)
        self.standin = standin

    def _surface_configs(self) -> dict[str, Any]:
        configs = {}
        for name, (_, config_path) in SURFACES.items():
            raw = getattr(self.settings.chat, name)
            if raw is not None:
                configs[name] = validate_section(self.doc, import_string(config_path), raw, ("chat", name))
        return configs

    def _build_surfaces(self, configs: dict[str, Any], env: Mapping[str, str]) -> list[Any]:
        surfaces = []
        if self.settings.chat.local.enabled:
            surfaces.append(import_string(LOCAL_SURFACE)(digest_dir=self.settings.data_path / "digests"))
        for name, config in configs.items():
            cls = import_string(SURFACES[name][0])
            surfaces.append(cls(config, commands=self.commands, identities=self.identities, env=env))
        return surfaces

    async def _notify(self, channel: str | None, text: str) -> None:
        for surface in self.surfaces:
            await surface.post_notice(channel, text)

    def _intake(self, env: Mapping[str, str]) -> Intake:
        sources = {}
        for name, cfg in self.settings.intake.sources.items():
            cls = import_string(ALERT_SOURCES[cfg.kind])
            try:
                adapter = cls(**cfg.options)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"intake.sources.{name}.options: {exc}; see the {cfg.kind} adapter's "
                                  "documented options") from exc
            secret = self.secrets.get(cfg.secret_env).encode() if cfg.auth != "none" and cfg.secret_env else None
            sources[name] = IntakeSource(name, adapter, cfg.auth, secret)
        normalizer = LabelNormalizer(self.settings.environment, self.settings.labels.environments)
        return Intake(sources, self.store, self.metrics, self.settings.intake.max_body_bytes, normalize=normalizer,
                      max_value_bytes=self.settings.intake.max_value_bytes)


def own_secret_names(settings: Settings) -> set[str]:
    """Variables naming secrets that Ooda itself checks (or shares with the demo stand-in).

    Only these may be generated in dev; a chat token or a real system's credential must come
    from the environment, since a random one could only fail later and less clearly.
    """
    names = {src.secret_env for src in settings.intake.sources.values() if src.secret_env}
    names |= {i.api_token_env for i in settings.identities if i.api_token_env}
    if settings.audit.hmac_key_env:
        names.add(settings.audit.hmac_key_env)
    names |= {sink.secret_env for sink in settings.event_sinks if sink.secret_env}
    if settings.standin.enabled and settings.standin.flags_token_env:
        names.add(settings.standin.flags_token_env)
    return names


class _EnvWithSecrets(dict[str, str]):
    """The environment adapters read their credentials from.

    Variables set in the environment are returned (and registered with the redactor, as adapters
    read only credentials from here); in dev, Ooda's own secrets that are unset come from the
    generated files under the data dir.
    """

    def __init__(self, env: Mapping[str, str], secrets: SecretResolver, generated: set[str]) -> None:
        super().__init__(env)
        self._secrets = secrets
        self._generated = generated

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        if key in self:
            register_secret(self[key])
            return self[key]
        value = self._secrets.optional(key) if key in self._generated else None
        return value if value is not None else default


def check_config(path: Path) -> tuple[Settings, list[str]]:
    """Validate the config, every adapter section and every playbook; returns problems, never raises."""
    from bot.config import load_settings

    problems: list[str] = []
    try:
        settings, doc = load_settings(path)
    except ConfigError as exc:
        return Settings(), exc.problems
    for step in (lambda: build_policy(settings, doc),
                 lambda: [validate_section(doc, import_string(SURFACES[n][1]), getattr(settings.chat, n), ("chat", n))
                          for n in SURFACES if getattr(settings.chat, n) is not None]):
        try:
            step()
        except ConfigError as exc:
            problems += exc.problems
    secrets = SecretResolver(os.environ, settings.data_path, generate_missing=settings.environment == "dev")
    try:
        tools = build_tools(settings, doc, _EnvWithSecrets(os.environ, secrets, own_secret_names(settings)))
        load_all_playbooks(settings, tools)
    except ConfigError as exc:
        problems += exc.problems
    return settings, problems


async def open_offline_store(config: Path) -> tuple[Store, bytes | None]:
    """The store a config names, opened without serving (audit verify and export, eval record):
    the store and the audit HMAC key. Refuses a SQLite path that holds no store yet."""
    settings, _ = load_settings(config)
    if settings.store_target.backend == "sqlite" and not settings.db_path.exists():
        raise BotError(f"no store at {settings.db_path}; has `ooda serve` run with this config?")
    secrets = SecretResolver(os.environ, settings.data_path, generate_missing=settings.environment == "dev")
    key = secrets.get(settings.audit.hmac_key_env).encode() if settings.audit.hmac_key_env else None
    store = build_store(settings, EventBus(), audit_key=key, env=os.environ)
    await store.open()
    return store, key
