"""Two Oodas on one store agree on the kill switch and the rate limits.

Both used to live in each process's memory: a pause pulled through one process left another
running writes, and each process counted its own runs against a limit. Two App instances on one
SQLite file stand for two processes (each has its own connections and writer; SQLite locks the
file, not the process).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.app import App
from bot.errors import Forbidden
from bot.model.tasks import TaskState
from bot.policy.identity import Actor
from bot.policy.rules import PolicyConfig
from demo.standin import Standin, new_feature
from tests.e2e.test_safety_properties import ADMIN, write_playbooks
from tests.harness import running_app, running_standin

REQUESTER = Actor(id="dave", display="Dave", roles=frozenset({"operator"}), via="api")
APPROVER = Actor(id="alice", display="Alice", roles=frozenset({"sre-lead"}), via="api")
PERMISSIVE = {"autonomy_ceiling": "L4", "default_environment_cap": "L4"}


@contextlib.asynccontextmanager
async def two_apps(tmp_path: Path, standin: Standin) -> AsyncIterator[tuple[App, App]]:
    shared = {"playbooks_dir": str(write_playbooks(tmp_path)), "data_dir": str(tmp_path / "data"),
              "store": {"path": str(tmp_path / "data" / "ooda.db")}}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    async with running_app(tmp_path / "a", standin, shared) as first, \
            running_app(tmp_path / "b", standin, shared) as second:
        yield first, second


def writes_to(standin: Standin, flag: str) -> list[dict]:
    return [c for c in standin.calls if flag in c["path"] and c["method"] != "GET"]


async def waiting_task(app: App, token: str, standin: Standin) -> int:
    standin.flags[f"prop-{token}"] = new_feature(f"prop-{token}")
    task = await app.commands.run_playbook("rev-global-l1", {"env": "dev", "token": token}, REQUESTER)
    await app.engine.wait_idle()
    assert (await app.store.get_task(task.id)).state is TaskState.needs_approval
    return task.id


async def test_a_pause_through_one_process_is_honoured_by_the_other(tmp_path):
    async with running_standin() as standin, two_apps(tmp_path, standin) as (first, second):
        second.core.policy = PolicyConfig.model_validate(PERMISSIVE)
        refused_id = await waiting_task(second, "refused", standin)
        late_id = await waiting_task(second, "late", standin)
        late = await second.store.get_task(late_id)
        task, started, _ = await second.commands.approvals.approve(late, await second.commands.show(late_id),
                                                                 APPROVER, None, None)
        assert started and task.state is TaskState.executing

        await first.commands.pause(ADMIN, "drill")

        status = await second.commands.status()
        assert status.paused and status.paused_by == "Admin" and status.paused_reason == "drill"
        refused = await second.store.get_task(refused_id)
        with pytest.raises(Forbidden, match="kill switch is on"):
            await second.commands.approvals.approve(refused, await second.commands.show(refused_id), APPROVER,
                                                    None, None)
        await second.engine.submit(late_id)  # approved before the pause: decided again, and refused
        await second.engine.wait_idle()
        assert writes_to(standin, "prop-late") == []
        task = await second.store.get_task(late_id)
        assert task.state is TaskState.escalated_to_human and "kill_switch" in (task.outcome or "")

        await second.commands.resume(ADMIN)
        assert not (await first.commands.status()).paused
