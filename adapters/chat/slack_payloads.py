"""The shape a signed Slack request must have before slack-bolt sees it (HTTP mode).

slack-bolt reads an interactive payload's ``channel``, ``user``, ``view`` and first action without
checking their types, while it builds the request and again for every middleware: a payload with
``"channel": 1`` or ``"actions": []`` raises there and would answer 500. Slack never sends such
shapes; only a holder of the signing secret can. So ``/slack/events`` checks the signature first
(401), then this shape (400 naming the field), and only then hands the request to bolt.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

# Keys bolt reads as objects when present.
_OBJECT_KEYS = ("user", "channel", "container", "team", "message", "view", "enterprise")


def payload_problem(body: str, content_type: str) -> str | None:
    """What is wrong with a signed request body's shape, or None if bolt can read it."""
    if "application/x-www-form-urlencoded" not in content_type:
        return None  # Events API JSON: bolt's own parsing copes, and events carry no payload field
    fields = parse_qs(body, keep_blank_values=True)
    if "payload" not in fields:
        return None  # a slash command: every field is a string by construction
    try:
        payload: Any = json.loads(fields["payload"][0])
    except ValueError:
        return "payload: not valid JSON"
    if not isinstance(payload, dict):
        return "payload: must be a JSON object"
    if not isinstance(payload.get("type"), str):
        return "payload.type: must be a string such as block_actions or view_submission"
    for key in _OBJECT_KEYS:
        if key in payload and not isinstance(payload[key], dict):
            return f"payload.{key}: must be an object"
    if "view" in payload and not isinstance(payload["view"].get("type"), str):
        return "payload.view.type: must be a string"
    actions = payload.get("actions")
    wants_actions = payload["type"] == "block_actions" or actions is not None
    well_formed = isinstance(actions, list) and bool(actions) and all(isinstance(a, dict) for a in actions)
    if wants_actions and not well_formed:
        return "payload.actions: must be a non-empty list of objects"
    return None
