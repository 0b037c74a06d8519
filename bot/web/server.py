"""The one HTTP server: webhook intake, the API, Slack's HTTP mode, /metrics, /healthz, /readyz.

aiohttp itself never times out a client that is slow to send a request: one that opens a
connection and trickles its headers, or sends headers and stalls its body, holds a connection
for as long as it likes, and a thousand of them hold a thousand. ``serve()`` puts a guard in front
of every connection (``server:`` in the config):

- at most ``max_connections_per_client`` connections per client address; the next is answered
  429 and closed before anything is read, and counted;
- a request's headers must be complete ``header_timeout_s`` after its first byte (after the
  connection opened, for its first request), and its body ``body_timeout_s`` after the headers;
  a late client gets 408 and is closed, and is counted;
- an idle keep-alive connection lives ``keepalive_timeout_s``: the header timeout starts with a
  request's first byte, not when the connection went idle, so Alertmanager keeps reusing its
  connection between notifications.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Protocol, cast

import structlog
from aiohttp import web

from bot.config import ServerConfig
from bot.metrics import Metrics
from bot.store.ports import Lifecycle, WorkLagReads

log = structlog.get_logger(__name__)

_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
# A random prefix per process and a counter: unique like a UUID for correlating log lines, without
# a urandom syscall on every request.
_process_prefix = uuid.uuid4().hex[:12]
_request_ids = (f"{_process_prefix}-{n}" for n in itertools.count(1))
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def correlation_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bind a correlation id for everything this request logs, audits or publishes."""
    incoming = request.headers.get("X-Request-Id", "")
    correlation_id = incoming if incoming and _SAFE_REQUEST_ID.match(incoming) else next(_request_ids)
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(correlation_id=correlation_id)
    connection = _guarded(request)
    if connection is not None:
        connection.request_started(request.content)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers["X-Request-Id"] = correlation_id
        raise
    except Exception as exc:
        if connection is not None and connection.cut:
            # The guard answered 408 and closed the connection under the handler; its read failed
            # for that reason, which is counted already and is not a bug to log.
            log.info("http.request_cut", path=request.path, error=type(exc).__name__)
            return web.Response(status=408)
        log.exception("http.unhandled_error", path=request.path, method=request.method)
        response = web.json_response(
            {"error": "internal_error", "message": "unexpected error; see the server log",
             "correlation_id": correlation_id},
            status=500,
        )
    finally:
        if connection is not None:
            connection.request_finished()
    response.headers["X-Request-Id"] = correlation_id
    return response


def _guarded(request: web.Request) -> GuardedConnection | None:
    transport = request.transport
    protocol = transport.get_protocol() if transport is not None else None
    return protocol if isinstance(protocol, GuardedConnection) else None


class HasRole(Protocol):
    @property
    def role(self) -> str: ...


class ReadinessStore(Lifecycle, WorkLagReads, Protocol):
    """**Protocol:** the store as /readyz and /metrics read it: a heartbeat write and the work waiting."""


def build_web_app(
    *,
    routes: list[web.RouteDef],
    store: ReadinessStore,
    metrics: Metrics,
    leadership: HasRole | None = None,
    max_body_bytes: int,
    tracing: Any = None,
) -> web.Application:
    # client_max_size covers request.read()/json() in the API and Slack routes; intake reads in
    # chunks and enforces its own limit so it can answer 413 early.
    # ``tracing``: OpenTelemetry's aiohttp server middleware (bot/tracing.py), outermost so the
    # server span covers the whole request; None when traces are off.
    middlewares = [tracing, correlation_middleware] if tracing is not None else [correlation_middleware]
    app = web.Application(middlewares=middlewares, client_max_size=max_body_bytes)

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def read_work_lag() -> dict[str, dict[str, float]] | None:
        """The work waiting in the store by kind, also set on the work gauges; None if the store did not answer."""
        try:
            async with asyncio.timeout(2.0):
                lag = await store.work_lag()
        except Exception as exc:
            log.warning("store.work_lag_unread", error=str(exc))
            metrics.record_work_lag(None)
            return None
        now = datetime.now(UTC)
        figures = {kind: (backlog.count, round(backlog.age_s(now), 3)) for kind, backlog in lag.by_kind().items()}
        metrics.record_work_lag(figures)
        return {kind: {"count": count, "oldest_s": age} for kind, (count, age) in figures.items()}

    async def readyz(_: web.Request) -> web.Response:
        try:
            async with asyncio.timeout(2.0):
                await store.heartbeat()
        except Exception as exc:
            log.warning("readyz.store_not_writable", error=str(exc))
            return web.json_response({"status": "unavailable", "store": "not writable"}, status=503)
        ready: dict[str, Any] = {"status": "ready", "store": "writable"}
        if leadership is not None:
            ready["role"] = leadership.role  # leader: runs the scheduled jobs; standby: takes over if it dies
        # Work waiting is information, not a failure: another replica, or this one, still works on
        # it, and taking this replica out of a load balancer would not make it go faster.
        lag = await read_work_lag()
        if lag is not None:
            ready["lag"] = lag
        return web.json_response(ready)

    async def metrics_handler(_: web.Request) -> web.Response:
        await read_work_lag()
        return web.Response(body=metrics.render(), content_type="text/plain", charset="utf-8",
                            headers={"X-Content-Type-Options": "nosniff"})

    app.add_routes([
        web.get("/healthz", healthz),
        web.get("/readyz", readyz),
        web.get("/metrics", metrics_handler),
        *routes,
    ])
    return app


def _raw_response(status: str, error: str, message: str, extra_headers: str = "") -> bytes:
    """A whole HTTP/1.1 response written straight to the socket: no request was handed to aiohttp."""
    body = json.dumps({"error": error, "message": message}).encode()
    head = (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n{extra_headers}\r\n")
    return head.encode() + body


class ConnectionGuard:
    """Counts connections per client address and times their requests; one per listening server."""

    def __init__(self, config: ServerConfig, metrics: Metrics) -> None:
        self.config = config
        self._open: dict[str, int] = {}
        self._refusal_logged: set[str] = set()  # one warning per address while it stays over the cap
        self.refused = metrics.http_connections_refused
        self.timeouts = metrics.http_timeouts
        metrics.track_queue(metrics.http_connections_open, lambda: sum(self._open.values()))
        cap = config.max_connections_per_client
        self.too_many = _raw_response(
            "429 Too Many Requests", "too_many_connections",
            f"this address already has {cap} open connections (server.max_connections_per_client); "
            "reuse a connection or retry when one closes", "Retry-After: 1\r\n")

    def protocol_factory(self, inner: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """Wraps aiohttp's per-connection protocol factory for ``loop.create_server``."""
        return lambda: GuardedConnection(self, inner())

    def admit(self, address: str) -> bool:
        count = self._open.get(address, 0)
        if count >= self.config.max_connections_per_client:
            self.refused.labels("per_client_limit").inc()
            if address not in self._refusal_logged:
                self._refusal_logged.add(address)
                log.warning("http.connections_refused", client=address, open=count,
                            limit=self.config.max_connections_per_client)
            return False
        self._open[address] = count + 1
        return True

    def release(self, address: str) -> None:
        count = self._open.get(address, 0) - 1
        if count > 0:
            self._open[address] = count
        else:
            self._open.pop(address, None)
        if count < self.config.max_connections_per_client:
            self._refusal_logged.discard(address)


class GuardedConnection(asyncio.Protocol):
    """One client connection: passes everything to aiohttp's protocol and cuts it when a request is late.

    The header timer starts when the connection opens and again with the first byte after a
    request was handled; ``request_started`` (from the server's middleware, once aiohttp has parsed
    the headers) stops it and starts the body timer, which stops once the body is complete. A
    late connection is answered 408 when no response has begun on it, then closed.
    """

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self._guard = guard
        self._inner = inner
        self._transport: asyncio.Transport | None = None
        self._address = ""
        self._admitted = False
        self._timer: asyncio.TimerHandle | None = None
        self._phase = "header"
        self._awaiting_request = True  # the next byte starts a request, so it starts the header timer
        self._in_handler = False
        self._body: Callable[[], bool] | None = None  # "is the body complete?" of the current request
        self.cut = False

    # -- asyncio.Protocol: delegated to aiohttp once admitted ------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport (what `ooda serve` runs on) has asyncio.Transport's methods without
        # subclassing it, so this is a cast, not an isinstance check.
        transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self._address = str(peer[0]) if peer else "unknown"
        if not self._guard.admit(self._address):
            # Refused before reading: the client learns why, and nothing of its request is parsed.
            transport.write(self._guard.too_many)
            transport.close()
            return
        self._admitted = True
        self._transport = transport
        self._start_timer("header", self._guard.config.header_timeout_s)
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if not self._admitted:
            return
        if self._awaiting_request and self._timer is None:
            self._start_timer("header", self._guard.config.header_timeout_s)
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._admitted else None

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        if self._admitted:
            self._admitted = False
            self._guard.release(self._address)
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    # -- called by the server's middleware -------------------------------------------------------

    def request_started(self, body: object) -> None:
        """aiohttp parsed a request's headers; ``body`` is its ``request.content``."""
        self._stop_timer()
        self._awaiting_request = False
        self._in_handler = True
        is_eof = getattr(body, "is_eof", None)
        self._body = is_eof if callable(is_eof) else None
        if self._body is not None and not self._body():
            self._start_timer("body", self._guard.config.body_timeout_s)

    def request_finished(self) -> None:
        """The handler returned; a response may now be written, so a late body is only closed."""
        self._in_handler = False
        self._awaiting_request = True
        if self._phase == "body" and self._timer is not None and self._body is not None and self._body():
            self._stop_timer()

    # -- timers ----------------------------------------------------------------------------------

    def _start_timer(self, phase: str, seconds: float) -> None:
        self._stop_timer()
        self._phase = phase
        self._timer = asyncio.get_running_loop().call_later(seconds, self._late)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _late(self) -> None:
        self._timer = None
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if self._phase == "body" and self._body is not None and self._body():
            # The body did arrive; the handler is merely slow, which is not the client's fault.
            if self._awaiting_request and not self._in_handler:
                self._start_timer("header", self._guard.config.header_timeout_s)
            return
        self.cut = True
        self._guard.timeouts.labels(self._phase).inc()
        seconds = self._guard.config.header_timeout_s if self._phase == "header" else self._guard.config.body_timeout_s
        log.debug("http.request_too_slow", client=self._address, phase=self._phase, limit_s=seconds)
        # A 408 only where no response can have begun: before a request's handler ran (headers),
        # or while it still waits for the body.
        if self._phase == "header" or self._in_handler:
            part = "headers" if self._phase == "header" else "body"
            transport.write(_raw_response(
                "408 Request Timeout", "request_timeout",
                f"the request {part} did not arrive within {seconds:g} s (server.{self._phase}_timeout_s); "
                "send the whole request without pausing"))
        transport.close()


class WebServer:
    """The listening socket with its guard, and the aiohttp runner behind it."""

    def __init__(self, runner: web.AppRunner, server: asyncio.Server, guard: ConnectionGuard) -> None:
        self.runner = runner
        self.server = server
        self.guard = guard
        self._stopped = False

    @property
    def port(self) -> int:
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def stop(self) -> None:
        """Stop listening, then let aiohttp finish or close the open connections (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        self.server.close()
        await self.runner.cleanup()
        await self.server.wait_closed()


async def serve(web_app: web.Application, config: ServerConfig, metrics: Metrics) -> WebServer:
    """Listen on ``config.host``:``config.port`` with the connection guard in front of aiohttp.

    Args:
        web_app: the application from ``build_web_app``.
        config: the ``server:`` settings (address, timeouts, per-client connection cap).
        metrics: where the guard's counters are registered.

    Returns:
        The running server; ``port`` is the bound port (useful with port 0), ``stop()`` shuts it down.
    """
    # keepalive_timeout is also how long aiohttp waits for a request's headers; the guard's shorter
    # header timeout covers a slow request, so this only closes connections that stay idle.
    runner = web.AppRunner(web_app, access_log=None, keepalive_timeout=config.keepalive_timeout_s)
    await runner.setup()
    try:
        guard = ConnectionGuard(config, metrics)
        assert runner.server is not None
        loop = asyncio.get_running_loop()
        server = await loop.create_server(guard.protocol_factory(runner.server), config.host, config.port,
                                          backlog=1024)
    except BaseException:
        await runner.cleanup()
        raise
    return WebServer(runner, server, guard)
