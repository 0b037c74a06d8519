"""A real Prometheus (Debian's ``prometheus`` binary) scraping a small exporter the test serves.

``running_prometheus(workdir)`` starts the exporter on 127.0.0.1 with a free port, writes a
config that scrapes it every second, starts Prometheus on another free port with its TSDB under
``workdir``, and returns once Prometheus has stored a sample of the exporter. The test changes
``exporter.samples`` and awaits ``wait_for`` until Prometheus has scraped the new values.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import shutil
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

STARTUP_DEADLINE_S = 30.0
POLL_EVERY_S = 0.1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def exposition_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


class Exporter:
    """Serves ``samples`` (series text -> value) in the text exposition format."""

    def __init__(self) -> None:
        self.samples: dict[str, float] = {}
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def metrics(self, request: web.Request) -> web.Response:
        lines = [f"{series} {exposition_value(value)}" for series, value in self.samples.items()]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self.metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


class LocalPrometheus:
    def __init__(self, base_url: str, exporter: Exporter, log_path: Path) -> None:
        self.base_url = base_url
        self.exporter = exporter
        self.log_path = log_path

    async def query(self, promql: str) -> list[dict[str, Any]]:
        async with aiohttp.ClientSession() as session, session.get(
            f"{self.base_url}/api/v1/query", params={"query": promql}
        ) as response:
            body = await response.json()
        return list(body["data"]["result"])

    async def wait_for(self, promql: str, deadline_s: float = STARTUP_DEADLINE_S) -> None:
        """Poll until ``promql`` returns at least one series (Prometheus scrapes on its own clock)."""
        give_up = time.monotonic() + deadline_s
        while not await self.query(promql):
            if time.monotonic() > give_up:
                pytest.fail(f"Prometheus never returned a series for {promql!r} within {deadline_s:g}s")
            await asyncio.sleep(POLL_EVERY_S)


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        pytest.fail("the prometheus binary is not installed; run `apt-get install prometheus` (Debian package)")
    return found


@asynccontextmanager
async def running_prometheus(workdir: Path, samples: dict[str, float]) -> AsyncIterator[LocalPrometheus]:
    """A Prometheus on 127.0.0.1 scraping an exporter that serves ``samples``; stopped on exit."""
    binary = prometheus_binary()
    exporter = Exporter()
    exporter.samples.update(samples)
    await exporter.start()
    port = free_port()
    config = workdir / "prometheus.yml"
    # honor_labels keeps the exporter's own ``instance`` label instead of renaming it exported_instance.
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n"
        f"  - job_name: exporter\n    honor_labels: true\n    static_configs:\n      - targets: ['{exporter.url}']\n"
    )
    log_path = workdir / "prometheus.log"
    process: asyncio.subprocess.Process | None = None
    try:
        with log_path.open("wb") as log_file:
            process = await asyncio.create_subprocess_exec(
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
            )
        prometheus = LocalPrometheus(f"http://127.0.0.1:{port}", exporter, log_path)
        await _wait_until_scraped(prometheus, process)
        yield prometheus
    finally:
        if process is not None and process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()
        await exporter.stop()


async def _wait_until_scraped(prometheus: LocalPrometheus, process: asyncio.subprocess.Process) -> None:
    give_up = time.monotonic() + STARTUP_DEADLINE_S
    while True:
        if process.returncode is not None:
            pytest.fail(f"prometheus exited with {process.returncode}:\n{prometheus.log_path.read_text()[-2000:]}")
        with contextlib.suppress(aiohttp.ClientError):
            if await prometheus.query('up{job="exporter"} == 1'):
                return
        if time.monotonic() > give_up:
            pytest.fail(
                f"prometheus did not scrape the exporter within {STARTUP_DEADLINE_S:g}s:\n"
                f"{prometheus.log_path.read_text()[-2000:]}"
            )
        await asyncio.sleep(POLL_EVERY_S)
