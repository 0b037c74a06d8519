"""A real ``ooda serve`` process killed with SIGKILL while a non-idempotent step is in flight.

The platform API is a small aiohttp server in this process: its restart endpoint counts the call,
signals the test, and then does not answer until the child is dead. After a restart the step must
be ``unknown``, the task escalated to a human with the reason, and the endpoint called once.
The child's JSON log lines on stderr tell the test when it started and when it planned.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from aiohttp import web

from tests import harness
from tests.harness import ADMIN, ENV, ROOT, SECOND, serving_on_a_free_port

PLAYBOOK = """
id: restart
version: "1"
description: Restart one workload.
args:
  dep: {default: api}
steps:
  - name: restart
    tool: http.request
    params:
      method: POST
      url: "{{ vars.platform_api }}/platform/workloads/shop/{{ args.dep }}/restart"
      expect_status: [200]
    category: write_irreversible
    blast_radius: single
autonomy_cap: L3
"""
WAIT_S = 20  # upper bound for a child to start or plan on a loaded machine; never reached when healthy


class HangingPlatform:
    """The platform API whose restart call arrives and never returns (until released)."""

    def __init__(self) -> None:
        self.posts: list[str] = []
        self.arrived = asyncio.Event()
        self.release = asyncio.Event()

    async def restart(self, request: web.Request) -> web.Response:
        self.posts.append(request.path)
        self.arrived.set()
        await self.release.wait()
        return web.json_response({"status": "restarting"})

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[int]:
        app = web.Application()
        app.router.add_post("/platform/workloads/{ns}/{dep}/restart", self.restart)
        async with serving_on_a_free_port(app) as port:
            try:
                yield port
            finally:
                self.release.set()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Child:
    """``python -m bot serve`` with its stderr read line by line as JSON log events."""

    def __init__(self, config: Path, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.env = env or {}  # beside the harness's secrets (a chat token, say)
        self.proc: asyncio.subprocess.Process | None = None
        self.events: asyncio.Queue[dict] = asyncio.Queue()
        self._reader: asyncio.Task | None = None

    async def start(self) -> None:
        env = {**ENV, **self.env, "PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT)}
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "serve", "--config", str(self.config), cwd=str(ROOT), env=env,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        self._reader = asyncio.create_task(self._read())
        await self.wait_for("ooda.started")

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        async for line in self.proc.stderr:
            with contextlib.suppress(ValueError):
                await self.events.put(json.loads(line))
        await self.events.put({"event": "process.exited"})

    async def wait_for(self, name: str) -> dict:
        async def find() -> dict:
            while True:
                event = await self.events.get()
                if event.get("event") == name:
                    return event
                assert event.get("event") != "process.exited", f"ooda exited while waiting for {name}"

        return await asyncio.wait_for(find(), WAIT_S)

    async def kill(self, sig: int) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        code = await asyncio.wait_for(self.proc.wait(), WAIT_S)
        if self._reader is not None:
            await self._reader
        return code


async def test_sigkill_during_a_non_idempotent_step_escalates_and_never_reruns(tmp_path):
    playbooks = tmp_path / "crash-playbooks"
    playbooks.mkdir()
    (playbooks / "restart.yaml").write_text(PLAYBOOK)
    platform = HangingPlatform()
    async with platform.running() as platform_port:
        port = free_port()
        # Imported through the module: a bare ``test_config`` name would be collected as a test.
        overrides = {"playbooks_dir": str(playbooks), "server": {"port": port}}
        config = harness.test_config(tmp_path, platform_port, overrides)
        base = f"http://127.0.0.1:{port}"

        first = Child(config)
        await first.start()
        try:
            async with httpx.AsyncClient(base_url=base, timeout=10) as http:
                r = await http.post("/api/v1/playbooks/restart/run", json={"args": {"dep": "api"}}, headers=ADMIN)
                assert r.status_code == 202, r.text
                task_id = r.json()["task"]["id"]
                await first.wait_for("task.planned")
                r = await http.post(f"/api/v1/tasks/{task_id}/approve", json={}, headers=SECOND)
                assert r.status_code == 200, r.text
            await asyncio.wait_for(platform.arrived.wait(), WAIT_S)
        finally:
            assert await first.kill(signal.SIGKILL) == -signal.SIGKILL

        second = Child(config)
        await second.start()  # recovery runs before the server reports it started
        try:
            async with httpx.AsyncClient(base_url=base, timeout=10) as http:
                proposal = (await http.get(f"/api/v1/tasks/{task_id}", headers=ADMIN)).json()["proposal"]
                tasks = (await http.get("/api/v1/tasks", headers=ADMIN)).json()["tasks"]
        finally:
            assert await second.kill(signal.SIGTERM) == 0

    assert proposal["state"] == "escalated_to_human"
    assert proposal["steps"][0]["state"] == "unknown"
    assert "interrupted while running restart (http.request)" in proposal["outcome"]
    assert "not idempotent" in proposal["outcome"]
    assert [t["id"] for t in tasks if t["state"] == "escalated_to_human"] == [task_id]
    assert platform.posts == ["/platform/workloads/shop/api/restart"]
