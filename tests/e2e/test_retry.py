"""A task the kill switch stopped is decided again by `retry` after `resume`, under the policy of now.

Through the real App and its HTTP API (what `ooda retry N` calls) and the chat command parser,
with the crash-looping playbook of test_resolution (capped at L1, so the restart needs a person).
"""

from __future__ import annotations

from bot.chat.chatops import parse_ops, run_ops
from bot.model.tasks import TaskState
from bot.policy.identity import Actor
from tests.e2e.test_resolution import (
    ONCALL,
    app_with,
    crashloop,
    deliver,
    overrides,  # noqa: F401  (the fixture)
    restarts,
    the_task,
)
from tests.harness import ADMIN, client, running_standin

OPERATOR = Actor(id="ops", display="Ops", roles=frozenset({"operator"}), via="api")
STRANGER = Actor(id="eve", display="Eve", roles=frozenset(), via="api")


async def test_a_task_stopped_by_the_kill_switch_is_retried_after_resume_and_runs_once_approved(
        tmp_path, overrides):  # noqa: F811
    async with running_standin() as standin, app_with(tmp_path, standin, overrides) as (app, _), \
            client(app) as http:
        await app.commands.pause(OPERATOR, "drill")
        await deliver(app, http, [crashloop("checkout-6f9c7b8d5-x7k2p")])
        task = await the_task(app)
        assert task.state is TaskState.escalated_to_human and "kill_switch" in (task.outcome or "")

        r = await http.post(f"/api/v1/tasks/{task.id}/retry", headers=ADMIN)
        assert r.status_code == 403 and "resume first" in r.json()["message"]

        await app.commands.resume(OPERATOR)
        # Resuming alone leaves it where it was: only a retry decides it again.
        assert (await app.store.get_task(task.id)).state is TaskState.escalated_to_human

        reply = await run_ops(parse_ops(f"retry {task.id}"), app.commands, STRANGER)
        assert "has no role in Ooda's config, so cannot retry tasks" in reply.text

        r = await http.post(f"/api/v1/tasks/{task.id}/retry", headers=ADMIN)
        assert r.status_code == 200, r.text
        assert r.json()["message"].startswith("Retried by ")
        assert "is now needs approval" in r.json()["message"]
        task = await app.store.get_task(task.id)
        assert task.state is TaskState.needs_approval
        assert restarts(standin) == []
        audited = [row[3] async for row in app.store.audit_rows(task.id)]
        assert "task.retry" in audited

        assert (await app.commands.approve(task.id, ONCALL)).executed
        await app.engine.wait_idle()
        assert (await app.store.get_task(task.id)).state is TaskState.completed
        assert len(restarts(standin)) == 1

        r = await http.post(f"/api/v1/tasks/{task.id}/retry", headers=ADMIN)
        assert r.status_code == 409 and "only a task escalated to a person can be retried" in r.json()["message"]


def test_retry_is_a_chat_command_that_takes_a_task_id():
    command = parse_ops("retry 12")
    assert (command.name, command.task_id) == ("retry", 12)
    assert parse_ops("retry").name == "help"


async def test_the_retry_button_on_slack_decides_a_stopped_task_again(tmp_path):
    from adapters.chat import slack_blocks as kit
    from tests.adapters.chat.slack_harness import click
    from tests.adapters.chat.test_slack_e2e import answer_to, buttons, fire, ooda_on_slack, posted_proposal

    async with ooda_on_slack(tmp_path) as rig:
        await rig.app.commands.pause(OPERATOR, "drill")
        task_id = await fire(rig)
        assert (await rig.app.store.get_task(task_id)).state is TaskState.escalated_to_human
        post = await posted_proposal(rig.fake, task_id)
        assert kit.ACTION_RETRY in buttons(post)  # stopped by the policy, nothing half-run
        await rig.app.commands.resume(OPERATOR)

        await rig.fake.send_envelope("interactive", click(kit.ACTION_RETRY, task_id, "U_ALICE",
                                                          ts=post.response["ts"]))
        answer = await answer_to(rig.fake, "U_ALICE")
        assert answer.startswith(f"Retried by Alice: task {task_id} is now needs approval"), answer
        assert (await rig.app.store.get_task(task_id)).state is TaskState.needs_approval
        shown = await rig.app.commands.show(task_id)
        assert not shown.can_retry
        assert kit.ACTION_APPROVE in [b.action_id for b in kit.proposal_buttons(shown)]


def test_discord_shows_a_retry_button_for_a_stopped_task():
    import re

    from adapters.chat.discord_embeds import CUSTOM_ID_TEMPLATE, buttons_for
    from tests.fakes.core import make_proposal

    stopped = make_proposal(7).model_copy(update={"state": "escalated_to_human", "can_retry": True})
    assert [action for action, _, _ in buttons_for(stopped)] == ["details", "retry"]
    assert re.fullmatch(CUSTOM_ID_TEMPLATE, "ooda:retry:7")
