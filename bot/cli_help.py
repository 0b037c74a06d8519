"""What ``ooda <command> --help`` says beyond the one-line summary: a description and an example.

Kept apart from the parser in ``bot/cli.py`` so the words can be read (and changed) in one place.
``finish_help`` is applied to every subcommand after the parser is built: it turns the one-line
help into the description, adds the example as an epilog, and gives every option without words
of its own a line (so no command or option is left undescribed).
"""

from __future__ import annotations

import argparse
from importlib import resources

EXAMPLES: dict[str, str] = {
    "serve": "ooda serve --config config.example.yaml --port 8080",
    "check": "ooda check --config config.yaml",
    "fire": "ooda fire --sample alertmanager-kube-pod-crashlooping\n"
            "  ooda fire recorded.json --kind grafana",
    "tasks": "ooda tasks --all --limit 20",
    "show": "ooda show 12",
    "approve": "ooda approve 12\n  ooda approve 12 --edit throttle.rollout=30\n"
               "  ooda approve 12 --confirm 'approve 12'      # a critical-risk proposal",
    "reject": "ooda reject 12 --reason 'a flaky probe, not the app'",
    "undo": "ooda undo 12",
    "run": "ooda run kafka-consumer-lag consumergroup=warehouse-loader",
    "replay": "ooda replay playbooks/kube-pod-crashlooping.yaml --last 5",
    "status": "ooda status --json",
    "pause": "ooda pause --reason 'incident 4711: hands off prod'",
    "resume": "ooda resume",
    "digest": "ooda digest",
    "policy": "ooda policy show\n  ooda policy explain 12",
    "audit": "ooda audit verify --expect-head 1042:9f2c…\n  ooda audit export 12 -o task-12.json",
}

# Options and arguments that appear on several commands, worded once.
OPTION_HELP: dict[str, str] = {
    "id": "the task's id, as `ooda tasks` lists it (12, #12 or T12)",
    "task_id": "the task's id, as `ooda tasks` lists it",
    "all": "every task, not only those needing attention",
    "limit": "at most this many",
    "edit": "change a step's param before approving, within its bounds (repeatable)",
    "reason": "why, in words the team will read in the audit trail and the thread",
    "playbook": "the playbook's id (`ooda check` lists them)",
    "args": "the playbook's args as key=value",
}


def sample_names() -> list[str]:
    """The bundled samples ``ooda fire --sample`` takes (bot/samples/*.json)."""
    return sorted(p.name.removesuffix(".json") for p in (resources.files("bot") / "samples").iterdir()
                  if p.name.endswith(".json"))


def fire_epilog() -> str:
    names = "\n".join(f"  {name}" for name in sample_names())
    return f"samples (--sample NAME; the prefix names the source that reads it):\n{names}"


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _describe_options(parser: argparse.ArgumentParser) -> None:
    for action in parser._actions:
        if action.help is None:
            action.help = OPTION_HELP.get(action.dest, action.dest.replace("_", " "))


def finish_help(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Give every subcommand a description, an example and words for every option."""
    helps = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
    for name, sub in _subparsers(parser).items():
        sub.formatter_class = argparse.RawDescriptionHelpFormatter
        sub.description = sub.description or (helps.get(name) or "").capitalize() or None
        epilogs = [sub.epilog] if sub.epilog else []
        if name in EXAMPLES:
            epilogs.append("example:\n  " + EXAMPLES[name])
        if name == "fire":
            epilogs.append(fire_epilog())
        sub.epilog = "\n\n".join(epilogs) or None
        _describe_options(sub)
        for nested in _subparsers(sub).values():
            nested.formatter_class = argparse.RawDescriptionHelpFormatter
            _describe_options(nested)
    return parser
