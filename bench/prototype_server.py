"""The yardstick for durable intake: the smallest server that stores webhooks the way the issue's
prototype did, measured in the same run as the bare handler and Ooda.

aiohttp on uvloop, one process. The handler reads the body, parses the JSON and queues one row
per alert (fingerprint, labels, the alert as JSON); one writer task takes whatever queued while
the previous commit ran, writes it with one ``executemany`` and commits (WAL,
``synchronous=FULL``), then answers those requests with 202. Alerts are deduplicated by
fingerprint, as any intake must be. No auth, no validation beyond JSON, no audit record, no
metrics, nothing downstream: what it keeps of the bare handler's rate is the price of the durable
commit alone. Prints its port on stdout once it listens; stops on SIGTERM.

    python bench/prototype_server.py DB_PATH
"""

from __future__ import annotations

import asyncio
import json
import sys

import aiosqlite
from aiohttp import web
from baseline_serving import run, serve_until_stopped

UPSERT = (
    "INSERT INTO alerts (fingerprint, labels, alert) VALUES (?, ?, ?) "
    "ON CONFLICT(fingerprint) DO UPDATE SET labels = excluded.labels, alert = excluded.alert"
)


class Writer:
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn
        self._queue: asyncio.Queue[tuple[list[tuple[str, str, str]], asyncio.Future[None]]] = asyncio.Queue()

    async def store(self, rows: list[tuple[str, str, str]]) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._queue.put((rows, done))
        await done

    async def run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            await self._conn.executemany(UPSERT, [row for rows, _ in batch for row in rows])
            await self._conn.commit()
            for _, done in batch:
                done.set_result(None)


async def serve(db_path: str) -> None:
    conn = await aiosqlite.connect(db_path)
    await conn.execute("PRAGMA journal_mode=WAL")
    await conn.execute("PRAGMA synchronous=FULL")
    await conn.execute("CREATE TABLE IF NOT EXISTS alerts (fingerprint TEXT PRIMARY KEY, labels TEXT, alert TEXT)")
    await conn.commit()
    writer = Writer(conn)
    writer_task = asyncio.create_task(writer.run())

    async def handle(request: web.Request) -> web.Response:
        alerts = json.loads(await request.read())["alerts"]
        await writer.store([(a["fingerprint"], json.dumps(a["labels"]), json.dumps(a)) for a in alerts])
        return web.json_response({"accepted": len(alerts)}, status=202)

    app = web.Application()
    app.add_routes([web.post("/webhooks/{source}", handle)])
    await serve_until_stopped(app)
    writer_task.cancel()
    await conn.close()


if __name__ == "__main__":
    run(serve(sys.argv[1]))
    sys.exit(0)
