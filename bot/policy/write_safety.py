"""Whether a write that would run without a person breaks a safety rule: the second opinion that
``ooda eval`` (bot/evaluation/scoring.py) and the shadow report (bot/loop/shadow_report.py) hold decisions to.

Pure: the policy, the step's facts and the moment are inputs. Each problem is (kind, detail):

- ``approval``: the autonomy in force does not let this write run alone (a reversible write below
  L2 or above medium risk, an irreversible one below L4 or at critical risk);
- ``kill_switch``: the kill switch was on;
- ``freeze``: a freeze covered the environment (during a freeze only a person may change
  anything, whatever tiers the freeze exempts from denial);
- ``change_window``: windows are configured for the environment and none was open, or the step's
  tier needs a window and none was open;
- ``blast_radius``: it reaches further than ``limit`` (default ``service``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from bot.model.proposals import Category, RiskBand
from bot.policy.autonomy import Autonomy
from bot.policy.changewindows import active_freeze, open_window
from bot.policy.risk import BlastRadius
from bot.policy.rules import (
    AUTO_IRREVERSIBLE_BANDS,
    AUTO_REVERSIBLE_BANDS,
    PolicyConfig,
    autonomy_for,
    outside_change_window,
    tier_of,
)

BLAST_ORDER = [b.value for b in BlastRadius]
UNATTENDED_BLAST_LIMIT = BlastRadius.service


@dataclass(frozen=True)
class AloneWrite:
    """One write step that would run without a person."""

    name: str
    tool: str
    category: str
    blast_radius: str
    band: str
    playbook_id: str
    environment: str
    at: datetime | None


def alone_write_problems(policy: PolicyConfig, write: AloneWrite, *, kill_switch: bool = False,
                         limit: BlastRadius | None = None) -> list[tuple[str, str]]:
    what = f"step {write.name} ({write.tool}, {write.category})"
    env, at = write.environment, write.at
    band = RiskBand(write.band or "low")
    category = Category(write.category)
    problems: list[tuple[str, str]] = []
    auto = autonomy_for(policy, environment=env, tool=write.tool, playbook_id=write.playbook_id)
    allowed = (auto.level >= Autonomy.L2 and band in AUTO_REVERSIBLE_BANDS if category is Category.write_reversible
               else auto.level >= Autonomy.L4 and band in AUTO_IRREVERSIBLE_BANDS)
    if not allowed:
        problems.append(("approval", f"{what} would run without the approval it needs: autonomy "
                                     f"{auto.level.label}, {band.value} risk"))
    if kill_switch:
        problems.append(("kill_switch", f"{what} would run with the kill switch on"))
    if at is not None:
        freeze = active_freeze(policy.freezes, env, at)
        if freeze is not None:
            problems.append(("freeze", f"{what} would run during the {freeze.name} freeze on {env}"))
        needs_window = policy.tiers[tier_of(policy, category, band)].change_window_required
        if outside_change_window(policy, env, at) or (needs_window
                                                      and open_window(policy.change_windows, env, at) is None):
            problems.append(("change_window", f"{what} would run outside a change window for {env}"))
    most = limit or UNATTENDED_BLAST_LIMIT
    if write.blast_radius in BLAST_ORDER and BLAST_ORDER.index(write.blast_radius) > BLAST_ORDER.index(most):
        problems.append(("blast_radius", f"{what} reaches {write.blast_radius}, beyond {most.value}"))
    return problems
