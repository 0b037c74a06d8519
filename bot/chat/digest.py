"""The daily digest for managers: the day's figures with their 7-day trends, a chart, and the
alerts no playbook matched (the playbooks to write next).

``build_digest`` answers a ``Digest``: the figures (bot/store/digest_figures.py, one SQL query each),
their words (bot/chat/digest_text.py) and, when asked, the chart (bot/chat/digest_chart.py, drawn in a
worker thread). Without a day it covers the 24 hours up to now (the scheduled digest); with one,
that calendar day in the digest's time zone (``ooda digest --date``).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Protocol
from zoneinfo import ZoneInfo

from bot.chat.digest_chart import render_chart_async
from bot.chat.digest_text import Digest, DigestSection, build_sections, title_of
from bot.store.digest_figures import calendar_days, rolling_days
from bot.store.ports import DigestReads, SignalReads

UNMATCHED_IN_DIGEST = 5


class DigestStore(DigestReads, SignalReads, Protocol):
    """The store ports the digest reads: its figures and the alerts no playbook matched."""


async def build_digest(store: DigestStore, *, now: datetime, zone: str = "UTC", day: date | None = None,
                       chart: tuple[int, int, int] | None = None) -> Digest:
    """The digest for ``day`` (or the 24 hours to ``now``) in ``zone``.

    Args:
        chart: (width px, height px, dpi) to draw the chart with, or None for no chart.
    """
    tz = ZoneInfo(zone)
    days = rolling_days(now, tz) if day is None else calendar_days(day, tz)
    figures = await store.digest_figures(days)
    # Unmatched alerts are those seen since the day began (for a past day, up to now: an alert
    # name still unmatched today is still a playbook to write).
    unmatched, names = await store.unmatched_signals(days[-1].start.isoformat(), UNMATCHED_IN_DIGEST)
    sections = build_sections(figures, unmatched, names)
    if not any(t[-1] for t in figures.alerts_by_source.values()) and not figures.tasks["opened"][-1]:
        sections.insert(0, DigestSection("Quiet day", ["No alerts and no new tasks. Quiet day."]))
    digest = Digest(title=title_of(days[-1].label, zone, rolling=day is None), day=days[-1].label, zone=zone,
                    sections=sections, figures=figures)
    if chart is not None:
        width, height, dpi = chart
        digest.chart_png = await render_chart_async(figures, width_px=width, height_px=height, dpi=dpi)
    return digest
