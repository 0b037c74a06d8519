"""Autonomy levels and how the caps on them combine.

Public API:
    Autonomy                      IntEnum L0..L4; ``Autonomy.parse("L2")`` accepts "L2", "l2", 2, "2"
    AutonomyLevel                 Annotated type for config fields: parses like ``Autonomy.parse``,
                                  dumps to JSON as "L2"
    Cap(source, level)            one cap, e.g. Cap("environment:prod", Autonomy.L1)
    Anomaly(source, detail)       why a tool lost one level, e.g. Anomaly("anomaly:tool:x", "...")
    EffectiveAutonomy             level, bound_by (which cap bound it), reason, caps considered
    effective_autonomy(caps, *, kill_switch=False, anomaly=None) -> EffectiveAutonomy

The levels come from the source spec: observe-only, suggest-only, reversible writes automatic,
irreversible writes after approval, irreversible writes automatic. The effective level is the
minimum of every cap; an anomaly takes one more level off it and the kill switch takes it to L0.
Pure: no clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum
from typing import Annotated, Any, NamedTuple

from pydantic import BaseModel, BeforeValidator, PlainSerializer


class Autonomy(IntEnum):
    L0 = 0
    L1 = 1
    L2 = 2
    L3 = 3
    L4 = 4

    @property
    def label(self) -> str:
        return self.name

    @property
    def meaning(self) -> str:
        return _MEANING[self]

    def __str__(self) -> str:
        return self.name

    @classmethod
    def parse(cls, value: Any) -> Autonomy:
        """Accepts an Autonomy, 0..4, "0".."4", "L0".."L4" (any case).

        Raises:
            ValueError: anything else, with the accepted spellings in the message.
        """
        if isinstance(value, cls):
            return value
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 4:
            return cls(value)
        if isinstance(value, str):
            text = value.strip().upper().removeprefix("L")
            if text.isdigit() and 0 <= int(text) <= 4:
                return cls(int(text))
        raise ValueError(f"autonomy level {value!r} is not one of L0, L1, L2, L3, L4")


_MEANING = {
    Autonomy.L0: "observe only",
    Autonomy.L1: "suggest only: a human approves every write",
    Autonomy.L2: "reversible writes run automatically",
    Autonomy.L3: "irreversible writes run after approval",
    Autonomy.L4: "irreversible writes run automatically",
}

AutonomyLevel = Annotated[
    Autonomy,
    BeforeValidator(Autonomy.parse),
    PlainSerializer(lambda level: level.label, return_type=str, when_used="json"),
]


class Cap(NamedTuple):
    source: str  # "ceiling", "environment:prod", "playbook:restart-pod", "tool:shell.run"
    level: Autonomy


class Anomaly(NamedTuple):
    source: str  # "anomaly:tool:flags.set"
    detail: str  # "flags.set failed 3 of 4 recent runs (above 50%)"


class EffectiveAutonomy(BaseModel):
    level: AutonomyLevel
    bound_by: str  # the cap that set the level, or "kill_switch" / "anomaly:..."
    reason: str
    caps: list[tuple[str, AutonomyLevel]] = []


def effective_autonomy(
    caps: Sequence[Cap], *, kill_switch: bool = False, anomaly: Anomaly | None = None
) -> EffectiveAutonomy:
    """The lowest of ``caps``, one lower again on an anomaly, L0 under the kill switch.

    Args:
        caps: every cap that applies; with none, the result is L0 (nothing grants autonomy).
        kill_switch: the global pause is on.
        anomaly: why the tool looks unhealthy, or None.

    Returns:
        The level and the cap that bound it. On ties the first cap in ``caps`` wins, so callers
        list the broadest cap first and explanations name the most general reason.
    """
    considered = [(c.source, c.level) for c in caps]
    if kill_switch:
        return EffectiveAutonomy(
            level=Autonomy.L0,
            bound_by="kill_switch",
            reason="the kill switch is on, so the bot only observes",
            caps=considered,
        )
    if not caps:
        return EffectiveAutonomy(
            level=Autonomy.L0, bound_by="no_caps", reason="no cap grants any autonomy", caps=considered
        )
    lowest = min(caps, key=lambda c: c.level)  # min keeps the first of equal levels
    if anomaly is not None:
        level = Autonomy(max(lowest.level - 1, Autonomy.L0))
        return EffectiveAutonomy(
            level=level,
            bound_by=anomaly.source,
            reason=f"{anomaly.detail}, so autonomy drops one level below {lowest.level.label} ({lowest.source})",
            caps=considered,
        )
    return EffectiveAutonomy(
        level=lowest.level,
        bound_by=lowest.source,
        reason=f"{lowest.source} caps autonomy at {lowest.level.label} ({lowest.level.meaning})",
        caps=considered,
    )
