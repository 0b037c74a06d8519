from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import pytest
from aiohttp import web

from adapters.tools.http import HttpParams, HttpTool, HttpToolConfig
from bot.errors import ConfigError, RetryableToolError, ToolError
from bot.model.proposals import Category
from bot.playbooks.param_checks import ParamRules, url_params
from bot.playbooks.templates import build_context, render_params

TOKEN = "Bearer tok-abcdef-0123456789"


@dataclass
class Upstream:
    port: int
    seen: list[dict[str, str]] = field(default_factory=list)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return f"http://{self.host}{path}"


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    seen: list[dict[str, str]] = []

    async def record(request: web.Request) -> None:
        seen.append({"method": request.method, "path": request.path, **request.headers})

    async def ok(request: web.Request) -> web.Response:
        await record(request)
        return web.json_response({"ok": True, "owner": "ana@example.com"}, headers={"X-Request-Id": "r-1"})

    async def echo_auth(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(text="you sent " + request.headers.get("Authorization", "nothing"))

    async def big(request: web.Request) -> web.Response:
        return web.Response(text="x" * 200_000)

    async def fail(request: web.Request) -> web.Response:
        return web.Response(status=503, text="upstream overloaded")

    async def missing(request: web.Request) -> web.Response:
        return web.Response(status=404, text="no such thing")

    app = web.Application()
    app.router.add_route("*", "/ok", ok)
    app.router.add_get("/echo-auth", echo_auth)
    app.router.add_get("/big", big)
    app.router.add_get("/fail", fail)
    app.router.add_get("/missing", missing)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield Upstream(port=runner.addresses[0][1], seen=seen)
    finally:
        await runner.cleanup()


@pytest.fixture
async def make_tool() -> AsyncIterator:
    tools: list[HttpTool] = []

    def make(env: dict[str, str] | None = None, **config) -> HttpTool:
        tool = HttpTool(HttpToolConfig(**config), env or {})
        tools.append(tool)
        return tool

    yield make
    for tool in tools:
        await tool.aclose()


async def test_get_on_an_allowed_host_returns_status_kept_headers_and_redacted_body(upstream, make_tool):
    tool = make_tool(allow_hosts=[upstream.host])
    params = HttpParams(url=upstream.url("/ok"))

    result = await tool.run(params, dry_run=False)

    assert result.status == 200
    assert result.headers["x-request-id"] == "r-1"
    assert '"ok": true' in result.body
    assert "ana@example.com" not in result.body  # PII masked at the tool
    assert result.truncated is False


async def test_category_depends_on_the_method(make_tool):
    tool = make_tool(allow_hosts=["example.com"])
    assert tool.category_of(HttpParams(url="http://example.com/", method="get")) is Category.read
    assert tool.category_of(HttpParams(url="http://example.com/", method="HEAD")) is Category.read
    assert tool.category_of(HttpParams(url="http://example.com/", method="POST")) is Category.write_irreversible


async def test_host_outside_the_allowlist_is_refused_and_nothing_is_sent(upstream, make_tool):
    tool = make_tool(allow_hosts=["127.0.0.1"])  # no port: does not cover 127.0.0.1:<port>

    with pytest.raises(ToolError) as caught:
        await tool.run(HttpParams(url=upstream.url("/ok")), dry_run=False)

    assert upstream.host in str(caught.value)
    assert "tools.http.allow_hosts" in str(caught.value)
    assert upstream.seen == []


async def test_response_is_capped_and_marked_truncated(upstream, make_tool):
    tool = make_tool(allow_hosts=[upstream.host], max_response_bytes=1000)

    result = await tool.run(HttpParams(url=upstream.url("/big")), dry_run=False)

    assert result.truncated is True
    assert len(result.body) == 1000


async def test_5xx_is_retryable_and_4xx_is_not(upstream, make_tool):
    tool = make_tool(allow_hosts=[upstream.host])

    with pytest.raises(RetryableToolError, match="503"):
        await tool.run(HttpParams(url=upstream.url("/fail")), dry_run=False)
    with pytest.raises(ToolError, match="404") as caught:
        await tool.run(HttpParams(url=upstream.url("/missing")), dry_run=False)
    assert not isinstance(caught.value, RetryableToolError)


async def test_unexpected_status_fails_when_expect_status_is_given(upstream, make_tool):
    tool = make_tool(allow_hosts=[upstream.host])

    with pytest.raises(ToolError, match=r"expected \[201\]"):
        await tool.run(HttpParams(url=upstream.url("/ok"), expect_status=[201]), dry_run=False)


async def test_connection_refused_is_retryable(make_tool):
    # Bind and release a port so nothing listens there.
    runner = web.AppRunner(web.Application())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    await runner.cleanup()
    tool = make_tool(allow_hosts=[f"127.0.0.1:{port}"])

    with pytest.raises(RetryableToolError, match="could not connect"):
        await tool.run(HttpParams(url=f"http://127.0.0.1:{port}/"), dry_run=False)


async def test_auth_header_comes_from_env_and_never_shows_in_results(upstream, make_tool):
    tool = make_tool(
        {"UPSTREAM_AUTH": TOKEN}, allow_hosts=[upstream.host], auth_header_env={upstream.host: "UPSTREAM_AUTH"}
    )

    result = await tool.run(HttpParams(url=upstream.url("/echo-auth")), dry_run=False)

    assert upstream.seen[0]["Authorization"] == TOKEN  # it was sent
    assert "tok-abcdef-0123456789" not in result.model_dump_json()  # but the echo is masked
    preview = await tool.run(HttpParams(url=upstream.url("/echo-auth")), dry_run=True)
    assert "tok-abcdef-0123456789" not in preview.model_dump_json()


async def test_missing_auth_env_var_is_a_config_error_naming_it(make_tool):
    with pytest.raises(ConfigError, match="UPSTREAM_AUTH"):
        make_tool({}, allow_hosts=["a.example"], auth_header_env={"a.example": "UPSTREAM_AUTH"})


async def test_dry_run_sends_nothing_and_shows_the_request(upstream, make_tool):
    tool = make_tool(allow_hosts=[upstream.host])
    params = HttpParams.model_validate(
        {"method": "POST", "url": upstream.url("/ok"), "json": {"replicas": 3}, "headers": {"X-Change": "42"}}
    )

    result = await tool.run(params, dry_run=True)

    assert upstream.seen == []
    assert result.dry_run is True and result.status is None
    assert result.request == {
        "method": "POST",
        "url": upstream.url("/ok"),
        "headers": {"X-Change": "42"},
        "json": {"replicas": 3},
    }


async def test_post_sends_the_json_body(upstream, make_tool):
    tool = make_tool(allow_hosts=[upstream.host])
    params = HttpParams.model_validate({"method": "post", "url": upstream.url("/ok"), "json": {"a": 1}})

    result = await tool.run(params, dry_run=False)

    assert result.status == 200
    assert upstream.seen[0]["method"] == "POST"
    assert upstream.seen[0]["Content-Type"] == "application/json"


@pytest.mark.parametrize(
    "params",
    [
        {"url": "http://x.example/", "headers": {"Authorization": "Bearer abc"}},
        {"url": "http://user:pw@x.example/"},
        {"url": "ftp://x.example/"},
        {"url": "/relative"},
        {"url": "http://x.example/", "method": "TRACE"},
        {"url": "http://x.example/", "extra": 1},
    ],
)
def test_params_refuse_credentials_and_odd_urls(params):
    with pytest.raises(ValueError):
        HttpParams.model_validate(params)


HOSTILE = ["checkout", "%2e%2e", "../../../services/checkout/rollback?x=", "?", "#", "@evil.com", "\\", "ünï code",
           "..%2F..%2Fadmin", "a/../../b"]


@pytest.fixture
async def platform() -> AsyncIterator[Upstream]:
    """A platform API whose only route is a service's rollback; anything else is recorded as a 404."""
    seen: list[dict[str, str]] = []

    async def rollback(request: web.Request) -> web.Response:
        seen.append({"path": request.raw_path, "service": request.match_info["service"]})
        return web.json_response({"ok": True})

    async def miss(request: web.Request) -> web.Response:
        seen.append({"path": request.raw_path, "service": "(no route)"})
        return web.Response(status=404)

    app = web.Application()
    app.router.add_post("/platform/services/{service}/rollback", rollback)
    app.router.add_route("*", "/{tail:.*}", miss)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield Upstream(port=runner.addresses[0][1], seen=seen)
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("service", HOSTILE)
async def test_a_hostile_label_in_a_rendered_url_reaches_only_the_templates_route(platform, make_tool, service):
    tool = make_tool(allow_hosts=[platform.host])
    ctx = build_context([], {}, {"service": service}, {"platform_api": f"http://{platform.host}"}, None)
    rendered = render_params(
        {"method": "POST", "url": "{{ vars.platform_api }}/platform/services/{{ labels.service }}/rollback"}, ctx,
        where="steps.roll_back.params", rules=ParamRules(url_params=url_params(HttpParams)))

    params = HttpParams.model_validate(rendered)
    assert params.url == rendered["url"]  # the URL the approver sees is the one sent
    result = await tool.run(params, dry_run=False)

    assert result.status == 200
    assert platform.seen == [{"path": urlsplit(rendered["url"]).path, "service": service}]


async def test_the_allowlist_is_checked_on_the_normalized_url(upstream, make_tool):
    tool = make_tool(allow_hosts=[upstream.host])

    # A backslash is a slash to a browser: the host is the allowed one and the rest is path.
    params = HttpParams(url=f"http://{upstream.host}\\@evil.example/ok")
    assert params.url == f"http://{upstream.host}/@evil.example/ok"
    with pytest.raises(ToolError, match="returned 404"):
        await tool.run(params, dry_run=False)
    assert upstream.seen == []  # /@evil.example/ok has no route on the upstream; nothing reached /ok

    params = HttpParams(url=f"HTTP://{upstream.host}/x/%2e%2e/./ok#fragment")
    assert params.url == upstream.url("/ok")
    assert (await tool.run(params, dry_run=False)).status == 200
    with pytest.raises(ToolError, match=r"host evil\.example is not allowed"):
        await tool.run(HttpParams(url=f"http://EVIL.example/{upstream.host}/ok"), dry_run=False)


async def test_the_dry_run_shows_the_final_url(upstream, make_tool):
    tool = make_tool(allow_hosts=[upstream.host])

    result = await tool.run(HttpParams(url=f"http://{upstream.host}/a/../ok#top"), dry_run=True)

    assert result.request is not None and result.request["url"] == upstream.url("/ok")
