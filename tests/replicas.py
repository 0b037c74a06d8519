"""Real ``ooda serve`` replicas on one PostgreSQL, for the tests that need several processes.

``start_replicas`` starts each with its own port and data dir on one store and a drill playbook
(``PLAYBOOK``: the ``ReplicaDrill`` alert restarts a workload through the platform API that
``Platform`` plays and counts), stops them at the end of the test, and gives a client for each.
Tests pass what they change of the config (a chat surface, a policy), other playbooks, and extra
environment (a chat token).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web

from tests import harness
from tests.e2e.test_crash_execution import Child, free_port
from tests.harness import serving_on_a_free_port

PLAYBOOK = """
id: restart-on-drill
version: "1"
description: Restart the workload a drill alert names.
trigger:
  match_in:
    alertname: [ReplicaDrill]
  group_by: [service]
  group_window_s: 600
  cooldown_s: 3600
steps:
  - name: restart
    tool: http.request
    params:
      method: POST
      url: "{{ vars.platform_api }}/platform/workloads/shop/api/restart"
      expect_status: [200]
    category: write_irreversible
    blast_radius: single
autonomy_cap: L3
"""
NOTIFICATION = {
    "receiver": "ooda", "status": "firing", "version": "4", "groupKey": "{}:{alertname=\"ReplicaDrill\"}",
    "alerts": [{"status": "firing", "labels": {"alertname": "ReplicaDrill", "service": "api", "severity": "critical"},
                "annotations": {"summary": "drill"}, "startsAt": "2026-05-12T07:58:12.507Z",
                "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prometheus/graph",
                "fingerprint": "7a1c0de5a1c0de51"}],
    "groupLabels": {"alertname": "ReplicaDrill"}, "commonLabels": {"alertname": "ReplicaDrill"},
    "commonAnnotations": {}, "externalURL": "http://alertmanager:9093",
}


class Platform:
    """The platform API: counts restart calls."""

    def __init__(self) -> None:
        self.restarts = 0

    async def restart(self, request: web.Request) -> web.Response:
        self.restarts += 1
        return web.json_response({"status": "restarting"})

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[int]:
        app = web.Application()
        app.router.add_post("/platform/workloads/{ns}/{dep}/restart", self.restart)
        async with serving_on_a_free_port(app) as port:
            yield port


async def start_replicas(stack: contextlib.AsyncExitStack, tmp_path: Path, platform_port: int, postgres_url: str,
                         *names: str, overrides: dict[str, Any] | None = None, env: dict[str, str] | None = None,
                         playbooks: dict[str, str] | None = None) -> list[tuple[Child, httpx.AsyncClient]]:
    """``ooda serve`` processes named ``names`` on one PostgreSQL, and a client for each.

    ``playbooks``: file name -> YAML of the playbooks they load (default: the drill);
    ``overrides``: merged into each one's config; ``env``: beside the harness's secrets.
    """
    folder = tmp_path / "playbooks"
    if not folder.exists():
        folder.mkdir()
        for file_name, text in (playbooks or {"restart-on-drill.yaml": PLAYBOOK}).items():
            (folder / file_name).write_text(text)
    replicas = []
    for name in names:
        home = tmp_path / name
        home.mkdir()
        port = free_port()
        config = harness.test_config(home, platform_port, harness.merge(
            {"playbooks_dir": str(folder), "server": {"port": port}, "store": {"url": postgres_url}},
            overrides or {}))
        child = Child(config, env=env)
        await child.start()
        stack.push_async_callback(stop_child, child)
        http = await stack.enter_async_context(httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10))
        replicas.append((child, http))
    return replicas


async def stop_child(child: Child) -> None:
    if child.proc is not None and child.proc.returncode is None:
        await child.kill(signal.SIGTERM)


async def roles(replicas: list[tuple[Child, httpx.AsyncClient]]) -> list[str]:
    """Each replica's role as its /readyz says (``down`` when it does not answer)."""
    out = []
    for _, http in replicas:
        try:
            out.append((await http.get("/readyz")).json().get("role", "?"))
        except httpx.HTTPError:
            out.append("down")
    return out


async def until(check, deadline_s: float = 20.0):
    """Poll an async ``check`` until it returns something true; fails after the deadline."""
    start = time.monotonic()
    while not (value := await check()):
        assert time.monotonic() - start < deadline_s, "condition not reached before the deadline"
        await asyncio.sleep(0.1)
    return value
