"""The store a config names, built for the app, the CLI's offline commands and ``ooda store copy``."""

from __future__ import annotations

from collections.abc import Mapping

from bot.config import Settings
from bot.errors import ConfigError
from bot.metrics import Metrics
from bot.model.events import EventBus
from bot.store.protocol import Store
from bot.store.timing import time_store_calls


def build_store(settings: Settings, bus: EventBus, *, audit_key: bytes | None, env: Mapping[str, str],
                metrics: Metrics | None = None) -> Store:
    """The configured store, not opened yet; with ``metrics``, every port call is timed in
    ``ooda_store_seconds{backend, operation}``."""
    store = _backend_store(settings, bus, audit_key=audit_key, env=env)
    if metrics is not None:
        time_store_calls(store, metrics.store_observer(settings.store_target.backend))
    return store


def _backend_store(settings: Settings, bus: EventBus, *, audit_key: bytes | None, env: Mapping[str, str]) -> Store:
    target = settings.store_target
    if target.backend == "sqlite":
        from bot.store.sqlite import SqliteStore

        assert target.path is not None
        s = settings.store
        return SqliteStore(target.path, bus, synchronous=s.synchronous, audit_key=audit_key,
                           queue_size=settings.engine.queue_size, cache_mib=s.cache_mib)
    from bot.store.postgres import PostgresStore

    password = None
    if settings.store.password_env:
        password = env.get(settings.store.password_env)
        if not password:
            raise ConfigError(f"store.password_env names {settings.store.password_env}, which is not set; set it "
                              "to the PostgreSQL password (or remove store.password_env for trust/peer auth)")
    assert target.dsn is not None
    return PostgresStore(target.dsn, bus, password=password, audit_key=audit_key, max_size=settings.store.pool_size)
