"""The shared engine cursor as a claim: two store instances stand for two replicas (bot/store/signal_claims.py)."""

from __future__ import annotations

import pytest

from bot.loop.engine import CURSOR_KEY
from bot.store.signal_claims import CursorMoved, claim_after, save_cursor


async def test_a_replica_behind_the_shared_cursor_may_not_group_and_learns_where_to_read_on(open_store):
    first, second = await open_store(), await open_store()

    async def group_up_to(last: int, position: int):
        async def unit(t):
            await claim_after(t, CURSOR_KEY, position)
            await t.set_setting(CURSOR_KEY, last, "engine")

        return unit

    await first.transact(await group_up_to(10, 0))
    with pytest.raises(CursorMoved) as moved:
        await second.transact(await group_up_to(7, 0))
    assert moved.value.to == 10
    assert (await second.get_setting(CURSOR_KEY)).value == 10  # nothing of the refused unit was kept
    await second.transact(await group_up_to(15, 10))
    assert (await first.get_setting(CURSOR_KEY)).value == 15


async def test_saving_the_cursor_never_moves_it_back(open_store):
    first, second = await open_store(), await open_store()
    await first.transact(lambda t: save_cursor(t, CURSOR_KEY, 20, "engine"))
    await second.transact(lambda t: save_cursor(t, CURSOR_KEY, 12, "engine"))
    assert (await second.get_setting(CURSOR_KEY)).value == 20
    await second.transact(lambda t: save_cursor(t, CURSOR_KEY, 25, "engine"))
    assert (await first.get_setting(CURSOR_KEY)).value == 25
