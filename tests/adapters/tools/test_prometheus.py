"""prometheus.query through the real ToolGateway against a real Prometheus (one per module),
plus small aiohttp servers for what a healthy Prometheus never does (auth, overload, huge
answers) and the demo stand-in's routes."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
import pytest_asyncio
import structlog
from aiohttp import web

from adapters.tools.prometheus import (
    NO_SERIES,
    PrometheusQueryTool,
    PrometheusToolConfig,
    format_number,
)
from bot.errors import ConfigError
from bot.loop.gateway import ToolGateway, ToolOutcome, ToolRegistry
from bot.model.proposals import Decision
from bot.ports import StepCall
from demo.prometheus import add_routes
from tests.fakes.authority import ScriptedAuthority
from tests.fakes.prometheus import LocalPrometheus, running_prometheus

# One Prometheus for the whole module: starting it costs a couple of seconds.
pytestmark = pytest.mark.asyncio(loop_scope="module")

ALLOW = Decision(verdict="allow", rule="reads", reason="reads are always allowed")
TOKEN = "PromKey prom-tok-0123456789abcdef"  # not a shape the generic patterns catch
DB_VAR = 'instance="db-01:9100",mountpoint="/var"'
SAMPLES = {
    f"node_filesystem_avail_bytes{{{DB_VAR}}}": 7e9,
    'node_filesystem_avail_bytes{instance="db-01:9100",mountpoint="/"}': 30e9,
    'node_filesystem_avail_bytes{instance="web-01:9100",mountpoint="/var"}': 45e9,
    f"node_filesystem_size_bytes{{{DB_VAR}}}": 100e9,
    'node_filesystem_size_bytes{instance="db-01:9100",mountpoint="/"}': 50e9,
    'node_filesystem_size_bytes{instance="web-01:9100",mountpoint="/var"}': 100e9,
    'kafka_consumergroup_lag{consumergroup="warehouse-loader",partition="0"}': 1000.0,
    'demo_ratio{kind="half"}': 0.5,
    'demo_ratio{kind="nan"}': math.nan,
    'demo_ratio{kind="inf"}': math.inf,
    **{f'demo_queue_depth{{queue="q{n}"}}': float(n) for n in range(1, 9)},
}
USED = "1 - node_filesystem_avail_bytes / node_filesystem_size_bytes"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def prometheus(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LocalPrometheus]:
    async with running_prometheus(tmp_path_factory.mktemp("prometheus"), SAMPLES) as running:
        yield running


@asynccontextmanager
async def open_tool(env: dict[str, str] | None = None, **config: Any) -> AsyncIterator[PrometheusQueryTool]:
    tool = PrometheusQueryTool(PrometheusToolConfig(**config), env or {})
    try:
        yield tool
    finally:
        await tool.aclose()


class Gateway:
    """The real gateway around one tool, recording its retry sleeps and audit records."""

    def __init__(self, tool: PrometheusQueryTool) -> None:
        registry = ToolRegistry()
        registry.register(tool)
        self.slept: list[float] = []
        self.audit: list[dict[str, Any]] = []
        self.authority = ScriptedAuthority()
        self.gateway = ToolGateway(registry, authority=self.authority, sleep=self._sleep, random=lambda: 0.5)

    async def _sleep(self, seconds: float) -> None:
        self.slept.append(seconds)

    async def query(self, retries: int = 0, **params: Any) -> ToolOutcome:
        try:
            return await self.gateway.read(StepCall(tool="prometheus.query", params=params), task_id=1,
                                           idempotency_key="task-1/evidence-0", timeout_s=10, retries=retries)
        finally:
            self.audit[:] = self.authority.audit


@asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def single_route(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.Application:
    app = web.Application()
    app.router.add_route("*", "/api/v1/{endpoint}", handler)
    return app


# ----- against a real Prometheus ----------------------------------------------------------------


async def test_instant_query_summarises_the_top_series_and_their_values(prometheus):
    async with open_tool(base_url=prometheus.base_url) as tool:
        outcome = await Gateway(tool).query(query=USED, range_s=0)

    assert outcome.ok, outcome.error
    result = outcome.result
    assert result["result_type"] == "vector" and result["series_count"] == 3 and not result["truncated"]
    assert [s["labels"]["instance"] for s in result["series"]] == ["db-01:9100", "web-01:9100", "db-01:9100"]
    assert [s["value"] for s in result["series"]] == pytest.approx([0.93, 0.55, 0.4])
    assert result["series"][0]["labels"] == {"instance": "db-01:9100", "job": "exporter", "mountpoint": "/var"}
    assert result["value"] == pytest.approx(0.93)
    assert result["summary"] == '3 series; highest {instance="db-01:9100", job="exporter", mountpoint="/var"} = 0.93'
    assert result["series"][0]["trend"] == {"start": None, "end": None, "min": None, "max": None, "change": None}
    graph = urlsplit(result["graph_url"])
    assert f"{graph.scheme}://{graph.netloc}{graph.path}" == prometheus.base_url + "/graph"
    assert parse_qs(graph.query) == {"g0.expr": [USED], "g0.tab": ["0"], "g0.range_input": ["1h"]}


async def test_ascending_sort_shows_the_lowest_series(prometheus):
    async with open_tool(base_url=prometheus.base_url) as tool:
        outcome = await Gateway(tool).query(query=USED, range_s=0, sort="asc", top=1)

    assert [s["value"] for s in outcome.result["series"]] == pytest.approx([0.4])
    lowest = '3 series; lowest {instance="db-01:9100", job="exporter", mountpoint="/"}'
    assert outcome.result["summary"].startswith(lowest)


async def test_range_query_gives_a_trend_whose_end_is_the_current_value(prometheus):
    lag = 'kafka_consumergroup_lag{consumergroup="warehouse-loader",partition="0"}'
    prometheus.exporter.samples[lag] = 1500.0
    await prometheus.wait_for(f"{lag} == 1500")

    async with open_tool(base_url=prometheus.base_url) as tool:
        outcome = await Gateway(tool).query(query="kafka_consumergroup_lag{partition=\"0\"}", range_s=300, step_s=1)

    assert outcome.ok, outcome.error
    top = outcome.result["series"][0]
    assert top["value"] == 1500
    assert top["trend"] == {"start": 1000, "end": 1500, "min": 1000, "max": 1500, "change": 500}
    assert " = 1.5k (" in outcome.result["summary"] and " ago 1k, +500)" in outcome.result["summary"]
    assert outcome.result["step_s"] == 1 and outcome.result["range_s"] == 300


async def test_a_unit_shows_values_as_people_read_them_and_keeps_the_numbers(prometheus):
    lag = 'kafka_consumergroup_lag{consumergroup="warehouse-loader",partition="0"}'
    prometheus.exporter.samples[lag] = 1500.0
    await prometheus.wait_for(f"{lag} == 1500")

    async with open_tool(base_url=prometheus.base_url) as tool:
        ratio = await Gateway(tool).query(query=USED, range_s=0, unit="ratio")
        # The lag as a ratio of 20000 messages, over a range: the trend's change is in points.
        trend = await Gateway(tool).query(query='kafka_consumergroup_lag{partition="0"} / 20000',
                                          range_s=300, step_s=1, unit="ratio")
        duration = await Gateway(tool).query(query="kafka_consumergroup_lag{partition=\"0\"} / 4000",
                                             range_s=0, unit="seconds")

    assert ratio.result["summary"].endswith(' = 93%') and ratio.result["value"] == pytest.approx(0.93)
    assert ratio.result["unit"] == "ratio"
    assert " = 7.5% (" in trend.result["summary"] and " ago 5%, +2.5 pp)" in trend.result["summary"]
    assert duration.result["summary"].endswith(" = 375 ms")


async def test_empty_result_says_no_series(prometheus):
    async with open_tool(base_url=prometheus.base_url) as tool:
        outcome = await Gateway(tool).query(query='node_filesystem_avail_bytes{mountpoint="/nope"}')

    assert outcome.ok
    assert outcome.result["series_count"] == 0 and outcome.result["series"] == []
    assert outcome.result["value"] is None
    assert outcome.result["summary"] == NO_SERIES


async def test_bad_promql_fails_without_retries_naming_bad_data(prometheus):
    async with open_tool(base_url=prometheus.base_url) as tool:
        gateway = Gateway(tool)
        outcome = await gateway.query(query="sum(rate(node_filesystem_avail_bytes[5m]", retries=2)

    assert not outcome.ok and not outcome.retryable
    assert outcome.attempts == 1 and gateway.slept == []
    assert "bad_data" in outcome.error and "parse error" in outcome.error


async def test_top_cuts_the_series_and_max_series_marks_truncation(prometheus):
    async with open_tool(base_url=prometheus.base_url, max_series=5) as tool:
        outcome = await Gateway(tool).query(query="demo_queue_depth", top=3, range_s=0)
        narrow = await Gateway(tool).query(query='demo_queue_depth{queue=~"q[12]"}', top=3, range_s=0)

    result = outcome.result
    assert result["series_count"] == 8 and result["truncated"] is True
    assert [s["labels"]["queue"] for s in result["series"]] == ["q8", "q7", "q6"]
    assert result["summary"].startswith('8 series; highest demo_queue_depth{instance="')
    assert "more than 5 series matched" in result["summary"]
    assert narrow.result["series_count"] == 2 and narrow.result["truncated"] is False


async def test_nan_and_inf_become_null_and_sort_sensibly(prometheus):
    async with open_tool(base_url=prometheus.base_url) as tool:
        outcome = await Gateway(tool).query(query="demo_ratio", range_s=60, step_s=1)

    assert outcome.ok, outcome.error
    series = outcome.result["series"]
    assert [s["labels"]["kind"] for s in series] == ["inf", "half", "nan"]  # NaN last, +Inf highest
    assert [s["value"] for s in series] == [None, 0.5, None]
    assert series[0]["trend"]["end"] is None and series[1]["trend"]["end"] == 0.5
    assert " = +Inf" in outcome.result["summary"]
    json.dumps(outcome.result, allow_nan=False)  # JSON-safe all the way down


async def test_a_long_query_is_posted_and_still_answered(prometheus):
    query = 'demo_queue_depth{queue="q8"}' + " + 0" * 400  # past the length that switches to POST
    async with open_tool(base_url=prometheus.base_url) as tool:
        outcome = await Gateway(tool).query(query=query, range_s=60, step_s=1)

    assert outcome.ok, outcome.error
    assert outcome.result["value"] == 8 and outcome.result["series"][0]["trend"]["end"] == 8


# ----- failures a healthy Prometheus does not produce on demand -------------------------------


async def test_nothing_listening_is_a_retryable_failure_naming_only_host_and_port():
    async with serving(web.Application()) as url:
        pass  # bound and released: nothing listens there now
    port = urlsplit(url).port
    async with open_tool(base_url=f"{url}/prefix") as tool:
        gateway = Gateway(tool)
        outcome = await gateway.query(query="up", retries=2)

    assert not outcome.ok and outcome.retryable
    assert outcome.attempts == 3 and gateway.slept == [0.25, 0.5]  # idempotent: retried with backoff
    assert f"127.0.0.1:{port}" in outcome.error and "could not connect" in outcome.error
    assert "/prefix" not in outcome.error


async def test_a_prometheus_that_never_answers_times_out_as_a_retryable_failure():
    release = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        await release.wait()
        return web.json_response({"status": "success", "data": {"resultType": "vector", "result": []}})

    async with serving(single_route(hang)) as url:
        try:
            async with open_tool(base_url=url, timeout_s=0.2) as tool:
                outcome = await Gateway(tool).query(query="up")
        finally:
            release.set()  # let the handler finish so the server can shut down at once

    assert not outcome.ok and outcome.retryable
    assert "timed out" in outcome.error and f"127.0.0.1:{urlsplit(url).port}" in outcome.error


async def test_overloaded_prometheus_is_retryable_and_too_big_an_answer_is_not():
    async def handler(request: web.Request) -> web.Response:
        if request.query["query"] == "overloaded":
            return web.json_response(
                {"status": "error", "errorType": "timeout", "error": "query timed out in expression evaluation"},
                status=503,
            )
        result = [{"metric": {"pod": f"p-{n}" + "x" * 200}, "value": [1.0, "1"]} for n in range(100)]
        return web.json_response({"status": "success", "data": {"resultType": "vector", "result": result}})

    async with serving(single_route(handler)) as url, open_tool(base_url=url, max_response_bytes=4096) as tool:
        busy = await Gateway(tool).query(query="overloaded")
        big = await Gateway(tool).query(query="everything")

    assert not busy.ok and busy.retryable and "503" in busy.error and "timeout" in busy.error
    assert not big.ok and not big.retryable and "more than 4 KiB" in big.error


async def test_auth_header_from_env_is_sent_and_never_shows_in_results_or_logs():
    seen: list[tuple[str, str]] = []

    async def echo_auth(request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        seen.append((request.method, auth))
        form = await request.post()
        if request.match_info["endpoint"] == "query" and "bad" in str(form.get("query", "")):
            return web.json_response(
                {"status": "error", "errorType": "bad_data", "error": f"rejected for {auth}"}, status=400
            )
        metric = {"__name__": "echo", "seen": auth}
        data = (
            {"resultType": "vector", "result": [{"metric": metric, "value": [1.0, "2"]}]}
            if request.match_info["endpoint"] == "query"
            else {"resultType": "matrix", "result": [{"metric": metric, "values": [[0.5, "1"], [1.0, "2"]]}]}
        )
        return web.json_response({"status": "success", "data": data})

    async with serving(single_route(echo_auth)) as url, open_tool(
        {"PROM_AUTH": TOKEN}, base_url=url, auth_header_env="PROM_AUTH"
    ) as tool:
        gateway = Gateway(tool)
        with structlog.testing.capture_logs() as logs:
            good = await gateway.query(query="echo")
            bad = await gateway.query(query="bad" + " " * 1600)  # long: posted as a form

    assert seen[0] == ("GET", TOKEN) and ("POST", TOKEN) in seen
    assert good.ok and bad.ok is False and "bad_data" in bad.error
    secret = "prom-tok-0123456789abcdef"
    assert secret not in json.dumps([good.model_dump(), bad.model_dump(), gateway.audit, logs], default=str)


async def test_missing_auth_env_var_is_a_config_error_naming_it():
    with pytest.raises(ConfigError, match="PROM_AUTH"):
        PrometheusQueryTool(PrometheusToolConfig(base_url="http://prometheus:9090", auth_header_env="PROM_AUTH"), {})


@pytest.mark.parametrize(
    "base_url", ["prometheus:9090", "ftp://prometheus", "http://user:pw@prometheus:9090", "http://p:9090/?x=1"]
)
async def test_config_refuses_odd_base_urls(base_url):
    with pytest.raises(ValueError, match="base_url"):
        PrometheusToolConfig(base_url=base_url)


async def test_long_ranges_raise_the_step_to_stay_under_prometheus_point_limit(prometheus):
    async with open_tool(base_url=prometheus.base_url) as tool:
        outcome = await Gateway(tool).query(query="demo_queue_depth", range_s=7 * 86400, step_s=1, top=1)

    assert outcome.ok, outcome.error
    assert outcome.result["step_s"] == 55  # ceil(604800 / 11000)
    assert parse_qs(urlsplit(outcome.result["graph_url"]).query)["g0.range_input"] == ["1w"]


@pytest.mark.parametrize(
    ("value", "text"),
    [(0.93, "0.93"), (0.1 + 0.2, "0.3"), (1234.5, "1.23k"), (999_960, "1M"), (5.37e9, "5.37G"),
     (-0.12, "-0.12"), (0.0, "0"), (math.nan, "NaN"), (-math.inf, "-Inf"), (41_200, "41.2k")],
)
async def test_numbers_in_summaries_are_compact(value, text):
    assert format_number(value) == text


# ----- the demo stand-in ----------------------------------------------------------------------


@asynccontextmanager
async def standin_tool() -> AsyncIterator[Gateway]:
    app = web.Application()
    add_routes(app)
    async with serving(app) as url, open_tool(base_url=url) as tool:
        yield Gateway(tool)


async def test_standin_tells_the_disk_story_the_tool_can_read():
    async with standin_tool() as gateway:
        outcome = await gateway.query(
            query='1 - node_filesystem_avail_bytes{mountpoint="/var"} / node_filesystem_size_bytes{mountpoint="/var"}'
        )

    assert outcome.ok, outcome.error
    top = outcome.result["series"][0]
    assert top["labels"]["instance"] == "db-01:9100" and top["labels"]["mountpoint"] == "/var"
    assert top["value"] == pytest.approx(0.93) and top["trend"]["end"] == top["value"]
    assert top["trend"]["start"] == pytest.approx(0.81)
    assert outcome.result["series_count"] == 2
    assert outcome.result["summary"] == (
        '2 series; highest {device="/dev/nvme1n1", fstype="ext4", instance="db-01:9100", job="node", '
        'mountpoint="/var"} = 0.93 (1 h ago 0.81, +0.12)'
    )


async def test_standin_narrows_by_equality_matchers_and_shows_growing_lag():
    async with standin_tool() as gateway:
        outcome = await gateway.query(query='kafka_consumergroup_lag{consumergroup="warehouse-loader"}')
        other = await gateway.query(query='kafka_consumergroup_lag{consumergroup="billing-sync"}')

    assert sorted(s["labels"]["partition"] for s in outcome.result["series"]) == ["0", "1", "2"]
    assert all(s["labels"]["topic"] == "orders" and s["trend"]["change"] > 0 for s in outcome.result["series"])
    assert other.result["series_count"] == 1


@pytest.mark.parametrize(
    ("query", "top_label", "top_value"),
    [
        ('sum by (ingress, namespace, service) (rate(nginx_ingress_controller_requests{status=~"5.."}[5m])) '
         "/ sum by (ingress, namespace, service) (rate(nginx_ingress_controller_requests[5m]))",
         ("ingress", "checkout"), 0.07),
        ("histogram_quantile(0.99, sum by (le, service) (rate(http_request_duration_seconds_bucket[5m])))",
         ("service", "checkout"), 1.8),
        ("up == 0", ("instance", "10.0.3.17:8080"), 0),
        ("(probe_ssl_earliest_cert_expiry - time()) / 86400", ("instance", "https://api.example.com"), 62),
        ("kube_job_status_failed > 0", ("job_name", "nightly-export-28533120"), 1),
        ("sum by (consumergroup) (kafka_consumergroup_lag)", ("consumergroup", "warehouse-loader"), 120_400),
    ],
)
async def test_standin_answers_the_playbook_queries_in_shapes_the_tool_parses(query, top_label, top_value):
    async with standin_tool() as gateway:
        outcome = await gateway.query(query=query)

    assert outcome.ok, outcome.error
    top = outcome.result["series"][0]
    assert top["labels"][top_label[0]] == top_label[1]
    assert top["value"] == pytest.approx(top_value) and top["trend"]["end"] == pytest.approx(top_value)


async def test_standin_answers_unknown_metrics_empty_and_bad_requests_like_prometheus():
    async with standin_tool() as gateway:
        unknown = await gateway.query(query="some_other_metric")
    app = web.Application()
    add_routes(app)
    async with serving(app) as url, aiohttp.ClientSession() as session:
        async with session.get(f"{url}/api/v1/status/buildinfo") as response:
            build = await response.json()
        async with session.get(f"{url}/api/v1/query_range", params={"query": "up", "start": "0",
                                                                     "end": "86400", "step": "1"}) as response:
            too_fine = (response.status, await response.json())
        async with session.post(f"{url}/api/v1/query", data={"query": ""}) as response:
            empty = (response.status, await response.json())

    assert unknown.ok and unknown.result["summary"] == NO_SERIES
    assert build["status"] == "success" and build["data"]["version"]
    assert too_fine[0] == 400 and too_fine[1]["errorType"] == "bad_data" and "11,000" in too_fine[1]["error"]
    assert empty[0] == 400 and empty[1]["status"] == "error"

