"""Which engine groups which stored signals, when several ``ooda serve`` share one store.

The engine's cursor (``engine.cursor`` in the settings) is a claim shared by every replica: every
signal at or below it that matches a playbook has been grouped into a task. A replica groups the
signals after its own position in one transaction that moves the shared cursor to the last of
them; that transaction first checks, in its own view of the store (writes are serialized by the
store's write lock), that no other replica moved the cursor past that position meanwhile. If one
did, the transaction is abandoned (``CursorMoved``) and the replica reads on from the new cursor:
each signal is grouped by exactly one replica, and a replica that dies with signals taken in but
not grouped leaves them to the others, which read the store, not only their own intake.
"""

from __future__ import annotations

from bot.store.ports import SettingWrites


class CursorMoved(Exception):
    """Another replica grouped the signals up to ``to``: read on from there."""

    def __init__(self, to: int) -> None:
        super().__init__(f"another replica grouped the signals up to {to}")
        self.to = to


async def shared_cursor(t: SettingWrites, key: str) -> int:
    value = await t.get_setting(key)
    return int(value) if value is not None else 0


async def claim_after(t: SettingWrites, key: str, position: int) -> None:
    """Raise ``CursorMoved`` unless the signals after ``position`` are still unclaimed."""
    shared = await shared_cursor(t, key)
    if shared > position:
        raise CursorMoved(shared)


async def save_cursor(t: SettingWrites, key: str, cursor: int, actor: str) -> None:
    """Move the shared cursor forward to ``cursor``, never back (another replica may be ahead)."""
    if cursor > await shared_cursor(t, key):
        await t.set_setting(key, cursor, actor)
