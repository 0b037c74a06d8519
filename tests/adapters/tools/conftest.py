from collections.abc import AsyncIterator

import pytest

from demo.standin import Standin

STANDIN_TOKEN = "standin-test-token-123"


@pytest.fixture
async def standin() -> AsyncIterator[Standin]:
    server = Standin(token=STANDIN_TOKEN)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
