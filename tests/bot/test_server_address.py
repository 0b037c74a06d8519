"""`ooda serve --port P` moves the demo: the CLI on the same machine follows it without OODA_URL."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import pytest

from bot.cli import main
from bot.server_address import FILE_NAME, cli_base_url
from tests.harness import ENV, ROOT, test_config

DEADLINE_S = 20.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_ooda_url_wins_then_the_recorded_address_then_the_config(tmp_path: Path):
    assert cli_base_url({"OODA_URL": "http://ooda.internal:8080/"}, tmp_path, "0.0.0.0", 8080) == \
        "http://ooda.internal:8080"
    assert cli_base_url({}, tmp_path, "0.0.0.0", 8080) == "http://127.0.0.1:8080"
    (tmp_path / FILE_NAME).write_text("http://127.0.0.1:9123\n")
    assert cli_base_url({}, tmp_path, "0.0.0.0", 8080) == "http://127.0.0.1:9123"


async def test_serve_with_port_is_found_by_the_cli_without_ooda_url(tmp_path: Path, capsys, monkeypatch):
    config = test_config(tmp_path, free_port(), {"server": {"port": free_port()}})  # the config's port stays unused
    port = free_port()
    env = {**ENV, "PATH": os.environ["PATH"]}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "serve", "--config", str(config), "--port", str(port),
        cwd=ROOT, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    recorded = tmp_path / "data" / FILE_NAME
    try:
        async with asyncio.timeout(DEADLINE_S):
            while not recorded.exists():
                assert proc.returncode is None, "ooda serve exited"
                await asyncio.sleep(0.05)  # poll for the file the server writes once it listens
        assert recorded.read_text().strip() == f"http://127.0.0.1:{port}"

        monkeypatch.delenv("OODA_URL", raising=False)
        for name, value in ENV.items():
            monkeypatch.setenv(name, value)
        assert await asyncio.to_thread(main, ["status", "--config", str(config)]) == 0
        assert "kill switch: off" in capsys.readouterr().out
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            await proc.wait()
    assert not recorded.exists()  # a stopped server leaves no address behind


@pytest.fixture(autouse=True)
def _no_inherited_url(monkeypatch):
    monkeypatch.delenv("OODA_URL", raising=False)
