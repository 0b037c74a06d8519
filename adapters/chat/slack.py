"""The Slack chat surface: slack-bolt's AsyncApp in Socket Mode or HTTP mode.

Socket Mode when an app token is configured and present (no public URL needed); otherwise HTTP
mode, mounted on Ooda's own aiohttp server at ``/slack/events`` with bolt's request signature
verification (a bad or stale signature gets 401 and nothing is processed).

Every click, modal and ``/ops`` ends in ``bot.chat.commands.Commands``: the core authorizes, the surface
only renders. Listeners ack first and then work, so Slack's 3-second rule holds however slow the
core is. The clicker gets the result or the refusal as an ephemeral message worded by
``bot.chat.wording``, and the clicked message is edited at once so its buttons match the task. The
who-did-what note in the message's thread is not written here: the core's notifier updates every
surface on each task event and writes that note, so a click done on Slack, on Discord, in the CLI
or by the API leaves exactly one note.

User-group membership (for roles granted to a Slack user group) comes from
``usergroups.list(include_users=true)`` cached for ``user_group_cache_s``: one call a minute
instead of one per click, and a failed refresh keeps the last known membership rather than
granting anything new. Disable with ``lookup_user_groups: false`` when the app lacks the
``usergroups:read`` scope; roles then come from user ids only.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar

import structlog
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from adapters.chat import slack_blocks as kit
from adapters.chat.slack_config import ChannelPacer, SlackConfig, SlackDeliveryError, delivery_error
from adapters.chat.slack_digest import CHART_FILENAME, digest_message
from adapters.chat.slack_payloads import payload_problem
from bot.audit.redaction import register_secret
from bot.chat import wording
from bot.chat.chatops import bind_chat_request, bound_correlation_id, parse_ops, run_ops
from bot.chat.commands import ActionResult, Commands
from bot.chat.digest_text import Digest
from bot.chat.routing import route_channel
from bot.errors import ConfigError, ConfirmationRequired, UserError
from bot.metrics import Metrics
from bot.model.proposals import MessageRef, Proposal
from bot.policy.identity import Actor, IdentityDirectory

log = structlog.get_logger(__name__)

INTERACTIVE = frozenset({"block_actions", "view_submission"})
SEEN_EVENTS = 2048  # event ids remembered for retry dedup; Slack retries within minutes
# Where HTTP mode hands the HTTP request's correlation id to the bolt middleware that binds it.
CORRELATION_KEY = "ooda_correlation_id"


def _from_env(env: Mapping[str, str], name: str | None) -> str | None:
    """The variable's value only if it is really set.

    Not ``env.get``: in ``environment: dev`` the composition root's env invents a random value for
    any unset variable, which would turn on Socket Mode with a made-up app token (and an HTTP-mode
    setup could never work). These are Slack's credentials, so they also go to the log redactor.
    """
    value = env[name].strip() if name and name in env else ""
    register_secret(value)
    return value or None


class SlackSurface:
    name: ClassVar[str] = "slack"

    def __init__(
        self,
        config: SlackConfig,
        *,
        commands: Commands,
        identities: IdentityDirectory,
        env: Mapping[str, str],
        metrics: Metrics | None = None,
        monotonic: Callable[[], float] | None = None,
    ) -> None:
        self.config = config
        self.commands = commands
        self.identities = identities
        self.metrics = metrics
        token = _from_env(env, config.bot_token_env)
        if not token:
            raise ConfigError(f"chat.slack: the bot token is missing; set the environment variable "
                              f"{config.bot_token_env} to the app's xoxb- token.")
        self._app_token = _from_env(env, config.app_token_env)
        secret = _from_env(env, config.signing_secret_env)
        if not self._app_token and not secret:
            raise ConfigError(
                f"chat.slack: set {config.app_token_env or 'an app token variable'} (Socket Mode, no public URL) "
                f"or {config.signing_secret_env or 'a signing secret variable'} (HTTP mode at /slack/events)."
            )
        self.mode = "socket" if self._app_token else "http"
        # Socket Mode has no signing secret (its WebSocket is authenticated by the app token).
        self._verifier = SignatureVerifier(secret) if secret else None
        self.client = AsyncWebClient(
            token=token,
            base_url=config.api_base_url or AsyncWebClient.BASE_URL,
            retry_handlers=[
                AsyncConnectionErrorRetryHandler(max_retry_count=config.api_retries),
                AsyncRateLimitErrorRetryHandler(max_retry_count=config.api_retries),
                AsyncServerErrorRetryHandler(max_retry_count=config.api_retries),
            ],
        )
        self.app = AsyncApp(
            client=self.client,
            signing_secret=secret or "",
            # Socket Mode frames are not signed; the WebSocket itself is authenticated by the app token.
            request_verification_enabled=self.mode == "http",
            logger=logging.getLogger("slack_bolt.ooda"),
            name="ooda",
        )
        self.pacer = ChannelPacer(config.send_interval_s, clock=monotonic)
        self._seen_events: OrderedDict[str, None] = OrderedDict()
        self._groups: dict[str, list[str]] = {}  # user id -> group ids
        self._groups_at: float | None = None
        self._groups_lock = asyncio.Lock()
        self._monotonic = monotonic
        self._handler: AsyncSocketModeHandler | None = None
        self._connector: asyncio.Task[None] | None = None
        self._started = False
        self._register()

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        if self.mode == "socket":
            assert self._app_token is not None
            self._handler = AsyncSocketModeHandler(self.app, self._app_token, web_client=self.client)
            try:
                await self._handler.connect_async()
                log.info("slack.connected", mode="socket")
            except Exception as exc:  # Slack down at boot must not stop Ooda; keep trying in the background
                log.warning("slack.connect_failed", error=type(exc).__name__)
                self._connector = asyncio.create_task(self._reconnect_forever())
        else:
            log.info("slack.ready", mode="http", path="/slack/events")

    async def _reconnect_forever(self) -> None:
        delay = 1.0
        while True:
            await asyncio.sleep(delay + random.uniform(0, delay / 2))
            try:
                assert self._handler is not None
                await self._handler.connect_async()
                log.info("slack.connected", mode="socket")
                return
            except Exception as exc:
                delay = min(delay * 2, 60.0)
                log.warning("slack.connect_failed", error=type(exc).__name__, retry_in_s=delay)

    async def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        if self._connector is not None:
            self._connector.cancel()
            await asyncio.gather(self._connector, return_exceptions=True)
            self._connector = None
        if self._handler is not None:
            await self._handler.close_async()
            self._handler = None

    def web_routes(self) -> list[web.RouteDef]:
        """Routes to mount on the main aiohttp server (HTTP mode only; Socket Mode needs none)."""
        return [web.post("/slack/events", self._http)] if self.mode == "http" else []

    async def _http(self, request: web.Request) -> web.Response:
        # The signature first (bolt checks it again), then the shape bolt assumes: see
        # adapters/chat/slack_payloads.py for the signed payloads that would otherwise answer 500.
        body = await request.text()
        timestamp = request.headers.get("X-Slack-Request-Timestamp", "")
        signature = request.headers.get("X-Slack-Signature", "")
        if (self._verifier is None or not timestamp.isascii() or not timestamp.isdigit()
                or not self._verifier.is_valid(body, timestamp, signature)):
            return web.json_response({"error": "unauthorized", "message": "the X-Slack-Signature header does not "
                                      "match this app's signing secret (or the timestamp is over 5 minutes old)"},
                                     status=401)
        problem = payload_problem(body, request.content_type)
        if problem is not None:
            log.warning("slack.payload_refused", problem=problem)
            return web.json_response({"error": "invalid_payload", "message": problem}, status=400)
        bolt_request = await to_bolt_request(request)
        # The server bound this request's id (the X-Request-Id it answers with); the listener
        # keeps it, so the HTTP log lines and the chat reply name the same id.
        bolt_request.context[CORRELATION_KEY] = structlog.contextvars.get_contextvars().get("correlation_id")
        bolt_response = await self.app.async_dispatch(bolt_request)
        return await to_aiohttp_response(bolt_response)

    # -- ChatSurface -------------------------------------------------------------------------
    def channel_for(self, proposal: Proposal) -> str:
        return route_channel(self.config.routes, proposal, self.config.default_channel)

    async def post_proposal(self, proposal: Proposal, channel: str | None) -> MessageRef:
        target = channel or self.channel_for(proposal)
        message = kit.proposal_message(proposal)
        response = await self._send("chat.postMessage", {"channel": target, **message})
        ts = str(response["ts"])
        log.info("slack.proposal_posted", task_id=proposal.task_id, channel=target)
        return MessageRef(surface=self.name, channel=str(response.get("channel") or target), message_id=ts,
                          thread_id=ts)

    async def update_proposal(self, ref: MessageRef, proposal: Proposal, note: str | None) -> None:
        await self._send("chat.update", {"channel": ref.channel, "ts": ref.message_id,
                                         **kit.proposal_message(proposal)})
        if note:
            await self._send("chat.postMessage", {
                "channel": ref.channel, "thread_ts": ref.thread_id or ref.message_id, "text": kit.escape(note)})

    async def post_notice(self, channel: str | None, text: str) -> None:
        target = channel or self.config.default_channel
        await self._send("chat.postMessage", {
            "channel": target, "text": wording.truncate(kit.escape(text), kit.FALLBACK_LIMIT)})

    async def post_digest(self, channel: str | None, digest: Digest) -> None:
        """The digest as blocks, then its chart uploaded beside it (``files_upload_v2``). A failed
        upload leaves the posted digest as it is and says so in a second message."""
        target = channel or self.config.default_channel
        with_chart = digest.chart_png is not None
        await self._send("chat.postMessage", {"channel": target, **digest_message(digest, with_chart=with_chart)})
        if digest.chart_png is None:
            return
        filename = CHART_FILENAME.format(day=digest.day.isoformat())
        try:
            async with self.pacer.slot(target):
                await self.client.files_upload_v2(channel=target, content=digest.chart_png, filename=filename,
                                                  title=digest.title, alt_txt="Ooda's 7-day chart: alerts, tasks by "
                                                  "outcome and time to resolution")
            self._count("sent")
        except Exception as exc:
            self._count("failed")
            error = delivery_error("files_upload_v2", target, exc)
            log.warning("slack.digest_chart_failed", channel=target, error=str(error))
            await self.post_notice(target, "The digest's chart could not be uploaded "
                                           f"({error.error}); the figures above are complete. "
                                           "`ooda digest --png FILE` draws the chart.")

    async def _send(self, method: str, args: dict[str, Any]) -> Any:
        """One paced Web API call."""
        async with self.pacer.slot(str(args["channel"])):
            return await self._call(method, args)

    async def _call(self, method: str, args: dict[str, Any]) -> Any:
        """One Web API call; vendor errors become ``SlackDeliveryError`` at this seam."""
        try:
            response = await self.client.api_call(method, json=args)
        except Exception as exc:
            self._count("failed")
            raise delivery_error(method, str(args["channel"]), exc) from exc
        self._count("sent")
        return response

    def _count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.chat_deliveries.labels(surface=self.name, outcome=outcome).inc()

    # -- who is acting -----------------------------------------------------------------------
    async def _actor(self, user_id: str, name: str | None) -> Actor:
        return self.identities.from_slack(user_id, await self._groups_of(user_id), name)

    async def _groups_of(self, user_id: str) -> list[str]:
        if not self.config.lookup_user_groups:
            return []
        clock = self._monotonic or asyncio.get_running_loop().time
        async with self._groups_lock:
            if self._groups_at is None or clock() - self._groups_at >= self.config.user_group_cache_s:
                try:
                    response = await self.client.usergroups_list(include_users=True)
                    membership: dict[str, list[str]] = {}
                    group: dict[str, Any]
                    member: str
                    for group in response.get("usergroups", []):
                        for member in group.get("users", []):
                            membership.setdefault(member, []).append(group["id"])
                    self._groups = membership
                except (SlackApiError, OSError, TimeoutError) as exc:
                    # Keep the last known membership: a Slack hiccup must neither grant nor drop roles.
                    log.warning("slack.usergroups_failed", error=type(exc).__name__)
                self._groups_at = clock()
        return self._groups.get(user_id, [])

    # -- listeners ---------------------------------------------------------------------------
    def _register(self) -> None:
        app = self.app
        app.middleware(self._bind_correlation)
        app.middleware(self._dedupe_events)
        last_resort = self._last_resort
        app.action(kit.ACTION_APPROVE)(last_resort(self._on_approve))
        app.action(kit.ACTION_REJECT)(last_resort(self._on_reject))
        app.action(kit.ACTION_EDIT)(last_resort(self._on_edit))
        app.action(kit.ACTION_DETAILS)(last_resort(self._on_details))
        app.action(kit.ACTION_UNDO)(last_resort(self._on_undo))
        app.action(kit.ACTION_RETRY)(last_resort(self._on_retry))
        app.view(kit.VIEW_REJECT)(last_resort(self._on_reject_submit))
        app.view(kit.VIEW_EDIT)(last_resort(self._on_edit_submit))
        app.view(kit.VIEW_CONFIRM)(last_resort(self._on_confirm_submit))
        app.command(self.config.command)(last_resort(self._on_command))
        app.event("app_mention")(last_resort(self._on_mention))

    async def _bind_correlation(self, context: dict[str, Any], next: Callable[[], Awaitable[None]]) -> None:
        # The entry point of every Slack request. Listeners run as tasks started inside next(),
        # and a task copies the context it starts in, so each one logs with this id.
        bind_chat_request(self.name, context.get(CORRELATION_KEY))
        await next()

    def _last_resort(self, listener: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
        """``listener``, with an exception it did not handle logged and told to the person.

        Without this bolt only logs it, and one raised right after ``ack()`` can even lose the
        ack (bolt's runner then reports the request unhandled). bolt passes arguments by the
        names ``listener`` declares (it unwraps the decorator), so ``kwargs`` are those.
        """

        @functools.wraps(listener)
        async def guarded(**kwargs: Any) -> None:
            try:
                await listener(**kwargs)
            except Exception as exc:
                await self._report_failure(exc, kwargs)

        return guarded

    async def _report_failure(self, exc: Exception, kwargs: dict[str, Any]) -> None:
        correlation_id = bound_correlation_id()  # the id the log line below carries
        log.error("slack.listener_failed", exc_info=exc)
        body: dict[str, Any] = kwargs.get("body") or kwargs.get("command") or kwargs.get("event") or {}
        user = body.get("user")
        user_id = user.get("id") if isinstance(user, dict) else (user or body.get("user_id"))
        channel = body.get("channel")
        channel_id = ((body.get("container") or {}).get("channel_id")
                      or (channel.get("id") if isinstance(channel, dict) else channel) or body.get("channel_id"))
        text = wording.internal_error(correlation_id)
        respond = kwargs.get("respond")
        try:
            if respond is not None:
                await respond(text=text, response_type="ephemeral")
            elif user_id:
                await self._ephemeral(channel_id, str(user_id), text)
        except Exception:  # the reply is a courtesy; the failure itself is logged above
            log.warning("slack.error_reply_failed", exc_info=True)

    async def _dedupe_events(self, body: dict[str, Any], next: Callable[[], Awaitable[None]]) -> BoltResponse | None:
        # Slack re-delivers an event it thinks we missed (X-Slack-Retry-Num, or retry_attempt in
        # Socket Mode) with the same event_id; answer 200 and do the work only once.
        event_id = body.get("event_id") if body.get("type") == "event_callback" else None
        if body.get("type") in INTERACTIVE and body.get("trigger_id"):
            # A click or form delivered again (a Socket Mode retry, a replayed request): trigger
            # ids are unique per interaction, so the same one is a duplicate, answered quietly.
            event_id = f"{body['type']}:{body['trigger_id']}"
        if event_id:
            if event_id in self._seen_events:
                log.info("slack.duplicate", event_id=event_id)
                return BoltResponse(status=200, body="")
            self._seen_events[event_id] = None
            if len(self._seen_events) > SEEN_EVENTS:
                self._seen_events.popitem(last=False)
        await next()
        return None

    async def _click(self, body: dict[str, Any]) -> tuple[Actor, int, str | None, str | None]:
        user = body["user"]
        actor = await self._actor(user["id"], user.get("username") or user.get("name"))
        container = body.get("container") or {}
        channel = container.get("channel_id") or (body.get("channel") or {}).get("id")
        return actor, int(body["actions"][0]["value"]), channel, container.get("message_ts")

    async def _on_approve(self, ack: Any, body: dict[str, Any]) -> None:
        await ack()
        actor, task_id, channel, ts = await self._click(body)
        with structlog.contextvars.bound_contextvars(task_id=task_id):
            try:
                result = await self.commands.approve(task_id, actor)
            except ConfirmationRequired as exc:
                # The core refuses before running anything, so the trigger_id is still fresh (3 s).
                ctx = kit.ModalContext(task_id=task_id, channel=channel, message_ts=ts, phrase=exc.phrase)
                await self._open_view(body["trigger_id"], kit.confirm_modal(ctx), channel, body["user"]["id"])
                return
            except Exception as exc:
                await self._refuse(exc, channel, body["user"]["id"])
                return
            await self._record(result, task_id, actor, "approve", channel, ts, body["user"]["id"])

    async def _on_undo(self, ack: Any, body: dict[str, Any]) -> None:
        await ack()
        actor, task_id, channel, ts = await self._click(body)
        await self._decide(lambda: self.commands.undo(task_id, actor), task_id, actor, "undo", channel, ts,
                           body["user"]["id"])

    async def _on_retry(self, ack: Any, body: dict[str, Any]) -> None:
        await ack()
        actor, task_id, channel, ts = await self._click(body)
        await self._decide(lambda: self.commands.retry(task_id, actor), task_id, actor, "retry", channel, ts,
                           body["user"]["id"])

    async def _on_reject(self, ack: Any, body: dict[str, Any]) -> None:
        await ack()
        actor, task_id, channel, ts = await self._click(body)
        try:
            await self.commands.may_reject(task_id, actor)  # told at once, not after typing a reason
        except Exception as exc:
            await self._refuse(exc, channel, body["user"]["id"])
            return
        ctx = kit.ModalContext(task_id=task_id, channel=channel, message_ts=ts)
        await self._open_view(body["trigger_id"], kit.reject_modal(ctx), channel, body["user"]["id"])

    async def _on_edit(self, ack: Any, body: dict[str, Any]) -> None:
        await ack()
        actor, task_id, channel, ts = await self._click(body)
        try:
            await self.commands.may_approve(task_id, actor)  # told at once, not after filling the form
            proposal = await self.commands.show(task_id)
        except Exception as exc:
            await self._refuse(exc, channel, body["user"]["id"])
            return
        phrase = f"approve {task_id}" if proposal.risk.band == "critical" else None
        ctx = kit.ModalContext(task_id=task_id, channel=channel, message_ts=ts, phrase=phrase)
        await self._open_view(body["trigger_id"], kit.edit_modal(proposal, ctx), channel, body["user"]["id"])

    async def _on_details(self, ack: Any, body: dict[str, Any]) -> None:
        await ack()
        _, task_id, channel, _ = await self._click(body)
        try:
            text = wording.proposal_text(await self.commands.show(task_id))
        except Exception as exc:
            await self._refuse(exc, channel, body["user"]["id"])
            return
        await self._ephemeral(channel, body["user"]["id"], text)

    async def _on_reject_submit(self, ack: Any, body: dict[str, Any], view: dict[str, Any]) -> None:
        ctx = kit.ModalContext.load(view["private_metadata"])
        reason = (kit.submitted_value(view["state"]["values"], kit.REASON_BLOCK) or "").strip()
        if not reason:
            await ack(response_action="errors", errors={kit.REASON_BLOCK: "Say why, for the audit log."})
            return
        await ack()
        actor = await self._actor(body["user"]["id"], body["user"].get("username"))
        await self._decide(lambda: self.commands.reject(ctx.task_id, actor, reason), ctx.task_id, actor,
                           "reject", ctx.channel, ctx.message_ts, body["user"]["id"])

    async def _on_confirm_submit(self, ack: Any, body: dict[str, Any], view: dict[str, Any]) -> None:
        ctx = kit.ModalContext.load(view["private_metadata"])
        typed = (kit.submitted_value(view["state"]["values"], kit.CONFIRM_BLOCK) or "").strip()
        if typed != ctx.phrase:
            await ack(response_action="errors", errors={kit.CONFIRM_BLOCK: f"Type exactly: {ctx.phrase}"})
            return
        await ack()
        actor = await self._actor(body["user"]["id"], body["user"].get("username"))
        await self._decide(lambda: self.commands.approve(ctx.task_id, actor, confirmation=typed), ctx.task_id,
                           actor, "approve_confirmed", ctx.channel, ctx.message_ts, body["user"]["id"])

    async def _on_edit_submit(self, ack: Any, body: dict[str, Any], view: dict[str, Any]) -> None:
        ctx = kit.ModalContext.load(view["private_metadata"])
        values = view["state"]["values"]
        try:
            # Validation needs the bounds, so this read happens before the ack: it must stay well under 3 s.
            proposal = await self.commands.show(ctx.task_id)
        except Exception as exc:
            await ack()
            await self._refuse(exc, ctx.channel, body["user"]["id"])
            return
        edits, errors = kit.read_edits(proposal, values)
        typed = (kit.submitted_value(values, kit.CONFIRM_BLOCK) or "").strip() or None
        if ctx.phrase and typed != ctx.phrase:
            errors[kit.CONFIRM_BLOCK] = f"Type exactly: {ctx.phrase}"
        if errors:
            await ack(response_action="errors", errors=errors)
            return
        await ack()
        actor = await self._actor(body["user"]["id"], body["user"].get("username"))

        async def approve() -> ActionResult:
            result = await self.commands.approve(ctx.task_id, actor, edits=edits or None, confirmation=typed)
            if not edits:
                return result
            # The clicker sees what they changed; the audit log keeps it as step.edited.
            changed = kit.describe_edits(proposal, edits)
            return result.model_copy(update={"message": f"{result.message} Edits: {changed}."})

        await self._decide(approve, ctx.task_id, actor, "approve_with_edits" if edits else "approve", ctx.channel,
                           ctx.message_ts, body["user"]["id"])

    async def _on_command(self, ack: Any, command: dict[str, Any], respond: Any) -> None:
        await ack()
        actor = await self._actor(command["user_id"], command.get("user_name"))
        reply = await run_ops(parse_ops(command.get("text", "")), self.commands, actor, prefix=self.config.command)
        text = wording.truncate(kit.escape(reply.text), kit.FALLBACK_LIMIT)
        if reply.public:
            text = f"{kit.escape(actor.display)}: `{kit.escape(command.get('text', ''))[:200]}`\n{text}"
        await respond(text=text, response_type="in_channel" if reply.public else "ephemeral")

    async def _on_mention(self, event: dict[str, Any]) -> None:
        await self._send("chat.postMessage", {
            "channel": event["channel"], "thread_ts": event.get("thread_ts") or event["ts"],
            "text": kit.escape(wording.help_text(self.config.command))})

    # -- shared steps of the listeners -------------------------------------------------------
    async def _decide(self, call: Callable[[], Awaitable[ActionResult]], task_id: int, actor: Actor, action: str,
                      channel: str | None, ts: str | None, user_id: str) -> None:
        with structlog.contextvars.bound_contextvars(task_id=task_id):
            try:
                result = await call()
            except Exception as exc:
                await self._refuse(exc, channel, user_id)
                return
            await self._record(result, task_id, actor, action, channel, ts, user_id)

    async def _record(self, result: ActionResult, task_id: int, actor: Actor, action: str,
                      channel: str | None, ts: str | None, user_id: str) -> None:
        """Tell the clicker what happened and edit the clicked message at once (no thread note: see the
        module docstring)."""
        log.info("slack.decided", task_id=task_id, actor=actor.id, action=action, executed=result.executed)
        await self._ephemeral(channel, user_id, wording.neutralize_mentions(result.message))
        if channel and ts:
            await self._edit_now(channel, ts, task_id)

    async def _edit_now(self, channel: str, ts: str, task_id: int) -> None:
        # Read the proposal inside the channel's send slot, where the notifier's edits queue too: this
        # edit then shows the state as of its sending, and any later change reaches the notifier as a
        # new event whose edit goes out after this one, so a stale state is never the last word.
        try:
            async with self.pacer.slot(channel):
                proposal = await self.commands.show(task_id)
                await self._call("chat.update", {"channel": channel, "ts": ts, **kit.proposal_message(proposal)})
        except Exception:
            log.exception("slack.update_failed", task_id=task_id)

    async def _refuse(self, exc: Exception, channel: str | None, user_id: str) -> None:
        if isinstance(exc, UserError):
            log.info("slack.refused", user=user_id, reason=str(exc))
            text = wording.refusal(exc)
        else:
            correlation_id = bound_correlation_id()  # the id this request's log lines, this one included, carry
            log.error("slack.listener_failed", exc_info=exc)
            text = wording.internal_error(correlation_id)
        await self._ephemeral(channel, user_id, text)

    async def _ephemeral(self, channel: str | None, user_id: str, text: str) -> None:
        if not channel:
            return
        try:
            await self._send("chat.postEphemeral", {
                "channel": channel, "user": user_id, "text": wording.truncate(kit.escape(text), kit.FALLBACK_LIMIT)})
        except SlackDeliveryError:
            log.warning("slack.ephemeral_failed", channel=channel, user=user_id)

    async def _open_view(self, trigger_id: str, view: dict[str, Any], channel: str | None, user_id: str) -> None:
        try:
            await self.client.views_open(trigger_id=trigger_id, view=view)
        except SlackApiError as exc:
            # expired_trigger_id / exchanged_trigger_id: the 3 s window passed; tell the person to click again.
            log.warning("slack.views_open_failed", error=exc.response.get("error"))
            await self._ephemeral(channel, user_id, "Slack closed the form before it opened; click the button again.")

