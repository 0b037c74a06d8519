"""A real OpenSSH ``sshd`` on 127.0.0.1 for the ``ssh.run`` tests.

Debian's ``openssh-server`` runs in the foreground with a config, host key, authorized keys and pid
file all inside the test's directory, so the tool is tested against the server it meets in
production (its exec handling, its quoting through the login shell, its signal support) without
touching the machine's own sshd. Keys are made with ``ssh-keygen``, as an operator would.
"""

from __future__ import annotations

import asyncio
import getpass
import os
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import pytest

SSHD = "/usr/sbin/sshd"
SSH_KEYGEN = "/usr/bin/ssh-keygen"
PRIVSEP_DIR = "/run/sshd"  # Debian's sshd refuses to start without its privilege separation dir
STARTUP_DEADLINE_S = 10.0


@dataclass(frozen=True)
class KeyPair:
    private_path: Path
    public_line: str  # "ssh-ed25519 AAAA..."

    @property
    def private_text(self) -> str:
        return self.private_path.read_text()


@dataclass(frozen=True)
class Sshd:
    port: int
    host_key: KeyPair
    user: str
    log_path: Path

    def known_hosts_line(self) -> str:
        """The line ``ssh -p PORT 127.0.0.1`` would record for this server."""
        return f"[127.0.0.1]:{self.port} {self.host_key.public_line}\n"


def require(path: str) -> None:
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} is missing; apt-get install openssh-server (the ssh.run tests need a real sshd)")


async def generate_key(path: Path) -> KeyPair:
    """A fresh unencrypted ed25519 key pair at ``path`` and ``path``.pub."""
    require(SSH_KEYGEN)
    proc = await asyncio.create_subprocess_exec(
        SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await proc.communicate()
    if proc.returncode != 0:
        pytest.fail(f"ssh-keygen failed: {output.decode(errors='replace')}")
    public_line = await asyncio.to_thread(Path(f"{path}.pub").read_text)
    return KeyPair(private_path=path, public_line=public_line.strip())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@asynccontextmanager
async def running_sshd(workdir: Path, authorized: list[KeyPair]) -> AsyncIterator[Sshd]:
    """Start sshd on a free port of 127.0.0.1, accepting ``authorized`` keys for the current user.

    Args:
        workdir: an empty directory of the test's own (tmp_path); everything sshd needs goes there.
        authorized: the client keys allowed to log in.

    Yields:
        The running server; it is killed when the block ends.
    """
    require(SSHD)
    os.makedirs(PRIVSEP_DIR, mode=0o755, exist_ok=True)
    os.makedirs(workdir, exist_ok=True)
    host_key = await generate_key(workdir / "ssh_host_ed25519_key")
    user = getpass.getuser()
    port = free_port()
    config = write_config(workdir, port, host_key, authorized, user)
    log_path = workdir / "sshd.log"
    with log_path.open("wb") as log_file:
        proc = await asyncio.create_subprocess_exec(
            SSHD, "-D", "-e", "-f", str(config),
            stdin=asyncio.subprocess.DEVNULL, stdout=log_file, stderr=log_file,
        )  # fmt: skip
    try:
        await _wait_for_port(proc, port, log_path)
        yield Sshd(port=port, host_key=host_key, user=user, log_path=log_path)
    finally:
        if proc.returncode is None:
            with suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


def write_config(workdir: Path, port: int, host_key: KeyPair, authorized: list[KeyPair], user: str) -> Path:
    authorized_keys = workdir / "authorized_keys"
    authorized_keys.write_text("".join(f"{key.public_line}\n" for key in authorized))
    config = workdir / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"ListenAddress 127.0.0.1:{port}",
                f"HostKey {host_key.private_path}",
                f"PidFile {workdir / 'sshd.pid'}",
                f"AuthorizedKeysFile {authorized_keys}",
                f"AllowUsers {user}",
                "StrictModes no",  # the test's directories belong to whoever runs pytest
                "UsePAM no",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PermitRootLogin prohibit-password",
                "PrintMotd no",
                "LogLevel VERBOSE",
                "",
            ]
        )
    )
    return config


def log_of(path: Path) -> str:
    return path.read_text(errors="replace")


async def _wait_for_port(proc: asyncio.subprocess.Process, port: int, log_path: Path) -> None:
    # sshd has no readiness signal in the foreground; polling the port with a deadline is the
    # only way to know it listens.
    deadline = time.monotonic() + STARTUP_DEADLINE_S
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            pytest.fail(f"sshd exited with code {proc.returncode}:\n{log_of(log_path)}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        await writer.wait_closed()
        return
    pytest.fail(f"sshd did not listen on 127.0.0.1:{port} within {STARTUP_DEADLINE_S:g}s:\n{log_of(log_path)}")
