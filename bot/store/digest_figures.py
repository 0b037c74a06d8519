"""The digest's figures, each computed by one SQL query over the store (no rows are loaded to be
counted in Python). The statements here are SQLite's (``SQLITE``); ``bot/store/postgres_digest_figures.py``
holds PostgreSQL's, with the same meaning, and each store passes its own ``Dialect``.

Every query starts from the same seven day windows (``DayWindow``: oldest first, the digest's own
day last) given as a ``VALUES`` list, and answers one row per day and key, so each figure comes with
its 7-day trend. A day is a window ``[start, end)`` of stored UTC timestamps: ``ooda digest --date``
uses the calendar days of the digest's time zone, the scheduled digest the 24 hours up to now.

What counts where, so the numbers can be checked by hand:
- alerts received: signals first received in the window, by source (a redelivery is not a new alert);
- tasks opened: created in the window; completed / failed / rejected / escalated: reached that
  final state in the window (``failed`` is ``failed_terminal``, ``escalated`` is
  ``escalated_to_human``); undone: tasks with a rollback step that succeeded in the window;
- time to proposal: task opened → its first ``task.proposal`` audit record; time to approval: task
  opened → its first approval; time to resolution: task opened → closed, completed tasks only;
  each counted on the day the later moment falls in, as p50 and p90 by the nearest-rank method;
- MTTA: the mean of task opened → first decision by a person (approve or reject); MTTR: the mean
  of time to resolution;
- steps run automatically: write steps started in the window whose policy decision ran them
  without approval, out of all write steps started, by the effective autonomy level;
- policy denials: steps denied when planned (``task.proposal`` audit records) or at run time
  (``task.escalated_to_human`` with a "policy denied" reason), by the rule's family (the rule
  without its details in parentheses);
- guardrail hits: tool calls the gateway refused and commands refused to a person, by reason;
- kill switch: how often it was pulled and released;
- noisiest alerts and services: deliveries received in the window (redeliveries count: they are
  the noise), the 5 loudest of the digest's day with their trend;
- approvals per person: approvals given in the window;
- scheduled checks that failed: tasks the scheduler started that ended failed or escalated.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

Query = Callable[[str, tuple[Any, ...]], Awaitable[list[Any]]]

DAYS = 7
TOP = 5
SCHEDULER = "scheduler"  # bot.chat.commands.SCHEDULER: the requester of scheduled checks


@dataclass(frozen=True)
class DayWindow:
    label: date  # the day the window is named by (its end, in the digest's time zone)
    start: datetime
    end: datetime


def calendar_days(day: date, zone: ZoneInfo, count: int = DAYS) -> list[DayWindow]:
    """The ``count`` calendar days ending with ``day`` in ``zone`` (a 23- or 25-hour day stays one day)."""
    days = [day - timedelta(days=count - 1 - i) for i in range(count)]
    return [DayWindow(d, datetime.combine(d, time(), zone), datetime.combine(d + timedelta(days=1), time(), zone))
            for d in days]


def rolling_days(until: datetime, zone: ZoneInfo, count: int = DAYS) -> list[DayWindow]:
    """The ``count`` 24-hour windows ending at ``until``, each named by the local day it ends on."""
    ends = [until - timedelta(days=count - 1 - i) for i in range(count)]
    return [DayWindow((end - timedelta(microseconds=1)).astimezone(zone).date(), end - timedelta(days=1), end)
            for end in ends]


Trend = list[int]


@dataclass
class Durations:
    """Per day: how many, and p50/p90 in seconds (None on a day with none)."""

    count: Trend
    p50: list[float | None]
    p90: list[float | None]


@dataclass
class Figures:
    days: list[DayWindow]
    alerts_by_source: dict[str, Trend] = field(default_factory=dict)
    tasks: dict[str, Trend] = field(default_factory=dict)  # opened, completed, failed, rejected, escalated, undone
    time_to_proposal: Durations | None = None
    time_to_approval: Durations | None = None
    time_to_resolution: Durations | None = None
    mtta: list[float | None] = field(default_factory=list)
    mttr: list[float | None] = field(default_factory=list)
    automatic_steps: dict[str, tuple[Trend, Trend]] = field(default_factory=dict)  # level -> (automatic, all)
    policy_denials: dict[str, Trend] = field(default_factory=dict)
    guardrail_hits: dict[str, Trend] = field(default_factory=dict)
    kill_switch: dict[str, Trend] = field(default_factory=dict)  # "pulled", "released"
    noisiest_alerts: dict[str, Trend] = field(default_factory=dict)  # loudest first
    noisiest_services: dict[str, Trend] = field(default_factory=dict)
    approvals_by_person: dict[str, Trend] = field(default_factory=dict)
    failed_checks: dict[str, Trend] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        def durations(d: Durations | None) -> dict[str, Any] | None:
            return None if d is None else {"count": d.count, "p50_s": d.p50, "p90_s": d.p90}

        return {
            "days": [{"day": d.label.isoformat(), "start": d.start.isoformat(), "end": d.end.isoformat()}
                     for d in self.days],
            "alerts_by_source": self.alerts_by_source, "tasks": self.tasks,
            "time_to_proposal": durations(self.time_to_proposal),
            "time_to_approval": durations(self.time_to_approval),
            "time_to_resolution": durations(self.time_to_resolution),
            "mtta_s": self.mtta, "mttr_s": self.mttr,
            "automatic_steps": {level: {"automatic": auto, "all": total}
                                for level, (auto, total) in self.automatic_steps.items()},
            "policy_denials": self.policy_denials, "guardrail_hits": self.guardrail_hits,
            "kill_switch": self.kill_switch, "noisiest_alerts": self.noisiest_alerts,
            "noisiest_services": self.noisiest_services, "approvals_by_person": self.approvals_by_person,
            "failed_checks": self.failed_checks,
        }


@dataclass(frozen=True)
class Dialect:
    """One database's SQL for the figures: the statements (``SQL`` keys) and how it writes a parameter.

    The statements hold markers the dialect fills: ``{d}`` the windows CTE, ``{percentiles}`` the
    nearest-rank tail of the duration figures, ``{last_day}`` and ``{top}`` the parameters that pick
    the loudest names. ``param(position, type)`` writes the parameter at a 1-based position.
    """

    sql: dict[str, str]
    percentiles: str
    param: Callable[[int, str], str]


def _windows(days: list[DayWindow], dialect: Dialect) -> tuple[str, tuple[Any, ...]]:
    """The ``d(i, lo, hi)`` CTE every query joins on, and its parameters."""
    rows = []
    params: list[Any] = []
    for i, d in enumerate(days):
        first = len(params) + 1
        rows.append(f"({dialect.param(first, 'int')}, {dialect.param(first + 1, 'text')}, "
                    f"{dialect.param(first + 2, 'text')})")
        params += [i, _utc(d.start), _utc(d.end)]
    return f"d(i, lo, hi) AS (VALUES {', '.join(rows)})", tuple(params)


def _utc(moment: datetime) -> str:
    # Stored timestamps are UTC isoformat strings, so windows compare as text in the same form.
    return moment.astimezone(ZoneInfo("UTC")).isoformat().replace("Z", "+00:00")


_SECONDS = "(julianday({later}) - julianday({earlier})) * 86400.0"

# The SQL of each figure. ``{d}`` is the windows CTE; every query answers (i, key, value...) rows.
# Over signals (the one large table) ``signals CROSS JOIN d`` makes SQLite scan the signals once
# and match each row to its day, instead of scanning them once per day (7x the work at 1M rows).
SQL: dict[str, str] = {
    "alerts_by_source": """
        WITH {d} SELECT d.i, s.source, count(*) FROM signals s
        CROSS JOIN d ON s.received_at >= d.lo AND s.received_at < d.hi GROUP BY d.i, s.source""",
    "tasks": """
        WITH {d}, outcomes(at, outcome) AS (
            SELECT created_at, 'opened' FROM tasks
            UNION ALL SELECT closed_at, CASE state WHEN 'completed' THEN 'completed'
                WHEN 'failed_terminal' THEN 'failed' WHEN 'rejected' THEN 'rejected'
                WHEN 'escalated_to_human' THEN 'escalated' END
                FROM tasks WHERE closed_at IS NOT NULL
                AND state IN ('completed', 'failed_terminal', 'rejected', 'escalated_to_human')
            UNION ALL SELECT max(finished_at), 'undone' FROM steps
                WHERE kind = 'rollback' AND state = 'succeeded' GROUP BY task_id)
        SELECT d.i, o.outcome, count(*) FROM d JOIN outcomes o ON o.at >= d.lo AND o.at < d.hi
        GROUP BY d.i, o.outcome""",
    "time_to_proposal": """
        WITH {d}, x(at, secs) AS (
            SELECT p.at, """ + _SECONDS.format(later="p.at", earlier="t.created_at") + """ FROM tasks t
            JOIN (SELECT task_id, min(at) AS at FROM audit WHERE action = 'task.proposal' GROUP BY task_id) p
            ON p.task_id = t.id)
        {percentiles}""",
    "time_to_approval": """
        WITH {d}, x(at, secs) AS (
            SELECT a.at, """ + _SECONDS.format(later="a.at", earlier="t.created_at") + """ FROM tasks t
            JOIN (SELECT task_id, min(created_at) AS at FROM approvals WHERE verdict = 'approve' GROUP BY task_id) a
            ON a.task_id = t.id)
        {percentiles}""",
    "time_to_resolution": """
        WITH {d}, x(at, secs) AS (
            SELECT closed_at, """ + _SECONDS.format(later="closed_at", earlier="created_at") + """ FROM tasks
            WHERE state = 'completed' AND closed_at IS NOT NULL)
        {percentiles}""",
    "mtta": """
        WITH {d}, x(at, secs) AS (
            SELECT a.at, """ + _SECONDS.format(later="a.at", earlier="t.created_at") + """ FROM tasks t
            JOIN (SELECT task_id, min(created_at) AS at FROM approvals GROUP BY task_id) a ON a.task_id = t.id)
        SELECT d.i, '', avg(x.secs) FROM d JOIN x ON x.at >= d.lo AND x.at < d.hi GROUP BY d.i""",
    "mttr": """
        WITH {d}, x(at, secs) AS (
            SELECT closed_at, """ + _SECONDS.format(later="closed_at", earlier="created_at") + """ FROM tasks
            WHERE state = 'completed' AND closed_at IS NOT NULL)
        SELECT d.i, '', avg(x.secs) FROM d JOIN x ON x.at >= d.lo AND x.at < d.hi GROUP BY d.i""",
    "automatic_steps": """
        WITH {d}, x(at, level, auto) AS (
            SELECT started_at, coalesce(json_extract(decision, '$.autonomy'), 'unknown'),
                json_extract(decision, '$.verdict') = 'allow' FROM steps
            WHERE kind = 'step' AND started_at IS NOT NULL AND category IN ('write_reversible', 'write_irreversible'))
        SELECT d.i, x.level, sum(x.auto), count(*) FROM d JOIN x ON x.at >= d.lo AND x.at < d.hi
        GROUP BY d.i, x.level""",
    "policy_denials": """
        WITH {d}, x(at, rule) AS (
            SELECT a.at, json_extract(s.value, '$.rule') FROM audit a, json_each(a.data, '$.steps') s
            WHERE a.action = 'task.proposal' AND json_extract(s.value, '$.verdict') = 'deny'
            UNION ALL
            SELECT at, substr(r, instr(r, ' at run time (') + 14,
                instr(substr(r, instr(r, ' at run time (') + 14), ': ') - 1)
            FROM (SELECT at, json_extract(data, '$.reason') AS r FROM audit WHERE action = 'task.escalated_to_human')
            WHERE r LIKE 'policy denied % at run time (%: %')
        SELECT d.i, CASE WHEN instr(x.rule, '(') > 0 THEN substr(x.rule, 1, instr(x.rule, '(') - 1) ELSE x.rule END,
            count(*) FROM d JOIN x ON x.at >= d.lo AND x.at < d.hi GROUP BY 1, 2""",
    "guardrail_hits": """
        WITH {d}, x(at, reason) AS (
            SELECT at, 'tool refused: ' || json_extract(data, '$.tool') || ' (' || json_extract(data, '$.policy_rule')
                || ')' FROM audit WHERE action = 'tool.call' AND json_extract(data, '$.outcome') = 'refused'
            UNION ALL
            SELECT at, 'command refused: ' || coalesce(json_extract(data, '$.command'), '?') FROM audit
            WHERE action = 'command.refused')
        SELECT d.i, x.reason, count(*) FROM d JOIN x ON x.at >= d.lo AND x.at < d.hi GROUP BY 1, 2""",
    "kill_switch": """
        WITH {d} SELECT d.i, CASE a.action WHEN 'kill_switch.on' THEN 'pulled' ELSE 'released' END, count(*)
        FROM d JOIN audit a ON a.at >= d.lo AND a.at < d.hi WHERE a.action IN ('kill_switch.on', 'kill_switch.off')
        GROUP BY 1, 2""",
    "noisiest_alerts": """
        WITH {d}, x(i, name, n) AS (
            SELECT d.i, coalesce(json_extract(s.labels, '$.alertname'), nullif(s.title, ''), '(untitled)'),
                sum(s.deliveries)
            FROM signals s CROSS JOIN d ON s.updated_at >= d.lo AND s.updated_at < d.hi GROUP BY 1, 2),
        top(name) AS (SELECT name FROM x WHERE i = {last_day} ORDER BY n DESC, name LIMIT {top})
        SELECT x.i, x.name, x.n FROM x JOIN top USING (name)""",
    "noisiest_services": """
        WITH {d}, x(i, name, n) AS (
            SELECT d.i, coalesce(json_extract(s.labels, '$.service'), json_extract(s.labels, '$.workload'),
                json_extract(s.labels, '$.job')), sum(s.deliveries)
            FROM signals s CROSS JOIN d ON s.updated_at >= d.lo AND s.updated_at < d.hi GROUP BY 1, 2),
        top(name) AS (SELECT name FROM x WHERE i = {last_day} AND name IS NOT NULL ORDER BY n DESC, name LIMIT {top})
        SELECT x.i, x.name, x.n FROM x JOIN top USING (name)""",
    "approvals_by_person": """
        WITH {d} SELECT d.i, a.display, count(*) FROM d JOIN approvals a ON a.created_at >= d.lo AND a.created_at < d.hi
        WHERE a.verdict = 'approve' GROUP BY 1, 2""",
    "failed_checks": """
        WITH {d} SELECT d.i, t.playbook_id, count(*) FROM d JOIN tasks t ON t.closed_at >= d.lo AND t.closed_at < d.hi
        WHERE t.requester = '""" + SCHEDULER + """' AND t.state IN ('failed_terminal', 'escalated_to_human')
        GROUP BY 1, 2""",
}

# Nearest-rank percentiles per day: the value at rank ceil(n * p / 100), in integers.
PERCENTILES = """
        , ranked(i, secs, rn, n) AS (
            SELECT d.i, x.secs, row_number() OVER (PARTITION BY d.i ORDER BY x.secs),
                count(*) OVER (PARTITION BY d.i) FROM d JOIN x ON x.at >= d.lo AND x.at < d.hi)
        SELECT i, '', max(n), max(CASE WHEN rn = (n * 50 + 99) / 100 THEN secs END),
            max(CASE WHEN rn = (n * 90 + 99) / 100 THEN secs END) FROM ranked GROUP BY i"""


SQLITE = Dialect(sql=SQL, percentiles=PERCENTILES, param=lambda position, type_: "?")


def figure_sql(name: str, days: list[DayWindow], dialect: Dialect = SQLITE) -> tuple[str, tuple[Any, ...]]:
    """The statement and parameters of one figure in ``dialect``."""
    cte, params = _windows(days, dialect)
    sql = dialect.sql[name].replace("{d}", cte).replace("{percentiles}", dialect.percentiles)
    if "{last_day}" in sql:
        sql = (sql.replace("{last_day}", dialect.param(len(params) + 1, "int"))
               .replace("{top}", dialect.param(len(params) + 2, "int")))
        params += (len(days) - 1, TOP)
    return sql, params


async def compute_figures(query: Query, days: list[DayWindow], dialect: Dialect = SQLITE) -> Figures:
    """Every figure over ``days`` (oldest first), one query each, in the store's ``dialect``."""
    figures = Figures(days=days)
    n = len(days)

    async def keyed(name: str) -> dict[str, Trend]:
        sql, params = figure_sql(name, days, dialect)
        out: dict[str, Trend] = {}
        for row in await query(sql, params):
            out.setdefault(str(row[1]), [0] * n)[row[0]] = int(row[2])
        return out

    async def durations(name: str) -> Durations:
        sql, params = figure_sql(name, days, dialect)
        result = Durations([0] * n, [None] * n, [None] * n)
        for i, _, count, p50, p90 in await query(sql, params):
            result.count[i], result.p50[i], result.p90[i] = int(count), _round(p50), _round(p90)
        return result

    async def means(name: str) -> list[float | None]:
        sql, params = figure_sql(name, days, dialect)
        out: list[float | None] = [None] * n
        for i, _, value in await query(sql, params):
            out[i] = _round(value)
        return out

    figures.alerts_by_source = dict(sorted((await keyed("alerts_by_source")).items()))
    tasks = await keyed("tasks")
    figures.tasks = {k: tasks.get(k, [0] * n)
                     for k in ("opened", "completed", "failed", "rejected", "escalated", "undone")}
    figures.time_to_proposal = await durations("time_to_proposal")
    figures.time_to_approval = await durations("time_to_approval")
    figures.time_to_resolution = await durations("time_to_resolution")
    figures.mtta = await means("mtta")
    figures.mttr = await means("mttr")
    sql, params = figure_sql("automatic_steps", days, dialect)
    for i, level, auto, total in await query(sql, params):
        autos, totals = figures.automatic_steps.setdefault(str(level), ([0] * n, [0] * n))
        autos[i], totals[i] = int(auto), int(total)
    figures.automatic_steps = dict(sorted(figures.automatic_steps.items()))
    figures.policy_denials = _by_last_day(await keyed("policy_denials"))
    figures.guardrail_hits = _by_last_day(await keyed("guardrail_hits"))
    figures.kill_switch = await keyed("kill_switch")
    figures.noisiest_alerts = _by_last_day(await keyed("noisiest_alerts"))
    figures.noisiest_services = _by_last_day(await keyed("noisiest_services"))
    figures.approvals_by_person = _by_last_day(await keyed("approvals_by_person"))
    figures.failed_checks = _by_last_day(await keyed("failed_checks"))
    return figures


def _round(seconds: Any) -> float | None:
    return None if seconds is None else round(float(seconds), 1)


def _by_last_day(trends: dict[str, Trend]) -> dict[str, Trend]:
    """Largest on the digest's day first, then by the week, then by name: the order a reader scans."""
    return dict(sorted(trends.items(), key=lambda kv: (-kv[1][-1], -sum(kv[1]), kv[0])))
