"""Outside text made inert for chat, with every URL left exactly as it was (bot/chat/inert_text.py)."""

from __future__ import annotations

import re

from bot.chat import inert_text as chat_text

URLS = ["https://wiki.example.com/Foo_(bar)", "https://x.example/a?who=@here&b=*c*", "http://h:9090/graph?g0.expr=a_b"]


def urls_in(text: str) -> list[str]:
    return re.findall(r"https?://[^\s<>`\\]+", text)


def test_urls_survive_every_neutralizing_byte_for_byte():
    text = "see " + ", and ".join(URLS) + "."
    for out in (chat_text.neutralize(text), chat_text.discord_markdown(text)):
        for url in URLS:
            assert url in out
    slack = chat_text.slack_mrkdwn(text)
    for url in URLS:
        assert url.replace("&", "&amp;") in slack  # Slack shows &amp; as & in a link it makes


def test_a_masked_link_stops_being_one_and_its_url_stays_whole():
    out = chat_text.discord_markdown("[Approve now](https://evil.example/approve)")
    assert "](" not in out
    assert "https://evil.example/approve" in out
    assert chat_text.ZWSP not in "".join(urls_in(out))


def test_mentions_formatting_and_bidi_are_defused_outside_urls():
    text = "@everyone <@&42> **loud** _it_ \u202eevil\u202c"
    discord = chat_text.discord_markdown(text)
    assert "@everyone" not in discord and "<@&" not in discord and "**" not in discord.replace("\\*", "")
    assert "\u202e" not in discord and "\u202c" not in discord
    slack = chat_text.slack_mrkdwn(text)
    assert "<" not in slack and " _it_" not in slack and "@everyone" not in slack


def test_our_own_code_spans_are_kept_as_written():
    text = "full text: `/ops show 3` or `ooda show 3`"
    assert chat_text.discord_markdown(text) == text
    assert chat_text.slack_mrkdwn(text) == text
