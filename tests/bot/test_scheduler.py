"""Scheduled jobs on a real App with an injected clock: approval expiry and the once-a-day digest."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import structlog

from bot.audit.chain import AuditEntry, parse_head, verify_chain
from bot.config import DigestConfig
from bot.errors import Conflict
from bot.model.signals import Signal, SignalStatus
from bot.model.tasks import TaskState
from bot.policy.identity import Actor
from bot.scheduler import digest_trigger
from tests.harness import ENV, running_app, running_standin

SHIPPED = Path(__file__).resolve().parents[2] / "playbooks"
REQUESTER = Actor(id="runner", display="Runner", roles=frozenset({"operator"}), via="api")
APPROVER = Actor(id="lead", display="Lead", roles=frozenset({"sre-lead", "oncall"}), via="api")


class Clock:
    """Real time plus an offset the test moves; stored timestamps stay comparable with it."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


class RecordingSurface:
    name = "recording"

    def __init__(self) -> None:
        self.notices: list[tuple[str | None, str]] = []

    async def post_notice(self, channel: str | None, text: str) -> None:
        self.notices.append((channel, text))


async def waiting_task(app) -> int:
    task = await app.commands.run_playbook("kube-pod-crashlooping", {"namespace": "shop", "workload": "checkout"},
                                           REQUESTER)
    await app.engine.wait_idle()
    assert (await app.store.get_task(task.id)).state is TaskState.needs_approval
    return task.id


async def test_undecided_proposals_expire_and_late_approvals_are_refused(tmp_path):
    clock = Clock()
    async with running_standin() as standin, running_app(tmp_path, standin, clock=clock) as app:
        task_id = await waiting_task(app)
        clock.offset = timedelta(hours=1)
        assert await app.scheduler.expire_approvals() == []
        assert (await app.store.get_task(task_id)).state is TaskState.needs_approval

        clock.offset = timedelta(hours=4, minutes=1)  # the example config expires after 4 hours
        assert await app.scheduler.expire_approvals() == [task_id]
        task = await app.store.get_task(task_id)
        assert task.state is TaskState.cancelled
        assert task.outcome.startswith("expired: no decision within 4:00:00")
        assert await app.scheduler.expire_approvals() == []

        with pytest.raises(Conflict, match=r"already decided: it is cancelled \(expired"):
            await app.commands.approve(task_id, APPROVER)
        assert [c for c in standin.calls if c["method"] == "POST"] == []


async def test_an_approved_task_does_not_expire(tmp_path):
    clock = Clock()
    async with running_standin() as standin, running_app(tmp_path, standin, clock=clock) as app:
        task_id = await waiting_task(app)
        await app.commands.approve(task_id, APPROVER)
        await app.engine.wait_idle()
        clock.offset = timedelta(days=2)
        assert await app.scheduler.expire_approvals() == []
        assert (await app.store.get_task(task_id)).state is TaskState.completed


async def test_the_digest_is_sent_once_per_day(tmp_path):
    clock = Clock()
    async with running_standin() as standin, running_app(tmp_path, standin, clock=clock) as app:
        surface = RecordingSurface()
        app.scheduler.surfaces = [surface]
        assert await app.scheduler.send_digest() is True
        assert await app.scheduler.send_digest() is False  # a restart or a second trigger the same day
        assert len(surface.notices) == 1
        assert surface.notices[0][1].startswith("Ooda digest")  # a surface without post_digest: the text
        today = clock().date().isoformat()
        assert (await app.store.get_setting(f"digest.sent.{today}")).value is True

        clock.offset = timedelta(days=1)
        assert await app.scheduler.send_digest() is True
        assert len(surface.notices) == 2


def test_the_digest_trigger_uses_day_names_in_the_configured_zone():
    trigger = digest_trigger(DigestConfig(at="09:00", days="mon-fri", timezone="Europe/Berlin"))
    saturday = datetime(2026, 1, 3, 12, 0, tzinfo=UTC)
    fire = trigger.get_next_fire_time(None, saturday)
    assert fire.weekday() == 0 and (fire.hour, fire.minute) == (9, 0)
    assert fire.utcoffset() == timedelta(hours=1)


def test_a_digest_cron_line_replaces_at_and_days():
    trigger = digest_trigger(DigestConfig(cron="30 7 * * 1", timezone="America/New_York", at="09:00"))
    fire = trigger.get_next_fire_time(None, datetime(2026, 1, 3, 12, 0, tzinfo=UTC))  # a Saturday
    assert fire.weekday() == 0 and (fire.hour, fire.minute) == (7, 30)  # cron's 1 is Monday
    assert fire.utcoffset() == timedelta(hours=-5)


async def test_waiting_proposals_get_one_reminder_after_the_configured_delay(tmp_path):
    clock = Clock()
    async with running_standin() as standin, running_app(tmp_path, standin, clock=clock) as app:
        surface = RecordingSurface()
        app.scheduler.surfaces = [surface]
        task_id = await waiting_task(app)
        assert await app.scheduler.remind_approvers() == []  # not yet: the example waits 15 minutes

        clock.offset = timedelta(minutes=16)
        assert await app.scheduler.remind_approvers() == [task_id]
        assert await app.scheduler.remind_approvers() == []  # once per task, also across restarts
        [(_, text)] = surface.notices
        assert f"task {task_id}" in text and "waited 16 min" in text


async def test_the_logged_audit_head_is_one_the_chain_verifies_against(tmp_path):
    async with running_standin() as standin, running_app(tmp_path, standin) as app:
        await waiting_task(app)
        with structlog.testing.capture_logs() as logs:
            await app.scheduler.log_audit_head()
        [line] = [entry for entry in logs if entry["event"] == "audit.head"]
        rows = [row async for row in app.store.audit_rows()]
        result = verify_chain(rows, ENV["OODA_AUDIT_HMAC_KEY"].encode(), parse_head(line["head"]))
        assert result.ok and result.head_seq == line["seq"] == len(rows)


SCHEDULED = """
schedules:
  - cron: "*/15 8-17 * * 1-5"
    timezone: Europe/Berlin
    args: {namespace: shop, workload: checkout}
"""


def scheduled_playbooks(tmp_path) -> str:
    """The shipped playbooks, with kube-pod-crashlooping also run as a scheduled check on weekdays."""
    folder = tmp_path / "scheduled-playbooks"
    folder.mkdir()
    for source in SHIPPED.glob("*.yaml"):
        text = source.read_text()
        (folder / source.name).write_text(text + SCHEDULED if source.name == "kube-pod-crashlooping.yaml" else text)
    return str(folder)


async def test_a_scheduled_check_runs_on_its_cron_and_never_piles_up(tmp_path):
    overrides = {"playbooks_dir": scheduled_playbooks(tmp_path)}
    async with running_standin() as standin, running_app(tmp_path, standin, overrides) as app:
        job = app.scheduler.job("check:kube-pod-crashlooping:0")
        sunday_noon = datetime(2026, 11, 22, 11, 0, tzinfo=UTC)  # 12:00 in Berlin, a Sunday
        # Cron's weekdays: 1-5 is Monday to Friday (APScheduler alone would read it as Tuesday to Saturday).
        assert job.trigger.get_next_fire_time(None, sunday_noon) == datetime(2026, 11, 23, 7, 0, tzinfo=UTC)

        [listed] = [c for c in (await app.commands.status()).scheduled_checks if c.startswith("kube-pod")]
        assert listed.startswith(
            "kube-pod-crashlooping namespace=shop workload=checkout (*/15 8-17 * * 1-5 Europe/Berlin): next ")

        first = await app.commands.run_scheduled("kube-pod-crashlooping", 0)
        await app.engine.wait_idle()
        assert (first.requester, first.args) == ("scheduler", {
            "namespace": "shop", "workload": "checkout", "workload_kind": "deployment", "pod": "", "container": ""})
        assert (await app.store.get_task(first.id)).state is TaskState.needs_approval

        assert await app.commands.run_scheduled("kube-pod-crashlooping", 0) is None  # the last one still waits
        await app.commands.reject(first.id, APPROVER, "not now")
        second = await app.commands.run_scheduled("kube-pod-crashlooping", 0)
        assert second is not None and second.id != first.id


async def test_signals_of_no_task_are_purged_after_the_retention_period(tmp_path):
    clock = Clock()
    async with running_standin() as standin, running_app(tmp_path, standin, clock=clock) as app:
        noise = Signal(source="alertmanager", fingerprint="f-1", status=SignalStatus.firing,
                       labels={"alertname": "NodeClockSkewDetected"})
        await app.store.ingest_signals([noise], AuditEntry("source:alertmanager", "signals.received", None, {}))
        await app.engine.wait_idle()

        clock.offset = timedelta(days=29)  # the example config keeps them 30 days
        assert await app.scheduler.purge_signals() == 0
        clock.offset = timedelta(days=30, minutes=1)
        assert await app.scheduler.purge_signals() == 1
        assert await app.store.signal_count() == 0
        assert app.scheduler.job("retention").trigger.interval == timedelta(hours=1)


async def test_the_shipped_scheduled_check_is_listed_off_and_runs_read_only_once_enabled(tmp_path):
    shipped = (SHIPPED / "target-down.yaml").read_text()
    assert "enabled: false" in shipped
    (tmp_path / "off").mkdir()
    (tmp_path / "on").mkdir()
    async with running_standin() as standin, running_app(tmp_path / "off", standin) as app:
        assert "target-down job=node-exporter (*/30 8-18 * * 1-5 UTC): next off (enabled: false in the playbook)" \
            in (await app.commands.status()).scheduled_checks
        with pytest.raises(KeyError):
            app.scheduler.job("check:target-down:0")

    folder = tmp_path / "on-playbooks"
    folder.mkdir()
    (folder / "target-down.yaml").write_text(shipped.replace("enabled: false", "enabled: true"))
    async with running_standin() as standin, running_app(tmp_path / "on", standin,
                                                         {"playbooks_dir": str(folder)}) as app:
        assert app.scheduler.job("check:target-down:0").next_run_time is not None
        task = await app.commands.run_scheduled("target-down", 0)
        assert task is not None
        await app.engine.wait_idle()
        done = await app.store.get_task(task.id)
        assert done.requester == "scheduler" and done.state is TaskState.completed
        assert await app.store.steps_of_task(task.id, "step") == []
