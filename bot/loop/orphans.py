"""What a replica that is gone left behind, as the leader's periodic look finds it: acted on at the second look.

On a PostgreSQL store shared by several replicas, the leader looks every ``ORPHAN_CHECK_S`` for
steps left running and tasks left queued, being planned or executing by an owner whose lock is
absent (``bot/store/postgres_owner.py``), and resolves them as a start would.

The grace: a thing is acted on only when two consecutive looks found it the same way (same step
attempt, same task state and owner). An owner lock can be absent for a moment while its process
lives and works: its own connection to PostgreSQL dropped, and it takes the same lock again on a
new one within moments (``OwnerLock``). A look that falls in that moment must not escalate a step
that is still running, nor plan a task a second time; the next look finds the lock again and the
suspicion is dropped. A replica that really died is resolved one look later: 10 to 20 s after it
died instead of 0 to 10 s. Looks more than two periods apart (leadership moved away and back) are
not consecutive: the second one counts as a first.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Protocol

import structlog

if TYPE_CHECKING:
    from bot.store.postgres_owner import Orphan

log = structlog.get_logger(__name__)

ORPHAN_CHECK_S = 10  # on a shared store: how often the leader looks for what a gone replica left


class TaskOwnership(Protocol):
    """**Protocol:** tasks whose owner is gone, and taking them over (PostgreSQL: ``TaskOwners``).

    Relied on by the engine's periodic look; absent where one process owns the store.
    """

    async def orphaned_tasks(self) -> list[Orphan]:
        """Tasks queued, being planned or executing (with no step running) whose owner holds no lock."""
        ...

    async def take_over(self, task_id: int, found: Orphan | None = None) -> bool:
        """Record this process as the task's owner (only if still as ``found`` when given)."""
        ...

    def holds_own_lock(self) -> bool:
        """Whether this process holds its own owner lock: without it, it takes nothing over."""
        ...


class TwoLooks:
    """Suspicions of one look, confirmed by the next."""

    def __init__(self, interval_s: float = ORPHAN_CHECK_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval_s = interval_s
        self._clock = clock
        self._before: set[Hashable] = set()
        self._now: set[Hashable] = set()
        self._looked_at: float | None = None

    def begin(self) -> None:
        """Start a look: what the previous look suspected is what this one may confirm."""
        now = self._clock()
        consecutive = self._looked_at is not None and now - self._looked_at <= 2 * self._interval_s
        self._before, self._now = (self._now if consecutive else set()), set()
        self._looked_at = now

    def forget(self) -> None:
        """A look that could not be made: the next one is a first look."""
        self._before, self._now, self._looked_at = set(), set(), None

    def confirmed(self, key: Hashable) -> bool:
        """``key`` (what was found, and how) is suspect now; True when the look before found it too."""
        if key in self._before:
            self._before.discard(key)  # acted on now: neither carried to the next look nor cleared
            return True
        self._now.add(key)
        log.warning("orphans.owner_absent", found=list(key) if isinstance(key, tuple) else key,
                    acted_on="at the next look if still so")
        return False

    def end(self) -> None:
        """Finish a look; log what the look before suspected and this one did not find again."""
        cleared = self._before - self._now
        if cleared:
            log.info("orphans.cleared", found=[list(k) if isinstance(k, tuple) else k for k in cleared],
                     reason="its owner's lock is held again, or it moved on")
