"""Webhook intake: POST /webhooks/{source}.

verify auth -> read the body within the size limit -> parse with the source adapter -> store
(dedup by fingerprint) -> 202 with the signal ids, only after the commit. Every refusal answers
with its status and a JSON body naming what is wrong, is logged with its reason and counted, and
writes nothing. Secrets never reach a log line or a response.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from aiohttp import web

from bot.audit import AuditEntry
from bot.errors import IntakeError, NotFound, PayloadTooLarge, StoreUnavailable, Unauthorized
from bot.jsoncodec import dumps
from bot.metrics import Metrics
from bot.ports import AlertSource
from bot.signals import Signal
from bot.store_ports import SignalIntake

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class IntakeSource:
    name: str
    adapter: AlertSource
    auth: str  # bearer | hmac | none
    secret: bytes | None


class Intake:
    def __init__(
        self,
        sources: dict[str, IntakeSource],
        store: SignalIntake,
        metrics: Metrics,
        max_body_bytes: int,
        clock: Callable[[], float] = time.time,
        normalize: Callable[[list[Signal]], list[Signal]] | None = None,
    ) -> None:
        self._sources = sources
        self._normalize = normalize
        self._store = store
        self._metrics = metrics
        self._limit = max_body_bytes
        self._clock = clock
        # Label lookups resolved once per source: the accepted path runs for every request.
        self._accepted_metrics = {
            name: (metrics.intake_requests.labels(name, "accepted"), metrics.intake_signals.labels(name),
                   metrics.intake_latency.labels(name))
            for name in sources
        }

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/webhooks/{source}", self.handle)]

    async def handle(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        name = request.match_info["source"]
        source = self._sources.get(name)
        label = name if source else "unknown"
        try:
            if source is None:
                known = ", ".join(sorted(self._sources)) or "none configured"
                raise NotFound(f"no alert source named {name!r}; configured sources: {known}")
            self._check_bearer(source, request)
            body = await self._read_body(request)
            if source.auth == "hmac":
                assert source.secret is not None
                source.adapter.verify_signature(request.headers, body, source.secret, self._clock())
            signals = source.adapter.parse(body, request.headers)
            if self._normalize is not None:
                signals = self._normalize(signals)
            ids = await self._store.ingest_signals(
                signals,
                AuditEntry(actor=f"source:{name}", action="signals.received",
                           data={"source": name, "count": len(signals), "signal_ids": [s.id for s in signals]}),
            )
        except IntakeError as exc:
            return self._refuse(label, exc.status, exc.reason, exc.to_json(), str(exc))
        except StoreUnavailable as exc:
            return self._refuse(label, 503, "store_unavailable",
                                {"error": "store_unavailable", "message": "the store cannot take writes right "
                                 "now; nothing was stored, retry later"}, str(exc))
        accepted, stored, latency = self._accepted_metrics[name]
        accepted.inc()
        stored.inc(len(ids))
        latency.observe(time.perf_counter() - started)
        # No log line per accepted delivery: the metrics count them and the audit record names
        # every signal; a line here would cost more than validating a one-alert request.
        return web.Response(body=dumps({"accepted": len(ids), "signal_ids": ids}), status=202,
                            content_type="application/json")

    def _check_bearer(self, source: IntakeSource, request: web.Request) -> None:
        if source.auth != "bearer":
            return
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized(f"missing bearer token: send 'Authorization: Bearer <token>' for source {source.name!r}")
        assert source.secret is not None
        if not hmac.compare_digest(token.strip().encode(), source.secret):
            raise Unauthorized(f"wrong bearer token for source {source.name!r}")

    async def _read_body(self, request: web.Request) -> bytes:
        limit = self._limit
        if request.content_length is not None:
            if request.content_length > limit:
                raise PayloadTooLarge(f"body is {request.content_length} bytes; the limit is {limit} "
                                      "(intake.max_body_bytes); split the payload or raise the limit")
            return await request.read()  # exactly Content-Length bytes, in one await
        chunks, size = [], 0
        # Read in chunks so a chunked upload without Content-Length is cut off at the limit
        # instead of being buffered whole.
        while chunk := await request.content.read(64 * 1024):
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"body exceeds the limit of {limit} bytes (intake.max_body_bytes)")
            chunks.append(chunk)
        return b"".join(chunks)

    def _refuse(self, source: str, status: int, reason: str, body: dict[str, object], detail: str) -> web.Response:
        self._metrics.intake_requests.labels(source, reason).inc()
        log.warning("intake.refused", source=source, status=status, reason=reason, detail=detail)
        return web.json_response(body, status=status)
