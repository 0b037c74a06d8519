import asyncio
import os
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from adapters.tools.ssh import SshParams, SshRunTool, SshToolConfig, parse_address
from bot.errors import ConfigError, RetryableToolError, ToolError
from bot.loop.gateway import ToolCallRefused, ToolGateway, ToolOutcome, ToolRegistry
from bot.model.proposals import Category
from bot.ports import StepCall
from tests.fakes.authority import ScriptedAuthority, call_tool
from tests.fakes.sshd import KeyPair, Sshd, free_port, generate_key, running_sshd

COMMANDS = {
    "df": {"path": "/usr/bin/df", "category": "read", "allow_args_pattern": r"-P|-i|/[A-Za-z0-9_./-]*"},
    "printf": {"path": "/usr/bin/printf", "category": "read"},
    "seq": {"path": "/usr/bin/seq", "category": "read"},
    "cat": {"path": "/usr/bin/cat", "category": "read"},
    "sh": {"path": "/bin/sh", "category": "write_irreversible"},
}


@pytest.fixture
async def client_key(tmp_path: Path) -> KeyPair:
    return await generate_key(tmp_path / "id_ed25519")


@pytest.fixture
async def sshd(tmp_path: Path, client_key: KeyPair) -> AsyncIterator[Sshd]:
    async with running_sshd(tmp_path / "sshd", authorized=[client_key]) as server:
        yield server


class Listener:
    """A TCP port that counts connections: proof that a refused call dialled nothing."""

    def __init__(self) -> None:
        self.connections = 0
        self.port = 0

    async def __aenter__(self) -> "Listener":
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.close()


def make(
    tmp_path: Path, port: int, key: KeyPair, known_hosts_text: str = "", env: dict[str, str] | None = None, **over: Any
) -> SshRunTool:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(known_hosts_text)
    config: dict[str, Any] = {
        "user": "ooda",
        "known_hosts": str(known_hosts),
        "hosts": ["db-*"],
        "address_map": {"db-*": f"127.0.0.1:{port}"},
        "commands": COMMANDS,
        "timeout_s": 5.0,
        "connect_timeout_s": 5.0,
    }
    if env is None:
        config["private_key_file"] = str(key.private_path)
    config |= over
    return SshRunTool(SshToolConfig.model_validate(config), env or {})


def tool_for(tmp_path: Path, sshd: Sshd, key: KeyPair, **over: Any) -> SshRunTool:
    return make(tmp_path, sshd.port, key, sshd.known_hosts_line(), user=sshd.user, **over)


async def call(tool: SshRunTool, params: dict[str, Any], *, dry_run: bool = False) -> tuple[ToolOutcome, list[dict]]:
    registry = ToolRegistry()
    registry.register(tool)
    authority = ScriptedAuthority()
    outcome = await call_tool(ToolGateway(registry, authority=authority), StepCall(tool="ssh.run", params=params),
                              dry_run=dry_run, timeout_s=30)
    return outcome, authority.audit


async def test_df_runs_on_the_remote_host_through_the_gateway(tmp_path, sshd, client_key):
    tool = tool_for(tmp_path, sshd, client_key)

    outcome, audit = await call(tool, {"host": "db-01", "argv": ["df", "-P", "/"]})

    assert outcome.ok, outcome.error
    result = outcome.result
    assert result is not None
    assert result["host"] == "db-01" and result["exit_code"] == 0 and result["dry_run"] is False
    assert result["command"] == "/usr/bin/df -P /"
    assert result["stdout"].startswith("Filesystem") and result["stdout"].splitlines()[1].endswith(" /")
    assert audit[0]["outcome"] == "succeeded" and audit[0]["category"] == "read"


async def test_hostile_arguments_reach_the_remote_command_as_literal_arguments(tmp_path, sshd, client_key):
    tool = tool_for(tmp_path, sshd, client_key)
    marker = tmp_path / f"pwned-{secrets.token_hex(4)}"
    hostile = [f"; touch {marker}", "$(id)", f"`touch {marker}`", f"' && touch {marker} '", "a\nb", "*"]

    result = await tool.run(SshParams(host="db-01", argv=["printf", r"[%s]\n", *hostile]), dry_run=False)

    # One bracketed line per argument: each arrived whole and unexpanded.
    assert result.stdout == "".join(f"[{arg}]\n" for arg in hostile)
    assert not marker.exists()


async def test_a_command_outside_the_allowlist_is_refused_without_connecting(tmp_path, client_key):
    async with Listener() as listener:
        tool = make(tmp_path, listener.port, client_key)
        with pytest.raises(ToolError, match=r"'rm' is not allowed; add it under tools.ssh.commands"):
            await tool.run(SshParams(host="db-01", argv=["rm", "-rf", "/"]), dry_run=False)
        with pytest.raises(ToolError, match="not allowed"):  # the remote path is not a way around it
            await tool.run(SshParams(host="db-01", argv=["/bin/sh", "-c", "id"]), dry_run=False)
    assert listener.connections == 0


async def test_an_argument_outside_the_pattern_is_refused_without_connecting(tmp_path, client_key):
    async with Listener() as listener:
        tool = make(tmp_path, listener.port, client_key)
        with pytest.raises(ToolError, match=r"argument 2 of df does not match .* tools.ssh.commands.df"):
            await tool.run(SshParams(host="db-01", argv=["df", "-P", "--output=source", "/"]), dry_run=False)
    assert listener.connections == 0


async def test_a_host_outside_the_allowed_globs_is_refused_without_connecting(tmp_path, client_key):
    async with Listener() as listener:
        tool = make(tmp_path, listener.port, client_key, address_map={"*": f"127.0.0.1:{listener.port}"})
        outcome, audit = await call(tool, {"host": "web-01", "argv": ["df", "-P", "/"]})
    assert not outcome.ok and not outcome.retryable
    assert "host 'web-01' is not allowed" in (outcome.error or "") and "tools.ssh.hosts" in (outcome.error or "")
    assert listener.connections == 0
    assert audit[0]["outcome"] == "failed"


async def test_no_globs_allow_no_host(tmp_path, client_key):
    tool = make(tmp_path, 1, client_key, hosts=[])
    with pytest.raises(ToolError, match=r"allowed: none"):
        await tool.run(SshParams(host="db-01", argv=["df"]), dry_run=True)


@pytest.mark.parametrize(
    ("host", "message"),
    [
        ("db-01:9100", "normalized `host` label"),
        ("root@db-01", "user comes from tools.ssh.user"),
        ("-oProxyCommand=touch", "must not start with '-'"),
        ("db 01", "spaces"),
        ("db-01/../etc", "'..'"),
        ("a" * 254, "longer than 253"),
        ("db-01;id", "DNS name"),
    ],
)
async def test_hosts_that_are_not_a_bare_name_or_address_are_refused(tmp_path, client_key, host, message):
    tool = make(tmp_path, 1, client_key)
    with pytest.raises(ToolCallRefused, match=r"invalid params for ssh\.run: host") as caught:
        await call(tool, {"host": host, "argv": ["df"]})
    assert message in str(caught.value)


def test_host_names_are_normalized_and_addresses_accepted():
    assert SshParams(host="DB-01.Example.com", argv=["df"]).host == "db-01.example.com"
    assert SshParams(host="10.0.0.5", argv=["df"]).host == "10.0.0.5"
    assert SshParams(host="fe80::1", argv=["df"]).host == "fe80::1"


async def test_an_unknown_host_key_is_refused(tmp_path, sshd, client_key):
    impostor = await generate_key(tmp_path / "other_host_key")
    tool = make(tmp_path, sshd.port, client_key, f"[127.0.0.1]:{sshd.port} {impostor.public_line}\n", user=sshd.user)

    outcome, _ = await call(tool, {"host": "db-01", "argv": ["df", "-P", "/"]})

    assert not outcome.ok and not outcome.retryable
    error = outcome.error or ""
    assert "add it to the known_hosts file" in error and "db-01 via 127.0.0.1 port" in error
    for key in (impostor, sshd.host_key):
        assert key.public_line.split()[1] not in error


async def test_a_host_missing_from_known_hosts_is_refused(tmp_path, sshd, client_key):
    tool = make(tmp_path, sshd.port, client_key, "", user=sshd.user)
    with pytest.raises(ToolError, match="known_hosts"):
        await tool.run(SshParams(host="db-01", argv=["df", "-P", "/"]), dry_run=False)


async def test_a_key_the_host_does_not_authorize_is_an_auth_failure_in_words(tmp_path, sshd):
    stranger = await generate_key(tmp_path / "stranger")
    tool = tool_for(tmp_path, sshd, stranger)

    with pytest.raises(ToolError, match=r"refused the login of user .* authorize its public key") as caught:
        await tool.run(SshParams(host="db-01", argv=["df", "-P", "/"]), dry_run=False)
    assert not isinstance(caught.value, RetryableToolError)


async def test_nothing_listening_is_retryable_and_names_host_and_port(tmp_path, client_key):
    port = free_port()
    tool = make(tmp_path, port, client_key)

    outcome, _ = await call(tool, {"host": "db-01", "argv": ["df", "-P", "/"]})

    assert not outcome.ok and outcome.retryable
    assert outcome.error == f"could not connect to db-01 via 127.0.0.1 port {port}: connection refused"


# The remote command writes a tick every 50 ms: the tool sends SIGKILL and closes the channel, and
# since the tests log in as root, where OpenSSH refuses signal requests, the closed channel (SIGPIPE
# at the next tick) is what must stop it.
TICKING = "echo $$ > {pidfile}; while :; do echo tick; sleep 0.05; done"


async def wait_until_gone(pid: int) -> None:
    # The remote command dies in its own time after the channel closes; a deadline bounds the wait.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        await asyncio.sleep(0.02)
    pytest.fail(f"remote command {pid} still runs after its channel was closed")


async def test_a_command_over_the_timeout_is_stopped(tmp_path, sshd, client_key):
    tool = tool_for(tmp_path, sshd, client_key, timeout_s=1.0)
    pidfile = tmp_path / "remote.pid"

    with pytest.raises(RetryableToolError, match=r"sh on db-01 did not finish within 1s and was killed"):
        await tool.run(SshParams(host="db-01", argv=["sh", "-c", TICKING.format(pidfile=pidfile)]), dry_run=False)

    await wait_until_gone(int(pidfile.read_text()))


async def test_cancellation_stops_the_remote_command(tmp_path, sshd, client_key):
    tool = tool_for(tmp_path, sshd, client_key, timeout_s=60)
    fifo = tmp_path / "remote.pid"
    os.mkfifo(fifo)  # reading it blocks until the remote command has started and written its pid
    task = asyncio.create_task(
        tool.run(SshParams(host="db-01", argv=["sh", "-c", TICKING.format(pidfile=fifo)]), dry_run=False)
    )
    pid = int(await asyncio.to_thread(fifo.read_text))

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    await wait_until_gone(pid)


async def test_nonzero_exit_fails_with_the_last_stderr_lines(tmp_path, sshd, client_key):
    tool = tool_for(tmp_path, sshd, client_key)
    with pytest.raises(ToolError, match=r"sh on db-01 exited with code 3: ") as caught:
        await tool.run(
            SshParams(host="db-01", argv=["sh", "-c", "echo noise >&2; echo disk full >&2; exit 3"]), dry_run=False
        )
    assert str(caught.value).endswith("noise\ndisk full")


async def test_nonzero_exit_is_a_result_when_configured(tmp_path, sshd, client_key):
    tool = tool_for(tmp_path, sshd, client_key, fail_on_nonzero=False)
    result = await tool.run(SshParams(host="db-01", argv=["sh", "-c", "echo out; exit 4"]), dry_run=False)
    assert result.exit_code == 4 and result.stdout == "out\n"


async def test_output_is_capped_while_the_command_still_finishes(tmp_path, sshd, client_key):
    tool = tool_for(tmp_path, sshd, client_key, max_output_bytes=1000)

    result = await tool.run(SshParams(host="db-01", argv=["seq", "1", "200000"]), dry_run=False)

    assert result.exit_code == 0 and result.truncated is True
    assert len(result.stdout) == 1000 and result.stdout.startswith("1\n2\n")


async def test_dry_run_previews_the_exact_command_line_and_connects_nowhere(tmp_path, client_key):
    nothing_listens = free_port()
    async with Listener() as listener:
        for port in (nothing_listens, listener.port):
            tool = make(tmp_path, port, client_key)
            outcome, audit = await call(
                tool, {"host": "db-01", "argv": ["sh", "-c", "rm -rf /tmp/x; echo it's"]}, dry_run=True
            )
            assert outcome.ok, outcome.error
            assert outcome.result is not None
            assert outcome.result["command"] == "/bin/sh -c 'rm -rf /tmp/x; echo it'\"'\"'s'"
            assert outcome.result["dry_run"] is True and outcome.result["exit_code"] is None
            assert audit[0]["dry_run"] is True
    assert listener.connections == 0


async def test_the_private_key_never_reaches_logs_or_results(tmp_path, sshd, client_key):
    key_text = client_key.private_text
    tool = tool_for(
        tmp_path, sshd, client_key, private_key_file=None, env={"SSH_KEY": key_text}, private_key_env="SSH_KEY"
    )

    with capture_logs() as logs:
        # A command that prints the key file: the result must still not carry it.
        shown, _ = await call(tool, {"host": "db-01", "argv": ["cat", str(client_key.private_path)]})
        failed, _ = await call(
            tool, {"host": "db-01", "argv": ["sh", "-c", f"cat {client_key.private_path} >&2; exit 1"]}
        )

    assert shown.ok and failed.ok is False
    body_lines = [line for line in key_text.splitlines() if line and not line.startswith("-----")]
    assert body_lines
    for text in (str(logs), shown.model_dump_json(), failed.model_dump_json()):
        for line in body_lines:
            assert line not in text


def test_config_needs_exactly_one_key_source_and_a_known_hosts_file():
    base = {"user": "ooda", "known_hosts": "known_hosts"}
    with pytest.raises(ValueError, match="exactly one of private_key_env"):
        SshToolConfig.model_validate(base)
    with pytest.raises(ValueError, match="exactly one of private_key_env"):
        SshToolConfig.model_validate(base | {"private_key_env": "K", "private_key_file": "k"})
    with pytest.raises(ValueError, match="known_hosts"):
        SshToolConfig.model_validate({"user": "ooda", "private_key_file": "k"})
    with pytest.raises(ValueError, match="extra"):
        SshToolConfig.model_validate(base | {"private_key_file": "k", "strict_host_key_checking": False})
    with pytest.raises(ValueError, match="address_map"):
        SshToolConfig.model_validate(base | {"private_key_file": "k", "address_map": {"db-*": "127.0.0.1:99999"}})


def test_address_map_targets_parse_with_and_without_a_port():
    assert parse_address("10.0.0.5:2222", default_port=22) == ("10.0.0.5", 2222)
    assert parse_address("[::1]:2222", default_port=22) == ("::1", 2222)
    assert parse_address("bastion.internal", default_port=2200) == ("bastion.internal", 2200)
    with pytest.raises(ValueError, match="invalid port"):
        parse_address("bastion:ssh", default_port=22)


def test_a_missing_or_unusable_key_in_the_environment_is_a_config_error():
    config = SshToolConfig(user="ooda", known_hosts="known_hosts", private_key_env="OODA_SSH_KEY")
    with pytest.raises(ConfigError, match="OODA_SSH_KEY, which is not set"):
        SshRunTool(config, {})
    with pytest.raises(ConfigError, match="does not hold an unencrypted OpenSSH or PEM private key") as caught:
        SshRunTool(config, {"OODA_SSH_KEY": "not-a-key-at-all"})
    assert "not-a-key-at-all" not in str(caught.value)


async def test_a_missing_key_file_is_a_tool_error_at_use(tmp_path, client_key):
    tool = make(tmp_path, 1, client_key, private_key_file=str(tmp_path / "absent"))  # construction reads nothing
    with pytest.raises(ToolError, match="cannot read the SSH private key"):
        await tool.run(SshParams(host="db-01", argv=["df"]), dry_run=False)


def test_category_comes_from_the_command_config(tmp_path):
    tool = make(tmp_path, 1, KeyPair(tmp_path / "unused", ""))
    assert tool.category_of(SshParams(host="db-01", argv=["df"])) is Category.read
    assert tool.category_of(SshParams(host="db-01", argv=["sh"])) is Category.write_irreversible
    assert tool.category_of(SshParams(host="db-01", argv=["unknown"])) is Category.write_irreversible
    assert SshRunTool.supports_dry_run is True and SshRunTool.idempotent is False
