"""Quorum per step, not per task: each step needs what its own tier needs.

A proposal with a tier-3 step (a throttle flag, one approval from oncall or sre-lead) before a
tier-4 step (an irreversible restart, two different sre-leads): an on-call engineer's approval
runs the throttle at once, counts for nothing on the restart, and the restart waits for two
sre-leads. Before, the whole proposal needed the strictest step's quorum and refused the on-call
engineer outright.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.chat import wording
from bot.errors import Forbidden
from bot.model.tasks import TaskState
from bot.policy.identity import Actor
from tests.harness import running_app, running_standin

PLAYBOOK = """
id: throttle-then-restart
version: "1"
description: Throttle the service, then restart it.
args:
  env: {default: dev, pattern: "dev|staging|prod"}
steps:
  - name: throttle
    tool: flags.set
    params: {flag: throttle-checkout, enabled: true, rollout: 50}
    category: write_reversible
    blast_radius: service
  - name: restart
    tool: http.request
    params:
      method: POST
      url: "{{ vars.platform_api }}/platform/workloads/shop/checkout/restart"
      expect_status: [200]
    category: write_irreversible
    blast_radius: single
autonomy_cap: L1
"""
POLICY = {"policy": {
    "change_windows": {"prod-changes": {"environments": ["nowhere"]}},
    # Every reversible write is tier 3 and every irreversible one tier 4, whatever the risk band.
    "tier_map": {"write_reversible": {b: 3 for b in ("low", "medium", "high", "critical")},
                 "write_irreversible": {b: 4 for b in ("low", "medium", "high", "critical")}},
    "rate_limits": {"tools": {"flags.set": {"max": 100, "per_s": 3600}}},
}}
RUNNER = Actor(id="runner", display="Runner", roles=frozenset({"operator"}), via="api")
ONCALL = Actor(id="oncall", display="On-call", roles=frozenset({"oncall"}), via="api")
LEAD = Actor(id="lead", display="Lead", roles=frozenset({"sre-lead"}), via="api")
LEAD_2 = Actor(id="lead-2", display="Lead two", roles=frozenset({"sre-lead"}), via="api")


@pytest.fixture
async def env(tmp_path: Path):
    folder = tmp_path / "playbooks"
    folder.mkdir()
    (folder / "throttle-then-restart.yaml").write_text(PLAYBOOK)
    async with running_standin() as standin, \
            running_app(tmp_path, standin, {**POLICY, "playbooks_dir": str(folder)}) as app:
        yield app, standin


def restarts(standin) -> list[dict]:
    return [c for c in standin.calls if c["method"] == "POST" and c["path"].endswith("/checkout/restart")]


async def test_a_tier_three_step_needs_what_tier_three_needs_beside_a_tier_four_step(env):
    app, standin = env
    task = await app.commands.run_playbook("throttle-then-restart", {}, RUNNER)
    await app.engine.wait_idle()
    proposal = await app.commands.show(task.id)
    assert [s.decision.rule for s in proposal.steps] == ["tier3", "tier4"]
    assert "1 of" not in wording.approvals_line(proposal)
    assert wording.approvals_line(proposal) == (
        "Approvals: 0 of 1 · needs 1 more from sre-lead or oncall · step 2: 0 of 2 from sre-lead")

    # One on-call approval is the throttle's whole quorum: it runs now; the restart waits.
    first = await app.commands.approve(task.id, ONCALL)
    assert first.executed
    await app.engine.wait_idle()
    proposal = await app.commands.show(task.id)
    assert proposal.state == "needs_approval"
    assert [s.state for s in proposal.steps] == ["succeeded", "pending"]
    assert proposal.steps[1].approved_by == []  # the on-call approval does not count for tier 4
    assert wording.approvals_line(proposal) == "Approvals: 0 of 2 · needs 2 more from sre-lead"
    assert restarts(standin) == []

    # The restart is tier 4 alone now: the on-call engineer cannot approve it, two sre-leads must.
    with pytest.raises(Forbidden, match="sre-lead"):
        await app.commands.approve(task.id, ONCALL)
    assert not (await app.commands.approve(task.id, LEAD)).executed
    assert wording.approvals_line(await app.commands.show(task.id)) == (
        "Approvals: 1 of 2: Lead · needs 1 more from sre-lead")
    assert (await app.commands.approve(task.id, LEAD_2)).executed
    await app.engine.wait_idle()
    assert (await app.store.get_task(task.id)).state is TaskState.completed
    assert len(restarts(standin)) == 1


THROTTLE = """
id: throttle
version: "1"
description: Throttle a service with a flag.
args:
  env: {default: dev, pattern: "dev|staging|prod"}
steps:
  - name: throttle
    tool: flags.set
    params: {flag: throttle-checkout, enabled: true, rollout: 50}
    category: write_reversible
    blast_radius: service
    editable:
      rollout: {type: int, min: 10, max: 100}
autonomy_cap: L1
"""


async def test_an_edit_that_waits_for_another_approver_shows_the_dry_run_of_the_edited_values(tmp_path: Path):
    folder = tmp_path / "playbooks"
    folder.mkdir()
    (folder / "throttle.yaml").write_text(THROTTLE)
    policy = {"policy": {**POLICY["policy"], "tier_map": {"write_reversible": {
        b: 4 for b in ("low", "medium", "high", "critical")}}}}
    async with running_standin() as standin, \
            running_app(tmp_path, standin, {**policy, "playbooks_dir": str(folder)}) as app:
        task = await app.commands.run_playbook("throttle", {}, RUNNER)
        await app.engine.wait_idle()
        before = (await app.commands.show(task.id)).steps[0].dry_run
        assert before is not None and before.endswith("to on, rollout 50%")

        result = await app.commands.approve(task.id, LEAD, edits={"throttle": {"rollout": 30}})
        assert not result.executed  # tier 4: a second sre-lead is needed
        step = (await app.commands.show(task.id)).steps[0]
        assert step.params["rollout"] == 30
        assert step.dry_run is not None and step.dry_run.endswith("to on, rollout 30%"), step.dry_run
        assert "dry run: would change flag throttle-checkout (production) from off, rollout 0% to on, rollout 30%" \
            in wording.proposal_text(await app.commands.show(task.id), full=True)
