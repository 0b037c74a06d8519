"""The Discord chat surface: proposals as embeds with buttons, and ``/ops`` as an app command group.

discord.py does the wire work: REST with per-route rate-limit buckets (it sleeps on a 429 using
``retry_after`` and retries 5xx), and a gateway that reconnects and resumes on its own. This module
runs the client in the background, posts and edits proposal messages, routes them to channels by
config, and translates Discord failures into ``DiscordUnavailable`` at the seam: the core then keeps
the proposal and posts it again later, so a failure here never loses one.

Intents: only ``guilds`` (a privileged intent is never needed): it fills the guild cache with roles,
which is how a member's role ids become Ooda roles. Buttons and app commands need no intent.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Annotated, Any, ClassVar

import aiohttp
import discord
import discord.gateway
import discord.http
import structlog
import yarl
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from adapters.chat.discord_digest import chart_file, digest_embed
from adapters.chat.discord_embeds import to_embed
from adapters.chat.discord_interactions import Interactions, ProposalButton, ops_group, to_view
from bot.chat import wording
from bot.chat.commands import Commands
from bot.chat.digest_text import Digest
from bot.chat.routing import RouteMatchers, route_channel
from bot.errors import ChatUnavailable, ConfigError
from bot.model.proposals import MessageRef, Proposal
from bot.policy.identity import IdentityDirectory

log = structlog.get_logger(__name__)

Snowflake = Annotated[str, StringConstraints(pattern=r"^\d{1,20}$")]
MESSAGE_MAX = 2000
GATEWAY_RETRY_S = 5.0  # a new leader whose gateway session failed to open tries again after this
THREAD_NAME_MAX = 100


class DiscordUnavailable(ChatUnavailable):
    """Discord did not take a message now (network, 5xx after retries, rate limit, missing access)."""


class DiscordRoute(RouteMatchers):
    """Send matching proposals to ``channel``; unset matchers match anything. First match wins."""

    channel: Snowflake


class DiscordConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bot_token_env: str = "DISCORD_BOT_TOKEN"
    application_id: Snowflake | None = None
    guild_ids: list[Snowflake] = Field(default_factory=list, description="app commands are synced to these guilds")
    sync_commands: bool = True
    default_channel: Snowflake
    routes: list[DiscordRoute] = Field(default_factory=list)
    roles: dict[str, list[str]] = Field(default_factory=dict, description="Discord role id -> Ooda roles")
    # For tests and proxies. These set class attributes of discord.py, so they apply to every
    # Discord client in the process, not only this surface's.
    api_base_url: str | None = None
    gateway_url: str | None = None
    ready_timeout_s: float = Field(default=30.0, gt=0)
    guild_ready_timeout_s: float = Field(default=2.0, ge=0)
    send_timeout_s: float = Field(default=60.0, gt=0)


class OodaClient(discord.Client):
    def __init__(self, config: DiscordConfig, interactions: Interactions, ready: asyncio.Event) -> None:
        intents = discord.Intents.none()
        intents.guilds = True
        super().__init__(
            intents=intents,
            # None is allowed (discord.py then learns the id at login); its annotation says int.
            application_id=int(config.application_id) if config.application_id else None,  # type: ignore[arg-type]
            guild_ready_timeout=config.guild_ready_timeout_s,
            allowed_mentions=discord.AllowedMentions.none(),
        )
        self.interactions = interactions
        self.tree = discord.app_commands.CommandTree(self)
        self._config = config
        self._ready_event = ready

    async def setup_hook(self) -> None:
        # Runs after login and before the gateway connects, so buttons on old messages work from
        # the first event on.
        self.add_dynamic_items(ProposalButton)
        guilds = [discord.Object(int(g)) for g in self._config.guild_ids]
        self.tree.add_command(ops_group(self.interactions.on_ops), guilds=guilds or discord.utils.MISSING)
        if self._config.sync_commands:
            for guild in guilds:
                await self.tree.sync(guild=guild)
                log.info("discord.commands_synced", guild_id=str(guild.id))

    async def on_ready(self) -> None:
        log.info("discord.ready", user_id=str(self.user.id) if self.user else None, guilds=len(self.guilds))
        self._ready_event.set()

    async def on_interaction(self, interaction: discord.Interaction) -> None:
        if interaction.type is discord.InteractionType.modal_submit:
            await self.interactions.on_modal(interaction)

    async def on_resumed(self) -> None:
        log.info("discord.resumed")


class DiscordSurface:
    """**ChatSurface** on Discord. ``start()`` before use, ``stop()`` at shutdown (idempotent)."""

    name: ClassVar[str] = "discord"

    def __init__(self, config: DiscordConfig, *, commands: Commands, identities: IdentityDirectory,
                 env: Mapping[str, str]) -> None:
        self.config = config
        self._env = env
        self._interactions = Interactions(self, commands, identities)
        self._client: OodaClient | None = None
        self._runner: asyncio.Task[None] | None = None  # the gateway session, while open
        self._ready = asyncio.Event()
        self._gateway_lock = asyncio.Lock()  # one change of role at a time
        self._leading = False
        # One lock per message being edited; entries vanish when no edit holds them.
        self._edit_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self, *, gateway: bool = True) -> None:
        """Log in (from here on proposals can be posted and edited over REST) and, unless
        ``gateway`` is False, open the gateway session and wait until it is ready.

        Replicas sharing a store pass ``gateway=False`` and open the session only while they lead
        (``follow_leadership``): Discord sends every event to every session of a bot, so two
        sessions would each handle every click and every /ops command.
        """
        token = self._token()
        if self.config.api_base_url:
            discord.http.Route.BASE = self.config.api_base_url.rstrip("/")
        if self.config.gateway_url:
            discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self.config.gateway_url)
        await self._log_in(token)
        if gateway:
            await self._open_gateway(token)

    def _token(self) -> str:
        token = self._env.get(self.config.bot_token_env, "").strip()
        if not token:
            raise ConfigError(
                f"Discord: environment variable {self.config.bot_token_env} is empty or not set. Put the bot "
                "token there (Developer Portal > your application > Bot > Reset Token)."
            )
        return token

    async def _log_in(self, token: str) -> None:
        self._ready = asyncio.Event()
        self._client = OodaClient(self.config, self._interactions, self._ready)
        try:
            async with asyncio.timeout(self.config.ready_timeout_s):
                await self._client.login(token)
        except discord.LoginFailure as failure:
            await self._close()
            raise ConfigError(f"Discord rejected the token in {self.config.bot_token_env}: {failure}. "
                              "Reset the bot token in the Developer Portal and update the variable.") from failure
        except (discord.DiscordException, aiohttp.ClientError, OSError, TimeoutError) as failure:
            await self._close()
            raise DiscordUnavailable(f"Discord login failed: {type(failure).__name__}: {failure}; check the "
                                     "network and discordstatus.com, then restart.") from failure

    async def _open_gateway(self, token: str) -> None:
        client = self._require_client()
        self._runner = asyncio.create_task(client.connect(reconnect=True), name="discord-gateway")
        waiter = asyncio.create_task(self._ready.wait())
        done, _ = await asyncio.wait({waiter, self._runner}, timeout=self.config.ready_timeout_s,
                                     return_when=asyncio.FIRST_COMPLETED)
        if waiter in done:
            return
        waiter.cancel()
        failure = self._runner.exception() if self._runner in done else None
        await self._close()
        if isinstance(failure, discord.PrivilegedIntentsRequired):
            raise ConfigError(str(failure)) from failure
        if failure is not None:
            raise DiscordUnavailable(f"Discord client stopped while starting: {type(failure).__name__}: "
                                     f"{failure}") from failure
        raise DiscordUnavailable(f"Discord did not become ready within {self.config.ready_timeout_s:g} s; "
                                 "check the network and discordstatus.com, then restart.")

    @property
    def gateway_open(self) -> bool:
        return self._runner is not None and not self._runner.done()

    async def follow_leadership(self, leading: bool) -> None:
        """Hold the gateway session while this process leads, and only then.

        Called on every change of role. Taking over retries until the session is ready or the
        role is lost again; handing over closes the client (discord.py cannot leave a gateway and
        stay logged in) and logs in again for REST, so proposals still post from this replica.
        """
        self._leading = leading  # the latest word wins: a change waiting for the lock reads it
        async with self._gateway_lock:
            token = self._token()
            if not self._leading:
                if self.gateway_open:
                    await self._close()
                    await self._log_in(token)
                    log.warning("discord.gateway_handed_over")
                return
            while self._leading and not self.gateway_open:
                try:
                    if self._client is None:
                        await self._log_in(token)
                    await self._open_gateway(token)
                    if not self._leading:  # stopped, or the role lost, while the session opened
                        await self._close()
                        return
                    log.warning("discord.gateway_taken_over")
                except DiscordUnavailable as exc:
                    log.error("discord.gateway_failed", error=str(exc), retry_in_s=GATEWAY_RETRY_S)
                    await asyncio.sleep(GATEWAY_RETRY_S)

    async def stop(self) -> None:
        self._leading = False  # a takeover still retrying ends here
        await self._close()

    async def _close(self) -> None:
        client, runner = self._client, self._runner
        self._client = self._runner = None
        if client is not None:
            await client.close()
        if runner is not None:
            try:
                await runner
            except Exception as exc:  # already reported by start(); stopping must not raise
                log.info("discord.client_ended", error=type(exc).__name__)

    # -- ChatSurface -----------------------------------------------------------------------------

    def route(self, proposal: Proposal) -> str:
        """The channel id for a proposal: the first matching route, else the default channel."""
        return route_channel(self.config.routes, proposal, self.config.default_channel)

    async def post_proposal(self, proposal: Proposal, channel: str | None = None) -> MessageRef:
        channel_id = channel or self.route(proposal)
        async with self._delivery("proposal", task_id=proposal.task_id, channel=channel_id):
            target = await self._channel(channel_id)
            view = to_view(proposal)
            message = await target.send(embed=to_embed(proposal), view=view)
            view.stop()  # buttons are dispatched by custom_id (DynamicItem), not by this view
        thread_id = await self._open_thread(message, proposal)
        log.info("discord.proposal_posted", task_id=proposal.task_id, channel=channel_id, message_id=str(message.id))
        return MessageRef(surface=self.name, channel=channel_id, message_id=str(message.id), thread_id=thread_id)

    async def update_proposal(self, ref: MessageRef, proposal: Proposal, note: str | None = None) -> None:
        async with self._edit_lock(ref.message_id):
            await self._edit(ref, proposal)
        if note:
            await self.post_note(ref, note)

    async def refresh_proposal(self, ref: MessageRef, current: Callable[[], Awaitable[Proposal]]) -> None:
        """Edit the message to show the proposal as ``current()`` reads it now.

        A click edits the message it was pressed on while the notifier may be editing the same
        message for a later state. Reading the proposal inside the message's edit lock makes the
        last edit show the latest state: an edit with a snapshot taken earlier could land after
        the notifier's final one and leave the message stuck at "executing".
        """
        async with self._edit_lock(ref.message_id):
            await self._edit(ref, await current())

    async def _edit(self, ref: MessageRef, proposal: Proposal) -> None:
        async with self._delivery("proposal update", task_id=proposal.task_id, message_id=ref.message_id):
            message = self._require_client().get_partial_messageable(int(ref.channel)).get_partial_message(
                int(ref.message_id))
            view = to_view(proposal)
            await message.edit(embed=to_embed(proposal), view=view)
            view.stop()

    def _edit_lock(self, message_id: str) -> asyncio.Lock:
        lock = self._edit_locks.get(message_id)
        if lock is None:
            lock = self._edit_locks[message_id] = asyncio.Lock()
        return lock

    async def post_notice(self, channel: str | None, text: str) -> None:
        channel_id = channel or self.config.default_channel
        async with self._delivery("notice", channel=channel_id):
            target = self._require_client().get_partial_messageable(int(channel_id))
            await target.send(wording.truncate(text, MESSAGE_MAX))

    async def post_digest(self, channel: str | None, digest: Digest) -> None:
        """The digest as an embed with its chart attached; if Discord refuses the attachment, the
        embed alone, saying the chart is missing (the digest itself is never dropped for it)."""
        channel_id = channel or self.config.default_channel
        target = self._require_client().get_partial_messageable(int(channel_id))
        chart = chart_file(digest)
        if chart is not None:
            try:
                async with self._delivery("digest", channel=channel_id):
                    await target.send(embed=digest_embed(digest, chart_filename=chart.filename), file=chart)
                return
            except DiscordUnavailable:
                log.warning("discord.digest_chart_failed", channel=channel_id, fallback="embed without the chart")
        async with self._delivery("digest", channel=channel_id):
            await target.send(embed=digest_embed(digest, chart_filename=None))

    async def post_note(self, ref: MessageRef, text: str) -> None:
        """Who did what, in the proposal's thread, or as a reply when there is no thread."""
        async with self._delivery("note", message_id=ref.message_id):
            client = self._require_client()
            text = wording.truncate(text, MESSAGE_MAX)
            if ref.thread_id:
                await client.get_partial_messageable(int(ref.thread_id)).send(text)
            else:
                reference = discord.MessageReference(message_id=int(ref.message_id), channel_id=int(ref.channel),
                                                     fail_if_not_exists=False)
                await client.get_partial_messageable(int(ref.channel)).send(text, reference=reference)

    # -- plumbing --------------------------------------------------------------------------------

    def _require_client(self) -> OodaClient:
        if self._client is None:
            raise DiscordUnavailable("The Discord surface is not started; call start() first.")
        return self._client

    async def _channel(self, channel_id: str) -> Any:
        client = self._require_client()
        return client.get_channel(int(channel_id)) or await client.fetch_channel(int(channel_id))

    async def _open_thread(self, message: discord.Message, proposal: Proposal) -> str | None:
        # A thread keeps the channel readable; without one (no permission, a channel type without
        # threads) notes become replies, so the record is kept either way.
        name = wording.truncate(f"#{proposal.task_id} {wording.neutralize_mentions(proposal.title)}", THREAD_NAME_MAX)
        try:
            async with asyncio.timeout(self.config.send_timeout_s):
                thread = await message.create_thread(name=name, auto_archive_duration=1440)
        except (discord.DiscordException, ValueError, aiohttp.ClientError, TimeoutError) as exc:
            log.warning("discord.thread_failed", task_id=proposal.task_id, error=type(exc).__name__)
            return None
        return str(thread.id)

    @asynccontextmanager
    async def _delivery(self, what: str, **context: Any) -> AsyncIterator[None]:
        try:
            async with asyncio.timeout(self.config.send_timeout_s):
                yield
        except (discord.DiscordException, aiohttp.ClientError, TimeoutError) as exc:
            status = getattr(exc, "status", None)
            log.warning("discord.delivery_failed", what=what, error=type(exc).__name__, status=status, **context)
            reason = f"HTTP {status}" if status else type(exc).__name__
            raise DiscordUnavailable(
                f"Discord did not take the {what} ({reason}). It is kept and sent again later; if this repeats, "
                "check the bot's access to the channel and discordstatus.com."
            ) from exc
