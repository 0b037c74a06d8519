"""Versioned schema migrations for the SQLite store, applied in order at start.

Append new migrations to the end; never edit one that has shipped.
"""

from __future__ import annotations

MIGRATIONS: list[str] = [
    # 1: the foundation
    """
    CREATE TABLE signals (
        id TEXT PRIMARY KEY,
        seq INTEGER NOT NULL,
        source TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        status TEXT NOT NULL,
        severity TEXT NOT NULL,
        title TEXT NOT NULL,
        labels TEXT NOT NULL,
        annotations TEXT NOT NULL,
        starts_at TEXT,
        ends_at TEXT,
        url TEXT,
        raw TEXT NOT NULL,
        received_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        deliveries INTEGER NOT NULL DEFAULT 1,
        task_id INTEGER
    );
    CREATE UNIQUE INDEX signals_by_seq ON signals(seq);
    CREATE INDEX signals_by_task ON signals(task_id);

    CREATE TABLE tasks (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        playbook_id TEXT NOT NULL,
        playbook_version TEXT NOT NULL,
        state TEXT NOT NULL,
        group_key TEXT NOT NULL,
        title TEXT NOT NULL,
        environment TEXT NOT NULL,
        severity TEXT NOT NULL,
        requester TEXT NOT NULL,
        signal_count INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        closed_at TEXT,
        last_signal_at TEXT,
        args TEXT NOT NULL DEFAULT '{}',
        proposal TEXT,
        messages TEXT NOT NULL DEFAULT '[]',
        outcome TEXT
    );
    CREATE INDEX tasks_by_group ON tasks(group_key, state);
    CREATE INDEX tasks_by_state ON tasks(state);

    CREATE TABLE steps (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        task_id INTEGER NOT NULL REFERENCES tasks(id),
        kind TEXT NOT NULL,
        idx INTEGER NOT NULL,
        name TEXT NOT NULL,
        tool TEXT NOT NULL,
        category TEXT NOT NULL,
        params TEXT NOT NULL,
        rollback TEXT,
        decision TEXT,
        state TEXT NOT NULL,
        idempotency_key TEXT NOT NULL UNIQUE,
        result TEXT,
        error TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        started_at TEXT,
        finished_at TEXT
    );
    CREATE INDEX steps_by_task ON steps(task_id, kind, idx);
    CREATE INDEX steps_by_tool ON steps(tool, started_at);

    CREATE TABLE approvals (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        task_id INTEGER NOT NULL REFERENCES tasks(id),
        actor TEXT NOT NULL,
        display TEXT NOT NULL,
        verdict TEXT NOT NULL,
        reason TEXT,
        edits TEXT,
        created_at TEXT NOT NULL,
        UNIQUE (task_id, actor, verdict)
    );

    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        task_id INTEGER,
        name TEXT NOT NULL,
        payload TEXT NOT NULL,
        correlation_id TEXT,
        created_at TEXT NOT NULL
    );
    CREATE INDEX events_by_task ON events(task_id);

    CREATE TABLE audit (
        seq INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        task_id INTEGER,
        correlation_id TEXT,
        data TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL,
        signature TEXT
    );
    CREATE INDEX audit_by_task ON audit(task_id);
    -- Append-only for everyone who goes through SQLite politely; verify catches the rest.
    CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
        BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
    CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
        BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;

    CREATE TABLE settings (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        updated_by TEXT NOT NULL
    );

    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        task_id INTEGER NOT NULL,
        surface TEXT NOT NULL,
        note TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        created_at TEXT NOT NULL
    );

    CREATE TABLE digests (
        day TEXT PRIMARY KEY,
        sent_at TEXT NOT NULL
    );
    """,
    # 2: when every alert of a task resolved, and when one fired again after that
    """
    ALTER TABLE tasks ADD COLUMN resolved_at TEXT;
    ALTER TABLE tasks ADD COLUMN refired_at TEXT;
    """,
    # 3: the roles an approver held when approving, so each step counts only approvals that may
    # approve it (quorum per step); NULL for approvals recorded before
    """
    ALTER TABLE approvals ADD COLUMN roles TEXT;
    """,
    # 4: the process that put a step in running, so a replica starting beside a live one leaves
    # the steps that one is running alone (PostgreSQL; NULL where one process owns the store)
    """
    ALTER TABLE steps ADD COLUMN claimed_by INTEGER;
    """,
    # 5: the running steps, for /readyz's lag: a partial index holds only those rows, so finding
    # them does not scan every step ever run, and costs a write only when a step starts or ends
    """
    CREATE INDEX steps_running ON steps(started_at) WHERE state = 'running';
    """,
]
