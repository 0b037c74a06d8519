"""Builds a SlackSurface wired to the fake Slack, and the payloads Slack would send it."""

from __future__ import annotations

import itertools
from typing import Any

from adapters.chat.slack import SlackSurface
from adapters.chat.slack_config import SlackConfig, SlackRoute
from bot.metrics import Metrics
from bot.policy.identity import IdentityConfig, IdentityDirectory
from tests.fakes.slack import FakeSlack

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
CHANNEL = "C_OPS"
_ids = itertools.count(1)


def identities() -> IdentityDirectory:
    return IdentityDirectory(
        [
            IdentityConfig(id="alice", slack_users=["U_ALICE"], roles=["approver"]),
            IdentityConfig(id="carol", slack_users=["U_CAROL"], roles=["approver"]),
            IdentityConfig(id="victor", slack_users=["U_VIEW"], roles=["viewer"]),
        ],
        {},
        {"S_ONCALL": ["approver"]},
        {},
    )


def make_surface(fake: FakeSlack, core: Any, *, socket: bool = True, metrics: Metrics | None = None,
                 **config: Any) -> SlackSurface:
    env = {"SLACK_BOT_TOKEN": "xoxb-test"}
    if socket:
        env["SLACK_APP_TOKEN"] = "xapp-test"
    else:
        env["SLACK_SIGNING_SECRET"] = SECRET
    settings = SlackConfig(
        api_base_url=fake.api_url,
        default_channel=CHANNEL,
        send_interval_s=0,
        routes=[SlackRoute(team="storage", severity="critical", channel="C_STORAGE")],
        **config,
    )
    return SlackSurface(settings, commands=core, identities=identities(), env=env, metrics=metrics)


def click(action_id: str, task_id: int, user: str, *, ts: str = "1700000000.000001") -> dict[str, Any]:
    return {
        "type": "block_actions",
        "user": {"id": user, "username": user.lower(), "team_id": "T1"},
        "team": {"id": "T1", "domain": "fake"},
        "api_app_id": "A1",
        "token": "legacy",
        "trigger_id": f"trigger-{next(_ids)}",
        "container": {"type": "message", "message_ts": ts, "channel_id": CHANNEL, "is_ephemeral": False},
        "channel": {"id": CHANNEL, "name": "ops"},
        "message": {"ts": ts, "text": "proposal"},
        "response_url": "http://127.0.0.1:9/unused",
        "actions": [{"type": "button", "action_id": action_id, "block_id": f"ooda.task.{task_id}",
                     "value": str(task_id), "action_ts": "1700000000.1"}],
    }


def submission(view: dict[str, Any], user: str, values: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A view_submission for a view the surface opened, with ``values`` as {block_id: element state}."""
    return {
        "type": "view_submission",
        "team": {"id": "T1", "domain": "fake"},
        "user": {"id": user, "username": user.lower(), "team_id": "T1"},
        "api_app_id": "A1",
        "token": "legacy",
        "trigger_id": f"trigger-{next(_ids)}",
        "view": {**view, "id": "V1", "hash": "h", "state": {"values": values}},
        "response_urls": [],
    }


def typed(text: str) -> dict[str, Any]:
    return {"value": {"type": "plain_text_input", "value": text}}


def slash(text: str, user: str, response_url: str) -> dict[str, Any]:
    return {
        "token": "legacy", "team_id": "T1", "team_domain": "fake", "channel_id": CHANNEL, "channel_name": "ops",
        "user_id": user, "user_name": user.lower(), "command": "/ops", "text": text, "api_app_id": "A1",
        "response_url": response_url, "trigger_id": f"trigger-{next(_ids)}",
    }


def mention(event_id: str, ts: str) -> dict[str, Any]:
    return {
        "token": "legacy", "team_id": "T1", "api_app_id": "A1", "type": "event_callback",
        "event_id": event_id, "event_time": 1700000000,
        "event": {"type": "app_mention", "user": "U_ALICE", "text": "<@UBOT> hi", "ts": ts, "channel": CHANNEL,
                  "event_ts": ts},
        "authorizations": [{"team_id": "T1", "user_id": "UBOT", "is_bot": True}],
    }
