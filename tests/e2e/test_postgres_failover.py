"""PostgreSQL fails over under a running ``ooda serve``: nothing acknowledged is lost.

The store URL lists a primary and its synchronous standby (tests/postgres_pair.py), without
``target_session_attrs``: Ooda makes it read-write. Alertmanager-like senders post notifications
without pause, each alert with a fingerprint of its own, and send a refused one again. The link to
the standby stalls, then the whole primary is killed with SIGKILL and the standby promoted. Nothing
the primary committed during the stall was acknowledged; while no server is writable intake
answers 503 (never 500) and /readyz 503; after the promotion the same process takes 202s again and
leads again, and every alert that got a 202 is on the promoted server, in a task whose plan counts
it. The test prints the time from ``pg_ctl promote`` to the first 202 (README, "Store backends").
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import asyncpg
import httpx
import pytest

from bot.errors import StoreUnavailable
from bot.metrics import Metrics
from bot.model.events import EventBus
from bot.store.leadership import AdvisoryLockLeader
from bot.store.postgres import PostgresStore
from tests.harness import AM
from tests.postgres_pair import PostgresPair, start_pair
from tests.replicas import NOTIFICATION, Platform, start_replicas, until

LANES = 3  # notifications in flight at once, as several Alertmanager groups send them
RETRY_S = 0.05  # a sender's pause before it sends a refused notification again
SERVICES = 4
STALL_S = 0.5


@pytest.fixture
def postgres_pair() -> Iterator[PostgresPair]:
    yield from start_pair()


def notification(n: int) -> dict:
    template: dict = NOTIFICATION["alerts"][0]  # type: ignore[index]
    alert = {**template, "fingerprint": f"failover-{n:06d}",
             "labels": {"alertname": "ReplicaDrill", "service": f"svc-{n % SERVICES}", "severity": "critical"}}
    return {**NOTIFICATION, "alerts": [alert]}


@dataclass
class Answer:
    sent: float
    received: float
    status: int


@dataclass
class Senders:
    """Alertmanager at work: each lane sends the next notification, and sends it again until a 202."""

    http: httpx.AsyncClient
    answers: list[Answer] = field(default_factory=list)
    acknowledged: dict[str, float] = field(default_factory=dict)  # signal id -> when its 202 came
    _numbers: Iterator[int] = field(default_factory=itertools.count)
    _stopping: bool = False

    async def lane(self) -> None:
        while not self._stopping:
            body = notification(next(self._numbers))
            while True:
                sent = time.monotonic()
                r = await self.http.post("/webhooks/alertmanager", json=body, headers=AM)
                self.answers.append(Answer(sent, time.monotonic(), r.status_code))
                if r.status_code == 202:
                    self.acknowledged.update((sid, time.monotonic()) for sid in r.json()["signal_ids"])
                    break
                await asyncio.sleep(RETRY_S)  # the sender's retry interval, not a wait for a condition

    def stop(self) -> None:
        self._stopping = True  # each lane ends once its notification is in

    def answered_between(self, start: float, end: float) -> list[int]:
        return [a.status for a in self.answers if start < a.sent < end]

    def first_202_after(self, moment: float) -> float | None:
        return min((a.received for a in self.answers if a.status == 202 and a.sent > moment), default=None)


async def test_a_failover_loses_no_acknowledged_alert_and_ooda_recovers_without_a_restart(
        tmp_path, postgres_pair, capsys):
    pair = postgres_pair
    url = await pair.new_database()
    async with Platform().running() as platform_port, contextlib.AsyncExitStack() as stack:
        ((child, http),) = await start_replicas(stack, tmp_path, platform_port, url, "a")
        senders = Senders(http)
        lanes = [asyncio.create_task(senders.lane()) for _ in range(LANES)]
        stack.push_async_callback(_finish, lanes)
        readyz: list[int] = []

        async def ready(status: int) -> bool:
            r = await http.get("/readyz")
            readyz.append(r.status_code)
            return r.status_code == status and (status != 200 or r.json()["role"] == "leader")

        await until(lambda: ready(200))
        await until(_holds(lambda: len(senders.acknowledged) >= 40))

        # The link to the standby stalls, then the primary dies: what it committed meanwhile never
        # reached the standby. A commit waits for the standby, so none of that was acknowledged.
        await pair.stall_replication()
        stalled = time.monotonic()
        await asyncio.sleep(STALL_S)  # how long the standby lags before the crash: the scenario, not a wait
        behind = await pair.unreplicated_bytes()
        await asyncio.to_thread(pair.crash_primary)
        crashed = time.monotonic()
        assert behind > 0  # the primary had written commits the standby never received
        await until(_holds(lambda: senders.answered_between(crashed, time.monotonic())), deadline_s=10)
        await until(lambda: ready(503), deadline_s=10)
        assert set(senders.answered_between(crashed, time.monotonic())) == {503}  # never a 500

        promoting = time.monotonic()
        await asyncio.to_thread(pair.promote)
        promoted = time.monotonic()
        first = await until(_holds(lambda: senders.first_202_after(promoting)), deadline_s=10)
        await until(_holds(lambda: sum(at > promoted for at in senders.acknowledged.values()) >= 40))
        await until(lambda: ready(200), deadline_s=10)  # leading again too: its lock was on the old primary
        senders.stop()
        await asyncio.wait_for(asyncio.gather(*lanes), 20)
        assert child.proc is not None and child.proc.returncode is None  # the same process throughout

        statuses = {a.status for a in senders.answers}
        assert statuses == {202, 503}, statuses
        assert set(readyz) == {200, 503}

        promoted_db = await asyncpg.connect(pair.standby.url(url.rsplit("/", 1)[1]))
        stack.push_async_callback(promoted_db.close)
        assert await promoted_db.fetchval("SELECT NOT pg_is_in_recovery()")
        acknowledged = list(senders.acknowledged)
        stored = {r[0] for r in await promoted_db.fetch("SELECT id FROM signals WHERE id = ANY($1::text[])",
                                                        acknowledged)}
        lost = set(acknowledged) - stored
        assert not lost, f"{len(lost)} of {len(acknowledged)} acknowledged alerts are not on the promoted server"
        # What the primary committed after the stall was never acknowledged: each commit waited.
        assert not any(a.status == 202 and stalled < a.sent < promoting for a in senders.answers)

        async def all_grouped() -> bool:
            return not await promoted_db.fetchval(
                "SELECT count(*) FROM signals WHERE id = ANY($1::text[]) AND task_id IS NULL", acknowledged)

        await until(all_grouped)
        # Every notification was retried until its 202, so the server holds exactly those alerts.
        assert await promoted_db.fetchval("SELECT count(*) FROM signals") == len(acknowledged)

        async def all_planned() -> bool:  # one task per service, each plan counting all its alerts
            tasks = await promoted_db.fetch("SELECT state, signal_count, proposal FROM tasks")
            return len(tasks) == SERVICES and all(
                t["state"] == "needs_approval" and json.loads(t["proposal"])["signal_count"] == t["signal_count"]
                for t in tasks)

        await until(all_planned)

        refused = sum(a.status == 503 for a in senders.answers)
        with capsys.disabled():
            print(f"\nfailover: {len(acknowledged)} alerts acknowledged ({refused} answers 503 meanwhile), 0 lost, "
                  f"the standby {behind} bytes of WAL behind when the primary died; "
                  f"pg_ctl promote -> first 202: {first - promoting:.2f} s "
                  f"(pg_ctl promote -w itself returned after {promoted - promoting:.2f} s)")


async def test_with_every_host_up_and_none_writable_the_store_is_unavailable_until_one_is_promoted(
        postgres_pair):
    """A failover half done (here: the URL names the standby alone): 503s, not errors, and leadership waits."""
    pair = postgres_pair
    database = (await pair.new_database()).rsplit("/", 1)[1]
    standby_only = f"{pair.standby.url(database)}?target_session_attrs=read-write"
    store = PostgresStore(standby_only, EventBus(), min_size=1, max_size=2)
    with pytest.raises(StoreUnavailable, match="TargetServerAttributeNotMatched"):
        await store.open()

    attempts = 0

    async def connect() -> asyncpg.Connection:
        nonlocal attempts
        attempts += 1
        return await asyncpg.connect(standby_only)

    leader = AdvisoryLockLeader(connect, Metrics(), interval_s=0.05)
    await leader.start()
    try:
        await until(_holds(lambda: attempts >= 3))  # refused again and again, and trying on
        assert not leader.is_leader()
        await asyncio.to_thread(pair.promote)
        await until(_holds(leader.is_leader))
    finally:
        await leader.stop()
    await store.open()
    try:
        assert await store.signal_count() == 0
    finally:
        await store.close()


def _holds(condition):
    async def check():
        return condition()

    return check


async def _finish(lanes: list[asyncio.Task]) -> None:
    for lane in lanes:
        lane.cancel()
    await asyncio.gather(*lanes, return_exceptions=True)
