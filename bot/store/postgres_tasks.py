"""Task, step, approval, setting and outbox operations inside one PostgreSQL transaction.

The PostgreSQL twin of ``bot/store/sqlite_tasks.py``'s ``TaskTx``: the same transaction ports with the
same meaning (``tests/store/`` checks both), in PostgreSQL's SQL.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncpg

from bot.audit.chain import AuditEntry
from bot.errors import Conflict, UnknownTask
from bot.jsoncodec import dumps, loads
from bot.model import events as ev
from bot.model.events import Event
from bot.model.steps import StepRecord
from bot.model.tasks import ApprovalRecord, SignalTally, Task, TaskState, check_transition
from bot.store.ports import KILL_SWITCH_KEY, GuardQuery, GuardState, KillSwitch
from bot.store.postgres_owner import OwnerLockLost
from bot.store.sqlite_tasks import (
    APPROVAL_COLUMNS,
    FINAL_STATES,
    STATE_EVENTS,
    STEP_COLUMNS,
    TASK_COLUMNS,
    approval_from_row,
    now_iso,
    step_from_row,
    task_from_row,
)

TOOL_RUNS_SQL = ("SELECT count(*), count(*) FILTER (WHERE state = 'failed') FROM steps "
                 "WHERE tool = $1 AND kind IN ('step', 'rollback') AND started_at >= $2")
PLAYBOOK_RUNS_SQL = (
    "SELECT count(DISTINCT s.task_id), count(DISTINCT CASE WHEN s.state = 'failed' THEN s.task_id END) "
    "FROM steps s JOIN tasks t ON t.id = s.task_id "
    "WHERE t.playbook_id = $1 AND s.kind = 'step' AND s.started_at >= $2"
)
_JSON_STEP_FIELDS = frozenset({"params", "rollback", "decision", "result"})
_STEP_FIELDS = frozenset(STEP_COLUMNS.replace(" ", "").split(",")) - {"id", "task_id"}


def affected(status: str) -> int:
    """Rows a statement touched, from asyncpg's command tag (``UPDATE 1``, ``INSERT 0 1``)."""
    return int(status.rsplit(" ", 1)[-1])


def steps_query(task_id: int, kind: str | None) -> tuple[str, tuple[Any, ...]]:
    if kind:
        return (f"SELECT {STEP_COLUMNS} FROM steps WHERE task_id = $1 AND kind = $2 ORDER BY kind, idx, id",
                (task_id, kind))
    return f"SELECT {STEP_COLUMNS} FROM steps WHERE task_id = $1 ORDER BY kind, idx, id", (task_id,)


async def read_guard(conn: asyncpg.Connection, query: GuardQuery) -> GuardState:
    """The kill switch and the run counts of ``query`` in ``conn``'s view (see ``bot.store.ports``)."""
    value = await conn.fetchval("SELECT value FROM settings WHERE key = $1", KILL_SWITCH_KEY)
    kill = KillSwitch.from_setting(loads(value) if value is not None else None)
    tool_window = pb_window = tool_runs = tool_failures = pb_runs = pb_failures = 0
    if query.tool_window is not None:
        tool_window = (await conn.fetchrow(TOOL_RUNS_SQL, query.tool, query.tool_window.since))[0]
    if query.playbook_window is not None:
        pb_window = (await conn.fetchrow(PLAYBOOK_RUNS_SQL, query.playbook_id, query.playbook_window.since))[0]
    if query.history is not None:
        tool_runs, tool_failures = await conn.fetchrow(TOOL_RUNS_SQL, query.tool, query.history.since)
        pb_runs, pb_failures = await conn.fetchrow(PLAYBOOK_RUNS_SQL, query.playbook_id, query.history.since)
    return GuardState(kill_switch=kill, tool_runs_in_window=int(tool_window), playbook_runs_in_window=int(pb_window),
                      tool_runs=int(tool_runs), tool_failures=int(tool_failures), playbook_runs=int(pb_runs),
                      playbook_failures=int(pb_failures))


class PgTaskTx:
    """The transaction ports (``bot.store.ports.TaskOps``) on one PostgreSQL transaction."""

    def __init__(self, conn: asyncpg.Connection, owner: int | None = None, *,
                 may_claim: Callable[[], bool] = lambda: True) -> None:
        self.conn = conn
        # This process, recorded on every step it puts in running and every task it opens or
        # moves (bot/store/postgres_owner.py); it claims steps only while it holds its owner lock.
        self.owner = owner
        self._may_claim = may_claim
        self.audits: list[AuditEntry] = []
        self.events: list[Event] = []

    def audit(self, entry: AuditEntry) -> None:
        self.audits.append(entry)

    def event(self, event: Event) -> None:
        self.events.append(event)

    def _runner(self, step_id: int) -> int | None:
        """The owner to record on a step put in running; refused while the owner lock is not held."""
        if not self._may_claim():
            raise OwnerLockLost(step_id, self.owner)
        return self.owner

    # -- tasks -------------------------------------------------------------------------------

    async def get_task(self, task_id: int) -> Task:
        row = await self.conn.fetchrow(f"SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1", task_id)
        if row is None:
            raise UnknownTask(f"there is no task {task_id}; list tasks with `ooda tasks` or /ops tasks")
        return task_from_row(row)

    async def create_task(self, *, playbook_id: str, playbook_version: str, group_key: str, title: str,
                          environment: str, severity: str, requester: str, args: dict[str, Any],
                          signal_ids: list[str], last_signal_at: str | None) -> Task:
        at = now_iso()
        task_id = int(await self.conn.fetchval(
            "INSERT INTO tasks (playbook_id, playbook_version, state, group_key, title, environment, severity, "
            "requester, signal_count, created_at, updated_at, last_signal_at, args, claimed_by) "
            "VALUES ($1, $2, 'queued', $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING id",
            playbook_id, playbook_version, group_key, title, environment, severity, requester,
            len(signal_ids), at, at, last_signal_at or at, dumps(args), self.owner))
        if signal_ids:
            await self.conn.execute("UPDATE signals SET task_id = $1 WHERE id = ANY($2::text[])", task_id, signal_ids)
        self.event(Event(ev.CREATED, task_id, {"playbook": playbook_id, "group_key": group_key,
                                               "signals": len(signal_ids), "requester": requester}))
        self.audit(AuditEntry(requester, "task.created", task_id,
                              {"playbook": playbook_id, "version": playbook_version, "group_key": group_key,
                               "signal_ids": signal_ids[:100], "args": args}))
        return await self.get_task(task_id)

    async def attach_signals(self, task_id: int, signal_ids: list[str], last_signal_at: str) -> None:
        await self.conn.execute("UPDATE signals SET task_id = $1 WHERE id = ANY($2::text[])", task_id, signal_ids)
        await self.conn.execute(
            "UPDATE tasks SET signal_count = (SELECT count(*) FROM signals WHERE task_id = $1), "
            "last_signal_at = $2, updated_at = $3 WHERE id = $1", task_id, last_signal_at, now_iso())
        self.event(Event(ev.SIGNALS_ATTACHED, task_id, {"added": len(signal_ids)}))

    async def signal_tally(self, task_id: int) -> SignalTally:
        total, resolved = await self.conn.fetchrow(
            "SELECT count(*), count(*) FILTER (WHERE status = 'resolved') FROM signals WHERE task_id = $1", task_id)
        # As times, not as text: the senders' offsets differ.
        last = await self.conn.fetchval(
            "SELECT ends_at FROM signals WHERE task_id = $1 AND ends_at IS NOT NULL "
            "ORDER BY ends_at::timestamptz DESC LIMIT 1", task_id)
        return SignalTally(total=total, resolved=resolved, last_ended_at=last)

    async def record_resolution(self, task_id: int, resolved_at: str) -> None:
        await self.conn.execute("UPDATE tasks SET resolved_at = $1, refired_at = NULL, updated_at = $2 WHERE id = $3",
                                resolved_at, now_iso(), task_id)

    async def record_refire(self, task_id: int, refired_at: str) -> None:
        await self.conn.execute("UPDATE tasks SET refired_at = $1, updated_at = $2 WHERE id = $3",
                                refired_at, now_iso(), task_id)

    async def tasks_with_resolved_alerts(self, task_ids: list[int]) -> set[int]:
        rows = await self.conn.fetch(
            "SELECT id FROM tasks WHERE id = ANY($1::bigint[]) AND resolved_at IS NOT NULL AND refired_at IS NULL",
            task_ids)
        return {int(r[0]) for r in rows}

    async def latest_task_for_group(self, group_key: str) -> tuple[Task, str | None] | None:
        row = await self.conn.fetchrow(
            f"SELECT {TASK_COLUMNS}, last_signal_at FROM tasks WHERE group_key = $1 ORDER BY id DESC LIMIT 1",
            group_key)
        return (task_from_row(row), row[19]) if row else None

    async def set_state(self, task_id: int, expected: TaskState | set[TaskState], target: TaskState, *,
                        actor: str, reason: str = "", outcome: str | None = None) -> Task:
        task = await self.get_task(task_id)
        allowed = {expected} if isinstance(expected, TaskState) else expected
        if task.state not in allowed:
            raise Conflict(f"task {task_id} is {task.state}, not {' or '.join(sorted(allowed))}; "
                           "someone else may have acted on it already")
        check_transition(task_id, task.state, target)
        at = now_iso()
        closed = at if target in FINAL_STATES else None
        # Whoever moves a task drives it on from there (bot/store/postgres_owner.py).
        await self.conn.execute(
            "UPDATE tasks SET state = $1, updated_at = $2, closed_at = $3, outcome = coalesce($4, outcome), "
            "claimed_by = coalesce($7, claimed_by) WHERE id = $5 AND state = $6",
            target.value, at, closed, outcome, task_id, task.state.value, self.owner)
        payload = {"from": task.state.value, "to": target.value, "reason": reason, "actor": actor}
        self.event(Event(ev.STATE_CHANGED, task_id, payload))
        if target in STATE_EVENTS:
            self.event(Event(STATE_EVENTS[target], task_id, payload))
        self.audit(AuditEntry(actor, f"task.{target.value}", task_id, {"from": task.state.value, "reason": reason}))
        return task.model_copy(update={"state": target, "outcome": outcome or task.outcome})

    async def save_proposal(self, task_id: int, proposal: dict[str, Any], title: str | None = None) -> None:
        await self.conn.execute(
            "UPDATE tasks SET proposal = $1, title = coalesce($2, title), updated_at = $3 WHERE id = $4",
            dumps(proposal), title, now_iso(), task_id)

    async def save_messages(self, task_id: int, messages: list[dict[str, Any]]) -> None:
        await self.conn.execute("UPDATE tasks SET messages = $1 WHERE id = $2", dumps(messages), task_id)

    # -- steps -------------------------------------------------------------------------------

    async def insert_step(self, *, task_id: int, kind: str, idx: int, name: str, tool: str, category: str,
                          params: dict[str, Any], rollback: dict[str, Any] | None,
                          decision: dict[str, Any] | None, state: str, idempotency_key: str) -> int:
        return int(await self.conn.fetchval(
            "INSERT INTO steps (task_id, kind, idx, name, tool, category, params, rollback, decision, state, "
            "idempotency_key, claimed_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id",
            task_id, kind, idx, name, tool, category, dumps(params), dumps(rollback) if rollback else None,
            dumps(decision) if decision else None, state, idempotency_key,
            self._runner(0) if state == "running" else None))

    async def update_step(self, step_id: int, **fields: Any) -> None:
        unknown = set(fields) - _STEP_FIELDS
        if unknown:
            raise ValueError(f"steps have no column {', '.join(sorted(unknown))}")
        encoded = {k: (dumps(v) if k in _JSON_STEP_FIELDS and v is not None else v) for k, v in fields.items()}
        if fields.get("state") == "running":
            encoded["claimed_by"] = self._runner(step_id)
        assignments = ", ".join(f"{k} = ${i}" for i, k in enumerate(encoded, start=1))
        await self.conn.execute(f"UPDATE steps SET {assignments} WHERE id = ${len(encoded) + 1}",
                                *encoded.values(), step_id)

    async def get_step(self, step_id: int) -> StepRecord:
        row = await self.conn.fetchrow(f"SELECT {STEP_COLUMNS} FROM steps WHERE id = $1", step_id)
        if row is None:
            raise UnknownTask(f"there is no step {step_id}")
        return step_from_row(row)

    async def set_step_state(self, step_id: int, expected: str, target: str, **fields: Any) -> bool:
        """Compare-and-set a step's state (and other columns); False when it is no longer ``expected``."""
        unknown = set(fields) - _STEP_FIELDS
        if unknown:
            raise ValueError(f"steps have no column {', '.join(sorted(unknown))}")
        encoded = {k: (dumps(v) if k in _JSON_STEP_FIELDS and v is not None else v) for k, v in fields.items()}
        if str(target) == "running":
            encoded["claimed_by"] = self._runner(step_id)  # a replica that dies holding it leaves it to recovery
        assignments = "".join(f", {k} = ${i}" for i, k in enumerate(encoded, start=2))
        n = len(encoded) + 2
        args = [str(target), *encoded.values(), step_id, str(expected)]
        runner = ""
        if str(expected) == "running" and str(target) in {"succeeded", "failed"}:
            # Only the process that claimed the step records its result: after the leader resolved
            # it (its owner lock was gone) and another process claimed it again, a late result of
            # the first run finds the step running under another owner and is refused.
            runner = f" AND claimed_by IS NOT DISTINCT FROM ${n + 2}"
            args.append(self.owner)
        status = await self.conn.execute(
            f"UPDATE steps SET state = $1{assignments} WHERE id = ${n} AND state = ${n + 1}{runner}", *args)
        return affected(status) == 1

    async def claim_step(self, step_id: int, started_at: str) -> bool:
        status = await self.conn.execute(
            "UPDATE steps SET state = 'running', started_at = $1, attempts = attempts + 1, claimed_by = $3 "
            "WHERE id = $2 AND state = 'pending'", started_at, step_id, self._runner(step_id))
        return affected(status) == 1

    async def remove_unstarted_steps(self, task_id: int) -> int:
        status = await self.conn.execute(
            "DELETE FROM steps WHERE task_id = $1 AND kind = 'step' AND state IN ('pending', 'denied', 'skipped')",
            task_id)
        return affected(status)

    async def steps(self, task_id: int, kind: str | None = None) -> list[StepRecord]:
        sql, params = steps_query(task_id, kind)
        return [step_from_row(r) for r in await self.conn.fetch(sql, *params)]

    # -- approvals ---------------------------------------------------------------------------

    async def add_approval(self, task_id: int, actor: str, display: str, verdict: str,
                           reason: str | None, edits: dict[str, Any] | None,
                           roles: list[str] | None = None) -> bool:
        status = await self.conn.execute(
            "INSERT INTO approvals (task_id, actor, display, verdict, reason, edits, created_at, roles) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (task_id, actor, verdict) DO NOTHING",
            task_id, actor, display, verdict, reason, dumps(edits) if edits else None, now_iso(),
            dumps(sorted(roles)) if roles is not None else None)
        return affected(status) == 1

    async def approvals(self, task_id: int) -> list[ApprovalRecord]:
        rows = await self.conn.fetch(f"SELECT {APPROVAL_COLUMNS} FROM approvals WHERE task_id = $1 ORDER BY id",
                                     task_id)
        return [approval_from_row(r) for r in rows]

    # -- settings and the guard ---------------------------------------------------------------

    async def set_setting(self, key: str, value: Any, actor: str) -> None:
        await self.conn.execute(
            "INSERT INTO settings (key, value, updated_at, updated_by) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at, "
            "updated_by = excluded.updated_by", key, dumps(value), now_iso(), actor)

    async def get_setting(self, key: str) -> Any:
        value = await self.conn.fetchval("SELECT value FROM settings WHERE key = $1", key)
        return loads(value) if value is not None else None

    async def guard(self, query: GuardQuery) -> GuardState:
        return await read_guard(self.conn, query)

    # -- outbox ------------------------------------------------------------------------------

    async def add_outbox(self, task_id: int, surface: str, note: str | None, error: str) -> None:
        await self.conn.execute(
            "INSERT INTO outbox (task_id, surface, note, attempts, last_error, created_at) "
            "VALUES ($1, $2, $3, 1, $4, $5)", task_id, surface, note, error[:500], now_iso())

    async def remove_outbox(self, outbox_id: int) -> None:
        await self.conn.execute("DELETE FROM outbox WHERE id = $1", outbox_id)

    async def outbox_failed(self, outbox_id: int, error: str) -> None:
        await self.conn.execute("UPDATE outbox SET attempts = attempts + 1, last_error = $1 WHERE id = $2",
                                error[:500], outbox_id)
