"""A fake Discord: REST API and gateway in one aiohttp app on 127.0.0.1, for the real discord.py.

Point discord.py at it with ``DiscordConfig(api_base_url=fake.api_base, gateway_url=fake.gateway_url)``.
The fake keeps what the bot sent (messages, interaction callbacks, followups, command overwrites,
attachments' bytes) and refuses what Discord refuses (embeds past their limits, an embed image or
attachment that names no uploaded file: 400 ``Invalid Form Body``)
and lets a test play the part of a person: ``click`` a button on a message the bot posted,
``submit_modal`` and ``slash`` an app command. These arrive over the gateway as the
``INTERACTION_CREATE`` dispatches real Discord sends.

Wire details that matter to discord.py (see the platform notes):
- JSON responses need ``Content-Type: application/json`` exactly, without a charset, or the
  library receives a string.
- A 429 needs a ``Via`` header, or the library takes it for a Cloudflare ban and gives up.
- Interaction callbacks answer 200 with ``{"interaction": {...}}``; a 204 makes the library log a
  TypeError.
"""

from __future__ import annotations

import asyncio
import email.policy
import itertools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.parser import BytesParser
from typing import Any

from aiohttp import WSMsgType, web

from tests.fakes.chat_limits import discord_problems, embed_size

APPLICATION_ID = 900000000000000001
BOT_USER_ID = 900000000000000002
GUILD_ID = 900000000000000003
CHANNEL_ID = 900000000000000004
OTHER_CHANNEL_ID = 900000000000000005

HANG_GUARD_S = 5.0  # not a wait: a test that needs longer is hung

_ids = itertools.count(910000000000000000)


def new_id() -> int:
    return next(_ids)


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # Not web.json_response: it appends "; charset=utf-8", which discord.py does not parse as JSON.
    return web.Response(
        body=json.dumps(data).encode(), status=status, headers={"Content-Type": "application/json", **(headers or {})}
    )


def _now() -> str:
    return datetime.now(UTC).isoformat()


def user_payload(user_id: int, name: str, *, bot: bool = False) -> dict[str, Any]:
    return {"id": str(user_id), "username": name, "global_name": name, "discriminator": "0", "avatar": None, "bot": bot}


def custom_ids(message: dict[str, Any]) -> list[str]:
    """The custom_ids of a message's buttons, in order."""
    return [c["custom_id"] for row in message["components"] for c in row["components"]]




EMBED_LIMITS = {"title": 256, "description": 4096}
FIELD_LIMITS = {"name": 256, "value": 1024}
MAX_FIELDS = 25
MAX_EMBED_TOTAL = 6000
MAX_CONTENT = 2000


def parse_multipart(raw: bytes, content_type: str) -> dict[str, Any]:
    """A multipart/form-data message: its ``payload_json`` with the ``files[n]`` parts under ``files``."""
    head = b"Content-Type: " + content_type.encode() + b"\r\n\r\n"
    document = BytesParser(policy=email.policy.default).parsebytes(head + raw)
    body: dict[str, Any] = {"files": []}
    for part in document.iter_parts():
        name = part.get_param("name", header="content-disposition")
        data = part.get_payload(decode=True) or b""
        if name == "payload_json":
            body.update(json.loads(data))
        elif isinstance(name, str) and name.startswith("files["):
            body["files"].append({"field": name, "filename": part.get_filename(), "data": data,
                                  "content_type": part.get_content_type()})
    return body


def message_problem(body: dict[str, Any]) -> dict[str, Any] | None:
    """What Discord would refuse in a message body (its documented limits), or None."""
    if len(body.get("content") or "") > MAX_CONTENT:
        return {"content": f"Must be {MAX_CONTENT} or fewer in length."}
    uploaded = {f["filename"] for f in body.get("files", [])}
    for n, embed in enumerate(body.get("embeds") or []):
        for key, limit in EMBED_LIMITS.items():
            if len(embed.get(key) or "") > limit:
                return {f"embeds.{n}.{key}": f"Must be {limit} or fewer in length."}
        fields = embed.get("fields") or []
        if len(fields) > MAX_FIELDS:
            return {f"embeds.{n}.fields": f"Must be {MAX_FIELDS} or fewer in length."}
        for m, f in enumerate(fields):
            for key, limit in FIELD_LIMITS.items():
                if not 0 < len(f.get(key) or "") <= limit:
                    return {f"embeds.{n}.fields.{m}.{key}": f"Must be between 1 and {limit} in length."}
        if embed_size(embed) > MAX_EMBED_TOTAL:
            return {f"embeds.{n}": f"Embed size exceeds maximum size of {MAX_EMBED_TOTAL}"}
        image = (embed.get("image") or {}).get("url", "")
        if image.startswith("attachment://") and image.removeprefix("attachment://") not in uploaded:
            return {f"embeds.{n}.image.url": "Refers to an attachment that was not uploaded."}
    for n, attachment in enumerate(body.get("attachments") or []):
        if attachment.get("filename") not in uploaded:
            return {f"attachments.{n}": "Refers to a file that was not uploaded."}
    return None


@dataclass
class ScriptedFailure:
    method: str
    path: re.Pattern[str]
    status: int
    retry_after: float
    remaining: int


@dataclass
class Recorded:
    method: str
    path: str
    body: Any
    authorized: bool


@dataclass
class FakeDiscord:
    """One fake Discord for one test. Use as ``async with FakeDiscord() as fake``."""

    roles: dict[int, str] = field(default_factory=dict)  # guild role id -> name, sent in GUILD_CREATE
    requests: list[Recorded] = field(default_factory=list)
    messages: dict[int, dict[str, Any]] = field(default_factory=dict)  # every message the bot posted
    threads: dict[int, dict[str, Any]] = field(default_factory=dict)
    callbacks: dict[int, dict[str, Any]] = field(default_factory=dict)  # interaction id -> callback body
    followups: dict[int, list[dict[str, Any]]] = field(default_factory=dict)  # interaction id -> messages
    original_edits: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    commands: dict[int, list[dict[str, Any]]] = field(default_factory=dict)  # guild id -> command overwrites
    identifies: list[dict[str, Any]] = field(default_factory=list)
    attachments: dict[str, bytes] = field(default_factory=dict)  # attachment id -> the uploaded bytes
    refuse_attachments: bool = False  # answer a message with files 413, as Discord does past its size limit
    resumes: int = 0
    interactions: dict[int, dict[str, Any]] = field(default_factory=dict)  # id -> the payload dispatched
    limit_violations: list[str] = field(default_factory=list)  # messages Discord would refuse (chat_limits.py)

    def __post_init__(self) -> None:
        self._failures: list[ScriptedFailure] = []
        self._holds: list[tuple[str, re.Pattern[str], asyncio.Event]] = []
        self._gates: list[asyncio.Event] = []
        self._changed = asyncio.Condition()
        self._sockets: list[web.WebSocketResponse] = []
        self._seq = itertools.count(1)
        self._tokens: dict[str, int] = {}  # interaction token -> interaction id
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> FakeDiscord:
        app = web.Application()
        app.router.add_get("/gw", self._gateway)
        app.router.add_route("*", "/api/v10/{path:.*}", self._rest)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for gate in self._gates:
            gate.set()  # a held request must not keep the server from shutting down
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
        if self.limit_violations and exc[0] is None:
            raise AssertionError(f"messages Discord would refuse: {self.limit_violations}")

    @property
    def open_sessions(self) -> int:
        """Gateway sessions connected now (identified or resumed, not yet closed)."""
        return len(self._sockets)

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gw"

    # -- scripting -------------------------------------------------------------------------

    def fail_next(
        self, method: str, path: str, *, status: int = 429, retry_after: float = 0.01, times: int = 1
    ) -> None:
        """Answer the next ``times`` requests matching ``method`` and the ``path`` regex with ``status``."""
        self._failures.append(ScriptedFailure(method, re.compile(path), status, retry_after, times))

    def clear_failures(self) -> None:
        """Discord is back: scripted failures not yet used are dropped."""
        self._failures.clear()

    def hold_next(self, method: str, path: str) -> asyncio.Event:
        """Keep the next request matching ``method`` and the ``path`` regex waiting (a slow Discord)
        until the returned event is set. The request is recorded on arrival."""
        gate = asyncio.Event()
        self._holds.append((method, re.compile(path), gate))
        self._gates.append(gate)
        return gate

    async def wait_for(self, predicate: Callable[[], Any]) -> Any:
        """Wait until ``predicate()`` is truthy; the timeout only guards against a hung test."""
        async with asyncio.timeout(HANG_GUARD_S), self._changed:
            return await self._changed.wait_for(predicate)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def channel_messages(self, channel_id: int) -> list[dict[str, Any]]:
        """Messages the bot posted in a channel, without interaction replies."""
        return [m for m in self.messages.values() if int(m["channel_id"]) == channel_id and "webhook_id" not in m]

    # -- people acting -----------------------------------------------------------------------

    def _member(self, user_id: int, role_ids: list[int], name: str) -> dict[str, Any]:
        return {
            "user": user_payload(user_id, name),
            "roles": [str(r) for r in role_ids],
            "joined_at": _now(),
            "deaf": False,
            "mute": False,
            "flags": 0,
            "permissions": "2147483647",
        }

    async def _interact(self, kind: int, data: dict[str, Any], user_id: int, role_ids: list[int], name: str,
                        channel_id: int, message: dict[str, Any] | None = None) -> int:
        interaction_id = new_id()
        token = f"itoken-{interaction_id}"
        self._tokens[token] = interaction_id
        payload: dict[str, Any] = {
            "id": str(interaction_id),
            "application_id": str(APPLICATION_ID),
            "type": kind,
            "token": token,
            "version": 1,
            "attachment_size_limit": 8388608,
            "guild_id": str(GUILD_ID),
            "channel_id": str(channel_id),
            "channel": {"id": str(channel_id), "type": 0, "guild_id": str(GUILD_ID), "name": "ops"},
            "member": self._member(user_id, role_ids, name),
            "locale": "en-US",
            "app_permissions": "2147483647",
            "data": data,
        }
        if message is not None:
            payload["message"] = message
        self.interactions[interaction_id] = payload
        await self.dispatch("INTERACTION_CREATE", payload)
        return interaction_id

    async def replay(self, interaction_id: int) -> None:
        """Deliver an interaction again, as the gateway does when it replays events after a resume."""
        await self.dispatch("INTERACTION_CREATE", self.interactions[interaction_id])

    async def click(self, message_id: int, custom_id: str, *, user_id: int, role_ids: list[int] = (),  # type: ignore[assignment]
                    name: str = "someone") -> int:
        """Press the button ``custom_id`` on a message the bot posted; returns the interaction id."""
        message = self.messages[message_id]
        data = {"custom_id": custom_id, "component_type": 2}
        return await self._interact(3, data, user_id, list(role_ids), name, int(message["channel_id"]), message)

    async def submit_modal(self, custom_id: str, values: dict[str, str], *, user_id: int,
                           role_ids: list[int] = (), name: str = "someone",  # type: ignore[assignment]
                           message_id: int | None = None) -> int:
        """Submit the modal ``custom_id`` with text input values keyed by their custom_id."""
        # Modals with ui.Label submit each text input wrapped in a type 18 label component.
        rows = [{"type": 18, "id": n, "component": {"type": 4, "custom_id": k, "value": v}}
                for n, (k, v) in enumerate(values.items(), start=1)]
        message = self.messages[message_id] if message_id is not None else None
        channel_id = int(message["channel_id"]) if message else CHANNEL_ID
        return await self._interact(5, {"custom_id": custom_id, "components": rows}, user_id, list(role_ids), name,
                                    channel_id, message)

    async def slash(self, command: str, subcommand: str, options: dict[str, Any] | None = None, *, user_id: int,
                    role_ids: list[int] = (), name: str = "someone") -> int:  # type: ignore[assignment]
        """Invoke ``/command subcommand`` with options as registered by the bot (types come from the overwrite)."""
        registered = next(c for c in self.commands.get(GUILD_ID, []) if c["name"] == command)
        sub = next(o for o in registered["options"] if o["name"] == subcommand)
        types = {o["name"]: o["type"] for o in sub.get("options", [])}
        opts = [{"name": k, "type": types[k], "value": v} for k, v in (options or {}).items()]
        data = {
            "id": registered["id"],
            "name": command,
            "type": 1,
            "guild_id": str(GUILD_ID),
            "options": [{"name": subcommand, "type": 1, "options": opts}],
        }
        return await self._interact(2, data, user_id, list(role_ids), name, CHANNEL_ID)

    async def wait_callback(self, interaction_id: int) -> dict[str, Any]:
        return await self.wait_for(lambda: self.callbacks.get(interaction_id))

    async def wait_followup(self, interaction_id: int) -> dict[str, Any]:
        return (await self.wait_for(lambda: self.followups.get(interaction_id)))[-1]

    # -- gateway -----------------------------------------------------------------------------

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        """Send an op 0 DISPATCH to the bot that identified last."""
        await self.wait_for(lambda: self._sockets)
        await self._sockets[-1].send_str(json.dumps({"op": 0, "t": event, "s": next(self._seq), "d": data}))

    async def drop_connection(self) -> None:
        """Close the gateway socket with a resumable code, as Discord does on a rolling restart."""
        ws = self._sockets.pop()
        await ws.close(code=4000)

    def _guild(self) -> dict[str, Any]:
        role_ids = {GUILD_ID: "@everyone", **self.roles}
        return {
            "id": str(GUILD_ID),
            "name": "ops-guild",
            "icon": None,
            "owner_id": "1",
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "features": [],
            "premium_tier": 0,
            "nsfw_level": 0,
            "preferred_locale": "en-US",
            "system_channel_flags": 0,
            "member_count": 3,
            "large": False,
            "unavailable": False,
            "emojis": [],
            "stickers": [],
            "members": [],
            "presences": [],
            "voice_states": [],
            "threads": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "roles": [
                {"id": str(rid), "name": rname, "color": 0, "hoist": False, "position": i, "permissions": "0",
                 "managed": False, "mentionable": False, "flags": 0}
                for i, (rid, rname) in enumerate(role_ids.items())
            ],
            "channels": [
                {"id": str(cid), "type": 0, "name": f"ops-{n}", "position": n, "guild_id": str(GUILD_ID),
                 "permission_overwrites": [], "nsfw": False, "parent_id": None}
                for n, cid in enumerate((CHANNEL_ID, OTHER_CHANNEL_ID))
            ],
        }

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": 45000}}))
        async for msg in ws:
            if msg.type is not WSMsgType.TEXT:
                break
            frame = json.loads(msg.data)
            op = frame["op"]
            if op == 1:
                await ws.send_str(json.dumps({"op": 11}))
            elif op == 2:
                self.identifies.append(frame["d"])
                self._sockets.append(ws)
                ready = {
                    "v": 10,
                    "user": user_payload(BOT_USER_ID, "ooda", bot=True),
                    "guilds": [{"id": str(GUILD_ID), "unavailable": True}],
                    "session_id": f"session-{len(self.identifies)}",
                    "resume_gateway_url": self.gateway_url,
                    "application": {"id": str(APPLICATION_ID), "flags": 0},
                }
                await ws.send_str(json.dumps({"op": 0, "t": "READY", "s": next(self._seq), "d": ready}))
                await ws.send_str(json.dumps({"op": 0, "t": "GUILD_CREATE", "s": next(self._seq), "d": self._guild()}))
                await self._notify()
            elif op == 6:
                self.resumes += 1
                self._sockets.append(ws)
                await ws.send_str(json.dumps({"op": 0, "t": "RESUMED", "s": next(self._seq), "d": {}}))
                await self._notify()
        if ws in self._sockets:
            self._sockets.remove(ws)
        return ws

    # -- REST --------------------------------------------------------------------------------

    def _message(self, channel_id: int, body: dict[str, Any], *, webhook: bool = False) -> dict[str, Any]:
        message = {
            "id": str(new_id()),
            "channel_id": str(channel_id),
            "author": user_payload(BOT_USER_ID, "ooda", bot=True),
            "content": body.get("content") or "",
            "embeds": body.get("embeds") or [],
            "components": body.get("components") or [],
            "attachments": [],
            "mentions": [],
            "mention_roles": [],
            "pinned": False,
            "mention_everyone": False,
            "tts": False,
            "timestamp": _now(),
            "edited_timestamp": None,
            "flags": body.get("flags") or 0,
            "type": 0,
        }
        if "message_reference" in body:
            message["message_reference"] = body["message_reference"]
        for n, upload in enumerate(body.get("files", [])):
            attachment_id = str(new_id())
            self.attachments[attachment_id] = upload["data"]
            message["attachments"].append({
                "id": attachment_id, "filename": upload["filename"], "size": len(upload["data"]),
                "content_type": upload["content_type"], "url": f"http://127.0.0.1/attachments/{attachment_id}",
                "proxy_url": f"http://127.0.0.1/attachments/{attachment_id}", "index": n})
        if webhook:
            message["webhook_id"] = str(APPLICATION_ID)
        return message

    def _scripted(self, method: str, path: str) -> web.Response | None:
        for failure in self._failures:
            if failure.remaining and failure.method == method and failure.path.search(path):
                failure.remaining -= 1
                body = {"message": "You are being rate limited.", "retry_after": failure.retry_after, "global": False}
                if failure.status != 429:
                    body = {"message": "Scripted failure", "code": 0}
                return _json(body, failure.status, {"Via": "1.1 google", "Retry-After": "0"})
        return None

    async def _rest(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["path"]
        body: Any = None
        if request.can_read_body:
            raw = await request.read()
            if request.content_type == "application/json":
                body = json.loads(raw)
            elif request.content_type.startswith("multipart/"):
                # discord.py sends multipart when a message has files: payload_json and files[n].
                body = parse_multipart(raw, request.headers["Content-Type"])
        self.requests.append(Recorded(request.method, path, body, "Authorization" in request.headers))
        hold = next((h for h in self._holds if h[0] == request.method and h[1].search(path)), None)
        if hold is not None:
            self._holds.remove(hold)
            await self._notify()
            await hold[2].wait()
        problems = discord_problems(body) if request.method in {"POST", "PATCH"} else []
        if problems:
            # What Discord answers a message over a limit; remembered to fail the test.
            self.limit_violations += [f"{request.method} {path}: {p}" for p in problems]
            await self._notify()
            return _json({"message": "Invalid Form Body", "code": 50035, "errors": problems}, 400)
        try:
            response = self._scripted(request.method, path) or self._route(request.method, path, body or {})
        finally:
            await self._notify()
        return response

    def _route(self, method: str, path: str, body: dict[str, Any]) -> web.Response:
        parts = path.strip("/").split("/")
        if path == "/users/@me":
            return _json(user_payload(BOT_USER_ID, "ooda", bot=True))
        if path == "/oauth2/applications/@me":
            return _json({
                "id": str(APPLICATION_ID), "name": "ooda", "description": "", "icon": None, "bot_public": False,
                "bot_require_code_grant": False, "owner": user_payload(1, "owner"), "verify_key": "00", "flags": 0,
            })
        if parts[:1] == ["applications"] and parts[2:3] == ["guilds"] and parts[4:] == ["commands"] and method == "PUT":
            guild_id = int(parts[3])
            registered = [{**c, "id": str(new_id()), "application_id": str(APPLICATION_ID), "version": "1",
                           "guild_id": str(guild_id)} for c in body]
            self.commands[guild_id] = registered
            return _json(registered)
        if parts[:1] == ["channels"] and len(parts) == 2 and method == "GET":
            return _json({"id": parts[1], "type": 0, "name": "ops", "guild_id": str(GUILD_ID), "position": 0,
                          "permission_overwrites": [], "nsfw": False, "parent_id": None})
        if parts[:1] == ["channels"] and parts[2:] == ["messages"] and method == "POST":
            if body.get("files") and self.refuse_attachments:
                return _json({"message": "Request entity too large", "code": 40005}, 413)
            problem = message_problem(body)
            if problem:
                return _json({"message": "Invalid Form Body", "code": 50035, "errors": problem}, 400)
            message = self._message(int(parts[1]), body)
            self.messages[int(message["id"])] = message
            return _json(message)
        if parts[:1] == ["channels"] and parts[2:3] == ["messages"] and len(parts) == 4 and method == "PATCH":
            message = self.messages.get(int(parts[3]))
            if message is None:
                return _json({"message": "Unknown Message", "code": 10008}, 404)
            message.update({k: v for k, v in body.items() if k in ("content", "embeds", "components")})
            message["edited_timestamp"] = _now()
            message.setdefault("edits", 0)
            message["edits"] += 1
            return _json(message)
        if parts[:1] == ["channels"] and parts[4:] == ["threads"] and method == "POST":
            thread = {
                "id": parts[3], "type": 11, "guild_id": str(GUILD_ID), "name": body.get("name", ""),
                "parent_id": parts[1], "owner_id": str(BOT_USER_ID), "member_count": 1, "message_count": 0,
                "thread_metadata": {"archived": False, "auto_archive_duration": body.get("auto_archive_duration", 1440),
                                    "archive_timestamp": _now(), "locked": False},
            }
            self.threads[int(parts[3])] = thread
            if int(parts[3]) in self.messages:
                self.messages[int(parts[3])]["thread"] = thread
            return _json(thread)
        if parts[:1] == ["interactions"] and parts[3:] == ["callback"]:
            interaction_id = int(parts[1])
            if interaction_id in self.callbacks:  # Discord takes one response per interaction
                return _json({"message": "Interaction has already been acknowledged.", "code": 40060}, 400)
            self.callbacks[interaction_id] = body
            return _json({"interaction": {"id": parts[1], "type": body.get("type")}})
        if parts[:1] == ["webhooks"] and len(parts) == 3 and method == "POST":
            interaction_id = self._tokens[parts[2]]
            message = self._message(CHANNEL_ID, body, webhook=True)
            self.followups.setdefault(interaction_id, []).append(message)
            self.messages[int(message["id"])] = message  # so a test can click a button on an ephemeral reply
            return _json(message)
        if parts[:1] == ["webhooks"] and parts[3:] == ["messages", "@original"] and method == "PATCH":
            interaction_id = self._tokens[parts[2]]
            self.original_edits.setdefault(interaction_id, []).append(body)
            return _json(self._message(CHANNEL_ID, body, webhook=True))
        return _json({"message": f"fake Discord has no route for {method} {path}", "code": 0}, 404)
