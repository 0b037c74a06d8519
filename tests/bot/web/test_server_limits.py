"""Slow and greedy clients against the real App over real sockets: header and body timeouts, the
idle keep-alive timeout, and the per-address connection cap (``server:`` in the config).

Timeouts are configured small so each test waits only for the timeout it is about.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

from bot.app import App
from tests.harness import AM, running_app, running_standin

BODY = (resources.files("bot") / "samples" / "alertmanager-node-filesystem-space.json").read_bytes()
Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@asynccontextmanager
async def served(tmp_path, server: dict[str, Any]) -> AsyncIterator[App]:
    async with running_standin() as standin, running_app(tmp_path, standin, {"server": server}) as app:
        yield app


def webhook_request(*, close: bool = False) -> bytes:
    head = (f"POST /webhooks/alertmanager HTTP/1.1\r\nHost: ooda\r\nContent-Type: application/json\r\n"
            f"Authorization: {AM['Authorization']}\r\nContent-Length: {len(BODY)}\r\n")
    if close:
        head += "Connection: close\r\n"
    return head.encode() + b"\r\n" + BODY


async def connect(app: App, source: str = "127.0.0.1") -> Conn:
    assert app.port is not None
    return await asyncio.open_connection("127.0.0.1", app.port, local_addr=(source, 0))


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    status_line, *lines = head.decode().rstrip("\r\n").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(status_line.split()[1]), headers, body


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    return await asyncio.wait_for(reader.read(), 5) == b""


def sample(app: App, name: str, **labels: str) -> float:
    return app.metrics.registry.get_sample_value(name, labels) or 0.0


async def test_slow_headers_neither_block_a_webhook_nor_stay_open(tmp_path):
    async with served(tmp_path, {"header_timeout_s": 1.0}) as app:
        silent = [await connect(app) for _ in range(100)]  # connect and never send a byte
        partial = [await connect(app) for _ in range(100)]  # start the headers and never finish them
        for _, writer in partial:
            writer.write(b"POST /webhooks/alertmanager HTTP/1.1\r\nHost: ooda\r\nContent-Le")
            await writer.drain()

        started = time.monotonic()
        reader, writer = await connect(app)
        writer.write(webhook_request())
        status, _, body = await read_response(reader)
        assert status == 202 and time.monotonic() - started < 2
        assert len(json.loads(body)["signal_ids"]) == 1
        assert await app.store.signal_count() == 1
        assert sample(app, "ooda_http_connections_open") >= 201  # the slow ones were still held meanwhile
        writer.close()

        for slow_reader, slow_writer in silent + partial:  # cut at the header timeout with a 408
            status, headers, body = await read_response(slow_reader)
            assert status == 408 and headers["connection"] == "close"
            assert "server.header_timeout_s" in json.loads(body)["message"]
            assert await closed_by_server(slow_reader)
            slow_writer.close()
        assert sample(app, "ooda_http_timeouts_total", phase="header") == 200
        assert await app.store.signal_count() == 1


async def test_an_idle_keepalive_connection_outlives_the_header_timeout(tmp_path):
    async with served(tmp_path, {"header_timeout_s": 0.3}) as app:
        reader, writer = await connect(app)
        writer.write(webhook_request())
        assert (await read_response(reader))[0] == 202
        await asyncio.sleep(0.6)  # idle between notifications, longer than the header timeout
        writer.write(webhook_request())
        assert (await read_response(reader))[0] == 202  # the same connection, reused
        writer.close()
        assert sample(app, "ooda_http_timeouts_total", phase="header") == 0


async def test_the_idle_keepalive_timeout_comes_from_the_config(tmp_path):
    async with served(tmp_path, {"keepalive_timeout_s": 0.3}) as app:
        reader, writer = await connect(app)
        writer.write(webhook_request())
        assert (await read_response(reader))[0] == 202
        started = time.monotonic()
        assert await closed_by_server(reader)  # idle past keepalive_timeout_s: closed by the server
        assert time.monotonic() - started < 2
        writer.close()


async def test_a_stalled_body_is_cut_with_408_and_nothing_is_stored(tmp_path):
    async with served(tmp_path, {"body_timeout_s": 0.3}) as app:
        reader, writer = await connect(app)
        whole = webhook_request()
        writer.write(whole[: whole.index(b"\r\n\r\n") + 4 + 10])  # the headers and 10 bytes of the body
        started = time.monotonic()
        status, _, body = await read_response(reader)
        assert status == 408 and "server.body_timeout_s" in json.loads(body)["message"]
        assert time.monotonic() - started < 2
        assert await closed_by_server(reader)
        writer.close()
        assert sample(app, "ooda_http_timeouts_total", phase="body") == 1
        assert await app.store.signal_count() == 0

        reader, writer = await connect(app)  # the server still answers
        writer.write(webhook_request())
        assert (await read_response(reader))[0] == 202
        writer.close()


async def test_a_trickled_body_is_cut_at_the_body_timeout(tmp_path):
    async with served(tmp_path, {"body_timeout_s": 0.3}) as app:
        reader, writer = await connect(app)
        whole = webhook_request()
        split = whole.index(b"\r\n\r\n") + 4
        writer.write(whole[:split])

        async def trickle() -> None:  # one byte every 50 ms: always sending, never finishing in time
            for byte in whole[split:]:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.05)

        sender = asyncio.create_task(trickle())
        started = time.monotonic()
        try:
            status, _, _ = await read_response(reader)
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
        assert status == 408 and time.monotonic() - started < 2
        writer.close()
        assert await app.store.signal_count() == 0


async def test_the_per_address_cap_refuses_the_next_connection_and_not_other_addresses(tmp_path):
    async with served(tmp_path, {"max_connections_per_client": 3}) as app:
        held = [await connect(app) for _ in range(3)]

        reader, writer = await connect(app)  # the 4th from 127.0.0.1
        status, headers, body = await read_response(reader)
        assert status == 429 and headers["retry-after"] == "1"
        assert "server.max_connections_per_client" in json.loads(body)["message"]
        assert await closed_by_server(reader)
        writer.close()
        assert sample(app, "ooda_http_connections_refused_total", reason="per_client_limit") == 1

        reader, writer = await connect(app, source="127.0.0.2")  # another address is not affected
        writer.write(webhook_request())
        assert (await read_response(reader))[0] == 202
        writer.close()

        first_reader, first_writer = held.pop()  # one of the three finishes: its slot is free again
        first_writer.write(b"GET /healthz HTTP/1.1\r\nHost: ooda\r\nConnection: close\r\n\r\n")
        assert (await read_response(first_reader))[0] == 200
        assert await closed_by_server(first_reader)
        first_writer.close()
        reader, writer = await connect(app)
        writer.write(webhook_request())
        assert (await read_response(reader))[0] == 202
        writer.close()
        assert sample(app, "ooda_http_connections_refused_total", reason="per_client_limit") == 1
        for _, w in held:
            w.close()
