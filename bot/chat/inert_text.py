"""Text from outside (alert labels, annotations, reasons people type) made inert for chat.

An alert's label can hold ``@everyone``, ``<!channel>``, ``<@&123>``, ``*bold*``, a masked link
``[Approve now](https://evil.example)`` or bidi control characters that reorder what a person
reads. None of that may mention, link or format anything on Slack or Discord. The one thing the
neutralizing must never do is change a URL a person may copy: a zero-width space or a backslash
inside a URL breaks it, so every function here splits the text into URLs (kept byte for byte) and
the rest (made inert), and the inline code spans the bot writes itself (`` `ooda show 3` ``),
which neither platform formats, are kept too.

    neutralize(text)        the same on every surface: bidi controls dropped, mentions defused
    slack_mrkdwn(text)      for Slack mrkdwn: neutralize + ``&<>`` escaped + formatting openers defused
    discord_markdown(text)  for Discord markdown: neutralize + formatting characters backslash-escaped
"""

from __future__ import annotations

import re
from collections.abc import Callable

ZWSP = "\u200b"

# Bidi embeddings, overrides, isolates and marks: they make "evil.example/gro.elgoog" read backwards.
_BIDI = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
# A URL ends at whitespace, angle brackets and quotes; a trailing ")" only belongs to it when the
# URL opened one (Wikipedia's ".../Foo_(bar)"), else it closes a masked link or a sentence.
_URL = re.compile(r"https?://[^\s<>\"'`]+")
_TRAILING = ".,;:!?"
_CODE = re.compile(r"`[^`\n]+`")

_AT_WORD = re.compile(r"@(?=(here|everyone|channel)\b)", re.IGNORECASE)
_ANGLE_MENTION = re.compile(r"<(?=[!@#])")
# A masked link: "[text](" on Discord. A space between "]" and "(" leaves the words and the URL.
_MASKED = re.compile(r"\]\(")
# Slack mrkdwn opens *bold*, _italic_, ~strike~ and `code` only at the start of the text or after a
# non-word character; a zero-width space before such an opener leaves the character and its words.
_SLACK_OPENER = re.compile(r"(?:(?<=^)|(?<=[^0-9A-Za-z]))(?=[*_~`])")
# Discord markdown: these characters format anywhere, and a backslash before one shows it as is.
_DISCORD_SPECIAL = re.compile(r"([\\*_~|`\[\]])")
_DISCORD_LINE_START = re.compile(r"(?m)^(\s*)([#>-])")


def _url_end(url: str) -> str:
    while url and (url[-1] in _TRAILING or (url[-1] == ")" and url.count("(") < url.count(")"))):
        url = url[:-1]
    return url


def _split(text: str, *, keep_code: bool) -> list[tuple[bool, str]]:
    """``text`` as (kept, piece) parts: URLs (and code spans) kept as they are, the rest to defuse."""
    parts: list[tuple[bool, str]] = []
    pos = 0
    pattern = re.compile(f"{_URL.pattern}|{_CODE.pattern}") if keep_code else _URL
    for match in pattern.finditer(text):
        piece = match.group(0)
        kept = piece if piece.startswith("`") else _url_end(piece)
        start, end = match.start(), match.start() + len(kept)
        if start > pos:
            parts.append((False, text[pos:start]))
        parts.append((True, kept))
        pos = end
    if pos < len(text):
        parts.append((False, text[pos:]))
    return parts


def _outside_urls(text: str, defuse: Callable[[str], str], *, keep_code: bool = False) -> str:
    return "".join(piece if kept else defuse(piece) for kept, piece in _split(text, keep_code=keep_code))


def _defuse_mentions(piece: str) -> str:
    piece = _AT_WORD.sub("@" + ZWSP, piece)
    return _ANGLE_MENTION.sub("<" + ZWSP, piece)


def neutralize(text: str) -> str:
    """Mentions defused (a zero-width space after ``@``/``<``) outside URLs; bidi controls dropped."""
    return _outside_urls(_BIDI.sub("", text), _defuse_mentions)


def slack_mrkdwn(text: str) -> str:
    """``text`` for a Slack mrkdwn field: escaped so it mentions, links and formats nothing.

    ``&``, ``<`` and ``>`` are escaped everywhere (Slack's own rule; inside a URL Slack shows
    ``&amp;`` as ``&``, so the URL a person copies is unchanged).
    """
    def defuse(piece: str) -> str:
        return _SLACK_OPENER.sub(ZWSP, _defuse_mentions(piece))

    inert = _outside_urls(_BIDI.sub("", text), defuse, keep_code=True)
    return inert.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def discord_markdown(text: str) -> str:
    """``text`` for a Discord message or embed: formatting characters escaped, masked links broken.

    Discord shows ``\\*`` as ``*``, so the words read the same; mentions are also refused by the
    bot's ``allowed_mentions``, this keeps them from even rendering as a highlighted name.
    """
    def defuse(piece: str) -> str:
        piece = _MASKED.sub("] (", _defuse_mentions(piece))
        return _DISCORD_SPECIAL.sub(r"\\\1", piece)

    # Headings, quotes and lists open only at a line's start, where no URL or code span begins.
    return _DISCORD_LINE_START.sub(r"\1\\\2", _outside_urls(_BIDI.sub("", text), defuse, keep_code=True))
