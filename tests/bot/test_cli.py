"""The ``ooda`` command, called in-process through ``bot.cli.main``.

Commands that talk to the server run in a worker thread (they use a blocking HTTP client) while
the App serves on this test's event loop; ``audit`` commands read the store file after the App
has stopped, as an auditor would.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from bot.audit.chain import AUDIT_COLUMNS
from bot.cli import build_parser, main
from tests.harness import ENV, EXAMPLE, ROOT, running_app, running_standin


@pytest.fixture
def secrets_env(monkeypatch):
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def quiet_server():
    """Keep the in-process server's log lines out of the captured CLI output."""
    with capture_logs() as logs:
        yield logs


async def ooda(capsys, *argv: str) -> tuple[int, str, str]:
    code = await asyncio.to_thread(main, list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def place_example(tmp_path: Path, text: str) -> Path:
    (tmp_path / "playbooks").symlink_to(ROOT / "playbooks")
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_check_accepts_the_example_and_rejects_a_broken_copy(tmp_path, capsys):
    good = place_example(tmp_path, EXAMPLE.read_text(encoding="utf-8"))
    assert main(["check", "--config", str(good)]) == 0
    assert "OK (environment dev, 4 alert sources)" in capsys.readouterr().out

    bad = tmp_path / "bad.yaml"
    text = EXAMPLE.read_text(encoding="utf-8").replace("  port: 8080", "  port: 8080\n  hots: x")
    bad.write_text(text)
    line = text.splitlines().index("  hots: x") + 1
    assert main(["check", "--config", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "1 problem(s)" in err
    assert f"{bad}:{line}: server.hots: unknown key" in err


def test_config_error_exits_2_and_names_the_file(tmp_path, capsys):
    missing = tmp_path / "nope.yaml"
    assert main(["status", "--config", str(missing)]) == 2
    assert f"config error: {missing}: cannot read file" in capsys.readouterr().err


async def test_operator_session_fire_approve_pause_and_export(tmp_path, capsys, monkeypatch, secrets_env, quiet_server):
    (tmp_path / "work" / "scratch").mkdir(parents=True)
    config = str(tmp_path / "config.yaml")
    async with running_standin() as standin, running_app(tmp_path, standin) as app:
        monkeypatch.setenv("OODA_URL", f"http://127.0.0.1:{app.port}")

        code, out, _ = await ooda(capsys, "fire", "--sample", "alertmanager-kube-pod-crashlooping", "--config", config)
        assert code == 0 and out.startswith("202 ")
        (signal_id,) = json.loads(out.split(" ", 1)[1])["signal_ids"]
        await app.engine.wait_idle()

        code, out, _ = await ooda(capsys, "tasks", "--json", "--config", config)
        (task,) = json.loads(out)["tasks"]
        assert code == 0 and task["state"] == "needs_approval" and task["playbook_id"] == "kube-pod-crashlooping"
        task_id = str(task["id"])

        code, out, _ = await ooda(capsys, "show", task_id, "--config", config)
        assert code == 0
        assert f"Next: ooda approve {task_id}" in out

        code, out, _ = await ooda(capsys, "pause", "--reason", "maintenance", "--config", config)
        assert code == 0 and "kill switch: ON (by Local admin: maintenance)" in out
        code, _, err = await ooda(capsys, "approve", task_id, "--config", config)
        assert code == 1 and "403" in err and "kill switch" in err
        code, out, _ = await ooda(capsys, "resume", "--config", config)
        assert code == 0 and "kill switch: off" in out

        code, out, _ = await ooda(capsys, "approve", task_id, "--config", config)
        assert code == 0 and "Approved by Local admin" in out
        await app.engine.wait_idle()
        assert (await app.store.get_task(int(task_id))).state.value == "completed"

        code, _, err = await ooda(capsys, "approve", "424242", "--config", config)
        assert code == 1 and "404" in err and "there is no task 424242" in err

    # The server is gone: audit commands work on the file alone.
    bundle_path = tmp_path / "bundle.json"
    code, out, _ = await ooda(capsys, "audit", "export", task_id, "--config", config, "-o", str(bundle_path))
    assert code == 0 and f"wrote {bundle_path}" in out
    bundle = json.loads(bundle_path.read_text())

    assert bundle["format"] == "ooda.evidence-bundle/1"
    assert bundle["task"]["id"] == int(task_id) and bundle["task"]["state"] == "completed"
    assert [s["id"] for s in bundle["signals"]] == [signal_id]
    assert bundle["signals"][0]["raw"]["labels"]["alertname"]
    events = [e["name"] for e in bundle["events"]]
    assert events[0] == "ops.agent_task.created"
    assert {"ops.agent_task.proposed_action", "ops.agent_task.approved", "ops.agent_task.executed"} <= set(events)
    actions = [a["action"] for a in bundle["audit"]]
    assert {"task.created", "task.proposal", "task.approval", "tool.call"} <= set(actions)
    assert {a["task_id"] for a in bundle["audit"]} == {int(task_id)}
    assert [a["actor"] for a in bundle["audit"] if a["action"] == "task.approval"] == ["local-admin"]
    # The bundle's records are the stored ones, hashes included, so a later verify can vouch for them.
    with closing(sqlite3.connect(tmp_path / "data" / "ooda.db")) as conn:
        stored = conn.execute(f"SELECT {AUDIT_COLUMNS} FROM audit WHERE task_id = ? ORDER BY seq",
                              (int(task_id),)).fetchall()
    assert [(a["seq"], a["hash"], a["signature"]) for a in bundle["audit"]] == [(r[0], r[8], r[9]) for r in stored]

    # Without -o the bundle goes to the data folder (ignored by git), not the working directory.
    code, out, _ = await ooda(capsys, "audit", "export", task_id, "--config", config)
    default = tmp_path / "data" / "exports" / f"task-{task_id}.json"
    assert code == 0 and f"wrote {default}" in out
    assert json.loads(default.read_text())["task"]["id"] == int(task_id)
    code, out, _ = await ooda(capsys, "audit", "export", task_id, "--config", config, "-o", "-")
    assert code == 0 and json.loads(out)["task"]["id"] == int(task_id)

    code, out, _ = await ooda(capsys, "audit", "verify", "--config", config)
    assert code == 0 and "chain intact" in out
    code, _, err = await ooda(capsys, "audit", "export", "424242", "--config", config)
    assert code == 1 and "there is no task 424242" in err


async def test_replay_shows_what_a_new_version_would_change_and_fails_on_a_broken_one(
        tmp_path, capsys, monkeypatch, secrets_env, quiet_server):
    (tmp_path / "work" / "scratch").mkdir(parents=True)
    config = str(tmp_path / "config.yaml")
    shipped = (ROOT / "playbooks" / "kube-pod-crashlooping.yaml").read_text(encoding="utf-8")
    draft = tmp_path / "draft"
    draft.mkdir()
    async with running_standin() as standin, running_app(tmp_path, standin) as app:
        monkeypatch.setenv("OODA_URL", f"http://127.0.0.1:{app.port}")
        fired = await ooda(capsys, "fire", "--sample", "alertmanager-kube-pod-crashlooping", "--config", config)
        assert fired[0] == 0
        await app.engine.wait_idle()
        [task] = await app.store.list_tasks(open_only=False)

        (draft / "kube-pod-crashlooping.yaml").write_text(shipped, encoding="utf-8")
        code, out, _ = await ooda(capsys, "replay", str(draft), "--config", config)
        assert code == 0
        assert out.splitlines() == ["replayed 1 task(s): 1 unchanged, 0 changed, 0 failing",
                                    f"#{task.id} kube-pod-crashlooping v{task.playbook_version} → "
                                    f"v{task.playbook_version}: unchanged"]

        (draft / "kube-pod-crashlooping.yaml").write_text(shipped.replace(
            'name: "{{ labels.workload }}"}\n    category', 'name: "{{ labels.workload }}-v2"}\n    category'))
        code, out, _ = await ooda(capsys, "replay", str(draft), "--task", f"#{task.id}", "--json", "--config", config)
        [result] = json.loads(out)
        assert code == 0 and len(result["changes"]) == 1
        assert result["changes"][0] == "step restart: name 'checkout' → 'checkout-v2'"

        (draft / "kube-pod-crashlooping.yaml").write_text(shipped.replace("steps:", "stepz:", 1))
        code, _, err = await ooda(capsys, "replay", str(draft), "--config", config)
        assert code == 1 and "400 invalid_playbooks" in err and "kube-pod-crashlooping.yaml:" in err and "stepz" in err


async def test_cli_without_a_server_says_how_to_start_one(tmp_path, capsys, monkeypatch, secrets_env, quiet_server):
    async with running_standin() as standin, running_app(tmp_path, standin) as app:
        port = app.port
    monkeypatch.setenv("OODA_URL", f"http://127.0.0.1:{port}")
    code, _, err = await ooda(capsys, "status", "--config", str(tmp_path / "config.yaml"))
    assert code == 1
    assert "is `ooda serve` running?" in err


def test_edit_and_argument_syntax_errors_are_user_errors(capsys):
    assert main(["approve", "1", "--edit", "no-dot=1", "--config", str(EXAMPLE)]) == 1
    assert "--edit takes step.param=value" in capsys.readouterr().err
    assert main(["run", "node-filesystem-space", "novalue", "--config", str(EXAMPLE)]) == 1
    assert "arguments are key=value" in capsys.readouterr().err


def test_config_before_the_subcommand_is_honoured():
    assert build_parser().parse_args(["audit", "--config", "X", "verify"]).config == Path("X")


async def test_digest_prints_the_day_and_writes_its_chart(tmp_path, capsys, monkeypatch, secrets_env, quiet_server):
    config = str(tmp_path / "config.yaml")
    png = tmp_path / "chart.png"
    async with running_standin() as standin, running_app(tmp_path, standin) as app:
        monkeypatch.setenv("OODA_URL", f"http://127.0.0.1:{app.port}")
        code, out, err = await ooda(capsys, "digest", "--date", "2026-01-15", "--png", str(png), "--config", config)
        assert code == 0 and out.startswith("Ooda digest: Thursday 2026-01-15 (UTC)")
        assert "Quiet day" in out and f"chart: {png}" in err
        assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")

        code, _, err = await ooda(capsys, "digest", "--date", "15.01.2026", "--config", config)
        assert code == 1 and "400" in err and "YYYY-MM-DD" in err
