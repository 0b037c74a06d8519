"""Store contract: the kill switch and run counts are the store's, so two processes agree.

Two store instances on one database stand for two processes. The claim reads the guard in its
own transaction: a pause or a run committed by the other instance a moment before is honoured.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bot.audit.chain import verify_chain
from bot.loop.core import guard_query
from bot.loop.step_claim import claim_step
from bot.policy.rules import PolicyConfig
from bot.store.ports import KILL_SWITCH_KEY, GuardQuery, KillSwitch, RunWindow
from tests.store.conftest import KEY
from tests.store.contract import new_step, new_task, received, signal

LIMITED = PolicyConfig.model_validate({"rate_limits": {"tools": {"flags.set": {"max": 1, "per_s": 3600}}}})


async def test_a_kill_switch_set_through_one_instance_refuses_the_claim_in_the_other(open_store):
    first, second = await open_store(), await open_store()
    task = await new_task(second)
    write = await new_step(second, task.id, name="write")
    read = await new_step(second, task.id, name="read", idx=1, tool="http.request", category="read")
    paused = KillSwitch(on=True, by="Admin", reason="drill")
    await first.transact(lambda t: t.set_setting(KILL_SWITCH_KEY, paused.as_setting(), "admin"))

    now = datetime.now(UTC)
    assert (await second.guard(GuardQuery(tool="flags.set", playbook_id="pb"))).kill_switch == paused
    steps = {s.id: s for s in await second.steps_of_task(task.id)}
    claim = await second.transact(lambda t: claim_step(t, PolicyConfig(), task, steps[write], now))
    assert not claim.claimed and claim.refusal is not None and claim.refusal.rule == "kill_switch"
    # Reads only observe: they run with the kill switch on.
    assert (await second.transact(lambda t: claim_step(t, PolicyConfig(), task, steps[read], now))).claimed
    assert [s.state for s in await second.steps_of_task(task.id)] == ["pending", "running"]

    await first.transact(lambda t: t.set_setting(KILL_SWITCH_KEY, KillSwitch().as_setting(), "admin"))
    assert (await second.transact(lambda t: claim_step(t, PolicyConfig(), task, steps[write], now))).claimed


async def test_runs_claimed_through_one_instance_count_against_the_limit_in_the_other(open_store):
    first, second = await open_store(), await open_store()
    task = await new_task(first)
    one, two = await new_step(first, task.id, name="one"), await new_step(first, task.id, name="two", idx=1)
    steps = {s.id: s for s in await first.steps_of_task(task.id)}
    now = datetime.now(UTC)
    assert (await first.transact(lambda t: claim_step(t, LIMITED, task, steps[one], now))).claimed

    claim = await second.transact(lambda t: claim_step(t, LIMITED, task, steps[two], now))
    assert not claim.claimed and claim.refusal is not None
    assert claim.refusal.rule == "rate_limit:tool:flags.set(1/3600s)"
    guard = await second.guard(guard_query(LIMITED, "flags.set", "pb", now))
    assert (guard.tool_runs_in_window, guard.tool_runs, guard.playbook_runs) == (1, 1, 1)
    later = GuardQuery(tool="flags.set", playbook_id="pb",
                       tool_window=RunWindow((now + timedelta(seconds=1)).isoformat()))
    assert (await second.guard(later)).tool_runs_in_window == 0


async def test_two_instances_extend_one_audit_chain_and_one_signal_numbering(open_store):
    first, second = await open_store(), await open_store()
    for n in range(4):
        await (first if n % 2 else second).ingest_signals([signal(n)], received())
    rows = [row async for row in first.audit_rows()]
    assert len(rows) == 4 and verify_chain(rows, KEY).ok
    seqs = [r.seq for r in await second.signals_after(0)]
    assert len(set(seqs)) == 4
