from collections.abc import AsyncIterator, Iterator

import pytest

from adapters.standin import Standin
from bot.redaction import forget_secrets

STANDIN_TOKEN = "standin-test-token-123"


@pytest.fixture(autouse=True)
def _forget_registered_secrets() -> Iterator[None]:
    # Tools register the secrets they load; keep that process-wide state from leaking across tests.
    yield
    forget_secrets()


@pytest.fixture
async def standin() -> AsyncIterator[Standin]:
    server = Standin(token=STANDIN_TOKEN)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
