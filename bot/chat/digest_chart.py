"""The digest's chart: three panels over the 7 days (alerts received by source, tasks by outcome,
time to resolution p50/p90), drawn with matplotlib's Agg backend into a PNG.

Drawing takes tens of milliseconds of CPU, so ``render_chart_async`` runs it in a worker thread,
off the event loop. Only matplotlib's object API is used (``Figure`` and an Agg canvas, never
``pyplot``): pyplot keeps global state that is not safe across threads, a Figure of one's own is.
Each series has a fixed colour (``COLOURS``), so a reader learns them once, and the tests look for
those colours' pixels to tell a drawn series from a blank panel.
"""

from __future__ import annotations

import asyncio
import io
from typing import Any

from bot.store.digest_figures import Figures

# Series colours (Okabe-Ito, readable with the common colour-vision deficiencies).
SOURCE_COLOURS = ["#0072B2", "#56B4E9", "#332288", "#88CCEE", "#44AA99"]
COLOURS = {
    "completed": "#009E73", "failed": "#D55E00", "rejected": "#999999", "escalated": "#E69F00",
    "p50": "#0072B2", "p90": "#CC79A7",
}
OUTCOMES = ("completed", "failed", "rejected", "escalated")


def source_colours(figures: Figures) -> dict[str, str]:
    """A colour per alert source, in the figures' order; sources past the palette share its last colour."""
    return {source: SOURCE_COLOURS[min(i, len(SOURCE_COLOURS) - 1)]
            for i, source in enumerate(figures.alerts_by_source)}


def render_chart(figures: Figures, *, width_px: int = 1200, height_px: int = 900, dpi: int = 100) -> bytes:
    """The chart as PNG bytes of exactly ``width_px`` x ``height_px``."""
    # Imported here: matplotlib costs ~0.3 s and tens of MB to import, paid only by a digest.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_px / dpi, height_px / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    labels = [d.label.strftime("%a %d") for d in figures.days]
    x = list(range(len(labels)))
    alerts, tasks, times = fig.subplots(3, 1, sharex=True)
    fig.suptitle(f"Ooda: the 7 days to {figures.days[-1].label:%Y-%m-%d}", fontsize=13)

    bottom = [0] * len(x)
    for source, colour in source_colours(figures).items():
        counts = figures.alerts_by_source[source]
        alerts.bar(x, counts, bottom=bottom, color=colour, label=source, width=0.7)
        bottom = [b + c for b, c in zip(bottom, counts, strict=True)]
    _panel(alerts, "Alerts received", "alerts", integer=True)

    width = 0.8 / len(OUTCOMES)
    for n, outcome in enumerate(OUTCOMES):
        offsets = [i - 0.4 + width * (n + 0.5) for i in x]
        tasks.bar(offsets, figures.tasks.get(outcome, [0] * len(x)), width=width, color=COLOURS[outcome],
                  label=outcome)
    _panel(tasks, "Tasks by outcome", "tasks", integer=True)

    resolution = figures.time_to_resolution
    for key in ("p50", "p90"):
        values = getattr(resolution, key) if resolution else [None] * len(x)
        minutes = [None if v is None else v / 60 for v in values]
        points = [(i, m) for i, m in zip(x, minutes, strict=True) if m is not None]
        if points:
            times.plot([p[0] for p in points], [p[1] for p in points], color=COLOURS[key], linewidth=3,
                       marker="o", markersize=7, label=key)
    _panel(times, "Time to resolution", "minutes")
    times.set_xticks(x, labels)
    times.set_xlim(-0.6, len(x) - 0.4)

    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=dpi)
    return out.getvalue()


def _panel(ax: Any, title: str, unit: str, *, integer: bool = False) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set_title(title, loc="left", fontsize=11)
    ax.set_ylabel(unit)
    top = ax.get_ylim()[1]
    ax.set_ylim(0, max(top * 1.25, 1))  # headroom for the legend above the tallest bar
    if integer:
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(axis="y", alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", fontsize=8, frameon=False, ncols=5)


async def render_chart_async(figures: Figures, *, width_px: int = 1200, height_px: int = 900,
                             dpi: int = 100) -> bytes:
    """``render_chart`` in a worker thread, so the event loop keeps serving meanwhile."""
    return await asyncio.to_thread(render_chart, figures, width_px=width_px, height_px=height_px, dpi=dpi)
