"""Hostile chat payloads against one running Ooda with Slack (HTTP mode) and Discord configured.

Slack posts to ``/slack/events`` on Ooda's own server: correctly signed slash commands and
interactive payloads with hostile shapes and values, and requests signed wrongly. Discord sends
button clicks and ``/ops`` commands over the gateway of the fake, through real discord.py.

One crash-loop task waits for approval the whole time. Invariants, for every generated payload:
no 5xx from Ooda's server and 401 for a bad signature; nothing is approved or executed (the task
keeps its state, no task is added, the stand-in sees no write); a Discord interaction the bot's
buttons could have sent is answered; nothing is logged at error level; and afterwards a valid
webhook is still stored.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import structlog
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from slack_sdk.signature import SignatureVerifier

from adapters.chat.discord_embeds import CUSTOM_ID_PATTERN
from bot.model.tasks import TaskState
from demo.standin import Standin
from tests.adapters.chat.test_discord_e2e import (
    ALICE,
    BOB,
    DISCORD_ENV,
    MALLORY,
    ONCALL_ROLE,
    discord_overrides,
    proposal_message,
)
from tests.fakes.discord import FakeDiscord, new_id
from tests.fakes.slack import FakeSlack
from tests.fuzz.server import ServedOoda, auth_headers
from tests.fuzz.strategies import (
    SLACK_SHAPES_BOLT_WOULD_CHOKE_ON,
    discord_custom_ids,
    ops_texts,
    slack_interactive_payloads,
    slack_slash_fields,
)
from tests.harness import AM, running_app, running_standin
from tests.harness import client as http_client

SIGNING_SECRET = "fuzz-signing-secret-0123456789"
CHAT_ENV = {**DISCORD_ENV, "SLACK_BOT_TOKEN": "xoxb-fuzz-0123456789", "SLACK_SIGNING_SECRET": SIGNING_SECRET}
SLACK_CHANNEL = "C_OPS"
# U_ALICE holds every approving role; the other ids are unknown to Ooda.
SLACK_USERS = ["U_ALICE", "U_MALLORY", "", "USLACKBOT"]
MAY_APPROVE = {"U_ALICE"}
CHANGES_STATE = {"approve", "reject", "undo", "pause", "resume", "run", "confirm", "edit"}
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
BOLT_LISTENER = "run_ack_function_asynchronously"  # the task bolt runs a listener in, after the ack


class ChatOoda(ServedOoda):
    """Ooda with chat.slack in HTTP mode and chat.discord, and one task waiting for approval."""

    slack: FakeSlack
    discord: FakeDiscord
    standin: Standin
    task_id: int
    message_id: int  # the Discord proposal message of ``task_id``, where buttons are pressed

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with FakeSlack() as slack, FakeDiscord(roles={ONCALL_ROLE: "oncall"}) as discord, \
                running_standin() as standin:
            overrides = discord_overrides(discord)
            overrides["chat"]["slack"] = {"api_base_url": slack.api_url, "default_channel": SLACK_CHANNEL,
                                          "send_interval_s": 0, "lookup_user_groups": False}
            overrides["identities"].append({"id": "slack-alice", "roles": ["oncall", "sre-lead"],
                                            "slack_users": ["U_ALICE"]})
            async with running_app(self._tmp, standin, overrides, env=CHAT_ENV) as app:
                self.slack, self.discord, self.standin, self.app = slack, discord, standin, app
                async with http_client(app) as http:
                    r = await http.post("/webhooks/alertmanager", content=_crashloop(), headers=AM)
                    assert r.status_code == 202, r.text
                await app.engine.wait_idle()
                (task,) = await app.store.list_tasks()
                assert task.state is TaskState.needs_approval
                self.task_id = task.id
                self.message_id = int((await proposal_message(app, discord, task.id))["id"])
                self._ready.set()
                await self._stop.wait()

    def facts(self) -> tuple[list[tuple[int, str]], int, int]:
        """(id and state of every task, approvals of the waiting task, writes the stand-in received)."""
        assert self.app is not None
        app = self.app

        async def read() -> tuple[list[tuple[int, str]], int, int]:
            await app.engine.wait_idle()
            tasks = [(t.id, t.state.value) for t in await app.store.list_tasks()]
            return tasks, len(await app.store.approvals_of_task(self.task_id)), len(writes(self.standin))

        return self.run(read())

    def settle_slack(self) -> None:
        """Wait for every bolt listener started by the requests so far (they run on after the ack)."""
        async def listeners_done() -> None:
            running = {t for t in asyncio.all_tasks()
                       if BOLT_LISTENER in getattr(t.get_coro(), "__qualname__", "")}
            if running:
                _, late = await asyncio.wait(running, timeout=20)
                assert not late, f"{len(late)} Slack listeners still running after 20 s"

        self.run(listeners_done())


def _crashloop() -> bytes:
    return (resources.files("bot") / "samples" / "alertmanager-kube-pod-crashlooping.json").read_bytes()


def writes(standin: Standin) -> list[dict[str, Any]]:
    """Calls that would change something on the systems Ooda acts on (a dry run changes nothing)."""
    return [c for c in standin.calls if c["method"] not in ("GET", "HEAD") and "dryRun" not in c["query"]]


class ErrorRecords(logging.Handler):
    """Standard-library records at error level: discord.py and bolt report what they swallowed there."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def ooda(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChatOoda]:
    server = ChatOoda(tmp_path_factory.mktemp("chat-fuzz"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def http(ooda: ChatOoda) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=ooda.url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def baseline(ooda: ChatOoda) -> tuple[list[tuple[int, str]], int, int]:
    return ooda.facts()


@pytest.fixture(scope="module")
def std_errors() -> Iterator[ErrorRecords]:
    handler = ErrorRecords()
    logging.getLogger().addHandler(handler)
    try:
        yield handler
    finally:
        logging.getLogger().removeHandler(handler)


@contextmanager
def no_errors_logged(std_errors: ErrorRecords) -> Iterator[None]:
    before = len(std_errors.records)
    with structlog.testing.capture_logs() as logs:
        yield
    errors = [e for e in logs if e["log_level"] in ("error", "critical")]
    assert errors == [], errors
    assert std_errors.records[before:] == [], [r.getMessage() for r in std_errors.records[before:]]


def signed(body: str, *, secret: str = SIGNING_SECRET, age_s: int = 0) -> dict[str, str]:
    # bolt checks the timestamp against the real clock, so the request is signed with it.
    timestamp = str(int(time.time()) - age_s)
    signature = SignatureVerifier(secret).generate_signature(timestamp=timestamp, body=body)
    assert signature is not None
    return {**FORM, "X-Slack-Request-Timestamp": timestamp, "X-Slack-Signature": signature}


def names_task(value: Any, task_id: int) -> bool:
    """Whether ``value`` reads as ``task_id`` to ``int()`` (the way the listeners read a task ref)."""
    for word in [*str(value).replace("#", " ").replace('"', " ").replace("'", " ").split(), value]:
        try:
            if int(word) == task_id:
                return True
        except (TypeError, ValueError, OverflowError):
            continue
    return False


def may_change_the_task(ooda: ChatOoda, user_may_approve: bool, *texts: Any) -> bool:
    """An approver naming the waiting task with a verb that acts is a legitimate decision, not an attack."""
    if not user_may_approve:
        return False
    words = " ".join(str(t) for t in texts).lower()
    return any(verb in words for verb in CHANGES_STATE) and any(names_task(t, ooda.task_id) for t in texts)


def nothing_changed(ooda: ChatOoda, baseline: tuple[list[tuple[int, str]], int, int]) -> None:
    assert ooda.facts() == baseline


# -- Slack -------------------------------------------------------------------------------------


@FUZZ
@given(fields=slack_slash_fields(SLACK_USERS))
def test_a_hostile_slash_command_never_gets_a_5xx_and_changes_nothing(
        ooda: ChatOoda, http: httpx.Client, baseline: Any, std_errors: ErrorRecords, fields: dict[str, str]) -> None:
    assume(not may_change_the_task(ooda, fields["user_id"] in MAY_APPROVE, fields["text"]))
    # Pausing is an approver's right, and run starts a new task: refused for everyone else.
    assume(not (fields["user_id"] in MAY_APPROVE and fields["text"].split()[:1] in (["pause"], ["run"])))
    body = urlencode({**fields, "response_url": ooda.slack.response_url("fuzz")})

    with no_errors_logged(std_errors):
        r = http.post("/slack/events", content=body, headers=signed(body))
        ooda.settle_slack()

    assert r.status_code < 500, r.text
    nothing_changed(ooda, baseline)


@FUZZ
@given(payload=slack_interactive_payloads(SLACK_USERS, SLACK_CHANNEL))
def test_a_hostile_interactive_payload_never_gets_a_5xx_and_approves_nothing(
        ooda: ChatOoda, http: httpx.Client, baseline: Any, payload: dict[str, Any]) -> None:
    user = payload.get("user") or {}
    refs = [a.get("value") for a in payload.get("actions", [])]
    assume(not may_change_the_task(ooda, user.get("id") in MAY_APPROVE, "approve", *refs))
    body = urlencode({"payload": json.dumps(payload)})

    # No error-log check here: a listener that cannot read its payload (a value that is no task id)
    # logs slack.listener_failed at error level and tells the clicker, by design.
    r = http.post("/slack/events", content=body, headers=signed(body))
    ooda.settle_slack()

    assert r.status_code < 500, r.text
    nothing_changed(ooda, baseline)


@pytest.mark.parametrize("payload", SLACK_SHAPES_BOLT_WOULD_CHOKE_ON, ids=json.dumps)
def test_a_signed_payload_of_a_shape_slack_never_sends_gets_a_4xx(
        ooda: ChatOoda, http: httpx.Client, baseline: Any, payload: dict[str, Any]) -> None:
    body = urlencode({"payload": json.dumps(payload)})

    r = http.post("/slack/events", content=body, headers=signed(body))
    ooda.settle_slack()

    nothing_changed(ooda, baseline)
    assert 400 <= r.status_code < 500, (r.status_code, r.text)


@FUZZ
@given(data=st.data(), forgery=st.sampled_from(["unsigned", "wrong-secret", "stale", "zeros", "other-body"]))
def test_a_badly_signed_request_gets_401_and_reaches_no_listener(
        ooda: ChatOoda, http: httpx.Client, baseline: Any, data: st.DataObject, forgery: str) -> None:
    payload = {"type": "block_actions", "user": {"id": "U_ALICE"}, "trigger_id": "t",
               "actions": [{"action_id": "ooda.approve", "value": str(ooda.task_id)}]}
    body = data.draw(st.one_of(st.just(urlencode({"payload": json.dumps(payload)})),
                               slack_slash_fields(["U_ALICE"]).map(urlencode), st.text(max_size=200)))
    headers = {
        "unsigned": FORM,
        "wrong-secret": signed(body, secret="not-the-signing-secret"),
        "stale": signed(body, age_s=301),
        "zeros": {**signed(body), "X-Slack-Signature": "v0=" + "0" * 64},
        "other-body": signed(body + "&x=1"),
    }[forgery]
    answers = listener_answers(ooda)

    r = http.post("/slack/events", content=body, headers=headers)
    ooda.settle_slack()

    assert r.status_code == 401, r.text
    # Not even an ephemeral answer or a form: no listener ran. (The app's own periodic jobs may post
    # meanwhile, reminders and the outbox retry; nothing_changed holds the store to the baseline.)
    assert listener_answers(ooda) == answers
    nothing_changed(ooda, baseline)


# What a Slack listener calls to answer the person who clicked or typed.
ANSWER_METHODS = frozenset({"chat.postEphemeral", "views.open", "views.push", "views.update"})


def listener_answers(ooda: ChatOoda) -> tuple[int, int]:
    return sum(c.method in ANSWER_METHODS for c in ooda.slack.calls), len(ooda.slack.responses)


# -- Discord -------------------------------------------------------------------------------------


@FUZZ
@given(custom_id=discord_custom_ids(), who=st.sampled_from([(BOB, True), (MALLORY, False), (ALICE, False)]))
def test_a_hostile_button_click_is_answered_and_runs_nothing(
        ooda: ChatOoda, baseline: Any, std_errors: ErrorRecords, custom_id: str, who: tuple[int, bool]) -> None:
    user, oncall = who
    assume(not may_change_the_task(ooda, oncall, custom_id.replace(":", " "), custom_id.rsplit(":", 1)[-1]))
    fake = ooda.discord

    async def press() -> None:
        # discord.py dispatches a click only to a button the clicked message carries (Discord sends
        # nothing else), so the hostile id rides on a copy of the proposal message that carries it.
        forged = {**fake.messages[ooda.message_id], "id": str(new_id()), "components": [
            {"type": 1, "components": [{"type": 2, "style": 1, "label": "Approve", "custom_id": custom_id}]}]}
        fake.messages[int(forged["id"])] = forged
        interaction = await fake.click(int(forged["id"]), custom_id, user_id=user,
                                       role_ids=[ONCALL_ROLE] if oncall else [], name="Fuzzer")
        if CUSTOM_ID_PATTERN.fullmatch(custom_id):  # a button the bot could have posted: it must answer
            # A deferred answer (callback type 5) is followed up; a message (4) or a modal (9) is the whole answer.
            await fake.wait_for(lambda: fake.followups.get(interaction) or (
                fake.callbacks.get(interaction, {}).get("type") in (4, 9)))

    with no_errors_logged(std_errors):
        ooda.run(press())

    nothing_changed(ooda, baseline)


OPS_OPTIONS = {
    "show": {"task": "int"}, "approve": {"task": "int", "confirmation": "str"}, "undo": {"task": "int"},
    "reject": {"task": "int", "reason": "str"}, "run": {"playbook": "str", "args": "str"},
    "pause": {"reason": "str"}, "status": {}, "tasks": {}, "help": {}, "digest": {},
}
DISCORD_INT = st.one_of(st.integers(-(2**53), 2**53), st.sampled_from([0, -1, 2**31, 2**53, 99999999999999999999]))


@FUZZ
@given(data=st.data(), who=st.sampled_from([(MALLORY, False), (BOB, True)]))
def test_a_hostile_ops_command_is_answered_and_runs_nothing(
        ooda: ChatOoda, baseline: Any, std_errors: ErrorRecords, data: st.DataObject, who: tuple[int, bool]) -> None:
    user, oncall = who
    subcommand = data.draw(st.sampled_from(sorted(OPS_OPTIONS)))
    options = {name: data.draw(DISCORD_INT if kind == "int" else st.one_of(ops_texts(), st.text(max_size=100)))
               for name, kind in OPS_OPTIONS[subcommand].items()}
    assume(not (oncall and subcommand in ("pause", "run")))
    assume(not may_change_the_task(ooda, oncall, subcommand, *options.values()))
    fake = ooda.discord

    async def invoke() -> None:
        interaction = await fake.slash("ops", subcommand, options, user_id=user,
                                       role_ids=[ONCALL_ROLE] if oncall else [], name="Fuzzer")
        await fake.wait_followup(interaction)

    with no_errors_logged(std_errors):
        ooda.run(invoke())

    nothing_changed(ooda, baseline)


# -- after all of it -----------------------------------------------------------------------------


def test_after_the_hostile_payloads_ooda_still_answers(ooda: ChatOoda, http: httpx.Client, baseline: Any) -> None:
    nothing_changed(ooda, baseline)
    body = urlencode({"command": "/ops", "text": "status", "user_id": "U_MALLORY",
                      "response_url": ooda.slack.response_url("after")})
    r = http.post("/slack/events", content=body, headers=signed(body))
    assert r.status_code == 200, r.text
    ooda.run(ooda.slack.wait_until(lambda: any(key == "after" for key, _ in ooda.slack.responses)))

    valid = _crashloop()
    r = http.post("/webhooks/alertmanager", content=valid, headers=auth_headers("alertmanager", valid))
    assert r.status_code == 202, r.text
