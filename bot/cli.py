"""The ``ooda`` command: run the server, check config, and drive the running bot over its API.

Commands that talk to a running server use its HTTP API with a bearer token from
``OODA_API_TOKEN`` (in ``environment: dev`` the token generated under the data dir is used when the
variable is unset). ``audit verify`` and ``audit export`` read the store file directly, so they
work while the server is down and do not trust it. Tables for people, ``--json`` for scripts.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import hmac
import json
import os
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from bot.api_client import Client
from bot.cli_help import finish_help
from bot.errors import BotError, ConfigError
from bot.evaluation.cli import register as register_eval
from bot.evaluation.shadow_cli import register as register_shadow
from bot.intake.signing import signature_headers
from bot.server_address import forget, local_url, record
from bot.store_cli import add_store_commands


def default_config() -> Path:
    if os.environ.get("OODA_CONFIG"):
        return Path(os.environ["OODA_CONFIG"])
    return Path("config.yaml") if Path("config.yaml").exists() else Path("config.example.yaml")


# -- output ------------------------------------------------------------------------------------------

def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    if not rows:
        return "(none)"
    cells = [[str(r.get(c, "") if r.get(c) is not None else "") for c in columns] for r in rows]
    widths = [min(max(len(c), *(len(row[i]) for row in cells)), 60) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    for row in cells:
        lines.append("  ".join(v[:w].ljust(w) for v, w in zip(row, widths, strict=True)))
    return "\n".join(lines)


def show_proposal(p: dict[str, Any]) -> str:
    """The proposal as chat shows it (bot/chat/wording.py), in full: every evidence item uncut."""
    from bot.chat import wording
    from bot.model.proposals import Proposal

    proposal = Proposal.model_validate(p)
    lines = [wording.proposal_text(proposal, full=True)]
    lines.append(f"Requested by {wording.neutralize_mentions(proposal.requester)} · {proposal.signal_count} signal(s)")
    if proposal.state == "needs_approval":
        lines.append(f"Next: ooda approve {proposal.task_id}   or   ooda reject {proposal.task_id} --reason '...'")
    if proposal.can_undo:
        lines.append(f"Undo: ooda undo {proposal.task_id}")
    if proposal.undo is not None:
        lines.append(f"Undo: {proposal.undo.words}")
    return "\n".join(lines)


# -- commands ----------------------------------------------------------------------------------------

def cmd_serve(args: argparse.Namespace) -> int:
    from bot.config import load_settings
    from bot.logs import configure_logging

    settings, doc = load_settings(args.config, standin_port=args.standin_port)
    if args.host or args.port is not None:
        server = settings.server.model_copy(update={k: v for k, v in (("host", args.host), ("port", args.port)) if v})
        settings = settings.model_copy(update={"server": server})
    configure_logging(settings.log.level, settings.log.format)
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is optional on platforms without it
        runner = asyncio.run
    runner(_serve(settings, doc))
    return 0


async def _serve(settings: Any, doc: Any) -> None:
    import signal

    from bot.app import App

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with App(settings, doc=doc) as app:
        tune_garbage_collector()
        # The CLI on this machine follows `--port` without OODA_URL (bot/server_address.py).
        url = local_url(settings.server.host, app.port or settings.server.port)
        record(settings.data_path, url)
        try:
            await stop.wait()
        finally:
            forget(settings.data_path, url)


def tune_garbage_collector() -> None:
    """Call once the server is up. What is alive now (modules, config, playbooks) lives as long as
    the process: ``freeze`` keeps full collections from walking it again and again. Intake makes
    short-lived containers by the thousand and refcounting frees nearly all of them, so the young
    generation is collected every 10,000 allocations instead of 700. Measured at 100 alerts per
    request: collections took 8% of the event loop's time before, under 3% after.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)


def cmd_check(args: argparse.Namespace) -> int:
    from bot.app import check_config

    settings, problems = check_config(args.config)
    if problems:
        print(f"{args.config}: {len(problems)} problem(s)", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        return 1
    print(f"{args.config}: OK (environment {settings.environment}, {len(settings.intake.sources)} alert sources)")
    return 0


def load_sample(name: str) -> bytes:
    path = resources.files("bot") / "samples" / f"{name}.json"
    if not path.is_file():
        known = sorted(p.name.removesuffix(".json") for p in (resources.files("bot") / "samples").iterdir()
                       if p.name.endswith(".json"))
        raise BotError(f"no sample named {name!r}; samples: {', '.join(known)}")
    return path.read_bytes()


def sign_headers(kind: str, body: bytes, secret: str) -> dict[str, str]:
    """Sign a body the way each source expects (the same schemes the adapters verify)."""
    key = secret.encode()
    if kind == "pagerduty":
        return {"X-PagerDuty-Signature": "v1=" + hmac.new(key, body, hashlib.sha256).hexdigest()}
    if kind == "generic":
        return signature_headers(body, key)
    if kind == "grafana":
        return {"X-Grafana-Alerting-Signature": hmac.new(key, body, hashlib.sha256).hexdigest()}
    raise BotError(f"{kind} does not sign its webhooks; configure it with auth: bearer")


def cmd_fire(args: argparse.Namespace) -> int:
    client = Client(args.config)
    if args.sample:
        body, kind = load_sample(args.sample), args.sample.split("-", 1)[0]
    elif args.file:
        body, kind = Path(args.file).read_bytes(), args.kind or "alertmanager"
    else:
        raise BotError("give --sample NAME or a FILE to post")
    names = [n for n, s in client.settings.intake.sources.items()
             if s.kind == kind and (not args.source or n == args.source)]
    if not names:
        raise ConfigError(f"no intake source of kind {kind!r} in {args.config}; add one under intake.sources")
    source = client.settings.intake.sources[names[0]]
    headers = {"Content-Type": "application/json"}
    if source.auth == "bearer" and source.secret_env:
        headers["Authorization"] = f"Bearer {client.secrets.get(source.secret_env)}"
    elif source.auth == "hmac" and source.secret_env:
        headers.update(sign_headers(kind, body, client.secrets.get(source.secret_env)))
    response = client.send("POST", f"/webhooks/{names[0]}", content=body, headers=headers)
    print(json.dumps(response.json()) if args.json else f"{response.status_code} {response.text}")
    return 0 if response.status_code == 202 else 1


def _task_rows(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"id": t["id"], "state": t["state"], "playbook": t["playbook_id"], "severity": t["severity"],
             "env": t["environment"], "signals": t["signal_count"], "title": t["title"],
             "created": t["created_at"][:19]} for t in tasks]


def cmd_tasks(args: argparse.Namespace) -> int:
    data = Client(args.config).call("GET", f"/api/v1/tasks?state={'all' if args.all else 'open'}&limit={args.limit}")
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(table(_task_rows(data["tasks"]),
                    ["id", "state", "playbook", "severity", "env", "signals", "title", "created"]))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    data = Client(args.config).call("GET", f"/api/v1/tasks/{args.id}")
    print(json.dumps(data, indent=2) if args.json else show_proposal(data["proposal"]))
    return 0


def _print_result(args: argparse.Namespace, data: dict[str, Any]) -> None:
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(data.get("message", ""))
        if data.get("proposal"):
            print(show_proposal(data["proposal"]))


def parse_edits(pairs: Sequence[str]) -> dict[str, dict[str, Any]]:
    edits: dict[str, dict[str, Any]] = {}
    for pair in pairs:
        target, sep, value = pair.partition("=")
        step, dot, param = target.partition(".")
        if not sep or not dot:
            raise BotError(f"--edit takes step.param=value, got {pair!r}")
        edits.setdefault(step, {})[param] = value
    return edits


def cmd_approve(args: argparse.Namespace) -> int:
    body = {"edits": parse_edits(args.edit) or None, "confirmation": args.confirm,
            "override_dry_run": args.override_dry_run}
    _print_result(args, Client(args.config).call("POST", f"/api/v1/tasks/{args.id}/approve", body))
    return 0


def cmd_reject(args: argparse.Namespace) -> int:
    _print_result(args, Client(args.config).call("POST", f"/api/v1/tasks/{args.id}/reject", {"reason": args.reason}))
    return 0


def cmd_undo(args: argparse.Namespace) -> int:
    _print_result(args, Client(args.config).call("POST", f"/api/v1/tasks/{args.id}/undo"))
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    _print_result(args, Client(args.config).call("POST", f"/api/v1/tasks/{args.id}/retry"))
    return 0


def parse_kv(pairs: Sequence[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise BotError(f"arguments are key=value, got {pair!r}")
        out[key] = value
    return out


def cmd_run(args: argparse.Namespace) -> int:
    data = Client(args.config).call("POST", f"/api/v1/playbooks/{args.playbook}/run", {"args": parse_kv(args.args)})
    print(json.dumps(data, indent=2) if args.json else
          f"Task {data['task']['id']} queued; follow it with `ooda show {data['task']['id']}`")
    return 0


def parse_task_id(text: str) -> int:
    from bot.model.tasks import task_number

    task_id = task_number(text)
    if task_id is None:
        raise BotError(f"a task id is a number such as 12 or #12, got {text!r}")
    return task_id


def playbook_files(paths: Sequence[str]) -> dict[str, str]:
    """The YAML files named, or found in the folders named, as {file name: text}."""
    files: dict[str, str] = {}
    for name in paths:
        path = Path(name)
        found = sorted([*path.glob("*.yaml"), *path.glob("*.yml")]) if path.is_dir() else [path]
        if path.is_dir() and not found:
            raise BotError(f"no *.yaml playbooks in {path}")
        for file in found:
            try:
                files[str(file)] = file.read_text(encoding="utf-8")
            except OSError as exc:
                raise BotError(f"cannot read {file}: {exc.strerror}") from exc
    return files


def cmd_replay(args: argparse.Namespace) -> int:
    body = {"files": playbook_files(args.paths), "task_ids": [parse_task_id(t) for t in args.task] or None,
            "last": args.last}
    results = Client(args.config).call("POST", "/api/v1/playbooks/replay", body)["results"]
    failing = [r for r in results if r["error"]]
    if args.json:
        print(json.dumps(results, indent=2))
        return 1 if failing else 0
    if not results:
        print("no past tasks of these playbooks to replay")
        return 0
    changed = [r for r in results if r["changes"] and not r["error"]]
    policy = [r for r in results if r.get("policy_changes")]
    print(f"replayed {len(results)} task(s): {len(results) - len(changed) - len(failing)} unchanged, "
          f"{len(changed)} changed, {len(failing)} failing"
          + (f"; {len(policy)} decided differently by the policy of now, whatever the playbook" if policy else ""))
    for r in results:
        verdict = "FAILS" if r["error"] else "changed" if r["changes"] else "unchanged"
        if r.get("policy_changes"):
            verdict += "; the policy of now differs"
        print(f"#{r['task_id']} {r['playbook_id']} v{r['old_version']} → v{r['new_version']}: {verdict}")
        for change in r["changes"]:
            print(f"    {change}")
        for change in r.get("policy_changes", []):
            print(f"    policy, not the playbook: {change}")
    return 1 if failing else 0


def _print_status(args: argparse.Namespace, data: dict[str, Any]) -> None:
    if args.json:
        print(json.dumps(data, indent=2))
        return
    switch = f"ON (by {data.get('paused_by')}: {data.get('paused_reason') or 'no reason'})" if data["paused"] else "off"
    print(f"kill switch: {switch}\nenvironment: {data['environment']} · autonomy {data['autonomy_cap']}\n"
          f"open tasks: {data['open_tasks']} ({data['needs_approval']} need approval)")
    for failure in data.get("recent_failures", []):
        print(f"  recent failure: {failure}")
    for check in data.get("scheduled_checks", []):
        print(f"  scheduled check: {check}")


def cmd_status(args: argparse.Namespace) -> int:
    _print_status(args, Client(args.config).call("GET", "/api/v1/status"))
    return 0


def cmd_pause(args: argparse.Namespace) -> int:
    _print_status(args, Client(args.config).call("POST", "/api/v1/pause", {"reason": args.reason}))
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    _print_status(args, Client(args.config).call("POST", "/api/v1/resume"))
    return 0


def cmd_digest(args: argparse.Namespace) -> int:
    client = Client(args.config)
    query = f"?date={args.date}" if args.date else ""
    data = client.call("GET", "/api/v1/digest" + query)
    print(json.dumps(data, indent=2) if args.json else data["digest"])
    if args.png:
        response = client.send("GET", "/api/v1/digest/chart.png" + query,
                               headers={"Authorization": f"Bearer {client.token()}"})
        if response.status_code != 200:
            raise BotError(f"{response.status_code}: the chart could not be drawn: {response.text[:200]}")
        Path(args.png).write_bytes(response.content)
        print(f"chart: {args.png}", file=sys.stderr)
    return 0


DIGEST_DESCRIPTION = """\
Print the digest: alerts, tasks by outcome, response times (p50/p90, MTTA, MTTR), automatic
steps per autonomy level, denials and guardrail hits, the noisiest alerts and services,
approvals per person and failed scheduled checks, each with its 7-day trend. Without --date it
covers the 24 hours to now; with one, that calendar day in digest.timezone."""
DIGEST_EXAMPLE = "example:\n  ooda digest --date 2026-01-15 --png digest.png"


SIGNALS_HELP = "list the alerts no playbook matched (the playbooks to write next)"
SIGNALS_DESCRIPTION = """\
List the alert names that matched no playbook since a time, most alerts first: how many
alerts, when last seen, from which source, and the labels of the latest one. The engine
saves its position every few seconds, so an alert fired a moment ago may not be listed yet."""
SIGNALS_EXAMPLE = """\
example:
  ooda signals --unmatched --since 7d
  ooda signals --unmatched --since 2026-01-05T09:00:00Z --json"""


# Labels that say where an alert fired come first: the table cuts long cells.
WHERE_LABELS = ("instance", "pod", "namespace", "service", "job", "cluster")


def _labels_text(labels: dict[str, Any]) -> str:
    def order(key: str) -> tuple[int, str]:
        return (WHERE_LABELS.index(key) if key in WHERE_LABELS else len(WHERE_LABELS), key)

    return ", ".join(f"{k}={labels[k]}" for k in sorted(labels, key=order) if k != "alertname")


def cmd_signals(args: argparse.Namespace) -> int:
    if not args.unmatched:
        raise BotError("`ooda signals` lists the alerts no playbook matched: add --unmatched, "
                       "e.g. `ooda signals --unmatched --since 7d`")
    query = urlencode({"unmatched": "true", "since": args.since, "limit": args.limit})
    data = Client(args.config).call("GET", f"/api/v1/signals?{query}")
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    alerts, names = data["alerts"], data["names"]
    if not names:
        print(f"every alert since {data['since'][:19]} matched a playbook (or none came in)")
        return 0
    rows = [{"alertname": a["alertname"], "count": a["count"], "last seen": a["last_seen"][:19],
             "source": a["source"], "example labels": _labels_text(a["example_labels"])} for a in alerts]
    print(table(rows, ["alertname", "count", "last seen", "source", "example labels"]))
    if names > len(alerts):
        print(f"(the first {len(alerts)} of {names}; raise --limit to see more)")
    print(f"{names} alert name{'s' if names != 1 else ''} matched no playbook: write one, or map a team's "
          "alert name onto an existing playbook under `triggers:` in the config")
    return 0


def cmd_policy(args: argparse.Namespace) -> int:
    if args.policy_command == "show":
        from bot.app import build_policy
        from bot.config import load_settings
        from bot.policy.rules import describe_policy

        settings, doc = load_settings(args.config)
        print(describe_policy(build_policy(settings, doc)))
    else:
        print(Client(args.config).call("GET", f"/api/v1/tasks/{args.id}/policy")["explanation"])
    return 0


async def _audit_verify(config: Path, expect_head: str | None) -> Any:
    from bot.audit.chain import parse_head, verify_chain

    try:
        anchor = parse_head(expect_head) if expect_head is not None else None
    except ValueError as exc:
        raise BotError(f"--expect-head: {exc}") from None
    from bot.app import open_offline_store

    store, key = await open_offline_store(config)
    try:
        return verify_chain([row async for row in store.audit_rows()], key, anchor)
    finally:
        await store.close()


async def _audit_export(config: Path, task_id: int) -> tuple[dict[str, Any], Path]:
    """The bundle, and where it goes by default: the data folder's ``exports/`` (next to the store,
    and ignored by git with it), never the working directory a person happens to be in."""
    from bot.app import open_offline_store
    from bot.chat.evidence_bundle import export_bundle
    from bot.config import load_settings

    store, _ = await open_offline_store(config)
    try:
        bundle = await export_bundle(store, task_id)
    finally:
        await store.close()
    return bundle, load_settings(config)[0].data_path / "exports" / f"task-{task_id}.json"


def cmd_audit(args: argparse.Namespace) -> int:
    if args.audit_command == "verify":
        result = asyncio.run(_audit_verify(args.config, args.expect_head))
        if args.json:
            print(json.dumps({"ok": result.ok, "checked": result.checked, "broken_seq": result.broken_seq,
                              "reason": result.reason, "head_seq": result.head_seq, "head_hash": result.head_hash}))
        elif result.ok and args.expect_head:
            print(f"audit log OK: {result.checked} records, chain intact up to head "
                  f"{result.head_seq}:{result.head_hash}, and it holds the expected head")
        elif result.ok:
            print(f"audit log OK: {result.checked} records, chain intact; head {result.head_seq}:{result.head_hash}\n"
                  "(records cut off the end leave no gap to find: pass the last audit.head the server "
                  "logged as --expect-head SEQ:HASH to check for that too)")
        else:
            print(f"audit log BROKEN at record {result.broken_seq}: {result.reason} "
                  f"({result.checked} records verified before it)", file=sys.stderr)
        return 0 if result.ok else 1
    bundle, default_path = asyncio.run(_audit_export(args.config, int(args.task_id)))
    text = json.dumps(bundle, indent=2, default=str)
    if args.output == "-":
        print(text)
        return 0
    path = Path(args.output) if args.output else default_path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n", encoding="utf-8")
    print(f"wrote {path}: task {args.task_id}, {len(bundle['audit'])} audit records, "
          f"{len(bundle['signals'])} signals, {len(bundle['events'])} events")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ooda", description="Ooda chat-ops bot",
                                     epilog="Global options go before or after the command: "
                                            "`ooda --config c.yaml tasks` is `ooda tasks --config c.yaml`. "
                                            "The CLI talks to $OODA_URL (default: the config's server address).")
    parser.add_argument("--config", type=Path, default=default_config(),
                        help="config file (default: $OODA_CONFIG, ./config.yaml or ./config.example.yaml)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    # After the command the same options must not reset a value given before it, so their
    # defaults there are suppressed (argparse lets a subcommand's defaults win otherwise).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, default=argparse.SUPPRESS,
                        help="config file (default: $OODA_CONFIG, ./config.yaml or ./config.example.yaml)")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output")
    # The same options on sub-subcommands (`ooda audit verify --config X`) must not reset a value
    # given before them (`ooda audit --config X verify`), so their defaults are suppressed.
    nested = argparse.ArgumentParser(add_help=False)
    nested.add_argument("--config", type=Path, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    nested.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, fn: Any, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help_text)
        p.set_defaults(fn=fn)
        return p

    p = add("serve", cmd_serve, "run the bot: webhooks, API, chat surfaces, engine")
    p.add_argument("--host", help="listen address (overrides server.host), e.g. 0.0.0.0 in a container")
    p.add_argument("--port", type=int, help="listen port (overrides server.port)")
    p.add_argument("--standin-port", type=int, metavar="PORT",
                   help="the demo stand-in's port (overrides standin.port; every ${standin.*} follows), "
                        "e.g. 8199 for a second demo")
    add("check", cmd_check, "validate the config and every playbook")
    p = add("fire", cmd_fire, "post a sample or recorded alert to the running server")
    p.add_argument("file", nargs="?", help="a JSON payload file")
    p.add_argument("--sample", help="a bundled sample, e.g. alertmanager-kube-pod-crashlooping")
    p.add_argument("--kind", help="source kind of FILE (default alertmanager)")
    p.add_argument("--source", help="intake source name, when several have the same kind")
    p = add("tasks", cmd_tasks, "list tasks (open ones by default)")
    p.add_argument("--all", action="store_true")
    p.add_argument("--limit", type=int, default=50)
    add("show", cmd_show, "show a task's proposal").add_argument("id")
    p = add("approve", cmd_approve, "approve a proposal")
    p.add_argument("id")
    p.add_argument("--edit", action="append", default=[], metavar="STEP.PARAM=VALUE")
    p.add_argument("--confirm", help="the confirmation phrase for a critical-risk proposal")
    p.add_argument("--override-dry-run", metavar="REASON",
                   help="approve a step whose dry run still fails, saying why it is safe (audited)")
    p = add("reject", cmd_reject, "reject a proposal")
    p.add_argument("id")
    p.add_argument("--reason", required=True)
    add("undo", cmd_undo, "run the rollbacks of a task's executed steps").add_argument("id")
    add("retry", cmd_retry, "decide a task the policy stopped (kill switch, change window) again under the "
                            "policy of now, e.g. after `ooda resume`: ooda retry 12").add_argument("id")
    p = add("run", cmd_run, "run a playbook by hand: ooda run PLAYBOOK key=value ...")
    p.add_argument("playbook")
    p.add_argument("args", nargs="*")
    p = add("replay", cmd_replay, "what a new version of playbooks would have proposed for past tasks")
    p.add_argument("paths", nargs="+", metavar="PATH", help="playbook files, or folders of them")
    p.add_argument("--task", action="append", default=[], metavar="ID", help="replay this task (repeatable)")
    p.add_argument("--last", type=int, default=20, help="else the last N tasks of these playbooks (default 20)")
    add("status", cmd_status, "kill switch, autonomy and open tasks")
    add("pause", cmd_pause, "pull the kill switch: no write runs").add_argument("--reason", default="")
    add("resume", cmd_resume, "release the kill switch")
    p = add("digest", cmd_digest, "print the digest (the last 24 hours, or --date) and write its chart")
    p.description, p.epilog = DIGEST_DESCRIPTION, DIGEST_EXAMPLE
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--date", help="a calendar day, YYYY-MM-DD (default: the 24 hours to now)")
    p.add_argument("--png", metavar="FILE", help="also write the 7-day chart to FILE")
    p = add("signals", cmd_signals, SIGNALS_HELP)
    p.description, p.epilog = SIGNALS_DESCRIPTION, SIGNALS_EXAMPLE
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--unmatched", action="store_true", help="the alerts no playbook matched (the one listing there is)")
    p.add_argument("--since", default="24h", help="an ISO 8601 time or a duration back from now: 30m, 24h, 7d "
                                                  "(default 24h)")
    p.add_argument("--limit", type=int, default=100, help="at most this many alert names, 1 to 1000 (default 100)")
    p = add("policy", cmd_policy, "show the policy or explain a task's decisions")
    psub = p.add_subparsers(dest="policy_command", required=True)
    psub.add_parser("show", parents=[nested])
    psub.add_parser("explain", parents=[nested]).add_argument("id")
    register_eval(add)
    register_shadow(add)
    p = add("audit", cmd_audit, "verify the audit chain or export a task's evidence bundle")
    asub = p.add_subparsers(dest="audit_command", required=True)
    v = asub.add_parser("verify", parents=[nested])
    v.add_argument("--expect-head", metavar="SEQ:HASH",
                   help="a record known from outside the store (the server's audit.head log line) that "
                        "must still be there, unchanged")
    e = asub.add_parser("export", parents=[nested])
    e.add_argument("task_id")
    e.add_argument("-o", "--output", help="write the bundle to this file, '-' for stdout (default: "
                                          "exports/task-ID.json in the data folder)")
    add_store_commands(add, nested)
    return finish_help(parser)


def quiet_logging() -> dict[str, Any]:
    """For commands other than serve: only warnings, on stderr, so stdout stays clean for --json."""
    import logging

    import structlog

    previous = structlog.get_config()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr),
                        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
                        cache_logger_on_first_use=False)
    return previous


def main(argv: Sequence[str] | None = None) -> int:
    import structlog

    args = build_parser().parse_args(argv)
    previous = quiet_logging() if args.fn is not cmd_serve else None
    try:
        return int(args.fn(args))
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    except BotError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `ooda show 1 | head`: the reader left; that is not an error worth a traceback. Point
        # stdout at /dev/null so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        if previous is not None:
            structlog.configure(**previous)
