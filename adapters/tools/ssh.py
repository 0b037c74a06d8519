"""``ssh.run``: run one allowlisted command on a named remote host over SSH (asyncssh).

The remote twin of ``shell.run``, with the same safety properties:

- argv[0] must be a command named in ``tools.ssh.commands`` and is replaced by its absolute path on
  the remote host; each argument must fullmatch the command's ``allow_args_pattern`` when one is set.
- An SSH "exec" request carries one string that the remote login shell parses, so every element is
  quoted with ``shlex.quote``: ``; rm -rf /`` arrives as one inert argument.
- The host comes from an alert label, so it is validated (a bare DNS name or IP, no ``user@``, no
  ``:port``) and must match one of the ``tools.ssh.hosts`` globs before anything connects.
- Host keys are always checked against the configured ``known_hosts`` file; an unknown or changed
  key is refused. Nothing is read from ``~/.ssh`` (no config file, no agent, no default keys).
- On timeout or cancellation the remote command is sent SIGKILL and its channel and the connection
  are closed. OpenSSH (7.9+) delivers the signal for ordinary users but refuses it in root sessions;
  there the command dies of SIGPIPE at its next write, and a silent one runs on. Log in as a
  dedicated unprivileged user (``tools.ssh.user``), which is the better practice anyway.

``address_map`` reaches a host through another address (a port forward, a demo host). The host key
is then checked for the address actually dialled, as plain ``ssh -p PORT ADDRESS`` would: the
``known_hosts`` line is ``[127.0.0.1]:2222 ssh-ed25519 ...``, not ``db-01 ...``. Checking the
machine that answers, not the name it stands for, is what stays true when several names share one
forward. One connection per call: simple, and nothing stale survives a host key rotation.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import ipaddress
import os
import re
import shlex
import socket
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

import structlog
from cryptography.utils import CryptographyDeprecationWarning
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from adapters.tools.find_preview import listing_argv, listing_preview
from adapters.tools.shell import CommandAllowlist, CommandConfig, last_lines, read_capped
from bot.audit.redaction import redact_text, register_secret
from bot.errors import ConfigError, RetryableToolError, ToolError
from bot.model.proposals import Category
from bot.ports import StepCall

with warnings.catch_warnings():
    # asyncssh names cryptography's deprecated DSA classes in annotations evaluated at import time;
    # the warning is about DSA keys, which we never use, and would fail runs with warnings as errors.
    warnings.simplefilter("ignore", CryptographyDeprecationWarning)
    import asyncssh

log = structlog.get_logger(__name__)

MAX_HOST_LENGTH = 253  # the longest DNS name
_HOST_NAME = re.compile(r"[a-z0-9_]([a-z0-9_.-]*[a-z0-9_])?")


class SshToolConfig(BaseModel):
    """``tools.ssh`` in the config file."""

    model_config = ConfigDict(extra="forbid")

    user: str = Field(min_length=1)
    port: int = Field(22, ge=1, le=65535)
    private_key_env: str | None = None
    private_key_file: str | None = None  # read at each call: a demo host writes it at start
    known_hosts: str  # required: host key checking is never turned off
    hosts: list[str] = Field(default_factory=list)  # fnmatch globs; empty allows no host at all
    address_map: dict[str, str] = Field(default_factory=dict)  # glob -> "address[:port]", first match wins
    connect_timeout_s: float = Field(10.0, gt=0, le=300)
    timeout_s: float = Field(60.0, gt=0, le=3600)
    max_output_bytes: int = Field(64 * 1024, gt=0)
    commands: dict[str, CommandConfig] = Field(default_factory=dict)
    fail_on_nonzero: bool = True

    @model_validator(mode="after")
    def _one_key_source(self) -> SshToolConfig:
        if (self.private_key_env is None) == (self.private_key_file is None):
            raise ValueError("set exactly one of private_key_env (an env var holding the key) or private_key_file")
        return self

    @field_validator("address_map")
    @classmethod
    def _addresses_parse(cls, value: dict[str, str]) -> dict[str, str]:
        for glob, target in value.items():
            try:
                parse_address(target, default_port=22)
            except ValueError as exc:
                raise ValueError(f"address_map[{glob!r}]: {exc}") from None
        return value


def parse_address(target: str, *, default_port: int) -> tuple[str, int]:
    """``"10.0.0.5:2222"``, ``"[::1]:2222"`` or ``"bastion"`` -> (address, port)."""
    address, port_text = target, ""
    if target.startswith("["):
        address, _, rest = target[1:].partition("]")
        if rest and not rest.startswith(":"):
            raise ValueError(f"{target!r} is not address:port")
        port_text = rest[1:]
    elif target.count(":") == 1:
        address, port_text = target.split(":")
    if not address or any(ch.isspace() for ch in address):
        raise ValueError(f"{target!r} has no usable address; write it as address:port")
    if not port_text:
        return address, default_port
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"{target!r} has an invalid port; write it as address:port with a port 1-65535")
    return address, int(port_text)


def check_host(value: str) -> str:
    """The host as a lower-case DNS name or IP address; ValueError says what is wrong with it."""
    if len(value) > MAX_HOST_LENGTH:
        raise ValueError(f"is longer than {MAX_HOST_LENGTH} characters")
    if "@" in value:
        raise ValueError("must be a bare host name; the user comes from tools.ssh.user, not from user@host")
    if any(ch.isspace() for ch in value):
        raise ValueError("must not contain spaces")
    if value.startswith("-"):
        raise ValueError("must not start with '-'")
    if ".." in value:
        raise ValueError("must not contain '..'")
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    if ":" in value:
        raise ValueError(
            "must not carry a port: an alert's instance label such as db-01:9100 is the exporter's "
            "address; use the normalized `host` label in the playbook instead"
        )
    host = value.lower()
    if not _HOST_NAME.fullmatch(host):
        raise ValueError("must be a DNS name (letters, digits, '-', '_', '.') or an IP address")
    return host


class SshParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str
    argv: list[str] = Field(min_length=1, max_length=256)

    @field_validator("host")
    @classmethod
    def _valid_host(cls, value: str) -> str:
        return check_host(value)

    @model_validator(mode="after")
    def _no_nul(self) -> SshParams:
        if any("\x00" in arg for arg in self.argv):
            raise ValueError("argv must not contain NUL characters")
        return self


class SshResult(BaseModel):
    host: str
    argv: list[str]
    command: str  # the exact line the remote shell receives
    exit_code: int | None = None  # None for a dry run
    stdout: str = ""
    stderr: str = ""
    truncated: bool = False
    duration_ms: int = 0
    dry_run: bool = False
    preview: str = ""  # dry run: what the command would do (for find -delete: the files it would delete)


class SshRunTool:
    name: ClassVar[str] = "ssh.run"
    category: ClassVar[Category] = Category.write_irreversible
    params_model: ClassVar[type[BaseModel]] = SshParams
    result_model: ClassVar[type[BaseModel]] = SshResult
    supports_dry_run: ClassVar[bool] = True
    idempotent: ClassVar[bool] = False

    def __init__(self, config: SshToolConfig, env: Mapping[str, str]) -> None:
        self.config = config
        self.allowlist = CommandAllowlist(config.commands, "tools.ssh.commands")
        self._env_key: asyncssh.SSHKey | None = None
        if config.private_key_env is not None:
            self._env_key = _key_from_env(config.private_key_env, env)

    def category_of(self, params: SshParams) -> Category:
        return self.allowlist.category_of(params.argv[0], self.category)

    def rollback_for(self, params: SshParams, result: SshResult) -> StepCall | None:
        return None

    def check_allowed(self, host: str) -> None:
        """Refuse a host that no ``tools.ssh.hosts`` glob matches."""
        if not any(fnmatch.fnmatchcase(host, glob.lower()) for glob in self.config.hosts):
            allowed = ", ".join(self.config.hosts) or "none"
            raise ToolError(
                f"host {host!r} is not allowed; add a matching glob to tools.ssh.hosts (allowed: {allowed})"
            )

    def resolve(self, argv: list[str]) -> list[str]:
        """argv with its command replaced by the configured remote path, after every check."""
        return self.allowlist.resolve(argv)

    def address_of(self, host: str) -> tuple[str, int]:
        """Where to dial ``host``: the first matching ``address_map`` entry, else the host itself."""
        for glob, target in self.config.address_map.items():
            if fnmatch.fnmatchcase(host, glob.lower()):
                return parse_address(target, default_port=self.config.port)
        return host, self.config.port

    async def run(self, params: SshParams, *, dry_run: bool) -> SshResult:
        self.check_allowed(params.host)
        argv = self.resolve(params.argv)
        command_line = shlex.join(argv)
        shown_argv = [redact_text(a) for a in argv]
        listing = listing_argv(argv) if dry_run else None
        if dry_run and listing is None:
            return SshResult(host=params.host, argv=shown_argv, command=redact_text(command_line), dry_run=True)

        address, port = self.address_of(params.host)
        where = params.host if (address, port) == (params.host, self.config.port) else f"{params.host} via {address}"
        key = self._env_key or await self._key_from_file()
        known_hosts = await self._known_hosts()
        started = time.monotonic()
        conn = await self._connect(params.host, where, address, port, key, known_hosts)
        try:
            exit_code, out, err, cut = await self._execute(conn, params, shlex.join(listing or argv))
        finally:
            # Also on cancellation; shielded so a second cancellation cannot leave the socket open.
            conn.close()
            await asyncio.shield(conn.wait_closed())
        duration_ms = int((time.monotonic() - started) * 1000)

        stdout = redact_text(out.decode("utf-8", errors="replace"))
        stderr = redact_text(err.decode("utf-8", errors="replace"))
        if listing is not None:
            preview = listing_preview(f"on {params.host}", redact_text(command_line), exit_code, stdout, stderr, cut)
            return SshResult(host=params.host, argv=shown_argv, command=redact_text(command_line), dry_run=True,
                             preview=preview, duration_ms=duration_ms)
        log.info("ssh.done", host=params.host, command=params.argv[0], exit_code=exit_code, duration_ms=duration_ms)
        if exit_code != 0 and self.config.fail_on_nonzero:
            raise ToolError(
                f"{params.argv[0]} on {params.host} exited with code {exit_code}: {last_lines(stderr) or '(no stderr)'}"
            )
        return SshResult(
            host=params.host,
            argv=shown_argv,
            command=redact_text(command_line),
            exit_code=exit_code,
            stdout=stdout,
            stderr=stderr,
            truncated=cut,
            duration_ms=duration_ms,
        )

    async def _connect(
        self,
        host: str,
        where: str,
        address: str,
        port: int,
        key: asyncssh.SSHKey,
        known_hosts: asyncssh.SSHKnownHosts,
    ) -> asyncssh.SSHClientConnection:
        try:
            async with asyncio.timeout(self.config.connect_timeout_s):
                return await asyncssh.connect(
                    address,
                    port,
                    username=self.config.user,
                    known_hosts=known_hosts,
                    client_keys=[key],
                    preferred_auth="publickey",
                    # Nothing from this machine's ~/.ssh or environment: config, agent, default keys.
                    config=None,
                    agent_path=None,
                    password=None,
                    gss_auth=False,
                    gss_kex=False,
                    host_based_auth=False,
                    kbdint_auth=False,
                    password_auth=False,
                    x509_trusted_cert_paths=None,
                    login_timeout=self.config.connect_timeout_s,
                )
        except asyncssh.HostKeyNotVerifiable as exc:
            log.warning("ssh.host_key_refused", host=host, address=address, port=port)
            raise ToolError(
                f"the host key of {where} port {port} is not in {self.config.known_hosts} or does not match it; "
                f"verify the host's key and add it to the known_hosts file (tools.ssh.known_hosts)"
            ) from exc
        except asyncssh.PermissionDenied as exc:
            log.warning("ssh.auth_failed", host=host, user=self.config.user)
            raise ToolError(
                f"{where} port {port} refused the login of user {self.config.user!r} with the configured private key; "
                f"authorize its public key for that user on the host (authorized_keys) or fix tools.ssh.user"
            ) from exc
        except TimeoutError as exc:
            raise RetryableToolError(
                f"could not connect to {where} port {port} within {self.config.connect_timeout_s:g}s"
            ) from exc
        except (OSError, asyncssh.ConnectionLost) as exc:
            raise RetryableToolError(f"could not connect to {where} port {port}: {_connect_failure(exc)}") from exc
        except asyncssh.DisconnectError as exc:
            # The peer's reason text is untrusted and may quote anything; keep it, redacted.
            raise ToolError(f"{where} port {port} closed the SSH session: {redact_text(exc.reason)}") from exc

    async def _execute(
        self, conn: asyncssh.SSHClientConnection, params: SshParams, command_line: str
    ) -> tuple[int, bytes, bytes, bool]:
        try:
            process = await conn.create_process(command_line, stdin=asyncssh.DEVNULL, encoding=None)
        except asyncssh.ChannelOpenError as exc:
            raise ToolError(f"{params.host} refused to run a command: {redact_text(exc.reason)}") from exc
        finished = False
        try:
            async with asyncio.timeout(self.config.timeout_s):
                (out, out_cut), (err, err_cut) = await asyncio.gather(
                    read_capped(process.stdout, self.config.max_output_bytes),
                    read_capped(process.stderr, self.config.max_output_bytes),
                )
                await process.wait_closed()
            finished = True
        except TimeoutError:
            log.warning("ssh.timeout", host=params.host, command=params.argv[0], timeout_s=self.config.timeout_s)
            raise RetryableToolError(
                f"{params.argv[0]} on {params.host} did not finish within {self.config.timeout_s:g}s and was killed"
            ) from None
        except asyncssh.DisconnectError as exc:
            raise RetryableToolError(
                f"the connection to {params.host} was lost while {params.argv[0]} ran; check the host before retrying"
            ) from exc
        finally:
            if not finished:
                # Also when cancelled from outside (the gateway's timeout, shutdown).
                self._stop(process)
        # Negative for a command ended by a signal (as asyncio's subprocesses report it); -1 when the
        # server reported neither an exit status nor a signal.
        returncode = process.returncode
        return (returncode if returncode is not None else -1), out, err, out_cut or err_cut

    @staticmethod
    def _stop(process: asyncssh.SSHClientProcess[bytes]) -> None:
        # SIGKILL first: OpenSSH (7.9+) delivers it for ordinary users but refuses it in root sessions
        # ("session signalling requires privilege separation"). Closing the channel then closes the
        # command's stdout and stderr, so even there it dies of SIGPIPE at its next write.
        # is_closing() is true as soon as our side sent EOF (stdin is /dev/null), so it cannot tell
        # whether the command still runs; a channel that is really gone raises OSError instead.
        with contextlib.suppress(OSError):
            process.kill()
        process.close()

    async def _key_from_file(self) -> asyncssh.SSHKey:
        path = Path(self.config.private_key_file or "")
        try:
            text = await asyncio.to_thread(path.read_text)
        except OSError as exc:
            raise ToolError(
                f"cannot read the SSH private key {path} ({exc.strerror}); fix tools.ssh.private_key_file"
            ) from None
        return _import_key(text, f"the file {path} (tools.ssh.private_key_file)")

    async def _known_hosts(self) -> asyncssh.SSHKnownHosts:
        path = Path(self.config.known_hosts)
        try:
            text = await asyncio.to_thread(path.read_text)
        except OSError as exc:
            raise ToolError(
                f"cannot read the known_hosts file {path} ({exc.strerror}); create it with the hosts' keys "
                f"or fix tools.ssh.known_hosts"
            ) from None
        try:
            return asyncssh.import_known_hosts(text)
        except (ValueError, asyncssh.KeyImportError) as exc:
            raise ToolError(f"the known_hosts file {path} cannot be parsed: {exc}; fix or regenerate it") from None


def _connect_failure(exc: Exception) -> str:
    # asyncio words refusals as "Connect call failed ('127.0.0.1', 22)"; the errno says it plainly.
    if isinstance(exc, socket.gaierror):
        return "the name does not resolve"
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno).lower()
    return "connection lost" if isinstance(exc, asyncssh.ConnectionLost) else "connection failed"


def _key_from_env(name: str, env: Mapping[str, str]) -> asyncssh.SSHKey:
    text = env.get(name)
    if not text:
        raise ConfigError(f"tools.ssh.private_key_env names {name}, which is not set; put the private key in it")
    try:
        return _import_key(text, f"the environment variable {name}")
    except ToolError as exc:
        raise ConfigError(str(exc)) from None


def _import_key(text: str, origin: str) -> asyncssh.SSHKey:
    # Register before parsing so the key is masked even in the message of a parse failure upstream.
    register_secret(text)
    register_secret(text.strip())
    for line in text.splitlines():
        if not line.startswith("-----"):
            register_secret(line.strip())
    try:
        return asyncssh.import_private_key(text)
    except (asyncssh.KeyImportError, ValueError):
        raise ToolError(
            f"{origin} does not hold an unencrypted OpenSSH or PEM private key; export one without a passphrase"
        ) from None
