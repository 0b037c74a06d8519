"""The CLI as a new user meets it: help for every command and option, examples, options anywhere."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from bot import cli
from bot.cli_help import EXAMPLES, sample_names


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_global_options_work_before_or_after_the_command(tmp_path: Path):
    config = tmp_path / "c.yaml"
    before = cli.build_parser().parse_args(["--config", str(config), "--json", "tasks"])
    after = cli.build_parser().parse_args(["tasks", "--config", str(config), "--json"])
    assert before.config == after.config == config and before.json and after.json
    nested = cli.build_parser().parse_args(["--config", str(config), "audit", "verify"])
    assert nested.config == config
    assert cli.build_parser().parse_args(["tasks"]).config == cli.default_config()


def test_every_command_and_option_has_a_line_of_help_and_the_main_ones_an_example():
    parser = cli.build_parser()
    for name, sub in subcommands(parser).items():
        assert sub.description, f"ooda {name} has no description"
        for action in sub._actions:
            assert action.help, f"ooda {name} {action.dest} has no help"
        for nested_name, nested in (subcommands(sub) if any(
                isinstance(a, argparse._SubParsersAction) for a in sub._actions) else {}).items():
            assert all(a.help for a in nested._actions), f"ooda {name} {nested_name} has an option without help"
    for name in ("serve", "fire", "tasks", "show", "approve", "reject", "undo", "run", "pause", "audit"):
        assert f"ooda {name}" in (subcommands(parser)[name].epilog or ""), f"ooda {name} has no example"
        assert name in EXAMPLES


def test_fire_help_lists_every_sample_name(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as done:
        cli.main(["fire", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "alertmanager-kube-pod-crashlooping" in out and "grafana-login-failures" in out
    assert all(f"  {name}\n" in out for name in sample_names())
    assert "example:\n  ooda fire --sample" in out
