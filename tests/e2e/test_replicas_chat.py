"""Chat delivery across replicas on one PostgreSQL: each message posted once, in order.

Two Apps on one database drain the outbox at the same moment after a Slack outage (what two
replicas do when Slack comes back): the task gets one top-level message and its notes once. A
task whose replica died before posting it is posted by another replica's outbox retry, once.

Then three real ``ooda serve`` processes post to one fake Slack (slack-bolt's real Web API client over HTTP). A storm of
alerts arrives round-robin while Slack answers every chat call with a 503, so every proposal and
every thread note waits in the shared outbox; the tasks are approved on the replicas that do not
lead, and the leader is killed with SIGKILL halfway through. When Slack comes back (after a 429 and a
500 more) the outbox is drained by whichever replicas are left: every task has exactly
one top-level message, and its thread holds each note once, in the order things happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import yaml

from bot.app import App
from tests.adapters.chat.test_slack_e2e import PEOPLE, sample
from tests.fakes.slack import ApiCall, FakeSlack
from tests.harness import ADMIN, AM, EXAMPLE, client, running_app, running_standin
from tests.replicas import NOTIFICATION, Platform, start_replicas, until

CHANNEL = "C_OPS"
SLACK_ENV = {"SLACK_BOT_TOKEN": "xoxb-replicas-0123456789", "SLACK_SIGNING_SECRET": "replicas-signing-0123456789"}
TASKS = 12
# Slack takes about five messages a second per channel here (one a second in production), so
# draining a backlog takes a while, as it does in production, and replicas left alone would overlap.
SEND_INTERVAL_S = 0.2
# What each task's thread says, in order: the approval, the step, the end.
NOTES = ["approved by Local admin", "restart ran (http.request): ok", "completed by"]
FLOW = ["approved by Local admin", "ran (k8s.rollout_restart): ok", "completed by", "verified with"]  # crashloop


def storm(n: int) -> dict:
    """One notification of one alert for service ``svc-n``: a task each."""
    alert = {**NOTIFICATION["alerts"][0], "fingerprint": f"{0xC4A7 + n:016x}",  # type: ignore[index]
             "labels": {"alertname": "ReplicaDrill", "service": f"svc-{n}", "severity": "critical"}}
    return {**NOTIFICATION, "alerts": [alert]}


def top_level(slack: FakeSlack) -> list[ApiCall]:
    """Proposal messages Slack accepted (thread notes carry no blocks)."""
    return [c for c in slack.calls_to("chat.postMessage") if c.ok and "blocks" in c.args]


def task_of(call: ApiCall) -> int:
    return int(str(call.args["blocks"][0]["text"]["text"]).split("#")[1].split(" ")[0])


def thread(slack: FakeSlack, ts: str) -> list[str]:
    """The notes Slack accepted in one thread, one per note (a reply may carry several, "; " apart)."""
    replies = [c.args["text"] for c in slack.calls_to("chat.postMessage") if c.ok and c.args.get("thread_ts") == ts]
    return [note for reply in replies for note in reply.split("; ")]


def in_flow(notes: list[str], flow: list[str] = NOTES) -> list[str]:
    return [marker for note in notes for marker in flow if marker in note]


@contextlib.asynccontextmanager
async def two_apps(tmp_path: Path, postgres_url: str) -> AsyncIterator[tuple[FakeSlack, App, App, httpx.AsyncClient]]:
    """Two Apps on one PostgreSQL, both posting to one fake Slack, and a client of the first."""
    async with FakeSlack() as slack, running_standin() as standin:
        overrides = {
            "store": {"url": postgres_url},
            "chat": {"slack": {"api_base_url": slack.api_url, "default_channel": CHANNEL, "send_interval_s": 0,
                               "lookup_user_groups": False, "api_retries": 0}},
            "identities": yaml.safe_load(EXAMPLE.read_text())["identities"] + PEOPLE,
        }
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        async with running_app(tmp_path / "a", standin, overrides, env=SLACK_ENV) as a, \
                running_app(tmp_path / "b", standin, overrides, env=SLACK_ENV) as b, client(a) as http:
            yield slack, a, b, http


async def test_two_replicas_draining_the_outbox_at_once_post_each_message_once(tmp_path, postgres_url):
    async with two_apps(tmp_path, postgres_url) as (slack, a, b, http):
        slack.down()
        r = await http.post("/webhooks/alertmanager", content=sample("alertmanager-kube-pod-crashlooping"),
                            headers=AM)
        assert r.status_code == 202, r.text

        async def planned() -> list | None:
            tasks = await a.store.list_tasks(open_only=True)
            return tasks if tasks and tasks[0].state.value == "needs_approval" else None

        (task,) = await until(planned)
        r = await http.post(f"/api/v1/tasks/{task.id}/approve", headers=ADMIN, json={})
        assert r.status_code == 200, r.text

        async def completed() -> bool:
            return (await a.store.get_task(task.id)).state.value == "completed"

        await until(completed)
        for app in (a, b):
            await app.engine.wait_idle()
            await app.notifier.wait_idle()
        assert top_level(slack) == [] and await a.store.outbox_items() != []

        slack.up()
        waiting = await asyncio.gather(a.notifier.retry_outbox(), b.notifier.retry_outbox())
        assert list(waiting) == [0, 0]

        posts = top_level(slack)
        assert [task_of(p) for p in posts] == [task.id]
        [post] = posts
        notes = thread(slack, str(post.response["ts"]))
        assert in_flow(notes, FLOW) == FLOW and len(notes) == len(FLOW), notes


async def test_a_proposal_whose_replica_died_before_posting_it_is_posted_by_another_once(tmp_path, postgres_url):
    async with two_apps(tmp_path, postgres_url) as (slack, a, b, http):
        await a.notifier.stop()  # replica a plans the task and dies before its notifier posts it
        r = await http.post("/api/v1/playbooks/kube-pod-crashlooping/run", headers=ADMIN,
                            json={"args": {"namespace": "shop", "workload": "checkout"}})
        assert r.status_code == 202, r.text
        task_id = r.json()["task"]["id"]
        await a.engine.wait_idle()
        assert (await b.store.get_task(task_id)).state.value == "needs_approval"
        assert top_level(slack) == []

        # What the leader's outbox retry does every 30 s: an open task with no message gets one.
        assert await b.notifier.retry_outbox() == 0
        assert [task_of(p) for p in top_level(slack)] == [task_id]
        assert await b.notifier.retry_outbox() == 0
        assert [task_of(p) for p in top_level(slack)] == [task_id]  # posted once


async def test_a_storm_during_a_slack_outage_and_a_killed_leader_posts_each_message_once_in_order(
        tmp_path, postgres_url):
    platform = Platform()
    async with FakeSlack() as slack, platform.running() as platform_port, contextlib.AsyncExitStack() as stack:
        replicas = await start_replicas(stack, tmp_path, platform_port, postgres_url, "a", "b", "c", env=SLACK_ENV,
                                        overrides={"chat": {"slack": {
                                            "api_base_url": slack.api_url, "default_channel": CHANNEL,
                                            "lookup_user_groups": False, "api_retries": 0,
                                            "send_interval_s": SEND_INTERVAL_S}}})
        clients = [http for _, http in replicas]
        db = await asyncpg.connect(postgres_url)
        stack.push_async_callback(db.close)

        async def roles() -> list[str] | None:
            out = []
            for http in clients:
                try:
                    out.append((await http.get("/readyz")).json().get("role", "?"))
                except httpx.HTTPError:
                    out.append("down")
            return out if out.count("leader") == 1 else None

        leader = (await until(roles)).index("leader")
        followers = [http for i, http in enumerate(clients) if i != leader]

        slack.down()  # every chat call answers 503 from here on
        sent = await asyncio.gather(*(clients[n % 3].post("/webhooks/alertmanager", json=storm(n), headers=AM)
                                      for n in range(TASKS)))
        assert {r.status_code for r in sent} == {202}

        async def waiting() -> list[dict] | None:
            tasks = (await followers[0].get("/api/v1/tasks", headers=ADMIN)).json()["tasks"]
            return tasks if len(tasks) == TASKS and all(t["state"] == "needs_approval" for t in tasks) else None

        tasks = sorted(await until(waiting, deadline_s=60), key=lambda t: t["id"])
        half = TASKS // 2

        async def approve(n: int, task_id: int) -> None:
            r = await followers[n % 2].post(f"/api/v1/tasks/{task_id}/approve", headers=ADMIN, json={})
            assert r.status_code == 200, r.text

        # The first half is approved during the outage: its notes wait in the outbox behind the proposals.
        for n, task in enumerate(tasks[:half]):
            await approve(n, task["id"])
        assert await replicas[leader][0].kill(signal.SIGKILL) == -signal.SIGKILL
        assert top_level(slack) == []  # nothing got through the outage
        assert await db.fetchval("SELECT count(DISTINCT task_id) FROM outbox WHERE surface = 'slack'") == TASKS

        # Slack comes back, stumbling (a rate limit, a server error) before it takes everything,
        # while the second half is approved on both replicas left at once.
        slack.fail_next("chat.postMessage", status=429, retry_after=0)
        slack.fail_next("chat.update", status=500)
        slack.up()
        await asyncio.gather(*(approve(n, task["id"]) for n, task in enumerate(tasks[half:], start=half)))

        async def all_completed() -> bool:
            states = await db.fetch("SELECT state FROM tasks")
            return len(states) == TASKS and all(s["state"] == "completed" for s in states)

        await until(all_completed, deadline_s=60)
        assert platform.restarts == TASKS

        async def delivered() -> bool:
            if await db.fetchval("SELECT count(*) FROM outbox WHERE surface = 'slack'"):
                return False
            posted = {task_of(c): str(c.response["ts"]) for c in top_level(slack)}
            return len(posted) == TASKS and all(
                len(in_flow(thread(slack, ts))) >= len(NOTES) for ts in posted.values())

        await until(delivered, deadline_s=120)
        await asyncio.sleep(2)  # past another drain by every replica left: a second copy would be here now

        per_task = Counter(task_of(c) for c in top_level(slack))
        assert per_task == Counter({t["id"]: 1 for t in tasks}), per_task
        for call in top_level(slack):
            notes = thread(slack, str(call.response["ts"]))
            assert in_flow(notes) == NOTES, (task_of(call), notes)
            assert len(notes) == len(NOTES), (task_of(call), notes)  # and nothing else
