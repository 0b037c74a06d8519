"""An alert still or again firing after its task completed is never absorbed silently.

Within the playbook's cooldown the task's thread gets one notice ("fired again at …, cooldown
until …"); once the cooldown has passed the next firing opens a new task. Through the real App,
with the crash-looping playbook and helpers of test_resolution (cooldown 600 s).
"""

from __future__ import annotations

from datetime import timedelta

from bot.model import events as ev
from bot.model.tasks import TaskState
from tests.e2e.test_resolution import (
    ONCALL,
    Clock,
    app_with,
    crashloop,
    deliver,
    event_names,
    overrides,  # noqa: F401  (the fixture)
    the_task,
)
from tests.harness import client, running_standin

POD = "checkout-6f9c7b8d5-x7k2p"


async def test_a_completed_task_whose_alert_keeps_firing_gets_one_notice_then_a_new_task(tmp_path, overrides):  # noqa: F811
    clock = Clock()
    async with running_standin() as standin, app_with(tmp_path, standin, overrides, clock) as (app, chat), \
            client(app) as http:
        await deliver(app, http, [crashloop(POD)])
        task = await the_task(app)
        assert (await app.commands.approve(task.id, ONCALL)).executed
        await app.engine.wait_idle()
        assert (await app.store.get_task(task.id)).state is TaskState.completed

        # Alertmanager repeats the still-firing alert 5 minutes later, inside the 600 s cooldown.
        clock.offset = timedelta(minutes=5)
        await deliver(app, http, [crashloop(POD)])
        assert [t.id for t in await app.store.list_tasks(open_only=False)] == [task.id]
        notes = [n for n in chat.notes(task.id) if "still firing" in n]
        assert len(notes) == 1, chat.notes(task.id)
        assert notes[0].startswith("1 alert (KubePodCrashLooping) is still firing at ")
        assert "after this task was completed" in notes[0]
        assert "cooldown until " in notes[0] and "a firing after that opens a new task" in notes[0]

        # Further repeats within the cooldown say nothing more.
        await deliver(app, http, [crashloop(POD)])
        assert (await event_names(app, task.id)).count(ev.SIGNALS_REFIRED) == 1

        # Past the cooldown the alert fires again (a new startsAt): a new task, waiting for a person.
        clock.offset = timedelta(minutes=20)
        await deliver(app, http, [crashloop(POD, started="2026-01-05T15:00:00Z")])
        tasks = await app.store.list_tasks(open_only=False)
        assert [t.id for t in tasks][1:] == [task.id]
        assert tasks[0].state is TaskState.needs_approval and tasks[0].signal_count == 1

        # Its repeats are redeliveries of the new task, not more tasks.
        await deliver(app, http, [crashloop(POD, started="2026-01-05T15:00:00Z")])
        assert len(await app.store.list_tasks(open_only=False)) == 2
