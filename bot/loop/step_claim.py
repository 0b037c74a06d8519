"""Claiming a step to run, with the kill switch and the rate limits read in the claim's transaction.

The policy decided the step a moment before, from what the store held then. Another process may
have pulled the kill switch or run the same tool since; the claim reads both again inside the
transaction that marks the step running, so a pause or a rate limit committed anywhere before the
claim is honoured, and two claims cannot both squeeze under one limit (the store serializes them).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from bot.loop.core import guard_query, policy_context_of
from bot.model.proposals import Category, Decision
from bot.model.steps import StepRecord
from bot.model.tasks import Task
from bot.policy.rules import PolicyConfig, kill_switch_refusal, rate_limit_refusal
from bot.store import step_moves
from bot.store.ports import TaskOps


@dataclass(frozen=True, slots=True)
class Claim:
    """The outcome of a claim: claimed, taken by someone else (neither set), or refused by the policy."""

    claimed: bool
    refusal: Decision | None = None


async def claim_step(t: TaskOps, policy: PolicyConfig, task: Task, step: StepRecord, now: datetime) -> Claim:
    """pending -> running unless the stored kill switch or a rate limit now refuses the step."""
    guard = await t.guard(guard_query(policy, step.tool, task.playbook_id, now, history=False))
    ctx = policy_context_of(guard, task.environment, now)
    refusal = kill_switch_refusal() if ctx.kill_switch and Category(step.category).writes else None
    refusal = refusal or rate_limit_refusal(policy, step.tool, task.playbook_id, ctx)
    if refusal is not None:
        return Claim(claimed=False, refusal=refusal)
    return Claim(claimed=await step_moves.claim(t, step, now.isoformat()))  # with its event and audit record
