"""HTTP API for the CLI and a later web console, under /api/v1.

Bearer tokens (from env, named per identity in config) map to identities and roles. No or unknown
token -> 401; a command the core refuses for this actor -> 403 with the reason. Every mutating call
goes through ``Commands``, which records the audit trail.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import structlog
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bot.audit import AuditEntry, parse_head, verify_chain
from bot.commands import Commands
from bot.errors import ConfigError, ConfirmationRequired, UserError
from bot.evidence import export_bundle
from bot.identity import Actor, IdentityDirectory
from bot.metrics import Metrics
from bot.store import Store, TaskOps
from bot.tasks import task_number

log = structlog.get_logger(__name__)

ACTOR_KEY = web.AppKey("actor", Actor)


class ApproveBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    edits: dict[str, dict[str, Any]] | None = None
    confirmation: str | None = None


class RejectBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=2000)


class PauseBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field("", max_length=2000)


class RunBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    args: dict[str, str] = Field(default_factory=dict)


class ReplayBody(BaseModel):
    """Playbook files by name (the name is only what problems are reported with) and which past
    tasks to replay: ``task_ids``, or else the ``last`` tasks of those playbooks."""

    model_config = ConfigDict(extra="forbid")
    files: dict[Annotated[str, Field(min_length=1, max_length=255)], str] = Field(min_length=1, max_length=100)
    task_ids: list[int] | None = Field(None, max_length=200)
    last: int = Field(20, ge=1, le=200)


SIGNALS_LIMIT_MAX = 1000


def _limit(text: str | None, default: int, maximum: int) -> int:
    if text is None:
        return default
    if not text.strip().isdigit() or not 1 <= int(text) <= maximum:
        raise UserError(f"limit: a whole number from 1 to {maximum}; got {text[:20]!r}")
    return int(text)


def _error(status: int, error: str, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": error, "message": message, **extra}, status=status)


class Api:
    def __init__(self, commands: Commands, identities: IdentityDirectory, store: Store, metrics: Metrics,
                 audit_key: bytes | None, extras: Any = None) -> None:
        self._commands = commands
        self._identities = identities
        self._store = store
        self._metrics = metrics
        self._audit_key = audit_key
        self._extras = extras  # policy explanations, provided by the core

    def routes(self) -> list[web.RouteDef]:
        h = self._authenticated
        return [
            web.get("/api/v1/status", h(self.status)),
            web.get("/api/v1/tasks", h(self.list_tasks)),
            web.get("/api/v1/tasks/{id}", h(self.show)),
            web.post("/api/v1/tasks/{id}/approve", h(self.approve)),
            web.post("/api/v1/tasks/{id}/reject", h(self.reject)),
            web.post("/api/v1/tasks/{id}/undo", h(self.undo)),
            web.get("/api/v1/tasks/{id}/bundle", h(self.bundle)),
            web.get("/api/v1/tasks/{id}/policy", h(self.explain)),
            web.post("/api/v1/playbooks/{id}/run", h(self.run)),
            web.post("/api/v1/playbooks/replay", h(self.replay)),
            web.post("/api/v1/pause", h(self.pause)),
            web.post("/api/v1/resume", h(self.resume)),
            web.get("/api/v1/audit/verify", h(self.audit_verify)),
            web.get("/api/v1/policy", h(self.policy)),
            web.get("/api/v1/digest", h(self.digest)),
            web.get("/api/v1/signals", h(self.signals)),
        ]

    def _authenticated(self, handler: Callable[[web.Request, Actor], Awaitable[web.Response]]) -> Any:
        async def wrapped(request: web.Request) -> web.Response:
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            actor = self._identities.from_token(token.strip()) if scheme.lower() == "bearer" and token else None
            if actor is None:
                self._metrics.api_requests.labels("unauthorized").inc()
                log.warning("api.unauthorized", path=request.path, had_token=bool(token))
                return _error(401, "unauthorized", "missing or unknown bearer token; set OODA_API_TOKEN "
                              "to a token configured for an identity (identities[].api_token_env)")
            structlog.contextvars.bind_contextvars(actor=actor.id)
            if request.method == "GET":
                # Commands audit themselves in the core; reads are audited here, so the trail also
                # shows who looked at what (an exported evidence bundle, a verified chain).
                await self._audit_read(request, actor)
            try:
                response = await handler(request, actor)
            except ConfirmationRequired as exc:
                self._metrics.api_requests.labels("confirmation_required").inc()
                return _error(exc.status, "confirmation_required", str(exc), phrase=exc.phrase)
            except UserError as exc:
                outcome = {403: "forbidden", 404: "not_found", 409: "conflict"}.get(exc.status, "bad_request")
                self._metrics.api_requests.labels(outcome).inc()
                log.info("api.refused", path=request.path, status=exc.status, reason=str(exc))
                return _error(exc.status, outcome, str(exc))
            except ConfigError as exc:  # playbooks sent for a replay
                self._metrics.api_requests.labels("bad_request").inc()
                return _error(400, "invalid_playbooks", str(exc).splitlines()[0], problems=exc.problems)
            except ValidationError as exc:
                self._metrics.api_requests.labels("bad_request").inc()
                first = exc.errors(include_url=False)[0]
                field = ".".join(str(p) for p in first["loc"])
                return _error(400, "invalid_body", f"{field}: {first['msg']}", field=field)
            self._metrics.api_requests.labels("ok").inc()
            return response

        return wrapped

    async def _audit_read(self, request: web.Request, actor: Actor) -> None:
        task_id = task_number(request.match_info.get("id", "")) if "/tasks/" in request.path else None
        entry = AuditEntry(actor.id, "api.read", None, {"path": request.path, "query": request.query_string,
                                                          "task": task_id, "via": actor.via})

        async def unit(t: TaskOps) -> None:
            t.audit(entry)

        await self._store.transact(unit)

    @staticmethod
    def _task_id(request: web.Request) -> int:
        task_id = task_number(request.match_info["id"])
        if task_id is None:
            raise UserError(f"task id must be a number, got {request.match_info['id']!r}")
        return task_id

    @staticmethod
    async def _body(request: web.Request, model: type[BaseModel]) -> Any:
        raw = await request.read()
        if not raw.strip():
            return model()
        try:
            json.loads(raw)
        except ValueError as exc:
            raise UserError(f"request body is not valid JSON: {exc}") from exc
        return model.model_validate_json(raw)

    async def status(self, request: web.Request, actor: Actor) -> web.Response:
        return web.json_response((await self._commands.status()).model_dump(mode="json"))

    async def list_tasks(self, request: web.Request, actor: Actor) -> web.Response:
        open_only = request.query.get("state", "open") == "open"
        limit = min(int(request.query.get("limit", "50") or 50), 500)
        tasks = await self._commands.list_tasks(open_only=open_only, limit=limit)
        return web.json_response({"tasks": [t.model_dump(mode="json", exclude={"proposal"}) for t in tasks]})

    async def show(self, request: web.Request, actor: Actor) -> web.Response:
        proposal = await self._commands.show(self._task_id(request))
        return web.json_response({"proposal": proposal.model_dump(mode="json")})

    async def approve(self, request: web.Request, actor: Actor) -> web.Response:
        body = await self._body(request, ApproveBody)
        result = await self._commands.approve(self._task_id(request), actor, edits=body.edits,
                                              confirmation=body.confirmation)
        return web.json_response(result.model_dump(mode="json"))

    async def reject(self, request: web.Request, actor: Actor) -> web.Response:
        body = await self._body(request, RejectBody) if request.can_read_body else None
        if body is None:
            raise UserError("a reason is required: send {\"reason\": \"...\"}")
        result = await self._commands.reject(self._task_id(request), actor, body.reason)
        return web.json_response(result.model_dump(mode="json"))

    async def undo(self, request: web.Request, actor: Actor) -> web.Response:
        result = await self._commands.undo(self._task_id(request), actor)
        return web.json_response(result.model_dump(mode="json"))

    async def run(self, request: web.Request, actor: Actor) -> web.Response:
        body = await self._body(request, RunBody)
        task = await self._commands.run_playbook(request.match_info["id"], body.args, actor)
        return web.json_response({"task": task.model_dump(mode="json", exclude={"proposal"})}, status=202)

    async def replay(self, request: web.Request, actor: Actor) -> web.Response:
        body = await self._body(request, ReplayBody)
        results = await self._commands.replay(body.files, actor, task_ids=body.task_ids, last=body.last)
        return web.json_response({"results": [r.model_dump(mode="json") for r in results]})

    async def pause(self, request: web.Request, actor: Actor) -> web.Response:
        body = await self._body(request, PauseBody)
        status = await self._commands.pause(actor, body.reason)
        return web.json_response(status.model_dump(mode="json"))

    async def resume(self, request: web.Request, actor: Actor) -> web.Response:
        status = await self._commands.resume(actor)
        return web.json_response(status.model_dump(mode="json"))

    async def audit_verify(self, request: web.Request, actor: Actor) -> web.Response:
        """``?expect_head=SEQ:HASH``: a record known from outside the store must still be there."""
        expected = request.query.get("expect_head")
        try:
            anchor = parse_head(expected) if expected is not None else None
        except ValueError as exc:
            raise UserError(f"expect_head: {exc}") from None
        rows = [row async for row in self._store.audit_rows()]
        result = verify_chain(rows, self._audit_key, anchor)
        body = {"ok": result.ok, "checked": result.checked, "broken_seq": result.broken_seq, "reason": result.reason,
                "head_seq": result.head_seq, "head_hash": result.head_hash}
        return web.json_response(body, status=200 if result.ok else 409)

    async def bundle(self, request: web.Request, actor: Actor) -> web.Response:
        task_id = self._task_id(request)
        await self._commands.show(task_id)  # 404 for an unknown task
        return web.json_response(await export_bundle(self._store, task_id))

    async def explain(self, request: web.Request, actor: Actor) -> web.Response:
        text = await self._commands.explain(self._task_id(request))
        return web.json_response({"explanation": text})

    async def policy(self, request: web.Request, actor: Actor) -> web.Response:
        return web.json_response({"policy": self._commands.describe_policy()})

    async def signals(self, request: web.Request, actor: Actor) -> web.Response:
        """``?unmatched=true&since=24h&limit=100``: the alert names no playbook matched."""
        query = request.query
        unmatched = query.get("unmatched")
        if unmatched is None or unmatched.lower() != "true":
            given = f"got {unmatched[:20]!r}" if unmatched is not None else "it is missing"
            raise UserError("unmatched: the allowed value is true (this endpoint lists the alerts no playbook "
                            f"matched: /api/v1/signals?unmatched=true&since=24h); {given}")
        report = await self._commands.unmatched_signals(since=query.get("since", "24h"),
                                                        limit=_limit(query.get("limit"), 100, SIGNALS_LIMIT_MAX))
        return web.json_response(report.model_dump(mode="json"))

    async def digest(self, request: web.Request, actor: Actor) -> web.Response:
        return web.json_response({"digest": await self._commands.digest()})
