"""``ooda playbook shadow ID on|off`` and ``ooda shadow report`` against a running Ooda."""

from __future__ import annotations

import asyncio

import pytest
from structlog.testing import capture_logs

from bot.cli import main
from tests.harness import ENV, running_app, running_standin


@pytest.fixture
def secrets_env(monkeypatch):
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)


async def ooda(capsys, *argv: str) -> tuple[int, str, str]:
    code = await asyncio.to_thread(main, list(argv))
    out, err = capsys.readouterr()
    return code, out, err


async def test_switching_shadow_mode_and_reading_the_report(tmp_path, capsys, monkeypatch, secrets_env):
    config = str(tmp_path / "config.yaml")
    with capture_logs():
        async with running_standin() as standin, running_app(tmp_path, standin) as app:
            monkeypatch.setenv("OODA_URL", f"http://127.0.0.1:{app.port}")

            code, out, _ = await ooda(capsys, "playbook", "shadow", "kube-pod-crashlooping", "on", "--config", config)
            assert (code, out) == (0, "kube-pod-crashlooping: shadow mode on (proposes only, never acts)\n")
            code, _, err = await ooda(capsys, "playbook", "shadow", "no-such-playbook", "on", "--config", config)
            assert code == 1 and "there is no playbook 'no-such-playbook'" in err

            assert (await ooda(capsys, "fire", "--sample", "alertmanager-kube-pod-crashlooping",
                               "--config", config))[0] == 0
            await app.engine.wait_idle()
            code, out, _ = await ooda(capsys, "shadow", "report", "--days", "1", "--config", config)

    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "Shadow mode, last 1 day(s)"
    assert lines[2].split()[:5] == ["kube-pod-crashlooping", "1", "1", "-", "0"]
    assert lines[2].endswith("nothing yet 1")
