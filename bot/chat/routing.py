"""Which chat channel a proposal goes to: shared by every surface.

A surface's config lists routes; the first whose matchers all fit the proposal wins, else the
surface's default channel. A playbook's own ``routing`` entry for the surface comes before both
(the notifier passes it to ``post_proposal``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from pydantic import BaseModel, ConfigDict

from bot.model.proposals import Proposal


class RouteMatchers(BaseModel):
    """Unset matchers match anything. Surfaces subclass this and add their ``channel`` field."""

    model_config = ConfigDict(extra="forbid")

    playbook: str | None = None
    severity: str | None = None
    team: str | None = None

    def matches(self, proposal: Proposal) -> bool:
        return (
            (self.playbook is None or self.playbook == proposal.playbook_id)
            and (self.severity is None or self.severity == proposal.severity)
            and (self.team is None or self.team == proposal.team)
        )


class Route(Protocol):
    channel: str

    def matches(self, proposal: Proposal) -> bool: ...


def route_channel(routes: Sequence[Route], proposal: Proposal, default: str) -> str:
    """The first matching route's channel, else ``default``."""
    return next((route.channel for route in routes if route.matches(proposal)), default)
