"""The whole store, composed of the ports by concept in ``bot/store/ports.py``.

Only the code that wires the app together holds a ``Store``; each stage is typed against the few
ports it uses. ``bot/store/sqlite.py`` is the embedded default; a second backend implements the
same ports and passes the same contract tests (``tests/store/``).
"""

from __future__ import annotations

from typing import Protocol

from bot.store.ports import (
    ApprovalReads,
    AuditReads,
    ConsoleReads,
    DigestReads,
    EventReads,
    Leases,
    Lifecycle,
    OutboxReads,
    SettingReads,
    SignalIntake,
    SignalReads,
    StepReads,
    TaskOps,
    TaskReads,
    UnitOfWork,
    WorkLagReads,
)

__all__ = ["Store", "TaskOps"]


class Store(Lifecycle, SignalIntake, SignalReads, TaskReads, StepReads, ApprovalReads, AuditReads, EventReads,
            OutboxReads, Leases, SettingReads, ConsoleReads, DigestReads, WorkLagReads, UnitOfWork, Protocol):
    """**Protocol:** every read port and the unit of work: the store as the app wires it."""
