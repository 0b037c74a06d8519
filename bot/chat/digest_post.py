"""Delivering the digest to every chat surface, each into its digest channel.

A surface that can post a digest with its chart (``DigestSurface``: Slack's blocks and uploaded
PNG, Discord's embed and attachment, the local surface's PNG file) gets the whole digest; one that
cannot, or whose rich post failed, gets the plain text. The rich post is the surface's job, and a
failed chart upload is handled there (the digest is posted without it and says so); a failure
here falls back to text, so a broken upload or block never loses the digest itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import structlog

from bot.chat.digest_text import Digest
from bot.config import DigestConfig
from bot.ports import ChatSurface

log = structlog.get_logger(__name__)


@runtime_checkable
class DigestSurface(Protocol):
    """**Protocol:** a chat surface that posts a digest with its chart (``digest.chart_png``)."""

    async def post_digest(self, channel: str | None, digest: Digest) -> None: ...


@dataclass
class Delivery:
    surface: str
    channel: str | None
    outcome: str  # "posted", "posted as text", "failed"
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"surface": self.surface, "channel": self.channel, "outcome": self.outcome, "error": self.error}


async def deliver_digest(surfaces: list[ChatSurface], config: DigestConfig, digest: Digest) -> list[Delivery]:
    """Post ``digest`` on every surface; one ``Delivery`` each, in the surfaces' order."""
    deliveries = []
    for surface in surfaces:
        channel = config.channel_for(surface.name)
        rich_error: str | None = None
        if isinstance(surface, DigestSurface):
            try:
                await surface.post_digest(channel, digest)
                deliveries.append(Delivery(surface.name, channel, "posted"))
                continue
            except Exception as exc:
                rich_error = str(exc)
                log.warning("digest.rich_post_failed", surface=surface.name, channel=channel, error=rich_error,
                            fallback="text")
        try:
            await surface.post_notice(channel, digest.text)
            deliveries.append(Delivery(surface.name, channel, "posted as text", rich_error))
        except Exception as exc:
            log.error("digest.delivery_failed", surface=surface.name, channel=channel, error=str(exc))
            deliveries.append(Delivery(surface.name, channel, "failed", str(exc)))
    log.info("digest.delivered", day=digest.day.isoformat(),
             outcomes={f"{d.surface}:{d.channel}": d.outcome for d in deliveries})
    return deliveries
