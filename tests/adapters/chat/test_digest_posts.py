"""The digest posted on Slack (blocks, then the chart through files_upload_v2) and Discord (an
embed with the chart attached), through the real slack_sdk and discord.py against the fakes, which
refuse what Slack and Discord refuse. An upload that fails never loses the digest."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, time, timedelta

import pytest

from adapters.chat.local import LocalSurface
from bot.chat.digest import build_digest
from bot.chat.digest_post import deliver_digest
from bot.chat.digest_text import Digest
from bot.config import DigestConfig
from bot.model.events import EventBus
from bot.store.sqlite import SqliteStore
from tests.adapters.chat import slack_harness
from tests.adapters.chat.test_discord import make_surface as discord_surface
from tests.digest_seed import DAY, seed_known_day
from tests.fakes.chat_limits import slack_problems
from tests.fakes.core import FakeCommands
from tests.fakes.discord import CHANNEL_ID, FakeDiscord
from tests.fakes.slack import FakeSlack

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DIGEST_CHANNEL = "C_DIGEST"


@pytest.fixture
async def digest(tmp_path) -> Digest:
    path = tmp_path / "ooda.db"
    await seed_known_day(path)
    store = SqliteStore(path, EventBus())
    await store.open()
    try:
        now = datetime.combine(DAY + timedelta(days=1), time(9), UTC)
        return await build_digest(store, now=now, day=DAY, chart=(800, 600, 100))
    finally:
        await store.close()


@pytest.fixture
async def slack() -> AsyncIterator[tuple[FakeSlack, object]]:
    async with FakeSlack() as fake:
        surface = slack_harness.make_surface(fake, FakeCommands())
        yield fake, surface


@pytest.fixture
async def discord_pair() -> AsyncIterator[tuple[FakeDiscord, object]]:
    async with FakeDiscord() as fake:
        surface = discord_surface(fake, FakeCommands())
        await surface.start()
        try:
            yield fake, surface
        finally:
            await surface.stop()


async def test_slack_gets_blocks_and_the_chart_uploaded_into_the_digest_channel(slack, digest):
    fake, surface = slack
    await surface.post_digest(DIGEST_CHANNEL, digest)

    [message] = fake.calls_to("chat.postMessage")
    assert message.ok and message.args["channel"] == DIGEST_CHANNEL
    blocks = message.args["blocks"]
    assert slack_problems("chat.postMessage", message.args) == [] and not fake.limit_violations
    assert blocks[0]["text"]["text"].startswith("Ooda digest: Thursday 2026-01-15")
    text = json.dumps(blocks)
    assert "MTTR (completed tasks): 17.3 min" in text and "HighLatency: 6" in text
    assert [c.ok for c in fake.calls_to("files.getUploadURLExternal")] == [True]
    assert [c.ok for c in fake.calls_to("files.completeUploadExternal")] == [True]
    [shared] = fake.shared_files
    assert shared["channel"] == DIGEST_CHANNEL and shared["filename"] == "ooda-digest-2026-01-15.png"
    assert shared["data"] == digest.chart_png and shared["data"].startswith(PNG_MAGIC)


async def test_a_failed_slack_upload_keeps_the_digest_and_says_the_chart_is_missing(slack, digest):
    fake, surface = slack
    fake.fail_next("upload", status=413)  # the bytes' POST to the upload URL is refused
    deliveries = await deliver_digest([surface], DigestConfig(channel=DIGEST_CHANNEL), digest)

    assert [d.outcome for d in deliveries] == ["posted"]
    digest_message, note = fake.calls_to("chat.postMessage")
    assert digest_message.ok and "HighLatency: 6" in json.dumps(digest_message.args["blocks"])
    assert "chart could not be uploaded" in note.args["text"]
    assert fake.shared_files == [] and fake.calls_to("files.completeUploadExternal") == []


async def test_slack_refusing_the_blocks_gets_the_digest_as_text(slack, digest):
    fake, surface = slack
    fake.fail_next("chat.postMessage", error="invalid_blocks")
    deliveries = await deliver_digest([surface], DigestConfig(channels={"slack": DIGEST_CHANNEL}), digest)

    assert [(d.outcome, d.channel) for d in deliveries] == [("posted as text", DIGEST_CHANNEL)]
    refused, text = fake.calls_to("chat.postMessage")
    assert not refused.ok and text.ok and "blocks" not in text.args
    assert "MTTR (completed tasks): 17.3 min" in text.args["text"]


async def test_discord_gets_an_embed_with_the_chart_attached(discord_pair, digest):
    fake, surface = discord_pair
    await surface.post_digest(str(CHANNEL_ID), digest)

    [message] = fake.channel_messages(CHANNEL_ID)
    [embed] = message["embeds"]
    assert embed["title"].startswith("Ooda digest: Thursday 2026-01-15")
    assert embed["image"]["url"] == "attachment://ooda-digest-2026-01-15.png"
    assert any("HighLatency: 6" in f["value"] for f in embed["fields"])
    [attachment] = message["attachments"]
    assert attachment["filename"] == "ooda-digest-2026-01-15.png"
    assert fake.attachments[attachment["id"]] == digest.chart_png


async def test_a_refused_discord_attachment_still_posts_the_digest_embed(discord_pair, digest):
    fake, surface = discord_pair
    fake.refuse_attachments = True
    deliveries = await deliver_digest([surface], DigestConfig(channel=str(CHANNEL_ID)), digest)

    assert [d.outcome for d in deliveries] == ["posted"]
    [message] = fake.channel_messages(CHANNEL_ID)
    assert message["attachments"] == [] and "image" not in message["embeds"][0]
    assert "No chart this time" in message["embeds"][0]["description"]


async def test_the_local_surface_writes_the_chart_and_logs_its_path(tmp_path, digest):
    surface = LocalSurface(digest_dir=tmp_path / "digests")
    await deliver_digest([surface], DigestConfig(), digest)
    assert (tmp_path / "digests" / "digest-2026-01-15.png").read_bytes() == digest.chart_png
