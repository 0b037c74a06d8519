"""Event sinks: the ``ops.agent_task.*`` events, POSTed to outside systems (an incident tracker,
a SIEM, a data pipeline) as they happen.

A sink delivers from the store, not from the bus, so neither a restart nor a receiver that is
down loses an event. Each sink keeps a cursor in settings: the id of the last event its receiver
acknowledged with a 2xx. It sends what comes after, in order, in batches, and moves the cursor
only after the receiver's answer. The bus only wakes it. That makes delivery at least once: a
batch acknowledged just before a crash, whose cursor was not saved yet, is sent again, so
receivers drop events whose ``id`` they have seen.

Several replicas on one store share each sink's cursor and take turns under its lease in the
store (bot/store/ports.py ``Leases``), so each batch goes out from one of them.

The body is ``{"sink": name, "events": [{id, name, task_id, payload, correlation_id, at}, ...]}``,
signed as the generic intake verifies a request (bot/intake/signing.py) when ``secret_env`` is set. A
failed delivery is retried with a backoff that doubles up to five minutes; events whose names
match none of the sink's prefixes are skipped, and the cursor moves past them. A new sink starts
with the events from its first start on (``start_at: beginning`` backfills the store's history).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import aiohttp
import structlog
import yarl

from bot.config import EventSinkConfig
from bot.errors import BotError
from bot.intake.signing import signature_headers
from bot.jsoncodec import dumps
from bot.metrics import Metrics
from bot.model.events import PREFIX, EventBus
from bot.outbound_http import TRANSPORT_ERRORS, OutboundSession, describe
from bot.store.ports import EventReads, Leases, SettingReads, StoredEvent, UnitOfWork
from bot.store.protocol import TaskOps

log = structlog.get_logger(__name__)

POLL_S = 30.0  # also look without a wake-up: events written by another process, a missed wake
MAX_BACKOFF_S = 300.0


class SinkStore(EventReads, SettingReads, Leases, UnitOfWork, Protocol):
    """The store ports an event sink uses: events after its cursor, the cursor, and its lease."""


class DeliveryFailed(BotError):
    """The receiver did not acknowledge a batch; the reason is safe to log."""


class WebhookSink:
    def __init__(self, config: EventSinkConfig, store: SinkStore, bus: EventBus, metrics: Metrics,
                 secret: bytes | None, sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> None:
        self.config = config
        self._store = store
        self._bus = bus
        self._metrics = metrics
        self._secret = secret
        self._sleep = sleep
        self._wake = asyncio.Event()
        self._moved = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._http = OutboundSession(aiohttp.ClientTimeout(total=config.timeout_s),
                                     headers={"Content-Type": "application/json"})
        # Only scheme, host and port go into logs and errors: a webhook URL often carries its own
        # secret in the path or the query.
        self._where = str(yarl.URL(config.url).origin())
        self.cursor = 0

    @property
    def cursor_key(self) -> str:
        return f"event_sink.{self.config.name}.cursor"

    async def start(self) -> None:
        saved = await self._store.get_setting(self.cursor_key)
        if saved is not None:
            self.cursor = int(saved.value)
        elif self.config.start_at == "now":
            await self._save_cursor(await self._store.last_event_id())
        self._unsubscribe = self._bus.subscribe(PREFIX, lambda _: self._wake.set())
        self._task = asyncio.create_task(self._run(), name=f"event-sink-{self.config.name}")

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._http.aclose()

    async def _run(self) -> None:
        backoff = 1.0
        while True:
            self._wake.clear()
            try:
                delivered = await self.deliver_once()
            except Exception as exc:
                if isinstance(exc, DeliveryFailed):
                    self._metrics.event_deliveries.labels(self.config.name, "failed").inc()
                    log.warning("event_sink.delivery_failed", sink=self.config.name, cursor=self.cursor,
                                reason=str(exc), retry_in_s=backoff)
                else:
                    log.exception("event_sink.failed", sink=self.config.name, cursor=self.cursor)
                await self._sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                continue
            backoff = 1.0
            if not delivered:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(POLL_S):
                        await self._wake.wait()

    async def deliver_once(self) -> bool:
        """Send the next batch after the cursor; False when there was nothing new.

        Raises:
            DeliveryFailed: the receiver was unreachable or did not answer 2xx; the cursor stays.
        """
        # Replicas on one store each run this sink: one at a time holds its lease and sends from
        # the cursor as stored, so a batch another replica delivered is not sent again.
        async with self._store.lease(f"event_sink:{self.config.name}"):
            saved = await self._store.get_setting(self.cursor_key)
            if saved is not None and int(saved.value) > self.cursor:
                await self._moved_to(int(saved.value))
            events = await self._store.events_after(self.cursor, self.config.batch)
            if not events:
                return False
            wanted = [e for e in events if e.name.startswith(tuple(self.config.events))]
            if wanted:
                await self._post(wanted)
                self._metrics.event_deliveries.labels(self.config.name, "delivered").inc()
            await self._save_cursor(events[-1].id)
        return True

    async def _post(self, events: list[StoredEvent]) -> None:
        body = dumps({"sink": self.config.name, "events": [e.as_json() for e in events]}).encode()
        headers = signature_headers(body, self._secret) if self._secret else {}
        try:
            async with self._http.session.post(self.config.url, data=body, headers=headers,
                                          allow_redirects=False) as response:
                if not 200 <= response.status < 300:
                    raise DeliveryFailed(f"{self._where} answered {response.status}")
        except TRANSPORT_ERRORS as exc:
            raise DeliveryFailed(f"{self._where} unreachable ({describe(exc)})") from exc

    async def _save_cursor(self, event_id: int) -> None:
        async def unit(t: TaskOps) -> None:
            await t.set_setting(self.cursor_key, event_id, f"event_sink:{self.config.name}")

        await self._store.transact(unit)
        await self._moved_to(event_id)

    async def _moved_to(self, event_id: int) -> None:
        async with self._moved:
            self.cursor = event_id
            self._moved.notify_all()

    async def wait_delivered(self, event_id: int) -> None:
        """Until every event up to ``event_id`` was acknowledged (or skipped) and the cursor saved."""
        async with self._moved:
            await self._moved.wait_for(lambda: self.cursor >= event_id)
