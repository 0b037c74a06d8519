"""``shell.run``: run one allowlisted command with an argv list, never through a shell.

Alert labels end up in step params, so every argument is untrusted. The process is started with
``create_subprocess_exec`` (no shell, so ``; rm -rf /`` is just a string argument), argv[0] must be
a command named in config and is replaced by its absolute path, each argument must fullmatch the
command's ``allow_args_pattern`` when one is set, and the child sees only ``PATH``: no inherited
secrets. On timeout (or cancellation) the whole process group is killed and reaped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import signal
import time
from collections.abc import Mapping
from typing import ClassVar, Protocol

import structlog
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from adapters.tools.find_preview import listing_argv, listing_preview
from bot.audit.redaction import redact_text
from bot.errors import ConfigError, RetryableToolError, ToolError
from bot.model.proposals import Category
from bot.ports import StepCall

log = structlog.get_logger(__name__)


class CommandConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str
    category: Category
    allow_args_pattern: str | None = None

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        # A bare name would be looked up on PATH at run time; config pins the exact binary.
        if not os.path.isabs(value):
            raise ValueError(f"must be an absolute path to the executable, got {value!r}")
        return value

    @field_validator("allow_args_pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"is not a valid regular expression: {exc}") from None
        return value


class CommandAllowlist:
    """The commands a tool section allows: the exact binary, each argument's pattern, the category.

    Shared by ``shell.run`` (this machine) and ``ssh.run`` (a remote host), which keep the same
    promise: argv[0] must be configured and is replaced by its absolute path, and every argument
    must fullmatch the command's ``allow_args_pattern`` when one is set.
    """

    def __init__(self, commands: Mapping[str, CommandConfig], section: str) -> None:
        self.commands = commands
        self.section = section  # e.g. "tools.shell.commands", for messages
        self._patterns = {
            name: re.compile(cmd.allow_args_pattern)
            for name, cmd in commands.items()
            if cmd.allow_args_pattern is not None
        }

    def category_of(self, name: str, default: Category) -> Category:
        command = self.commands.get(name)
        return command.category if command is not None else default

    def resolve(self, argv: list[str]) -> list[str]:
        """argv with its command replaced by the configured path, after every check."""
        name, args = argv[0], argv[1:]
        command = self.commands.get(name)
        if command is None:
            known = ", ".join(sorted(self.commands)) or "none"
            raise ToolError(f"command {name!r} is not allowed; add it under {self.section} (allowed: {known})")
        pattern = self._patterns.get(name)
        if pattern is not None:
            for index, arg in enumerate(args, start=1):
                if not pattern.fullmatch(arg):
                    raise ToolError(
                        f"argument {index} of {name} does not match its allow_args_pattern "
                        f"{pattern.pattern!r} in {self.section}.{name}"
                    )
        return [command.path, *args]


class _Readable(Protocol):
    async def read(self, n: int = -1) -> bytes: ...


async def read_capped(stream: _Readable | None, limit: int) -> tuple[bytes, bool]:
    """Up to ``limit`` bytes of a command's output, and whether more was cut.

    Keeps draining past the cap: a command blocked on a full pipe (or a full SSH window) would
    never exit.
    """
    if stream is None:
        return b"", False
    kept = bytearray()
    cut = False
    while chunk := await stream.read(65536):
        room = limit - len(kept)
        if room > 0:
            kept.extend(chunk[:room])
        if len(chunk) > room:
            cut = True
    return bytes(kept), cut


class ShellToolConfig(BaseModel):
    """``tools.shell`` in the config file."""

    model_config = ConfigDict(extra="forbid")

    commands: dict[str, CommandConfig] = Field(default_factory=dict)
    workdir: str | None = None
    timeout_s: float = Field(30.0, gt=0, le=3600)
    max_output_bytes: int = Field(64 * 1024, gt=0)
    fail_on_nonzero: bool = True
    path: str = "/usr/local/bin:/usr/bin:/bin"  # the child's whole PATH


class ShellParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    argv: list[str] = Field(min_length=1, max_length=256)

    @model_validator(mode="after")
    def _no_nul(self) -> ShellParams:
        if any("\x00" in arg for arg in self.argv):
            raise ValueError("argv must not contain NUL characters")
        return self


class ShellResult(BaseModel):
    argv: list[str]
    exit_code: int | None = None  # None for a dry run
    stdout: str = ""
    stderr: str = ""
    truncated: bool = False
    duration_ms: int = 0
    dry_run: bool = False
    preview: str = ""  # dry run: what the command would do (for find -delete: the files it would delete)


def last_lines(text: str, count: int = 5) -> str:
    return "\n".join(text.strip().splitlines()[-count:])


class ShellTool:
    name: ClassVar[str] = "shell.run"
    category: ClassVar[Category] = Category.write_irreversible
    params_model: ClassVar[type[BaseModel]] = ShellParams
    result_model: ClassVar[type[BaseModel]] = ShellResult
    supports_dry_run: ClassVar[bool] = True
    idempotent: ClassVar[bool] = False

    def __init__(self, config: ShellToolConfig, env: Mapping[str, str]) -> None:
        # ``env`` is accepted for the common tool constructor and deliberately not passed on.
        del env
        if config.workdir is not None and not os.path.isdir(config.workdir):
            raise ConfigError(f"tools.shell.workdir {config.workdir!r} is not a directory; create it or change it")
        self.config = config
        self.allowlist = CommandAllowlist(config.commands, "tools.shell.commands")

    def category_of(self, params: ShellParams) -> Category:
        return self.allowlist.category_of(params.argv[0], self.category)

    def rollback_for(self, params: ShellParams, result: ShellResult) -> StepCall | None:
        return None

    def resolve(self, argv: list[str]) -> list[str]:
        """argv with its command replaced by the configured path, after every check."""
        return self.allowlist.resolve(argv)

    async def run(self, params: ShellParams, *, dry_run: bool) -> ShellResult:
        argv = self.resolve(params.argv)
        listing = listing_argv(argv) if dry_run else None
        if dry_run and listing is None:
            return ShellResult(argv=[redact_text(a) for a in argv], dry_run=True)

        started = time.monotonic()
        try:
            proc = await asyncio.create_subprocess_exec(
                *(listing or argv),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=self.config.workdir,
                env={"PATH": self.config.path, "LANG": "C.UTF-8"},
                start_new_session=True,  # its own process group, so a timeout kills children too
            )
        except OSError as exc:
            raise ToolError(f"could not start {params.argv[0]} ({argv[0]}): {exc.strerror}") from exc

        try:
            async with asyncio.timeout(self.config.timeout_s):
                (out, out_cut), (err, err_cut) = await asyncio.gather(
                    read_capped(proc.stdout, self.config.max_output_bytes),
                    read_capped(proc.stderr, self.config.max_output_bytes),
                )
                exit_code = await proc.wait()
        except TimeoutError:
            await self._kill(proc)
            log.warning("shell.timeout", command=params.argv[0], timeout_s=self.config.timeout_s)
            raise RetryableToolError(
                f"{params.argv[0]} did not finish within {self.config.timeout_s:g}s and was killed"
            ) from None
        finally:
            # Cancelled from outside (the gateway's timeout, shutdown): never leave it running.
            if proc.returncode is None:
                await self._kill(proc)

        duration_ms = int((time.monotonic() - started) * 1000)
        stdout = redact_text(out.decode("utf-8", errors="replace"))
        stderr = redact_text(err.decode("utf-8", errors="replace"))
        if listing is not None:
            preview = listing_preview("on the Ooda host", redact_text(shlex.join(argv)), exit_code, stdout, stderr,
                                      out_cut)
            return ShellResult(argv=[redact_text(a) for a in argv], dry_run=True, preview=preview,
                               duration_ms=duration_ms)
        log.info("shell.done", command=params.argv[0], exit_code=exit_code, duration_ms=duration_ms)
        if exit_code != 0 and self.config.fail_on_nonzero:
            raise ToolError(f"{params.argv[0]} exited with code {exit_code}: {last_lines(stderr) or '(no stderr)'}")
        return ShellResult(
            argv=[redact_text(a) for a in argv],
            exit_code=exit_code,
            stdout=stdout,
            stderr=stderr,
            truncated=out_cut or err_cut,
            duration_ms=duration_ms,
        )

    @staticmethod
    async def _kill(proc: asyncio.subprocess.Process) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        # Reap it so no zombie is left; shielded so a second cancellation cannot skip this.
        await asyncio.shield(proc.wait())
