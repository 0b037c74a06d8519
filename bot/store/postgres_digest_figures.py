"""The digest's figures in PostgreSQL's SQL: the same figures with the same meaning as
``bot/store/digest_figures.py`` (read its docstring for what counts where), so both stores report the
same numbers for the same history (``tests/store/test_contract_digest.py`` checks it).

What differs from SQLite: JSON documents are text columns read through ``::jsonb`` operators,
durations come from ``extract(epoch ...)`` over ``timestamptz``, ``CROSS JOIN ... ON`` is a plain
join, and names that break a tie sort bytewise (``COLLATE "C"``) as SQLite's do. Percentiles stay
nearest-rank in integers (the shared ``PERCENTILES``): ``percentile_disc`` computes its rank in
floating point, which for some counts (0.9 x 70 = 63.000...01) picks the next value and would
make the two stores disagree.
"""

from __future__ import annotations

from bot.store.digest_figures import PERCENTILES, SQL, Dialect

_SECONDS = "extract(epoch FROM CAST({later} AS timestamptz) - CAST({earlier} AS timestamptz))"

# These read the same in both dialects.
_PORTABLE = ("tasks", "kill_switch", "approvals_by_person", "failed_checks")

PG_SQL: dict[str, str] = {name: SQL[name] for name in _PORTABLE} | {
    "alerts_by_source": """
        WITH {d} SELECT d.i, s.source, count(*) FROM signals s
        JOIN d ON s.received_at >= d.lo AND s.received_at < d.hi GROUP BY d.i, s.source""",
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
            SELECT started_at, coalesce(decision::jsonb ->> 'autonomy', 'unknown'),
                (decision::jsonb ->> 'verdict') = 'allow' FROM steps
            WHERE kind = 'step' AND started_at IS NOT NULL AND category IN ('write_reversible', 'write_irreversible'))
        SELECT d.i, x.level, count(*) FILTER (WHERE x.auto), count(*) FROM d JOIN x ON x.at >= d.lo AND x.at < d.hi
        GROUP BY d.i, x.level""",
    "policy_denials": """
        WITH {d}, x(at, rule) AS (
            SELECT a.at, s.value ->> 'rule' FROM audit a
            CROSS JOIN LATERAL jsonb_array_elements(CASE WHEN jsonb_typeof(a.data::jsonb -> 'steps') = 'array'
                THEN a.data::jsonb -> 'steps' ELSE '[]'::jsonb END) AS s(value)
            WHERE a.action = 'task.proposal' AND (s.value ->> 'verdict') = 'deny'
            UNION ALL
            SELECT at, split_part(substr(r, strpos(r, ' at run time (') + 14), ': ', 1)
            FROM (SELECT at, data::jsonb ->> 'reason' AS r FROM audit WHERE action = 'task.escalated_to_human') e
            WHERE r LIKE 'policy denied % at run time (%: %')
        SELECT d.i, split_part(x.rule, '(', 1), count(*) FROM d JOIN x ON x.at >= d.lo AND x.at < d.hi
        GROUP BY 1, 2""",
    "guardrail_hits": """
        WITH {d}, x(at, reason) AS (
            SELECT at, 'tool refused: ' || (data::jsonb ->> 'tool') || ' (' || (data::jsonb ->> 'policy_rule')
                || ')' FROM audit WHERE action = 'tool.call' AND (data::jsonb ->> 'outcome') = 'refused'
            UNION ALL
            SELECT at, 'command refused: ' || coalesce(data::jsonb ->> 'command', '?') FROM audit
            WHERE action = 'command.refused')
        SELECT d.i, x.reason, count(*) FROM d JOIN x ON x.at >= d.lo AND x.at < d.hi GROUP BY 1, 2""",
    "noisiest_alerts": """
        WITH {d}, x(i, name, n) AS (
            SELECT d.i, coalesce(s.labels::jsonb ->> 'alertname', nullif(s.title, ''), '(untitled)'),
                sum(s.deliveries)
            FROM signals s JOIN d ON s.updated_at >= d.lo AND s.updated_at < d.hi GROUP BY 1, 2),
        top(name) AS (SELECT name FROM x WHERE i = {last_day} ORDER BY n DESC, name COLLATE "C" LIMIT {top})
        SELECT x.i, x.name, x.n FROM x JOIN top USING (name)""",
    "noisiest_services": """
        WITH {d}, x(i, name, n) AS (
            SELECT d.i, coalesce(s.labels::jsonb ->> 'service', s.labels::jsonb ->> 'workload',
                s.labels::jsonb ->> 'job'), sum(s.deliveries)
            FROM signals s JOIN d ON s.updated_at >= d.lo AND s.updated_at < d.hi GROUP BY 1, 2),
        top(name) AS (SELECT name FROM x WHERE i = {last_day} AND name IS NOT NULL
            ORDER BY n DESC, name COLLATE "C" LIMIT {top})
        SELECT x.i, x.name, x.n FROM x JOIN top USING (name)""",
}

# asyncpg numbers its parameters and infers their types from the first use: cast each one.
POSTGRESQL = Dialect(sql=PG_SQL, percentiles=PERCENTILES, param=lambda position, type_: f"${position}::{type_}")
