"""``ooda shadow report`` and ``ooda playbook shadow ID on|off``: shadow mode from the command line,
through the running server's API (bot/loop/shadow.py says what shadow mode does)."""

from __future__ import annotations

import argparse
import json
from typing import Any

REPORT_EXAMPLE = """\
examples:
  ooda shadow report
  ooda shadow report --days 30 --json"""
SWITCH_EXAMPLE = """\
examples:
  ooda playbook shadow kube-pod-crashlooping on    # propose only, never act
  ooda playbook shadow kube-pod-crashlooping off   # back to acting under the policy"""


def register(add: Any) -> None:
    """Add both subcommands with the CLI's own ``add`` (shared --config and --json)."""
    p = add("shadow", cmd_shadow, "what playbooks in shadow mode proposed beside what people did")
    p.description = ("Per playbook in shadow mode: incidents seen, proposals, agreement with what people did "
                     "about the same incidents, and whether promoting it would have broken the policy.")
    p.epilog, p.formatter_class = REPORT_EXAMPLE, argparse.RawDescriptionHelpFormatter
    p.add_argument("report", choices=["report"], help="the report (the one shadow command)")
    p.add_argument("--days", type=int, default=7, help="the last N days, 1 to 366 (default 7)")
    p = add("playbook", cmd_playbook, "switch a playbook's shadow mode (audited)")
    p.description = ("A playbook in shadow mode runs through decide on live alerts and posts its proposal marked "
                     "as shadow, with no buttons that act; no write tool is ever called for it.")
    p.epilog, p.formatter_class = SWITCH_EXAMPLE, argparse.RawDescriptionHelpFormatter
    p.add_argument("action", choices=["shadow"], help="what to change (shadow mode)")
    p.add_argument("id", help="the playbook id")
    p.add_argument("state", choices=["on", "off"], help="on: propose only; off: act under the policy")


def cmd_shadow(args: argparse.Namespace) -> int:
    from bot.api_client import Client

    data = Client(args.config).call("GET", f"/api/v1/shadow/report?days={args.days}")
    print(json.dumps(data, indent=2) if args.json else data["text"])
    return 0


def cmd_playbook(args: argparse.Namespace) -> int:
    from bot.api_client import Client

    data = Client(args.config).call("POST", f"/api/v1/playbooks/{args.id}/shadow", {"on": args.state == "on"})
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(f"{args.id}: shadow mode {args.state}" + (" (proposes only, never acts)" if args.state == "on" else ""))
    return 0
