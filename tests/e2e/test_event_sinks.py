"""Event sinks through the real App: events leave in order, signed, filtered, and are never lost
to a receiver that fails or to a restart (tests/fakes/webhook_receiver.py plays the receiver)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json

import structlog

from bot.policy.identity import Actor
from tests.fakes.webhook_receiver import running_receiver
from tests.harness import running_app, running_standin

SECRET = "event-sink-secret-0123"
RUNNER = Actor(id="runner", display="Runner", roles=frozenset({"operator"}), via="api")


def sink(url: str, **extra) -> dict:
    return {"event_sinks": [{"name": "tracker", "url": url, "secret_env": "OODA_EVENTS_SECRET", **extra}]}


async def no_wait(_: float) -> None:
    await asyncio.sleep(0)  # backoff without the wait: the receiver's script decides when it works


async def run_crash_loop(app, deployment: str = "checkout") -> int:
    task = await app.commands.run_playbook("kube-pod-crashlooping", {"namespace": "shop", "workload": deployment},
                                           RUNNER)
    await app.engine.wait_idle()
    return task.id


def proposed(task_id: int):
    return lambda r: any(e["name"].endswith("proposed_action") and e["task_id"] == task_id for e in r.acknowledged)


async def test_events_leave_in_order_signed_and_only_those_asked_for(tmp_path):
    wanted = ["ops.agent_task.created", "ops.agent_task.proposed_action"]
    async with running_receiver() as receiver, running_standin() as standin, running_app(
            tmp_path, standin, sink(receiver.url, events=wanted), env={"OODA_EVENTS_SECRET": SECRET}) as app:
        task_id = await run_crash_loop(app)
        async with asyncio.timeout(10):
            await receiver.wait_for(proposed(task_id))

        assert [e["name"] for e in receiver.acknowledged] == wanted
        assert all(e["task_id"] == task_id for e in receiver.acknowledged)
        ids = [e["id"] for e in receiver.acknowledged]
        assert ids == sorted(ids)
        for headers, body in receiver.requests:
            mac = hmac.new(SECRET.encode(), headers["X-Ooda-Timestamp"].encode() + b":" + body, hashlib.sha256)
            assert headers["X-Ooda-Signature"] == f"v1={mac.hexdigest()}"
        last = (await app.store.events_of_task(task_id))[-1].id
        async with asyncio.timeout(10):
            await app.event_sinks[0].wait_delivered(last)
        assert (await app.store.get_setting("event_sink.tracker.cursor")).value == last


async def test_a_failing_receiver_gets_the_same_events_again_until_it_acknowledges_them(tmp_path):
    async with running_receiver() as receiver, running_standin() as standin, running_app(
            tmp_path, standin, sink(receiver.url), env={"OODA_EVENTS_SECRET": SECRET}, sleep=no_wait) as app:
        receiver.statuses = [503, 500]
        with structlog.testing.capture_logs() as logs:
            task_id = await run_crash_loop(app)
            async with asyncio.timeout(10):
                await receiver.wait_for(proposed(task_id))

        first_ids = [json.loads(body)["events"][0]["id"] for _, body in receiver.requests[:3]]
        assert first_ids[0] == first_ids[1] == first_ids[2]  # the batch the receiver refused, sent again
        stored = [e.id for e in await app.store.events_of_task(task_id)]
        assert [e["id"] for e in receiver.acknowledged][:len(stored)] == stored  # none lost, none twice
        failures = [entry for entry in logs if entry["event"] == "event_sink.delivery_failed"]
        assert [f["reason"].rsplit(" ", 1)[-1] for f in failures] == ["503", "500"]
        assert "s3cr3t" not in repr(logs) and SECRET not in repr(logs)  # a webhook path is a credential


async def test_after_a_restart_delivery_resumes_where_the_receiver_left_off(tmp_path):
    async with running_receiver() as receiver, running_standin() as standin:
        config = sink(receiver.url)
        async with running_app(tmp_path, standin, config, env={"OODA_EVENTS_SECRET": SECRET}) as app:
            first = await run_crash_loop(app, "api")
            async with asyncio.timeout(10):
                await app.event_sinks[0].wait_delivered((await app.store.events_of_task(first))[-1].id)
        async with running_app(tmp_path, standin, config, env={"OODA_EVENTS_SECRET": SECRET}) as app:
            second = await run_crash_loop(app, "web")
            async with asyncio.timeout(10):
                await receiver.wait_for(proposed(second))
            everything = [e.id for t in (first, second) for e in await app.store.events_of_task(t)]

    delivered = [e["id"] for e in receiver.acknowledged]
    assert sorted(delivered) == delivered and len(set(delivered)) == len(delivered)
    assert set(everything) <= set(delivered)


async def test_a_new_sink_starts_from_now_unless_told_to_backfill(tmp_path):
    async with running_receiver() as receiver, running_standin() as standin:
        async with running_app(tmp_path, standin) as app:  # no sink yet
            before = await run_crash_loop(app, "api")
        async with running_app(tmp_path, standin, sink(receiver.url), env={"OODA_EVENTS_SECRET": SECRET}) as app:
            after = await run_crash_loop(app, "web")
            async with asyncio.timeout(10):
                await receiver.wait_for(proposed(after))
        assert {e["task_id"] for e in receiver.acknowledged} == {after}

        backfill = sink(receiver.url, name="archive", start_at="beginning")
        async with running_app(tmp_path, standin, backfill, env={"OODA_EVENTS_SECRET": SECRET}):
            async with asyncio.timeout(10):
                await receiver.wait_for(proposed(before))


async def test_two_replicas_on_one_store_send_each_event_once(tmp_path, postgres_url):
    # Each replica runs the sink; they share its cursor and take turns under its lease.
    async with running_receiver() as receiver, running_standin() as standin:
        overrides = {**sink(receiver.url), "store": {"url": postgres_url}}
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        env = {"OODA_EVENTS_SECRET": SECRET}
        async with running_app(tmp_path / "a", standin, overrides, env=env) as a, \
                running_app(tmp_path / "b", standin, overrides, env=env) as b:
            first = await run_crash_loop(a, "api")
            async with asyncio.timeout(10):
                await receiver.wait_for(proposed(first))
            second = await run_crash_loop(b, "web")  # b's own events wake b, after a sent the first ones
            async with asyncio.timeout(10):
                await receiver.wait_for(proposed(second))
            everything = [e.id for t in (first, second) for e in await a.store.events_of_task(t)]

    delivered = [e["id"] for e in receiver.acknowledged]
    assert len(set(delivered)) == len(delivered), "an event was sent twice"
    assert set(everything) <= set(delivered) and delivered == sorted(delivered)
