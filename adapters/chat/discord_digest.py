"""The digest on Discord: one embed (a field per part of the digest, its lines in a code block so
the 7-day sparklines line up) with the chart attached and shown as the embed's image.

Every text is cut to Discord's embed limits (field values 1024, 25 fields, 6000 in all) first, so
a long alert name cannot make the digest undeliverable.
"""

from __future__ import annotations

import io

import discord

from adapters.chat.discord_embeds import DESCRIPTION_MAX, EMBED_TOTAL_MAX, FIELD_VALUE_MAX, TITLE_MAX
from bot.chat import wording
from bot.chat.digest_text import Digest

CHART_FILENAME = "ooda-digest-{day}.png"
FIELD_NAME_MAX = 256
MAX_FIELDS = 25
COLOUR = 0x0072B2


def digest_embed(digest: Digest, *, chart_filename: str | None) -> discord.Embed:
    embed = discord.Embed(title=wording.truncate(digest.title, TITLE_MAX), colour=COLOUR)
    budget = EMBED_TOTAL_MAX - len(embed.title or "") - 200  # room for the description
    for section in digest.sections[:MAX_FIELDS]:
        name = wording.truncate(section.heading, FIELD_NAME_MAX)
        lines = wording.neutralize_mentions("\n".join(section.lines))
        value = f"```{wording.truncate(lines, FIELD_VALUE_MAX - 6)}```"
        if len(name) + len(value) > budget:
            break
        budget -= len(name) + len(value)
        embed.add_field(name=name, value=value, inline=False)
    if chart_filename:
        embed.set_image(url=f"attachment://{chart_filename}")
        embed.description = "The 7-day chart: alerts by source, tasks by outcome, time to resolution."
    else:
        embed.description = "No chart this time; `ooda digest --png FILE` draws it."
    embed.description = wording.truncate(embed.description, DESCRIPTION_MAX)
    return embed


def chart_file(digest: Digest) -> discord.File | None:
    if digest.chart_png is None:
        return None
    return discord.File(io.BytesIO(digest.chart_png), filename=CHART_FILENAME.format(day=digest.day.isoformat()),
                        description="Ooda's 7-day chart")
