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

from bot.audit.chain import AuditEntry
from bot.errors import IntakeError, NotFound, PayloadTooLarge, StoreUnavailable, Unauthorized
from bot.intake.refused_alerts import RefusedAlertNames, alert_names
from bot.intake.value_cuts import DEFAULT_MAX_VALUE_BYTES, cut_signals
from bot.jsoncodec import dumps
from bot.metrics import Metrics
from bot.model.signals import Signal
from bot.ports import AlertSource
from bot.store.ports import SignalIntake

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
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
    ) -> None:
        self._sources = sources
        self._max_value_bytes = max_value_bytes
        self._refused_names = RefusedAlertNames()
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
        body = b""  # what was read, for naming the alerts of a refusal
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
            signals = self._cut(name, signals, len(body))
            if self._normalize is not None:
                signals = self._normalize(signals)
            ids = await self._store.ingest_signals(
                signals,
                AuditEntry(actor=f"source:{name}", action="signals.received",
                           data={"source": name, "count": len(signals), "signal_ids": [s.id for s in signals]}),
            )
        except _TooLarge as exc:
            body = exc.seen
            return self._refuse(label, exc.error.status, exc.error.reason, exc.error.to_json(), str(exc.error),
                                body)
        except IntakeError as exc:
            return self._refuse(label, exc.status, exc.reason, exc.to_json(), str(exc), body)
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
        if request.content_length is not None and request.content_length <= limit:
            return await request.read()  # exactly Content-Length bytes, in one await
        chunks, size = [], 0
        # Read in chunks so an upload past the limit is cut off there instead of being buffered
        # whole; what was read up to the limit names the alerts the refusal loses.
        while chunk := await request.content.read(64 * 1024):
            size += len(chunk)
            chunks.append(chunk)
            if size > limit:
                break
        if size > limit or request.content_length is not None:
            sent = request.content_length or f"more than {limit}"
            raise _TooLarge(b"".join(chunks)[:limit], PayloadTooLarge(
                f"body is {sent} bytes; the limit is {limit} (intake.max_body_bytes). Nothing of it was stored: "
                "set max_alerts on the Alertmanager receiver (or send fewer alerts per request), or raise the "
                "limit"))
        return b"".join(chunks)

    def _cut(self, source: str, signals: list[Signal], body_size: int) -> list[Signal]:
        cut = cut_signals(signals, body_size, self._max_value_bytes)
        if cut is not signals:
            names = [s.labels.get("alertname") or s.title for s, c in zip(signals, cut, strict=True) if s is not c]
            if names:
                self._metrics.intake_values_cut.labels(source).inc(len(names))
                log.info("intake.values_cut", source=source, alerts=names[:20], count=len(names),
                         max_value_bytes=self._max_value_bytes)
        return cut

    def _refuse(self, source: str, status: int, reason: str, body: dict[str, object], detail: str,
                seen: bytes = b"") -> web.Response:
        self._metrics.intake_requests.labels(source, reason).inc()
        # A 4xx is never retried by Alertmanager: the log and the metric name the alerts lost.
        # Not for a sender that failed authentication: anyone could put names into the metric.
        names = alert_names(seen) if seen and status != 401 else []
        for alertname in names:
            self._metrics.intake_refused_alerts.labels(source, reason, self._refused_names.label(alertname)).inc()
        log.warning("intake.refused", source=source, status=status, reason=reason, detail=detail,
                    alerts=names, body_bytes_read=len(seen))
        return web.json_response(body, status=status)


class _TooLarge(Exception):
    """A body past the limit, with the part read before it was cut off."""

    def __init__(self, seen: bytes, error: PayloadTooLarge) -> None:
        super().__init__(str(error))
        self.seen = seen
        self.error = error
