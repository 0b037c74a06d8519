"""``store.url``: which backend holds the store, and where.

``sqlite:///data/ooda.db`` (relative to the config file; ``sqlite:////var/lib/ooda.db`` is
absolute) is the embedded default. ``postgresql://user@host:5432/db`` selects PostgreSQL; its
password never goes in the URL (the URL is logged and shown), it comes from the environment
variable that ``store.password_env`` names.

A PostgreSQL URL may list a primary and its standbys, ``postgresql://ooda@db1:5432,db2:5432/ooda``:
asyncpg tries them in order for every new connection and keeps the first one that matches
``target_session_attrs``, so after a failover the pool finds the promoted server by itself. Ooda
writes, so a URL of several hosts without the parameter gets ``target_session_attrs=read-write``:
asyncpg's own default (``any``) keeps the first server that answers, which after a failover can
be a standby that refuses every write. For the same reason only ``read-write`` and ``primary``
are accepted.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import SplitResult, parse_qs, urlsplit, urlunsplit

from bot.errors import SecretInputError

SCHEMES = {"sqlite": "sqlite", "postgresql": "postgresql", "postgres": "postgresql"}
HOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[^\[\]:,/]+)(:\d{1,5})?")  # name, IPv4 or [IPv6], then :port
WRITABLE = ("read-write", "primary")  # the target_session_attrs under which every kept server takes writes
MULTI_HOST_DEFAULT = "read-write"


@dataclass(frozen=True, slots=True)
class StoreTarget:
    backend: Literal["sqlite", "postgresql"]
    path: Path | None = None  # sqlite
    dsn: str | None = None  # postgresql, without a password, with the target_session_attrs in effect

    def describe(self) -> str:
        """Where the store is, fit for logs and messages (no secret is ever in it)."""
        return f"sqlite:///{self.path}" if self.backend == "sqlite" else str(self.dsn)


def check_store_url(url: str) -> str:
    """A pydantic validator for ``store.url``: a known scheme, no password, and for PostgreSQL hosts and a database."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise ValueError(f"store.url must start with sqlite:/// or postgresql://, not {parts.scheme or url!r}")
    if parts.password is not None or "password" in parts.query.lower():
        raise SecretInputError("store.url must not carry a password (it is logged and shown); put the password in an "
                         "environment variable and name it in store.password_env")
    if SCHEMES[parts.scheme] == "sqlite" and (parts.netloc or not parts.path.strip("/")):
        raise ValueError("a SQLite store.url is sqlite:///relative/path.db or sqlite:////absolute/path.db")
    if SCHEMES[parts.scheme] == "postgresql":
        _check_postgresql(parts)
    return url


def _check_postgresql(parts: SplitResult) -> None:
    hosts = _hosts(parts)
    if hosts == [""] or not parts.path.strip("/"):
        raise ValueError("a PostgreSQL store.url names a host and a database: postgresql://user@host:5432/ooda")
    for host in hosts:
        if not HOST.fullmatch(host):
            raise ValueError(f"store.url lists {host!r}, which is not host or host:port; several servers are "
                             "separated by commas: postgresql://ooda@db1:5432,db2:5432/ooda")
    attrs = _session_attrs(parts)
    if attrs is not None and attrs not in WRITABLE:
        raise ValueError(f"store.url has target_session_attrs={attrs}, which lets Ooda keep a server that cannot "
                         "take its writes; use read-write (the default when several hosts are listed) or primary")


def store_target(url: str, resolve: Callable[[Path], Path]) -> StoreTarget:
    parts = urlsplit(url)
    if SCHEMES[parts.scheme] == "sqlite":
        return StoreTarget("sqlite", path=resolve(Path(parts.path[1:])))
    if len(_hosts(parts)) > 1 and _session_attrs(parts) is None:
        query = f"{parts.query}&" if parts.query else ""
        url = urlunsplit(parts._replace(query=f"{query}target_session_attrs={MULTI_HOST_DEFAULT}"))
    return StoreTarget("postgresql", dsn=url)


def _hosts(parts: SplitResult) -> list[str]:
    """The servers as written (``host`` or ``host:port``), in the order they are tried."""
    return parts.netloc.rpartition("@")[2].split(",")


def _session_attrs(parts: SplitResult) -> str | None:
    values = parse_qs(parts.query).get("target_session_attrs")
    return values[-1] if values else None
