"""One long evidence item no longer hides the others: every item shows, each bounded, with a pointer.

Through the real slack-bolt and discord.py against the fakes, which check Block Kit's and
Discord's limits on every message; the proposal goes through ``fit_evidence`` as the notifier
sends it.
"""

from __future__ import annotations

import json

import pytest

from adapters.chat import slack_blocks
from bot.chat.evidence_fit import CHAT_EVIDENCE_BUDGET, EARLIER_LINES_CUT, fair_shares, fit_evidence, item_size
from bot.chat.inert_text import ZWSP
from bot.model.proposals import Evidence, Proposal
from tests.adapters.chat import test_discord, test_slack
from tests.fakes.core import FakeCommands, make_proposal
from tests.fakes.discord import FakeDiscord
from tests.fakes.slack import FakeSlack

GRAPH = "http://prometheus:9090/graph?g0.expr=" + "up%7Bjob%3D%22node%22%7D" * 40  # a 960-character link


def with_one_long_item() -> Proposal:
    return make_proposal(7).model_copy(update={"evidence": [
        Evidence(kind="alert", title="NodeFilesystemAlmostOutOfSpace " + "very long title " * 120, url=GRAPH,
                 snippet="Filesystem on /var has 2% left. " + "stack frame\n" * 600),
        Evidence(kind="metric", title="free space trend", snippet="97% used, +3% in the last hour"),
        Evidence(kind="command", title="df -h /var", snippet="/dev/nvme1n1p1  100G  97G  3G  97% /var"),
        Evidence(kind="command", title="du -sh /var/*", snippet="61G /var/log\n30G /var/tmp"),
    ]})


def test_shares_keep_short_items_whole_and_split_the_rest():
    assert fair_shares([50, 50, 5000], 800) == [50, 50, 700]
    assert fair_shares([900, 50, 900], 800) == [375, 50, 375]
    assert fair_shares([10, 20], 800) == [10, 20]


def test_a_proposal_whose_evidence_fits_is_left_alone():
    p = make_proposal(7)
    assert fit_evidence(p) is p


def test_every_item_is_bounded_and_only_the_long_one_is_cut():
    fitted = fit_evidence(with_one_long_item())
    first, *others = fitted.evidence
    assert others == with_one_long_item().evidence[1:]
    assert first.snippet.endswith("(more: `ooda show 7`)")
    assert first.url is None  # too long for its share: cutting a link would break it
    assert len(first.title) + len(first.snippet) < CHAT_EVIDENCE_BUDGET


@pytest.fixture
async def slack():
    async with FakeSlack() as fake:
        yield fake


@pytest.fixture
async def discord_fake():
    async with FakeDiscord(roles={test_discord.APPROVER_ROLE: "approver"}) as fake:
        yield fake


async def test_slack_shows_every_evidence_item(slack):
    surface = test_slack.make_surface(slack, FakeCommands(make_proposal(7)))
    await surface.start()
    try:
        await surface.post_proposal(fit_evidence(with_one_long_item()), None)
    finally:
        await surface.stop()
    # Slack's mrkdwn neutralizing puts a zero-width space before a formatting opener such as the
    # "*" of "/var/*" (bot/chat/inert_text.py); a person reads the text without it.
    text = json.dumps(slack.calls_to("chat.postMessage")[0].args["blocks"], ensure_ascii=False).replace(ZWSP, "")
    for title in ("free space trend", "df -h /var", "du -sh /var/*", "NodeFilesystemAlmostOutOfSpace"):
        assert title in text
    assert "more: `ooda show 7`" in text
    assert " more (full text" not in text  # nothing was counted away


async def test_slack_without_the_fit_loses_the_other_items(slack):
    # The failure this guards against: the renderer alone fills its budget with the long item.
    text = json.dumps([b.to_dict() for b in slack_blocks.proposal_blocks(with_one_long_item())])
    assert "du -sh /var/*" not in text


async def test_discord_shows_every_evidence_item(discord_fake):
    surface = test_discord.make_surface(discord_fake, FakeCommands(make_proposal(7)))
    await surface.start()
    try:
        ref = await surface.post_proposal(fit_evidence(with_one_long_item()), None)
    finally:
        await surface.stop()
    embed = discord_fake.messages[int(ref.message_id)]["embeds"][0]
    [evidence] = [f["value"] for f in embed["fields"] if f["name"] == "Evidence"]
    for title in ("free space trend", "df -h /var", "du -sh /var/", "NodeFilesystemAlmostOutOfSpace"):
        assert title in evidence, evidence
    assert "ooda show 7" in evidence


def test_a_cut_item_leaves_its_meaning_out_and_a_log_keeps_its_last_lines():
    log = EARLIER_LINES_CUT + "".join(f"line {i} of the log\n" for i in range(40)) + "java.lang.OutOfMemoryError"
    described = make_proposal(7).model_copy(update={"evidence": [
        Evidence(kind="tool:k8s.logs", title="previous_logs", snippet=log,
                 meaning="The last lines the crashed container wrote before it died"),
        *[Evidence(kind="tool:k8s.events", title=f"events {i}", snippet="Warning BackOff " * 20,
                   meaning="Recent events of the workload and its pods, newest first") for i in range(4)],
    ]})
    fitted = fit_evidence(described)
    assert sum(item_size(ev) for ev in fitted.evidence) <= CHAT_EVIDENCE_BUDGET  # meanings counted too
    logs = fitted.evidence[0]
    assert logs.meaning == ""
    assert logs.snippet.startswith("… line ")
    assert logs.snippet.endswith("java.lang.OutOfMemoryError (more: `ooda show 7`)")
