"""Where the CLI finds the server: ``$OODA_URL``, else where ``ooda serve`` said it listens, else the config.

``ooda serve --port 9000`` moves the listener; without this the CLI on the same machine would
still call the config's ``server.port``. The server writes its address to ``<data_dir>/server.url``
once it listens and removes it when it stops, the way generated dev secrets are shared through
``<data_dir>/secrets/``; a file left by a server killed with SIGKILL only makes the CLI report
that nothing answers there, naming the address and ``OODA_URL``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path

FILE_NAME = "server.url"


def local_url(host: str, port: int) -> str:
    """A URL that reaches a listener on ``host``: the wildcard addresses mean this machine."""
    shown = "127.0.0.1" if host in {"0.0.0.0", "::", ""} else host
    return f"http://{f'[{shown}]' if ':' in shown else shown}:{port}"


def record(data_dir: Path, url: str) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = data_dir / f".{FILE_NAME}.tmp"
    tmp.write_text(url + "\n")
    os.replace(tmp, data_dir / FILE_NAME)


def forget(data_dir: Path, url: str) -> None:
    """Remove the file if it still names ``url`` (another server may have started since)."""
    path = data_dir / FILE_NAME
    with contextlib.suppress(OSError):
        if path.read_text().strip() == url:
            path.unlink()


def cli_base_url(env: Mapping[str, str], data_dir: Path, host: str, port: int) -> str:
    if env.get("OODA_URL"):
        return env["OODA_URL"].rstrip("/")
    with contextlib.suppress(OSError):
        recorded = (data_dir / FILE_NAME).read_text().strip()
        if recorded.startswith(("http://", "https://")):
            return recorded
    return local_url(host, port)
