"""A real PostgreSQL 15 for the tests, started from Debian's binaries in a temporary directory.

One server per test session and xdist worker (``postgres_server``), one fresh database per test
(``postgres_url``). It listens on 127.0.0.1 on a free port only, with its unix socket in its own
directory, and trusts local connections (``initdb -A trust``): nothing outside the machine can
reach it and it holds nothing but test data. PostgreSQL refuses to run as root, so as root the
binaries run as the ``postgres`` system user (``runuser -u postgres --``) on a directory it owns.
``start_postgres(durable=True)`` keeps PostgreSQL's own defaults for durability instead (fsync,
full-page writes, synchronous commit): bench/replicas.py measures with them, as production runs.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg

BIN = Path("/usr/lib/postgresql/15/bin")
_databases = itertools.count(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PostgresServer:
    root: Path
    port: int
    user: str
    durable: bool = False  # fsync and full-page writes on, as in production (benchmarks)

    @property
    def _data(self) -> Path:
        return self.root / "data"

    def stop(self) -> None:
        """Stop the server at once, as a crash or a failover would (the test restarts it)."""
        subprocess.run(_as_owner([str(BIN / "pg_ctl"), "stop", "-m", "immediate", "-w", "-D", str(self._data)]),
                       check=True, capture_output=True)

    def start(self) -> None:
        subprocess.run(_as_owner([str(BIN / "pg_ctl"), "start", "-w", "-D", str(self._data), "-l",
                                  str(self.root / "log"), "-o",
                                  _options(self.port, self.root / "sockets", self.durable)]),
                       check=True, capture_output=True)

    @property
    def pid(self) -> int:
        """The postmaster's process id; every backend is its child (benchmarks count their CPU)."""
        return int((self._data / "postmaster.pid").read_text().split()[0])

    @property
    def admin_url(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    async def new_database(self) -> str:
        """A fresh empty database; returns its URL."""
        name = f"ooda_{os.getpid()}_{next(_databases)}"
        conn = await asyncpg.connect(self.admin_url)
        try:
            await conn.execute(f"CREATE DATABASE {name} TEMPLATE template0 STRATEGY FILE_COPY")
        finally:
            await conn.close()
        return self.url(name)


def _options(port: int, sockets: Path, durable: bool) -> str:
    listen = f"-c listen_addresses=127.0.0.1 -p {port} -k {sockets} -c max_connections=200"
    if durable:
        return listen
    # fsync off: the tests stop PostgreSQL (immediate, as a crash) but never the machine, so WAL in
    # the page cache survives, and they share two cores with everything else. synchronous_commit
    # off server-wide: the store must turn it on for its own sessions, or a crash loses writes it
    # acknowledged (tests/e2e/test_postgres_outage.py).
    return f"{listen} -c fsync=off -c full_page_writes=off -c synchronous_commit=off"


def _as_owner(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


def start_postgres(*, durable: bool = False) -> Iterator[PostgresServer]:
    """Start a server, yield it, and stop it (the generator behind the session fixture)."""
    if not (BIN / "pg_ctl").exists():
        raise RuntimeError(f"PostgreSQL 15 is not installed ({BIN / 'pg_ctl'} is missing): "
                           "apt-get install -y postgresql (.ci/run does it)")
    root = Path(tempfile.mkdtemp(prefix="ooda-pg-"))
    user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        os.chown(root, entry.pw_uid, entry.pw_gid)
    data, sockets = root / "data", root / "sockets"
    subprocess.run(_as_owner(["mkdir", str(sockets)]), check=True)
    subprocess.run(_as_owner([str(BIN / "initdb"), "-A", "trust", "-U", user, "-E", "UTF8", "--no-sync",
                              "-D", str(data)]), check=True, capture_output=True)
    server = PostgresServer(root, free_port(), user, durable)
    server.start()
    try:
        yield server
    finally:
        subprocess.run(_as_owner([str(BIN / "pg_ctl"), "stop", "-m", "immediate", "-w", "-D", str(data)]),
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
