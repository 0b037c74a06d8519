"""Demo Prometheus for the stand-in: ``/api/v1/query``, ``/api/v1/query_range`` and
``/api/v1/status/buildinfo`` in the real response shapes, with made-up data.

This is a demo, not a PromQL engine. It picks a story by the metric names it finds in the query
text (a filesystem filling up on ``db-01:9100``, a Kafka consumer group falling behind, 5xx on the
``checkout`` ingress, slow p99s, targets down, a certificate about to expire, a failed Kubernetes
job) and shapes the numbers with a few text heuristics: ``1 -`` turns free space into used
space, ``/`` turns request rates into ratios, ``name="value"`` pairs narrow the series that have
that label, ``sum by (...)`` / ``max by (...)`` group them, and a trailing comparison such as
``== 0`` or ``> 0.9`` filters them. Anything else answers an empty vector, as a real Prometheus
does when nothing matches.

Values are deterministic: each series is "now" at the evaluation time the caller asks for and
grows towards it, so an instant query and the end of a range query at the same time agree, and a
demo run always tells the same story.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from aiohttp import web

MAX_POINTS = 11_000
GIB = 1024**3
DAY_S = 86400.0

# A bare selector, perhaps with a filtering comparison (up == 0): the result keeps the metric name.
_SELECTOR_ONLY = re.compile(r"^\s*[A-Za-z_:][\w:]*\s*(\{[^}]*\})?\s*((==|!=|>=|<=|>|<)\s*[-\d.eE+]+)?\s*$")
_EQUALS = re.compile(r'([A-Za-z_]\w*)\s*=(?![=~])\s*"((?:[^"\\]|\\.)*)"')
_BY = re.compile(r"\bby\s*\(([^)]*)\)")
_AGGREGATION = re.compile(r"^\s*(sum|max|min|avg|count)\b")
_TRAILING_FILTER = re.compile(r"(==|!=|>=|<=|>|<)\s*(-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)\s*(\)*)\s*$")
_DURATION = re.compile(r"^(\d+)(ms|s|m|h|d|w)$")
_DURATION_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@dataclass(frozen=True)
class Curve:
    """One demo series: ``value(t, now)`` with ``now`` the end of what the caller asked for."""

    labels: dict[str, str]
    value: Callable[[float, float], float]


def growing(current: float, per_hour: float, floor: float = 0.0) -> Callable[[float, float], float]:
    """``current`` at ``now``, ``per_hour`` less for each hour before it (never below ``floor``)."""
    return lambda t, now: max(floor, current - per_hour * (now - t) / 3600)


def scaled(value: Callable[[float, float], float], factor: float) -> Callable[[float, float], float]:
    return lambda t, now: factor * value(t, now)


def flat(value: float) -> Callable[[float, float], float]:
    return lambda t, now: value


# ----- the stories ---------------------------------------------------------------------------

_VOLUMES = [  # instance, mountpoint, device, size, used fraction now, growth per hour
    ("db-01:9100", "/var", "/dev/nvme1n1", 500 * GIB, 0.93, 0.12),
    ("db-01:9100", "/", "/dev/nvme0n1p1", 50 * GIB, 0.41, 0.001),
    ("web-01:9100", "/var", "/dev/sdb1", 200 * GIB, 0.55, 0.01),
]


def _filesystem(query: str) -> tuple[list[Curve], bool]:
    inodes = "node_filesystem_files" in query
    has_free = ("node_filesystem_files_free" if inodes else "node_filesystem_avail_bytes") in query
    has_size = re.search(r"node_filesystem_files(?!_free)" if inodes else "node_filesystem_size_bytes", query)
    if has_free and has_size:
        shape = "used_ratio" if re.search(r"\b1\s*-", query) else "free_ratio"
    else:
        shape = "free" if has_free else "size"
    percent = 100.0 if re.search(r"\b100\s*\*|\*\s*100\b", query) else 1.0
    curves = []
    for instance, mountpoint, device, size, used, per_hour in _VOLUMES:
        labels = {"instance": instance, "job": "node", "mountpoint": mountpoint, "device": device, "fstype": "ext4"}
        if inodes:  # one inode per 4 KiB block, and inodes are not what is running out
            curves.append(Curve(labels, _volume(shape, size / 4096, growing(used * 0.4, per_hour * 0.4), percent)))
        else:
            curves.append(Curve(labels, _volume(shape, size, growing(used, per_hour), percent)))
    return curves, True


def _volume(
    shape: str, total: float, used_at: Callable[[float, float], float], percent: float
) -> Callable[[float, float], float]:
    def value(t: float, now: float) -> float:
        used = used_at(t, now)
        if shape == "used_ratio":
            return percent * used
        if shape == "free_ratio":
            return percent * (1 - used)
        return total * (1 - used) if shape == "free" else total

    return value


def _kafka(query: str) -> tuple[list[Curve], bool]:
    base = {"instance": "kafka-exporter:9308", "job": "kafka-exporter"}
    curves = [
        Curve({**base, "consumergroup": "warehouse-loader", "topic": "orders", "partition": str(p)},
              growing(lag, 15_000, floor=200))
        for p, lag in enumerate((41_200, 38_900, 40_300))
    ]
    curves.append(Curve({**base, "consumergroup": "billing-sync", "topic": "invoices", "partition": "0"}, flat(12)))
    return curves, True


_INGRESSES = [  # ingress/service, 5xx ratio now, growth per hour, requests per second
    ("checkout", 0.07, 0.06, 120.0),
    ("search", 0.004, 0.0, 340.0),
    ("cart", 0.012, 0.001, 85.0),
]


def _nginx(query: str) -> tuple[list[Curve], bool]:
    ratio = "/" in query
    errors_only = "5.." in query or "5xx" in query
    curves = []
    for name, share, per_hour, rps in _INGRESSES:
        labels = {"ingress": name, "namespace": "shop", "service": name}
        share_at = growing(share, per_hour)
        if ratio:
            curves.append(Curve(labels, share_at))
        elif errors_only:
            curves.append(Curve(labels, scaled(share_at, rps)))
        else:
            curves.append(Curve(labels, flat(rps)))
    return curves, not ratio


def _latency(query: str) -> tuple[list[Curve], bool]:
    p99 = [("checkout", 1.8, 1.2), ("search", 0.35, 0.01), ("cart", 0.22, 0.0)]
    return [Curve({"service": s, "namespace": "shop"}, growing(v, g, floor=0.05)) for s, v, g in p99], False


def _up(query: str) -> tuple[list[Curve], bool]:
    targets = [
        ("checkout", "shop", "10.0.3.17:8080", 0.0),
        ("checkout", "shop", "10.0.3.18:8080", 0.0),
        ("checkout", "shop", "10.0.3.19:8080", 1.0),
        ("search", "shop", "10.0.4.11:8080", 1.0),
        ("node", "monitoring", "db-01:9100", 1.0),
    ]
    return [
        Curve({"job": job, "namespace": ns, "service": job, "instance": instance}, flat(value))
        for job, ns, instance, value in targets
    ], True


def _certificates(query: str) -> tuple[list[Curve], bool]:
    time_left = "time()" in query
    per_day = "86400" in query

    def expiry(days: float) -> Callable[[float, float], float]:
        seconds = days * DAY_S
        if time_left and per_day:
            return flat(days)
        if time_left:
            return flat(seconds)
        return lambda t, now: round(t + seconds)

    return [
        Curve({"instance": "https://shop.example.com", "job": "blackbox"}, expiry(9)),
        Curve({"instance": "https://api.example.com", "job": "blackbox"}, expiry(62)),
    ], False


def _kube_jobs(query: str) -> tuple[list[Curve], bool]:
    base = {"job": "kube-state-metrics", "namespace": "data"}
    return [
        Curve({**base, "job_name": "nightly-export-28533120", "reason": "BackoffLimitExceeded"}, flat(1)),
        Curve({**base, "job_name": "report-builder-28533060", "reason": "BackoffLimitExceeded"}, flat(0)),
    ], True


# Checked in order: the first whose pattern occurs in the query tells the story.
_STORIES: list[tuple[re.Pattern[str], Callable[[str], tuple[list[Curve], bool]]]] = [
    (re.compile(r"histogram_quantile|_bucket\b"), _latency),
    (re.compile(r"nginx_ingress_controller_requests"), _nginx),
    (re.compile(r"kafka_consumergroup_lag"), _kafka),
    (re.compile(r"node_filesystem_(avail_bytes|size_bytes|files_free|files)\b"), _filesystem),
    (re.compile(r"probe_ssl_earliest_cert_expiry"), _certificates),
    (re.compile(r"kube_job_status_failed"), _kube_jobs),
    (re.compile(r"(?<![\w:])up(?![\w:])"), _up),
]


Samples = list[tuple[float, float]]


def evaluate(query: str, times: list[float], now: float) -> list[tuple[dict[str, str], Samples]]:
    """The demo series ``query`` stands for at ``times``, narrowed, filtered and grouped as the
    module docstring says; series with no sample left are dropped."""
    for pattern, story in _STORIES:
        if pattern.search(query):
            curves, additive = story(query)
            break
    else:
        return []
    if _SELECTOR_ONLY.match(query):
        name = re.split(r"[{\s=!<>]", query.strip(), maxsplit=1)[0]
        curves = [Curve({"__name__": name, **c.labels}, c.value) for c in curves]
    for label, wanted in _EQUALS.findall(query):
        curves = [c for c in curves if c.labels.get(label, wanted) == wanted]
    series = [(c.labels, [(t, c.value(t, now)) for t in times]) for c in curves]
    passes, inside = _filter(query)
    if inside:  # count(up == 0): the comparison drops members before they are grouped
        series = [(labels, [(t, v) for t, v in points if passes(v)]) for labels, points in series]
    series = _grouped(query, series, additive)
    if not inside:
        series = [(labels, [(t, v) for t, v in points if passes(v)]) for labels, points in series]
    return [(labels, points) for labels, points in series if points]


def _grouped(
    query: str, series: list[tuple[dict[str, str], Samples]], additive: bool
) -> list[tuple[dict[str, str], Samples]]:
    aggregation = _AGGREGATION.match(query)
    if not aggregation:
        return series
    by = _BY.search(query)
    keep = [name.strip() for name in by.group(1).split(",") if name.strip()] if by else []
    groups: dict[tuple[tuple[str, str], ...], dict[float, list[float]]] = {}
    for labels, points in series:
        key = tuple((name, labels[name]) for name in keep if name in labels)
        at_time = groups.setdefault(key, {})
        for t, v in points:
            at_time.setdefault(t, []).append(v)
    op = aggregation.group(1)
    combine: Callable[[list[float]], float]
    if op == "count":
        combine = lambda values: float(len(values))  # noqa: E731
    elif op == "sum" and additive:
        combine = sum
    elif op == "min":
        combine = min
    elif op == "avg":
        combine = lambda values: sum(values) / len(values)  # noqa: E731
    else:  # max, or a sum of ratios, which would mean nothing: the worst member stands for the group
        combine = max
    return [
        (dict(key), [(t, combine(values)) for t, values in sorted(at_time.items())])
        for key, at_time in groups.items()
    ]


def _filter(query: str) -> tuple[Callable[[float], bool], bool]:
    """The trailing comparison's test, and whether it sits inside the aggregation's parentheses."""
    found = _TRAILING_FILTER.search(query)
    if not found:
        return (lambda value: True), False
    op, bound = found.group(1), float(found.group(2))
    tests: dict[str, Callable[[float], bool]] = {
        "==": lambda v: v == bound,
        "!=": lambda v: v != bound,
        ">=": lambda v: v >= bound,
        "<=": lambda v: v <= bound,
        ">": lambda v: v > bound,
        "<": lambda v: v < bound,
    }
    return tests[op], bool(found.group(3))


# ----- the HTTP API --------------------------------------------------------------------------


def format_sample(value: float) -> str:
    """A sample value as Prometheus writes it: a string, NaN and +Inf spelled out."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    value = float(f"{value:.6g}")  # the demo curves' float noise is not part of the story
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


def _bad_data(message: str) -> web.Response:
    return web.json_response({"status": "error", "errorType": "bad_data", "error": message}, status=400)


class _BadParam(Exception):
    pass


def _timestamp(form: dict[str, str], name: str, default: float | None = None) -> float:
    raw = form.get(name)
    if raw is None or raw == "":
        if default is None:
            raise _BadParam(f'invalid parameter "{name}": cannot parse "" to a valid timestamp')
        return default
    try:
        return float(raw)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise _BadParam(f'invalid parameter "{name}": cannot parse "{raw}" to a valid timestamp') from None


def _step(raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        found = _DURATION.match(raw)
        if not found:
            raise _BadParam(f'invalid parameter "step": cannot parse "{raw}" to a valid duration') from None
        return int(found.group(1)) * _DURATION_S[found.group(2)]


async def _form(request: web.Request) -> dict[str, str]:
    form = dict(request.query)
    if request.method == "POST":
        form.update({key: str(value) for key, value in (await request.post()).items()})
    return form


def _query(form: dict[str, str]) -> str:
    query = form.get("query", "")
    if not query.strip():
        raise _BadParam('invalid parameter "query": 1:1: parse error: no expression found in input')
    return query


async def instant_query(request: web.Request) -> web.Response:
    try:
        form = await _form(request)
        query = _query(form)
        at = _timestamp(form, "time", default=round(time.time(), 3))
    except _BadParam as exc:
        return _bad_data(str(exc))
    result = [
        {"metric": labels, "value": [at, format_sample(points[-1][1])]} for labels, points in evaluate(query, [at], at)
    ]
    return web.json_response({"status": "success", "data": {"resultType": "vector", "result": result}})


async def range_query(request: web.Request) -> web.Response:
    try:
        form = await _form(request)
        query = _query(form)
        start = _timestamp(form, "start")
        end = _timestamp(form, "end")
        step = _step(form.get("step", ""))
    except _BadParam as exc:
        return _bad_data(str(exc))
    if end < start:
        return _bad_data('invalid parameter "end": end timestamp must not be before start time')
    if step <= 0:
        return _bad_data("zero or negative query resolution step widths are not accepted. Try a positive integer")
    if (end - start) / step > MAX_POINTS:
        return _bad_data(
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution "
            "(?step=XX)"
        )
    times = [start + i * step for i in range(int((end - start) / step + 1e-9) + 1)]
    result = [
        {"metric": labels, "values": [[t, format_sample(v)] for t, v in points]}
        for labels, points in evaluate(query, times, end)
    ]
    return web.json_response({"status": "success", "data": {"resultType": "matrix", "result": result}})


async def build_info(request: web.Request) -> web.Response:
    return web.json_response(
        {
            "status": "success",
            "data": {
                "version": "2.53.0",
                "revision": "ooda-demo",
                "branch": "demo",
                "buildUser": "ooda-standin",
                "buildDate": "20240101-00:00:00",
                "goVersion": "go1.22.4",
            },
        }
    )


def add_routes(app: web.Application) -> None:
    """Add the demo Prometheus API to the stand-in's application."""
    for method in ("GET", "POST"):
        app.router.add_route(method, "/api/v1/query", instant_query)
        app.router.add_route(method, "/api/v1/query_range", range_query)
    app.router.add_get("/api/v1/status/buildinfo", build_info)
