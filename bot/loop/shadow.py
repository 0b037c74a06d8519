"""Shadow mode: a playbook that runs through decide on live alerts and never acts.

A playbook is in shadow when its file says ``mode: shadow`` or someone turned it on with
``ooda playbook shadow ID on`` (``off`` overrides the file the other way); the switch is kept in
the store's settings, audited, and read at every decision, so it holds across restarts and
takes effect on the next alert.

How nothing can run: ``Core.assess`` replaces the policy's answer for every write step of a
shadow playbook with a ``deny`` whose rule is ``shadow:<id>`` and keeps the policy's own answer
in ``Decision.shadow_of`` (what promoting the playbook would do). The executor never runs a
denied step, and the tool gateway refuses any write carrying a shadow decision, dry runs
included, whatever the verdict says. The task ends ``completed`` with the proposal on record,
marked ``shadow`` so chat shows it without buttons that act.

An alert opens a task of one playbook; among the playbooks matching it, those in shadow mode (by
their file) come last (``PlaybookSet.match``), so a shadow playbook never takes an alert from one
that acts. What people did about its incidents is read from the store when the report is asked
for (bot/loop/shadow_report.py): their tasks, approvals and rejections, and the alerts resolving.
"""

from __future__ import annotations

from typing import Any

from bot.audit.chain import AuditEntry
from bot.model.proposals import Decision
from bot.policy.identity import Actor
from bot.store.protocol import Store, TaskOps

SHADOW_KEY = "shadow_playbooks"
SHADOW_RULE = "shadow:"


async def overrides(store: Store) -> dict[str, bool]:
    """Playbook id -> shadow on (True) or off (False), as people last set it."""
    setting = await store.get_setting(SHADOW_KEY)
    value: dict[str, bool] = (setting.value if setting is not None else None) or {}
    return value


async def in_shadow(store: Store, playbook: Any) -> bool:
    switched = (await overrides(store)).get(playbook.id)
    return switched if switched is not None else getattr(playbook, "mode", "active") == "shadow"


def shadow_decision(playbook_id: str, decision: Decision) -> Decision:
    said = decision.verdict.replace("_", " ") + f" ({decision.rule})"
    return Decision(
        verdict="deny", rule=f"{SHADOW_RULE}{playbook_id}",
        reason=f"{playbook_id} is in shadow mode: proposed only, nothing runs. The policy would say {said}.",
        shadow_of=decision.model_dump(exclude={"shadow_of"}),
    )


def is_shadow(decision: Decision) -> bool:
    return decision.shadow_of is not None


def shadow_outcome(denied: list[tuple[str, Decision]]) -> str:
    would = "; ".join(f"{name} ({(d.shadow_of or {}).get('verdict', '?').replace('_', ' ')})" for name, d in denied)
    return f"shadow: proposed {would}; nothing ran"


async def set_shadow(store: Store, actor: Actor, playbook_id: str, on: bool) -> dict[str, bool]:
    """Turn shadow mode on or off for ``playbook_id``, audited; returns every override."""

    async def unit(t: TaskOps) -> dict[str, bool]:
        current = dict(await overrides(store))
        current[playbook_id] = on
        await t.set_setting(SHADOW_KEY, current, actor.id)
        t.audit(AuditEntry(actor.id, "playbook.shadow_on" if on else "playbook.shadow_off", None,
                           {"playbook": playbook_id, "via": actor.via}))
        return current

    result: dict[str, bool] = await store.transact(unit)
    return result
