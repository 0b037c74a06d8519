"""A demo SSH "host" for the quick start: ``db-01``, whose ``/var`` filesystem is filling up.

The disk playbook acts on the host the alert names, over ``ssh.run``; the quick start has no remote
hosts, so this in-process asyncssh server plays one. It never runs a command on this machine: it
parses the command line it receives (``shlex.split``, as the remote shell would) and simulates

- ``df -P <path>`` and ``df -i -P <path>``: ``/var`` is 93% full (inodes 88%), ``/`` is healthy;
- ``du -x -h -d 1 <path>``: ``/var/tmp`` is where the space went;
- ``find <path> -xdev -type f -name '*.tmp' -mmin +60 -delete`` (predicates in any order): the stale
  temporary files "go away", so ``df`` afterwards shows 71%. Without ``-delete`` it lists them.

Anything else exits 127. At start it generates a host key and a client key into ``key_dir``
(``id_ed25519``, mode 0600, and a ``known_hosts`` line for the address it listens on, the address
``ssh.run`` dials through its ``address_map``) and authorizes only that client key, for any user.
``commands_run`` records every command line received, for tests.
"""

from __future__ import annotations

import fnmatch
import math
import os
import posixpath
import shlex
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog
from cryptography.utils import CryptographyDeprecationWarning

with warnings.catch_warnings():
    # asyncssh names cryptography's deprecated DSA classes at import time (see adapters/tools/ssh.py).
    warnings.simplefilter("ignore", CryptographyDeprecationWarning)
    import asyncssh

log = structlog.get_logger(__name__)

KIB = 1024
VAR_DEVICE, VAR_BLOCKS, VAR_INODES = "/dev/vdb1", 52_403_200, 3_276_800  # a 50 GiB volume
ROOT_DEVICE, ROOT_BLOCKS, ROOT_USED, ROOT_INODES, ROOT_IUSED = "/dev/vda1", 20_511_312, 8_394_560, 1_310_720, 301_455
VAR_OTHER_INODES = 2_883_000
# Everything on /var that is not a temporary file, in KiB: PostgreSQL's data dominates a db host.
VAR_DIRS = {
    "/var/backups": 1_572_864,
    "/var/cache": 1_153_433,
    "/var/lib": 29_360_128,
    "/var/log": 4_823_449,
    "/var/spool": 12_288,
}


@dataclass(frozen=True)
class DemoFile:
    path: str
    size_kib: int
    age_min: int


def demo_files() -> list[DemoFile]:
    """Twelve stale report exports (11 GiB) and three fresh temp files the playbook must keep."""
    stale = [DemoFile(f"/var/tmp/reports/export-{n:04d}.tmp", 960_725, 90 + 35 * n) for n in range(1, 12)]
    stale.append(DemoFile("/var/tmp/reports/export-0012.tmp", 960_729, 512))
    fresh = [
        DemoFile("/var/tmp/pg_stat_tmp.tmp", 96_256, 3),
        DemoFile("/var/tmp/reports/export-0013.tmp", 131_072, 12),
        DemoFile("/var/tmp/sess_4f2a.tmp", 56_782, 41),
    ]
    return stale + fresh


class DemoFilesystem:
    """The state behind the simulated commands: a root filesystem and ``/var`` with temp files."""

    def __init__(self) -> None:
        self.files = demo_files()

    def var_used_kib(self) -> int:
        return sum(VAR_DIRS.values()) + sum(f.size_kib for f in self.files)

    def df(self, args: list[str]) -> tuple[int, str, str]:
        flags = {a for a in args if a.startswith("-")}
        paths = [a for a in args if not a.startswith("-")] or ["/", "/var"]
        if not flags <= {"-P", "-i", "-k"}:
            return 1, "", f"df: invalid option -- '{sorted(flags - {'-P', '-i', '-k'})[0].lstrip('-')}'\n"
        inodes = "-i" in flags
        header = ("Filesystem", "Inodes", "IUsed", "IFree", "IUse%") if inodes else (
            "Filesystem", "1024-blocks", "Used", "Available", "Capacity")  # fmt: skip
        rows = []
        for path in paths:
            if not path.startswith("/"):
                return 1, "", f"df: {path}: No such file or directory\n"
            on_var = path == "/var" or path.startswith("/var/")
            if inodes:
                total, used = (VAR_INODES, VAR_OTHER_INODES + len(self.files)) if on_var else (ROOT_INODES, ROOT_IUSED)
            else:
                total, used = (VAR_BLOCKS, self.var_used_kib()) if on_var else (ROOT_BLOCKS, ROOT_USED)
            device, mount = (VAR_DEVICE, "/var") if on_var else (ROOT_DEVICE, "/")
            rows.append((device, str(total), str(used), str(total - used), f"{math.ceil(used * 100 / total)}%", mount))
        lines = [f"{header[0]:<14} {header[1]:>11} {header[2]:>9} {header[3]:>9} {header[4]:>8} Mounted on"]
        lines += [f"{r[0]:<14} {r[1]:>11} {r[2]:>9} {r[3]:>9} {r[4]:>8} {r[5]}" for r in rows]
        return 0, "\n".join(lines) + "\n", ""

    def du(self, args: list[str]) -> tuple[int, str, str]:
        human, depth, paths = False, None, []
        rest = list(args)
        while rest:
            arg = rest.pop(0)
            if arg in ("-x", "-k"):
                continue
            if arg == "-h":
                human = True
            elif arg == "-s":
                depth = 0
            elif arg == "-d" and rest and rest[0].isdigit():
                depth = int(rest.pop(0))
            elif arg.startswith("-"):
                return 1, "", f"du: invalid option -- '{arg.lstrip('-')}'\n"
            else:
                paths.append(arg.rstrip("/") or "/")
        entries = list(VAR_DIRS.items()) + [(f.path, f.size_kib) for f in self.files]
        out = []
        for path in paths or ["."]:
            if path == "/":  # -x or not, the root filesystem's own usage is all the demo knows
                out.append((ROOT_USED, "/"))
                continue
            if path != "/var" and not any(e == path or e.startswith(path + "/") for e, _ in entries):
                return 1, "", f"du: cannot access '{path}': No such file or directory\n"
            below = [(e, size) for e, size in entries if e.startswith(path + "/")]
            children: dict[str, int] = {}
            for entry, size in below:
                child = path + "/" + entry[len(path) + 1 :].split("/")[0]
                if child != entry or child in VAR_DIRS:  # du lists directories, not files
                    children[child] = children.get(child, 0) + size
            if depth is None or depth >= 1:
                out += [(size, child) for child, size in sorted(children.items())]
            out.append((sum(size for _, size in below) or dict(entries).get(path, 0), path))
        show: Callable[[int], str] = human_size if human else str
        return 0, "".join(f"{show(size)}\t{path}\n" for size, path in out), ""

    def find(self, args: list[str]) -> tuple[int, str, str]:
        if not args or args[0].startswith("-"):
            return 1, "", "find: the demo host expects the starting path first\n"
        start, rest = args[0].rstrip("/") or "/", args[1:]
        name, age, delete, xdev = "*", None, False, False
        while rest:
            arg = rest.pop(0)
            if arg == "-xdev":
                xdev = True
            elif arg == "-delete":
                delete = True
            elif arg == "-print":
                continue
            elif arg in ("-type", "-name", "-mmin") and rest:
                value = rest.pop(0)
                if arg == "-name":
                    name = value
                elif arg == "-mmin":
                    age = value
                elif value != "f":
                    return 0, "", ""  # only regular files exist on the demo host
            else:
                return 1, "", f"find: unknown predicate `{arg}'\n"
        if not start.startswith("/"):
            return 1, "", f"find: '{start}': No such file or directory\n"
        # /var is its own filesystem: -xdev from / never reaches it.
        if start == "/" and xdev:
            return 0, "", ""
        prefix = "/" if start == "/" else start + "/"
        matched = [
            f
            for f in self.files
            if f.path.startswith(prefix)
            and fnmatch.fnmatchcase(posixpath.basename(f.path), name)
            and (age is None or matches_age(f.age_min, age))
        ]
        if delete:
            self.files = [f for f in self.files if f not in matched]
            return 0, "", ""
        return 0, "".join(f"{f.path}\n" for f in matched), ""


def matches_age(age_min: int, spec: str) -> bool:
    """find's ``-mmin``: ``+60`` older than 60 minutes, ``-60`` newer, ``60`` exactly."""
    number = int(spec.lstrip("+-"))
    if spec.startswith("+"):
        return age_min > number
    if spec.startswith("-"):
        return age_min < number
    return age_min == number


def human_size(kib: int) -> str:
    """``du -h`` style: powers of 1024, rounded up, one decimal below 10."""
    value, units = float(kib), "KMGT"
    unit = 0
    while value >= KIB and unit < len(units) - 1:
        value /= KIB
        unit += 1
    if value < 10:
        shown = math.ceil(value * 10) / 10
        if shown < 10:
            return f"{shown:.1f}{units[unit]}"
    return f"{math.ceil(value)}{units[unit]}"


class DemoSshHost:
    """The demo ``db-01``: an asyncssh server with a simulated filesystem.

    Args:
        key_dir: where the client key and ``known_hosts`` are written at start (created if missing).
    """

    def __init__(self, key_dir: Path) -> None:
        self.key_dir = key_dir
        self.filesystem = DemoFilesystem()
        self.commands_run: list[list[str]] = []
        self._server: asyncssh.SSHAcceptor | None = None

    @property
    def client_key_path(self) -> Path:
        return self.key_dir / "id_ed25519"

    @property
    def known_hosts_path(self) -> Path:
        return self.key_dir / "known_hosts"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen on ``host:port`` (0 picks a free port), write the keys and return the port."""
        host_key = asyncssh.generate_private_key("ssh-ed25519")
        client_key = asyncssh.generate_private_key("ssh-ed25519")
        self._server = await asyncssh.listen(
            host,
            port,
            server_host_keys=[host_key],
            authorized_client_keys=asyncssh.import_authorized_keys(client_key.export_public_key().decode()),
            process_factory=self._serve,
            allow_pty=False,
            agent_forwarding=False,
            x11_forwarding=False,
            allow_scp=False,
        )
        bound = self._server.get_port()
        # ssh writes "[address]:port" for any port but 22; ssh.run checks the address it dials.
        address = host if bound == 22 else f"[{host}]:{bound}"
        write_keys(self.key_dir, client_key, f"{address} {host_key.export_public_key().decode().strip()}\n")
        log.info("standin_ssh.started", host=host, port=bound, key_dir=str(self.key_dir))
        return bound

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()

    def _serve(self, process: asyncssh.SSHServerProcess[str]) -> None:
        if process.command is None:
            process.stderr.write("the demo host runs single commands only; no interactive shell\n")
            process.exit(1)
            return
        try:
            argv = shlex.split(process.command)
        except ValueError:
            process.stderr.write("the demo host could not parse that command line\n")
            process.exit(2)
            return
        self.commands_run.append(argv)
        exit_code, stdout, stderr = self.run(argv)
        log.info("standin_ssh.command", command=argv[0] if argv else "", exit_code=exit_code)
        process.stdout.write(stdout)
        process.stderr.write(stderr)
        process.exit(exit_code)

    def run(self, argv: list[str]) -> tuple[int, str, str]:
        """Simulate one command: (exit code, stdout, stderr)."""
        name = posixpath.basename(argv[0]) if argv else ""
        simulated = {"df": self.filesystem.df, "du": self.filesystem.du, "find": self.filesystem.find}
        if name not in simulated:
            missing = name or "(empty command)"
            return 127, "", f"{missing}: command not found on the demo host (it simulates df, du and find)\n"
        return simulated[name](argv[1:])


def write_keys(key_dir: Path, client_key: asyncssh.SSHKey, known_hosts_line: str) -> None:
    key_dir.mkdir(parents=True, exist_ok=True)
    private = key_dir / "id_ed25519"
    # Created 0600 from the start (not chmod'ed afterwards) so the key is never readable by others.
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(client_key.export_private_key())
    os.chmod(private, 0o600)  # the file may have existed with a looser mode
    (key_dir / "id_ed25519.pub").write_bytes(client_key.export_public_key())
    (key_dir / "known_hosts").write_text(known_hosts_line)
