"""The one HTTP server: webhook intake, the API, Slack's HTTP mode, /metrics, /healthz, /readyz."""

from __future__ import annotations

import asyncio
import itertools
import re
import uuid
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from bot.metrics import Metrics
from bot.store import Store

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
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers["X-Request-Id"] = correlation_id
        raise
    except Exception:
        log.exception("http.unhandled_error", path=request.path, method=request.method)
        response = web.json_response(
            {"error": "internal_error", "message": "unexpected error; see the server log",
             "correlation_id": correlation_id},
            status=500,
        )
    response.headers["X-Request-Id"] = correlation_id
    return response


def build_web_app(
    *,
    routes: list[web.RouteDef],
    store: Store,
    metrics: Metrics,
    max_body_bytes: int,
) -> web.Application:
    # client_max_size covers request.read()/json() in the API and Slack routes; intake reads in
    # chunks and enforces its own limit so it can answer 413 early.
    app = web.Application(middlewares=[correlation_middleware], client_max_size=max_body_bytes)

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        try:
            async with asyncio.timeout(2.0):
                await store.heartbeat()
        except Exception as exc:
            log.warning("readyz.store_not_writable", error=str(exc))
            return web.json_response({"status": "unavailable", "store": "not writable"}, status=503)
        return web.json_response({"status": "ready", "store": "writable"})

    async def metrics_handler(_: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), content_type="text/plain", charset="utf-8",
                            headers={"X-Content-Type-Options": "nosniff"})

    app.add_routes([
        web.get("/healthz", healthz),
        web.get("/readyz", readyz),
        web.get("/metrics", metrics_handler),
        *routes,
    ])
    return app
