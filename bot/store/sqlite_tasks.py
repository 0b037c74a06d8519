"""Task, step and approval persistence for the SQLite store.

``TaskTx`` is what a unit of work sees inside ``store.transact``: domain operations, no SQL. Every
state change goes through ``set_state``, which checks the state machine and compares-and-sets the
current state, so two concurrent commands cannot both move a task out of the same state.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import aiosqlite

from bot.audit.chain import AuditEntry
from bot.errors import Conflict, UnknownTask
from bot.jsoncodec import dumps, loads
from bot.model import events as ev
from bot.model.events import Event
from bot.model.steps import StepRecord
from bot.model.tasks import ApprovalRecord, SignalTally, Task, TaskState, check_transition
from bot.store.ports import KILL_SWITCH_KEY, GuardQuery, GuardState, KillSwitch
from bot.store.sqlite_writer import Tx

TASK_COLUMNS = (
    "id, playbook_id, playbook_version, state, group_key, title, environment, severity, requester, "
    "signal_count, created_at, updated_at, closed_at, args, proposal, messages, outcome, resolved_at, refired_at"
)
STEP_COLUMNS = (
    "id, task_id, kind, idx, name, tool, category, params, rollback, decision, state, idempotency_key, "
    "result, error, attempts, started_at, finished_at"
)
APPROVAL_COLUMNS = "id, task_id, actor, display, verdict, reason, edits, created_at, roles"
FINAL_STATES = {TaskState.completed, TaskState.failed_terminal, TaskState.rejected, TaskState.cancelled,
                TaskState.escalated_to_human}


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def steps_query(task_id: int, kind: str | None) -> tuple[str, tuple[Any, ...]]:
    """The steps of a task (of one kind, or all), in run order; shared by reads in and out of a transaction."""
    if kind:
        return (f"SELECT {STEP_COLUMNS} FROM steps WHERE task_id = ? AND kind = ? ORDER BY kind, idx, id",
                (task_id, kind))
    return f"SELECT {STEP_COLUMNS} FROM steps WHERE task_id = ? ORDER BY kind, idx, id", (task_id,)


def task_from_row(row: Any) -> Task:
    return Task(
        id=row[0], playbook_id=row[1], playbook_version=row[2], state=TaskState(row[3]), group_key=row[4],
        title=row[5], environment=row[6], severity=row[7], requester=row[8], signal_count=row[9],
        created_at=row[10], updated_at=row[11], closed_at=row[12], args=loads(row[13]),
        proposal=loads(row[14]) if row[14] else None, messages=loads(row[15]), outcome=row[16],
        resolved_at=row[17], refired_at=row[18],
    )


def step_from_row(row: Any) -> StepRecord:
    return StepRecord(
        id=row[0], task_id=row[1], kind=row[2], idx=row[3], name=row[4], tool=row[5], category=row[6],
        params=loads(row[7]), rollback=loads(row[8]) if row[8] else None,
        decision=loads(row[9]) if row[9] else None, state=row[10], idempotency_key=row[11],
        result=loads(row[12]) if row[12] else None, error=row[13], attempts=row[14],
        started_at=row[15], finished_at=row[16],
    )


def approval_from_row(row: Any) -> ApprovalRecord:
    return ApprovalRecord(
        id=row[0], task_id=row[1], actor=row[2], display=row[3], verdict=row[4], reason=row[5],
        edits=loads(row[6]) if row[6] else None, created_at=row[7], roles=loads(row[8]) if row[8] else None,
    )


# Runs of a tool: write and rollback steps started since a time (dry runs and reads are not runs).
TOOL_RUNS_SQL = ("SELECT count(*), coalesce(sum(state = 'failed'), 0) FROM steps "
                 "WHERE tool = ? AND kind IN ('step', 'rollback') AND started_at >= ?")
# Runs of a playbook: tasks that started a step since a time, and those where one failed.
PLAYBOOK_RUNS_SQL = (
    "SELECT count(DISTINCT s.task_id), count(DISTINCT CASE WHEN s.state = 'failed' THEN s.task_id END) "
    "FROM steps s JOIN tasks t ON t.id = s.task_id "
    "WHERE t.playbook_id = ? AND s.kind = 'step' AND s.started_at >= ?"
)

FetchOne = Callable[[str, tuple[Any, ...]], Awaitable[Any]]


async def read_guard(source: aiosqlite.Connection | Tx, query: GuardQuery) -> GuardState:
    """The kill switch and the run counts of ``query`` from one connection's view of the store.

    Inside a unit of work this is the writer's transaction, so a step claimed in the same unit is
    counted against what every process committed before it, and a pause committed by another
    process is seen.
    """
    fetchone: FetchOne
    if isinstance(source, Tx):
        fetchone = source.fetchone
    else:
        async def fetchone(sql: str, params: tuple[Any, ...]) -> Any:
            async with source.execute(sql, params) as cur:
                return await cur.fetchone()

    row = await fetchone("SELECT value FROM settings WHERE key = ?", (KILL_SWITCH_KEY,))
    kill = KillSwitch.from_setting(loads(row[0]) if row else None)
    tool_window = pb_window = tool_runs = tool_failures = pb_runs = pb_failures = 0
    if query.tool_window is not None:
        tool_window = int((await fetchone(TOOL_RUNS_SQL, (query.tool, query.tool_window.since)))[0])
    if query.playbook_window is not None:
        pb_window = int((await fetchone(PLAYBOOK_RUNS_SQL, (query.playbook_id, query.playbook_window.since)))[0])
    if query.history is not None:
        tool_runs, tool_failures = await fetchone(TOOL_RUNS_SQL, (query.tool, query.history.since))
        pb_runs, pb_failures = await fetchone(PLAYBOOK_RUNS_SQL, (query.playbook_id, query.history.since))
    return GuardState(kill_switch=kill, tool_runs_in_window=tool_window, playbook_runs_in_window=pb_window,
                      tool_runs=int(tool_runs), tool_failures=int(tool_failures), playbook_runs=int(pb_runs),
                      playbook_failures=int(pb_failures))


STATE_EVENTS = {
    TaskState.needs_approval: ev.PROPOSED_ACTION,
    TaskState.completed: ev.COMPLETED,
    TaskState.failed_terminal: ev.FAILED,
    TaskState.failed_retryable: ev.FAILED,
    TaskState.escalated_to_human: ev.ESCALATED,
    TaskState.rejected: ev.REJECTED,
    TaskState.cancelled: ev.CANCELLED,
}


class TaskTx:
    """Domain operations inside one transaction."""

    def __init__(self, tx: Tx) -> None:
        self._tx = tx

    def audit(self, entry: AuditEntry) -> None:
        self._tx.audit(entry)

    def event(self, event: Event) -> None:
        self._tx.event(event)

    # -- tasks -------------------------------------------------------------------------------

    async def get_task(self, task_id: int) -> Task:
        row = await self._tx.fetchone(f"SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?", (task_id,))
        if row is None:
            raise UnknownTask(f"there is no task {task_id}; list tasks with `ooda tasks` or /ops tasks")
        return task_from_row(row)

    async def create_task(self, *, playbook_id: str, playbook_version: str, group_key: str, title: str,
                          environment: str, severity: str, requester: str, args: dict[str, Any],
                          signal_ids: list[str], last_signal_at: str | None) -> Task:
        at = now_iso()
        cur = await self._tx.execute(
            "INSERT INTO tasks (playbook_id, playbook_version, state, group_key, title, environment, severity, "
            "requester, signal_count, created_at, updated_at, last_signal_at, args) "
            "VALUES (?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (playbook_id, playbook_version, group_key, title, environment, severity, requester,
             len(signal_ids), at, at, last_signal_at or at, dumps(args)),
        )
        task_id = int(cur.lastrowid or 0)
        if signal_ids:
            await self._tx.conn.executemany(
                "UPDATE signals SET task_id = ? WHERE id = ?", [(task_id, sid) for sid in signal_ids]
            )
        self.event(Event(ev.CREATED, task_id, {"playbook": playbook_id, "group_key": group_key,
                                               "signals": len(signal_ids), "requester": requester}))
        self.audit(AuditEntry(requester, "task.created", task_id,
                              {"playbook": playbook_id, "version": playbook_version, "group_key": group_key,
                               "signal_ids": signal_ids[:100], "args": args}))
        return await self.get_task(task_id)

    async def attach_signals(self, task_id: int, signal_ids: list[str], last_signal_at: str) -> None:
        await self._tx.conn.executemany(
            "UPDATE signals SET task_id = ? WHERE id = ?", [(task_id, sid) for sid in signal_ids]
        )
        await self._tx.execute(
            "UPDATE tasks SET signal_count = (SELECT count(*) FROM signals WHERE task_id = ?), "
            "last_signal_at = ?, updated_at = ? WHERE id = ?",
            (task_id, last_signal_at, now_iso(), task_id),
        )
        self.event(Event(ev.SIGNALS_ATTACHED, task_id, {"added": len(signal_ids)}))

    async def signal_tally(self, task_id: int) -> SignalTally:
        """How many signals the task has, how many of them are resolved, and when the last one ended."""
        total, resolved = await self._tx.fetchone(
            "SELECT count(*), coalesce(sum(status = 'resolved'), 0) FROM signals WHERE task_id = ?", (task_id,))
        # julianday: the senders' times may carry different offsets, so text order is not time order.
        last = await self._tx.fetchone(
            "SELECT ends_at FROM signals WHERE task_id = ? AND ends_at IS NOT NULL "
            "ORDER BY julianday(ends_at) DESC LIMIT 1", (task_id,))
        return SignalTally(total=total, resolved=resolved, last_ended_at=last[0] if last else None)

    async def record_resolution(self, task_id: int, resolved_at: str) -> None:
        # Clears refired_at: every alert is resolved again, whatever fired in between.
        await self._tx.execute("UPDATE tasks SET resolved_at = ?, refired_at = NULL, updated_at = ? WHERE id = ?",
                               (resolved_at, now_iso(), task_id))

    async def record_refire(self, task_id: int, refired_at: str) -> None:
        await self._tx.execute("UPDATE tasks SET refired_at = ?, updated_at = ? WHERE id = ?",
                               (refired_at, now_iso(), task_id))

    async def tasks_with_resolved_alerts(self, task_ids: list[int]) -> set[int]:
        """Those of ``task_ids`` whose every alert stands resolved (none fired again since)."""
        found: set[int] = set()
        for start in range(0, len(task_ids), 500):  # SQLite's bound-parameter limit
            chunk = task_ids[start:start + 500]
            rows = await self._tx.fetchall(
                f"SELECT id FROM tasks WHERE id IN ({', '.join('?' * len(chunk))}) AND resolved_at IS NOT NULL "
                "AND refired_at IS NULL", tuple(chunk))
            found.update(r[0] for r in rows)
        return found

    async def latest_task_for_group(self, group_key: str) -> tuple[Task, str | None] | None:
        row = await self._tx.fetchone(
            f"SELECT {TASK_COLUMNS}, last_signal_at FROM tasks WHERE group_key = ? ORDER BY id DESC LIMIT 1",
            (group_key,),
        )
        return (task_from_row(row), row[19]) if row else None

    async def set_state(self, task_id: int, expected: TaskState | set[TaskState], target: TaskState, *,
                        actor: str, reason: str = "", outcome: str | None = None) -> Task:
        """Move a task from one of ``expected`` to ``target``; Conflict if it is elsewhere now."""
        task = await self.get_task(task_id)
        allowed = {expected} if isinstance(expected, TaskState) else expected
        if task.state not in allowed:
            raise Conflict(f"task {task_id} is {task.state}, not {' or '.join(sorted(allowed))}; "
                           "someone else may have acted on it already")
        check_transition(task_id, task.state, target)
        at = now_iso()
        closed = at if target in FINAL_STATES else None
        await self._tx.execute(
            "UPDATE tasks SET state = ?, updated_at = ?, closed_at = ?, outcome = coalesce(?, outcome) "
            "WHERE id = ? AND state = ?",
            (target.value, at, closed, outcome, task_id, task.state.value),
        )
        payload = {"from": task.state.value, "to": target.value, "reason": reason, "actor": actor}
        self.event(Event(ev.STATE_CHANGED, task_id, payload))
        if target in STATE_EVENTS:
            self.event(Event(STATE_EVENTS[target], task_id, payload))
        self.audit(AuditEntry(actor, f"task.{target.value}", task_id, {"from": task.state.value, "reason": reason}))
        return task.model_copy(update={"state": target, "outcome": outcome or task.outcome})

    async def save_proposal(self, task_id: int, proposal: dict[str, Any], title: str | None = None) -> None:
        await self._tx.execute(
            "UPDATE tasks SET proposal = ?, title = coalesce(?, title), updated_at = ? WHERE id = ?",
            (dumps(proposal), title, now_iso(), task_id),
        )

    async def save_messages(self, task_id: int, messages: list[dict[str, Any]]) -> None:
        await self._tx.execute("UPDATE tasks SET messages = ? WHERE id = ?", (dumps(messages), task_id))

    # -- steps -------------------------------------------------------------------------------

    async def insert_step(self, *, task_id: int, kind: str, idx: int, name: str, tool: str, category: str,
                          params: dict[str, Any], rollback: dict[str, Any] | None,
                          decision: dict[str, Any] | None, state: str, idempotency_key: str) -> int:
        cur = await self._tx.execute(
            "INSERT INTO steps (task_id, kind, idx, name, tool, category, params, rollback, decision, state, "
            "idempotency_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (task_id, kind, idx, name, tool, category, dumps(params),
             dumps(rollback) if rollback else None,
             dumps(decision) if decision else None, state, idempotency_key),
        )
        return int(cur.lastrowid or 0)

    async def update_step(self, step_id: int, **fields: Any) -> None:
        encoded = {k: (dumps(v) if k in {"params", "rollback", "decision", "result"}
                       and v is not None else v) for k, v in fields.items()}
        assignments = ", ".join(f"{k} = ?" for k in encoded)
        await self._tx.execute(f"UPDATE steps SET {assignments} WHERE id = ?", (*encoded.values(), step_id))

    async def get_step(self, step_id: int) -> StepRecord:
        row = await self._tx.fetchone(f"SELECT {STEP_COLUMNS} FROM steps WHERE id = ?", (step_id,))
        if row is None:
            raise UnknownTask(f"there is no step {step_id}")
        return step_from_row(row)

    async def set_step_state(self, step_id: int, expected: str, target: str, **fields: Any) -> bool:
        """Compare-and-set a step's state (and other columns); False when it is no longer ``expected``."""
        encoded = {k: (dumps(v) if k in {"params", "rollback", "decision", "result"}
                       and v is not None else v) for k, v in fields.items()}
        assignments = "".join(f", {k} = ?" for k in encoded)
        cur = await self._tx.execute(f"UPDATE steps SET state = ?{assignments} WHERE id = ? AND state = ?",
                                     (str(target), *encoded.values(), step_id, str(expected)))
        return cur.rowcount == 1

    async def claim_step(self, step_id: int, started_at: str) -> bool:
        """Mark a pending step running; False if it is not pending (someone else claimed it)."""
        cur = await self._tx.execute(
            "UPDATE steps SET state = 'running', started_at = ?, attempts = attempts + 1 "
            "WHERE id = ? AND state = 'pending'",
            (started_at, step_id),
        )
        return cur.rowcount == 1

    async def remove_unstarted_steps(self, task_id: int) -> int:
        """Delete the task's steps that never ran (a plan about to be replaced); returns how many."""
        cur = await self._tx.execute(
            "DELETE FROM steps WHERE task_id = ? AND kind = 'step' AND state IN ('pending', 'denied', 'skipped')",
            (task_id,))
        return int(cur.rowcount)

    async def steps(self, task_id: int, kind: str | None = None) -> list[StepRecord]:
        return [step_from_row(r) for r in await self._tx.fetchall(*steps_query(task_id, kind))]

    # -- approvals ---------------------------------------------------------------------------

    async def add_approval(self, task_id: int, actor: str, display: str, verdict: str,
                           reason: str | None, edits: dict[str, Any] | None,
                           roles: list[str] | None = None) -> bool:
        """Record a decision; False when this person already gave this verdict (a double click)."""
        cur = await self._tx.execute(
            "INSERT INTO approvals (task_id, actor, display, verdict, reason, edits, created_at, roles) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(task_id, actor, verdict) DO NOTHING",
            (task_id, actor, display, verdict, reason, dumps(edits) if edits else None, now_iso(),
             dumps(sorted(roles)) if roles is not None else None),
        )
        return cur.rowcount == 1

    async def approvals(self, task_id: int) -> list[ApprovalRecord]:
        rows = await self._tx.fetchall(
            f"SELECT {APPROVAL_COLUMNS} FROM approvals WHERE task_id = ? ORDER BY id", (task_id,)
        )
        return [approval_from_row(r) for r in rows]

    # -- settings ----------------------------------------------------------------------------

    async def set_setting(self, key: str, value: Any, actor: str) -> None:
        await self._tx.execute(
            "INSERT INTO settings (key, value, updated_at, updated_by) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at, "
            "updated_by = excluded.updated_by",
            (key, dumps(value), now_iso(), actor),
        )

    async def get_setting(self, key: str) -> Any:
        row = await self._tx.fetchone("SELECT value FROM settings WHERE key = ?", (key,))
        return loads(row[0]) if row else None

    async def guard(self, query: GuardQuery) -> GuardState:
        return await read_guard(self._tx, query)

    # -- outbox (chat deliveries that failed and wait for a retry) ---------------------------

    async def add_outbox(self, task_id: int, surface: str, note: str | None, error: str) -> None:
        await self._tx.execute(
            "INSERT INTO outbox (task_id, surface, note, attempts, last_error, created_at) VALUES (?, ?, ?, 1, ?, ?)",
            (task_id, surface, note, error[:500], now_iso()),
        )

    async def remove_outbox(self, outbox_id: int) -> None:
        await self._tx.execute("DELETE FROM outbox WHERE id = ?", (outbox_id,))

    async def outbox_failed(self, outbox_id: int, error: str) -> None:
        await self._tx.execute("UPDATE outbox SET attempts = attempts + 1, last_error = ? WHERE id = ?",
                               (error[:500], outbox_id))
