"""A stateful property test of the loop: random runs, approvals (by the right people and the wrong
ones), rejects, edits, undos, kill-switch flips, tool failures and restarts against a real App and
the stand-in, with the safety invariants checked from the store after every move:

- no write ran without an allow or its approvals (the audit record of every write names them);
- no step ran twice unless its tool is idempotent and it ran again with the same key;
- no task is completed while one of its rollbacks is pending, running or interrupted;
- every tool run left exactly one audit record.

Examples are few and short (each starts an App): the point is many orders of moves, not volume.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from bot.errors import UserError
from bot.model.steps import StepKind, StepState
from bot.model.tasks import TaskState
from bot.policy.identity import Actor
from tests.harness import running_app, running_standin

REQUESTER = Actor(id="runner", display="Runner", roles=frozenset({"operator"}), via="api")
PEOPLE = [
    Actor(id="lead", display="Lead", roles=frozenset({"sre-lead", "oncall"}), via="api"),
    Actor(id="second-approver", display="Second approver", roles=frozenset({"oncall", "sre", "sre-lead"}), via="api"),
    REQUESTER,  # may not approve what they asked for at tiers with separation of duties
    Actor(id="viewer", display="Viewer", roles=frozenset({"viewer"}), via="api"),
]
FAILING_PATHS = ["/api/admin/", "/platform/services/checkout/rollback", "/platform/services/checkout/health"]


class LoopMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.stack = contextlib.AsyncExitStack()
        self.runs: Counter[str] = Counter()  # tool -> real runs, across restarts
        self.tasks: list[int] = []
        self.app: Any = None
        self.standin: Any = None
        self.tmp = Path(tempfile.mkdtemp(prefix="ooda-lifecycle-"))  # one store per example

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    @initialize()
    def start(self) -> None:
        self.standin = self.run(self.stack.enter_async_context(running_standin()))
        self._open_app()

    def _open_app(self) -> None:
        self.app_stack = contextlib.AsyncExitStack()
        self.app = self.run(self.app_stack.enter_async_context(running_app(self.tmp, self.standin)))
        for tool in self.app.core.gateway.registry.tools_for_instrumenting():
            original = tool.run

            async def counted(params: Any, *, dry_run: bool, _name: str = tool.name, _run: Any = original) -> Any:
                self.runs[_name] += 1
                return await _run(params, dry_run=dry_run)

            tool.run = counted

    async def _settle(self) -> None:
        await self.app.engine.wait_idle()

    def act(self, coro: Any) -> None:
        async def go() -> None:
            with contextlib.suppress(UserError):
                await coro
            await self._settle()

        self.run(go())

    def pick(self, index: int) -> int:
        return self.tasks[index % len(self.tasks)]

    @rule()
    def open_task(self) -> None:
        async def go() -> None:
            task = await self.app.commands.run_playbook("http-5xx-ratio", {"service": "checkout"}, REQUESTER)
            self.tasks.append(task.id)
            await self._settle()

        self.run(go())

    @precondition(lambda self: self.tasks)
    @rule(index=st.integers(0, 20), who=st.sampled_from(PEOPLE), rollout=st.none() | st.integers(5, 120))
    def approve(self, index: int, who: Actor, rollout: int | None) -> None:
        edits = {"throttle": {"rollout": rollout}} if rollout is not None else None
        task_id = self.pick(index)
        self.act(self.app.commands.approve(task_id, who, edits=edits, confirmation=f"approve {task_id}",
                                           override_dry_run="drill" if rollout == 5 else None))

    @precondition(lambda self: self.tasks)
    @rule(index=st.integers(0, 20), who=st.sampled_from(PEOPLE))
    def reject(self, index: int, who: Actor) -> None:
        self.act(self.app.commands.reject(self.pick(index), who, "not now"))

    @precondition(lambda self: self.tasks)
    @rule(index=st.integers(0, 20), who=st.sampled_from(PEOPLE))
    def undo(self, index: int, who: Actor) -> None:
        self.act(self.app.commands.undo(self.pick(index), who))

    @rule(on=st.booleans())
    def kill_switch(self, on: bool) -> None:
        admin = self.app.identities.by_id("local-admin")
        self.act(self.app.commands.pause(admin, "drill") if on else self.app.commands.resume(admin))

    @rule(path=st.sampled_from(FAILING_PATHS), times=st.integers(1, 3))
    def tool_failure(self, path: str, times: int) -> None:
        self.standin.fail_next(path, status=500, times=times)

    @rule()
    def restart(self) -> None:
        self.run(self.app_stack.aclose())
        self._open_app()
        self.run(self._settle())

    # -- invariants --------------------------------------------------------------------------

    def _records(self) -> list[tuple[str, dict[str, Any]]]:
        async def read() -> list[tuple[str, dict[str, Any]]]:
            return [(row[3], json.loads(row[6])) async for row in self.app.store.audit_rows()]

        return self.run(read())

    @invariant()
    def writes_ran_only_when_allowed_or_approved(self) -> None:
        if self.app is None:
            return
        for action, data in self._records():
            if action != "tool.call" or data.get("purpose") not in {"write", "rollback"}:
                continue
            if data["outcome"] == "refused":
                continue
            assert data["verdict"] == "allow" or (data["verdict"] == "needs_approval" and data["approval_ids"]), data
            assert data["reason_code"], data

    @invariant()
    def no_step_ran_twice_unless_idempotent_with_the_same_key(self) -> None:
        if self.app is None:
            return
        ran = Counter((d["tool"], d["idempotency_key"]) for a, d in self._records()
                      if a == "tool.call" and d.get("purpose") in {"write", "rollback"} and d["outcome"] != "refused")
        registry = self.app.core.gateway.registry
        for (tool, key), count in ran.items():
            assert count == 1 or registry.get(tool).idempotent, (tool, key, count)

    @invariant()
    def no_completed_task_keeps_an_unfinished_rollback(self) -> None:
        if self.app is None:
            return

        async def check() -> None:
            for task_id in self.tasks:
                task = await self.app.store.get_task(task_id)
                if task.state is not TaskState.completed:
                    continue
                for row in await self.app.store.steps_of_task(task_id, StepKind.rollback):
                    assert row.state not in {StepState.pending, StepState.running, StepState.unknown}, (task, row)

        self.run(check())

    @invariant()
    def every_tool_run_is_audited_once(self) -> None:
        if self.app is None:
            return
        # One record per call; a call retried inside the gateway counts its attempts in that record.
        audited: Counter[str] = Counter()
        for action, data in self._records():
            if action == "tool.call":
                audited[data["tool"]] += data["attempts"]
        assert +audited == +self.runs

    def teardown(self) -> None:
        with contextlib.suppress(Exception):
            if self.app is not None:
                self.run(self.app_stack.aclose())
        self.run(self.stack.aclose())
        self.loop.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


LoopMachine.TestCase.settings = settings(max_examples=3, stateful_step_count=10, deadline=None,
                                         suppress_health_check=list(HealthCheck))
test_lifecycle_properties = LoopMachine.TestCase
