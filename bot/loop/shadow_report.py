"""The shadow report: for each playbook in shadow mode, what it proposed beside what people did.

Per playbook, over the tasks of the last N days whose proposal is marked ``shadow``:

- ``incidents``: shadow tasks opened (alert groups the playbook saw);
- ``proposals``: of those, the ones that proposed at least one write (the condition held);
- what people did about the same incident, read from the store: a task of another playbook (or a
  manual ``ooda run``) for the same target, in the same environment, opened within
  ``LINK_WINDOW`` of the shadow task, that a person approved or whose writes ran (``acted``), or
  that a person rejected (``rejected``); else the shadow task's alerts resolving with nobody acting
  (``resolved by itself``); else ``nothing yet``. "Same target" means the other task's alerts (or
  run args) carry every non-empty label value the shadow playbook groups by;
- ``agreed``: people acted and the shadow proposed a write, or people rejected the other plan or
  the alerts resolved by themselves and the shadow proposed no write. Tasks with nothing yet are
  not judged. ``same_tool`` counts the agreements where people's writes used a tool the shadow
  proposed too (the closer match);
- ``would violate``: proposals with a write the policy would have let run alone (its verdict kept
  in ``Decision.shadow_of``) that breaks a safety rule of ``bot.policy.write_safety`` at that moment:
  promoting the playbook as it stands would have done that.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from bot.model.steps import StepKind, StepState
from bot.model.tasks import Task, TaskState
from bot.policy.rules import PolicyConfig
from bot.policy.write_safety import AloneWrite, alone_write_problems
from bot.store.protocol import Store

LINK_WINDOW = timedelta(hours=2)
_KEY_PART = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)=("(?:[^"\\]|\\.)*")')

ACTED, REJECTED, RESOLVED, NOTHING_YET = "acted", "rejected", "resolved by itself", "nothing yet"


@dataclass
class ShadowRow:
    playbook: str
    incidents: int = 0
    proposals: int = 0
    judged: int = 0
    agreed: int = 0
    same_tool: int = 0
    would_violate: int = 0
    people: dict[str, int] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)

    @property
    def agreement(self) -> float | None:
        return self.agreed / self.judged if self.judged else None

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "agreement": None if self.agreement is None else round(self.agreement, 4)}


def target_labels(group_key: str) -> dict[str, str]:
    """The non-empty label values of a group key (``id{name="value",...}``, see bot/playbooks/matching.py)."""
    inner = group_key[group_key.find("{") + 1:group_key.rfind("}")] if "{" in group_key else ""
    return {name: value for name, raw in _KEY_PART.findall(inner) if (value := json.loads(raw))}


async def shadow_report(store: Store, policy: PolicyConfig, *, since: datetime, now: datetime) -> list[ShadowRow]:
    # People's tasks may start a little before the shadow task they answer.
    tasks = await store.tasks_since((since - LINK_WINDOW).isoformat())
    shadow = [t for t in tasks if (t.proposal or {}).get("shadow") and t.created_at >= since]
    others = [t for t in tasks if not (t.proposal or {}).get("shadow")]
    labels_of: dict[int, list[dict[str, str]]] = {}
    rows: dict[str, ShadowRow] = {}
    for task in sorted(shadow, key=lambda t: t.id):
        row = rows.setdefault(task.playbook_id, ShadowRow(task.playbook_id))
        row.incidents += 1
        proposal = task.proposal or {}
        writes = [s for s in proposal.get("steps", []) if s.get("category", "read") != "read"]
        if writes:
            row.proposals += 1
        people, tools = await _what_people_did(store, task, others, labels_of)
        row.people[people] = row.people.get(people, 0) + 1
        if people != NOTHING_YET:
            row.judged += 1
            if (people == ACTED) == bool(writes):
                row.agreed += 1
                row.same_tool += bool({s["tool"] for s in writes} & tools)
        problems = _promotion_problems(policy, task, proposal, writes)
        if problems:
            row.would_violate += 1
            row.violations += [f"task {task.id}: {kind}: {detail}" for kind, detail in problems]
    return [rows[p] for p in sorted(rows)]


async def _what_people_did(store: Store, task: Task, others: list[Task],
                           labels_of: dict[int, list[dict[str, str]]]) -> tuple[str, set[str]]:
    target = target_labels(task.group_key)
    verdicts: Counter[str] = Counter()
    tools: set[str] = set()
    for other in others:
        if other.environment != task.environment or abs(other.created_at - task.created_at) > LINK_WINDOW:
            continue
        if other.id not in labels_of:
            labels_of[other.id] = [row.signal.labels for row in await store.signals_of_task(other.id, limit=20)]
            labels_of[other.id].append({k: str(v) for k, v in other.args.items()})
        if not any(all(labels.get(k) == v for k, v in target.items()) for labels in labels_of[other.id]):
            continue
        if other.state is TaskState.rejected:
            verdicts[REJECTED] += 1
            continue
        ran = [s for s in await store.steps_of_task(other.id, StepKind.action)
               if s.category != "read" and s.state is StepState.succeeded]
        approved = any(a.verdict == "approve" for a in await store.approvals_of_task(other.id))
        if ran or approved:
            verdicts[ACTED] += 1
            tools |= {s.tool for s in ran}
    if verdicts[ACTED]:
        return ACTED, tools
    if verdicts[REJECTED]:
        return REJECTED, tools
    if task.alerts_resolved:
        return RESOLVED, tools
    return NOTHING_YET, tools


def _promotion_problems(policy: PolicyConfig, task: Task, proposal: dict[str, Any],
                        writes: list[dict[str, Any]]) -> list[tuple[str, str]]:
    at = datetime.fromisoformat(proposal["updated_at"]) if proposal.get("updated_at") else task.created_at
    band = (proposal.get("risk") or {}).get("band", "low")
    problems = []
    for step in writes:
        said = (step.get("decision") or {}).get("shadow_of") or {}
        if said.get("verdict") != "allow":
            continue  # promoted, it would wait for a person (or be denied): nothing runs alone
        write = AloneWrite(name=step["name"], tool=step["tool"], category=step["category"],
                           blast_radius=step.get("blast_radius", "single"), band=band, playbook_id=task.playbook_id,
                           environment=task.environment, at=at)
        problems += alone_write_problems(policy, write)
    return problems


def report_text(rows: list[ShadowRow], days: int) -> str:
    if not rows:
        return f"No playbook proposed anything in shadow mode in the last {days} day(s)."
    head = f"{'playbook':<26} {'incidents':>9} {'proposals':>9} {'agreed':>10} {'would violate':>13}  people did"
    lines = [f"Shadow mode, last {days} day(s)", head]
    for r in rows:
        agreed = f"{r.agreed}/{r.judged}" if r.judged else "-"
        people = ", ".join(f"{k} {v}" for k, v in sorted(r.people.items()))
        lines.append(f"{r.playbook:<26} {r.incidents:>9} {r.proposals:>9} {agreed:>10} {r.would_violate:>13}  {people}")
    for r in rows:
        lines += [f"  {r.playbook}: {v}" for v in r.violations]
    return "\n".join(lines)


def digest_lines(rows: list[ShadowRow]) -> list[str]:
    """One line per shadow playbook for the digest's "Shadow playbooks" section."""
    return [f"{r.playbook} {r.incidents} seen, {r.proposals} proposed, agreed {r.agreed}/{r.judged}"
            + (f", {r.would_violate} would break policy" if r.would_violate else "") for r in rows]
