"""The real Ooda on its own event loop in a background thread, for fuzzing with plain requests.

Hypothesis drives synchronous tests, and one server for a whole run is what a hostile client
meets: state built up by earlier requests (audit records, open connections) is part of the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

from bot.app import App
from bot.cli import sign_headers
from tests.harness import ENV, running_app, running_standin

T = TypeVar("T")
TOKENS = {"alertmanager": ENV["OODA_ALERTMANAGER_TOKEN"], "grafana": ENV["OODA_GRAFANA_TOKEN"]}
SECRETS = {"pagerduty": ENV["OODA_PAGERDUTY_SECRET"], "generic": ENV["OODA_GENERIC_SECRET"]}


class ServedOoda:
    """``url`` of a running Ooda; ``run(coro)`` runs a coroutine on its loop (the store, say)."""

    def __init__(self, tmp: Path) -> None:
        self._tmp = tmp
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self.app: App | None = None
        self._thread = threading.Thread(target=self._main, name="ooda-under-fuzz", daemon=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported to the test thread by start()
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with running_standin() as standin, running_app(self._tmp, standin) as app:
            self.app = app
            self._ready.set()
            await self._stop.wait()

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(60) or self._error is not None:
            raise RuntimeError(f"Ooda did not start: {self._error!r}")

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        with contextlib.suppress(Exception):
            self._loop.close()

    @property
    def url(self) -> str:
        assert self.app is not None
        return f"http://127.0.0.1:{self.app.port}"

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    def signal_count(self) -> int:
        assert self.app is not None
        app = self.app

        async def count() -> int:
            await app.engine.wait_idle()
            return await app.store.signal_count()

        return self.run(count())


def auth_headers(source: str, body: bytes, secrets: dict[str, str] | None = None) -> dict[str, str]:
    """The headers each configured source accepts for ``body``; ``secrets`` (source -> bearer
    token or signing secret) replaces the test environment's."""
    secret = (secrets or {**TOKENS, **SECRETS})[source]
    if source in TOKENS:
        return {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
    return {"Content-Type": "application/json", **sign_headers(source, body, secret)}


@contextlib.contextmanager
def served(tmp: Path) -> Iterator[ServedOoda]:
    server = ServedOoda(tmp)
    server.start()
    try:
        yield server
    finally:
        server.stop()
