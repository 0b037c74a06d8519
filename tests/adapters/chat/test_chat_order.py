"""Thread notes and proposals go out in the order they happened, each once, after any chat outage.

The whole App with the real slack-bolt against the fake Slack: an outage (503 on every chat call)
and a storm of 429s longer than slack_sdk's own retries, while a task is approved and runs, and
while two alerts open two tasks. The notifier's outbox holds what was due and delivers it in order
when Slack takes calls again (``retry_outbox`` is what the scheduler runs every 30 s).
"""

from __future__ import annotations

from bot.model.tasks import TaskState
from tests.adapters.chat.test_slack_e2e import ADMIN, AM, fire, header, ooda_on_slack, proposals, sample, thread_replies

FLOW = ["approved by", "ran (k8s.rollout_restart): ok", "completed by"]
MARKERS = [*FLOW, "undid"]


def order_of(replies: list[str]) -> list[str]:
    """The notes in the thread, split where one reply carried several, reduced to FLOW's markers."""
    notes = [note for reply in replies for note in reply.split("; ")]
    return [marker for note in notes for marker in MARKERS if marker in note]


async def approve_and_finish(rig, task_id: int) -> None:
    r = await rig.http.post(f"/api/v1/tasks/{task_id}/approve", headers=ADMIN, json={})
    assert r.status_code == 200, r.text
    await rig.app.engine.wait_idle()
    await rig.app.notifier.wait_idle()
    assert (await rig.app.store.get_task(task_id)).state is TaskState.completed


async def thread_of(rig, task_id: int) -> str:
    task = await rig.app.store.get_task(task_id)
    [ref] = [m for m in task.messages if m["surface"] == "slack"]
    return str(ref.get("thread_id") or ref["message_id"])


async def test_notes_due_during_an_outage_arrive_in_order_once_slack_is_back(tmp_path):
    async with ooda_on_slack(tmp_path, api_retries=0) as rig:
        task_id = await fire(rig)
        await rig.app.notifier.wait_idle()
        ts = await thread_of(rig, task_id)

        rig.fake.down()
        await approve_and_finish(rig, task_id)
        assert thread_replies(rig.fake, ts) == []
        assert await rig.app.store.outbox_items() != []

        rig.fake.up()
        # Slack is back, and something new happens before the outbox is retried: it must not
        # overtake the notes that were due during the outage.
        await rig.app.notifier.sync(task_id, "undid nothing: a later note")
        assert await rig.app.notifier.retry_outbox() == 0
        assert order_of(thread_replies(rig.fake, ts)) == [*FLOW, "undid"]
        assert await rig.app.notifier.retry_outbox() == 0  # nothing is sent twice
        assert order_of(thread_replies(rig.fake, ts)) == [*FLOW, "undid"]


async def test_a_429_storm_on_message_updates_keeps_the_notes_in_order(tmp_path):
    async with ooda_on_slack(tmp_path, api_retries=2) as rig:
        task_id = await fire(rig)
        await rig.app.notifier.wait_idle()
        ts = await thread_of(rig, task_id)

        # Longer than slack_sdk's own retries (2): some deliveries fail through to the notifier.
        rig.fake.fail_next("chat.update", status=429, retry_after=0, times=7)
        await approve_and_finish(rig, task_id)
        while await rig.app.notifier.retry_outbox():
            pass  # each pass takes what the storm lets through; the scheduler does this every 30 s
        assert order_of(thread_replies(rig.fake, ts)) == FLOW


async def test_proposals_due_during_an_outage_are_posted_in_the_order_they_became_ready(tmp_path):
    async with ooda_on_slack(tmp_path, api_retries=0) as rig:
        rig.fake.down()
        # A storm of three alerts at once: their tasks change together, in one notifier batch.
        for name in ("alertmanager-kube-pod-crashlooping", "alertmanager-node-filesystem-space",
                     "alertmanager-kafka-consumer-lag"):
            r = await rig.http.post("/webhooks/alertmanager", content=sample(name), headers=AM)
            assert r.status_code == 202
        await rig.app.engine.wait_idle()
        await rig.app.notifier.wait_idle()
        tasks = sorted(t.id for t in await rig.app.store.list_tasks(open_only=False))
        assert len(tasks) == 3 and proposals(rig.fake) == []

        rig.fake.up()
        assert await rig.app.notifier.retry_outbox() == 0
        posted = [int(header(c).split("#")[1].split(" ")[0]) for c in proposals(rig.fake)]
        # Planning takes longer for some playbooks than others (a dry run that lists files), so a
        # storm's proposals become ready in their own order: the audit trail's order is the truth.
        ready = [row[4] for row in reversed(await rig.app.store.audit_page(limit=1000)) if row[3] == "task.proposal"]
        assert sorted(ready) == tasks
        assert posted == ready


async def test_discord_thread_notes_due_during_an_outage_arrive_in_order_once_it_is_back(tmp_path):
    from tests.adapters.chat import test_discord_e2e as d

    async with d.FakeDiscord(roles={d.ONCALL_ROLE: "oncall"}) as fake, d.running_standin() as standin, \
            d.running_app(tmp_path, standin, fake) as app, d.client(app) as http:
        task = await d.fire_crashloop(app, http)
        message = await d.proposal_message(app, fake, task.id)
        # Discord refuses every edit and message (a 503 outage) while the task is approved and runs.
        fake.fail_next("PATCH", r"^/channels/", status=503, times=1000)
        fake.fail_next("POST", r"^/channels/", status=503, times=1000)
        r = await http.post(f"/api/v1/tasks/{task.id}/approve", headers=ADMIN, json={})
        assert r.status_code == 200, r.text
        await app.engine.wait_idle()
        await app.notifier.wait_idle()
        assert d.notes(fake, message) == []

        fake.clear_failures()
        await app.notifier.sync(task.id, "undid nothing: a later note")  # must not overtake them
        assert await app.notifier.retry_outbox() == 0
        assert order_of(d.notes(fake, message)) == [*FLOW, "undid"]
