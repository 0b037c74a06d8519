"""What the core commands answer: plain data every surface words its own way (bot/chat/wording.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from bot.model.proposals import Proposal


class ActionResult(BaseModel):
    """What a command did, worded for the person who asked, plus the proposal as it now stands."""

    message: str
    proposal: Proposal | None = None
    executed: bool = False


class Status(BaseModel):
    paused: bool
    paused_by: str | None = None
    paused_reason: str | None = None
    environment: str
    autonomy_cap: str
    open_tasks: int
    needs_approval: int
    recent_failures: list[str] = []
    scheduled_checks: list[str] = []  # "kube-pod-crashlooping (*/30 8-18 * * 1-5 Europe/Berlin): next 2026-…"


class UnmatchedAlert(BaseModel):
    """One alert name no playbook matched: how often, when, from where, and what it looked like."""

    alertname: str
    count: int  # signals (distinct alerts by fingerprint); redeliveries are in ``deliveries``
    deliveries: int
    first_seen: datetime
    last_seen: datetime
    source: str
    severity: str
    example_labels: dict[str, Any]  # of the latest signal, redacted


class UnmatchedReport(BaseModel):
    since: datetime
    names: int  # alert names in all; ``alerts`` holds the first ``limit`` of them
    alerts: list[UnmatchedAlert]
