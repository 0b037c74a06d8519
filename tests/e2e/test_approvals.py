"""Approvals through the real App: quorum, double clicks, separation of duties, edits, step-up.

The playbooks here are written for the test so that each one lands in a known tier: an
irreversible restart of one workload (tier 3 in dev, tier 4 in prod), the same restart with a
global blast radius (critical in prod) and a throttle flag capped at L1 so it always waits for a
person. The policy is the example config's, with the prod change window widened to every
environment except a made-up one so the time of day never changes a score.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from bot.errors import ConfirmationRequired, Conflict, Forbidden, UserError
from bot.model.tasks import TaskState
from bot.policy.identity import Actor
from tests.harness import running_app, running_standin

# Tier 4 needs two sre-leads; the example's prod change window would make scores depend on the
# hour, so it is pointed at an environment no task uses and tier 4 stops requiring a window.
POLICY = {
    "policy": {
        "change_windows": {"prod-changes": {"environments": ["nowhere"]}},
        "tiers": {4: {"approvals_required": 2, "approver_roles": ["sre-lead"]}},
        "rate_limits": {"tools": {"flags.set": {"max": 100, "per_s": 3600}}},
    },
}

RESTART = """
id: {id}
version: "1"
description: Restart one workload.
args:
  env: {{default: dev, pattern: "dev|staging|prod"}}
  ns: {{default: shop}}
  dep: {{default: api}}
steps:
  - name: restart
    tool: http.request
    params:
      method: POST
      url: "{{{{ vars.platform_api }}}}/platform/workloads/{{{{ args.ns }}}}/{{{{ args.dep }}}}/restart"
      expect_status: [200]
    category: write_irreversible
    blast_radius: {blast}
autonomy_cap: L3
"""

THROTTLE = """
id: throttle
version: "1"
description: Throttle a service with a flag.
args:
  env: {default: dev, pattern: "dev|staging|prod"}
  flag: {default: throttle-checkout}
steps:
  - name: throttle
    tool: flags.set
    params: {flag: "{{ args.flag }}", enabled: true, rollout: 50}
    category: write_reversible
    blast_radius: service
    editable:
      rollout: {type: int, min: 10, max: 100}
autonomy_cap: L1
"""

BACKFILL = """
id: backfill
version: "1"
description: Reprocess a consumer group from an offset the approver may move.
args:
  env: {default: dev, pattern: "dev|staging|prod"}
steps:
  - name: backfill
    tool: http.request
    params:
      method: POST
      url: "{{ vars.platform_api }}/data/consumers/loader/backfill"
      json: {from_offset: 1000, reason: lag}
      expect_status: [202]
    category: write_irreversible
    blast_radius: service
    editable:
      json.from_offset: {type: int, min: 0}
autonomy_cap: L1
"""

LEAD = Actor(id="lead", display="Lead", roles=frozenset({"sre-lead"}), via="api")
LEAD_2 = Actor(id="lead-2", display="Lead two", roles=frozenset({"sre-lead"}), via="api")
ONCALL = Actor(id="oncall", display="On-call", roles=frozenset({"oncall"}), via="api")
RUNNER = Actor(id="runner", display="Runner", roles=frozenset({"operator"}), via="api")


def write_playbooks(root: Path) -> Path:
    folder = root / "test-playbooks"
    folder.mkdir()
    (folder / "restart.yaml").write_text(RESTART.format(id="restart", blast="single"))
    (folder / "restart-global.yaml").write_text(RESTART.format(id="restart-global", blast="global"))
    (folder / "throttle.yaml").write_text(THROTTLE)
    (folder / "backfill.yaml").write_text(BACKFILL)
    return folder


@pytest.fixture
async def env(tmp_path):
    overrides = {**POLICY, "playbooks_dir": str(write_playbooks(tmp_path))}
    async with running_standin() as standin, running_app(tmp_path, standin, overrides) as app:
        yield app, standin


def restarts(standin, dep: str = "api") -> list[dict]:
    return [c for c in standin.calls if c["method"] == "POST" and c["path"].endswith(f"/{dep}/restart")]


async def planned(app, playbook: str, requester: Actor, **args: str):
    task = await app.commands.run_playbook(playbook, args, requester)
    await app.engine.wait_idle()
    return await app.store.get_task(task.id)


async def test_two_people_approving_at_once_execute_the_step_once(env):
    app, standin = env
    task = await planned(app, "restart", RUNNER, dep="api")
    assert task.state is TaskState.needs_approval

    results = await asyncio.gather(app.commands.approve(task.id, LEAD, confirmation=None),
                                   app.commands.approve(task.id, ONCALL, confirmation=None),
                                   return_exceptions=True)
    await app.engine.wait_idle()

    started = [r for r in results if not isinstance(r, BaseException) and r.executed]
    assert len(started) == 1, results
    # The click that lost the race is refused as already decided, or recorded without starting anything.
    for r in results:
        assert not isinstance(r, BaseException) or isinstance(r, Conflict), r
    assert len(restarts(standin)) == 1
    assert (await app.store.get_task(task.id)).state is TaskState.completed
    approvers = {a.actor for a in await app.store.approvals_of_task(task.id) if a.verdict == "approve"}
    assert approvers <= {"lead", "oncall"} and approvers


async def test_a_double_click_by_one_person_executes_once_and_counts_once(env):
    app, standin = env
    task = await planned(app, "restart", RUNNER, dep="web")
    results = await asyncio.gather(app.commands.approve(task.id, LEAD), app.commands.approve(task.id, LEAD),
                                   return_exceptions=True)
    await app.engine.wait_idle()
    assert sum(1 for r in results if not isinstance(r, BaseException) and r.executed) == 1, results
    assert len(restarts(standin, "web")) == 1
    assert [a.actor for a in await app.store.approvals_of_task(task.id)] == ["lead"]


async def test_tier_four_needs_two_different_people(env):
    app, standin = env
    task = await planned(app, "restart", RUNNER, env="prod", dep="pay")
    proposal = await app.commands.show(task.id)
    assert proposal.steps[0].decision.rule == "tier4"
    assert proposal.approvals_required == 2

    first = await app.commands.approve(task.id, LEAD)
    again = await app.commands.approve(task.id, LEAD)  # the same person twice is still one person
    await app.engine.wait_idle()
    assert not first.executed and not again.executed
    assert "1 of 2" in again.message
    assert restarts(standin, "pay") == []
    assert (await app.store.get_task(task.id)).state is TaskState.needs_approval

    # An oncall without sre-lead is not an approver of tier 4 at all.
    with pytest.raises(Forbidden, match="sre-lead"):
        await app.commands.approve(task.id, ONCALL)

    done = await app.commands.approve(task.id, LEAD_2)
    await app.engine.wait_idle()
    assert done.executed
    assert len(restarts(standin, "pay")) == 1
    assert sorted(a.actor for a in await app.store.approvals_of_task(task.id)) == ["lead", "lead-2"]
    assert (await app.store.get_task(task.id)).state is TaskState.completed


async def test_the_requester_cannot_approve_their_own_tier_three_step(env):
    app, standin = env
    requester = Actor(id="lead", display="Lead", roles=frozenset({"sre-lead", "operator"}), via="api")
    task = await planned(app, "restart", requester, dep="own")
    assert (await app.commands.show(task.id)).steps[0].decision.rule == "tier3"

    with pytest.raises(Forbidden, match="separation of duties"):
        await app.commands.approve(task.id, requester)
    assert await app.store.approvals_of_task(task.id) == []
    assert restarts(standin, "own") == []

    assert (await app.commands.approve(task.id, ONCALL)).executed
    await app.engine.wait_idle()
    assert len(restarts(standin, "own")) == 1


async def test_requester_may_approve_a_tier_two_step(env):
    """Separation of duties starts at tier 3; a tier-2 step may be approved by whoever ran it."""
    app, standin = env
    requester = Actor(id="oncall", display="On-call", roles=frozenset({"oncall", "operator"}), via="api")
    task = await planned(app, "throttle", requester)
    assert (await app.commands.show(task.id)).steps[0].decision.rule == "tier2"
    assert (await app.commands.approve(task.id, requester)).executed
    await app.engine.wait_idle()
    assert standin.flags["throttle-checkout"]["environments"][1]["enabled"] is True


async def test_an_actor_without_an_approver_role_is_refused_with_the_roles_that_may(env):
    app, _ = env
    task = await planned(app, "throttle", RUNNER)
    with pytest.raises(Forbidden, match="oncall or sre or sre-lead"):
        await app.commands.approve(task.id, RUNNER)
    assert await app.store.approvals_of_task(task.id) == []


async def test_an_out_of_bounds_edit_is_refused_with_the_bound(env):
    app, standin = env
    task = await planned(app, "throttle", RUNNER)
    with pytest.raises(UserError, match="at most 100") as refused:
        await app.commands.approve(task.id, ONCALL, edits={"throttle": {"rollout": 250}})
    assert "throttle.rollout" in str(refused.value)
    with pytest.raises(UserError, match="at least 10"):
        await app.commands.approve(task.id, ONCALL, edits={"throttle": {"rollout": 5}})
    with pytest.raises(UserError, match="not editable"):
        await app.commands.approve(task.id, ONCALL, edits={"throttle": {"flag": "checkout-v2"}})
    # Nothing was recorded and nothing ran.
    assert await app.store.approvals_of_task(task.id) == []
    assert (await app.store.get_task(task.id)).state is TaskState.needs_approval
    assert standin.flags["throttle-checkout"]["environments"][1]["enabled"] is False


async def test_an_integer_edit_must_be_a_whole_number_and_is_never_rounded(env):
    app, standin = env
    task = await planned(app, "throttle", RUNNER)
    for value in (10.5, "10.5", "1e1", True, 30.0, " ", "3O", [30], {"v": 30}, None):
        with pytest.raises(UserError, match=r"throttle\.rollout must be a whole number from 10 to 100") as refused:
            await app.commands.approve(task.id, ONCALL, edits={"throttle": {"rollout": value}})
        assert "edits refused" in str(refused.value)
    assert await app.store.approvals_of_task(task.id) == []
    assert (await app.store.steps_of_task(task.id, "step"))[0].params["rollout"] == 50
    assert standin.flags["throttle-checkout"]["environments"][1]["enabled"] is False


async def test_only_a_policy_refusal_of_a_task_is_written_to_its_audit_trail(env):
    app, _ = env
    task = await planned(app, "throttle", RUNNER)
    with pytest.raises(Forbidden):
        await app.commands.approve(task.id, RUNNER)  # no approver role: a policy decision about the task
    with pytest.raises(UserError):
        await app.commands.approve(task.id, ONCALL, edits={"throttle": {"rollout": 10.5}})  # a typo
    with pytest.raises(UserError):
        await app.commands.approve(task.id + 1000, ONCALL)  # no such task
    refused = [json.loads(row[6]) for row in [r async for r in app.store.audit_rows()] if row[3] == "command.refused"]
    assert [(r["command"], "oncall or sre" in r["reason"]) for r in refused] == [("approve", True)]
    counted = app.core.metrics.registry.get_sample_value
    assert counted("ooda_command_refusals_total", {"command": "approve", "status": "400"}) == 1
    assert counted("ooda_command_refusals_total", {"command": "approve", "status": "404"}) == 1
    assert counted("ooda_command_refusals_total", {"command": "approve", "status": "403"}) == 1


async def test_an_in_bounds_edit_changes_what_runs_and_is_audited_as_a_diff(env):
    app, standin = env
    task = await planned(app, "throttle", RUNNER)
    result = await app.commands.approve(task.id, ONCALL, edits={"throttle": {"rollout": "30"}})
    await app.engine.wait_idle()
    assert result.executed

    production = standin.flags["throttle-checkout"]["environments"][1]
    assert production["enabled"] is True
    assert production["strategies"][0]["parameters"]["rollout"] == "30"
    step = (await app.store.steps_of_task(task.id, "step"))[0]
    assert step.params["rollout"] == 30 and step.state == "succeeded"

    edited = [json.loads(row[6]) for row in [r async for r in app.store.audit_rows(task.id)]
              if row[3] == "step.edited"]
    assert edited == [{"step": "throttle", "diff": {"rollout": {"from": 50, "to": 30}}}]
    approved = [e for e in await app.store.events_of_task(task.id) if e.name.endswith(".approved")]
    assert [e.payload["edits"] for e in approved] == [{"throttle.rollout": [50, 30]}]


async def test_an_edit_may_name_a_key_inside_a_param(env):
    app, standin = env
    task = await planned(app, "backfill", RUNNER)
    with pytest.raises(UserError, match="at least 0"):
        await app.commands.approve(task.id, ONCALL, edits={"backfill": {"json.from_offset": -5}})
    with pytest.raises(UserError, match=r"json\.reason is not editable"):
        await app.commands.approve(task.id, ONCALL, edits={"backfill": {"json.reason": "other"}})

    assert (await app.commands.approve(task.id, ONCALL, edits={"backfill": {"json.from_offset": "500"}})).executed
    await app.engine.wait_idle()

    [call] = [c for c in standin.calls if c["path"].endswith("/loader/backfill")]
    assert call["json"] == {"from_offset": 500, "reason": "lag"}
    edited = [json.loads(row[6]) for row in [r async for r in app.store.audit_rows(task.id)]
              if row[3] == "step.edited"]
    assert edited == [{"step": "backfill", "diff": {"json.from_offset": {"from": 1000, "to": 500}}}]


async def test_an_edit_after_someone_else_approved_is_refused(tmp_path):
    """With two approvals required, the second approver cannot change what the first approved."""
    policy = {**POLICY["policy"], "tiers": {2: {"approvals_required": 2, "approver_roles": ["oncall", "sre-lead"]},
                                            4: POLICY["policy"]["tiers"][4]}}
    overrides = {"policy": policy, "playbooks_dir": str(write_playbooks(tmp_path))}
    async with running_standin() as standin, running_app(tmp_path, standin, overrides) as app:
        task = await planned(app, "throttle", RUNNER)
        assert not (await app.commands.approve(task.id, ONCALL)).executed  # the first of two

        with pytest.raises(Conflict, match="already approved by On-call as proposed"):
            await app.commands.approve(task.id, LEAD, edits={"throttle": {"rollout": 30}})
        step = (await app.store.steps_of_task(task.id, "step"))[0]
        assert step.params["rollout"] == 50 and [a.actor for a in await app.store.approvals_of_task(task.id)] == [
            "oncall"]

        assert (await app.commands.approve(task.id, LEAD)).executed  # as proposed
        await app.engine.wait_idle()
    production = standin.flags["throttle-checkout"]["environments"][1]
    assert production["strategies"][0]["parameters"]["rollout"] == "50"


async def test_critical_risk_needs_the_confirmation_phrase(env):
    app, standin = env
    task = await planned(app, "restart-global", RUNNER, env="prod", dep="core")
    proposal = await app.commands.show(task.id)
    assert proposal.risk.band.value == "critical"

    await app.commands.approve(task.id, LEAD, confirmation=f"approve {task.id}")  # first of two
    with pytest.raises(ConfirmationRequired) as asked:
        await app.commands.approve(task.id, LEAD_2)
    assert asked.value.phrase == f"approve {task.id}"
    assert f"approve {task.id}" in str(asked.value)
    with pytest.raises(ConfirmationRequired):
        await app.commands.approve(task.id, LEAD_2, confirmation="approve 999999")
    assert restarts(standin, "core") == []

    result = await app.commands.approve(task.id, LEAD_2, confirmation=f"  APPROVE {task.id} ")
    await app.engine.wait_idle()
    assert result.executed
    assert len(restarts(standin, "core")) == 1


async def test_a_decided_task_cannot_be_approved_again(env):
    app, standin = env
    task = await planned(app, "throttle", RUNNER, flag="new-search")
    await app.commands.reject(task.id, ONCALL, "not during the sale")
    with pytest.raises(Conflict, match="already decided: it is rejected"):
        await app.commands.approve(task.id, LEAD)
    assert standin.flags["new-search"]["environments"][1]["strategies"][0]["parameters"]["rollout"] == "25"


async def test_an_escalated_task_can_be_rejected_with_a_reason(tmp_path):
    """A task the kill switch escalated is for a person to decide: rejecting it ends it as rejected
    (it used to raise an illegal transition, a 500 at the API)."""
    admin = Actor(id="admin", display="Admin", roles=frozenset({"admin", "sre-lead", "oncall"}), via="api")
    async with running_standin() as standin, running_app(tmp_path, standin) as app:
        await app.commands.pause(admin, "drill")
        task = await app.commands.run_playbook("http-5xx-ratio", {"service": "checkout"}, RUNNER)
        await app.engine.wait_idle()
        assert (await app.store.get_task(task.id)).state is TaskState.escalated_to_human
        await app.commands.reject(task.id, admin, "not during the drill")
        rejected = await app.store.get_task(task.id)
        assert rejected.state is TaskState.rejected and "not during the drill" in (rejected.outcome or "")
