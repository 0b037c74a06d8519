"""Process-wide state the tests must not leak into each other."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import structlog

from bot.audit.redaction import forget_secrets
from tests.postgres import PostgresServer, start_postgres


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL 15 for this session (and xdist worker); see tests/postgres.py."""
    yield from start_postgres()


@pytest.fixture
async def postgres_url(postgres_server: PostgresServer) -> str:
    """A fresh database on the session's PostgreSQL, for one test."""
    return await postgres_server.new_database()


@pytest.fixture(autouse=True)
def _forget_registered_secrets() -> Iterator[None]:
    # Tools and apps register the secrets they load with the redactor (one registry per process,
    # as every log line of the process must be masked); a test's secrets end with the test.
    yield
    forget_secrets()


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    # `ooda` commands run in-process by the CLI tests configure structlog and the root logger for
    # the whole process; each test gets back the configuration it started with, and its own empty
    # correlation context.
    config = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    structlog.contextvars.clear_contextvars()
    yield
    structlog.configure(**config)
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.contextvars.clear_contextvars()


def pytest_sessionstart(session: pytest.Session) -> None:
    """Print the random order's seed even under -q, so a failing order can be run again."""
    config = session.config
    seed = getattr(config.option, "randomly_seed", None)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if seed is not None and reporter is not None and not hasattr(config, "workerinput"):
        reporter.write_line(f"tests in random order: rerun this order with -p randomly --randomly-seed={seed}")
