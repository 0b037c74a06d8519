"""Replay: a new version of a playbook against incidents its old version handled, through the
real App and API. Replay must call no tool and change nothing but one audit record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.errors import ConfigError, UnknownTask
from bot.loop.replay import ReplayedProposal, ReplayedStep, compare
from bot.model.tasks import TaskState
from bot.policy.identity import Actor
from tests.harness import running_app, running_standin

SHIPPED = Path(__file__).resolve().parents[2] / "playbooks" / "kube-pod-crashlooping.yaml"
AUTHOR = Actor(id="author", display="Author", roles=frozenset({"operator"}), via="api")
STEP = """    description: Rolling restart of the workload (as `kubectl rollout restart` does)
    params: {namespace: "{{ labels.namespace }}", kind: "{{ labels.workload_kind }}", name: "{{ labels.workload }}"}"""
RUNNER = Actor(id="runner", display="Runner", roles=frozenset({"operator"}), via="api")


def version(text: str, **swaps: str) -> dict[str, str]:
    """The shipped crash-loop playbook with some lines replaced, as ``ooda replay`` sends it."""
    for old, new in swaps.items():
        assert old in text, old
        text = text.replace(old, new)
    return {"kube-pod-crashlooping.yaml": text}


@pytest.fixture
async def env(tmp_path):
    async with running_standin() as standin, running_app(tmp_path, standin) as app:
        task = await app.commands.run_playbook("kube-pod-crashlooping", {"namespace": "shop", "workload": "checkout"},
                                               RUNNER)
        await app.engine.wait_idle()
        assert (await app.store.get_task(task.id)).state is TaskState.needs_approval
        yield app, standin, task.id


def policy_decisions(metrics: bytes) -> list[str]:
    return [line for line in metrics.decode().splitlines() if line.startswith("ooda_policy_decisions_total")]


async def replayed(app, files, **kwargs):
    return await app.commands.replay(files, AUTHOR, **kwargs)


async def test_the_same_version_replays_to_the_same_proposal_and_calls_no_tool(env):
    app, standin, task_id = env
    calls, steps = len(standin.calls), len(await app.store.steps_of_task(task_id))
    decisions = app.core.metrics.render()

    [result] = await replayed(app, version(SHIPPED.read_text()))

    assert (result.task_id, result.triggered, result.condition_met, result.error) == (task_id, True, True, None)
    assert result.changes == [] and result.missing_evidence == []
    assert [s.name for s in result.new.steps] == ["restart"] and result.new.state == "needs_approval"
    assert result.new.steps[0].params == result.old.steps[0].params
    assert len(standin.calls) == calls  # the recorded evidence stood in for the evidence call
    assert len(await app.store.steps_of_task(task_id)) == steps
    assert (await app.store.get_task(task_id)).state is TaskState.needs_approval
    assert policy_decisions(app.core.metrics.render()) == policy_decisions(decisions)  # a what-if is not counted
    [record] = [json.loads(row[6]) async for row in app.store.audit_rows() if row[3] == "playbooks.replayed"]
    assert record == {"playbooks": {"kube-pod-crashlooping": "1"}, "tasks": [task_id], "changed": []}


async def test_a_changed_step_shows_as_a_diff_of_its_params(env):
    app, _, _ = env
    files = version(SHIPPED.read_text(), **{'version: "1"': 'version: "2"',
                                            STEP: STEP.replace('{{ labels.workload }}"}',
                                                               '{{ labels.workload }}-canary"}')})
    [result] = await replayed(app, files)
    assert (result.old_version, result.new_version) == ("1", "2")
    [change] = result.changes
    assert change.startswith("step restart: name ") and change.endswith("-canary'")


async def test_a_new_evidence_step_is_reported_missing_and_seen_as_failed(env):
    app, _, _ = env
    files = version(SHIPPED.read_text(), **{
        "steps:\n": "  - name: logs\n    tool: http.request\n    params: {method: GET, url: \"{{ vars.platform_api }}"
                    "/logs\"}\ncondition: \"not evidence.logs.ok\"\nsteps:\n"})
    [result] = await replayed(app, files)
    assert result.missing_evidence == ["logs"] and result.condition_met is True
    assert result.changes == ["evidence not recorded for this incident: logs"]


async def test_a_condition_that_no_longer_holds_proposes_nothing(env):
    app, _, _ = env
    files = version(SHIPPED.read_text(), **{"steps:\n": "condition: \"evidence.events.ok == false\"\nsteps:\n"})
    [result] = await replayed(app, files)
    assert result.condition_met is False and result.new.state == "completed" and result.new.steps == []
    assert result.changes == ["the condition is false for this incident: nothing would be proposed"]


async def test_a_template_that_fails_on_a_past_incident_is_the_result_not_an_error(env):
    app, _, _ = env
    files = version(SHIPPED.read_text(),
                    **{STEP: STEP.replace("{{ labels.workload }}", "{{ evidence.events.nope.deeper }}")})
    [result] = await replayed(app, files)
    assert result.error and "nope" in result.error and result.new is None
    assert result.changes == [f"planning fails: {result.error}"]


async def test_broken_playbooks_name_file_and_line_and_unknown_tasks_are_refused(env):
    app, _, _ = env
    with pytest.raises(ConfigError) as broken:
        await replayed(app, version(SHIPPED.read_text(), **{"tool: k8s.rollout_restart\n    description: Rolling":
                                                             "tool: k8s.rollout_restrat\n    description: Rolling"}))
    expected = "kube-pod-crashlooping.yaml:56: steps.0.tool: unknown tool 'k8s.rollout_restrat'"
    assert any(p.startswith(expected) for p in broken.value.problems)
    with pytest.raises(UnknownTask, match="no task 999"):
        await replayed(app, version(SHIPPED.read_text()), task_ids=[999])


def test_compare_names_each_difference_once_and_risk_first():
    def step(name: str, **kw) -> ReplayedStep:
        return ReplayedStep(**{"name": name, "tool": "http.request", "category": "write_irreversible",
                               "params": {"url": "u"}, "verdict": "needs_approval", **kw})

    old = ReplayedProposal(risk_score=40, risk_band="medium", steps=[step("a"), step("b"), step("c")])
    new = ReplayedProposal(risk_score=70, risk_band="high", steps=[
        step("c"), step("a", params={"url": "v"}, verdict="deny", rule="tier4-prod"), step("d")])
    assert compare(old, new) == [
        "risk 40 medium → 70 high",
        "step b is gone",
        "step a: url 'u' → 'v'",
        "step a: needs_approval → deny (tier4-prod)",
        "step d is new (http.request, needs_approval)",
        "the steps run in another order",
    ]
    assert compare(old, old) == []


async def test_a_policy_change_is_reported_apart_from_the_playbook_change(env):
    app, _, _ = env
    await app.commands.pause(RUNNER, "drill")  # the policy changes after the task was decided

    [same] = await replayed(app, version(SHIPPED.read_text()))
    assert same.changes == []  # the playbook did not change
    assert same.policy_changes == ["step restart: needs_approval → deny (kill_switch)"]

    # A real edit under the same changed policy: each difference is reported where it comes from.
    files = version(SHIPPED.read_text(), **{'version: "1"': 'version: "2"',
                                            STEP: STEP.replace('{{ labels.workload }}"}',
                                                               '{{ labels.workload }}-canary"}')})
    [edited] = await replayed(app, files)
    [change] = edited.changes
    assert change.startswith("step restart: name ") and change.endswith("-canary'")
    assert edited.policy_changes == same.policy_changes
