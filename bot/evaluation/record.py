"""``ooda eval record TASK...``: turn past tasks into incident files, so a suite grows from real incidents.

For each task the store holds, one ``NN-task-<id>-<playbook>.yaml`` (and its body files) is
written into the suite folder:

- the deliveries are rebuilt in the sender's own format from the raw alerts the store kept
  (Alertmanager and Grafana: one group notification per source; PagerDuty: one webhook event per
  incident; generic: the body as sent), all at ``at_s: 0``;
- ``evidence`` is what the task's evidence steps got back, so ``ooda eval`` answers the same;
- ``expect`` is what the bot did: one task of its playbook, the write steps it proposed. When a
  person rejected the proposal, their reason is kept as ``expect.feedback`` and the expected write
  steps are left empty with ``never: [auto_write]``: the rejection is offered as the outcome to
  hold the playbook to, for the person adding the file to confirm or edit.

Labels, annotations and evidence go through the redaction rules (``bot.audit.redaction.redact``) first:
credentials, personal data and the process's known secrets never reach a suite file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from pathlib import Path
from typing import Any

import yaml

from bot.audit.redaction import redact
from bot.config import load_settings
from bot.errors import BotError
from bot.model.steps import StepKind, StepState
from bot.store.protocol import Store

ALERTMANAGER_GROUP_KEYS = ("groupKey", "receiver", "externalURL", "orgId")


def cmd_record(args: argparse.Namespace) -> int:
    if not args.tasks:
        raise BotError("name the tasks to record, e.g. `ooda eval record 42 57`")
    try:
        ids = [int(text.lstrip("#")) for text in args.tasks]
    except ValueError:
        raise BotError(f"task ids are numbers, got {' '.join(args.tasks)}") from None
    folder: Path = args.output
    folder.mkdir(parents=True, exist_ok=True)
    recorded = asyncio.run(record_tasks(args.config, ids, _next_number(folder)))
    for files, feedback in recorded:
        for name, text in files.items():
            (folder / name).write_text(text, encoding="utf-8")
        path = folder / next(name for name in files if name.endswith(".yaml"))
        note = f" (a rejection: {feedback!r} offered as the expected outcome)" if feedback else ""
        print(f"wrote {path}{note}")
    print(f"review the expect: section of each file, then run `ooda eval {args.output}`")
    return 0


async def record_tasks(config: Path, task_ids: list[int], first_number: int) -> list[tuple[dict[str, str], str | None]]:
    """Each task's incident file and body files (name -> text), numbered from ``first_number``,
    with the rejection's reason when a person rejected it."""
    from bot.app import open_offline_store

    settings, _ = load_settings(config)
    kinds: dict[str, str] = {name: source.kind for name, source in settings.intake.sources.items()}
    store, _ = await open_offline_store(config)
    written = []
    try:
        for number, task_id in enumerate(task_ids, first_number):
            written.append(await _record_one(store, task_id, kinds, number))
    finally:
        await store.close()
    return written


async def _record_one(store: Store, task_id: int, kinds: dict[str, str],
                      number: int) -> tuple[dict[str, str], str | None]:
    task = await store.get_task(task_id)
    if task is None:
        raise BotError(f"no task {task_id} in the store; `ooda tasks --all` lists them")
    rows = await store.signals_of_task(task_id, limit=1000)
    raws = {r.id: r.raw for r in await store.raw_signals_of_task(task_id)}
    by_source: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_source.setdefault(row.signal.source, []).append(redact(raws.get(row.signal.id, {})))
    if not by_source:
        raise BotError(f"task {task_id} has no alert signals (a manual run?); only alert-driven tasks can be "
                       "recorded")
    files: dict[str, str] = {}
    stem = f"{number:02d}-task-{task_id}-{_slug(task.playbook_id)}"
    bodies = [(kinds.get(source, source), body) for source, alerts in sorted(by_source.items())
              for body in bodies_for(kinds.get(source, source), alerts)]
    deliveries = []
    for index, (kind, body) in enumerate(bodies, 1):
        name = f"{stem}.json" if len(bodies) == 1 else f"{stem}.{index}.json"
        files[name] = json.dumps(body, indent=2) + "\n"
        deliveries.append({"at_s": 0, "sender": kind, "body_file": name})
    evidence = []
    for step in await store.steps_of_task(task_id, StepKind.evidence):
        call: dict[str, Any] = {"tool": step.tool, "params": redact(step.params)}
        if step.state is StepState.succeeded:
            call["result"] = redact(step.result or {})
        else:
            call.update(ok=False, error=redact(step.error or "failed"))
        evidence.append(call)
    steps = await store.steps_of_task(task_id, StepKind.action)
    rejection = next((a for a in await store.approvals_of_task(task_id) if a.verdict == "reject"), None)
    feedback = redact(rejection.reason) if rejection and rejection.reason else None
    expect: dict[str, Any] = {"tasks": 1, "playbook": task.playbook_id}
    if rejection is not None:
        expect.update(never=["auto_write"], feedback=feedback or f"rejected by {rejection.display}, no reason given")
    else:
        expect["steps"] = [s.name for s in sorted(steps, key=lambda s: s.idx) if s.category != "read"]
    doc = {"title": redact(task.title), "deliveries": deliveries, "evidence": evidence, "expect": expect}
    header = (f"# Recorded from task {task_id} ({task.playbook_id} v{task.playbook_version}, {task.state.value}, "
              f"{task.created_at:%Y-%m-%d}). Check the expect: section before adding it to the suite.\n")
    if rejection is not None:
        header += ("# A person rejected this proposal; their reason is the feedback below and no write step is "
                   "expected.\n")
    files[f"{stem}.yaml"] = header + yaml.safe_dump(doc, sort_keys=False, width=110, allow_unicode=True)
    return files, feedback


def bodies_for(kind: str, alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The webhook bodies a sender of ``kind`` would have posted for these raw alerts."""
    if kind in ("alertmanager", "grafana"):
        group = {key: alerts[0][key] for key in ALERTMANAGER_GROUP_KEYS if key in alerts[0]}
        inner = [{k: v for k, v in a.items() if k not in ALERTMANAGER_GROUP_KEYS} for a in alerts]
        firing = any(a.get("status") == "firing" for a in inner)
        return [{"version": "4", **group, "status": "firing" if firing else "resolved", "truncatedAlerts": 0,
                 "alerts": inner}]
    if kind == "pagerduty":
        return [{"event": {"id": a.get("event_id"), "event_type": a.get("event_type"),
                           "resource_type": a.get("resource_type"), "occurred_at": a.get("occurred_at"),
                           "data": a.get("incident")}} for a in alerts]
    return list(alerts)


def _next_number(folder: Path) -> int:
    numbers = [int(m.group(1)) for p in folder.glob("*.yaml") if (m := re.match(r"(\d+)-", p.name))]
    return max(numbers, default=0) + 1


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "task"
