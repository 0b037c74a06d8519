"""The example config adapted for a benchmark run: what bench/intake.py and bench/loop.py share.

A temp data dir and store, the shipped playbooks, the local stand-in on a free port playing the
outside systems (the tools may call only it), the digest off and JSON logs.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_bench_config(tmp: Path, *, server_port: int, log_level: str, **overrides: Any) -> Path:
    """Write ``tmp/config.yaml``; ``overrides`` replace top-level sections (``store`` is merged)."""
    tmp.mkdir(parents=True, exist_ok=True)
    data = yaml.safe_load((ROOT / "config.example.yaml").read_text())
    # The example's tools name the stand-in as ${standin.url} and friends: its ports move them all.
    standin_port, ssh_port = free_port(), free_port()
    data.update({
        "data_dir": str(tmp / "data"),
        "playbooks_dir": str(ROOT / "playbooks"),
        "server": {"host": "127.0.0.1", "port": server_port},
        "standin": {**data["standin"], "port": standin_port, "ssh_port": ssh_port},
        "digest": {**data["digest"], "enabled": False},
        "log": {"level": log_level, "format": "json"},
    })
    data["store"] = {**data["store"], "path": str(tmp / "data" / "ooda.db"), **overrides.pop("store", {})}
    data.update(overrides)
    data["tools"]["shell"]["workdir"] = str(tmp / "work")
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
