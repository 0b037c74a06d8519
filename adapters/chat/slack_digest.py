"""Block Kit for the digest on Slack: a header, one section per part of the digest (its lines in a
code block, so the 7-day sparklines line up), and a context line pointing at the chart that is
uploaded beside it. Built with slack_sdk's models, which check Slack's limits when serialized;
every text is cut to its limit first, so a long alert name cannot make the digest undeliverable.
"""

from __future__ import annotations

from typing import Any

from slack_sdk.models.blocks import ContextBlock, HeaderBlock, MarkdownTextObject, PlainTextObject, SectionBlock

from adapters.chat.slack_blocks import FALLBACK_LIMIT, HEADER_LIMIT, SECTION_LIMIT, escape
from bot.chat import wording
from bot.chat.digest_text import Digest

CHART_FILENAME = "ooda-digest-{day}.png"


def digest_message(digest: Digest, *, with_chart: bool) -> dict[str, Any]:
    """``chat.postMessage`` arguments (less the channel): blocks and the plain-text fallback."""
    blocks: list[Any] = [HeaderBlock(text=PlainTextObject(text=wording.truncate(digest.title, HEADER_LIMIT)))]
    for section in digest.sections:
        heading = f"*{escape(section.heading)}*\n"
        # The fence and heading take their share of the section's limit before the lines do.
        body = wording.truncate(escape("\n".join(section.lines)), SECTION_LIMIT - len(heading) - 8)
        blocks.append(SectionBlock(text=MarkdownTextObject(text=f"{heading}```{body}```")))
    note = ("The 7-day chart is attached below." if with_chart
            else "No chart this time; `ooda digest --png FILE` draws it.")
    blocks.append(ContextBlock(elements=[MarkdownTextObject(text=note)]))
    return {"text": wording.truncate(escape(digest.text), FALLBACK_LIMIT), "blocks": [b.to_dict() for b in blocks],
            "unfurl_links": False}
