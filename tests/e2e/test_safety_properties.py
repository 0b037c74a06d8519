"""Safety properties of the whole act stage, over random policies, actors and steps.

One App per test function (starting one per example would take most of the time budget); each
example installs a fresh random policy on the running core, runs a one-step playbook by hand as a
random requester, lets random people try to approve it, and then checks what the stand-in saw.

The oracle below is written from the rules in DESIGN.md, not from bot/policy/rules.py: a write runs
only if the kill switch is off, no cap is at L0, and either its autonomy lets it run alone or
enough distinct, authorized people other than the requester (from tier 3) approved it.
"""

from __future__ import annotations

import contextlib
import itertools
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bot.errors import UserError
from bot.model.tasks import TaskState
from bot.policy.autonomy import Autonomy
from bot.policy.identity import Actor
from bot.policy.rules import PolicyConfig
from demo.standin import new_feature
from tests.harness import running_app, running_standin

ROLES = ["oncall", "sre", "sre-lead"]
PEOPLE = {
    "alice": {"sre-lead"},
    "bob": {"oncall"},
    "carol": {"sre"},
    "dave": {"operator"},
    "erin": {"sre-lead", "oncall", "operator"},
}
ADMIN = Actor(id="admin", display="Admin", roles=frozenset({"admin", "operator"}), via="api")
ENVIRONMENTS = ["dev", "staging", "prod", "qa"]
BLASTS = {"single": 0, "service": 10, "global": 30}
CATEGORY_POINTS = {"write_reversible": 15, "write_irreversible": 35}
ENV_POINTS = {"dev": 0, "staging": 5, "prod": 15, "qa": 15}  # an unknown environment scores as prod
TIER_MAP = {
    "write_reversible": {"low": 1, "medium": 2, "high": 3, "critical": 4},
    "write_irreversible": {"low": 2, "medium": 3, "high": 4, "critical": 4},
}
EXAMPLES = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

PLAYBOOK = """
id: {id}
version: "1"
args:
  env: {{required: true}}
  token: {{required: true, pattern: "[a-z0-9-]+"}}
steps:
  - name: act
    tool: {tool}
    params: {params}
    category: {category}
    blast_radius: {blast}
autonomy_cap: L{cap}
"""
FLAG_PARAMS = '{flag: "prop-{{ args.token }}", enabled: true, rollout: 40}'
HTTP_PARAMS = ('{method: POST, url: "{{ vars.platform_api }}/platform/workloads/prop/{{ args.token }}/restart", '
               'expect_status: [200]}')


def playbook_id(category: str, blast: str, cap: int) -> str:
    return f"{'rev' if category == 'write_reversible' else 'irr'}-{blast}-l{cap}"


def write_playbooks(root: Path) -> Path:
    folder = root / "prop-playbooks"
    folder.mkdir()
    for category, blast, cap in itertools.product(CATEGORY_POINTS, BLASTS, range(5)):
        reversible = category == "write_reversible"
        text = PLAYBOOK.format(id=playbook_id(category, blast, cap), tool="flags.set" if reversible else "http.request",
                               params=FLAG_PARAMS if reversible else HTTP_PARAMS, category=category, blast=blast,
                               cap=cap)
        (folder / f"{playbook_id(category, blast, cap)}.yaml").write_text(text)
    return folder


@pytest.fixture
async def world(tmp_path):
    async with running_standin() as standin, \
            running_app(tmp_path, standin, {"playbooks_dir": str(write_playbooks(tmp_path))}) as app:
        yield app, standin


# Caps combine by minimum, and Hypothesis starts from the first choice of a sampled_from: list the
# permissive values first and repeat them so that writes actually run in a fair share of examples.
levels = st.sampled_from([4, 2, 3, 1, 0])
high_levels = st.sampled_from([4, 4, 2, 3, 4, 4, 2, 3, 1, 0])


@st.composite
def policies(draw: st.DrawFn) -> dict[str, Any]:
    ceiling = draw(high_levels)
    tiers = {}
    for tier in (1, 2, 3, 4):
        tiers[tier] = {
            "approvals_required": draw(st.sampled_from([1, 1, 1, 2, 3])),
            "approver_roles": draw(st.lists(st.sampled_from(ROLES), min_size=1, max_size=3, unique=True)),
            "change_window_required": draw(st.sampled_from([False, False, False, True])),
        }
        if tier < 3:
            tiers[tier]["separation_of_duties"] = draw(st.booleans())
    return {
        "autonomy_ceiling": ceiling,
        "default_environment_cap": min(ceiling, draw(high_levels)),
        "environments": {e: {"autonomy_cap": min(ceiling, draw(high_levels))}
                         for e in draw(st.lists(st.sampled_from(ENVIRONMENTS[:3]), unique=True))},
        "tool_caps": draw(st.dictionaries(st.sampled_from(["flags.set", "http.*", "*"]), high_levels, max_size=1)),
        "tiers": tiers,
    }


def band_of(points: int) -> str:
    return "low" if points < 25 else "medium" if points < 50 else "high" if points < 75 else "critical"


def effective_level(policy: dict[str, Any], env: str, tool: str, playbook_cap: int) -> int:
    env_cap = policy["environments"].get(env, {}).get("autonomy_cap", policy["default_environment_cap"])
    tool_caps = [cap for pattern, cap in policy["tool_caps"].items()
                 if pattern == tool or pattern == "*" or (pattern == "http.*" and tool.startswith("http."))]
    return min([policy["autonomy_ceiling"], env_cap, playbook_cap, *tool_caps])


def may_approve(rule: dict[str, Any], tier: int, person: str, requester: str) -> bool:
    if not PEOPLE[person] & set(rule["approver_roles"]):
        return False
    return not (person == requester and (tier >= 3 or rule.get("separation_of_duties", False)))


def expected_to_run(policy: dict[str, Any], *, kill: bool, category: str, blast: str, env: str, cap: int,
                    requester: str, attempts: list[str]) -> bool:
    if kill:
        return False
    tool = "flags.set" if category == "write_reversible" else "http.request"
    level = effective_level(policy, env, tool, cap)
    if level == 0:
        return False
    band = band_of(CATEGORY_POINTS[category] + BLASTS[blast] + ENV_POINTS[env])
    tier = TIER_MAP[category][band]
    rule = policy["tiers"][tier]
    if rule["change_window_required"]:
        return False  # no change window is configured, so a tier that needs one never runs
    if category == "write_reversible" and level >= 2 and band in ("low", "medium"):
        return True
    if category == "write_irreversible" and level >= 4 and band != "critical":
        return True
    approvers = {p for p in attempts if may_approve(rule, tier, p, requester)}
    return len(approvers) >= rule["approvals_required"]


tokens = itertools.count()


def fixed_policy(level: int, required: int) -> dict[str, Any]:
    rule = {"approvals_required": required, "approver_roles": ["sre-lead", "oncall"], "change_window_required": False}
    return {"autonomy_ceiling": level, "default_environment_cap": level, "environments": {}, "tool_caps": {},
            "tiers": {t: dict(rule) for t in (1, 2, 3, 4)}}


@EXAMPLES
# Random draws run writes in a varying share of examples; these pin each path down every time.
@example(policy=fixed_policy(2, 2), kill=False, category="write_irreversible", blast="global", env="prod", cap=4,
         requester="erin", attempts=["erin", "alice", "alice", "bob"])  # quorum by alice and bob only
@example(policy=fixed_policy(2, 2), kill=False, category="write_irreversible", blast="single", env="dev", cap=4,
         requester="dave", attempts=["alice", "alice", "carol"])  # one person twice is not two
@example(policy=fixed_policy(4, 1), kill=False, category="write_reversible", blast="single", env="dev", cap=4,
         requester="dave", attempts=["dave"])  # runs alone
@example(policy=fixed_policy(4, 1), kill=True, category="write_reversible", blast="single", env="dev", cap=4,
         requester="dave", attempts=["erin"])
@example(policy=fixed_policy(4, 1), kill=False, category="write_irreversible", blast="single", env="dev", cap=0,
         requester="dave", attempts=["erin", "alice"])
@given(policy=policies(), kill=st.sampled_from([False, False, False, False, True]),
       category=st.sampled_from(list(CATEGORY_POINTS)), blast=st.sampled_from(list(BLASTS)),
       env=st.sampled_from(ENVIRONMENTS), cap=levels,
       requester=st.sampled_from(["dave", "erin", "alice", "bob", "carol"]),
       attempts=st.lists(st.sampled_from(["erin", "alice", "bob", "carol", "dave"]), min_size=1, max_size=4))
async def test_a_write_runs_only_when_policy_or_enough_distinct_authorized_approvals_allow_it(
        world, policy, kill, category, blast, env, cap, requester, attempts):
    app, standin = world
    app.core.policy = PolicyConfig.model_validate(policy)
    if kill != (await app.core.kill_switch()).on:
        await (app.commands.pause(ADMIN, "drill") if kill else app.commands.resume(ADMIN))
    token = f"t{next(tokens)}"
    standin.flags[f"prop-{token}"] = new_feature(f"prop-{token}")
    actor = {p: Actor(id=p, display=p.title(), roles=frozenset(r), via="api") for p, r in PEOPLE.items()}

    task = await app.commands.run_playbook(playbook_id(category, blast, cap), {"env": env, "token": token},
                                           actor[requester])
    await app.engine.wait_idle()
    for person in attempts:
        # Refusals are part of the property: they must not let anything run.
        with contextlib.suppress(UserError):
            await app.commands.approve(task.id, actor[person], confirmation=f"approve {task.id}")
        await app.engine.wait_idle()

    writes = [c for c in standin.calls if token in c["path"] and c["method"] != "GET"]
    step = (await app.store.steps_of_task(task.id, "step"))[0]
    ran = bool(writes)
    assert ran == (step.state in {"succeeded", "failed", "running", "unknown"}), (step.state, writes)
    assert ran == expected_to_run(policy, kill=kill, category=category, blast=blast, env=env, cap=cap,
                                  requester=requester, attempts=attempts), (step.decision, step.state)

    # Whatever ran under approval had a quorum of distinct authorized people who did not request it.
    decision = step.decision or {}
    recorded = {a.actor for a in await app.store.approvals_of_task(task.id) if a.verdict == "approve"}
    tier = int(decision["rule"].removeprefix("tier")) if decision.get("rule", "").startswith("tier") else None
    if tier is not None:
        rule = policy["tiers"][tier]
        assert all(may_approve(rule, tier, p, requester) for p in recorded), recorded
        if ran:
            assert len(recorded) >= rule["approvals_required"]
    if ran and not recorded:
        assert decision["verdict"] == "allow"
    if kill or effective_level(policy, env, "flags.set" if category == "write_reversible" else "http.request",
                               cap) == Autonomy.L0:
        assert not writes
    if ran:
        assert (await app.store.get_task(task.id)).state is TaskState.completed


async def test_the_kill_switch_pulled_after_quorum_stops_the_write_at_run_time(world):
    """The executor decides again right before the call: approvals given before a pause do not count."""
    app, standin = world
    app.core.policy = PolicyConfig.model_validate({"autonomy_ceiling": "L4", "default_environment_cap": "L4"})
    standin.flags["prop-late"] = new_feature("prop-late")
    requester = Actor(id="dave", display="Dave", roles=frozenset({"operator"}), via="api")
    approver = Actor(id="alice", display="Alice", roles=frozenset({"sre-lead"}), via="api")
    task = await app.commands.run_playbook("rev-global-l1", {"env": "dev", "token": "late"}, requester)
    await app.engine.wait_idle()
    task = await app.store.get_task(task.id)
    assert task.state is TaskState.needs_approval

    proposal = await app.commands.show(task.id)
    task, started, _ = await app.commands.approvals.approve(task, proposal, approver, None, None)
    assert started and task.state is TaskState.executing
    await app.commands.pause(ADMIN, "drill")
    await app.engine.submit(task.id)
    await app.engine.wait_idle()

    assert [c for c in standin.calls if "prop-late" in c["path"] and c["method"] != "GET"] == []
    task = await app.store.get_task(task.id)
    assert task.state is TaskState.escalated_to_human
    assert "kill_switch" in (task.outcome or "")
    assert (await app.store.steps_of_task(task.id, "step"))[0].state == "denied"
