"""Resolution closes the loop, through the real App: alerts that resolve before anyone acted end
their task, a resolution after the fix is recorded, a late approval is refused, a resolution and an
approval racing end in one outcome, and an alert that fires again is grouped by the cooldown rule.

The playbook is written for the test: KubePodCrashLooping (kubernetes-mixin, labels as
kube-state-metrics sets them) grouped by namespace and workload, restarting the workload on the
Standin with ``http.request``. Its autonomy cap is L1, so the restart always waits for a person.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest

from adapters.chat.discord_embeds import buttons_for
from adapters.chat.slack_blocks import proposal_buttons
from bot.app import App
from bot.errors import Conflict
from bot.loop.approvals import ClosedAsResolved
from bot.model import events as ev
from bot.model.proposals import MessageRef, Proposal
from bot.model.tasks import TaskState, clock_text
from bot.policy.identity import Actor
from demo.standin import Standin
from tests.harness import ADMIN, AM, client, running_app, running_standin

RESTART = """
id: pod-crashloop
version: "1"
description: Pods of a workload are crash-looping; restart the workload.
trigger:
  match: {alertname: KubePodCrashLooping}
  group_by: [namespace, workload]
  group_window_s: 60
  cooldown_s: 600
evidence:
  - name: events
    tool: http.request
    params:
      method: GET
      url: "{{ vars.platform_api }}/platform/workloads/{{ labels.namespace }}/{{ labels.workload }}/events"
      expect_status: [200]
steps:
  - name: restart
    tool: http.request
    params:
      method: POST
      url: "{{ vars.platform_api }}/platform/workloads/{{ labels.namespace }}/{{ labels.workload }}/restart"
      expect_status: [200]
    category: write_irreversible
    blast_radius: single
autonomy_cap: L1
"""

# The example's prod change window would make scores depend on the hour; point it elsewhere.
POLICY = {"policy": {"change_windows": {"prod-changes": {"environments": ["nowhere"]}}}}
ONCALL = Actor(id="oncall", display="On-call", roles=frozenset({"oncall"}), via="api")
STARTED = "2026-01-05T14:21:47.903Z"


class Clock:
    """Real time plus an offset the test moves forward; stored timestamps stay comparable."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


class RecordingSurface:
    """A chat surface (our ``ChatSurface`` Protocol) that keeps what the notifier sent it."""

    name: ClassVar[str] = "recording"

    def __init__(self) -> None:
        self.updates: list[tuple[Proposal, str | None]] = []

    async def post_proposal(self, proposal: Proposal, channel: str | None) -> MessageRef:
        self.updates.append((proposal, None))
        return MessageRef(surface=self.name, channel=channel or "ops", message_id=str(proposal.task_id))

    async def update_proposal(self, ref: MessageRef, proposal: Proposal, note: str | None) -> None:
        self.updates.append((proposal, note))

    async def post_notice(self, channel: str | None, text: str) -> None:
        pass

    def notes(self, task_id: int) -> list[str]:
        return [note for proposal, note in self.updates if proposal.task_id == task_id and note]

    def last(self, task_id: int) -> Proposal:
        return [proposal for proposal, _ in self.updates if proposal.task_id == task_id][-1]


def write_playbook(root: Path, text: str = RESTART) -> Path:
    folder = root / "resolution-playbooks"
    folder.mkdir(exist_ok=True)
    (folder / "pod-crashloop.yaml").write_text(text)
    return folder


@asynccontextmanager
async def app_with(tmp_path: Path, standin: Standin, overrides: dict[str, Any],
                   clock: Any = None) -> AsyncIterator[tuple[App, RecordingSurface]]:
    """The real App on the example config with only the test's playbooks, plus a recording chat
    surface."""
    async with running_app(tmp_path, standin, overrides, **({"clock": clock} if clock else {})) as app:
        surface = RecordingSurface()
        app.notifier.surfaces.append(surface)
        yield app, surface


def crashloop(pod: str, *, namespace: str = "shop", status: str = "firing", started: str = STARTED,
              ended: str | None = None) -> dict[str, Any]:
    """One KubePodCrashLooping alert as Alertmanager sends it (kubernetes-mixin rule, kube-state-metrics labels)."""
    return {
        "status": status,
        "labels": {"alertname": "KubePodCrashLooping", "namespace": namespace, "pod": pod, "container": "app",
                   "reason": "CrashLoopBackOff", "job": "kube-state-metrics", "severity": "warning"},
        "annotations": {
            "description": f'Pod {namespace}/{pod} (app) is in waiting state (reason: "CrashLoopBackOff").',
            "runbook_url": "https://runbooks.prometheus-operator.dev/runbooks/kubernetes/kubepodcrashlooping",
            "summary": "Pod is crash looping.",
        },
        "startsAt": started,
        "endsAt": ended or "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph?g0.expr=kube_pod_container_status_waiting_reason",
        "fingerprint": f"{namespace}-{pod}",
    }


def resolved(pod: str, ended: datetime, **kwargs: Any) -> dict[str, Any]:
    return crashloop(pod, status="resolved", ended=ended.isoformat().replace("+00:00", "Z"), **kwargs)


def webhook(alerts: list[dict[str, Any]]) -> dict[str, Any]:
    return {"receiver": "ooda", "status": alerts[0]["status"], "alerts": alerts,
            "groupLabels": {"namespace": alerts[0]["labels"]["namespace"]}, "commonLabels": {},
            "commonAnnotations": {}, "externalURL": "http://alertmanager:9093", "version": "4",
            "groupKey": '{}:{alertname="KubePodCrashLooping"}', "truncatedAlerts": 0}


async def deliver(app: App, http: Any, alerts: list[dict[str, Any]]) -> None:
    r = await http.post("/webhooks/alertmanager", json=webhook(alerts), headers=AM)
    assert r.status_code == 202, r.text
    await app.engine.wait_idle()
    await app.notifier.wait_idle()


def restarts(standin: Standin, workload: str = "checkout") -> list[dict[str, Any]]:
    return [c for c in standin.calls if c["method"] == "POST" and c["path"].endswith(f"/{workload}/restart")]


async def event_names(app: App, task_id: int) -> list[str]:
    return [e.name for e in await app.store.events_of_task(task_id)]


async def the_task(app: App, workload: str = "checkout"):
    tasks = [t for t in await app.store.list_tasks(open_only=False) if f'workload="{workload}"' in t.group_key]
    assert len(tasks) == 1, tasks
    return tasks[0]


@pytest.fixture
def overrides(tmp_path):
    return {**POLICY, "playbooks_dir": str(write_playbook(tmp_path))}


async def test_every_alert_resolving_before_anyone_acted_closes_the_task_and_refuses_a_late_approval(
        tmp_path, overrides):
    pods = ["checkout-6f9c7b8d5-x7k2p", "checkout-6f9c7b8d5-q9wzt"]
    async with running_standin() as standin, app_with(tmp_path, standin, overrides) as (app, chat), \
            client(app) as http:
        await deliver(app, http, [crashloop(pod) for pod in pods])
        task = await the_task(app)
        assert task.state is TaskState.needs_approval and task.signal_count == 2

        # One pod of two recovers: recorded on the task, nothing else changes.
        first_end = datetime.now(UTC) - timedelta(minutes=3)
        await deliver(app, http, [resolved(pods[0], first_end)])
        task = await app.store.get_task(task.id)
        assert task.state is TaskState.needs_approval and task.resolved_at is None
        assert ev.SIGNALS_RESOLVED in await event_names(app, task.id)
        assert ev.RESOLVED not in await event_names(app, task.id)
        assert [s.state for s in await app.store.steps_of_task(task.id, "step")] == ["pending"]

        # The other recovers too: nobody acted, so the task ends and its restart can never run.
        last_end = datetime.now(UTC) - timedelta(minutes=1)
        await deliver(app, http, [resolved(pods[1], last_end)])
        task = await app.store.get_task(task.id)
        when = clock_text(last_end)
        assert task.state is TaskState.cancelled
        assert task.outcome == f"resolved before action: every alert of this task resolved at {when}"
        assert task.resolved_at == last_end
        assert [s.state for s in await app.store.steps_of_task(task.id, "step")] == ["skipped"]
        names = await event_names(app, task.id)
        assert names.count(ev.RESOLVED) == 1 and names.count(ev.CANCELLED) == 1
        audited = [row[3] async for row in app.store.audit_rows(task.id)]
        assert "task.resolved" in audited and "task.cancelled" in audited
        assert audited.count("step.skipped") == 1  # the skip is a step move, recorded like every other
        assert names.count(ev.STEP_CHANGED) >= 1

        # The chat message now shows the closed task, with no Approve/Reject/Edit buttons to click.
        shown = chat.last(task.id)
        assert shown.state == "cancelled" and shown.outcome == task.outcome
        assert shown.steps[0].state == "skipped"
        assert [b.text.text for b in proposal_buttons(shown)] == ["Details"]
        assert [label for _, label, _ in buttons_for(shown)] == ["Details"]
        assert any("every alert of this task resolved" in note for note in chat.notes(task.id))

        # A click that arrives now is refused with the reason, in words, through every path.
        refusal = (f"task #{task.id} was closed: every alert resolved before anyone acted "
                   f"(resolved at {when}); nothing ran")
        with pytest.raises(ClosedAsResolved) as refused:
            await app.commands.approve(task.id, ONCALL)
        assert str(refused.value) == refusal
        with pytest.raises(ClosedAsResolved):
            await app.commands.approve(task.id, ONCALL, edits={"restart": {"method": "GET"}})
        with pytest.raises(ClosedAsResolved):
            await app.commands.reject(task.id, ONCALL, "too late")
        r = await http.post(f"/api/v1/tasks/{task.id}/approve", headers=ADMIN, json={})
        assert r.status_code == 409 and r.json()["message"] == refusal

        # A resolution Alertmanager sends again changes nothing more.
        await deliver(app, http, [resolved(pods[1], last_end)])
        assert (await event_names(app, task.id)).count(ev.RESOLVED) == 1

        assert restarts(standin) == []
        assert await app.store.approvals_of_task(task.id) == []
        assert (await http.get("/api/v1/audit/verify", headers=ADMIN)).json()["ok"]


async def test_a_resolution_after_the_fix_ran_is_recorded_and_changes_nothing_else(tmp_path, overrides):
    pod = "checkout-6f9c7b8d5-x7k2p"
    async with running_standin() as standin, app_with(tmp_path, standin, overrides) as (app, chat), \
            client(app) as http:
        await deliver(app, http, [crashloop(pod)])
        task = await the_task(app)
        assert (await app.commands.approve(task.id, ONCALL)).executed
        await app.engine.wait_idle()
        task = await app.store.get_task(task.id)
        assert task.state is TaskState.completed and len(restarts(standin)) == 1
        [restart] = await app.store.steps_of_task(task.id, "step")

        ended = datetime.now(UTC)
        await deliver(app, http, [resolved(pod, ended)])
        after = await app.store.get_task(task.id)
        assert after.state is TaskState.completed and after.outcome == task.outcome
        assert after.resolved_at == ended
        [event] = [e for e in await app.store.events_of_task(task.id) if e.name == ev.RESOLVED]
        assert event.payload["closed"] is False and event.payload["fix_step"] == "restart"
        assert event.payload["after_fix_s"] == pytest.approx((ended - restart.finished_at).total_seconds())
        assert event.payload["after_fix_s"] >= 0
        assert f"every alert resolved at {clock_text(ended)}" in chat.notes(task.id)[-1]
        assert "after restart ran" in chat.notes(task.id)[-1]
        assert len(restarts(standin)) == 1


async def test_an_alert_that_resolves_while_its_task_is_planned_leaves_nothing_that_can_run(tmp_path, overrides):
    pod = "checkout-6f9c7b8d5-x7k2p"
    async with running_standin() as standin, app_with(tmp_path, standin, overrides) as (app, _), \
            client(app) as http:
        # Both deliveries before the engine is waited on: the task may be queued, being planned or
        # waiting when the resolution lands; whichever, it ends cancelled with no step left pending.
        for body in (webhook([crashloop(pod)]), webhook([resolved(pod, datetime.now(UTC))])):
            assert (await http.post("/webhooks/alertmanager", json=body, headers=AM)).status_code == 202
        await app.engine.wait_idle()
        task = await the_task(app)
        assert task.state is TaskState.cancelled, task
        assert {s.state for s in await app.store.steps_of_task(task.id, "step")} <= {"skipped"}
        with pytest.raises(ClosedAsResolved):
            await app.commands.approve(task.id, ONCALL)
        assert restarts(standin) == []


@pytest.mark.parametrize("order", ["resolution first", "approval first", "together"])
async def test_a_resolution_and_an_approval_arriving_together_end_in_exactly_one_outcome(
        tmp_path, overrides, order):
    workloads = [f"cart{n}" for n in range(4)]
    async with running_standin() as standin, app_with(tmp_path, standin, overrides) as (app, _), \
            client(app) as http:
        await deliver(app, http, [crashloop(f"{w}-6f9c7b8d5-x7k2p") for w in workloads])
        tasks = {w: await the_task(app, w) for w in workloads}
        assert {t.state for t in tasks.values()} == {TaskState.needs_approval}

        async def resolve(w: str) -> None:
            body = webhook([resolved(f"{w}-6f9c7b8d5-x7k2p", datetime.now(UTC))])
            assert (await http.post("/webhooks/alertmanager", json=body, headers=AM)).status_code == 202
            await app.engine.wait_idle()

        async def approve(w: str) -> Any:
            return await app.commands.approve(tasks[w].id, ONCALL)

        for w in workloads:
            if order == "resolution first":
                await resolve(w)
                [approval] = await asyncio.gather(approve(w), return_exceptions=True)
            elif order == "approval first":
                approval = await approve(w)
                await resolve(w)
            else:
                _, approval = await asyncio.gather(resolve(w), approve(w), return_exceptions=True)
            await app.engine.wait_idle()
            task = await app.store.get_task(tasks[w].id)
            steps = await app.store.steps_of_task(task.id, "step")
            if task.state is TaskState.cancelled:
                assert isinstance(approval, Conflict), approval
                assert [s.state for s in steps] == ["skipped"]
                assert restarts(standin, w) == []
                assert await app.store.approvals_of_task(task.id) == []
            else:
                assert task.state is TaskState.completed, (order, task)
                assert approval.executed
                assert [s.state for s in steps] == ["succeeded"]
                assert len(restarts(standin, w)) == 1
                assert task.resolved_at is not None  # recorded, the run was left alone
            if order == "resolution first":
                assert task.state is TaskState.cancelled
            if order == "approval first":
                assert task.state is TaskState.completed


async def test_an_alert_firing_again_after_the_resolution_joins_within_the_cooldown_and_opens_a_task_after(
        tmp_path, overrides):
    clock = Clock()
    pod = "checkout-6f9c7b8d5-x7k2p"
    starts = (f"2026-01-05T14:{minute:02d}:00Z" for minute in itertools.count(10))
    async with running_standin() as standin, app_with(tmp_path, standin, overrides, clock) as (app, chat), \
            client(app) as http:
        await deliver(app, http, [crashloop(pod, started=next(starts))])
        first = await the_task(app)
        await deliver(app, http, [resolved(pod, datetime.now(UTC))])
        assert (await app.store.get_task(first.id)).state is TaskState.cancelled

        # Five minutes later (past the 60 s grouping window, inside the 600 s cooldown) it fires again.
        clock.offset = timedelta(minutes=5)
        again = crashloop(pod, started=next(starts))
        await deliver(app, http, [again])
        assert [t.id for t in await app.store.list_tasks(open_only=False)] == [first.id]
        closed = await app.store.get_task(first.id)
        assert closed.state is TaskState.cancelled and not closed.alerts_resolved
        [refired] = [e for e in await app.store.events_of_task(first.id) if e.name == ev.SIGNALS_REFIRED]
        note = refired.payload["note"]
        assert note.startswith("1 alert (KubePodCrashLooping) fired again at ")
        assert ", 5 min after every alert of this task resolved" in note
        assert "they join this cancelled task instead of opening a new one: cooldown until " in note
        assert "600 s after it closes" in note
        assert note in chat.notes(first.id)

        # Alertmanager repeats the firing alert: a redelivery, not a new firing.
        await deliver(app, http, [again])
        assert (await event_names(app, first.id)).count(ev.SIGNALS_REFIRED) == 1

        # It resolves and fires again long after the cooldown: a new task, waiting for a person.
        await deliver(app, http, [resolved(pod, datetime.now(UTC))])
        assert (await app.store.get_task(first.id)).alerts_resolved
        clock.offset = timedelta(hours=2)
        await deliver(app, http, [crashloop(pod, started=next(starts))])
        tasks = await app.store.list_tasks(open_only=False)
        assert [t.id for t in tasks][1:] == [first.id]
        assert tasks[0].state is TaskState.needs_approval and tasks[0].signal_count == 1
        assert (await event_names(app, first.id)).count(ev.SIGNALS_REFIRED) == 1
        assert restarts(standin) == []
