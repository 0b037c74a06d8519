from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.model.proposals import Category, RiskBand
from bot.model.signals import Severity
from bot.policy.risk import BlastRadius, RiskInputs, band_for, score_risk


def _inputs(**overrides: object) -> RiskInputs:
    base: dict[str, object] = {
        "category": Category.write_reversible,
        "blast_radius": BlastRadius.single,
        "environment": "dev",
        "severity": Severity.info,
        "outside_change_window": False,
        "tool_failure_rate": 0.0,
        "playbook_failure_rate": 0.0,
        "targets": 1,
    }
    base.update(overrides)
    return RiskInputs.model_validate(base)


def _points(score_inputs: RiskInputs, factor: str) -> int:
    return sum(f.points for f in score_risk(score_inputs).factors if f.name == factor)


@pytest.mark.parametrize(
    ("score", "band"),
    [(0, RiskBand.low), (24, RiskBand.low), (25, RiskBand.medium), (49, RiskBand.medium),
     (50, RiskBand.high), (74, RiskBand.high), (75, RiskBand.critical), (100, RiskBand.critical)],
)
def test_band_boundaries(score: int, band: RiskBand) -> None:
    assert band_for(score) is band


def test_category_weights_irreversible_above_reversible_above_read() -> None:
    read = score_risk(_inputs(category=Category.read)).score
    reversible = score_risk(_inputs(category=Category.write_reversible)).score
    irreversible = score_risk(_inputs(category=Category.write_irreversible)).score
    assert (read, reversible, irreversible) == (0, 15, 35)


def test_a_quiet_reversible_change_in_dev_is_low() -> None:
    risk = score_risk(_inputs())
    assert risk.band is RiskBand.low
    assert [f.name for f in risk.factors] == ["category"]


def test_an_irreversible_global_change_in_prod_during_a_critical_alert_is_critical() -> None:
    risk = score_risk(
        _inputs(
            category=Category.write_irreversible,
            blast_radius=BlastRadius.global_,
            environment="prod",
            severity=Severity.critical,
        )
    )
    assert risk.score == 35 + 30 + 15 + 10
    assert risk.band is RiskBand.critical


def test_blast_radius_points_grow_in_order() -> None:
    points = [_points(_inputs(blast_radius=b), "blast_radius") for b in BlastRadius]
    assert points == sorted(points)
    assert points[0] == 0
    assert len(set(points)) == len(points)


@pytest.mark.parametrize(
    ("environment", "points"),
    [("dev", 0), ("staging", 5), ("prod", 15), ("production", 15), ("stg", 5), ("Development", 0)],
)
def test_environment_points(environment: str, points: int) -> None:
    assert _points(_inputs(environment=environment), "environment") == points


def test_unknown_environment_scores_as_prod_and_says_so() -> None:
    risk = score_risk(_inputs(environment="eu-west-blue"))
    factor = next(f for f in risk.factors if f.name == "environment")
    assert factor.points == 15
    assert "scored as prod" in factor.detail


def test_severity_adds_points() -> None:
    assert [_points(_inputs(severity=s), "severity") for s in (Severity.info, Severity.warning, Severity.critical)] == [
        0, 5, 10,
    ]


def test_outside_change_window_adds_ten() -> None:
    inside = score_risk(_inputs()).score
    outside = score_risk(_inputs(outside_change_window=True)).score
    assert outside - inside == 10


def test_failure_rates_scale_to_ten_points_each() -> None:
    assert _points(_inputs(tool_failure_rate=0.5), "tool_failure_rate") == 5
    assert _points(_inputs(tool_failure_rate=1.0), "tool_failure_rate") == 10
    assert _points(_inputs(playbook_failure_rate=0.25), "playbook_failure_rate") == 3  # 2.5 rounds up
    assert _points(_inputs(playbook_failure_rate=0.0), "playbook_failure_rate") == 0


@pytest.mark.parametrize(("targets", "points"), [(0, 0), (1, 0), (2, 2), (8, 6), (32, 10), (5000, 10)])
def test_targets_are_log_scaled(targets: int, points: int) -> None:
    assert _points(_inputs(targets=targets), "targets") == points


def test_capped_score_keeps_factors_summing_to_it() -> None:
    risk = score_risk(
        _inputs(
            category=Category.write_irreversible,
            blast_radius=BlastRadius.global_,
            environment="prod",
            severity=Severity.critical,
            outside_change_window=True,
            tool_failure_rate=1.0,
            playbook_failure_rate=1.0,
            targets=1000,
        )
    )
    assert risk.score == 100
    assert sum(f.points for f in risk.factors) == 100
    assert risk.factors[-1].name == "cap"
    assert risk.factors[-1].points == -30


def test_inputs_reject_unknown_fields_and_bad_rates() -> None:
    with pytest.raises(ValueError, match="extra"):
        RiskInputs.model_validate({"category": "read", "environment": "dev", "owner": "me"})
    with pytest.raises(ValueError, match="tool_failure_rate"):
        RiskInputs(category=Category.read, environment="dev", tool_failure_rate=1.5)


risk_inputs = st.builds(
    RiskInputs,
    category=st.sampled_from(Category),
    blast_radius=st.sampled_from(BlastRadius),
    environment=st.sampled_from(["dev", "staging", "prod", "qa", "production"]),
    severity=st.sampled_from(Severity),
    outside_change_window=st.booleans(),
    tool_failure_rate=st.floats(0, 1),
    playbook_failure_rate=st.floats(0, 1),
    targets=st.integers(0, 10_000),
)


@settings(max_examples=150)
@given(risk_inputs)
def test_factors_always_sum_to_the_score_and_the_band_matches(inputs: RiskInputs) -> None:
    risk = score_risk(inputs)
    assert 0 <= risk.score <= 100
    assert sum(f.points for f in risk.factors) == risk.score
    assert risk.band is band_for(risk.score)
    assert score_risk(inputs) == risk  # deterministic


_ORDERED = {
    "category": list(Category),
    "blast_radius": list(BlastRadius),
    "severity": [Severity.info, Severity.warning, Severity.critical],
    "outside_change_window": [False, True],
}


@settings(max_examples=100)
@given(risk_inputs, st.sampled_from(sorted(_ORDERED)), st.data())
def test_raising_any_input_never_lowers_the_score(inputs: RiskInputs, field: str, data: st.DataObject) -> None:
    values = _ORDERED[field]
    low, high = sorted(data.draw(st.lists(st.integers(0, len(values) - 1), min_size=2, max_size=2)))
    lower = score_risk(inputs.model_copy(update={field: values[low]})).score
    higher = score_risk(inputs.model_copy(update={field: values[high]})).score
    assert lower <= higher
