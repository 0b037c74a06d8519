"""Draw docs/digest-chart.png (the README's picture) and print the digest's text, from a store
seeded with a plausible week (tests/digest_seed.py): ``python docs/make_digest_chart.py``."""

from __future__ import annotations

import asyncio
import sys
import tempfile
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.chat.digest import build_digest  # noqa: E402
from bot.model.events import EventBus  # noqa: E402
from bot.store.sqlite import SqliteStore  # noqa: E402
from tests.digest_seed import DAY, seed_busy_week  # noqa: E402


async def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "ooda.db"
        await seed_busy_week(path)
        store = SqliteStore(path, EventBus())
        await store.open()
        try:
            now = datetime.combine(DAY + timedelta(days=1), time(9), UTC)
            digest = await build_digest(store, now=now, day=DAY, chart=(1200, 900, 100))
        finally:
            await store.close()
    assert digest.chart_png is not None
    out = ROOT / "docs" / "digest-chart.png"
    out.write_bytes(digest.chart_png)
    print(digest.text)
    print(f"\nchart: {out.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    asyncio.run(main())
