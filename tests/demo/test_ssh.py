import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from adapters.tools.ssh import SshParams, SshResult, SshRunTool, SshToolConfig
from bot.audit.redaction import forget_secrets
from bot.errors import ToolError
from demo.ssh import DemoSshHost, human_size

# The section the quick start config carries (with the demo host's port in address_map).
COMMANDS = {
    "df": {"path": "/usr/bin/df", "category": "read", "allow_args_pattern": r"-P|-i|(?!.*\.\.)/[A-Za-z0-9_./-]*"},
    "du": {
        "path": "/usr/bin/du",
        "category": "read",
        "allow_args_pattern": r"-x|-h|-d|[0-9]|(?!.*\.\.)/[A-Za-z0-9_./-]*",
    },
    "find": {
        "path": "/usr/bin/find",
        "category": "write_irreversible",
        "allow_args_pattern": r"(?!.*\.\.)/[A-Za-z0-9_./-]*|-xdev|-type|f|-name|\*\.tmp|-mmin|\+[0-9]+|-delete",
    },
    "rm": {"path": "/usr/bin/rm", "category": "write_irreversible"},
}
DELETE_STALE = ["find", "/var", "-xdev", "-type", "f", "-name", "*.tmp", "-mmin", "+60", "-delete"]


@pytest.fixture
async def demo(tmp_path: Path) -> AsyncIterator[tuple[DemoSshHost, SshRunTool]]:
    host = DemoSshHost(tmp_path / "demo-ssh")
    config = SshToolConfig.model_validate(
        {
            "user": "ooda",
            "private_key_file": str(host.client_key_path),
            "known_hosts": str(host.known_hosts_path),
            "hosts": ["db-01"],
            "address_map": {"db-01": "127.0.0.1:1"},  # the port is known once the host listens
            "commands": COMMANDS,
            "timeout_s": 10,
        }
    )
    tool = SshRunTool(config, {})  # before start: the tool reads the key files only when it runs
    port = await host.start(port=0)
    tool.config.address_map["db-01"] = f"127.0.0.1:{port}"
    try:
        yield host, tool
    finally:
        await host.stop()
        forget_secrets()


async def run(tool: SshRunTool, *argv: str) -> SshResult:
    return await tool.run(SshParams(host="db-01", argv=list(argv)), dry_run=False)


def capacity(df_output: str) -> str:
    return df_output.splitlines()[1].split()[4]


async def test_deleting_stale_temp_files_brings_var_from_93_to_71_percent(demo):
    host, tool = demo

    before = await run(tool, "df", "-P", "/var")
    inodes = await run(tool, "df", "-i", "-P", "/var")
    usage = await run(tool, "du", "-x", "-h", "-d", "1", "/var")
    deleted = await run(tool, *DELETE_STALE)
    after = await run(tool, "df", "-P", "/var")

    assert before.stdout.splitlines()[0].split()[:2] == ["Filesystem", "1024-blocks"]
    assert capacity(before.stdout) == "93%" and before.stdout.rstrip().endswith("/var")
    assert capacity(inodes.stdout) == "88%"
    assert "12G\t/var/tmp\n" in usage.stdout and usage.stdout.endswith("\t/var\n")
    assert deleted.exit_code == 0 and deleted.stdout == ""
    assert capacity(after.stdout) == "71%"
    assert host.commands_run[3] == ["/usr/bin/find", *DELETE_STALE[1:]]
    assert [argv[0] for argv in host.commands_run] == ["/usr/bin/df"] * 2 + [
        "/usr/bin/du",
        "/usr/bin/find",
        "/usr/bin/df",
    ]


async def test_find_takes_its_predicates_in_any_order_and_keeps_fresh_files(demo):
    _, tool = demo

    listed = await run(tool, "find", "/var/tmp", "-name", "*.tmp", "-mmin", "+60", "-type", "f", "-xdev")
    await run(tool, "find", "/var/tmp", "-mmin", "+60", "-delete", "-name", "*.tmp", "-type", "f", "-xdev")
    left = await run(tool, "find", "/var/tmp", "-xdev", "-type", "f", "-name", "*.tmp")

    assert len(listed.stdout.splitlines()) == 12
    assert left.stdout.splitlines() == [
        "/var/tmp/pg_stat_tmp.tmp",
        "/var/tmp/reports/export-0013.tmp",
        "/var/tmp/sess_4f2a.tmp",
    ]


async def test_find_elsewhere_deletes_nothing(demo):
    _, tool = demo
    await run(tool, "find", "/var/log", "-xdev", "-type", "f", "-name", "*.tmp", "-mmin", "+60", "-delete")
    await run(tool, "find", "/", "-xdev", "-type", "f", "-name", "*.tmp", "-mmin", "+60", "-delete")
    assert capacity((await run(tool, "df", "-P", "/var")).stdout) == "93%"


async def test_other_commands_are_not_found_and_nothing_runs_here(demo, tmp_path):
    host, tool = demo
    victim = tmp_path / "keep-me"
    victim.write_text("x")

    with pytest.raises(ToolError, match=r"exited with code 127: rm: command not found on the demo host"):
        await run(tool, "rm", "-f", str(victim))

    assert victim.exists()
    assert host.commands_run == [["/usr/bin/rm", "-f", str(victim)]]
    # The root filesystem is the simulated one too, not this machine's.
    assert (await run(tool, "df", "-P", "/")).stdout.splitlines()[1].startswith("/dev/vda1 ")


async def test_keys_are_written_for_the_address_the_tool_dials(demo):
    host, tool = demo
    port = int(tool.config.address_map["db-01"].rsplit(":", 1)[1])

    assert stat.S_IMODE(host.client_key_path.stat().st_mode) == 0o600
    assert host.known_hosts_path.read_text().startswith(f"[127.0.0.1]:{port} ssh-ed25519 ")


async def test_only_the_generated_client_key_is_authorized(demo, tmp_path):
    host, tool = demo
    other = DemoSshHost(tmp_path / "other")  # a second demo host only to mint another client key
    await other.start(port=0)
    await other.stop()
    stranger = SshRunTool(tool.config.model_copy(update={"private_key_file": str(other.client_key_path)}), {})

    with pytest.raises(ToolError, match="refused the login"):
        await run(stranger, "df", "-P", "/var")
    assert host.commands_run == []


def test_human_sizes_round_up_like_du():
    assert human_size(11_528_704 + 284_109) == "12G"
    assert human_size(1_153_433) == "1.1G"
    assert human_size(12_288) == "12M"
    assert human_size(512) == "512K"
    assert human_size(10_230) == "10M"
