"""Dotted paths into step params: what editable keys, ``--edit`` and the chat forms name."""

from __future__ import annotations

from bot.playbooks.param_paths import has_param, param_at, with_param

PARAMS = {"method": "POST", "json": {"from_offset": 1000, "options": {"dry_run": False}}, "rollout": 0}


def test_a_path_names_a_top_level_param_or_a_key_inside_one():
    assert param_at(PARAMS, "rollout") == 0 and has_param(PARAMS, "rollout")
    assert param_at(PARAMS, "json.from_offset") == 1000
    assert param_at(PARAMS, "json.options.dry_run") is False and has_param(PARAMS, "json.options.dry_run")


def test_a_missing_path_is_absent_not_an_error():
    for path in ("nope", "json.nope", "method.upper", "json.from_offset.deeper"):
        assert not has_param(PARAMS, path)
        assert param_at(PARAMS, path) is None


def test_setting_a_nested_value_copies_the_path_and_keeps_its_neighbours():
    edited = with_param(PARAMS, "json.options.dry_run", True)
    assert edited == {"method": "POST", "json": {"from_offset": 1000, "options": {"dry_run": True}}, "rollout": 0}
    assert PARAMS["json"]["options"]["dry_run"] is False  # what was proposed stays as it was
    assert with_param(PARAMS, "rollout", 30)["rollout"] == 30 and PARAMS["rollout"] == 0
