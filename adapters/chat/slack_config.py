"""Config, routing, pacing and errors of the Slack surface (``chat.slack`` in the config file)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from pydantic import BaseModel, ConfigDict, Field
from slack_sdk.errors import SlackApiError

from bot.chat.routing import RouteMatchers
from bot.errors import ChatUnavailable


class SlackRoute(RouteMatchers):
    """Send proposals that match every given field to ``channel``; the first matching route wins."""

    channel: str


class SlackConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bot_token_env: str = "SLACK_BOT_TOKEN"
    # Socket Mode when this variable is set in the environment; HTTP mode otherwise.
    app_token_env: str | None = "SLACK_APP_TOKEN"
    signing_secret_env: str | None = "SLACK_SIGNING_SECRET"
    api_base_url: str | None = None  # a Slack-compatible proxy, or a fake in tests
    default_channel: str
    routes: list[SlackRoute] = Field(default_factory=list)
    # Slack user-group id -> roles; the composition root passes this to IdentityDirectory.
    user_groups: dict[str, list[str]] = Field(default_factory=dict)
    lookup_user_groups: bool = True
    user_group_cache_s: float = Field(60.0, ge=0)
    # Slack allows about one message per second per channel; a storm queues instead of flooding.
    send_interval_s: float = Field(1.0, ge=0)
    api_retries: int = Field(3, ge=0, le=10)
    command: str = Field("/ops", pattern=r"^/[a-z0-9_-]{1,31}$")


class SlackDeliveryError(ChatUnavailable):
    """A Slack Web API call failed after the SDK's retries; the caller keeps the work and retries later."""

    def __init__(self, message: str, *, error: str) -> None:
        self.error = error
        super().__init__(message)


_ADVICE = {
    "channel_not_found": "check chat.slack routes and default_channel, and that the channel exists",
    "not_in_channel": "invite the bot to the channel (/invite @ooda)",
    "is_archived": "the channel is archived; route to another one",
    "invalid_auth": "the bot token is wrong or revoked; set a valid xoxb- token",
    "not_authed": "the bot token is missing; set it in the environment",
    "account_inactive": "the bot token belongs to a deactivated app; reinstall the app",
    "token_revoked": "the bot token was revoked; reinstall the app",
    "missing_scope": "add the missing OAuth scope to the Slack app and reinstall it",
    "ratelimited": "Slack is rate limiting us; the message will be retried",
    "msg_too_long": "the message is too long; this is a bug in Ooda's rendering",
}


def delivery_error(method: str, channel: str, exc: Exception) -> SlackDeliveryError:
    if isinstance(exc, SlackApiError):
        error = str(exc.response.get("error") or exc.response.status_code)
    else:
        error = type(exc).__name__  # connection refused, timeout: Slack or the network is down
    advice = _ADVICE.get(error, "Slack may be down; the delivery will be retried")
    return SlackDeliveryError(f"Slack {method} to {channel} failed: {error}; {advice}.", error=error)


class ChannelPacer:
    """Spaces sends to one channel by ``interval_s`` and keeps them in order.

    Each channel has its own lock, so a storm in one channel never delays another, and every
    update waits its turn instead of being dropped.
    """

    def __init__(self, interval_s: float, *, clock: Callable[[], float] | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._sleep = sleep
        self._locks: dict[str, asyncio.Lock] = {}
        self._next_at: dict[str, float] = {}

    def _now(self) -> float:
        return self._clock() if self._clock else asyncio.get_running_loop().time()

    @asynccontextmanager
    async def slot(self, channel: str) -> AsyncIterator[None]:
        lock = self._locks.setdefault(channel, asyncio.Lock())
        async with lock:
            wait = self._next_at.get(channel, 0.0) - self._now()
            if wait > 0:
                await self._sleep(wait)
            try:
                yield
            finally:
                self._next_at[channel] = self._now() + self.interval_s
