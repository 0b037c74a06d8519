"""What a replica leaves behind, with real ``ooda serve`` processes on one real PostgreSQL.

- A replica killed with SIGKILL between opening a task and planning it (its evidence read is in
  flight, the task still ``queued``): the leader, which nobody restarts, plans the task at its
  second look (the grace, ``bot/loop/orphans.py``), once.
- A replica whose own connection to PostgreSQL is ended (``pg_terminate_backend`` on the backend
  holding its owner lock) while it runs a slow step takes the same lock again at once; the step
  finishes normally.
- The same with the replica unable to reconnect for a while (a gate in front of PostgreSQL refuses
  its new connections): the leader's look finds the owner absent, the next finds it back, and the
  step still finishes normally, never escalated.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
from aiohttp import web

from bot.loop.orphans import ORPHAN_CHECK_S
from bot.store.postgres_owner import OWNER_LOCK
from tests import harness
from tests.e2e.test_crash_execution import Child, free_port
from tests.harness import ADMIN, AM, serving_on_a_free_port
from tests.replicas import NOTIFICATION, until

PLAYBOOK = """
id: look-then-restart
version: "1"
description: Read the workload's status, then restart it.
trigger:
  match_in:
    alertname: [ReplicaDrill]
  group_by: [service]
evidence:
  - name: status
    tool: http.request
    description: the workload's status
    params:
      method: GET
      url: "{{ vars.platform_api }}/platform/workloads/shop/api/status"
steps:
  - name: restart
    tool: http.request
    params:
      method: POST
      url: "{{ vars.platform_api }}/platform/workloads/shop/api/restart"
      expect_status: [200]
    category: write_irreversible
    blast_radius: single
    timeout_s: 120
autonomy_cap: L3
"""


class Platform:
    """The platform API: counts status reads and restarts; either may be made to hang until the end."""

    def __init__(self, *, hang_reads: bool = False, hang_restarts: bool = False) -> None:
        self.hang_reads, self.hang_restarts = hang_reads, hang_restarts
        self.reads = self.restarts = 0
        self.read_arrived, self.restart_arrived, self.release = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def status(self, request: web.Request) -> web.Response:
        self.reads += 1
        self.read_arrived.set()
        if self.hang_reads:
            await self.release.wait()
        return web.json_response({"status": "degraded"})

    async def restart(self, request: web.Request) -> web.Response:
        self.restarts += 1
        self.restart_arrived.set()
        if self.hang_restarts:
            await self.release.wait()
        return web.json_response({"status": "restarting"})

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[int]:
        app = web.Application()
        app.router.add_get("/platform/workloads/{ns}/{dep}/status", self.status)
        app.router.add_post("/platform/workloads/{ns}/{dep}/restart", self.restart)
        async with serving_on_a_free_port(app) as port:
            try:
                yield port
            finally:
                self.release.set()


class Gate:
    """A TCP forwarder in front of PostgreSQL for one replica. Shut, it refuses new connections
    (a network cut as the replica sees it when it reconnects); those already open go on."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.shut = False
        self.refused = 0
        self._writers: list[asyncio.StreamWriter] = []

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.shut:
            self.refused += 1
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self._writers += [writer, up_writer]
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[int]:
        server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        try:
            yield int(server.sockets[0].getsockname()[1])
        finally:
            server.close()
            for writer in self._writers:
                writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


@dataclass
class Replica:
    child: Child
    http: httpx.AsyncClient

    async def role(self) -> str:
        return str((await self.http.get("/readyz")).json().get("role"))


async def start_replica(stack: contextlib.AsyncExitStack, tmp_path: Path, name: str, platform_port: int,
                        store_url: str) -> Replica:
    """One ``ooda serve`` with its own port, data dir and platform API, on the given store."""
    playbooks = tmp_path / "playbooks"
    if not playbooks.exists():
        playbooks.mkdir()
        (playbooks / "look-then-restart.yaml").write_text(PLAYBOOK)
    home = tmp_path / name
    home.mkdir()
    port = free_port()
    config = harness.test_config(home, platform_port, {
        "playbooks_dir": str(playbooks), "server": {"port": port}, "store": {"url": store_url},
        "tools": {"http": {"timeout_s": 120}}})  # slow platform calls: outlasting two looks of the leader
    child = Child(config)
    await child.start()
    stack.push_async_callback(_stop, child)
    http = await stack.enter_async_context(httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10))
    return Replica(child, http)


async def _stop(child: Child) -> None:
    if child.proc is not None and child.proc.returncode is None:
        await child.kill(signal.SIGTERM)


async def leader_and_standby(stack: contextlib.AsyncExitStack, tmp_path: Path, leader_platform: int,
                             standby_platform: int, url: str,
                             standby_url: str | None = None) -> tuple[Replica, Replica]:
    """The first replica leads (it takes the lock at start), then the second starts as a standby."""
    leader = await start_replica(stack, tmp_path, "leader", leader_platform, url)

    async def leading() -> bool:
        return await leader.role() == "leader"

    await until(leading)
    standby = await start_replica(stack, tmp_path, "standby", standby_platform, standby_url or url)
    assert await standby.role() == "standby"
    return leader, standby


def logged(child: Child) -> list[str]:
    """The names of the log events a child wrote since they were last read."""
    names = []
    while not child.events.empty():
        names.append(child.events.get_nowait().get("event"))
    return names


async def lock_holder(db: asyncpg.Connection, owner: int) -> int | None:
    return await db.fetchval(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = $1::oid "
        "AND objid = $2::oid AND objsubid = 2", OWNER_LOCK, owner)


async def approved_and_running(replica: Replica, platform: Platform, db: asyncpg.Connection) -> tuple[int, int]:
    """An alert's task approved on ``replica`` (which then runs its step), the step now inside the
    slow platform call: (task id, the step's owner)."""
    assert (await replica.http.post("/webhooks/alertmanager", json=NOTIFICATION, headers=AM)).status_code == 202

    async def planned() -> int | None:
        return await db.fetchval("SELECT id FROM tasks WHERE state = 'needs_approval'")

    task_id = await until(planned)
    r = await replica.http.post(f"/api/v1/tasks/{task_id}/approve", headers=ADMIN, json={})
    assert r.status_code == 200 and r.json()["executed"], r.text
    await asyncio.wait_for(platform.restart_arrived.wait(), 20)
    owner = await db.fetchval("SELECT claimed_by FROM steps WHERE task_id = $1 AND state = 'running'", task_id)
    assert owner is not None and await lock_holder(db, owner) is not None
    return task_id, owner


async def finished(replica: Replica, task_id: int) -> dict:
    async def done() -> dict | None:
        proposal = (await replica.http.get(f"/api/v1/tasks/{task_id}", headers=ADMIN)).json()["proposal"]
        return proposal if proposal["state"] != "executing" else None

    return await until(done)


async def test_a_task_left_between_opening_and_planning_by_a_killed_replica_is_planned_by_the_leader_once(
        tmp_path, postgres_url):
    answering, hanging = Platform(), Platform(hang_reads=True)
    async with answering.running() as answering_port, hanging.running() as hanging_port, \
            contextlib.AsyncExitStack() as stack:
        leader, opener = await leader_and_standby(stack, tmp_path, answering_port, hanging_port, postgres_url)
        db = await asyncpg.connect(postgres_url)
        stack.push_async_callback(db.close)

        r = await opener.http.post("/api/v1/playbooks/look-then-restart/run", json={"args": {}}, headers=ADMIN)
        assert r.status_code == 202, r.text
        task_id = r.json()["task"]["id"]
        await asyncio.wait_for(hanging.read_arrived.wait(), 20)  # planning: its evidence read is in flight
        row = await db.fetchrow("SELECT state, claimed_by FROM tasks WHERE id = $1", task_id)
        assert row["state"] == "queued" and await lock_holder(db, row["claimed_by"]) is not None
        assert await opener.child.kill(signal.SIGKILL) == -signal.SIGKILL
        killed_at = time.monotonic()

        async def planned() -> bool:
            return await db.fetchval("SELECT state FROM tasks WHERE id = $1", task_id) == "needs_approval"

        # Leadership stays; the leader's looks come every ORPHAN_CHECK_S and it acts at the second.
        await until(planned, deadline_s=3 * ORPHAN_CHECK_S)
        assert time.monotonic() - killed_at < 2 * ORPHAN_CHECK_S + 5
        await asyncio.sleep(1)  # a second plan of the task would have been saved by now
        actions = [r["action"] for r in await db.fetch("SELECT action FROM audit WHERE task_id = $1 ORDER BY seq",
                                                       task_id)]
        assert actions.count("task.proposal") == 1 and actions.count("task.needs_approval") == 1
        assert actions.count("task.taken_over") == 1
        assert await db.fetchval("SELECT count(*) FROM tasks") == 1
        assert await db.fetchval("SELECT count(*) FROM steps WHERE task_id = $1 AND kind = 'step'", task_id) == 1
        assert (hanging.reads, answering.reads) == (1, 1)  # the killed replica's read, then the leader's
        assert leader.child.proc is not None and leader.child.proc.returncode is None  # nobody restarted
        names = logged(leader.child)
        assert names.index("orphans.owner_absent") < names.index("orphans.task_taken_over")


async def test_a_replica_whose_owner_connection_is_ended_takes_its_lock_again_and_finishes_its_step(
        tmp_path, postgres_url):
    platform = Platform(hang_restarts=True)
    async with platform.running() as port, contextlib.AsyncExitStack() as stack:
        _, runner = await leader_and_standby(stack, tmp_path, port, port, postgres_url)
        db = await asyncpg.connect(postgres_url)
        stack.push_async_callback(db.close)
        task_id, owner = await approved_and_running(runner, platform, db)

        backend = await lock_holder(db, owner)
        assert await db.fetchval("SELECT pg_terminate_backend($1)", backend)

        async def held_again() -> int | None:
            holder = await lock_holder(db, owner)
            return holder if holder not in (None, backend) else None

        await until(held_again, deadline_s=5)  # the same number, on a new backend
        await runner.child.wait_for("owner.lock_taken_again")

        platform.release.set()
        proposal = await finished(runner, task_id)
        assert proposal["state"] == "completed" and proposal["steps"][0]["state"] == "succeeded", proposal["outcome"]
        assert platform.restarts == 1
        assert await lock_holder(db, owner) not in (None, backend)


async def test_an_owner_lock_absent_at_one_look_of_the_leader_does_not_escalate_the_step_its_replica_runs(
        tmp_path, postgres_url):
    platform = Platform(hang_restarts=True)
    server = urlsplit(postgres_url)
    gate = Gate(int(server.port or 5432))
    async with platform.running() as port, gate.running() as gate_port, contextlib.AsyncExitStack() as stack:
        gated_url = urlunsplit(server._replace(netloc=f"{server.username}@127.0.0.1:{gate_port}"))
        leader, runner = await leader_and_standby(stack, tmp_path, port, port, postgres_url, gated_url)
        db = await asyncpg.connect(postgres_url)
        stack.push_async_callback(db.close)
        task_id, owner = await approved_and_running(runner, platform, db)
        logged(leader.child)

        # The runner's owner connection is ended and it cannot reconnect: its lock stays absent.
        gate.shut = True
        assert await db.fetchval("SELECT pg_terminate_backend($1)", await lock_holder(db, owner))
        await runner.child.wait_for("owner.lock_unavailable")
        absent = await leader.child.wait_for("orphans.owner_absent")  # the leader's look finds it so
        assert absent["found"][0] == "step" and absent["found"][1] == task_id
        assert await db.fetchval("SELECT state FROM steps WHERE task_id = $1 AND kind = 'step'", task_id) == "running"

        gate.shut = False
        await runner.child.wait_for("owner.lock_taken_again")
        assert await lock_holder(db, owner) is not None
        await leader.child.wait_for("orphans.cleared")  # the next look finds the owner back
        assert gate.refused >= 1

        platform.release.set()
        proposal = await finished(runner, task_id)
        assert proposal["state"] == "completed" and proposal["steps"][0]["state"] == "succeeded", proposal["outcome"]
        assert platform.restarts == 1
        actions = [r["action"] for r in await db.fetch("SELECT action FROM audit WHERE task_id = $1", task_id)]
        assert "step.unknown" not in actions and "task.escalated_to_human" not in actions
