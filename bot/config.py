"""Settings: one pydantic model for the whole config file, unknown keys are errors.

Secrets are never in the file: it names environment variables (``*_env`` keys) and
``bot/secrets.py`` resolves them. Sections owned by adapters (a chat platform, a tool) are kept as
plain mappings here and validated by the adapter's own model in ``bot/app.py``, so the core does not
know vendor settings. Relative paths are relative to the config file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from bot.errors import ConfigError
from bot.intake.labels import LabelsConfig
from bot.playbooks.cron import cron_trigger, digest_days_trigger
from bot.playbooks.schema import ExtraTrigger
from bot.policy.identity import IdentityConfig
from bot.standin_address import DEFAULT_PORT, refuse_outside_dev, resolve_standin
from bot.store_url import StoreTarget, check_store_url, store_target
from bot.yamlfile import YamlDocument, load_yaml

MiB = 1024 * 1024


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerConfig(_Strict):
    """The HTTP server, and how long it waits for slow clients (bot/web/server.py)."""

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    # A request's headers must be complete this long after its first byte (after the connection
    # opened, for the first request); slower clients get 408 and are closed.
    header_timeout_s: float = Field(10.0, gt=0, le=300)
    # The whole body must arrive this long after the headers; a stalled or trickled one is cut.
    body_timeout_s: float = Field(30.0, gt=0, le=600)
    # An idle keep-alive connection is closed after this long. Longer than the clients' own idle
    # timeout (Alertmanager's HTTP client: 5 min; Go's default transport: 90 s) so the client
    # always closes first and never sends a notification on a connection being closed.
    keepalive_timeout_s: float = Field(330.0, gt=0, le=3600)
    # Concurrent connections per client address; more are refused with 429 at once. Behind a
    # proxy every client shares the proxy's address: raise this to what the proxy may open.
    max_connections_per_client: int = Field(256, ge=1)


class StoreConfig(_Strict):
    kind: Literal["sqlite"] = "sqlite"
    path: Path = Path("data/ooda.db")
    # sqlite:///data/ooda.db or postgresql://user@host:5432/db (bot/store_url.py); when set it
    # replaces kind and path. The PostgreSQL password comes from the variable password_env names.
    url: Annotated[str, AfterValidator(check_store_url)] | None = None
    password_env: Annotated[str, AfterValidator(lambda v: _env_var_name(v))] | None = None
    pool_size: int = Field(10, ge=2, le=200)  # PostgreSQL connections per process
    # FULL fsyncs every commit: an acknowledged alert survives power loss, not only a crash.
    synchronous: Literal["full", "normal"] = "full"
    # SQLite's page cache per connection. Each new alert lands at a random place in the index of
    # signal ids; once that index outgrows the cache, most inserts first read a page back in.
    cache_mib: int = Field(16, ge=1, le=4096)
    # Signals that never joined a task are deleted this many days after their last delivery
    # (null: kept forever). Tasks keep their signals, and the audit trail is never trimmed.
    retention_days: int | None = Field(30, ge=1)


class AuditConfig(_Strict):
    hmac_key_env: str | None = None


def _env_var_name(value: str) -> str:
    if not value.replace("_", "").isalnum():
        raise ValueError("must be the NAME of an environment variable (letters, digits, _), not a secret")
    return value


# Where config names a secret, it names the environment variable that holds it.
EnvName = Annotated[str, AfterValidator(_env_var_name)]


class SourceConfig(_Strict):
    kind: Literal["alertmanager", "grafana", "pagerduty", "generic"]
    auth: Literal["bearer", "hmac", "none"]
    secret_env: EnvName | None = None
    options: dict[str, Any] = Field(default_factory=dict)


class EventSinkConfig(_Strict):
    """An outside system that receives the ``ops.agent_task.*`` events (bot/web/event_sinks.py)."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$", max_length=64)
    url: str = Field(pattern=r"^https?://[^/\s]+", description="http(s) URL the events are POSTed to")
    secret_env: EnvName | None = None  # signs each request as the generic intake verifies one
    events: list[str] = Field(default_factory=lambda: ["ops.agent_task."])  # name prefixes to send
    batch: int = Field(100, ge=1, le=1000)
    timeout_s: float = Field(10.0, gt=0, le=120)
    # Where a sink that has never delivered starts: with the events from its first start on, or
    # with everything the store holds (a backfill).
    start_at: Literal["now", "beginning"] = "now"


class IntakeConfig(_Strict):
    max_body_bytes: int = Field(MiB, ge=1024)
    # Longer labels, annotations and titles are cut to this many bytes, not refused (bot/intake/value_cuts.py).
    max_value_bytes: int = Field(4 * 1024, ge=256)
    sources: dict[str, SourceConfig] = Field(default_factory=dict)


class UnmatchedFyiConfig(_Strict):
    """A chat notice when alerts match no playbook: one per alert name per ``min_interval_s``.

    Defined above EngineConfig: ``EngineConfig()`` is built as a default further down, and
    pydantic needs the model of every field complete by then.
    """

    enabled: bool = False
    channel: str | None = None  # the surfaces' default channel when null
    min_interval_s: int = Field(3600, ge=60)


class EngineConfig(_Strict):
    queue_size: int = Field(10_000, ge=10)
    # Planning mostly waits (evidence calls, commits), so more tasks in flight means more
    # throughput and larger group commits; execution stays one task at a time per task.
    workers: int = Field(16, ge=1, le=256)
    evidence_timeout_s: float = Field(10.0, gt=0)
    step_timeout_s: float = Field(30.0, gt=0)
    approval_expiry_s: int = Field(4 * 3600, ge=60)
    reminder_after_s: int = Field(900, ge=60)
    unmatched_fyi: UnmatchedFyiConfig = UnmatchedFyiConfig()


class LocalSurfaceConfig(_Strict):
    enabled: bool = True


class ChatConfig(_Strict):
    local: LocalSurfaceConfig = LocalSurfaceConfig()
    slack: dict[str, Any] | None = None
    discord: dict[str, Any] | None = None


class ToolsConfig(_Strict):
    http: dict[str, Any] | None = None
    shell: dict[str, Any] | None = None
    flags: dict[str, Any] | None = None
    prometheus: dict[str, Any] | None = None
    kubernetes: dict[str, Any] | None = None
    ssh: dict[str, Any] | None = None


class DigestChartConfig(_Strict):
    enabled: bool = True
    width_px: int = Field(1200, ge=300, le=4000)
    height_px: int = Field(900, ge=200, le=4000)
    dpi: int = Field(100, ge=50, le=300)


class DigestConfig(_Strict):
    """When and where the daily digest goes (bot/scheduler.py, bot/chat/digest_post.py)."""

    enabled: bool = True
    timezone: str = "UTC"
    # A five-field crontab line in ``timezone``; when set it replaces ``at`` and ``days``.
    cron: str | None = None
    at: str = Field("09:00", pattern=r"^\d{2}:\d{2}$")
    days: str = "mon-fri"
    channel: str | None = None  # every surface's channel unless ``channels`` names one for it
    channels: dict[str, str] = Field(default_factory=dict)  # surface name (slack, discord, local) -> channel
    chart: DigestChartConfig = DigestChartConfig()

    # Each check names the unknown zone or the bad line the way a playbook schedule's error does.
    @field_validator("timezone")
    @classmethod
    def _zone_exists(cls, value: str) -> str:
        cron_trigger("0 9 * * *", value)
        return value

    @field_validator("cron")
    @classmethod
    def _cron_parses(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None:
            cron_trigger(value, info.data.get("timezone", "UTC"))
        return value

    @field_validator("days")
    @classmethod
    def _days_parse(cls, value: str) -> str:
        try:
            digest_days_trigger("09:00", value)
        except ValueError as exc:
            raise ValueError(f"days {value!r}: {exc}; write day names such as mon-fri or sat,sun") from None
        return value

    def channel_for(self, surface: str) -> str | None:
        return self.channels.get(surface, self.channel)


class ShadowConfig(_Strict):
    """Playbooks in shadow mode (bot/loop/shadow.py): ``post: false`` only records their proposals."""

    post: bool = True


class TelemetryConfig(_Strict):
    """OpenTelemetry traces (bot/tracing.py): exported only when ``otlp_endpoint`` is set."""

    otlp_endpoint: str | None = Field(None, pattern=r"^https?://")  # e.g. http://otel-collector:4318/v1/traces
    service_name: str = "ooda"


class StandinConfig(_Strict):
    """The local stand-in for outside systems used by the demo playbooks."""

    enabled: bool = False
    # Also what ``${standin.url}`` and friends in the config resolve to (bot/standin_address.py).
    port: int = Field(DEFAULT_PORT, ge=0, le=65535)
    # The demo SSH host db-01 (keys in data/standin/ssh); unset: ``port + 1``, so one setting moves both.
    ssh_port: int | None = Field(None, ge=0, le=65535)
    flags_token_env: str | None = None

    @property
    def ssh_listen_port(self) -> int:
        return self.ssh_port if self.ssh_port is not None else self.port + 1


class LogConfig(_Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class Settings(_Strict):
    environment: Literal["dev", "staging", "prod"] = "dev"
    data_dir: Path = Path("data")
    playbooks_dir: Path = Path("playbooks")
    server: ServerConfig = ServerConfig()
    store: StoreConfig = StoreConfig()
    audit: AuditConfig = AuditConfig()
    intake: IntakeConfig = IntakeConfig()
    identities: list[IdentityConfig] = Field(default_factory=list)
    policy: dict[str, Any] = Field(default_factory=dict)
    engine: EngineConfig = EngineConfig()
    tools: ToolsConfig = ToolsConfig()
    chat: ChatConfig = ChatConfig()
    digest: DigestConfig = DigestConfig()
    shadow: ShadowConfig = ShadowConfig()
    standin: StandinConfig = StandinConfig()
    telemetry: TelemetryConfig = TelemetryConfig()
    log: LogConfig = LogConfig()
    event_sinks: list[EventSinkConfig] = Field(default_factory=list)
    vars: dict[str, str] = Field(default_factory=dict)
    # Derived labels (workload, env, host, consumer_group): bot/intake/labels.py.
    labels: LabelsConfig = LabelsConfig()
    # A team's own alert names mapped onto shipped playbooks without copying them: playbook id ->
    # extra matchers that trigger it (its group_by, window and cooldown apply).
    triggers: dict[str, list[ExtraTrigger]] = Field(default_factory=dict)

    # Not from the file: where it was read from, for resolving paths and naming errors.
    source_path: Path | None = Field(default=None, exclude=True)

    def resolve(self, path: Path) -> Path:
        base = self.source_path.parent if self.source_path else Path.cwd()
        return path if path.is_absolute() else (base / path)

    @property
    def store_target(self) -> StoreTarget:
        if self.store.url:
            return store_target(self.store.url, self.resolve)
        return StoreTarget("sqlite", path=self.resolve(self.store.path))

    @property
    def db_path(self) -> Path:
        """The SQLite file (``store.url`` or ``store.path``)."""
        return self.store_target.path or self.resolve(self.store.path)

    @property
    def data_path(self) -> Path:
        return self.resolve(self.data_dir)


def load_settings(path: Path, *, standin_port: int | None = None) -> tuple[Settings, YamlDocument]:
    """Load and validate the config file; ``ConfigError`` lists every problem with its line.

    ``standin_port`` (``ooda serve --standin-port``) replaces ``standin.port`` before the
    ``${standin.*}`` placeholders are filled in, so it moves every tool that names the stand-in.
    """
    doc = load_yaml(path)
    data = doc.data if doc.data is not None else {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: the config must be a mapping of sections, got {type(data).__name__}")
    if standin_port is not None:
        section = data.get("standin")
        data = {**data, "standin": {**(section if isinstance(section, dict) else {}), "port": standin_port}}
    data, standin_used = resolve_standin(data, doc.line_of, str(path))
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: invalid config", problems=doc.problems(exc)) from exc
    ids = [i.id for i in settings.identities]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ConfigError(f"{path}:{doc.line_of(('identities',))}: identities: duplicate id {dupes[0]!r}")
    for name, source in settings.intake.sources.items():
        if source.auth != "none" and not source.secret_env:
            line = doc.line_of(("intake", "sources", name))
            raise ConfigError(
                f"{path}:{line}: intake.sources.{name}.secret_env: required when auth is {source.auth!r}; "
                "name the environment variable holding the token or HMAC secret"
            )
        if source.auth == "none" and settings.environment != "dev":
            line = doc.line_of(("intake", "sources", name, "auth"))
            raise ConfigError(
                f"{path}:{line}: intake.sources.{name}.auth: 'none' is only allowed in environment dev; "
                "use bearer or hmac"
            )
    refuse_outside_dev(settings.environment, standin_used)
    return settings.model_copy(update={"source_path": path.resolve()}), doc
