"""A small local stand-in for the outside systems the shipped playbooks talk to.

The quick start runs the whole loop (alert -> proposal -> approval -> tool call -> verify) on one
machine with no outside services: this server answers the Unleash admin API subset the flag tools
use, with the same JSON shapes as real Unleash, a demo Prometheus (``standin_prometheus``), a demo
Kubernetes cluster (``standin_kubernetes``) and, when given a key folder, a demo SSH host ``db-01``
(``standin_ssh``), plus a few demo platform endpoints (service health
and rollbacks, workload restarts, identity sessions, data consumers). State is in memory and
exposed (``flags``, ``services``, ``calls``) so tests can assert on what happened.

Run it alone with ``python -m demo.standin --port 8099``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import os
import signal
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from demo import kubernetes as standin_kubernetes
from demo import prometheus as standin_prometheus
from demo.ssh import DemoSshHost

log = structlog.get_logger(__name__)

DEFAULT_TOKEN = "standin-admin-token"  # demo only; the stand-in guards nothing real
ENVIRONMENTS = ("development", "production")


def now() -> datetime:
    return datetime.now(UTC)


def iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def new_feature(name: str, project: str = "default", *, enabled: bool = False, rollout: int = 100) -> dict[str, Any]:
    """A feature in the shape Unleash's ``GET /api/admin/projects/{p}/features/{f}`` returns."""
    return {
        "name": name,
        "type": "release",
        "project": project,
        "description": "",
        "stale": False,
        "archived": False,
        "impressionData": False,
        "createdAt": iso(now() - timedelta(days=30)),
        "environments": [
            {
                "name": env,
                "environment": env,
                "featureName": name,
                "type": env,
                "enabled": enabled if env == "production" else True,
                "sortOrder": index,
                "variantCount": 0,
                "strategies": [
                    {
                        "id": str(uuid.uuid4()),
                        "name": "flexibleRollout",
                        "title": "",
                        "disabled": False,
                        "featureName": name,
                        "environment": env,
                        "sortOrder": 0,
                        "constraints": [],
                        "segments": [],
                        "variants": [],
                        "parameters": {"rollout": str(rollout), "stickiness": "default", "groupId": name},
                    }
                ],
            }
            for index, env in enumerate(ENVIRONMENTS)
        ],
        "variants": [],
        "tags": [],
    }


def seeded_flags() -> dict[str, dict[str, Any]]:
    return {
        "checkout-v2": new_feature("checkout-v2", enabled=True, rollout=100),
        "new-search": new_feature("new-search", enabled=True, rollout=25),
        "recommendations": new_feature("recommendations", enabled=False, rollout=0),
        # The throttle the http-5xx-ratio playbook turns on; off until an incident needs it.
        "throttle-checkout": new_feature("throttle-checkout", enabled=False, rollout=0),
    }


def digest_int(*parts: str, modulo: int) -> int:
    """A stable pseudo-random number per name, so demo data looks varied but never flaps."""
    return int(hashlib.sha256("/".join(parts).encode()).hexdigest()[:8], 16) % modulo


class Standin:
    """The stand-in server. ``start`` binds and returns the port; ``stop`` closes everything."""

    def __init__(self, token: str = DEFAULT_TOKEN, flags: dict[str, dict[str, Any]] | None = None, *,
                 ssh_dir: Path | None = None, ssh_port: int = 0) -> None:
        """``ssh_dir``: also start the demo SSH host (``db-01``), writing its keys there."""
        self.token = token
        self.ssh_host = DemoSshHost(ssh_dir) if ssh_dir is not None else None
        self.ssh_port = ssh_port
        self.flags: dict[str, dict[str, Any]] = seeded_flags() if flags is None else flags
        self.services: dict[str, dict[str, Any]] = {}
        self.workloads: dict[str, dict[str, Any]] = {}
        self.consumers: dict[str, dict[str, Any]] = {}
        self.revoked_sessions: dict[str, int] = {}
        self.calls: list[dict[str, Any]] = []
        self._failures: list[list[Any]] = []  # [path prefix, status, times left]
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    # ----- lifecycle -------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._record])
        flag = "/api/admin/projects/{project}/features/{feature}"
        app.router.add_get(flag, self.get_feature)
        app.router.add_post(flag + "/environments/{env}/on", self.feature_on)
        app.router.add_post(flag + "/environments/{env}/off", self.feature_off)
        app.router.add_post(flag + "/environments/{env}/strategies", self.add_strategy)
        app.router.add_put(flag + "/environments/{env}/strategies/{strategy_id}", self.update_strategy)
        app.router.add_delete(flag + "/environments/{env}/strategies/{strategy_id}", self.delete_strategy)
        app.router.add_get("/platform/services/{service}/health", self.service_health)
        app.router.add_get("/platform/services/{service}/deploys", self.service_deploys)
        app.router.add_post("/platform/services/{service}/rollback", self.service_rollback)
        app.router.add_post("/platform/workloads/{namespace}/{deployment}/restart", self.workload_restart)
        app.router.add_get("/platform/workloads/{namespace}/{deployment}/events", self.workload_events)
        app.router.add_post("/identity/users/{user_id}/sessions/revoke", self.revoke_sessions)
        app.router.add_get("/identity/users/{user_id}/logins", self.user_logins)
        app.router.add_get("/data/consumers/{group}/lag", self.consumer_lag)
        app.router.add_post("/data/consumers/{group}/restart", self.consumer_restart)
        app.router.add_post("/data/consumers/{group}/backfill", self.consumer_backfill)
        app.router.add_get("/healthz", self.healthz)
        standin_prometheus.add_routes(app)
        standin_kubernetes.add_routes(app, token=None)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        if self.ssh_host is not None:
            self.ssh_port = await self.ssh_host.start(host, self.ssh_port)
        log.info("standin.started", host=host, port=self.port, ssh_port=self.ssh_port if self.ssh_host else None)
        return self.port

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if self.ssh_host is not None:
            await self.ssh_host.stop()
        if runner is not None:
            await runner.cleanup()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fail_next(self, path_prefix: str, status: int = 503, times: int = 1) -> None:
        """Answer the next ``times`` requests under ``path_prefix`` with ``status`` (fault drills)."""
        self._failures.append([path_prefix, status, times])

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        body = None
        if request.can_read_body:
            with contextlib.suppress(ValueError):
                body = await request.json()
        self.calls.append({"method": request.method, "path": request.path, "query": dict(request.query),
                           "json": body})
        for failure in self._failures:
            if request.path.startswith(failure[0]) and failure[2] > 0:
                failure[2] -= 1
                return web.json_response({"error": "injected failure"}, status=failure[1])
        return await handler(request)

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    # ----- Unleash admin API subset ---------------------------------------------------------

    def _authorize(self, request: web.Request) -> None:
        given = request.headers.get("Authorization", "")
        given = given.removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            raise web.HTTPUnauthorized(
                text='{"name":"AuthenticationRequired","message":"You must log in to use Unleash."}',
                content_type="application/json",
            )

    def _feature(self, request: web.Request) -> dict[str, Any]:
        self._authorize(request)
        name = request.match_info["feature"]
        feature = self.flags.get(name)
        if feature is None or feature["project"] != request.match_info["project"]:
            raise web.HTTPNotFound(
                text=f'{{"name":"NotFoundError","message":"Could not find feature flag with name {name}"}}',
                content_type="application/json",
            )
        return feature

    def _environment(self, request: web.Request) -> dict[str, Any]:
        feature = self._feature(request)
        env_name = request.match_info["env"]
        for env in feature["environments"]:
            if env["name"] == env_name:
                return env
        raise web.HTTPNotFound(
            text=f'{{"name":"NotFoundError","message":"Could not find environment {env_name}"}}',
            content_type="application/json",
        )

    async def get_feature(self, request: web.Request) -> web.Response:
        feature = self._feature(request)
        body = dict(feature)
        body["enabled"] = any(env["enabled"] for env in feature["environments"])  # legacy field
        return web.json_response(body)

    async def feature_on(self, request: web.Request) -> web.Response:
        env = self._environment(request)
        env["enabled"] = True
        if not env["strategies"]:
            # Unleash adds a default strategy when a flag without one is switched on.
            env["strategies"].append(self._strategy(request, {"rollout": "100"}))
        return web.json_response({})

    async def feature_off(self, request: web.Request) -> web.Response:
        self._environment(request)["enabled"] = False
        return web.json_response({})

    def _strategy(self, request: web.Request, parameters: dict[str, str]) -> dict[str, Any]:
        feature = request.match_info["feature"]
        return {
            "id": str(uuid.uuid4()),
            "name": "flexibleRollout",
            "title": "",
            "disabled": False,
            "featureName": feature,
            "environment": request.match_info["env"],
            "sortOrder": 0,
            "constraints": [],
            "segments": [],
            "variants": [],
            "parameters": {"stickiness": "default", "groupId": feature, **parameters},
        }

    async def _strategy_body(self, request: web.Request) -> dict[str, Any]:
        body = await request.json()
        if not isinstance(body, dict) or not isinstance(body.get("name"), str):
            raise web.HTTPBadRequest(
                text='{"name":"BadDataError","message":"Request validation failed: name is required"}',
                content_type="application/json",
            )
        parameters = body.get("parameters") or {}
        return {
            "name": body["name"],
            "parameters": {k: str(v) for k, v in parameters.items()},
            "constraints": body.get("constraints") or [],
        }

    async def add_strategy(self, request: web.Request) -> web.Response:
        env = self._environment(request)
        body = await self._strategy_body(request)
        strategy = self._strategy(request, body["parameters"])
        strategy.update(name=body["name"], constraints=body["constraints"])
        env["strategies"].append(strategy)
        return web.json_response(strategy)

    async def delete_strategy(self, request: web.Request) -> web.Response:
        env = self._environment(request)
        kept = [s for s in env["strategies"] if s["id"] != request.match_info["strategy_id"]]
        if len(kept) == len(env["strategies"]):
            raise web.HTTPNotFound(
                text='{"name":"NotFoundError","message":"Could not find strategy"}', content_type="application/json")
        env["strategies"] = kept
        return web.json_response({})

    async def update_strategy(self, request: web.Request) -> web.Response:
        env = self._environment(request)
        body = await self._strategy_body(request)
        for strategy in env["strategies"]:
            if strategy["id"] == request.match_info["strategy_id"]:
                strategy.update(name=body["name"], parameters=body["parameters"], constraints=body["constraints"])
                return web.json_response(strategy)
        raise web.HTTPNotFound(
            text='{"name":"NotFoundError","message":"Could not find strategy"}', content_type="application/json"
        )

    # ----- demo platform -------------------------------------------------------------------

    def _service(self, name: str) -> dict[str, Any]:
        if name not in self.services:
            at = now()
            versions = [f"v2.{14 + i}.{digest_int(name, str(i), modulo=9)}" for i in range(3)]
            self.services[name] = {
                "service": name,
                "version": versions[-1],
                # The newest deploy is the bad one in every demo story.
                "error_rate": round(0.05 + digest_int(name, "err", modulo=20) / 100, 3),
                "p99_latency_ms": 400 + digest_int(name, "p99", modulo=900),
                "requests_per_s": 100 + digest_int(name, "rps", modulo=400),
                "deploys": [
                    {
                        "id": f"dep-{digest_int(name, v, modulo=100000):05d}",
                        "version": v,
                        "deployed_at": iso(at - timedelta(hours=2 * (len(versions) - i) - 1)),
                        "deployed_by": "ci-pipeline",
                        "commit": hashlib.sha1(f"{name}{v}".encode()).hexdigest()[:12],
                    }
                    for i, v in enumerate(versions)
                ],
            }
        return self.services[name]

    async def service_health(self, request: web.Request) -> web.Response:
        svc = self._service(request.match_info["service"])
        healthy = svc["error_rate"] < 0.02
        return web.json_response(
            {
                "service": svc["service"],
                "version": svc["version"],
                "status": "healthy" if healthy else "degraded",
                "error_rate": svc["error_rate"],
                "p99_latency_ms": svc["p99_latency_ms"],
                "requests_per_s": svc["requests_per_s"],
                "checked_at": iso(now()),
            }
        )

    async def service_deploys(self, request: web.Request) -> web.Response:
        svc = self._service(request.match_info["service"])
        return web.json_response({"service": svc["service"], "deploys": list(reversed(svc["deploys"]))})

    async def service_rollback(self, request: web.Request) -> web.Response:
        svc = self._service(request.match_info["service"])
        if len(svc["deploys"]) < 2:
            return web.json_response(
                {"error": "no_previous_deploy", "message": f"{svc['service']} has no earlier deploy to roll back to"},
                status=409,
            )
        bad = svc["deploys"].pop()
        good = svc["deploys"][-1]
        svc.update(version=good["version"], error_rate=0.004, p99_latency_ms=310)
        return web.json_response(
            {
                "service": svc["service"],
                "status": "rolled_back",
                "rolled_back_from": bad["version"],
                "rolled_back_to": good["version"],
                "at": iso(now()),
            }
        )

    def _workload(self, namespace: str, deployment: str) -> dict[str, Any]:
        key = f"{namespace}/{deployment}"
        if key not in self.workloads:
            self.workloads[key] = {"namespace": namespace, "deployment": deployment, "generation": 7, "restarts": 0}
        return self.workloads[key]

    async def workload_restart(self, request: web.Request) -> web.Response:
        wl = self._workload(request.match_info["namespace"], request.match_info["deployment"])
        wl["generation"] += 1
        wl["restarts"] += 1
        wl["restarted_at"] = iso(now())
        return web.json_response(
            {
                "namespace": wl["namespace"],
                "deployment": wl["deployment"],
                "status": "restarting",
                "generation": wl["generation"],
                "restarted_at": wl["restarted_at"],
            }
        )

    async def workload_events(self, request: web.Request) -> web.Response:
        wl = self._workload(request.match_info["namespace"], request.match_info["deployment"])
        at = now()
        pod = f"{wl['deployment']}-{digest_int(wl['deployment'], modulo=0xFFFFF):05x}"
        events = [
            {
                "type": "Warning",
                "reason": "OOMKilled",
                "object": f"pod/{pod}",
                "count": 4,
                "message": "Container app exceeded its memory limit (512Mi)",
                "last_seen": iso(at - timedelta(minutes=3)),
            },
            {
                "type": "Warning",
                "reason": "BackOff",
                "object": f"pod/{pod}",
                "count": 9,
                "message": "Back-off restarting failed container app",
                "last_seen": iso(at - timedelta(minutes=1)),
            },
        ]
        if wl["restarts"]:
            events.append(
                {
                    "type": "Normal",
                    "reason": "ScalingReplicaSet",
                    "object": f"deployment/{wl['deployment']}",
                    "count": 1,
                    "message": "Rollout restart requested",
                    "last_seen": wl["restarted_at"],
                }
            )
        return web.json_response({"namespace": wl["namespace"], "deployment": wl["deployment"], "events": events})

    async def revoke_sessions(self, request: web.Request) -> web.Response:
        user = request.match_info["user_id"]
        count = 1 + digest_int(user, "sessions", modulo=5)
        already = self.revoked_sessions.get(user, 0)
        self.revoked_sessions[user] = already + (0 if already else count)
        return web.json_response(
            {"user_id": user, "revoked": 0 if already else count, "status": "revoked", "at": iso(now())}
        )

    async def user_logins(self, request: web.Request) -> web.Response:
        user = request.match_info["user_id"]
        at = now()
        logins = [
            {
                "at": iso(at - timedelta(hours=20)),
                "ip": "198.51.100.23",
                "country": "DE",
                "success": True,
                "user_agent": "Mozilla/5.0 (Macintosh)",
            },
            {
                "at": iso(at - timedelta(minutes=42)),
                "ip": "203.0.113.77",
                "country": "BR",
                "success": False,
                "user_agent": "python-requests/2.31",
            },
            {
                "at": iso(at - timedelta(minutes=40)),
                "ip": "203.0.113.77",
                "country": "BR",
                "success": True,
                "user_agent": "python-requests/2.31",
            },
        ]
        return web.json_response(
            {"user_id": user, "email": f"{user}@example.com", "logins": logins, "impossible_travel": True}
        )

    def _consumer(self, group: str) -> dict[str, Any]:
        if group not in self.consumers:
            self.consumers[group] = {
                "group": group,
                "topic": f"{group.removesuffix('-consumer')}-events",
                "lag": 120_000 + digest_int(group, "lag", modulo=80_000),
                "state": "stalled",
                "committed_offset": 4_812_000 + digest_int(group, "off", modulo=10_000),
                "backfills": [],
            }
        return self.consumers[group]

    async def consumer_lag(self, request: web.Request) -> web.Response:
        c = self._consumer(request.match_info["group"])
        partitions = [{"partition": p, "lag": c["lag"] // 3 + (c["lag"] % 3 if p == 0 else 0)} for p in range(3)]
        return web.json_response(
            {
                "group": c["group"],
                "topic": c["topic"],
                "state": c["state"],
                "lag": c["lag"],
                "committed_offset": c["committed_offset"],
                "partitions": partitions,
                "measured_at": iso(now()),
            }
        )

    async def consumer_restart(self, request: web.Request) -> web.Response:
        c = self._consumer(request.match_info["group"])
        c.update(state="running", lag=min(c["lag"], 1_500))
        return web.json_response({"group": c["group"], "status": "restarted", "state": c["state"], "at": iso(now())})

    async def consumer_backfill(self, request: web.Request) -> web.Response:
        c = self._consumer(request.match_info["group"])
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or ("from_offset" in body) == ("since" in body):
            return web.json_response(
                {"error": "invalid_request", "message": "send exactly one of from_offset (int) or since (ISO time)"},
                status=400,
            )
        start = {"from_offset": body["from_offset"]} if "from_offset" in body else {"since": body["since"]}
        job = {"backfill_id": f"bf-{len(c['backfills']) + 1:04d}", "group": c["group"], "status": "started", **start}
        c["backfills"].append(job)
        return web.json_response(job, status=202)


async def serve(host: str, port: int, token: str) -> None:
    standin = Standin(token=token)
    bound = await standin.start(host, port)
    print(f"stand-in listening on http://{host}:{bound} (Unleash admin token from STANDIN_TOKEN or the default)")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await standin.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Local stand-in for the outside systems of the Ooda demo.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099)
    args = parser.parse_args(argv)
    asyncio.run(serve(args.host, args.port, os.environ.get("STANDIN_TOKEN", DEFAULT_TOKEN)))


if __name__ == "__main__":
    main()
