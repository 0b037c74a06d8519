"""The baseline for the intake benchmark: a bare aiohttp handler, nothing stored.

Same stack as Ooda's server (aiohttp on uvloop, one process): read the body, parse the JSON,
answer 202 with a small JSON body. Whatever Ooda does on top of this (auth, validation into
Signals, the durable commit, metrics) is what the benchmark's ratio prices. Prints its port on
stdout once it listens; stops on SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys

from aiohttp import web


async def handle(request: web.Request) -> web.Response:
    payload = json.loads(await request.read())
    return web.json_response({"accepted": len(payload["alerts"])}, status=202)


async def serve() -> None:
    app = web.Application()
    app.add_routes([web.post("/webhooks/{source}", handle)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(runner.addresses[0][1], flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.run(serve())
    except ImportError:
        asyncio.run(serve())
    sys.exit(0)
