import asyncio
import os
import shutil
from pathlib import Path

import pytest

from adapters.tools.shell import ShellParams, ShellTool, ShellToolConfig
from bot.errors import ConfigError, RetryableToolError, ToolError
from bot.model.proposals import Category


def which(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed")
    return path


def make(tmp_path: Path, **overrides) -> ShellTool:
    commands = {
        "echo": {"path": which("echo"), "category": "read"},
        "printf": {"path": which("printf"), "category": "read"},
        "du": {"path": which("du"), "category": "read", "allow_args_pattern": r"-sh|[a-z0-9/_.]+"},
        "touch": {"path": which("touch"), "category": "write_reversible"},
        "sh": {"path": which("sh"), "category": "write_irreversible"},
        "seq": {"path": which("seq"), "category": "read"},
        "env": {"path": which("env"), "category": "read"},
    }
    config = {"commands": commands, "workdir": str(tmp_path), "timeout_s": 5.0} | overrides
    return ShellTool(ShellToolConfig.model_validate(config), os.environ)


async def test_arguments_are_passed_literally_never_through_a_shell(tmp_path):
    tool = make(tmp_path)
    hostile = ["; touch pwned", "$(touch pwned2)", "`touch pwned3`", "| touch pwned4", "&& rm -rf /"]

    result = await tool.run(ShellParams(argv=["echo", *hostile]), dry_run=False)

    assert result.exit_code == 0
    assert result.stdout == " ".join(hostile) + "\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing else ran


async def test_command_outside_the_allowlist_is_refused(tmp_path):
    tool = make(tmp_path)

    with pytest.raises(ToolError) as caught:
        await tool.run(ShellParams(argv=["rm", "-rf", str(tmp_path)]), dry_run=False)

    assert "'rm'" in str(caught.value) and "tools.shell.commands" in str(caught.value)
    assert tmp_path.exists()


async def test_an_absolute_path_is_not_a_way_around_the_allowlist(tmp_path):
    tool = make(tmp_path)
    with pytest.raises(ToolError, match="not allowed"):
        await tool.run(ShellParams(argv=[which("touch"), str(tmp_path / "x")]), dry_run=False)
    assert not (tmp_path / "x").exists()


async def test_each_argument_must_match_the_commands_pattern(tmp_path):
    tool = make(tmp_path)

    with pytest.raises(ToolError, match="argument 2 of du"):
        await tool.run(ShellParams(argv=["du", "-sh", "--files0-from=/etc/passwd"]), dry_run=False)
    result = await tool.run(ShellParams(argv=["du", "-sh", "."]), dry_run=False)
    assert result.exit_code == 0


async def test_category_comes_from_the_command_config(tmp_path):
    tool = make(tmp_path)
    assert tool.category_of(ShellParams(argv=["echo", "hi"])) is Category.read
    assert tool.category_of(ShellParams(argv=["touch", "f"])) is Category.write_reversible
    assert tool.category_of(ShellParams(argv=["unknown"])) is Category.write_irreversible


async def test_timeout_kills_the_process(tmp_path):
    tool = make(tmp_path, timeout_s=0.3)
    pidfile = tmp_path / "pid"

    with pytest.raises(RetryableToolError, match="killed"):
        await tool.run(ShellParams(argv=["sh", "-c", f"echo $$ > {pidfile}; exec sleep 30"]), dry_run=False)

    pid = int(pidfile.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_cancellation_kills_the_process(tmp_path):
    tool = make(tmp_path)
    fifo = tmp_path / "pid"
    os.mkfifo(fifo)  # reading it blocks until the child has started and written its pid
    task = asyncio.create_task(
        tool.run(ShellParams(argv=["sh", "-c", f"echo $$ > {fifo}; exec sleep 30"]), dry_run=False)
    )
    pid = int(await asyncio.to_thread(fifo.read_text))

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_nonzero_exit_fails_with_code_and_stderr_by_default(tmp_path):
    tool = make(tmp_path)
    with pytest.raises(ToolError, match=r"sh exited with code 3: ") as caught:
        await tool.run(ShellParams(argv=["sh", "-c", "echo noise >&2; echo disk full >&2; exit 3"]), dry_run=False)
    assert str(caught.value).endswith("noise\ndisk full")


async def test_nonzero_exit_is_a_result_when_configured(tmp_path):
    tool = make(tmp_path, fail_on_nonzero=False)
    result = await tool.run(ShellParams(argv=["sh", "-c", "echo out; exit 4"]), dry_run=False)
    assert result.exit_code == 4 and result.stdout == "out\n"


async def test_output_is_capped_while_the_process_still_finishes(tmp_path):
    tool = make(tmp_path, max_output_bytes=1000)

    result = await tool.run(ShellParams(argv=["seq", "1", "200000"]), dry_run=False)

    assert result.exit_code == 0
    assert result.truncated is True
    assert len(result.stdout) == 1000


async def test_child_gets_only_path_and_no_inherited_secrets(tmp_path, monkeypatch):
    monkeypatch.setenv("OODA_TEST_DB_PASSWORD", "hunter2-very-secret")
    tool = make(tmp_path)

    result = await tool.run(ShellParams(argv=["env"]), dry_run=False)

    names = sorted(line.split("=", 1)[0] for line in result.stdout.splitlines())
    assert names == ["LANG", "PATH"]


async def test_output_is_redacted(tmp_path):
    tool = make(tmp_path)
    result = await tool.run(ShellParams(argv=["printf", "owner=bob@example.com\\n"]), dry_run=False)
    assert "bob@example.com" not in result.stdout


async def test_dry_run_resolves_argv_without_running(tmp_path):
    tool = make(tmp_path)

    result = await tool.run(ShellParams(argv=["touch", "created"]), dry_run=True)

    assert result.dry_run is True and result.exit_code is None
    assert result.argv == [which("touch"), "created"]
    assert not (tmp_path / "created").exists()


def test_config_rejects_relative_paths_and_bad_patterns():
    with pytest.raises(ValueError, match="absolute path"):
        ShellToolConfig.model_validate({"commands": {"du": {"path": "du", "category": "read"}}})
    with pytest.raises(ValueError, match="regular expression"):
        ShellToolConfig.model_validate(
            {"commands": {"du": {"path": "/usr/bin/du", "category": "read", "allow_args_pattern": "("}}}
        )


def test_missing_workdir_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="workdir"):
        ShellTool(ShellToolConfig(workdir=str(tmp_path / "nope")), {})


async def test_the_dry_run_of_find_delete_lists_what_it_would_delete_and_deletes_nothing(tmp_path):
    commands = {"find": {"path": which("find"), "category": "write_irreversible",
                         "allow_args_pattern": r"scratch|-type|f|-name|\*\.tmp|-delete"}}
    tool = make(tmp_path, commands=commands)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    for name in ("a.tmp", "b.tmp", "keep.log"):
        (scratch / name).write_text("x")
    params = ShellParams(argv=["find", "scratch", "-type", "f", "-name", "*.tmp", "-delete"])

    preview = (await tool.run(params, dry_run=True)).preview

    head, count, *files = preview.splitlines()
    assert head == f"would run on the Ooda host: {which('find')} scratch -type f -name '*.tmp' -delete"
    assert count == "would delete 2 files:"
    assert sorted(f.strip() for f in files) == ["scratch/a.tmp", "scratch/b.tmp"]
    assert sorted(p.name for p in scratch.iterdir()) == ["a.tmp", "b.tmp", "keep.log"]  # nothing deleted

    await tool.run(params, dry_run=False)
    assert sorted(p.name for p in scratch.iterdir()) == ["keep.log"]
