"""``store.url``: which backend holds the store, and where.

``sqlite:///data/ooda.db`` (relative to the config file; ``sqlite:////var/lib/ooda.db`` is
absolute) is the embedded default. ``postgresql://user@host:5432/db`` selects PostgreSQL; its
password never goes in the URL (the URL is logged and shown), it comes from the environment
variable that ``store.password_env`` names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from bot.errors import SecretInputError

SCHEMES = {"sqlite": "sqlite", "postgresql": "postgresql", "postgres": "postgresql"}


@dataclass(frozen=True, slots=True)
class StoreTarget:
    backend: Literal["sqlite", "postgresql"]
    path: Path | None = None  # sqlite
    dsn: str | None = None  # postgresql, without a password

    def describe(self) -> str:
        """Where the store is, fit for logs and messages (no secret is ever in it)."""
        return f"sqlite:///{self.path}" if self.backend == "sqlite" else str(self.dsn)


def check_store_url(url: str) -> str:
    """A pydantic validator for ``store.url``: a known scheme and no password."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise ValueError(f"store.url must start with sqlite:/// or postgresql://, not {parts.scheme or url!r}")
    if parts.password is not None or "password" in parts.query.lower():
        raise SecretInputError("store.url must not carry a password (it is logged and shown); put the password in an "
                         "environment variable and name it in store.password_env")
    if SCHEMES[parts.scheme] == "sqlite" and (parts.netloc or not parts.path.strip("/")):
        raise ValueError("a SQLite store.url is sqlite:///relative/path.db or sqlite:////absolute/path.db")
    if SCHEMES[parts.scheme] == "postgresql" and not (parts.hostname and parts.path.strip("/")):
        raise ValueError("a PostgreSQL store.url names a host and a database: postgresql://user@host:5432/ooda")
    return url


def store_target(url: str, resolve: Callable[[Path], Path]) -> StoreTarget:
    parts = urlsplit(url)
    if SCHEMES[parts.scheme] == "sqlite":
        return StoreTarget("sqlite", path=resolve(Path(parts.path[1:])))
    return StoreTarget("postgresql", dsn=url)
