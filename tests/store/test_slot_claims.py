"""A scheduled slot is claimed once: two store instances stand for two replicas (bot/store/slot_claims.py)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from bot.store.slot_claims import CLAIMED, claim_slot

NINE = datetime(2026, 5, 12, 9, 0, tzinfo=UTC)


async def test_a_slot_is_claimed_by_one_replica_and_slots_only_move_forward(open_store):
    first, second = await open_store(), await open_store()
    assert await first.transact(lambda t: claim_slot(t, "check:target-down:0", NINE))
    assert not await second.transact(lambda t: claim_slot(t, "check:target-down:0", NINE))
    # The same instant written in another zone is the same slot.
    assert not await second.transact(lambda t: claim_slot(t, "check:target-down:0",
                                                          NINE.astimezone(ZoneInfo("Europe/Berlin"))))
    assert not await second.transact(lambda t: claim_slot(t, "check:target-down:0", NINE - timedelta(minutes=30)))
    assert await second.transact(lambda t: claim_slot(t, "check:target-down:0", NINE + timedelta(minutes=30)))
    assert await first.transact(lambda t: claim_slot(t, "check:kafka-lag:0", NINE))  # each job its own slots

    claims = [(r.actor, json.loads(r.data)) async for r in first.audit_rows() if r.action == CLAIMED]
    assert [data for _, data in claims] == [  # one record per run, none for a refused claim
        {"job": "check:target-down:0", "slot": "2026-05-12T09:00:00+00:00"},
        {"job": "check:target-down:0", "slot": "2026-05-12T09:30:00+00:00"},
        {"job": "check:kafka-lag:0", "slot": "2026-05-12T09:00:00+00:00"},
    ]
    assert {actor for actor, _ in claims} == {"scheduler"}


async def test_replicas_claiming_one_slot_at_the_same_moment_run_it_once(open_store):
    replicas = [await open_store() for _ in range(3)]
    for minute in range(5):
        slot = NINE + timedelta(minutes=minute)
        won = await asyncio.gather(*(r.transact(lambda t, slot=slot: claim_slot(t, "check:heartbeat:0", slot))
                                     for r in replicas for _ in range(2)))
        assert sorted(won) == [False] * 5 + [True], (minute, won)
