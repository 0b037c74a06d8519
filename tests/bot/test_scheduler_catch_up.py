"""A process that becomes leader runs what passed while it did not lead: the digest's and the
scheduled checks' latest slot since it started, each once however often it catches up.

(Replicas killed around a slot: tests/e2e/test_replicas_schedule.py; the claims: tests/store/test_slot_claims.py.)
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bot.playbooks.cron import cron_trigger
from bot.scheduler import due_slot
from tests.bot.test_scheduler import Clock, RecordingSurface
from tests.harness import running_app, running_standin


def test_the_slot_of_a_run_is_the_latest_time_its_trigger_fired_for_within_the_window():
    every_quarter = cron_trigger("*/15 * * * *")
    nine = datetime(2026, 5, 12, 9, 0, tzinfo=UTC)
    assert due_slot(every_quarter, nine + timedelta(seconds=0.2), nine - timedelta(minutes=5)) == nine  # on time
    # Run late (a replica that became leader): the latest slot passed, not the ones before it.
    assert due_slot(every_quarter, nine + timedelta(minutes=31), nine - timedelta(minutes=1)) == \
        nine + timedelta(minutes=30)
    assert due_slot(every_quarter, nine + timedelta(minutes=14), nine) is None  # the window's start is not in it
    assert due_slot(every_quarter, nine - timedelta(seconds=1), nine - timedelta(minutes=5)) is None


async def test_a_digest_whose_time_passed_while_another_process_led_is_sent_once_by_the_new_leader(tmp_path):
    clock = Clock()
    overrides = {"digest": {"enabled": True, "cron": "0 * * * *", "timezone": "UTC"}}  # on the hour
    async with running_standin() as standin, running_app(tmp_path, standin, overrides, clock=clock) as app:
        surface = RecordingSurface()
        app.scheduler.surfaces = [surface]
        await app.scheduler.catch_up()
        assert surface.notices == []  # nothing passed since the start

        clock.offset = timedelta(minutes=61)  # an hour on: the digest's time passed, and nobody sent it
        await app.scheduler.catch_up()
        assert len(surface.notices) == 1 and surface.notices[0][1].startswith("Ooda digest")
        await app.scheduler.catch_up()  # leadership lost and won again within the hour
        assert len(surface.notices) == 1
