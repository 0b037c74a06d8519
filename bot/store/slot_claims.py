"""Which replica runs a slot of a scheduled job: the first to claim it, and only that one.

A slot is a job and the time its trigger fired for (``check:target-down:0`` at 09:30 UTC). It is
claimed in the transaction that records the run: the setting ``schedule.slot.<job>`` holds the
latest slot claimed, and a claim for a slot at or before it is refused. Transactions are
serialised (the store's write lock on PostgreSQL, the single writer on SQLite), so of two replicas
claiming one slot, say a leader that lost its lock a moment ago and the one that took it over and
catches up, exactly one runs it. One row per job, not per slot: slots only ever move forward, as
the digest's ``digest.sent.<day>`` marks only ever add a day.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol

from bot.audit.chain import AuditEntry
from bot.store.ports import AuditWrites, SettingWrites

CLAIMED = "schedule.slot_claimed"


class SlotWrites(SettingWrites, AuditWrites, Protocol):
    """The transaction ports a claim uses."""


def slot_key(job: str) -> str:
    return f"schedule.slot.{job}"


async def claim_slot(t: SlotWrites, job: str, slot: datetime) -> bool:
    """Claim ``job``'s run for ``slot`` (an aware time); False when it was claimed already, or a later one was."""
    at = slot.astimezone(UTC)
    last = await t.get_setting(slot_key(job))
    if last is not None and datetime.fromisoformat(last) >= at:
        return False
    await t.set_setting(slot_key(job), at.isoformat(), "scheduler")
    t.audit(AuditEntry("scheduler", CLAIMED, None, {"job": job, "slot": at.isoformat()}))
    return True
