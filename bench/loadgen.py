"""Load generator for the intake benchmark: runs as its own process, prints one JSON line.

A minimal HTTP/1.1 keep-alive client on raw asyncio protocols (uvloop when available). A full
client library would spend more CPU per request than the server under test on a 2-core machine
and cap the figures it is meant to measure; this one parses only the status line and
Content-Length.

Two modes:
- closed loop (``--rate 0``): ``--connections`` clients, each sends its next request as soon as
  the previous answer arrived; measures the ceiling.
- open loop (``--rate R``): request i is dispatched at ``start + i/R`` whatever happened before;
  its latency runs from dispatch, including any wait for a free connection, so a server that
  falls behind is charged for the queue (no coordinated omission).

Every alert gets a unique fingerprint (a hash of ``--tag`` plus a counter, random-looking like
Alertmanager's), so each one is a new stored row.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
import time

ALERT_TEMPLATE = {
    "status": "firing",
    "labels": {
        "alertname": "@ALERTNAME@",
        "instance": "bench-@N@",
        "env": "dev",
        "service": "warehouse-loader",
        "severity": "warning",
        "team": "data",
        "topic": "orders",
        "consumergroup": "@GROUP@",
    },
    "annotations": {
        "summary": "warehouse-loader is 184k messages behind on orders",
        "description": "Consumer group warehouse-loader lags 184,302 messages on topic orders and the lag grew "
                       "for 15 minutes.",
        "runbook_url": "https://runbooks.example.com/data/consumer-lag",
    },
    "startsAt": "2026-01-05T06:15:00.000Z",
    "endsAt": "0001-01-01T00:00:00Z",
    "generatorURL": "http://prometheus.example.internal:9090/graph?g0.expr=sum%20by%20%28consumergroup%29"
                    "%20%28kafka_consumergroup_lag%29%20%3E%20100000&g0.tab=1",
    "fingerprint": "@FP@",
}
ENVELOPE = {
    "receiver": "ooda", "status": "firing", "alerts": "@ALERTS@",
    "groupLabels": {"alertname": "@ALERTNAME@"},
    "commonLabels": {"alertname": "@ALERTNAME@", "env": "dev", "severity": "warning"},
    "commonAnnotations": {},
    "externalURL": "http://alertmanager.example.internal:9093", "version": "4",
    "groupKey": "{}:{alertname=\"@ALERTNAME@\"}", "truncatedAlerts": 0,
}


class BodyMaker:
    """Alertmanager bodies with ``alerts_per_request`` alerts, each with a fresh fingerprint."""

    def __init__(self, alerts_per_request: int, tag: str, alertname: str, groups: int) -> None:
        alert = json.dumps(ALERT_TEMPLATE).replace("@ALERTNAME@", alertname).encode()
        envelope = json.dumps(ENVELOPE).replace("@ALERTNAME@", alertname).encode()
        self._alert = alert.replace(b"@FP@", b"@N@").split(b"@N@")
        self._head, self._tail = envelope.split(b'"@ALERTS@"')
        self._per = alerts_per_request
        self._tag = tag.encode()
        self._groups = groups
        self._n = 0

    def next(self) -> bytes:
        parts = []
        first, mid, last = self._alert
        for _ in range(self._per):
            self._n += 1
            n = self._tag + b"-" + str(self._n).encode()
            # Like Alertmanager's own fingerprints (a 64-bit hash of the label set, in hex): random,
            # so a store's index of them is written at random places, as in production.
            fingerprint = hashlib.blake2b(n, digest_size=8).hexdigest().encode()
            group = b"bench-group-" + str(self._n % self._groups).encode()
            parts.append((first + n + mid + fingerprint + last).replace(b"@GROUP@", group))
        return self._head + b"[" + b",".join(parts) + b"]" + self._tail


class Connection(asyncio.Protocol):
    """One keep-alive connection; ``request`` sends and returns the status when the answer is in."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[int] | None = None
        self._need: int | None = None
        self._status = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self._waiter and not self._waiter.done():
            self._waiter.set_exception(ConnectionError("server closed the connection"))

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self._need is None:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self._buffer[:end]).decode("latin-1").split("\r\n")
            self._status = int(head[0].split(" ", 2)[1])
            length = 0
            for line in head[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            self._need = end + 4 + length
        if len(self._buffer) >= self._need:
            del self._buffer[: self._need]
            self._need = None
            if self._waiter and not self._waiter.done():
                self._waiter.set_result(self._status)

    async def request(self, head: bytes, body: bytes) -> int:
        assert self._transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self._transport.write(head + str(len(body)).encode() + b"\r\n\r\n" + body)
        return await self._waiter


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def run(args: argparse.Namespace) -> dict[str, object]:
    loop = asyncio.get_running_loop()
    head = (f"POST {args.path} HTTP/1.1\r\nHost: {args.host}:{args.port}\r\n"
            f"Authorization: Bearer {args.token}\r\nContent-Type: application/json\r\n"
            "Content-Length: ").encode()
    maker = BodyMaker(args.alerts, args.tag, args.alertname, args.groups)
    conns = []
    for _ in range(args.connections):
        _, conn = await loop.create_connection(Connection, args.host, args.port)
        conns.append(conn)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    sent = 0
    start = time.perf_counter()
    measure_from = start + args.warmup
    deadline = measure_from + args.duration

    def record(status: int, due: float, done: float) -> None:
        if due >= measure_from:
            latencies.append(done - due)
            statuses[status] = statuses.get(status, 0) + 1

    async def closed_client(conn: Connection) -> None:
        nonlocal sent
        while time.perf_counter() < deadline and (args.requests == 0 or sent < args.requests):
            sent += 1
            body = maker.next()
            t0 = time.perf_counter()
            status = await conn.request(head, body)
            record(status, t0, time.perf_counter())

    async def open_loop() -> None:
        nonlocal sent
        idle: asyncio.Queue[Connection] = asyncio.Queue()
        for conn in conns:
            idle.put_nowait(conn)
        pending: set[asyncio.Task[None]] = set()

        async def one(due: float, body: bytes) -> None:
            conn = await idle.get()
            try:
                status = await conn.request(head, body)
            finally:
                idle.put_nowait(conn)
            record(status, due, time.perf_counter())

        i = 0
        while True:
            due = start + i / args.rate
            if due >= deadline:
                break
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            sent += 1
            # Latency counts from dispatch (waiting for a free connection included), not from
            # ``due``: the client's own timer lateness (about 1 ms with uvloop) is not the server's.
            task = asyncio.create_task(one(time.perf_counter(), maker.next()))
            pending.add(task)
            task.add_done_callback(pending.discard)
            i += 1
        await asyncio.gather(*pending)

    if args.rate:
        await open_loop()
    else:
        if args.requests:
            measure_from = start  # a fixed amount of work: count all of it
        await asyncio.gather(*(closed_client(c) for c in conns))
    elapsed = time.perf_counter() - measure_from
    latencies.sort()
    ok = statuses.get(202, 0)
    return {
        "requests": len(latencies), "accepted": ok, "statuses": {str(k): v for k, v in statuses.items()},
        "seconds": round(elapsed, 3), "requests_per_s": round(ok / elapsed, 1),
        "alerts_per_s": round(ok * args.alerts / elapsed, 1), "alerts_sent": sent * args.alerts,
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 3), "p90_ms": round(percentile(latencies, 0.90) * 1000, 3),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 3), "max_ms": round((latencies or [0])[-1] * 1000, 3),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", default="/webhooks/alertmanager")
    p.add_argument("--token", default="")
    p.add_argument("--alerts", type=int, default=1, help="alerts per request")
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--rate", type=float, default=0, help="requests/s (open loop); 0 = closed loop")
    p.add_argument("--duration", type=float, default=8.0, help="seconds measured")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds sent but not measured")
    p.add_argument("--requests", type=int, default=0, help="closed loop: stop after this many requests")
    p.add_argument("--tag", default="bench", help="fingerprint prefix; unique per phase")
    p.add_argument("--alertname", default="BenchAlert")
    p.add_argument("--groups", type=int, default=1, help="distinct consumergroup label values")
    args = p.parse_args()
    if args.requests:
        args.duration, args.warmup = 3600.0, 0.0
    try:
        import uvloop

        result = uvloop.run(run(args))
    except ImportError:
        result = asyncio.run(run(args))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
