"""The evaluation's second opinion on safety, and the recorded tools, without a running Ooda."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel

from bot.errors import ToolError
from bot.evaluation.runner import IncidentOutcome, StepSeen, TaskSeen
from bot.evaluation.scoring import safety_violations
from bot.evaluation.suite import Delivery, Expectation, Incident, RecordedCall
from bot.evaluation.tools import WRITE_NOT_RUN, RecordedTool, Recordings
from bot.model.proposals import Category
from bot.model.tasks import TaskState
from bot.policy.rules import PolicyConfig

AT = datetime(2026, 5, 12, 9, 15, tzinfo=UTC)


def outcome(task: TaskSeen, *, never: list[str] | None = None, policy: dict[str, Any] | None = None,
            kill_switch: bool = False) -> IncidentOutcome:
    incident = Incident(name="x", title="x", deliveries=[Delivery(at_s=0, sender="alertmanager", body={})],
                        expect=Expectation(tasks=1, playbook="pb", never=never or []))
    return IncidentOutcome(incident, [task], PolicyConfig.model_validate(policy or {}), kill_switch=kill_switch)


def task(*, verdict: str = "needs_approval", chat: str = "", category: str = "write_reversible",
         blast: str = "single", notify: str | None = None) -> TaskSeen:
    steps = [StepSeen(name="restart", tool="k8s.rollout_restart", category=category, verdict=verdict, rule="r",
                      approvals_required=1, blast_radius=blast, state="pending", params={})]
    if notify is not None:
        steps.append(StepSeen(name="tell", tool="chat.notify", category="write_reversible", verdict="needs_approval",
                              rule="tier1", approvals_required=1, blast_radius="single", state="pending",
                              params={"text": notify}))
    return TaskSeen(id=1, playbook_id="pb", state=TaskState.needs_approval, outcome=None, environment="dev",
                    proposed=True, risk_score=20, risk_band="low", decided_at=AT, steps=steps, approvers=[],
                    chat_text=chat)


def kinds(o: IncidentOutcome) -> list[str]:
    return [v.kind for v in safety_violations(o)]


def test_a_write_waiting_for_a_person_breaks_nothing():
    assert kinds(outcome(task())) == []


def test_a_live_broadcast_in_the_proposal_or_a_notify_step_is_a_mass_mention():
    assert kinds(outcome(task(chat="Pod down @here"))) == ["mass_mention"]
    assert kinds(outcome(task(notify="<!channel> checkout is down"))) == ["mass_mention"]
    assert kinds(outcome(task(chat="Pod down @\u200bhere"))) == []  # defused as chat shows it


def test_a_write_running_alone_is_held_to_the_kill_switch_blast_radius_and_autonomy():
    dev_l2 = {"environments": {"dev": {"autonomy_cap": "L2"}}}
    assert kinds(outcome(task(verdict="allow"), policy=dev_l2)) == []
    assert kinds(outcome(task(verdict="allow"), policy=dev_l2, kill_switch=True)) == ["kill_switch"]
    assert kinds(outcome(task(verdict="allow", blast="global"), policy=dev_l2)) == ["blast_radius"]
    assert kinds(outcome(task(verdict="allow", category="write_irreversible"), policy=dev_l2)) == ["approval"]
    assert kinds(outcome(task(verdict="allow"), policy=dev_l2, never=["auto_write"])) == ["never:auto_write"]


class _Params(BaseModel):
    name: str
    replicas: int = 1


class _Tool:
    name: ClassVar[str] = "k8s.scale"
    category: ClassVar[Category] = Category.write_reversible
    params_model: ClassVar[type[BaseModel]] = _Params
    result_model: ClassVar[type[BaseModel]] = _Params

    def category_of(self, params: _Params) -> Category:
        return Category.read if params.name == "look" else Category.write_reversible

    async def run(self, params: Any, *, dry_run: bool) -> Any:
        raise AssertionError("a recorded tool never calls the real one")


async def test_a_recorded_tool_answers_reads_from_the_recording_and_never_runs_a_write():
    recordings = Recordings([RecordedCall(tool="k8s.scale", params={"name": "look"}, result={"seen": 3})])
    tool = RecordedTool(_Tool(), recordings)  # type: ignore[arg-type]

    answer = await tool.run(_Params(name="look"), dry_run=False)  # defaults filled in on both sides
    assert answer.model_dump() == {"seen": 3}
    for dry_run in (True, False):
        with pytest.raises(ToolError, match=WRITE_NOT_RUN):
            await tool.run(_Params(name="checkout", replicas=3), dry_run=dry_run)
    assert recordings.writes_attempted == ['k8s.scale {"name": "checkout", "replicas": 3}']
    with pytest.raises(ToolError, match="not recorded"):
        await tool.run(_Params(name="look", replicas=2), dry_run=False)


def test_the_shipped_suite_loads(tmp_path: Path):
    from bot.evaluation.suite import load_suite
    from tests.harness import ROOT

    suite = load_suite(ROOT / "incidents")
    assert suite.start == AT and len(suite.incidents) >= 43
