"""``prometheus.query``: one PromQL query, summarised as evidence a person can read in chat.

The tool runs an instant query for the current values and, unless ``range_s`` is 0, a range
query over the last ``range_s`` seconds for the trend of each shown series. It returns the top
series by current value with their labels, a one-sentence summary and a link to Prometheus's
graph page, never the raw response: a broad query can match thousands of series, and evidence
has to fit in a chat message and the audit trail.

Prometheus HTTP API v1 answers ``{"status": "success", "data": {"resultType": ..., "result": ...}}``
with sample values as strings (``"0.93"``, ``"NaN"``, ``"+Inf"``); errors come as
``{"status": "error", "errorType": "bad_data", "error": "..."}`` with 400 (bad PromQL), 422
(the query failed while running) or 503 (timeout, shutting down).

Label values come from whatever was scraped, so they are untrusted text that reaches chat: they
are kept as data (never formatted into anything that is parsed again) and capped in length.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any, ClassVar, Literal
from urllib.parse import quote, urlencode

import aiohttp
import orjson
import structlog
import yarl
from pydantic import BaseModel, ConfigDict, Field, field_validator

from bot.audit.redaction import register_secret
from bot.errors import ConfigError, RetryableToolError, ToolError
from bot.model import units
from bot.model.proposals import Category
from bot.model.units import Unit
from bot.outbound_http import TRANSPORT_ERRORS, OutboundSession, describe, per_phase_timeout
from bot.ports import StepCall

log = structlog.get_logger(__name__)

MAX_RANGE_S = 7 * 86400
# Prometheus refuses a range query with more than 11,000 points per series; a coarser step is
# better evidence than an error.
MAX_POINTS = 11_000
# Long queries go in a form body: proxies in front of Prometheus often cap the URL length.
POST_ABOVE_CHARS = 1500
MAX_LABEL_CHARS = 256
MAX_ERROR_CHARS = 500
NO_SERIES = "no series: the query returned nothing (the condition has cleared or the labels do not match)"


# What reading an answer of an unexpected shape raises (a proxy's page, another API).
_SHAPE_ERRORS = (KeyError, IndexError, TypeError, ValueError, AttributeError)


class PrometheusToolConfig(BaseModel):
    """``tools.prometheus`` in the config file."""

    model_config = ConfigDict(extra="forbid")

    base_url: str
    timeout_s: float = Field(10.0, gt=0, le=300)
    # Name of the env var holding the whole Authorization header value (e.g. "Bearer abc...").
    auth_header_env: str | None = None
    max_series: int = Field(200, ge=1)
    default_range_s: int = Field(3600, ge=0, le=MAX_RANGE_S)
    default_step_s: int = Field(60, ge=1)
    max_response_bytes: int = Field(4 * 1024 * 1024, gt=0)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        url = yarl.URL(value.strip())
        if url.scheme not in {"http", "https"} or not url.host:
            raise ValueError("must be an absolute http:// or https:// URL of Prometheus, e.g. http://prometheus:9090")
        if url.user or url.password:
            raise ValueError("must not carry credentials; put the Authorization header in the env var "
                             "named by tools.prometheus.auth_header_env instead")
        if url.query_string or url.fragment:
            raise ValueError("must not have a query string or fragment; give only the address (and path prefix)")
        return str(url).rstrip("/")


class PrometheusParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=4000)
    # 0: instant query only. None: tools.prometheus.default_range_s.
    range_s: int | None = Field(None, ge=0, le=MAX_RANGE_S)
    # None: tools.prometheus.default_step_s. Raised when the range would exceed MAX_POINTS.
    step_s: int | None = Field(None, ge=1)
    top: int = Field(5, ge=1, le=50)
    sort: Literal["desc", "asc"] = "desc"
    # What the query's values measure (bot/model/units.py): the summary shows 7% for a ratio of
    # 0.07, 250 ms for 0.25 seconds. None: a plain number (1.23k).
    unit: Unit | None = None


class Trend(BaseModel):
    """The series over the queried window; None where there was no finite sample."""

    start: float | None = None
    end: float | None = None
    min: float | None = None
    max: float | None = None
    change: float | None = None


class PrometheusSeries(BaseModel):
    labels: dict[str, str]
    value: float | None  # None for NaN and ±Inf, which JSON cannot carry
    trend: Trend = Field(default_factory=Trend)


class PrometheusResult(BaseModel):
    query: str
    result_type: Literal["vector", "scalar", "matrix", "string"]
    series_count: int  # how many series Prometheus returned, before the top cut
    truncated: bool  # more than tools.prometheus.max_series series matched
    series: list[PrometheusSeries]
    value: float | None  # the top series' current value
    unit: Unit | None = None  # what the values measure, as the playbook said; they stay bare numbers here
    summary: str
    graph_url: str
    range_s: int
    step_s: int
    evaluated_at: float  # unix seconds of the instant query (and the end of the range)


class _Parsed:
    """One series as read from Prometheus, before it is cut and made JSON-safe."""

    __slots__ = ("first_ts", "key", "labels", "samples", "value")

    def __init__(self, key: tuple[tuple[str, str], ...], value: float, samples: list[tuple[float, float]]) -> None:
        self.key = key
        self.labels = {name[:MAX_LABEL_CHARS]: text[:MAX_LABEL_CHARS] for name, text in key}
        self.value = value
        self.samples = samples  # (timestamp, value) of the trend window, oldest first
        self.first_ts: float | None = samples[0][0] if samples else None


def finite(value: float | None) -> float | None:
    """``value`` when it can go into JSON, None for NaN and ±Inf."""
    return value if value is not None and math.isfinite(value) else None


def format_number(value: float | None) -> str:
    """Three significant digits without float noise: 0.93, 81.2, 1.23k, 5.37G, NaN, +Inf."""
    if value is None:
        return "n/a"
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    rounded = float(f"{value:.3g}")  # round first so 999_960 becomes 1M, not 1e+03k
    if rounded == 0:
        return "0"
    magnitude = abs(rounded)
    if 1e3 <= magnitude < 1e18:
        for suffix, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
            if magnitude >= scale:
                return f"{rounded / scale:.3g}{suffix}"
    return f"{rounded:.3g}"


def format_change(value: float) -> str:
    text = format_number(value)
    return text if text.startswith("-") else "+" + text


def format_age(seconds: float) -> str:
    """A compact duration for "... ago": 45 s, 12 min, 1 h, 1.5 h, 7 d."""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{round(seconds / size, 1):g} {unit}"
    return f"{round(seconds):g} s"


def range_input(seconds: int) -> str:
    """The range as Prometheus's graph page writes it (1h, 90m, 7d)."""
    if seconds <= 0:
        return "1h"
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def format_labels(labels: Mapping[str, str]) -> str:
    """``name{a="1", b="2"}`` with values escaped the way PromQL writes them."""
    name = labels.get("__name__", "")
    pairs = ", ".join(
        f'{key}="{_escape(text)}"' for key, text in sorted(labels.items()) if key != "__name__"
    )
    return f"{name}{{{pairs}}}"


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _sample(pair: Any) -> tuple[float, float]:
    # [1700000000.123, "0.93"]; float() reads "NaN", "+Inf" and "-Inf" as Prometheus writes them.
    return float(pair[0]), float(pair[1])


def _key(metric: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((str(name), str(text)) for name, text in metric.items()))


def trend_of(samples: list[tuple[float, float]]) -> Trend:
    """First and last sample of the window, min and max, and change = end - start."""
    if not samples:
        return Trend()
    values = [v for _, v in samples if math.isfinite(v)]
    start, end = finite(samples[0][1]), finite(samples[-1][1])
    return Trend(
        start=start,
        end=end,
        min=min(values) if values else None,
        max=max(values) if values else None,
        change=finite(end - start) if start is not None and end is not None else None,
    )


class PrometheusQueryTool:
    name: ClassVar[str] = "prometheus.query"
    category: ClassVar[Category] = Category.read
    params_model: ClassVar[type[BaseModel]] = PrometheusParams
    result_model: ClassVar[type[BaseModel]] = PrometheusResult
    supports_dry_run: ClassVar[bool] = False
    idempotent: ClassVar[bool] = True

    def __init__(self, config: PrometheusToolConfig, env: Mapping[str, str]) -> None:
        self.config = config
        headers: dict[str, str] = {}
        if config.auth_header_env:
            value = env.get(config.auth_header_env)
            if not value:
                raise ConfigError(
                    f"tools.prometheus.auth_header_env names {config.auth_header_env}, but it is not set; "
                    f"export it with the whole Authorization header value (e.g. 'Bearer <token>')"
                )
            register_secret(value)
            headers["Authorization"] = value
        url = yarl.URL(config.base_url)
        # Errors name host:port only: a path prefix or query could carry more than we want in chat.
        self.host = f"{url.host}:{url.port}"
        self._http = OutboundSession(per_phase_timeout(config.timeout_s), headers=headers)

    async def aclose(self) -> None:
        await self._http.aclose()

    def category_of(self, params: PrometheusParams) -> Category:
        return self.category

    def rollback_for(self, params: PrometheusParams, result: PrometheusResult) -> StepCall | None:
        return None  # a read changes nothing

    async def run(self, params: PrometheusParams, *, dry_run: bool) -> PrometheusResult:
        range_s = self.config.default_range_s if params.range_s is None else params.range_s
        step_s = max(params.step_s or self.config.default_step_s, math.ceil(range_s / MAX_POINTS))
        # Millisecond precision is what Prometheus keeps; the same instant ends the range, so the
        # trend's last point is the value the instant query saw.
        now = round(time.time(), 3)
        started = time.monotonic()

        data = await self._call("/api/v1/query", {"query": params.query, "time": f"{now:.3f}"})
        result_type = str(data.get("resultType"))
        raw = data.get("result")
        if result_type == "string":
            text = str(raw[1])[:MAX_LABEL_CHARS] if isinstance(raw, list) and len(raw) == 2 else ""
            return self._result(params, "string", [], 0, False, f'the query returned the string "{_escape(text)}"',
                                range_s, step_s, now, started)
        parsed = self._parse_instant(result_type, raw)
        series_count = len(parsed)
        ranked = self._rank(parsed, params.sort)
        truncated = series_count > self.config.max_series
        shown = ranked[: params.top]
        if shown and range_s > 0 and result_type != "matrix":
            await self._attach_trends(params.query, shown, now, range_s, step_s)

        summary = self._summary(result_type, shown, series_count, truncated, params.sort, now, params.unit)
        return self._result(params, result_type, shown, series_count, truncated, summary,
                            range_s, step_s, now, started)

    def _parse_instant(self, result_type: Any, raw: Any) -> list[_Parsed]:
        try:
            if result_type == "scalar":
                return [_Parsed((), _sample(raw)[1], [])]
            if result_type == "vector":
                return [_Parsed(_key(item["metric"]), _sample(item["value"])[1], []) for item in raw]
            if result_type == "matrix":  # a range selector such as foo[5m]: its own samples are the trend
                parsed = []
                for item in raw:
                    samples = [_sample(pair) for pair in item.get("values", [])]
                    if samples:
                        parsed.append(_Parsed(_key(item["metric"]), samples[-1][1], samples))
                return parsed
        except _SHAPE_ERRORS as exc:
            raise self._unreadable(f"a {result_type} result", exc) from exc
        raise ToolError(
            f"Prometheus at {self.host} answered with result type {result_type!r}, which this tool does not "
            f"know; check that tools.prometheus.base_url points at a Prometheus API"
        )

    # ----- shaping the answer ----------------------------------------------------------------

    @staticmethod
    def _rank(parsed: list[_Parsed], sort: str) -> list[_Parsed]:
        sign = -1.0 if sort == "desc" else 1.0

        def order(item: _Parsed) -> tuple[bool, float, str]:
            # NaN says nothing about "highest": it goes last either way. Ties sort by labels so
            # the same data always gives the same top series.
            nan = math.isnan(item.value)
            return nan, 0.0 if nan else sign * item.value, format_labels(item.labels)

        return sorted(parsed, key=order)

    async def _attach_trends(
        self, query: str, shown: list[_Parsed], now: float, range_s: int, step_s: int
    ) -> None:
        # A whole number of steps back from ``now``, so ``now`` itself is the last point.
        start = now - (range_s // step_s) * step_s
        data = await self._call(
            "/api/v1/query_range", {"query": query, "start": f"{start:.3f}", "end": f"{now:.3f}", "step": str(step_s)}
        )
        wanted = {item.key: item for item in shown}
        try:
            for item in data.get("result") or []:
                match = wanted.get(_key(item.get("metric", {})))
                if match is not None:
                    match.samples = [_sample(pair) for pair in item.get("values", [])]
                    match.first_ts = match.samples[0][0] if match.samples else None
        except _SHAPE_ERRORS as exc:
            raise self._unreadable("the range query", exc) from exc

    def _unreadable(self, what: str, exc: Exception) -> ToolError:
        return ToolError(
            f"Prometheus at {self.host} answered {what} in a shape this tool cannot read "
            f"({type(exc).__name__}); check that tools.prometheus.base_url points at a Prometheus API"
        )

    def _summary(
        self, result_type: str, shown: list[_Parsed], count: int, truncated: bool, sort: str, now: float,
        unit: Unit | None = None,
    ) -> str:
        if not shown:
            return NO_SERIES
        top = shown[0]

        def number(value: float | None) -> str:
            return format_number(value) if unit is None else units.format_value(value, unit)

        def change(value: float) -> str:
            return format_change(value) if unit is None else units.format_change(value, unit)

        text = number(top.value)
        if top.samples and top.first_ts is not None and top.first_ts < now:
            trend = trend_of(top.samples)
            if trend.start is not None and trend.change is not None:
                ago = format_age(now - top.first_ts)
                text += f" ({ago} ago {number(trend.start)}, {change(trend.change)})"
        if result_type == "scalar":
            return f"scalar = {text}"
        described = f"{format_labels(top.labels)} = {text}"
        if count == 1:
            sentence = f"1 series: {described}"
        else:
            sentence = f"{count} series; {'highest' if sort == 'desc' else 'lowest'} {described}"
        if truncated:
            sentence += f"; more than {self.config.max_series} series matched, narrow the query with label matchers"
        return sentence

    def _result(
        self,
        params: PrometheusParams,
        result_type: Any,
        shown: list[_Parsed],
        series_count: int,
        truncated: bool,
        summary: str,
        range_s: int,
        step_s: int,
        now: float,
        started: float,
    ) -> PrometheusResult:
        series = [
            PrometheusSeries(labels=item.labels, value=finite(item.value), trend=trend_of(item.samples))
            for item in shown
        ]
        graph = urlencode(
            {"g0.expr": params.query, "g0.tab": "0", "g0.range_input": range_input(range_s)}, quote_via=quote
        )
        log.info(
            "prometheus.query_done",
            host=self.host,
            result_type=result_type,
            series_count=series_count,
            truncated=truncated,
            duration_ms=int((time.monotonic() - started) * 1000),
        )
        return PrometheusResult(
            query=params.query,
            result_type=result_type,
            series_count=series_count,
            truncated=truncated,
            series=series,
            value=series[0].value if series else None,
            unit=params.unit,
            summary=summary,
            graph_url=f"{self.config.base_url}/graph?{graph}",
            range_s=range_s,
            step_s=step_s,
            evaluated_at=now,
        )

    # ----- talking to Prometheus -------------------------------------------------------------

    async def _call(self, path: str, form: dict[str, str]) -> dict[str, Any]:
        url = self.config.base_url + path
        session = self._http.session
        try:
            if len(form["query"]) > POST_ABOVE_CHARS:
                request = session.post(url, data=form, allow_redirects=False)
            else:
                request = session.get(url, params=form, allow_redirects=False)
            async with request as response:
                body = await self._read_capped(response)
                status = response.status
        except TRANSPORT_ERRORS as exc:
            raise RetryableToolError(
                f"Prometheus at {self.host} did not answer: {describe(exc)}; it may be restarting "
                f"(check tools.prometheus.base_url if this persists)"
            ) from exc
        return self._data_of(status, body)

    async def _read_capped(self, response: aiohttp.ClientResponse) -> bytes:
        limit = self.config.max_response_bytes
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > limit:
                # Stop reading: the rest is never buffered.
                raise ToolError(
                    f"Prometheus at {self.host} answered with more than {limit // 1024} KiB; narrow the query with "
                    f"label matchers or aggregate it (sum by (...)), or shorten range_s / raise step_s"
                )
            chunks.append(chunk)
        return b"".join(chunks)

    def _data_of(self, status: int, body: bytes) -> dict[str, Any]:
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            doc = None
        if status >= 500 or status == 429:
            kind = doc.get("errorType") if isinstance(doc, dict) else None
            raise RetryableToolError(
                f"Prometheus at {self.host} is unavailable ({status}{', ' + str(kind) if kind else ''}); "
                f"try again later"
            )
        if status in (401, 403):
            raise ToolError(
                f"Prometheus at {self.host} refused the request ({status}); check the Authorization value in the "
                f"env var named by tools.prometheus.auth_header_env"
            )
        if not isinstance(doc, dict) or doc.get("status") not in {"success", "error"}:
            raise ToolError(
                f"Prometheus at {self.host} answered {status} without Prometheus API JSON; check that "
                f"tools.prometheus.base_url points at Prometheus, including any path prefix such as /prometheus"
            )
        if doc["status"] == "error" or status >= 400:
            kind = str(doc.get("errorType") or "unknown")
            error = str(doc.get("error") or "no detail given")[:MAX_ERROR_CHARS]
            raise ToolError(f"Prometheus rejected the query ({kind}): {error}. Fix the PromQL in the step's query")
        data = doc.get("data")
        if not isinstance(data, dict):
            raise ToolError(f"Prometheus at {self.host} answered success without data; is it a Prometheus API?")
        return data
