"""``http.request``: one HTTP call to an allowlisted host.

Playbooks name the URL, method, non-secret headers and a JSON body; credentials are attached here
from the environment (``auth_header_env``), so they never sit in a playbook, a param, a result or
the audit trail. Redirects are not followed: a redirect could lead off the allowlist.

``url`` is a URL param (``bot.playbooks.param_checks.URL_PARAM``): values a playbook template inserts into
it are encoded for where they land, and the URL is normalized (``normalize_url``) when the step
is rendered and again when the params are validated, so the URL an approver saw is the one the
allowlist is checked against and the one sent, byte for byte.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

import aiohttp
import structlog
import yarl
from pydantic import BaseModel, ConfigDict, Field, field_validator

from bot.audit.redaction import redact, redact_text, register_secret
from bot.errors import ConfigError, RetryableToolError, ToolError
from bot.model.proposals import Category
from bot.outbound_http import TRANSPORT_ERRORS, OutboundSession, describe, per_phase_timeout
from bot.playbooks.param_checks import URL_PARAM, normalize_url
from bot.ports import StepCall

log = structlog.get_logger(__name__)

# Headers a playbook may not set: credentials come from config, and hop-by-hop headers are ours.
_FORBIDDEN_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "x-api-key", "x-auth-token", "host", "content-length"}
)
_KEPT_RESPONSE_HEADERS = ("content-type", "content-length", "location", "retry-after", "etag", "x-request-id")


class HttpToolConfig(BaseModel):
    """``tools.http`` in the config file."""

    model_config = ConfigDict(extra="forbid")

    allow_hosts: list[str] = Field(default_factory=list)
    timeout_s: float = Field(10.0, gt=0, le=300)
    max_response_bytes: int = Field(64 * 1024, gt=0)
    # host[:port] -> name of the env var holding the whole header value (e.g. "Bearer abc...").
    auth_header_env: dict[str, str] = Field(default_factory=dict)
    auth_header_name: str = "Authorization"

    @field_validator("allow_hosts")
    @classmethod
    def _lower(cls, hosts: list[str]) -> list[str]:
        return [h.strip().lower() for h in hosts]


class HttpParams(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    method: Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"] = "GET"
    url: Annotated[str, URL_PARAM]
    headers: dict[str, str] = Field(default_factory=dict)
    # Named ``json`` in playbooks; ``body`` here because ``json`` shadows a BaseModel attribute.
    body: Any = Field(default=None, alias="json")
    expect_status: list[int] = Field(default_factory=list)

    @field_validator("method", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        # Normalizing is idempotent, so a URL rendered by the planner comes through unchanged.
        return normalize_url(value)

    @field_validator("headers")
    @classmethod
    def _no_secret_headers(cls, headers: dict[str, str]) -> dict[str, str]:
        bad = sorted(name for name in headers if name.lower() in _FORBIDDEN_HEADERS)
        if bad:
            raise ValueError(
                f"headers {', '.join(bad)} may not be set by a step; credentials come from tools.http.auth_header_env"
            )
        return headers


class HttpResult(BaseModel):
    status: int | None = None  # None for a dry run
    headers: dict[str, str] = Field(default_factory=dict)
    body: str = ""
    truncated: bool = False
    duration_ms: int = 0
    dry_run: bool = False
    request: dict[str, Any] | None = None  # dry run: what would be sent, credentials masked


def host_key(url: str) -> str:
    """``host`` or ``host:port`` as written in a normalized URL (already lower case)."""
    return urlsplit(url).netloc


def decode_body(body: bytes, charset: str | None) -> str:
    try:
        return body.decode(charset or "utf-8", errors="replace")
    except LookupError:  # a charset name Python does not know
        return body.decode("utf-8", errors="replace")


class HttpTool:
    name: ClassVar[str] = "http.request"
    category: ClassVar[Category] = Category.write_irreversible
    params_model: ClassVar[type[BaseModel]] = HttpParams
    result_model: ClassVar[type[BaseModel]] = HttpResult
    supports_dry_run: ClassVar[bool] = True
    idempotent: ClassVar[bool] = False

    def __init__(self, config: HttpToolConfig, env: Mapping[str, str]) -> None:
        self.config = config
        self._auth: dict[str, str] = {}
        for host, var in config.auth_header_env.items():
            value = env.get(var)
            if not value:
                raise ConfigError(
                    f"tools.http.auth_header_env names {var} for host {host}, but {var} is not set; export it"
                )
            register_secret(value)
            self._auth[host.lower()] = value
        self._http = OutboundSession(per_phase_timeout(config.timeout_s))

    async def aclose(self) -> None:
        await self._http.aclose()

    def category_of(self, params: HttpParams) -> Category:
        return Category.read if params.method in {"GET", "HEAD"} else self.category

    def rollback_for(self, params: HttpParams, result: HttpResult) -> StepCall | None:
        return None  # an arbitrary HTTP call has no generic inverse

    def _check_allowed(self, url: str) -> str:
        key = host_key(url)
        if key not in self.config.allow_hosts:
            raise ToolError(
                f"host {key} is not allowed for http.request; add it to tools.http.allow_hosts "
                f"(allowed: {', '.join(self.config.allow_hosts) or 'none'})"
            )
        return key

    async def run(self, params: HttpParams, *, dry_run: bool) -> HttpResult:
        url = params.url  # normalized by HttpParams: what was approved and what is checked
        key = self._check_allowed(url)
        headers = dict(params.headers)
        if key in self._auth:
            headers[self.config.auth_header_name] = self._auth[key]
        if dry_run:
            shown = redact({"method": params.method, "url": params.url, "headers": headers, "json": params.body})
            return HttpResult(dry_run=True, request=shown)

        started = time.monotonic()
        try:
            # encoded=True: the URL exactly as validated and allowlisted, not normalised again.
            async with self._http.session.request(params.method, yarl.URL(url, encoded=True), headers=headers,
                                                  json=params.body, allow_redirects=False) as response:
                body, truncated = await self._read_capped(response)
        except TRANSPORT_ERRORS as exc:
            # Connection refused, reset, read timeout: worth retrying for idempotent callers.
            raise RetryableToolError(f"{params.method} {key} failed: {describe(exc)}") from exc
        duration_ms = int((time.monotonic() - started) * 1000)

        text = redact_text(decode_body(body, response.charset))
        target = f"{params.method} {key}{urlsplit(url).path}"
        status = response.status
        log.info("http.response", host=key, method=params.method, status=status, duration_ms=duration_ms)
        excerpt = text[:300]
        if status >= 500 or status == 429:
            raise RetryableToolError(f"{target} returned {status}: {excerpt}")
        if params.expect_status and status not in params.expect_status:
            raise ToolError(f"{target} returned {status}, expected {params.expect_status}: {excerpt}")
        if status >= 400:
            raise ToolError(f"{target} returned {status}: {excerpt}")
        kept = {name: response.headers[name] for name in _KEPT_RESPONSE_HEADERS if name in response.headers}
        return HttpResult(status=status, headers=kept, body=text, truncated=truncated, duration_ms=duration_ms)

    async def _read_capped(self, response: aiohttp.ClientResponse) -> tuple[bytes, bool]:
        limit = self.config.max_response_bytes
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.content.iter_chunked(64 * 1024):
            if size + len(chunk) > limit:
                chunks.append(chunk[: limit - size])
                return b"".join(chunks), True  # stop reading: the rest is never buffered
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks), False
