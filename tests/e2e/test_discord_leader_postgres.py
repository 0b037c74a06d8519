"""Replicas on one PostgreSQL hold one Discord gateway session between them: the leader's.

Discord sends every event to every session of a bot, so a session per replica would handle each
button click and /ops command once per replica. Here two real ``ooda serve`` processes share a
store and a fake Discord (tests/fakes/discord.py, spoken to by the real discord.py): only the
leader identifies; the standby still posts proposals over REST; after a ``kill -9`` of the leader
the standby opens the session within 10 s and answers commands on it, once.
"""

from __future__ import annotations

import contextlib
import signal
import time

from tests.adapters.chat.chat_rig import chat_overrides
from tests.fakes.discord import CHANNEL_ID, FakeDiscord
from tests.fakes.slack import FakeSlack
from tests.harness import AM
from tests.replicas import NOTIFICATION, Platform, roles, start_replicas, until

DISCORD_ENV = {"DISCORD_BOT_TOKEN": "discord-token-0123456789"}


async def test_only_the_leader_holds_the_discord_gateway_and_the_standby_takes_it_over(tmp_path, postgres_url):
    platform = Platform()
    async with platform.running() as platform_port, FakeSlack() as slack, FakeDiscord() as discord, \
            contextlib.AsyncExitStack() as stack:
        chat = chat_overrides(slack, discord)
        chat["chat"].pop("slack")
        replicas = await start_replicas(stack, tmp_path, platform_port, postgres_url, "a", "b", overrides=chat,
                                        env=DISCORD_ENV)

        async def one_leader_with_the_session() -> list[str] | None:
            now = await roles(replicas)
            return now if now.count("leader") == 1 and discord.open_sessions == 1 else None

        before = await until(one_leader_with_the_session)
        assert len(discord.identifies) == 1  # the standby logged in for REST only
        leader = before.index("leader")
        standby_http = replicas[1 - leader][1]

        # The standby takes an alert in and its proposal is posted over REST, without a session.
        assert (await standby_http.post("/webhooks/alertmanager", json=NOTIFICATION, headers=AM)).status_code == 202

        async def posted() -> list[dict] | None:
            return discord.channel_messages(CHANNEL_ID) or None

        await until(posted, deadline_s=30)

        killed_at = time.monotonic()
        assert await replicas[leader][0].kill(signal.SIGKILL) == -signal.SIGKILL

        async def taken_over() -> bool:
            now = await roles(replicas)
            return now[1 - leader] == "leader" and len(discord.identifies) == 2 and discord.open_sessions == 1

        await until(taken_over, deadline_s=10)
        assert time.monotonic() - killed_at < 10

        # The new session answers /ops on Discord, once.
        interaction = await discord.slash("ops", "status", user_id=4242, name="Someone")
        answer = await discord.wait_callback(interaction)
        assert answer["type"] in (4, 5)
        assert len(discord.callbacks) == 1
