"""Hypothesis strategies for what a hostile client sends: webhook bodies and API requests."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from hypothesis import strategies as st

HUGE = st.sampled_from([2**63, -(2**63) - 1, 10**30, 1e308, -1e308, 99999999999999999999999])
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), HUGE, st.floats(allow_nan=False),
                    st.text(max_size=40))
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)), max_leaves=20)
HOSTILE_TEXT = st.sampled_from([
    "../../../services/checkout/rollback?x=", "%2e%2e/%2e%2e", "{{ 7*7 }}", "{% raw %}", "@here", "<!channel>",
    "\x00", "\ud7ff\ue000", "x" * 20_000, "'; rm -rf /", "$(reboot)", "\\\\evil\\share", "#frag", "?q=1",
    "🔥" * 100, "",
])


def _dumps(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


def _deep(depth: int, opener: str) -> bytes:
    closer = {"[": "]", "{\"a\":": "}"}[opener]
    return (opener * depth + "1" + closer * depth).encode()


@st.composite
def alert_shaped(draw: st.DrawFn) -> bytes:
    """An Alertmanager/Grafana-like body with hostile values where the real ones go."""
    label_value = st.one_of(HOSTILE_TEXT, SCALARS, JSON_VALUES)
    alert = {
        "status": draw(st.one_of(st.sampled_from(["firing", "resolved", "FIRING", ""]), SCALARS)),
        "labels": draw(st.one_of(
            st.dictionaries(st.one_of(st.sampled_from(["alertname", "pod", "namespace", "instance"]),
                                      st.text(max_size=30)), label_value, max_size=6),
            JSON_VALUES)),
        "annotations": draw(st.one_of(st.dictionaries(st.text(max_size=10), label_value, max_size=3), SCALARS)),
        "startsAt": draw(st.one_of(st.sampled_from(["2026-01-05T11:03:05Z", "not a time", "0001-01-01T00:00:00Z",
                                                    "99999-01-01T00:00:00Z"]), SCALARS)),
        "fingerprint": draw(st.one_of(st.text(max_size=30), HOSTILE_TEXT, SCALARS)),
    }
    body = {"version": "4", "status": "firing", "receiver": "ooda",
            "alerts": draw(st.one_of(st.lists(st.just(alert), max_size=3), JSON_VALUES))}
    return _dumps(draw(st.one_of(st.just(body), st.just(body["alerts"]))))


@st.composite
def pagerduty_shaped(draw: st.DrawFn) -> bytes:
    data = draw(st.one_of(st.dictionaries(st.sampled_from(["id", "title", "urgency", "service", "priority", "body",
                                                           "number", "created_at"]),
                                          st.one_of(HOSTILE_TEXT, JSON_VALUES), max_size=6), JSON_VALUES))
    event = {"id": draw(st.one_of(st.text(max_size=20), SCALARS)),
             "event_type": draw(st.sampled_from(["incident.triggered", "incident.resolved", "pagey.ping", ""])),
             "data": data}
    return _dumps({"event": draw(st.one_of(st.just(event), JSON_VALUES))})


def webhook_bodies() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=2048),
        JSON_VALUES.map(_dumps),
        st.tuples(st.integers(min_value=100, max_value=20_000), st.sampled_from(["[", "{\"a\":"])).map(
            lambda spec: _deep(*spec)),
        alert_shaped(),
        pagerduty_shaped(),
        st.sampled_from([b"", b"null", b"{}", b"[]", b"\xff\xfe", b'{"alerts": "x"}', b"1e999999"]),
    )


ID = st.one_of(st.integers(min_value=-5, max_value=5), HUGE.map(str), st.text(max_size=12),
               st.sampled_from(["1e3", "0x10", " 1", "1.5", "%00", ".."]))
PARAM_VALUE = st.one_of(st.text(max_size=20), HOSTILE_TEXT, st.sampled_from(
    ["abc", "-1", "0", "1e3", "1001", "99999999999999999999", "true", "bogus", "24h", "-7d", "1:abc"]))


def _body() -> st.SearchStrategy[bytes | None]:
    return st.one_of(st.none(), JSON_VALUES.map(_dumps), st.binary(max_size=512),
                     st.integers(min_value=100, max_value=10_000).map(lambda d: _deep(d, "[")))


@st.composite
def api_requests(draw: st.DrawFn) -> tuple[str, str, dict[str, str], bytes | None]:
    """(method, path, query params, body) for the API's routes, with hostile ids, params and bodies."""
    task = quote(str(draw(ID)), safe=".")  # as a client library sends it: control characters escaped
    routes = [
        ("GET", "/api/v1/tasks"), ("GET", f"/api/v1/tasks/{task}"), ("GET", f"/api/v1/tasks/{task}/bundle"),
        ("GET", f"/api/v1/tasks/{task}/policy"), ("POST", f"/api/v1/tasks/{task}/approve"),
        ("POST", f"/api/v1/tasks/{task}/reject"), ("POST", f"/api/v1/tasks/{task}/undo"),
        ("POST", f"/api/v1/playbooks/{quote(draw(st.text(max_size=20)), safe='')}/run"),
        ("POST", "/api/v1/playbooks/replay"),
        ("GET", "/api/v1/status"), ("GET", "/api/v1/audit/verify"), ("GET", "/api/v1/policy"),
        ("GET", "/api/v1/signals"), ("GET", "/api/v1/digest"), ("POST", "/api/v1/pause"),
    ]
    method, path = draw(st.sampled_from(routes))
    params = draw(st.dictionaries(st.sampled_from(["limit", "state", "all", "since", "unmatched", "expect_head",
                                                   "date", "x"]), PARAM_VALUE, max_size=3))
    body = draw(_body()) if method == "POST" else None
    return method, path, params, body


# -- chat payloads ---------------------------------------------------------------------------------

HOSTILE_TASK_REF = st.one_of(
    st.sampled_from(["99999999999999999999", "../../x", "-1", "0", "1e3", "0x10", "#", "", " 7 ",
                     "\u0661\u0662", "\uff11",  # digits that int() and regex \d read: 12 and 1
                     "9" * 400, "2147483648", "9223372036854775808", "%2e%2e", "1; approve 1"]),
    HOSTILE_TEXT, st.text(max_size=20), st.integers().map(str))
SLACK_ACTIONS = ["ooda.approve", "ooda.reject", "ooda.edit", "ooda.details", "ooda.undo"]
OPS_WORDS = ["approve", "reject", "undo", "show", "run", "pause", "resume", "status", "tasks", "help", "digest",
             "APPROVE", "aprove"]


@st.composite
def ops_texts(draw: st.DrawFn) -> str:
    """What someone types after ``/ops``: a real subcommand with hostile arguments, or anything at all."""
    words = [draw(st.sampled_from(OPS_WORDS)), *draw(st.lists(HOSTILE_TASK_REF, max_size=3))]
    return draw(st.one_of(st.just(" ".join(words)), st.text(max_size=60), HOSTILE_TEXT,
                          st.sampled_from(['approve "1', "run x a=b=c '", "reject 1 \\", "run =v", "show #"])))


def _slack_object(required: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """An object where Slack puts one, holding ``required`` (strategies) and random extra keys."""
    return st.tuples(st.fixed_dictionaries(required),
                     st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=3)).map(lambda p: {**p[1], **p[0]})


def slack_actions() -> st.SearchStrategy[dict[str, Any]]:
    """One entry of a block_actions payload's ``actions``, with hostile ids and values of any type."""
    return _slack_object({
        "type": st.one_of(st.sampled_from(["button", "static_select"]), SCALARS),
        "action_id": st.one_of(st.sampled_from(SLACK_ACTIONS), st.sampled_from(
            ["ooda:approve:99999999999999999999", "ooda:approve:../../x", "ooda.approve ", "OODA.APPROVE"]),
            st.text(max_size=20)),
        "value": st.one_of(HOSTILE_TASK_REF, SCALARS, JSON_VALUES),
        "block_id": st.one_of(st.text(max_size=20), SCALARS)})


@st.composite
def slack_interactive_payloads(draw: st.DrawFn, users: list[str], channel: str) -> dict[str, Any]:
    """A ``payload=`` document shaped as Slack shapes it (objects where Slack puts objects, at least one
    action), with hostile values, missing fields, wrong scalar types and deep nesting inside."""
    text_or_scalar = st.one_of(st.text(max_size=12), SCALARS)
    payload = draw(st.fixed_dictionaries(
        {"type": st.sampled_from(["block_actions", "view_submission", "view_closed", "shortcut", "bogus"])},
        optional={
            "user": _slack_object({"id": st.one_of(st.sampled_from(users), text_or_scalar),
                                   "username": text_or_scalar}),
            "actions": st.lists(slack_actions(), min_size=1, max_size=3),
            "team": _slack_object({"id": st.text(max_size=8)}),
            "trigger_id": text_or_scalar,
            "container": _slack_object({"message_ts": text_or_scalar, "channel_id": st.just(channel)}),
            "channel": _slack_object({"id": st.one_of(st.just(channel), st.text(max_size=8))}),
            "view": _slack_object({
                "type": st.just("modal"),
                "callback_id": st.sampled_from(["ooda.reject_modal", "ooda.edit_modal", "ooda.confirm_modal"]),
                "private_metadata": st.one_of(st.text(max_size=30), JSON_VALUES.map(json.dumps)),
                "state": JSON_VALUES})}))
    for _ in range(draw(st.integers(min_value=0, max_value=3)) * 200):  # nesting far past anything Slack sends
        payload = {**payload, "actions": [{"action_id": "ooda.approve", "value": payload}]}
    return payload


# Signed payloads of shapes Slack never sends, which Ooda answers with a 500 today: slack_bolt reads
# them before any listener runs (building the request context, or the arguments of a middleware).
SLACK_SHAPES_BOLT_WOULD_CHOKE_ON = [
    {"type": "block_actions", "actions": []},
    {"type": "block_actions", "actions": [True]},
    {"type": "block_actions", "channel": 1},
    {"type": "block_actions", "view": None},
    {"type": "block_actions", "user": True},
    {"type": "view_submission", "view": {"callback_id": "ooda.reject_modal"}},
]


def slack_slash_fields(users: list[str]) -> st.SearchStrategy[dict[str, str]]:
    """Form fields of a slash command; ``response_url`` is the caller's to fill in."""
    return st.fixed_dictionaries(
        {"command": st.one_of(st.just("/ops"), st.sampled_from(["/OPS", "/ops ", "", "/other"]), st.text(max_size=10)),
         "text": ops_texts(),
         "user_id": st.one_of(st.sampled_from(users), st.text(max_size=12), HOSTILE_TEXT)},
        optional={"user_name": st.text(max_size=12), "channel_id": st.text(max_size=12),
                  "team_id": st.text(max_size=12), "trigger_id": st.text(max_size=12)})


def discord_custom_ids() -> st.SearchStrategy[str]:
    """Button custom_ids: the bot's own format with hostile task refs, and anything else up to Discord's 100."""
    actions = st.sampled_from(["approve", "reject", "edit", "details", "undo", "confirm", "APPROVE", "run", ""])
    return st.one_of(
        st.tuples(actions, HOSTILE_TASK_REF).map(lambda pair: f"ooda:{pair[0]}:{pair[1]}"[:100]),
        st.sampled_from(["ooda:approve:99999999999999999999", "ooda:approve:../../x", "ooda:approve:",
                         "ooda:approve:1:extra", "ooda:modal:reject:1", "ooda::1", "ooda"]),
        st.text(min_size=1, max_size=100))
