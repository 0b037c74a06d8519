"""Hostile alert text on both platforms: nothing it holds mentions, links or formats anything.

A KubePodCrashLooping alert whose summary and description carry every trick a label or annotation
can: broadcast and role mentions in Slack's and Discord's syntax, markdown, a masked link and a
Slack link that say "Approve now", and a bidi override. The real slack-bolt and discord.py post the
proposal to the fakes; what they received is checked as the platform would read it. A plain URL in
the same text must arrive byte for byte, so a person can still copy it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from bot.chat import inert_text as chat_text
from tests.adapters.chat.chat_rig import ooda_on_both, sample

SAFE_URL = "https://wiki.example.com/runbooks/a_b*c~d?who=@here&x=1"
HOSTILE = ("@everyone @here <!channel> <!here> <@U0BOSS> <!subteam^S1> <@&1234> <#C1> *bold* _it_ ~strike~ "
           "**loud** __under__ ||spoiler|| [Approve now](https://evil.example/approve) "
           "<https://evil.example/approve|Approve now> \u202eevil\u202c "
           f"see {SAFE_URL} for more")


def hostile_crashloop() -> bytes:
    body = json.loads(sample("alertmanager-kube-pod-crashlooping"))
    for alert in body["alerts"]:
        alert["annotations"]["summary"] = HOSTILE
        alert["annotations"]["description"] = HOSTILE
    return json.dumps(body).encode()


def slack_texts(message: dict[str, Any]) -> list[str]:
    texts = [message["text"]]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") in {"mrkdwn", "plain_text"}:
                texts.append(node["text"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(message["blocks"])
    return texts


def discord_texts(message: dict[str, Any]) -> list[str]:
    embed = message["embed"]
    return [embed.get("title", ""), embed.get("description", ""), *(f["value"] for f in embed.get("fields", []))]


async def test_hostile_alert_text_mentions_links_and_formats_nothing_on_slack_or_discord(tmp_path: Path):
    async with ooda_on_both(tmp_path) as rig:
        await rig.post("alertmanager", hostile_crashloop())
        (task,) = await rig.app.store.list_tasks(open_only=False)
        on_slack = await rig.slack_message(task.id)
        on_discord = await rig.discord_message(task.id)

    slack = slack_texts(on_slack)
    assert any(HOSTILE.split(" ")[0][1:] in t for t in slack)  # the words are still there to read
    for text in slack:
        # Slack mentions and links are "<" followed by !, @, # or a URL: none may come from the alert.
        assert not re.search(r"<[!@#]", text), text
        assert "<https://evil.example" not in text and "|Approve now>" not in text
        assert "@everyone" not in text and "@here " not in text
        assert "\u202e" not in text and "\u202c" not in text
        # A formatting opener after a space is defused by a zero-width space before it.
        assert " *bold*" not in text and " _it_" not in text and " ~strike~" not in text
    # The fallback text (notifications) is escaped like the blocks.
    assert "&lt;" in on_slack["text"] or "<" not in on_slack["text"]
    assert any(SAFE_URL.replace("&", "&amp;") in t for t in slack)  # Slack reads &amp; as & inside a URL

    discord = discord_texts(on_discord)
    for text in discord:
        assert "](https://evil.example" not in text  # a masked link needs "](" together
        assert "@everyone" not in text and "<@&1234>" not in text
        assert "\u202e" not in text
        assert "**loud**" not in text and "||spoiler||" not in text and " *bold*" not in text
    assert any(SAFE_URL in t for t in discord), "a URL must arrive unchanged, to be copied"
    assert all(chat_text.ZWSP not in url for url in re.findall(r"https?://\S+", " ".join(discord + slack)))
