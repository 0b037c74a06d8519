"""``ooda eval``: score playbooks against a suite of recorded incidents; ``ooda eval record``: add to one.

Exit status: 0 when the suite ran with no safety violation and no regression against the
baseline, 1 otherwise, 2 for a suite, config or baseline that cannot be read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from bot.errors import ConfigError
from bot.evaluation.runner import Evaluator
from bot.evaluation.scoring import read_baseline, regressions, score, table, write_baseline
from bot.evaluation.suite import SuiteError, load_suite

DESCRIPTION = """\
Run every incident of SUITE (a folder of incident files) through intake, grouping, matching,
orient and decide in a throwaway Ooda of its own, with tools answering from the incident's
recorded evidence (no system is called, no write ever runs), and score the playbooks: trigger
precision and recall, step agreement, mean risk, decisions by outcome and safety violations.

`ooda eval record TASK...` writes suite files from past tasks of the store instead."""

EXAMPLE = """\
examples:
  ooda eval incidents
  ooda eval incidents --playbooks playbooks-next --policy prod-policy.yaml
  ooda eval incidents --write-baseline eval-baseline.json
  ooda eval incidents --baseline eval-baseline.json --json
  ooda eval record 42 57 --output incidents/"""


def register(add: Any) -> None:
    """Add the subcommand with the CLI's own ``add`` (shared --config and --json)."""
    p = add("eval", cmd_eval, "score playbooks against recorded incidents (or record tasks into a suite)")
    p.description, p.epilog = DESCRIPTION, EXAMPLE
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("suite", metavar="SUITE", help="the suite folder, or `record` to record tasks into one")
    p.add_argument("tasks", nargs="*", metavar="TASK", help="with `record`: the task ids to record")
    p.add_argument("--playbooks", type=Path, help="evaluate the playbooks of this folder instead of the config's")
    p.add_argument("--policy", type=Path, help="a YAML file with the policy to evaluate under")
    p.add_argument("--baseline", type=Path, help="fail on any score lower than this saved baseline's")
    p.add_argument("--write-baseline", type=Path, metavar="FILE", help="save this run's scores as a baseline")
    p.add_argument("--output", type=Path, default=Path("incidents"),
                   help="with `record`: the suite folder to write into (default incidents)")


def cmd_eval(args: argparse.Namespace) -> int:
    if args.suite == "record":
        from bot.evaluation.record import cmd_record

        return cmd_record(args)
    if args.tasks:
        print(f"error: unexpected {' '.join(args.tasks)}; task ids go after `ooda eval record`", file=sys.stderr)
        return 2
    try:
        suite = load_suite(Path(args.suite))
        baseline = read_baseline(args.baseline) if args.baseline else None
    except (SuiteError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    evaluator = Evaluator(args.config, playbooks_dir=args.playbooks, policy_file=args.policy)
    try:
        outcomes = asyncio.run(evaluator.run_suite(suite))
    except ConfigError:
        raise
    report = score(outcomes)
    if baseline is not None:
        report.regressions = regressions(report, baseline)
    if args.write_baseline:
        write_baseline(report, args.write_baseline)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(table(report))
        print()
        print(summary(report, args))
    return 1 if report.failed else 0


def summary(report: Any, args: argparse.Namespace) -> str:
    total = report.total
    lines = [f"{report.incidents} incidents: precision {total.precision:.2f}, recall {total.recall:.2f}, "
             f"{len(report.violations)} safety violation(s)"
             + (f", {len(report.regressions)} regression(s) against {args.baseline}" if args.baseline else "")]
    if args.write_baseline:
        lines.append(f"baseline written to {args.write_baseline}")
    lines.append("FAILED" if report.failed else "OK")
    return "\n".join(lines)
