"""What the crash tests share: a real ``ooda serve`` child, and the outside systems it calls behind
a proxy that can hold one request until the child is killed.

``HoldingProxy`` forwards every request to the stand-in (or answers ``local`` routes itself);
when ``hold`` is armed and a request matches it, the proxy records it, signals ``held`` and never
answers: the child is then killed with SIGKILL with that call in flight, the worst moment.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
from aiohttp import web

from tests.e2e.test_crash_execution import WAIT_S, Child, free_port
from tests.harness import ADMIN, serving_on_a_free_port

__all__ = ["WAIT_S", "Child", "HoldingProxy", "free_port", "poll_task"]

Match = Callable[[str, str], bool]  # (method, path) -> hold this request?


class HoldingProxy:
    def __init__(self, upstream: str | None = None, local: dict[tuple[str, str], int] | None = None) -> None:
        self.upstream = upstream
        self.local = local or {}  # (method, path) -> status answered here
        self.hold: Match | None = None
        self.held = asyncio.Event()
        self.requests: list[tuple[str, str]] = []
        self._release = asyncio.Event()
        self._client = httpx.AsyncClient(timeout=10)

    def arm(self, match: Match) -> None:
        self.held.clear()
        self.hold = match

    def count(self, method: str, path_part: str) -> int:
        return len([1 for m, p in self.requests if m == method and path_part in p])

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.requests.append((request.method, request.path))
        if self.hold is not None and self.hold(request.method, request.path):
            self.hold = None  # one request is held; the next (after the restart) goes through
            self.held.set()
            await self._release.wait()
            return web.Response(status=503)
        if (request.method, request.path) in self.local:
            return web.json_response({"ok": True}, status=self.local[(request.method, request.path)])
        assert self.upstream is not None, f"no route for {request.method} {request.path}"
        headers = {k: v for k, v in request.headers.items() if k.lower() not in {"host", "content-length"}}
        answer = await self._client.request(request.method, self.upstream + request.path_qs, content=body,
                                            headers=headers)
        return web.Response(status=answer.status_code, body=answer.content,
                            content_type=answer.headers.get("content-type", "application/json").split(";")[0])

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[int]:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        async with serving_on_a_free_port(app) as port:
            try:
                yield port
            finally:
                self._release.set()
                await self._client.aclose()


async def poll_task(http: httpx.AsyncClient, task_id: int, done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The task's proposal once ``done`` holds for it (polled with a deadline, never a fixed sleep)."""
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while True:
        proposal = (await http.get(f"/api/v1/tasks/{task_id}", headers=ADMIN)).json()["proposal"]
        if done(proposal):
            return proposal
        assert asyncio.get_running_loop().time() < deadline, f"task {task_id} never got there: {proposal}"
        await asyncio.sleep(0.05)
