"""Secrets come only from environment variables, named in config.

In ``environment: dev`` an unset variable falls back to a random value generated once and kept in
``<data_dir>/secrets/<NAME>`` (mode 0600), so the example config runs on a fresh machine and the
CLI on the same machine finds the same token. Anywhere else an unset variable is a config error.
Every resolved value is registered with the redactor so it never reaches a log or the audit trail.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path

import structlog

from bot.errors import ConfigError

log = structlog.get_logger(__name__)


class SecretResolver:
    def __init__(
        self,
        env: Mapping[str, str],
        data_dir: Path,
        *,
        generate_missing: bool,
        on_resolved: Callable[[str], None] | None = None,
    ) -> None:
        self._env = env
        self._dir = data_dir / "secrets"
        self._generate = generate_missing
        self._on_resolved = on_resolved
        self._cache: dict[str, str] = {}

    def get(self, name: str) -> str:
        """The value of env var ``name``; raises ConfigError naming the variable when unset."""
        if name in self._cache:
            return self._cache[name]
        value = self._env.get(name) or (self._local(name) if self._generate else None)
        if not value:
            raise ConfigError(
                f"environment variable {name} is not set; export it (it holds a secret named in the config)"
            )
        self._cache[name] = value
        if self._on_resolved:
            self._on_resolved(value)
        return value

    def optional(self, name: str | None) -> str | None:
        if not name:
            return None
        try:
            return self.get(name)
        except ConfigError:
            return None

    def _local(self, name: str) -> str:
        path = self._dir / name
        if path.exists():
            return path.read_text(encoding="utf-8").strip()
        self._dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        value = secrets.token_urlsafe(32)
        try:
            # O_EXCL: the server and the CLI may race to create it; the loser reads the winner's.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return path.read_text(encoding="utf-8").strip()
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(value + "\n")
        log.warning("secret.generated_for_dev", name=name, path=str(path))
        return value
