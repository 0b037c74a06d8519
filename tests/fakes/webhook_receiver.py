"""A webhook receiver on 127.0.0.1 for event sinks: records what arrives and answers with the
statuses a test scripts (then 200), so a test can make deliveries fail and await the retries."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web


class WebhookReceiver:
    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []  # every request, acknowledged or not
        self.acknowledged: list[dict[str, Any]] = []  # the events of the requests answered 2xx
        self.statuses: list[int] = []  # answers to give, in order, before answering 200
        self.url = ""
        self._changed = asyncio.Condition()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        status = self.statuses.pop(0) if self.statuses else 200
        async with self._changed:
            self.requests.append((dict(request.headers), body))
            if 200 <= status < 300:
                self.acknowledged += json.loads(body)["events"]
            self._changed.notify_all()
        return web.json_response({"ok": status < 300}, status=status)

    async def wait_for(self, predicate: Any) -> None:
        """Until ``predicate(self)`` holds; the test's own timeout bounds the wait."""
        async with self._changed:
            await self._changed.wait_for(lambda: predicate(self))


@asynccontextmanager
async def running_receiver(path: str = "/hooks/ooda/s3cr3t-path") -> AsyncIterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    app = web.Application()
    app.router.add_post(path, receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    receiver.url = f"http://127.0.0.1:{runner.addresses[0][1]}{path}"
    try:
        yield receiver
    finally:
        await runner.cleanup()
