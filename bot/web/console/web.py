"""The web console at ``/ui``: server-rendered pages over the store, actions through the core commands.

Approve, reject, edit, undo, pause and resume call ``bot.chat.commands.Commands`` exactly as chat and
the API do, so the policy, separation of duties, quorum, the critical-risk phrase and the audit
trail are the same; the console only adds what a browser needs (sessions, CSRF, headers). A
person without any role (a viewer) reads everything and is shown no button; a form posted by one
anyway is refused 403 before it reaches a command.

Critical-risk approvals ask for more than chat does (step-up): the typed phrase the core checks,
and the approver's own API token again, so a browser left signed in cannot approve one.

Reads of a task and of the audit trail are audited (``console.read``), as the API audits its
reads; the inbox and the live refreshes are not (they would add a record every few seconds).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import resources
from typing import Any
from urllib.parse import quote

import structlog
from aiohttp import web
from multidict import MultiDict, MultiDictProxy

from bot.audit.chain import AuditEntry, VerifyResult, verify_chain
from bot.chat.commands import RESUME_ROLES, Commands
from bot.chat.proposal_view import current_proposal
from bot.errors import ConfirmationRequired, Forbidden, StoreUnavailable, UnknownTask, UserError
from bot.model.proposals import Category, Proposal, RiskBand
from bot.model.steps import StepState
from bot.model.tasks import TaskState
from bot.playbooks.param_paths import param_at
from bot.policy.changewindows import active_freeze, next_opening
from bot.policy.identity import Actor, IdentityDirectory
from bot.policy.rules import autonomy_for, tier_of
from bot.store.protocol import Store, TaskOps
from bot.web.console import security, views
from bot.web.console.render import environment
from bot.web.console.sessions import Session, SessionStore, new_secret, same_secret
from bot.web.request_limits import InvalidParameter, QuerySpec, free_text, one_of, task_id_from_path

log = structlog.get_logger(__name__)

P = security.PREFIX
APPROVABLE = {TaskState.needs_approval, TaskState.escalated_to_human}
LIVE_INTERVAL_S = 3.0
AUDIT_PAGE = 100
STATIC_TYPES = {".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml", ".png": "image/png"}
FORM = web.RequestKey("console_form", MultiDictProxy[str])


def _task_filter(name: str, text: str) -> int:
    try:
        return task_id_from_path(text)
    except InvalidParameter:
        raise InvalidParameter(name, f"task must be a task id such as 12, got {text[:20]!r}") from None


def _seq(name: str, text: str) -> int:
    if not text.isdigit() or len(text) > 18:
        raise InvalidParameter(name, f"{name} must be an audit sequence number, got {text[:20]!r}")
    return int(text)


AUDIT_QUERY = QuerySpec({"task": _task_filter, "actor": free_text(200), "tool": free_text(200), "before": _seq,
                         "verify": free_text(1)})
LOGIN_QUERY = QuerySpec({"next": free_text(500)})
INBOX_QUERY = QuerySpec({"all": one_of("true", "false")})
INBOX_SHOWN = 50


@dataclass(frozen=True)
class Visit:
    """A signed-in request: the session and who it is."""

    session: Session
    actor: Actor
    kill_switch: bool = False  # read from the store once per request: pages show it in their header


Handler = Callable[[web.Request, Visit], Awaitable[web.StreamResponse]]


def _redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


class Console:
    def __init__(self, commands: Commands, identities: IdentityDirectory, store: Store, audit_key: bytes | None,
                 *, live_interval_s: float = LIVE_INTERVAL_S) -> None:
        self.commands = commands
        self.core = commands.core
        self.identities = identities
        self.store = store
        self.audit_key = audit_key
        self.live_interval_s = live_interval_s
        self.sessions = SessionStore(self.core.clock)
        self.templates = environment()
        self._static = self._load_static()
        self._verified: tuple[VerifyResult, datetime] | None = None

    # -- routing ---------------------------------------------------------------------------------

    def routes(self) -> list[web.RouteDef]:
        page, action = self._signed_in, self._signed_in
        return [
            web.get(P, self._public(self.root)),
            web.get(P + "/", self._public(self.root)),
            web.get(P + "/login", self._public(self.login_form)),
            web.post(P + "/login", self._public(self.login)),
            web.post(P + "/logout", action(self.logout)),
            web.get(P + "/inbox", page(self.inbox)),
            web.get(P + "/inbox/live", page(self.inbox_live, live=True)),
            web.get(P + "/tasks/{id}", page(self.task)),
            web.get(P + "/tasks/{id}/live", page(self.task_live, live=True)),
            web.post(P + "/tasks/{id}/approve", action(self.approve)),
            web.post(P + "/tasks/{id}/reject", action(self.reject)),
            web.post(P + "/tasks/{id}/undo", action(self.undo)),
            web.get(P + "/audit", page(self.audit)),
            web.get(P + "/playbooks", page(self.playbooks)),
            web.get(P + "/policy", page(self.policy)),
            web.post(P + "/pause", action(self.pause)),
            web.post(P + "/resume", action(self.resume)),
            web.get(P + "/digest", page(self.digest)),
            web.get(P + "/digest/chart.png", page(self.digest_chart)),
            web.get(P + "/static/{name}", self._public(self.static)),
            web.route("*", P + "/{tail:.*}", self._public(self.not_found)),
        ]

    def _public(self, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> Any:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            try:
                if request.method == "POST":
                    request[FORM] = await self._form(request)
                response = await handler(request)
            except UserError as exc:
                response = self._error(None, exc.status, str(exc))
            except StoreUnavailable as exc:
                log.warning("console.store_unavailable", path=request.path, error=str(exc))
                response = self._error(None, 503, f"The store cannot answer right now ({exc}); try again shortly.")
            return security.protect(response)

        return wrapped

    def _signed_in(self, handler: Handler, *, live: bool = False) -> Any:
        """Pages and actions for a signed-in person; POSTs need the session's CSRF token."""

        async def wrapped(request: web.Request) -> web.StreamResponse:
            session = self.sessions.get(request.cookies.get(security.SESSION_COOKIE))
            actor = self.identities.by_id(session.identity, via="console") if session else None
            if session is None or actor is None:
                if session is not None:
                    self.sessions.end(session.id)  # the identity left the config
                if request.method == "GET" and not live:
                    return security.protect(_redirect(f"{P}/login?next={quote(request.path_qs, safe='')}"))
                return security.protect(self._error(None, 401, "You are signed out; sign in again.",
                                                    fragment=live))
            visit = Visit(session, actor, await self.core.load_kill_switch())
            structlog.contextvars.bind_contextvars(actor=actor.id)
            try:
                if request.method == "POST":
                    request[FORM] = await self._form(request)
                    self._check_csrf(request, session.csrf)
                    if not actor.roles:
                        await self._refuse_roleless(request, actor)
                response = await handler(request, visit)
            except InvalidParameter as exc:
                response = self._error(visit, 400, str(exc))
            except UserError as exc:
                log.info("console.refused", path=request.path, status=exc.status, reason=str(exc))
                response = self._error(visit, exc.status, str(exc))
            except StoreUnavailable as exc:
                log.warning("console.store_unavailable", path=request.path, error=str(exc))
                response = self._error(visit, 503, f"The store cannot answer right now ({exc}); try again shortly.")
            return security.protect(response)

        return wrapped

    async def _form(self, request: web.Request) -> MultiDictProxy[str]:
        if (request.content_length or 0) > security.FORM_BYTES:
            raise UserError(f"the form is larger than {security.FORM_BYTES // 1024} KiB")
        if request.content_type not in {"application/x-www-form-urlencoded", "multipart/form-data"}:
            raise UserError(f"the console takes HTML forms (application/x-www-form-urlencoded), not "
                            f"{request.content_type or 'a body without a Content-Type'}")
        form = await request.post()
        return MultiDictProxy(MultiDict((k, v) for k, v in form.items() if isinstance(v, str)))

    async def _refuse_roleless(self, request: web.Request, actor: Actor) -> None:
        """A person without any role posted a form no page showed them: refused before any command,
        and, for a task, written to its audit trail as the core writes its own policy refusals."""
        refusal = Forbidden(f"{actor.display} has no role in Ooda's config, so can read but not act")
        if "id" in request.match_info:
            task_id = task_id_from_path(request.match_info["id"])
            if await self.store.get_task(task_id) is not None:
                entry = AuditEntry(actor.id, "command.refused", task_id,
                                   {"command": request.path.rsplit("/", 1)[-1], "reason": str(refusal),
                                    "via": "console"})

                async def unit(t: TaskOps) -> None:
                    t.audit(entry)

                await self.store.transact(unit)
        raise refusal

    @staticmethod
    def _check_csrf(request: web.Request, expected: str) -> None:
        if not security.same_origin(request) or not same_secret(expected, request[FORM].get("csrf")):
            log.warning("console.csrf_refused", path=request.path, origin=request.headers.get("Origin"))
            raise Forbidden("This form was not sent from this console page (its security token is missing or old); "
                            "reload the page and try again.")

    # -- rendering -------------------------------------------------------------------------------

    def _render(self, name: str, visit: Visit | None, *, status: int = 200, **context: Any) -> web.Response:
        full_page = not name.startswith("_")
        html = self.templates.get_template(name).render(
            visit=visit, actor=visit.actor if visit else None, csrf=visit.session.csrf if visit else "",
            flash=visit.session.take_flash() if visit and full_page else [],
            kill_switch=visit.kill_switch if visit else False,
            now=self.core.clock(), live_s=self.live_interval_s, P=P, page=name.removesuffix(".html"), **context)
        return web.Response(text=html, status=status, content_type="text/html", charset="utf-8",
                            headers={"Cache-Control": "no-store"})

    def _error(self, visit: Visit | None, status: int, message: str, *, fragment: bool = False) -> web.Response:
        return self._render("_error.html" if fragment else "error.html", visit, status=status, status_code=status,
                            message=message)

    async def _audit_read(self, visit: Visit, path: str, task_id: int | None, params: dict[str, Any]) -> None:
        entry = AuditEntry(visit.actor.id, "console.read", task_id, {"path": path, "params": params, "via": "console"})

        async def unit(t: TaskOps) -> None:
            t.audit(entry)

        await self.store.transact(unit)

    # -- sign-in ---------------------------------------------------------------------------------

    async def root(self, request: web.Request) -> web.StreamResponse:
        return _redirect(P + "/inbox")

    async def login_form(self, request: web.Request, *, status: int = 200, error: str = "") -> web.StreamResponse:
        params = LOGIN_QUERY.parse(request.query) if request.method == "GET" else {}
        target = security.safe_next(params.get("next") or (request.get(FORM) or {}).get("next"))
        if request.method == "GET" and self.sessions.get(request.cookies.get(security.SESSION_COOKIE)):
            return _redirect(target)
        token = new_secret()
        response = self._render("login.html", None, status=status, signin_csrf=token, next=target, error=error)
        security.set_cookie(response, request, security.SIGNIN_COOKIE, token, security.SIGNIN_TTL)
        return response

    async def login(self, request: web.Request) -> web.StreamResponse:
        form = request[FORM]
        if not security.same_origin(request) or not same_secret(request.cookies.get(security.SIGNIN_COOKIE, ""),
                                                                form.get("csrf")):
            log.warning("console.sign_in_csrf_refused", origin=request.headers.get("Origin"))
            return await self.login_form(request, status=403, error="The sign-in form was old or not from this "
                                                                     "console; it has been reloaded, try again.")
        actor = self.identities.from_token(form.get("token", "").strip())
        if actor is None:
            log.warning("console.sign_in_refused", had_token=bool(form.get("token")))
            return await self.login_form(request, status=401, error="That token belongs to no identity in Ooda's "
                                         "config (identities[].api_token_env). Paste the API token you use for the "
                                         "CLI (OODA_API_TOKEN).")
        session = self.sessions.create(actor.id)

        async def unit(t: TaskOps) -> None:
            t.audit(AuditEntry(actor.id, "console.sign_in", None,
                               {"via": "console", "expires_at": session.expires_at.isoformat()}))

        await self.store.transact(unit)
        log.info("console.signed_in", actor=actor.id)
        response = _redirect(security.safe_next(form.get("next")))
        security.set_cookie(response, request, security.SESSION_COOKIE, session.id, self.sessions.ttl)
        security.clear_cookie(response, request, security.SIGNIN_COOKIE)
        return response

    async def logout(self, request: web.Request, visit: Visit) -> web.StreamResponse:
        self.sessions.end(visit.session.id)

        async def unit(t: TaskOps) -> None:
            t.audit(AuditEntry(visit.actor.id, "console.sign_out", None, {"via": "console"}))

        await self.store.transact(unit)
        response = _redirect(P + "/login")
        security.clear_cookie(response, request, security.SESSION_COOKIE)
        return response

    # -- inbox -----------------------------------------------------------------------------------

    async def inbox(self, request: web.Request, visit: Visit) -> web.StreamResponse:
        return await self._inbox(request, visit, "inbox.html")

    async def inbox_live(self, request: web.Request, visit: Visit) -> web.StreamResponse:
        return await self._inbox(request, visit, "_inbox_body.html")

    async def _inbox(self, request: web.Request, visit: Visit, template: str) -> web.StreamResponse:
        # The riskiest INBOX_SHOWN by default: a person works from the top, and the page stays
        # quick to refresh every few seconds even when hundreds wait (``?all=true`` lists them all).
        show_all = INBOX_QUERY.parse(request.query).get("all") == "true"
        waiting, total, busy = await views.inbox(self.core, views.INBOX_LIMIT if show_all else INBOX_SHOWN)
        return self._render(template, visit, waiting=waiting, waiting_total=total, busy=busy, show_all=show_all,
                            limit=views.INBOX_LIMIT)

    # -- task ------------------------------------------------------------------------------------

    async def _timeline(self, request: web.Request) -> views.Timeline:
        task_id = task_id_from_path(request.match_info["id"])
        task = await self.store.get_task(task_id)
        if task is None:
            raise UnknownTask(f"there is no task {task_id}; the inbox lists the open ones")
        return await views.timeline(self.store, self.core, task, await current_proposal(self.store, task))

    def _task_context(self, visit: Visit, line: views.Timeline) -> dict[str, Any]:
        proposal, task, actor = line.proposal, line.task, visit.actor
        approver = actor.has_any(proposal.approver_roles)
        return {
            "line": line, "proposal": proposal, "task": task,
            "can_approve": task.state in APPROVABLE and approver and any(
                s.decision.verdict == "needs_approval" and s.state in {StepState.pending, StepState.denied}
                for s in proposal.steps),
            "can_reject": task.state in APPROVABLE | {TaskState.queued} and bool(actor.roles)
                          and (approver or actor.id == task.requester or not proposal.approver_roles),
            "can_undo": proposal.can_undo and actor.has_any(set(proposal.approver_roles) | RESUME_ROLES),
            "editable": self._editable(proposal),
            "critical": proposal.risk.band is RiskBand.critical,
            "phrase": f"approve {task.id}",
            "tiers": {s.name: tier_of(self.core.policy, Category(s.category), proposal.risk.band)
                      for s in proposal.steps},
            "live": task.state.is_open,
        }

    @staticmethod
    def _editable(proposal: Proposal) -> list[dict[str, Any]]:
        """The fields of the edit form: pending steps' editable params with their bounds and values.
        Offered only before anyone approved (the core refuses an edit after that)."""
        if proposal.approvals:
            return []
        fields = []
        for step in proposal.steps:
            if step.state is not StepState.pending:
                continue
            for name, bound in step.editable.items():
                value = param_at(step.params, name)
                if isinstance(value, bool):
                    shown = "true" if value else "false"
                else:
                    shown = "" if value is None else str(value)
                fields.append({"step": step.name, "name": name, "bound": bound, "value": shown,
                               "field": f"edit:{step.name}:{name}"})
        return fields

    async def task(self, request: web.Request, visit: Visit, *, status: int = 200, error: str = "",
                   phrase_needed: bool = False) -> web.StreamResponse:
        line = await self._timeline(request)
        if request.method == "GET":
            await self._audit_read(visit, request.path, line.task.id, {})
        return self._render("task.html", visit, status=status, error=error, phrase_needed=phrase_needed,
                            **self._task_context(visit, line))

    async def task_live(self, request: web.Request, visit: Visit) -> web.StreamResponse:
        line = await self._timeline(request)
        return self._render("_task_body.html", visit, **self._task_context(visit, line))

    async def _act(self, request: web.Request, visit: Visit,
                   command: Callable[[int], Awaitable[Any]]) -> web.StreamResponse:
        task_id = task_id_from_path(request.match_info["id"])
        try:
            result = await command(task_id)
        except ConfirmationRequired as exc:
            return await self.task(request, visit, status=exc.status, error=str(exc), phrase_needed=True)
        except UserError as exc:
            if exc.status == 404:
                raise
            log.info("console.refused", path=request.path, status=exc.status, reason=str(exc))
            return await self.task(request, visit, status=exc.status, error=str(exc))
        visit.session.flash.append(result.message)
        return _redirect(f"{P}/tasks/{task_id}")

    async def approve(self, request: web.Request, visit: Visit) -> web.StreamResponse:
        form = request[FORM]

        async def command(task_id: int) -> Any:
            proposal = await self.commands.show(task_id)
            if proposal.risk.band is RiskBand.critical:
                self._step_up(visit, form.get("token", ""))
            return await self.commands.approve(task_id, visit.actor, edits=self._edits(proposal, form) or None,
                                               confirmation=form.get("confirmation") or None)

        return await self._act(request, visit, command)

    def _step_up(self, visit: Visit, token: str) -> None:
        again = self.identities.from_token(token.strip()) if token.strip() else None
        if again is None or again.id != visit.actor.id:
            log.warning("console.step_up_refused", actor=visit.actor.id, had_token=bool(token.strip()))
            raise Forbidden("a critical-risk approval needs your own API token again (step-up): "
                            "paste it into the token field of the approval form")

    def _edits(self, proposal: Proposal, form: MultiDictProxy[str]) -> dict[str, dict[str, Any]]:
        """The fields the approver changed, as the core's edits (it checks them against the bounds)."""
        edits: dict[str, dict[str, Any]] = {}
        for entry in self._editable(proposal):
            given = form.get(entry["field"])
            if given is not None and given.strip() != entry["value"]:
                edits.setdefault(entry["step"], {})[entry["name"]] = given.strip()
        unknown = [k for k in form if k.startswith("edit:") and k not in {e["field"] for e in self._editable(proposal)}]
        if unknown:
            raise UserError(f"{unknown[0][5:]} cannot be edited now: only the bounded params of steps still waiting, "
                            "before anyone approved")
        return edits

    async def reject(self, request: web.Request, visit: Visit) -> web.StreamResponse:
        reason = request[FORM].get("reason", "")
        if len(reason) > 2000:
            raise UserError("the reason is longer than 2,000 characters; the short version is what people read")
        return await self._act(request, visit, lambda task_id: self.commands.reject(task_id, visit.actor, reason))

    async def undo(self, request: web.Request, visit: Visit) -> web.StreamResponse:
        return await self._act(request, visit, lambda task_id: self.commands.undo(task_id, visit.actor))

    # -- audit -----------------------------------------------------------------------------------

    async def audit(self, request: web.Request, visit: Visit) -> web.StreamResponse:
        # The filter form sends its empty fields too: an empty filter is no filter.
        params = AUDIT_QUERY.parse(MultiDict((k, v) for k, v in request.query.items() if v != ""))
        filters = {k: params.get(k) for k in ("task", "actor", "tool")}
        rows = await self.store.audit_page(task_id=filters["task"], actor=filters["actor"], tool=filters["tool"],
                                           before_seq=params.get("before"), limit=AUDIT_PAGE)
        records = [views.audit_record(r) for r in rows]
        if params.get("verify"):
            chain = [row async for row in self.store.audit_rows()]
            result = await asyncio.to_thread(verify_chain, chain, self.audit_key, None)
            self._verified = (result, self.core.clock())
            log.info("console.audit_verified", ok=result.ok, checked=result.checked, actor=visit.actor.id)
        await self._audit_read(visit, request.path, filters["task"],
                               {k: v for k, v in params.items() if v is not None})
        older = records[-1]["seq"] if len(records) == AUDIT_PAGE else None
        return self._render("audit.html", visit, records=records, filters=filters, head=await self.store.audit_head(),
                            verified=self._verified, older=older, keyed=self.audit_key is not None)

    # -- playbooks and policy --------------------------------------------------------------------

    async def playbooks(self, request: web.Request, visit: Visit) -> web.StreamResponse:
        outcomes = await self.store.task_outcomes_by_playbook()
        rows = []
        for playbook in self.core.playbooks:
            rows.append({"playbook": playbook, "runs": await views.recent_runs(self.store, playbook.id),
                         "outcomes": outcomes.get(playbook.id, {}),
                         "extra_triggers": self.core.settings.triggers.get(playbook.id, [])})
        return self._render("playbooks.html", visit, rows=rows)

    async def policy(self, request: web.Request, visit: Visit) -> web.StreamResponse:
        policy, now = self.core.policy, self.core.clock()
        environments = sorted({*policy.environments, self.core.environment})
        autonomy = [{"playbook": p, "levels": [autonomy_for(policy, environment=env, playbook_id=p.id,
                                                            playbook_cap=p.autonomy_cap,
                                                            kill_switch=visit.kill_switch)
                                               for env in environments]}
                    for p in self.core.playbooks]
        windows = [{"window": w, "open": w.is_open(now)} for w in policy.change_windows]
        next_open = {env: next_opening(policy.change_windows, env, now) for env in environments}
        freezes = [{"freeze": f, "active": f.is_active(now)} for f in policy.freezes]
        limits = []
        for kind, table in (("tool", policy.rate_limits.tools), ("playbook", policy.rate_limits.playbooks)):
            for name, limit in table.items():
                since = (now - timedelta(seconds=limit.per_s)).isoformat()
                used, _ = await (self.store.tool_runs_since(name, since) if kind == "tool"
                                 else self.store.playbook_runs_since(name, since))
                limits.append({"kind": kind, "name": name, "limit": limit, "used": used})
        setting = await self.store.get_setting("kill_switch")
        return self._render(
            "policy.html", visit, policy=policy, environments=environments, autonomy=autonomy, windows=windows,
            next_open=next_open, freezes=freezes, limits=limits, kill=setting,
            frozen={env: active_freeze(policy.freezes, env, now) for env in environments},
            can_pause=visit.actor.has_any(RESUME_ROLES))

    async def pause(self, request: web.Request, visit: Visit) -> web.StreamResponse:
        self._admin(visit, "pause")
        reason = request[FORM].get("reason", "")[:500]
        await self.commands.pause(visit.actor, reason)
        visit.session.flash.append(f"Paused by {visit.actor.display}: no write runs anywhere until someone resumes.")
        return _redirect(P + "/policy")

    async def resume(self, request: web.Request, visit: Visit) -> web.StreamResponse:
        self._admin(visit, "resume")
        await self.commands.resume(visit.actor)
        visit.session.flash.append(f"Resumed by {visit.actor.display}.")
        return _redirect(P + "/policy")

    @staticmethod
    def _admin(visit: Visit, what: str) -> None:
        # Chat lets anyone with a role pull the kill switch; the console keeps both levers to the
        # roles that may release it, so a browser tab left open is not a way to stop everything.
        if not visit.actor.has_any(RESUME_ROLES):
            raise Forbidden(f"{what} from the console needs the role admin or operator; {visit.actor.display} has "
                            f"{', '.join(sorted(visit.actor.roles)) or 'none'}")

    # -- digest ----------------------------------------------------------------------------------

    async def digest(self, request: web.Request, visit: Visit) -> web.StreamResponse:
        return self._render("digest.html", visit, digest=await self.commands.digest(),
                            chart=self.core.settings.digest.chart)

    async def digest_chart(self, request: web.Request, visit: Visit) -> web.StreamResponse:
        """The digest's 7-day chart, drawn now (matplotlib off the event loop)."""
        digest = await self.commands.digest(chart=True)
        return web.Response(body=digest.chart_png, content_type="image/png", headers={"Cache-Control": "no-store"})

    # -- static files and the rest ---------------------------------------------------------------

    @staticmethod
    def _load_static() -> dict[str, tuple[bytes, str, str]]:
        files = {}
        for entry in (resources.files("bot.web.console") / "static").iterdir():
            suffix = "." + entry.name.rsplit(".", 1)[-1]
            if entry.is_file() and suffix in STATIC_TYPES:
                body = entry.read_bytes()
                files[entry.name] = (body, STATIC_TYPES[suffix], hashlib.sha256(body).hexdigest()[:16])
        return files

    async def static(self, request: web.Request) -> web.StreamResponse:
        found = self._static.get(request.match_info["name"])
        if found is None:
            return self._error(None, 404, "There is no such file in the console.")
        body, content_type, etag = found
        if request.headers.get("If-None-Match") == f'"{etag}"':
            return web.Response(status=304, headers={"ETag": f'"{etag}"'})
        return web.Response(body=body, content_type=content_type,
                            headers={"ETag": f'"{etag}"', "Cache-Control": "no-cache"})

    async def not_found(self, request: web.Request) -> web.StreamResponse:
        if request.method not in {"GET", "HEAD"}:
            return self._error(None, 405, f"{request.path} does not take {request.method}.")
        return self._error(None, 404, f"There is no console page {request.path}; start at the inbox.")
