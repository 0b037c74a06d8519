"""HTTP API for the CLI and a later web console, under /api/v1.

Bearer tokens (from env, named per identity in config) map to identities and roles. No or unknown
token -> 401; a command the core refuses for this actor -> 403 with the reason. Every mutating call
goes through ``Commands``, which records the audit trail.

Statuses a client can get: 200 (202 for a run), 400 ``invalid_parameter`` (a query parameter or
path id, named in ``parameter``; unknown query parameters are refused too), 400 ``invalid_body`` /
``bad_request`` / ``invalid_playbooks``, 401, 403, 404, 409, 413 (body past its limit), 415 (body
not JSON), 428 ``confirmation_required``, 503 (the store cannot take writes). Query, path and body
are checked (bot/web/request_limits.py) before anything is audited or stored.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Annotated, Any, Protocol

import structlog
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bot.audit.chain import AuditEntry, parse_head, verify_chain
from bot.audit.redaction import redact
from bot.chat.commands import Commands, parse_since
from bot.chat.evidence_bundle import EvidenceStore, export_bundle
from bot.errors import ConfigError, ConfirmationRequired, StoreUnavailable, UserError
from bot.loop.shadow_report import report_text
from bot.metrics import Metrics
from bot.policy.identity import Actor, IdentityDirectory
from bot.store.ports import UnitOfWork
from bot.store.protocol import TaskOps
from bot.tracing import trace_id_of
from bot.web.request_limits import (
    API_BODY_BYTES,
    LIMIT_MAX,
    MAX_TASK_ID,
    NO_QUERY,
    REPLAY_BODY_BYTES,
    InvalidParameter,
    QuerySpec,
    free_text,
    json_body,
    one_of,
    playbook_id_from_path,
    task_id_from_path,
    whole_number,
)

log = structlog.get_logger(__name__)

ACTOR_KEY = web.AppKey("actor", Actor)


class ApproveBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    edits: dict[str, dict[str, Any]] | None = None
    confirmation: str | None = None
    override_dry_run: str | None = Field(default=None, max_length=500)  # why a step whose dry run fails may run


class RejectBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=2000)


class ShadowBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    on: bool


class PauseBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field("", max_length=2000)


class RunBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    args: dict[str, str] = Field(default_factory=dict)


class EmptyBody(BaseModel):
    """Undo and resume take nothing; a body, if sent, must be ``{}``."""

    model_config = ConfigDict(extra="forbid")


class ReplayBody(BaseModel):
    """Playbook files by name (the name is only what problems are reported with) and which past
    tasks to replay: ``task_ids``, or else the ``last`` tasks of those playbooks."""

    model_config = ConfigDict(extra="forbid")
    files: dict[Annotated[str, Field(min_length=1, max_length=255)], str] = Field(min_length=1, max_length=100)
    task_ids: list[Annotated[int, Field(ge=1, le=MAX_TASK_ID)]] | None = Field(None, max_length=200)
    last: int = Field(20, ge=1, le=200)


# ``all=true`` is ``state=all`` as the CLI's --all flag says it.
def _state_agrees_with_all(params: dict[str, Any]) -> None:
    if "all" in params:
        state = "all" if params.pop("all") == "true" else "open"
        if params.setdefault("state", state) != state:
            raise InvalidParameter("all", f"all={'true' if state == 'all' else 'false'} contradicts "
                                          f"state={params['state']}; give one of them")


TASKS_QUERY = QuerySpec({"state": one_of("open", "all"), "all": one_of("true", "false"),
                         "limit": whole_number(1, LIMIT_MAX)}, {"limit": 50}, check=_state_agrees_with_all)
UNMATCHED_HINT = ("unmatched: the allowed value is true (this endpoint lists the alerts no playbook matched: "
                  "/api/v1/signals?unmatched=true&since=24h)")
SHADOW_QUERY = QuerySpec({"days": whole_number(1, 366)}, {"days": 7})
VERIFY_QUERY = QuerySpec({"expect_head": lambda name, text: _head(free_text(200)(name, text))})


def digest_date(name: str, text: str) -> date:
    """A digest's ``date``: one calendar day, YYYY-MM-DD."""
    try:
        day = date.fromisoformat(free_text(10)(name, text))
    except ValueError:
        raise InvalidParameter(name, f"{name}: give a day as YYYY-MM-DD, for example 2026-01-15; "
                                     f"got {text[:20]!r}") from None
    if not date(2000, 1, 1) <= day <= date(9998, 12, 31):
        raise InvalidParameter(name, f"{name}: {day} is outside the days a store can hold")
    return day


DIGEST_QUERY = QuerySpec({"date": digest_date})


def _head(text: str) -> tuple[int, str]:
    try:
        return parse_head(text)
    except ValueError as exc:
        raise InvalidParameter("expect_head", f"expect_head: {exc}") from None


def _unmatched(name: str, text: str) -> bool:
    if text.strip().lower() != "true":
        raise InvalidParameter(name, f"{UNMATCHED_HINT}; got {text[:20]!r}")
    return True


def signals_query(clock: Callable[[], datetime]) -> QuerySpec:
    """``/api/v1/signals``: ``since`` is read against the core's clock, so it is checked here
    with it, before the read is audited."""

    def since(name: str, text: str) -> datetime:
        try:
            return parse_since(free_text(64)(name, text), clock())
        except InvalidParameter:
            raise
        except UserError as exc:
            raise InvalidParameter(name, str(exc)) from None

    return QuerySpec({"unmatched": _unmatched, "since": since, "limit": whole_number(1, LIMIT_MAX)},
                     {"limit": 100}, required={"unmatched": f"{UNMATCHED_HINT}; it is missing"})
# Where the checked query and path id wait for the handler, on the request's own mapping.
PARAMS = web.RequestKey("params", dict[str, Any])
TASK_ID = web.RequestKey("task_id", int)


@dataclass(frozen=True)
class _Route:
    method: str
    path: str
    handler: Callable[[web.Request, Actor], Awaitable[web.Response]]
    query: QuerySpec = NO_QUERY


def _error(status: int, error: str, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": error, "message": message, **extra}, status=status)


class ApiStore(EvidenceStore, UnitOfWork, Protocol):
    """The store ports the API uses beside the commands: bundles, the audit chain, audited reads."""


class Api:
    def __init__(self, commands: Commands, identities: IdentityDirectory, store: ApiStore, metrics: Metrics,
                 audit_key: bytes | None, extras: Any = None) -> None:
        self._commands = commands
        self._identities = identities
        self._store = store
        self._metrics = metrics
        self._audit_key = audit_key
        self._extras = extras  # policy explanations, provided by the core

    def routes(self) -> list[web.RouteDef]:
        table = self._table()
        return [*(web.route(r.method, r.path, self._authenticated(r)) for r in table),
                # Last, so it only sees what no route above matched: a JSON answer, like every other.
                web.route("*", "/api{tail:.*}", self._no_route(table))]

    @staticmethod
    def _no_route(table: tuple[_Route, ...]) -> Callable[[web.Request], Awaitable[web.Response]]:
        patterns = [(re.compile(re.sub(r"\\{id\\}", "[^/]+", re.escape(r.path)) + "$"), r.method) for r in table]

        async def answer(request: web.Request) -> web.Response:
            allowed = sorted({method for pattern, method in patterns if pattern.match(request.path)})
            if allowed:
                return web.json_response(
                    {"error": "method_not_allowed", "message": f"{request.path} takes {', '.join(allowed)}, "
                     f"not {request.method}"}, status=405, headers={"Allow": ", ".join(allowed)})
            return _error(404, "not_found", f"there is no API route {request.path}; the routes are listed in the "
                          "README's API section")

        return answer

    def _table(self) -> tuple[_Route, ...]:
        return (
            _Route("GET", "/api/v1/status", self.status),
            _Route("GET", "/api/v1/tasks", self.list_tasks, TASKS_QUERY),
            _Route("GET", "/api/v1/tasks/{id}", self.show),
            _Route("POST", "/api/v1/tasks/{id}/approve", self.approve),
            _Route("POST", "/api/v1/tasks/{id}/reject", self.reject),
            _Route("POST", "/api/v1/tasks/{id}/undo", self.undo),
            _Route("POST", "/api/v1/tasks/{id}/retry", self.retry),
            _Route("GET", "/api/v1/tasks/{id}/bundle", self.bundle),
            _Route("GET", "/api/v1/tasks/{id}/policy", self.explain),
            _Route("POST", "/api/v1/playbooks/{id}/run", self.run),
            _Route("POST", "/api/v1/playbooks/replay", self.replay),
            _Route("POST", "/api/v1/pause", self.pause),
            _Route("POST", "/api/v1/resume", self.resume),
            _Route("GET", "/api/v1/audit/verify", self.audit_verify, VERIFY_QUERY),
            _Route("GET", "/api/v1/policy", self.policy),
            _Route("GET", "/api/v1/digest", self.digest, DIGEST_QUERY),
            _Route("GET", "/api/v1/digest/chart.png", self.digest_chart, DIGEST_QUERY),
            _Route("GET", "/api/v1/shadow/report", self.shadow_report, SHADOW_QUERY),
            _Route("POST", "/api/v1/playbooks/{id}/shadow", self.shadow_set),
            _Route("GET", "/api/v1/signals", self.signals, signals_query(self._commands.core.clock)),
        )

    def _authenticated(self, route: _Route) -> Any:
        async def wrapped(request: web.Request) -> web.Response:
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            actor = self._identities.from_token(token.strip()) if scheme.lower() == "bearer" and token else None
            if actor is None:
                self._metrics.api_requests.labels("unauthorized").inc()
                log.warning("api.unauthorized", path=request.path, had_token=bool(token))
                return _error(401, "unauthorized", "missing or unknown bearer token; set OODA_API_TOKEN "
                              "to a token configured for an identity (identities[].api_token_env)")
            structlog.contextvars.bind_contextvars(actor=actor.id)
            try:
                self._check_request(request, route)
                if request.method == "GET":
                    # Commands audit themselves in the core; reads are audited here, so the trail also
                    # shows who looked at what (an exported evidence bundle, a verified chain).
                    await self._audit_read(request, actor)
                response = await route.handler(request, actor)
            except InvalidParameter as exc:
                self._metrics.api_requests.labels("bad_request").inc()
                # The value may be anything a client typed, a pasted token too: the log names the
                # parameter, never what it held.
                log.info("api.invalid_parameter", path=request.path, parameter=exc.parameter)
                return _error(400, "invalid_parameter", str(exc), parameter=exc.parameter)
            except ConfirmationRequired as exc:
                self._metrics.api_requests.labels("confirmation_required").inc()
                return _error(exc.status, "confirmation_required", str(exc), phrase=exc.phrase)
            except UserError as exc:
                outcome = {403: "forbidden", 404: "not_found", 409: "conflict", 413: "payload_too_large",
                           415: "unsupported_media_type"}.get(exc.status, "bad_request")
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
            except StoreUnavailable as exc:
                self._metrics.api_requests.labels("unavailable").inc()
                log.warning("api.store_unavailable", path=request.path, error=str(exc))
                return _error(503, "store_unavailable", str(exc))
            self._metrics.api_requests.labels("ok").inc()
            return response

        return wrapped

    @staticmethod
    def _check_request(request: web.Request, route: _Route) -> None:
        """Query and path id, checked before anything is audited, stored or handed to a command."""
        request[PARAMS] = route.query.parse(request.query)
        if route.path.startswith("/api/v1/tasks/{id}"):
            request[TASK_ID] = task_id_from_path(request.match_info["id"])
        elif route.path.startswith("/api/v1/playbooks/{id}"):
            playbook_id_from_path(request.match_info["id"])

    async def _audit_read(self, request: web.Request, actor: Actor) -> None:
        # The parsed parameters, redacted, never the query string as sent: that may carry anything,
        # a token pasted into the wrong place too, and the audit log is append-only.
        entry = AuditEntry(actor.id, "api.read", None, {"path": request.path, "params": redact(request[PARAMS]),
                                                          "task": request.get(TASK_ID), "via": actor.via})

        async def unit(t: TaskOps) -> None:
            t.audit(entry)

        await self._store.transact(unit)

    @staticmethod
    def _task_id(request: web.Request) -> int:
        return request[TASK_ID]

    @staticmethod
    async def _body(request: web.Request, model: type[BaseModel], max_bytes: int = API_BODY_BYTES) -> Any:
        return model.model_validate(await json_body(request, max_bytes=max_bytes) or {})

    async def status(self, request: web.Request, actor: Actor) -> web.Response:
        return web.json_response((await self._commands.status()).model_dump(mode="json"))

    async def list_tasks(self, request: web.Request, actor: Actor) -> web.Response:
        params = request[PARAMS]
        tasks = await self._commands.list_tasks(open_only=params.get("state", "open") == "open", limit=params["limit"])
        return web.json_response({"tasks": [t.model_dump(mode="json", exclude={"proposal"}) for t in tasks]})

    async def show(self, request: web.Request, actor: Actor) -> web.Response:
        task_id = self._task_id(request)
        proposal = await self._commands.show(task_id)
        task = await self._store.get_task(task_id)
        # The task's OpenTelemetry trace (bot/tracing.py), to find its timeline in a tracing backend.
        return web.json_response({"proposal": proposal.model_dump(mode="json"),
                                  "trace_id": trace_id_of(task) if task else None})

    async def approve(self, request: web.Request, actor: Actor) -> web.Response:
        body = await self._body(request, ApproveBody)
        result = await self._commands.approve(self._task_id(request), actor, edits=body.edits,
                                              confirmation=body.confirmation, override_dry_run=body.override_dry_run)
        return web.json_response(result.model_dump(mode="json"))

    async def reject(self, request: web.Request, actor: Actor) -> web.Response:
        fields = await json_body(request)
        if fields is None:
            raise UserError("a reason is required: send {\"reason\": \"...\"}")
        body = RejectBody.model_validate(fields)
        result = await self._commands.reject(self._task_id(request), actor, body.reason)
        return web.json_response(result.model_dump(mode="json"))

    async def undo(self, request: web.Request, actor: Actor) -> web.Response:
        await self._body(request, EmptyBody)
        result = await self._commands.undo(self._task_id(request), actor)
        return web.json_response(result.model_dump(mode="json"))

    async def retry(self, request: web.Request, actor: Actor) -> web.Response:
        await self._body(request, EmptyBody)
        result = await self._commands.retry(self._task_id(request), actor)
        return web.json_response(result.model_dump(mode="json"))

    async def run(self, request: web.Request, actor: Actor) -> web.Response:
        body = await self._body(request, RunBody)
        task = await self._commands.run_playbook(request.match_info["id"], body.args, actor)
        return web.json_response({"task": task.model_dump(mode="json", exclude={"proposal"})}, status=202)

    async def replay(self, request: web.Request, actor: Actor) -> web.Response:
        body = await self._body(request, ReplayBody, REPLAY_BODY_BYTES)
        results = await self._commands.replay(body.files, actor, task_ids=body.task_ids, last=body.last)
        return web.json_response({"results": [r.model_dump(mode="json") for r in results]})

    async def pause(self, request: web.Request, actor: Actor) -> web.Response:
        body = await self._body(request, PauseBody)
        status = await self._commands.pause(actor, body.reason)
        return web.json_response(status.model_dump(mode="json"))

    async def resume(self, request: web.Request, actor: Actor) -> web.Response:
        await self._body(request, EmptyBody)
        status = await self._commands.resume(actor)
        return web.json_response(status.model_dump(mode="json"))

    async def audit_verify(self, request: web.Request, actor: Actor) -> web.Response:
        """``?expect_head=SEQ:HASH``: a record known from outside the store must still be there."""
        anchor = request[PARAMS].get("expect_head")
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
        params = request[PARAMS]
        since = params.get("since") or parse_since("24h", self._commands.core.clock())
        report = await self._commands.unmatched_signals(since=since, limit=params["limit"])
        return web.json_response(report.model_dump(mode="json"))

    async def shadow_report(self, request: web.Request, actor: Actor) -> web.Response:
        days = request[PARAMS]["days"]
        rows = await self._commands.shadow_report(days)
        return web.json_response({"days": days, "playbooks": [r.to_json() for r in rows],
                                  "text": report_text(rows, days)})

    async def shadow_set(self, request: web.Request, actor: Actor) -> web.Response:
        body = await self._body(request, ShadowBody)
        playbook_id = request.match_info["id"]
        await self._commands.set_shadow(playbook_id, body.on, actor)
        return web.json_response({"playbook": playbook_id, "shadow": body.on})

    async def digest(self, request: web.Request, actor: Actor) -> web.Response:
        """The digest of ``date`` (a calendar day in ``digest.timezone``) or of the 24 hours to now."""
        digest = await self._commands.digest(day=request[PARAMS].get("date"))
        return web.json_response(digest.as_json())

    async def digest_chart(self, request: web.Request, actor: Actor) -> web.Response:
        digest = await self._commands.digest(day=request[PARAMS].get("date"), chart=True)
        return web.Response(body=digest.chart_png, content_type="image/png",
                            headers={"Content-Disposition": f'inline; filename="ooda-digest-{digest.day}.png"'})
