"""Modal values and edit bounds: what a Discord modal delivers becomes typed, checked edits."""

from __future__ import annotations

import pytest

from adapters.chat import discord_forms
from adapters.chat.discord_forms import InvalidEdit, edit_keys, edit_modal, modal_values, parse_edits
from bot.model.proposals import ParamBound, RiskBand
from tests.adapters.chat.test_discord import proposal


def with_bounds(**bounds: ParamBound):
    p = proposal(7)
    step = p.steps[0].model_copy(update={"editable": bounds, "params": {"keep": 5, "mode": "fast", "dry": False}})
    return p.model_copy(update={"steps": [step]})


def test_only_changed_values_become_edits_with_their_type():
    p = with_bounds(keep=ParamBound(type="int", min=1, max=10), mode=ParamBound(choices=["fast", "slow"]))

    assert parse_edits(p, {"0.keep": " 7 ", "0.mode": "fast"}) == {"rotate": {"keep": 7}}


def test_a_key_inside_a_param_is_offered_with_its_current_value_and_edited_by_its_path():
    p = proposal(7)
    step = p.steps[0].model_copy(update={"params": {"json": {"replicas": 3, "zone": "a"}},
                                         "editable": {"json.replicas": ParamBound(type="int", min=1, max=10)}})
    p = p.model_copy(update={"steps": [step]})

    [label] = edit_modal(p).to_components()
    assert label["label"] == "rotate: json.replicas"
    assert (label["component"]["custom_id"], label["component"]["value"]) == ("0.json.replicas", "3")
    assert parse_edits(p, {"0.json.replicas": "3"}) == {}
    assert parse_edits(p, {"0.json.replicas": "6"}) == {"rotate": {"json.replicas": 6}}


@pytest.mark.parametrize(("raw", "bound", "problem"), [
    ("0", ParamBound(type="int", min=1, max=10), "at least 1"),
    ("seven", ParamBound(type="int"), "must be a whole number"),
    ("medium", ParamBound(choices=["fast", "slow"]), "one of fast, slow"),
    ("tru", ParamBound(type="bool"), "true or false"),  # a typo must not read as false
])
def test_values_outside_the_bounds_are_refused_with_the_rule(raw, bound, problem):
    p = with_bounds(keep=bound)
    with pytest.raises(InvalidEdit, match=problem):
        parse_edits(p, {"0.keep": raw})


def test_a_critical_edit_modal_keeps_room_for_the_confirmation():
    p = proposal(7, band=RiskBand.critical)
    step = p.steps[0].model_copy(update={"editable": {f"p{i}": ParamBound() for i in range(8)}})
    p = p.model_copy(update={"steps": [step]})

    assert len(edit_keys(p)) == 4  # a modal holds 5 inputs; one is the typed confirmation


def test_modal_values_reads_rows_and_labels():
    data = {"components": [
        {"type": 1, "components": [{"type": 4, "custom_id": "reason", "value": "wrong host"}]},
        {"type": 18, "id": 2, "component": {"type": 4, "custom_id": "confirmation", "value": "approve 7"}},
    ]}
    assert modal_values(data) == {"reason": "wrong host", "confirmation": "approve 7"}


def test_bounds_are_worded_for_people_never_as_a_type_name():
    bound = ParamBound(type="int", min=10, max=100)
    assert discord_forms.describe_bound(bound) == "a whole number from 10 to 100"
    with pytest.raises(discord_forms.InvalidEdit) as refused:
        discord_forms.parse_value("throttle.rollout", "5", bound)
    assert str(refused.value) == ("throttle.rollout must be at least 10, got 5. "
                                  "Allowed: a whole number from 10 to 100.")
    assert " int" not in str(refused.value) and "a int" not in str(refused.value)
