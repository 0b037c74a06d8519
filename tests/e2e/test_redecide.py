"""A task that gains signals is decided again, through the real App: a crash-loop storm arriving in
two webhooks ends with one proposal that counts every pod and scores them, while a plan someone
already approved stands. Same playbook and helpers as the resolution tests.
"""

from __future__ import annotations

import asyncio

import pytest
from structlog.testing import capture_logs

from bot.errors import Conflict
from bot.model import events as ev
from bot.model.tasks import TaskState
from bot.policy.identity import Actor
from tests.e2e.test_resolution import (
    ONCALL,
    POLICY,
    RESTART,
    app_with,
    crashloop,
    deliver,
    restarts,
    the_task,
    write_playbook,
)
from tests.harness import client, running_standin

LEAD = Actor(id="lead", display="Lead", roles=frozenset({"sre-lead"}), via="api")
PODS = [f"checkout-6f9c7b8d5-{suffix}" for suffix in ("x7k2p", "q9wzt", "b4m8r", "h2n6v", "k8s5d")]


def targets(proposal) -> str:
    return next(f.detail for f in proposal.risk.factors if f.name == "targets")


@pytest.fixture
def overrides(tmp_path):
    return {**POLICY, "playbooks_dir": str(write_playbook(tmp_path))}


async def test_a_storm_in_two_webhooks_is_decided_again_once_with_the_higher_count_and_risk(tmp_path, overrides):
    async with running_standin() as standin, app_with(tmp_path, standin, overrides) as (app, chat), \
            client(app) as http:
        await deliver(app, http, [crashloop(pod) for pod in PODS[:2]])
        task = await the_task(app)
        first = await app.commands.show(task.id)
        assert first.state == "needs_approval" and first.signal_count == 2 and "2 signal(s)" in first.summary
        [first_step] = await app.store.steps_of_task(task.id, "step")

        await deliver(app, http, [crashloop(pod) for pod in PODS[2:]])
        task = await app.store.get_task(task.id)
        again = await app.commands.show(task.id)
        assert task.state is TaskState.needs_approval and task.signal_count == 5
        assert again.signal_count == 5 and "5 signal(s)" in again.summary
        assert targets(first) == "2 targets" and targets(again) == "5 targets"
        assert again.risk.score > first.risk.score

        redecided = [e for e in await app.store.events_of_task(task.id) if e.name == ev.REDECIDED]
        assert len(redecided) == 1
        note = f"3 more alerts joined; risk {first.risk.score} → {again.risk.score}"
        assert redecided[0].payload["note"] == note
        assert note in chat.notes(task.id)
        assert chat.last(task.id).signal_count == 5

        # The pending step was replaced, not duplicated; idempotency keys stay unique.
        steps = await app.store.steps_of_task(task.id)
        [step] = [s for s in steps if s.kind == "step"]
        assert step.id != first_step.id and step.state == "pending"
        assert step.idempotency_key == first_step.idempotency_key
        assert len({s.idempotency_key for s in steps}) == len(steps)
        audited = [row[3] async for row in app.store.audit_rows(task.id)]
        assert audited.count("task.proposal") == 2

        # A redelivery of the storm is not news: nothing is decided again.
        await deliver(app, http, [crashloop(pod) for pod in PODS])
        assert [e.name for e in await app.store.events_of_task(task.id)].count(ev.REDECIDED) == 1

        assert (await app.commands.approve(task.id, ONCALL)).executed
        await app.engine.wait_idle()
        assert (await app.store.get_task(task.id)).state is TaskState.completed
        assert len(restarts(standin)) == 1


async def test_after_one_approval_the_plan_stands_and_a_note_says_so(tmp_path):
    # Two approvers for tier 3, so the task still waits after the first one.
    policy = {**POLICY["policy"], "tiers": {3: {"approvals_required": 2, "approver_roles": ["oncall", "sre-lead"]}}}
    overrides = {"policy": policy, "playbooks_dir": str(write_playbook(tmp_path))}
    async with running_standin() as standin, app_with(tmp_path, standin, overrides) as (app, chat), \
            client(app) as http:
        await deliver(app, http, [crashloop(PODS[0])])
        task = await the_task(app)
        proposal = await app.commands.show(task.id)
        assert proposal.steps[0].decision.rule == "tier3" and proposal.approvals_required == 2
        assert not (await app.commands.approve(task.id, ONCALL)).executed
        [step] = await app.store.steps_of_task(task.id, "step")

        await deliver(app, http, [crashloop(pod) for pod in PODS[1:4]])
        task = await app.store.get_task(task.id)
        assert task.state is TaskState.needs_approval and task.signal_count == 4
        assert task.proposal["signal_count"] == 1 and task.proposal["risk"] == proposal.risk.model_dump(mode="json")
        assert await app.store.steps_of_task(task.id, "step") == [step]
        names = [e.name for e in await app.store.events_of_task(task.id)]
        assert ev.REDECIDED not in names and names.count(ev.PLAN_STANDS) == 1
        note = "3 more alerts joined after the first approval; the approved plan stands"
        assert note in chat.notes(task.id)

        assert (await app.commands.approve(task.id, LEAD)).executed
        await app.engine.wait_idle()
        assert (await app.store.get_task(task.id)).state is TaskState.completed
        assert len(restarts(standin)) == 1


async def test_an_approval_racing_with_more_alerts_approves_one_plan_and_runs_it_once(tmp_path, overrides):
    workloads = [f"cart{n}" for n in range(4)]
    async with running_standin() as standin, app_with(tmp_path, standin, overrides) as (app, _), \
            client(app) as http:
        await deliver(app, http, [crashloop(f"{w}-6f9c7b8d5-x7k2p") for w in workloads])
        for w in workloads:
            task = await the_task(app, w)
            more = [crashloop(f"{w}-6f9c7b8d5-{suffix}") for suffix in ("q9wzt", "b4m8r")]
            _, approval = await asyncio.gather(deliver(app, http, more), app.commands.approve(task.id, ONCALL),
                                               return_exceptions=True)
            await app.engine.wait_idle()
            task = await app.store.get_task(task.id)
            assert len(await app.store.steps_of_task(task.id, "step")) == 1
            if isinstance(approval, BaseException):
                # It read the plan, then the plan was replaced before its transaction: refused, nothing kept.
                assert isinstance(approval, Conflict) and "changed a moment ago" in str(approval), approval
                assert task.state is TaskState.needs_approval and await app.store.approvals_of_task(task.id) == []
                assert restarts(standin, w) == []
            else:
                # Either the approval came first (the plan stands) or the new plan was there to approve.
                assert approval.executed and task.state is TaskState.completed
                assert len(restarts(standin, w)) == 1


async def test_a_plan_that_cannot_be_decided_logs_a_warning_with_the_error(tmp_path):
    broken = RESTART.replace("{{ labels.workload }}/restart", "{{ labels.node }}/restart")
    overrides = {**POLICY, "playbooks_dir": str(write_playbook(tmp_path, broken))}
    async with running_standin() as standin, app_with(tmp_path, standin, overrides) as (app, _), \
            client(app) as http:
        with capture_logs() as logs:
            await deliver(app, http, [crashloop(PODS[0])])
        task = await the_task(app)
    assert task.state is TaskState.escalated_to_human and task.outcome.startswith("planning failed: ")
    [warning] = [e for e in logs if e["event"] == "task.planning_failed"]
    assert warning["log_level"] == "warning"
    assert warning["task_id"] == task.id and warning["playbook"] == "pod-crashloop"
    assert "node" in warning["error"] and warning["error"] in task.outcome
    assert restarts(standin) == []
