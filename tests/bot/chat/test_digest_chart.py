"""The digest's chart is a real PNG of the configured size with every series drawn."""

from __future__ import annotations

import asyncio
import io
from zoneinfo import ZoneInfo

import pytest
from matplotlib.image import imread

from bot.chat.digest_chart import COLOURS, OUTCOMES, render_chart, render_chart_async, source_colours
from bot.model.events import EventBus
from bot.store.digest_figures import Figures, calendar_days
from bot.store.sqlite import SqliteStore
from tests.digest_seed import DAY, seed_busy_week

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
async def figures(tmp_path) -> Figures:
    path = tmp_path / "ooda.db"
    await seed_busy_week(path)
    store = SqliteStore(path, EventBus())
    await store.open()
    try:
        return await store.digest_figures(calendar_days(DAY, ZoneInfo("UTC")))
    finally:
        await store.close()


def pixels_of(png: bytes) -> set[tuple[int, int, int]]:
    image = imread(io.BytesIO(png), format="png")
    rgb = (image[:, :, :3] * 255).round().astype(int).reshape(-1, 3)
    return {tuple(int(c) for c in pixel) for pixel in rgb}


def rgb(hex_colour: str) -> tuple[int, int, int]:
    return tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def test_the_chart_is_a_png_of_the_configured_size_with_every_series(figures):
    png = render_chart(figures, width_px=1000, height_px=700, dpi=100)
    assert png.startswith(PNG_MAGIC)
    image = imread(io.BytesIO(png), format="png")
    assert image.shape[:2] == (700, 1000)
    present = pixels_of(png)
    series = {**{f"source {s}": c for s, c in source_colours(figures).items()},
              **{outcome: COLOURS[outcome] for outcome in OUTCOMES}, "p50": COLOURS["p50"], "p90": COLOURS["p90"]}
    assert len(source_colours(figures)) == 3
    missing = [name for name, colour in series.items() if rgb(colour) not in present]
    assert missing == []


def test_an_empty_week_draws_axes_without_series(tmp_path):
    empty = Figures(days=calendar_days(DAY, ZoneInfo("UTC")))
    empty.tasks = {k: [0] * 7 for k in ("opened", *OUTCOMES, "undone")}
    png = render_chart(empty, width_px=600, height_px=400)
    present = pixels_of(png)
    assert imread(io.BytesIO(png), format="png").shape[:2] == (400, 600)
    assert rgb(COLOURS["p50"]) not in present and len(present) > 2  # not blank: axes and labels


async def test_drawing_runs_off_the_event_loop(figures):
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    ticker = asyncio.create_task(tick())
    png = await render_chart_async(figures)
    ticker.cancel()
    assert png.startswith(PNG_MAGIC)
    assert ticks > 10  # the loop kept running while the chart was drawn
