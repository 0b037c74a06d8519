"""The digest through a running Ooda: GET /api/v1/digest?date=, its chart, and /ops digest posting
it now into each surface's digest channel."""

from __future__ import annotations

import asyncio
import io

from matplotlib.image import imread
from structlog.testing import capture_logs

from bot.chat.chatops import parse_ops, run_ops
from bot.policy.identity import Actor
from tests.harness import ADMIN, client, running_app, running_standin

ALICE = Actor(id="alice", display="Alice", roles=frozenset({"oncall"}), via="slack")
DIGEST = {"digest": {"channels": {"local": "digests"}, "chart": {"width_px": 640, "height_px": 480}}}


async def test_the_digest_of_a_day_and_its_chart_over_the_api(tmp_path):
    async with running_standin() as standin, running_app(tmp_path, standin, DIGEST) as app, client(app) as http:
        body = (await http.get("/api/v1/digest", params={"date": "2026-01-15"}, headers=ADMIN)).json()
        chart = await http.get("/api/v1/digest/chart.png", params={"date": "2026-01-15"}, headers=ADMIN)
        bad = await http.get("/api/v1/digest", params={"date": "yesterday"}, headers=ADMIN)
        unknown = await http.get("/api/v1/digest", params={"since": "24h"}, headers=ADMIN)
        anonymous = await http.get("/api/v1/digest")

    assert body["day"] == "2026-01-15" and body["figures"]["days"][0]["day"] == "2026-01-09"
    assert body["digest"].startswith("Ooda digest: Thursday 2026-01-15 (UTC)")
    assert body["figures"]["tasks"]["opened"] == [0] * 7
    assert chart.status_code == 200 and chart.headers["content-type"] == "image/png"
    assert imread(io.BytesIO(chart.content), format="png").shape[:2] == (480, 640)
    assert bad.status_code == 400 and bad.json()["parameter"] == "date" and "YYYY-MM-DD" in bad.json()["message"]
    assert unknown.status_code == 400 and unknown.json()["parameter"] == "since"
    assert anonymous.status_code == 401


async def test_ops_digest_posts_it_now_into_the_digest_channel(tmp_path):
    async with running_standin() as standin, running_app(tmp_path, standin, DIGEST) as app:
        with capture_logs() as logs:
            reply = await run_ops(parse_ops("digest"), app.commands, ALICE)
            await asyncio.gather(*app.commands._background)  # the reply does not wait for the chart
        today = app.core.clock().date().isoformat()
        chart = app.settings.data_path / "digests" / f"digest-{today}.png"
        assert reply.text.startswith("Posting the digest of the last 24 hours, with its 7-day chart, to local "
                                     "digests now.")
        [posted] = [e for e in logs if e["event"] == "digest"]
        assert posted["text"].startswith("Ooda digest: the 24 hours to now (UTC)") and posted["chart"] == str(chart)
        assert chart.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
        # Posting now does not count as the scheduled one: the day's digest still goes out.
        assert await app.store.get_setting(f"digest.sent.{today}") is None
