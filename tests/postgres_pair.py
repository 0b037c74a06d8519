"""A PostgreSQL 15 primary with a synchronous streaming standby, for failover tests.

Built on tests/postgres.py: the primary is one of its servers; the standby is a
``pg_basebackup -R`` copy of it on another free port of 127.0.0.1, in its own temporary directory,
run by the same user (``postgres`` as root). The primary names every standby synchronous
(``synchronous_standby_names = '*'``), so a commit, and so a 202, returns only once the standby
has it: that is what keeps every acknowledged alert across a failover. The standby is started
without that setting, because once promoted it has no standby of its own and would otherwise make
every commit wait forever.

``stall_replication`` freezes the primary's WAL sender, as when the link to the standby stalls;
``crash_primary`` kills the primary's postmaster and every backend at once with SIGKILL, as a
machine dying would (the kernel still resets the connections); ``promote`` makes the standby the
primary.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from tests.postgres import BIN, PostgresServer, _as_owner, free_port, start_postgres

STREAMING_S = 20.0  # how long the standby may take to stream as the primary's synchronous standby


@dataclass
class PostgresPair:
    primary: PostgresServer
    standby: PostgresServer

    def url(self, database: str) -> str:
        """Both servers, the primary first; ``store.url`` makes it target_session_attrs=read-write."""
        return (f"postgresql://{self.primary.user}@127.0.0.1:{self.primary.port},127.0.0.1:{self.standby.port}"
                f"/{database}")

    async def new_database(self) -> str:
        """A fresh database, created on the primary and there on the standby too; its two-host URL."""
        name = (await self.primary.new_database()).rsplit("/", 1)[1]
        deadline = time.monotonic() + STREAMING_S
        # Created without waiting for the standby (the tests' servers commit asynchronously by
        # default): connecting there before it has replayed the creation would find no database.
        while _psql(self.standby, f"SELECT count(*) FROM pg_database WHERE datname = '{name}'") != "1":
            assert time.monotonic() < deadline, "the standby did not replay the new database"
            await asyncio.sleep(0.02)
        return self.url(name)

    async def stall_replication(self) -> None:
        """Freeze the primary's WAL sender (SIGSTOP), as when the link to the standby stalls: the
        primary goes on writing WAL, and the standby receives none of it."""
        (pid,) = [r[0] for r in await self._on_primary("SELECT pid FROM pg_stat_replication")]
        os.kill(pid, signal.SIGSTOP)  # the SIGKILL of crash_primary ends it like the others

    async def unreplicated_bytes(self) -> int:
        """WAL the primary has written and the standby has not confirmed, in bytes."""
        (row,) = await self._on_primary("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), flush_lsn) "
                                        "FROM pg_stat_replication")
        return int(row[0])

    async def _on_primary(self, sql: str) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(self.primary.admin_url)
        try:
            return list(await conn.fetch(sql))
        finally:
            await conn.close()

    def crash_primary(self) -> None:
        """SIGKILL to the primary's whole process group; returns once its port refuses connections."""
        pid = int(_pid_file(self.primary).read_text().splitlines()[0])
        # pg_ctl starts the postmaster in a session of its own, and every backend inherits its group.
        os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _accepts(self.primary.port):
            assert time.monotonic() < deadline, "the killed primary still accepts connections"
            time.sleep(0.01)

    def promote(self) -> None:
        """Make the standby the primary; returns once it accepts writes (``pg_ctl promote -w``)."""
        subprocess.run(_as_owner([str(BIN / "pg_ctl"), "promote", "-w", "-D", str(self.standby.root / "data")]),
                       check=True, capture_output=True)


def start_pair() -> Iterator[PostgresPair]:
    """Start a primary and its synchronous standby, yield them, stop both and delete their files."""
    primary_server = start_postgres()
    primary = next(primary_server)
    standby_root = Path(tempfile.mkdtemp(prefix="ooda-pg-standby-"))
    shm = None
    try:
        # Set and restarted rather than reloaded: a reload reaches the processes that wait for the
        # standby on commit at some moment after it returns, a start before the first connection.
        _psql(primary, "ALTER SYSTEM SET synchronous_standby_names = '*'")
        primary.stop()
        primary.start()
        shm = _shared_memory_id(primary)
        standby = _start_standby(primary, standby_root)
        _wait_until_synchronous(primary)
        yield PostgresPair(primary, standby)
    finally:
        subprocess.run(_as_owner([str(BIN / "pg_ctl"), "stop", "-m", "immediate", "-w", "-D",
                                  str(standby_root / "data")]), capture_output=True)
        shutil.rmtree(standby_root, ignore_errors=True)
        primary_server.close()  # stops the primary if it still runs, deletes its directory
        if shm is not None:
            # A postmaster killed by SIGKILL leaves its System V segment behind; its next start
            # would remove it, but this one never starts again.
            subprocess.run(_as_owner(["ipcrm", "-m", shm]), capture_output=True)


def _start_standby(primary: PostgresServer, root: Path) -> PostgresServer:
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        os.chown(root, entry.pw_uid, entry.pw_gid)
    subprocess.run(_as_owner(["mkdir", str(root / "sockets")]), check=True)
    data = root / "data"
    subprocess.run(_as_owner([str(BIN / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(primary.port), "-U",
                              primary.user, "-D", str(data), "-R", "-X", "stream", "--checkpoint=fast",
                              "--no-sync"]), check=True, capture_output=True)
    # The copy carries the primary's synchronous_standby_names; a promoted standby has no standby
    # to wait for (see the module's docstring). The last line of the file wins.
    with (data / "postgresql.auto.conf").open("a") as conf:
        conf.write("synchronous_standby_names = ''\n")
    standby = PostgresServer(root, free_port(), primary.user)
    standby.start()
    return standby


def _wait_until_synchronous(primary: PostgresServer) -> None:
    deadline = time.monotonic() + STREAMING_S
    query = "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming' AND sync_state = 'sync'"
    while _psql(primary, query) != "1":
        assert time.monotonic() < deadline, "the standby did not become the primary's synchronous standby"
        time.sleep(0.05)


def _psql(server: PostgresServer, sql: str) -> str:
    out = subprocess.run(_as_owner([str(BIN / "psql"), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql,
                                    server.admin_url]), check=True, capture_output=True, text=True)
    return out.stdout.strip()


def _pid_file(server: PostgresServer) -> Path:
    return server.root / "data" / "postmaster.pid"


def _shared_memory_id(server: PostgresServer) -> str | None:
    """The System V segment's id, the second field of postmaster.pid's seventh line."""
    lines = _pid_file(server).read_text().splitlines()
    fields = lines[6].split() if len(lines) > 6 else []
    return fields[1] if len(fields) == 2 else None


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0

