"""A fake Kubernetes API server over real HTTP for the ``k8s.*`` tool tests.

It is the demo stand-in's server (``demo.kubernetes``) on its own port, with an empty
cluster the test seeds, and a token it checks. ``requests`` records every call (method, path,
query, content type, parsed body); ``fail_next`` makes the next matching call fail with a
realistic ``Status`` body.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from demo.kubernetes import KubernetesCluster, PodState, Revision, add_routes

__all__ = ["FakeKubernetes", "PodState", "Revision"]


class FakeKubernetes:
    def __init__(self, token: str) -> None:
        self.cluster = KubernetesCluster(token=token)
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> str:
        app = web.Application()
        add_routes(app, self.cluster)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self.url

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    @property
    def requests(self) -> list[dict[str, Any]]:
        return self.cluster.requests

    def fail_next(self, status: int, path_prefix: str = "/", times: int = 1) -> None:
        self.cluster.fail_next(status, path_prefix, times)

    def writes(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["method"] != "GET"]
