"""A fake Slack on 127.0.0.1: the Web API at ``/api/{method}``, Socket Mode at ``/ws``, and
``response_url`` targets at ``/respond/{key}``, and file uploads at ``/upload/{file_id}`` (the URL
``files.getUploadURLExternal`` hands out), all served by one in-loop aiohttp app.

The real slack_sdk / slack-bolt code talks to it over real HTTP and WebSocket, so a test checks
what Slack would actually receive. Every call is recorded with the answer it got; ``fail_next``
scripts failures such as a 429 with ``Retry-After: 0``; ``down``/``up`` make chat methods fail
until told otherwise (an outage); ``wait_for`` awaits a call instead of sleeping.

    async with FakeSlack() as slack:
        client = AsyncWebClient(token="xoxb-test", base_url=slack.api_url)
        ...
        ack = await slack.send_envelope("slash_commands", {...})   # Socket Mode, returns the ack
        call = await slack.wait_for("chat.postMessage")

It checks what Slack checks: ``blocks`` within Block Kit's limits (``invalid_blocks`` otherwise),
and the three steps of ``files_upload_v2`` in order (a URL is asked for a name and a length, the
bytes posted to it are that long, and only uploaded files can be completed into a channel);
``shared_files`` holds what was completed, with its bytes.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from aiohttp import WSMsgType, web

from tests.fakes.chat_limits import slack_problems


@dataclass
class ApiCall:
    method: str
    args: dict[str, Any]
    token: str | None
    response: dict[str, Any] = field(default_factory=dict)  # the body the fake answered with

    @property
    def ok(self) -> bool:
        return bool(self.response.get("ok"))


@dataclass
class ScriptedFailure:
    status: int = 200
    error: str | None = None  # an ok:false error code ("channel_not_found") when status is 200
    headers: dict[str, str] = field(default_factory=dict)


class FakeSlack:
    BOT_USER_ID = "UBOT"
    TEAM_ID = "T1"

    def __init__(self) -> None:
        self.calls: list[ApiCall] = []
        self.limit_violations: list[str] = []  # messages Slack would refuse (tests/fakes/chat_limits.py)
        self.responses: list[tuple[str, dict[str, Any]]] = []  # (response_url key, body)
        self.acks: dict[str, dict[str, Any]] = {}
        self.usergroups: dict[str, list[str]] = {}  # group id -> user ids, for usergroups.list
        self._failures: dict[str, list[ScriptedFailure]] = {}
        self._down: set[str] = set()
        self.uploads: dict[str, dict[str, Any]] = {}  # file id -> {"filename", "length", "data"}
        self.shared_files: list[dict[str, Any]] = []  # completed uploads: id, title, channel, data, ...
        self._ts = itertools.count(1)
        self._envelope_ids = itertools.count(1)
        self._changed = asyncio.Condition()
        self._sockets: list[web.WebSocketResponse] = []
        self._connected = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.wait_s = 5.0  # a bound on every wait, so a broken test fails instead of hanging

    # -- lifecycle ---------------------------------------------------------------------------
    async def __aenter__(self) -> FakeSlack:
        app = web.Application()
        app.router.add_post("/api/{method}", self._api)
        app.router.add_get("/api/{method}", self._api)  # some methods (usergroups.list) are GETs
        app.router.add_get("/ws", self._ws)
        app.router.add_post("/respond/{key}", self._respond)
        app.router.add_post("/upload/{file_id}", self._upload)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
        if self.limit_violations and exc[0] is None:
            raise AssertionError(f"messages Slack would refuse: {self.limit_violations}")

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    def response_url(self, key: str) -> str:
        return f"http://127.0.0.1:{self.port}/respond/{key}"

    # -- scripting and waiting ---------------------------------------------------------------
    def fail_next(self, method: str, *, status: int = 200, error: str | None = None,
                  retry_after: int | None = None, times: int = 1) -> None:
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        self._failures.setdefault(method, []).extend(
            ScriptedFailure(status=status, error=error, headers=headers) for _ in range(times)
        )

    def down(self, *methods: str) -> None:
        """Answer every call to ``methods`` (all ``chat.*`` by default) with a 503 until ``up()``."""
        self._down = set(methods) or {"chat.postMessage", "chat.update", "chat.postEphemeral"}

    def up(self) -> None:
        self._down = set()

    def calls_to(self, method: str) -> list[ApiCall]:
        return [c for c in self.calls if c.method == method]

    async def wait_for(self, method: str, count: int = 1) -> ApiCall:
        """The ``count``-th call to ``method`` (1-based), waiting for it to arrive."""
        await self.wait_until(lambda: len(self.calls_to(method)) >= count)
        return self.calls_to(method)[count - 1]

    async def wait_for_response(self, count: int = 1) -> dict[str, Any]:
        await self.wait_until(lambda: len(self.responses) >= count)
        return self.responses[count - 1][1]

    async def wait_until(self, predicate: Callable[[], bool]) -> bool:
        async with asyncio.timeout(self.wait_s), self._changed:
            await self._changed.wait_for(predicate)
        return True

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # -- Web API -----------------------------------------------------------------------------
    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        raw = await request.read()
        if request.content_type == "application/json":
            args: dict[str, Any] = json.loads(raw or b"{}")
        else:
            args = {k: v[-1] for k, v in parse_qs(raw.decode()).items()}
            args.update(request.query)
        auth = request.headers.get("Authorization", "")
        scripted = self._failures.get(method)
        failure = scripted.pop(0) if scripted else None
        if failure is None and method in self._down:
            failure = ScriptedFailure(status=503)
        status, headers = 200, {}
        problems = slack_problems(method, args) if failure is None else []
        if problems:
            # What Slack answers a message over a Block Kit limit; remembered to fail the test.
            self.limit_violations += problems
            body = {"ok": False, "error": "invalid_blocks", "errors": problems}
        elif failure is None:
            body = self._answer(method, args)
        elif failure.status != 200:
            error = "ratelimited" if failure.status == 429 else "service_unavailable"
            body, status, headers = {"ok": False, "error": error}, failure.status, failure.headers
        else:
            body = {"ok": False, "error": failure.error}
        # Recorded with its answer before anyone waiting on it wakes up.
        self.calls.append(ApiCall(method, args, auth.removeprefix("Bearer ") or None, body))
        await self._notify()
        return web.json_response(body, status=status, headers=headers)

    def _answer(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        if method == "files.getUploadURLExternal":
            return self._upload_url(args)
        if method == "files.completeUploadExternal":
            return self._complete_upload(args)
        if method == "auth.test":
            return {"ok": True, "url": "https://fake.slack.test/", "team": "Fake", "user": "ooda",
                    "team_id": self.TEAM_ID, "user_id": self.BOT_USER_ID, "bot_id": "BBOT"}
        if method == "apps.connections.open":
            return {"ok": True, "url": f"ws://127.0.0.1:{self.port}/ws"}
        if method == "chat.postMessage":
            ts = f"1700000000.{next(self._ts):06d}"
            return {"ok": True, "channel": args.get("channel"), "ts": ts,
                    "message": {"text": args.get("text"), "ts": ts}}
        if method == "chat.update":
            return {"ok": True, "channel": args.get("channel"), "ts": args.get("ts")}
        if method == "chat.postEphemeral":
            return {"ok": True, "message_ts": f"1700000001.{next(self._ts):06d}"}
        if method in {"views.open", "views.update", "views.push"}:
            return {"ok": True, "view": {"id": "V1", **(_loads(args.get("view")) or {})}}
        if method == "usergroups.list":
            return {"ok": True, "usergroups": [{"id": g, "users": users} for g, users in self.usergroups.items()]}
        return {"ok": True}

    def _upload_url(self, args: dict[str, Any]) -> dict[str, Any]:
        length = str(args.get("length", ""))
        if not args.get("filename") or not length.isdigit() or int(length) <= 0:
            return {"ok": False, "error": "invalid_arguments"}
        file_id = f"F{next(self._ts):08d}"
        self.uploads[file_id] = {"filename": args["filename"], "length": int(length), "data": None,
                                 "alt_txt": args.get("alt_txt")}
        return {"ok": True, "file_id": file_id, "upload_url": f"http://127.0.0.1:{self.port}/upload/{file_id}"}

    async def _upload(self, request: web.Request) -> web.Response:
        file_id = request.match_info["file_id"]
        upload = self.uploads.get(file_id)
        data = await request.read()
        if upload is None:
            return web.Response(status=404, text="unknown upload")
        if len(data) != upload["length"]:  # Slack refuses bytes that do not match the announced length
            return web.Response(status=400, text=f"expected {upload['length']} bytes, got {len(data)}")
        scripted = self._failures.get("upload")  # fail_next("upload", status=...) fails the bytes' POST
        if scripted:
            failure = scripted.pop(0)
            return web.Response(status=failure.status if failure.status != 200 else 500, text="upload failed")
        upload["data"] = data
        await self._notify()
        return web.Response(text=f"OK - {len(data)}")

    def _complete_upload(self, args: dict[str, Any]) -> dict[str, Any]:
        files = _loads(args.get("files")) or []
        if not files or any(self.uploads.get(f.get("id"), {}).get("data") is None for f in files):
            return {"ok": False, "error": "file_not_found"}  # never asked for, or its bytes never arrived
        done = []
        for f in files:
            upload = self.uploads[f["id"]]
            shared = {"id": f["id"], "title": f.get("title"), "channel": args.get("channel_id"),
                      "thread_ts": args.get("thread_ts"), "initial_comment": args.get("initial_comment"), **upload}
            self.shared_files.append(shared)
            done.append({"id": f["id"], "title": f.get("title"), "name": upload["filename"]})
        return {"ok": True, "files": done}

    async def _respond(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.limit_violations += slack_problems("response_url", body)
        self.responses.append((request.match_info["key"], body))
        await self._notify()
        return web.Response(text="ok")

    # -- Socket Mode -------------------------------------------------------------------------
    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._sockets.append(ws)
        await ws.send_json({"type": "hello", "num_connections": 1})
        self._connected.set()
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                data = json.loads(msg.data)
                if "envelope_id" in data:
                    self.acks[data["envelope_id"]] = data
                    await self._notify()
        finally:
            self._sockets.remove(ws)
        return ws

    async def refresh_socket(self) -> None:
        """Do what Slack does every few hours: tell the app to reconnect, then close its socket.
        Returns once the app is connected again on a new socket."""
        async with asyncio.timeout(self.wait_s):
            await self._connected.wait()
        old = self._sockets[-1]
        self._connected.clear()
        await old.send_json({"type": "disconnect", "reason": "refresh_requested",
                             "debug_info": {"host": "applink-fake"}})
        async with asyncio.timeout(self.wait_s):
            await self._connected.wait()
        await old.close()

    async def send_envelope(self, kind: str, payload: dict[str, Any], *,
                            retry_attempt: int = 0) -> dict[str, Any]:
        """Send one Socket Mode envelope and return the app's ack (``{"envelope_id", "payload"?}``)."""
        async with asyncio.timeout(self.wait_s):
            await self._connected.wait()
        envelope_id = f"env-{next(self._envelope_ids)}"
        await self._sockets[-1].send_json({
            "envelope_id": envelope_id, "type": kind, "payload": payload,
            "accepts_response_payload": kind != "events_api", "retry_attempt": retry_attempt,
            "retry_reason": "timeout" if retry_attempt else "",
        })
        await self.wait_until(lambda: envelope_id in self.acks)
        return self.acks[envelope_id]


def _loads(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


