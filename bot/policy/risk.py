"""The risk score of a step: 0-100, a band, and the factors that add up to it.

Public API (pure and deterministic):
    RiskInputs                     category, blast_radius, environment, severity,
                                   outside_change_window, tool_failure_rate, playbook_failure_rate, targets
    BlastRadius                    single < service < multi_service < global
    score_risk(inputs) -> RiskScore
    band_for(score) -> RiskBand    low < 25 <= medium < 50 <= high < 75 <= critical

Every point comes from a named factor, so a proposal can show why a step scored what it did, and
the factors always sum to the score: when the raw total passes 100 a negative ``cap`` factor says
so. The weights are plain tables below; the reasoning for each sits next to it.
"""

from __future__ import annotations

import math
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from bot.model.proposals import Category, RiskBand, RiskFactor, RiskScore
from bot.model.signals import Severity


class BlastRadius(StrEnum):
    single = "single"  # one host, pod, user or flag
    service = "service"
    multi_service = "multi_service"
    global_ = "global"


# Irreversible writes weigh most: nothing undoes them, so a mistake stays made.
CATEGORY_POINTS = {Category.read: 0, Category.write_reversible: 15, Category.write_irreversible: 35}
BLAST_POINTS = {
    BlastRadius.single: 0,
    BlastRadius.service: 10,
    BlastRadius.multi_service: 20,
    BlastRadius.global_: 30,
}
ENVIRONMENT_POINTS = {"dev": 0, "staging": 5, "prod": 15}
# Spellings people use for the same three environments; anything else scores as prod, because
# guessing low about an environment we do not know is the mistake that hurts.
ENVIRONMENT_ALIASES = {
    "development": "dev", "local": "dev", "test": "dev",
    "stage": "staging", "stg": "staging", "preprod": "staging",
    "production": "prod", "prd": "prod", "live": "prod",
}
# Acting during a critical incident is riskier: systems are already degraded and people are busy.
SEVERITY_POINTS = {Severity.info: 0, Severity.warning: 5, Severity.critical: 10}
OUTSIDE_WINDOW_POINTS = 10
FAILURE_RATE_MAX_POINTS = 10  # each of tool and playbook; a rate of 1.0 gets all of them
TARGETS_MAX_POINTS = 10  # two points per doubling: 2 targets 2, 8 targets 6, 32 or more 10

LOW_BELOW, MEDIUM_BELOW, HIGH_BELOW = 25, 50, 75


class RiskInputs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    category: Category
    blast_radius: BlastRadius = BlastRadius.service
    environment: str
    severity: Severity = Severity.info
    outside_change_window: bool = False
    tool_failure_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    playbook_failure_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    targets: int = Field(default=1, ge=0)


def band_for(score: int) -> RiskBand:
    if score < LOW_BELOW:
        return RiskBand.low
    if score < MEDIUM_BELOW:
        return RiskBand.medium
    if score < HIGH_BELOW:
        return RiskBand.high
    return RiskBand.critical


def _rate_points(rate: float) -> int:
    return int(rate * FAILURE_RATE_MAX_POINTS + 0.5)  # round half up, the same on every platform


def _target_points(targets: int) -> int:
    if targets <= 1:
        return 0
    return min(TARGETS_MAX_POINTS, int(2 * math.log2(targets) + 0.5))


def canonical_environment(environment: str) -> str | None:
    """"production" -> "prod"; None for a name we do not know."""
    name = environment.strip().lower()
    name = ENVIRONMENT_ALIASES.get(name, name)
    return name if name in ENVIRONMENT_POINTS else None


def score_risk(inputs: RiskInputs) -> RiskScore:
    """Score one step. The same inputs always give the same score, band and factors."""
    known_env = canonical_environment(inputs.environment)
    env_detail = (
        inputs.environment if known_env else f"{inputs.environment} (not dev, staging or prod, so scored as prod)"
    )
    factors = [
        RiskFactor(
            name="category",
            points=CATEGORY_POINTS[inputs.category],
            detail=inputs.category.value.replace("_", " "),
        ),
        RiskFactor(name="blast_radius", points=BLAST_POINTS[inputs.blast_radius], detail=inputs.blast_radius.value),
        RiskFactor(name="environment", points=ENVIRONMENT_POINTS[known_env or "prod"], detail=env_detail),
        RiskFactor(name="severity", points=SEVERITY_POINTS[inputs.severity], detail=f"{inputs.severity} alert"),
        RiskFactor(
            name="outside_change_window",
            points=OUTSIDE_WINDOW_POINTS if inputs.outside_change_window else 0,
            detail="no change window is open",
        ),
        RiskFactor(
            name="tool_failure_rate",
            points=_rate_points(inputs.tool_failure_rate),
            detail=f"the tool failed {inputs.tool_failure_rate:.0%} of recent runs",
        ),
        RiskFactor(
            name="playbook_failure_rate",
            points=_rate_points(inputs.playbook_failure_rate),
            detail=f"the playbook failed {inputs.playbook_failure_rate:.0%} of recent runs",
        ),
        RiskFactor(name="targets", points=_target_points(inputs.targets), detail=f"{inputs.targets} targets"),
    ]
    # Zero-point factors are noise in a proposal, but the category always shows: it anchors the score.
    shown = [f for f in factors if f.points or f.name == "category"]
    total = sum(f.points for f in shown)
    if total > 100:
        shown.append(RiskFactor(name="cap", points=100 - total, detail=f"raw total {total} capped at 100"))
        total = 100
    return RiskScore(score=total, band=band_for(total), factors=shown)
