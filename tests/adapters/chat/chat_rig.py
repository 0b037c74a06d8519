"""One real App posting to both fakes at once: Slack (slack-bolt over Socket Mode) and Discord (discord.py).

For tests that look at what each platform receives for the same alert: the golden renderings and
the hostile-text checks. The prod change window is opened around the clock so nothing depends on
the hour; the example's identities are kept.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import yaml

from bot.app import App
from bot.cli import sign_headers
from bot.config import load_settings
from demo.standin import Standin
from tests import harness
from tests.adapters.chat.slack_harness import CHANNEL
from tests.fakes.discord import CHANNEL_ID, GUILD_ID, FakeDiscord
from tests.fakes.slack import FakeSlack
from tests.harness import ENV, EXAMPLE, client, running_standin

CHAT_ENV = {**ENV, "SLACK_BOT_TOKEN": "xoxb-golden-0123456789", "SLACK_APP_TOKEN": "xapp-golden-0123456789",
            "DISCORD_BOT_TOKEN": "discord-token-0123456789"}


@dataclass
class Rig:
    slack: FakeSlack
    discord: FakeDiscord
    standin: Standin
    app: App
    http: httpx.AsyncClient

    async def post(self, kind: str, body: bytes) -> None:
        r = await self.http.post(f"/webhooks/{kind}", content=body,
                                 headers={**headers_for(kind, body), "Content-Type": "application/json"})
        assert r.status_code == 202, r.text
        await self.app.engine.wait_idle()
        await self.app.notifier.wait_idle()

    async def slack_message(self, task_id: int) -> dict[str, Any]:
        """The text and blocks of the task's proposal as last posted or updated on Slack."""
        def mine(args: dict[str, Any]) -> bool:
            return any(b.get("block_id") == f"ooda.task.{task_id}" for b in blocks_of(args))

        await self.slack.wait_until(lambda: any(mine(c.args) for c in self.slack.calls
                                                if c.method == "chat.postMessage"))
        calls = [c for c in self.slack.calls if c.method in {"chat.postMessage", "chat.update"} and mine(c.args)]
        return {"text": calls[-1].args["text"], "blocks": blocks_of(calls[-1].args)}

    async def discord_message(self, task_id: int) -> dict[str, Any]:
        """The task's proposal message on Discord (its embed without the timestamp, and its buttons)."""
        def find() -> list[dict[str, Any]]:
            return [m for m in self.discord.channel_messages(CHANNEL_ID)
                    if m["embeds"] and m["embeds"][0]["title"].startswith(f"#{task_id} ")]

        (message,) = await self.discord.wait_for(find)
        embed = {k: v for k, v in message["embeds"][0].items() if k != "timestamp"}
        return {"embed": embed, "components": message["components"]}


def blocks_of(args: dict[str, Any]) -> list[dict[str, Any]]:
    blocks = args.get("blocks")
    return json.loads(blocks) if isinstance(blocks, str) else blocks or []


def sample(name: str) -> bytes:
    return (resources.files("bot") / "samples" / f"{name}.json").read_bytes()


def headers_for(kind: str, body: bytes) -> dict[str, str]:
    """How each sender authenticates, with the test secrets."""
    if kind == "alertmanager":
        return {"Authorization": f"Bearer {ENV['OODA_ALERTMANAGER_TOKEN']}"}
    if kind == "grafana":
        return {"Authorization": f"Bearer {ENV['OODA_GRAFANA_TOKEN']}"}
    secret = ENV["OODA_PAGERDUTY_SECRET"] if kind == "pagerduty" else ENV["OODA_GENERIC_SECRET"]
    return sign_headers(kind, body, secret)


def chat_overrides(slack: FakeSlack, discord: FakeDiscord) -> dict[str, Any]:
    return {
        "chat": {
            "slack": {"api_base_url": slack.api_url, "default_channel": CHANNEL, "send_interval_s": 0,
                      "lookup_user_groups": False},
            "discord": {"guild_ids": [str(GUILD_ID)], "default_channel": str(CHANNEL_ID),
                        "api_base_url": discord.api_base, "gateway_url": discord.gateway_url,
                        "ready_timeout_s": 5, "guild_ready_timeout_s": 0.05, "send_timeout_s": 5},
        },
        "identities": yaml.safe_load(EXAMPLE.read_text())["identities"],
    }


@asynccontextmanager
async def ooda_on_both(tmp_path: Path, overrides: dict[str, Any] | None = None) -> AsyncIterator[Rig]:
    async with FakeSlack() as slack, FakeDiscord() as discord, running_standin() as standin:
        port = int(standin.base_url.rsplit(":", 1)[1])
        merged = harness.merge(harness.merge(harness.ssh_overrides(standin), chat_overrides(slack, discord)),
                               overrides or {})
        settings, doc = load_settings(harness.test_config(tmp_path, port, merged))
        async with App(settings, doc=doc, env=CHAT_ENV) as app, client(app) as http:
            yield Rig(slack, discord, standin, app, http)
