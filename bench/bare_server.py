"""The baseline for the intake benchmark: a bare aiohttp handler, nothing stored.

Same stack as Ooda's server (aiohttp on uvloop, one process): read the body, parse the JSON,
answer 202 with a small JSON body. Whatever Ooda does on top of this (auth, validation into
Signals, the durable commit, metrics) is what the benchmark's ratio prices. Prints its port on
stdout once it listens; stops on SIGTERM.
"""

from __future__ import annotations

import json
import sys

from aiohttp import web
from baseline_serving import run, serve_until_stopped


async def handle(request: web.Request) -> web.Response:
    payload = json.loads(await request.read())
    return web.json_response({"accepted": len(payload["alerts"])}, status=202)


async def serve() -> None:
    app = web.Application()
    app.add_routes([web.post("/webhooks/{source}", handle)])
    await serve_until_stopped(app)


if __name__ == "__main__":
    run(serve())
    sys.exit(0)
