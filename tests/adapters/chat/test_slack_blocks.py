"""Block Kit rendering, edit validation, routing config and per-channel pacing of the Slack surface."""

from __future__ import annotations

import asyncio
import json

import pytest
import yaml
from pydantic import ValidationError

from adapters.chat import slack_blocks as kit
from adapters.chat.slack import SlackSurface
from adapters.chat.slack_config import ChannelPacer, SlackConfig
from bot.app import _EnvWithSecrets
from bot.errors import ConfigError
from bot.model.proposals import Evidence, ParamBound, StepState
from bot.secrets import SecretResolver
from tests.adapters.chat.slack_harness import identities
from tests.fakes.core import FakeCommands, make_proposal
from tests.harness import EXAMPLE


def test_huge_proposal_stays_within_block_kit_limits():
    p = make_proposal(evidence_snippet="x" * 20_000).model_copy(update={
        "title": "T" * 5000, "summary": "S" * 10_000, "blast_radius": "B" * 5000,
        "evidence": [Evidence(kind="log", title=f"e{i}", url="https://logs.example/x", snippet="y" * 900)
                     for i in range(60)],
        "steps": [make_proposal().steps[0].model_copy(update={"index": i, "result": "r" * 5000})
                  for i in range(40)],
    })
    message = kit.proposal_message(p)  # serializing validates every limit slack_sdk knows
    assert len(message["blocks"]) <= 50
    assert len(message["text"]) <= 4000
    assert sum(len(json.dumps(b)) for b in message["blocks"]) < 20_000
    text = json.dumps(message["blocks"])
    assert "`ooda show 7`" in text  # long parts point to the full text


def test_evidence_links_and_mrkdwn_is_escaped():
    p = make_proposal().model_copy(update={"evidence": [
        Evidence(kind="alert", title="a <b> & c", url="https://prom.example/graph?x=1", snippet="<!here> boom"),
    ]})
    text = json.dumps(kit.proposal_message(p)["blocks"])
    assert "<https://prom.example/graph?x=1|a &lt;b&gt; &amp; c>" in text
    assert "<!here>" not in text


def test_decided_proposal_has_no_approve_button_and_undo_when_steps_ran():
    done = make_proposal().model_copy(update={"state": "completed", "can_undo": True, "steps": [
        make_proposal().steps[0].model_copy(update={"state": StepState.succeeded})]})
    ids = [b.action_id for b in kit.proposal_buttons(done)]
    assert ids == [kit.ACTION_DETAILS, kit.ACTION_UNDO]


@pytest.mark.parametrize(("raw", "bound", "expected"), [
    ("8", ParamBound(type="int", min=1, max=10), 8),
    ("2.5", ParamBound(type="float", max=3), 2.5),
    ("TRUE", ParamBound(type="bool"), True),
    ("blue", ParamBound(choices=["blue", "green"]), "blue"),
])
def test_coerce_accepts_in_bounds(raw, bound, expected):
    assert kit.coerce(raw, bound) == expected


@pytest.mark.parametrize(("raw", "bound", "message"), [
    ("11", ParamBound(type="int", max=10), "11 is above the maximum 10"),
    ("0", ParamBound(type="int", min=1), "0 is below the minimum 1"),
    ("ten", ParamBound(type="int"), "'ten' is not a whole number"),
    ("red", ParamBound(choices=["blue"]), "Pick one of blue"),
    ("abcdef", ParamBound(max_length=3), "At most 3 characters"),
    ("maybe", ParamBound(type="bool"), "Type true or false"),
])
def test_coerce_refuses_out_of_bounds(raw, bound, message):
    with pytest.raises(ValueError, match=message):
        kit.coerce(raw, bound)


def test_read_edits_returns_only_changes():
    p = make_proposal()
    same = {"edit.0.keep": {"value": {"type": "plain_text_input", "value": "5"}}}
    assert kit.read_edits(p, same) == ({}, {})
    changed = {"edit.0.keep": {"value": {"type": "plain_text_input", "value": "9"}}}
    assert kit.read_edits(p, changed) == ({"rotate": {"keep": 9}}, {})


def test_a_key_inside_a_param_is_shown_read_and_described_by_its_path():
    p = make_proposal()
    step = p.steps[0].model_copy(update={"params": {"json": {"replicas": 3, "zone": "a"}},
                                         "editable": {"json.replicas": ParamBound(type="int", min=1, max=10)}})
    p = p.model_copy(update={"steps": [step]})

    view = kit.edit_modal(p, kit.ModalContext(task_id=p.task_id, channel="C1", message_ts="1.2"))
    [field] = [b for b in view["blocks"] if b.get("block_id") == "edit.0.json.replicas"]
    assert field["element"]["initial_value"] == "3"
    typed = {"edit.0.json.replicas": {"value": {"type": "plain_text_input", "value": "6"}}}
    edits, errors = kit.read_edits(p, typed)
    assert (edits, errors) == ({"rotate": {"json.replicas": 6}}, {})
    assert kit.describe_edits(p, edits) == "rotate.json.replicas 3 → 6"


def test_modal_context_round_trips_in_private_metadata():
    ctx = kit.ModalContext(task_id=7, channel="C1", message_ts="1.2", phrase="approve 7")
    view = kit.confirm_modal(ctx)
    assert kit.ModalContext.load(view["private_metadata"]) == ctx
    assert view["callback_id"] == kit.VIEW_CONFIRM


def test_config_is_strict_and_surface_names_missing_secrets():
    with pytest.raises(ValidationError):
        SlackConfig(default_channel="C1", chanel="typo")
    config = SlackConfig(default_channel="C1")
    with pytest.raises(ConfigError, match="SLACK_BOT_TOKEN"):
        SlackSurface(config, commands=FakeCommands(), identities=identities(), env={})
    with pytest.raises(ConfigError, match=r"SLACK_APP_TOKEN .*SLACK_SIGNING_SECRET"):
        SlackSurface(config, commands=FakeCommands(), identities=identities(), env={"SLACK_BOT_TOKEN": "xoxb-1"})


async def test_http_mode_when_no_app_token():
    surface = SlackSurface(SlackConfig(default_channel="C1"), commands=FakeCommands(), identities=identities(),
                           env={"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s"})
    assert surface.mode == "http"
    assert [r.path for r in surface.web_routes()] == ["/slack/events"]


async def test_pacer_spaces_sends_per_channel_and_keeps_order():
    now = [100.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    pacer = ChannelPacer(1.0, clock=lambda: now[0], sleep=sleep)
    order: list[str] = []

    async def send(channel: str, label: str) -> None:
        async with pacer.slot(channel):
            order.append(label)

    await asyncio.gather(send("C1", "a"), send("C1", "b"), send("C1", "c"), send("C2", "x"))
    assert [label for label in order if label != "x"] == ["a", "b", "c"]
    assert slept == [1.0, 1.0]  # C1's second and third send waited; C2 never did


async def test_an_env_that_invents_unset_variables_in_dev_does_not_turn_on_socket_mode(tmp_path):
    # In dev the composition root generates Ooda's own unset secrets; a made-up Slack app token
    # would start Socket Mode against Slack with it and HTTP mode could never be chosen.
    resolver = SecretResolver({}, tmp_path, generate_missing=True)
    env = _EnvWithSecrets({"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s"}, resolver, {"OODA_API_TOKEN"})
    assert env.get("OODA_API_TOKEN")  # Ooda's own secrets are generated ...
    assert env.get("SLACK_APP_TOKEN") is None  # ... a chat platform's never are
    surface = SlackSurface(SlackConfig(default_channel="C1"), commands=FakeCommands(), identities=identities(),
                           env=env)
    assert surface.mode == "http"
    with pytest.raises(ConfigError, match="SLACK_BOT_TOKEN"):
        SlackSurface(SlackConfig(default_channel="C1"), commands=FakeCommands(), identities=identities(),
                     env=_EnvWithSecrets({}, resolver, {"OODA_API_TOKEN"}))


def test_the_commented_slack_example_in_config_example_is_a_valid_slack_config():
    lines = EXAMPLE.read_text().splitlines()
    start = lines.index("  # slack:") + 1
    body = []
    for line in lines[start:]:
        if not line.startswith("  #   "):
            break
        body.append(line.removeprefix("  #   "))
    example = SlackConfig.model_validate(yaml.safe_load("\n".join(body)))
    assert example.default_channel and example.routes and example.user_groups
