"""The Kubernetes tool family: its config, the connection it shares, and the rules every call obeys.

The tools themselves live beside this module, one concept each:

    kubernetes_workloads.py  k8s.workload_status, k8s.events        (reads)
    kubernetes_logs.py       k8s.logs                               (read)
    kubernetes_rollouts.py   k8s.rollout_history, k8s.rollout_restart, k8s.rollout_undo
    kubernetes_scale.py      k8s.scale                              (reversible write)

Every call goes through ``KubernetesApi.call``, which is where the rules live: a namespace
outside ``tools.kubernetes.namespaces`` is refused before any request is made, and API errors are
translated into words at this seam (404 names the object, 403 names the missing RBAC permission,
409 / 429 / 5xx and lost connections are retryable). Object names in params are validated as
Kubernetes DNS names, so an alert label like ``../../secrets`` can never address another path.

The client is kubernetes_asyncio's ``ApiClient``, created on the first call inside the running
event loop (its aiohttp session must be) and closed by ``aclose``.
"""

from __future__ import annotations

import asyncio
import fnmatch
import inspect
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar

import aiohttp
import structlog
from pydantic import BaseModel, ConfigDict, Field, model_validator

from adapters.tools.kubernetes_client import k8s, k8s_config
from bot.audit.redaction import redact_text, register_secret
from bot.errors import ConfigError, RetryableToolError, ToolError
from bot.model.proposals import Category
from bot.outbound_http import TRANSPORT_ERRORS, describe, per_phase_timeout
from bot.ports import StepCall

log = structlog.get_logger(__name__)

T = TypeVar("T")

# RFC 1123 names as the API server validates them. Neither allows "/", "..", "%" or upper case, so
# a validated name is always exactly one path segment naming one object.
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"

Namespace = Annotated[str, Field(pattern=DNS_LABEL, max_length=63)]
ObjectName = Annotated[str, Field(pattern=DNS_SUBDOMAIN, max_length=253)]
ContainerName = Annotated[str, Field(pattern=DNS_LABEL, max_length=63)]
WorkloadKind = Literal["deployment", "statefulset", "daemonset", "job"]

# Where each workload kind lives in the API: (API group, plural resource, Kind).
RESOURCES: dict[str, tuple[str, str, str]] = {
    "deployment": ("apps", "deployments", "Deployment"),
    "statefulset": ("apps", "statefulsets", "StatefulSet"),
    "daemonset": ("apps", "daemonsets", "DaemonSet"),
    "job": ("batch", "jobs", "Job"),
    "replicaset": ("apps", "replicasets", "ReplicaSet"),
    "pod": ("", "pods", "Pod"),
    "event": ("", "events", "Event"),
}

REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
CHANGE_CAUSE_ANNOTATION = "kubernetes.io/change-cause"
RESTARTED_AT_ANNOTATION = "kubectl.kubernetes.io/restartedAt"
POD_TEMPLATE_HASH_LABEL = "pod-template-hash"


class KubernetesToolConfig(BaseModel):
    """``tools.kubernetes`` in the config file.

    The connection is, first match wins: ``api_url`` (+ ``token_env``, ``ca_file``/``verify_tls``),
    else ``kubeconfig`` (+ ``context``), else the in-cluster service account.
    """

    model_config = ConfigDict(extra="forbid")

    api_url: str | None = None
    token_env: str | None = None  # env var holding a bearer token for api_url
    ca_file: str | None = None
    verify_tls: bool = True
    kubeconfig: str | None = None
    context: str | None = None
    timeout_s: float = Field(10.0, gt=0, le=120)
    namespaces: list[str] | None = None  # fnmatch globs; None means every namespace
    max_log_bytes: int = Field(16384, ge=1024, le=1_048_576)

    @model_validator(mode="after")
    def _one_connection(self) -> KubernetesToolConfig:
        if self.api_url and self.kubeconfig:
            raise ValueError("give api_url or kubeconfig, not both")
        if not self.api_url and (self.token_env or self.ca_file or not self.verify_tls):
            raise ValueError("token_env, ca_file and verify_tls apply only with api_url; set api_url or remove them")
        if self.context and not self.kubeconfig:
            raise ValueError("context selects a context of a kubeconfig; set kubeconfig too")
        return self


@dataclass(frozen=True)
class Op:
    """One API call as a person would name it, for error messages and RBAC advice."""

    verb: str  # get, list, patch (the RBAC verb)
    kind: str  # a key of RESOURCES
    namespace: str
    name: str | None = None
    subresource: str | None = None

    @property
    def object(self) -> str:
        if self.name:
            return f"{self.kind} {self.namespace}/{self.name}"
        return f"{self.kind}s in namespace {self.namespace}"

    @property
    def rbac(self) -> str:
        group, plural, _ = RESOURCES[self.kind]
        resource = f"{plural}/{self.subresource}" if self.subresource else plural
        return f"verb {self.verb!r} on resource {resource!r} in apiGroup {group!r}"


def status_message(body: Any) -> str:
    """The ``message`` of a Kubernetes ``Status`` body, or a short excerpt of whatever came back."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body or "")
    try:
        parsed = json.loads(text)
    except ValueError:
        return redact_text(text[:300])
    message = parsed.get("message") if isinstance(parsed, dict) else None
    return redact_text(str(message if message else text[:300]))


def to_tool_error(op: Op, exc: k8s.ApiException) -> ToolError:
    """Translate an API error into words a person on call can act on."""
    status, detail = exc.status or 0, status_message(exc.body)
    if status == 404:
        return ToolError(f"{op.object} not found")
    if status == 401:
        return ToolError(
            "the Kubernetes API rejected the bot's credentials (HTTP 401); renew the token "
            "(tools.kubernetes.token_env, the kubeconfig user or the service account)"
        )
    if status == 403:
        return ToolError(
            f"the Kubernetes API refused to {op.verb} {op.object} (HTTP 403): the bot's identity lacks RBAC "
            f"permission {op.rbac} in namespace {op.namespace!r}; grant it with a Role and RoleBinding. "
            f"Server said: {detail}"
        )
    if status == 409:
        return RetryableToolError(f"{op.object} changed while it was being updated (HTTP 409): {detail}")
    if status == 429 or status >= 500:
        return RetryableToolError(f"the Kubernetes API could not {op.verb} {op.object} now (HTTP {status}): {detail}")
    return ToolError(f"the Kubernetes API refused to {op.verb} {op.object} (HTTP {status}): {detail}")


def register_token(configuration: k8s.Configuration) -> None:
    """Mask the bearer token a loaded configuration carries (stored as ``Bearer <token>``)."""
    value = configuration.api_key.get("BearerToken")
    if value:
        register_secret(str(value).removeprefix("Bearer ").strip())


def iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


class KubernetesApi:
    """The connection one tool uses: lazily built ApiClient, namespace allowlist, error seam."""

    def __init__(self, config: KubernetesToolConfig, env: Mapping[str, str]) -> None:
        self.config = config
        self._token: str | None = None
        if config.token_env:
            token = env.get(config.token_env)
            if not token:
                raise ConfigError(
                    f"tools.kubernetes.token_env names {config.token_env}, but it is not set; "
                    "export a service account token there"
                )
            register_secret(token)
            self._token = token
        # "~" expanded here, once: path lookups do not belong on the event loop.
        self._ca_file = str(Path(config.ca_file).expanduser()) if config.ca_file else None
        self._kubeconfig = str(Path(config.kubeconfig).expanduser()) if config.kubeconfig else None
        self._client: k8s.ApiClient | None = None
        self._client_lock = asyncio.Lock()
        self.timeout = per_phase_timeout(config.timeout_s)

    def check_namespace(self, namespace: str) -> None:
        """Refuse a namespace outside ``tools.kubernetes.namespaces``, before anything is sent."""
        allowed = self.config.namespaces
        if allowed is not None and not any(fnmatch.fnmatchcase(namespace, glob) for glob in allowed):
            raise ToolError(
                f"namespace {namespace!r} is outside tools.kubernetes.namespaces ({', '.join(allowed) or 'empty'}); "
                "add it there if the bot should touch it"
            )

    async def _configuration(self) -> k8s.Configuration:
        configuration = k8s.Configuration()
        config = self.config
        try:
            if config.api_url:
                configuration.host = config.api_url.rstrip("/")
                configuration.verify_ssl = config.verify_tls
                if self._ca_file:
                    configuration.ssl_ca_cert = self._ca_file
                if self._token:
                    configuration.api_key = {"BearerToken": self._token}
                    configuration.api_key_prefix = {"BearerToken": "Bearer"}
            elif self._kubeconfig:
                # persist_config=False: never write refreshed credentials back into the user's file.
                await k8s_config.kube_config.load_kube_config(
                    config_file=self._kubeconfig,
                    context=config.context,
                    client_configuration=configuration,
                    persist_config=False,
                )
            else:
                k8s_config.incluster_config.load_incluster_config(client_configuration=configuration)
        except (k8s_config.ConfigException, OSError) as exc:
            source = f"kubeconfig {config.kubeconfig}" if config.kubeconfig else "the in-cluster service account"
            raise ToolError(
                f"cannot load the Kubernetes connection from {source}: {redact_text(str(exc))}. Set "
                "tools.kubernetes.api_url (+ token_env) or kubeconfig, or run the bot inside the cluster"
            ) from None
        register_token(configuration)
        refresh: Any = configuration.refresh_api_key_hook  # a sync or async callable (the stubs disagree)
        if refresh is not None:
            # Service-account and exec-plugin tokens rotate; each new one must be masked too.
            async def refresh_and_register(target: k8s.Configuration) -> None:
                outcome = refresh(target)
                if inspect.isawaitable(outcome):
                    await outcome
                register_token(target)

            configuration.refresh_api_key_hook = refresh_and_register
        return configuration

    async def client(self) -> k8s.ApiClient:
        # The lock keeps concurrent first calls (read steps run side by side) from each building
        # a client and leaking all but one aiohttp session.
        async with self._client_lock:
            if self._client is None:
                self._client = k8s.ApiClient(await self._configuration())
            return self._client

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    async def call(self, op: Op, request: Callable[[k8s.ApiClient], Awaitable[T]]) -> T:
        """Run one API request for ``op`` with errors translated.

        Raises:
            ToolError: the namespace is not allowed, or the API refused (404, 403, 4xx).
            RetryableToolError: conflict, throttling, server error or no answer at all.
        """
        self.check_namespace(op.namespace)
        api_client = await self.client()
        try:
            return await request(api_client)
        except k8s.ApiException as exc:
            error = to_tool_error(op, exc)
            log.info("k8s.api_error", verb=op.verb, kind=op.kind, namespace=op.namespace, status=exc.status)
            raise error from None
        except aiohttp.ClientConnectorCertificateError:
            raise ToolError(
                f"the TLS certificate of {self.config.api_url or 'the Kubernetes API'} did not verify; "
                "set tools.kubernetes.ca_file to the cluster CA"
            ) from None
        except TRANSPORT_ERRORS as exc:
            raise RetryableToolError(
                f"the Kubernetes API did not answer {op.verb} {op.object}: {describe(exc)}") from None


class KubernetesTool:
    """What every tool of the family shares: construction, closing, and no rollback by default."""

    name: ClassVar[str]
    category: ClassVar[Category]

    def __init__(self, config: KubernetesToolConfig, env: Mapping[str, str]) -> None:
        self.config = config
        self.api = KubernetesApi(config, env)

    async def aclose(self) -> None:
        await self.api.aclose()

    def category_of(self, params: Any) -> Category:
        return self.category

    def rollback_for(self, params: Any, result: Any) -> StepCall | None:
        return None


def label_selector(selector: Any) -> str:
    """A ``V1LabelSelector`` in the query syntax (``app=x,tier in (a,b)``)."""
    parts = [f"{key}={value}" for key, value in sorted((selector.match_labels or {}).items())]
    for expression in selector.match_expressions or []:
        key, operator, values = expression.key, expression.operator, sorted(expression.values or [])
        if operator == "In":
            parts.append(f"{key} in ({','.join(values)})")
        elif operator == "NotIn":
            parts.append(f"{key} notin ({','.join(values)})")
        elif operator == "Exists":
            parts.append(key)
        elif operator == "DoesNotExist":
            parts.append(f"!{key}")
    if not parts:
        # An empty selector matches every pod in the namespace; that is never what a tool wants.
        raise ToolError("the workload has an empty selector; refusing to treat every pod in the namespace as its own")
    return ",".join(parts)


def container_images(template: Any) -> list[str]:
    return [c.image for c in (template.spec.containers if template and template.spec else [])]


def revision_of(obj: Any) -> int | None:
    raw = (obj.metadata.annotations or {}).get(REVISION_ANNOTATION)
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


def owned_by(obj: Any, owner_uid: str) -> bool:
    return any(ref.uid == owner_uid and ref.controller for ref in obj.metadata.owner_references or [])

