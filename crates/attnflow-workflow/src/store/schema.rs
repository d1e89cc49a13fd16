//! The workflow tables, as forward migrations for SQLite and PostgreSQL.
//! Both backends get the same tables, keys and invariants: the event log
//! and the run rows are protected by triggers, per-run counters hand out
//! gapless event and step numbers.

use attnflow_store::{Component, Migration, Table, Tables};

/// The workflow engine's tables, for `attnflow store copy|migrate`.
pub const TABLES: Tables = Tables {
    component: COMPONENT,
    tables: &[
        Table {
            name: "wf_runs",
            columns: &[
                "id",
                "workflow",
                "spec_origin",
                "spec_source",
                "status",
                "current_state",
                "epoch",
                "crash_count",
                "lease_owner",
                "lease_token",
                "lease_expires_ms",
                "created_ms",
                "updated_ms",
                "finished_ms",
                "queue",
                "ready_ms",
                "lease_ms",
                "max_crashes",
                "event_count",
                "step_count",
            ],
            serial_id: true,
        },
        Table {
            name: "wf_steps",
            columns: &[
                "run_id",
                "seq",
                "state",
                "epoch",
                "status",
                "attempt",
                "attempt_open",
                "last_outcome",
                "retry_at_ms",
                "outcome",
                "next_state",
                "started_ms",
                "finished_ms",
            ],
            serial_id: false,
        },
        Table {
            name: "wf_events",
            columns: &[
                "run_id",
                "seq",
                "at_ms",
                "kind",
                "step",
                "state",
                "attempt",
                "outcome",
                "to_state",
                "idempotency_key",
                "lease_token",
                "detail",
            ],
            serial_id: false,
        },
        Table {
            name: "wf_workers",
            columns: &[
                "name",
                "owner_prefix",
                "queues",
                "concurrency",
                "started_ms",
                "heartbeat_ms",
                "stopped_ms",
                "status",
            ],
            serial_id: false,
        },
        Table {
            name: "wf_superseded",
            columns: &[
                "id",
                "run_id",
                "step",
                "attempt",
                "idempotency_key",
                "owner",
                "lease_token",
                "at_ms",
                "detail",
            ],
            serial_id: true,
        },
    ],
};

/// The workflow engine's tables.
pub const COMPONENT: Component = Component {
    name: "workflow",
    version_table: "wf_schema_version",
    migrations: MIGRATIONS,
};

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        sqlite: r#"
CREATE TABLE wf_runs (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    workflow         TEXT    NOT NULL,
    spec_origin      TEXT    NOT NULL,
    spec_source      TEXT    NOT NULL,
    status           TEXT    NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'crashed')),
    current_state    TEXT    NOT NULL,
    epoch            INTEGER NOT NULL DEFAULT 0,
    crash_count      INTEGER NOT NULL DEFAULT 0,
    lease_owner      TEXT,
    lease_token      INTEGER NOT NULL DEFAULT 0,
    lease_expires_ms INTEGER,
    created_ms       INTEGER NOT NULL,
    updated_ms       INTEGER NOT NULL,
    finished_ms      INTEGER
);
CREATE TABLE wf_steps (
    run_id       INTEGER NOT NULL REFERENCES wf_runs(id),
    seq          INTEGER NOT NULL,
    state        TEXT    NOT NULL,
    epoch        INTEGER NOT NULL,
    status       TEXT    NOT NULL CHECK (status IN ('running', 'completed')),
    attempt      INTEGER NOT NULL DEFAULT 0,
    attempt_open INTEGER NOT NULL DEFAULT 0,
    last_outcome TEXT,
    retry_at_ms  INTEGER,
    outcome      TEXT,
    next_state   TEXT,
    started_ms   INTEGER NOT NULL,
    finished_ms  INTEGER,
    PRIMARY KEY (run_id, seq)
);
CREATE TABLE wf_events (
    run_id          INTEGER NOT NULL REFERENCES wf_runs(id),
    seq             INTEGER NOT NULL,
    at_ms           INTEGER NOT NULL,
    kind            TEXT    NOT NULL,
    step            INTEGER,
    state           TEXT,
    attempt         INTEGER,
    outcome         TEXT,
    to_state        TEXT,
    idempotency_key TEXT,
    lease_token     INTEGER,
    detail          TEXT    NOT NULL DEFAULT '',
    PRIMARY KEY (run_id, seq)
);
-- At most one step of a run is open at a time.
CREATE UNIQUE INDEX wf_steps_one_open ON wf_steps(run_id) WHERE status = 'running';
CREATE INDEX wf_events_by_kind ON wf_events(kind, run_id);
CREATE TRIGGER wf_events_no_update BEFORE UPDATE ON wf_events
BEGIN SELECT RAISE(ABORT, 'wf_events is append-only'); END;
CREATE TRIGGER wf_events_no_delete BEFORE DELETE ON wf_events
BEGIN SELECT RAISE(ABORT, 'wf_events is append-only'); END;
CREATE TRIGGER wf_runs_no_delete BEFORE DELETE ON wf_runs
BEGIN SELECT RAISE(ABORT, 'workflow runs are kept, never deleted'); END;
"#,
        postgres: r#"
CREATE TABLE wf_runs (
    id               BIGSERIAL PRIMARY KEY,
    workflow         TEXT   NOT NULL,
    spec_origin      TEXT   NOT NULL,
    spec_source      TEXT   NOT NULL,
    status           TEXT   NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'crashed')),
    current_state    TEXT   NOT NULL,
    epoch            BIGINT NOT NULL DEFAULT 0,
    crash_count      BIGINT NOT NULL DEFAULT 0,
    lease_owner      TEXT,
    lease_token      BIGINT NOT NULL DEFAULT 0,
    lease_expires_ms BIGINT,
    created_ms       BIGINT NOT NULL,
    updated_ms       BIGINT NOT NULL,
    finished_ms      BIGINT
);
CREATE TABLE wf_steps (
    run_id       BIGINT NOT NULL REFERENCES wf_runs(id),
    seq          BIGINT NOT NULL,
    state        TEXT   NOT NULL,
    epoch        BIGINT NOT NULL,
    status       TEXT   NOT NULL CHECK (status IN ('running', 'completed')),
    attempt      BIGINT NOT NULL DEFAULT 0,
    attempt_open BIGINT NOT NULL DEFAULT 0,
    last_outcome TEXT,
    retry_at_ms  BIGINT,
    outcome      TEXT,
    next_state   TEXT,
    started_ms   BIGINT NOT NULL,
    finished_ms  BIGINT,
    PRIMARY KEY (run_id, seq)
);
CREATE TABLE wf_events (
    run_id          BIGINT NOT NULL REFERENCES wf_runs(id),
    seq             BIGINT NOT NULL,
    at_ms           BIGINT NOT NULL,
    kind            TEXT   NOT NULL,
    step            BIGINT,
    state           TEXT,
    attempt         BIGINT,
    outcome         TEXT,
    to_state        TEXT,
    idempotency_key TEXT,
    lease_token     BIGINT,
    detail          TEXT   NOT NULL DEFAULT '',
    PRIMARY KEY (run_id, seq)
);
CREATE UNIQUE INDEX wf_steps_one_open ON wf_steps(run_id) WHERE status = 'running';
CREATE INDEX wf_events_by_kind ON wf_events(kind, run_id);
CREATE FUNCTION wf_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION '%', TG_ARGV[0]; END
$$;
CREATE TRIGGER wf_events_no_update BEFORE UPDATE OR DELETE ON wf_events
FOR EACH ROW EXECUTE FUNCTION wf_refuse_change('wf_events is append-only');
CREATE TRIGGER wf_events_no_truncate BEFORE TRUNCATE ON wf_events
FOR EACH STATEMENT EXECUTE FUNCTION wf_refuse_change('wf_events is append-only');
CREATE TRIGGER wf_runs_no_delete BEFORE DELETE ON wf_runs
FOR EACH ROW EXECUTE FUNCTION wf_refuse_change('workflow runs are kept, never deleted');
CREATE TRIGGER wf_runs_no_truncate BEFORE TRUNCATE ON wf_runs
FOR EACH STATEMENT EXECUTE FUNCTION wf_refuse_change('workflow runs are kept, never deleted');
"#,
    },
    // Version 2: queues and workers. A run carries the queue of its current
    // state and when it may next be claimed; counters hand out the next
    // event and step numbers under the run's row lock (gapless, and one
    // statement instead of a MAX() per row); workers register and
    // heartbeat; writes refused by fencing leave a note.
    Migration {
        version: 2,
        sqlite: r#"
ALTER TABLE wf_runs ADD COLUMN queue TEXT NOT NULL DEFAULT 'default';
ALTER TABLE wf_runs ADD COLUMN ready_ms INTEGER NOT NULL DEFAULT 0;
ALTER TABLE wf_runs ADD COLUMN lease_ms INTEGER NOT NULL DEFAULT 30000;
ALTER TABLE wf_runs ADD COLUMN max_crashes INTEGER NOT NULL DEFAULT 5;
ALTER TABLE wf_runs ADD COLUMN event_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE wf_runs ADD COLUMN step_count INTEGER NOT NULL DEFAULT 0;
UPDATE wf_runs SET
    event_count = (SELECT COALESCE(MAX(seq), 0) FROM wf_events e WHERE e.run_id = wf_runs.id),
    step_count = (SELECT COALESCE(MAX(seq), 0) FROM wf_steps s WHERE s.run_id = wf_runs.id);
CREATE INDEX wf_runs_claimable ON wf_runs(queue, ready_ms) WHERE status = 'running';
CREATE TABLE wf_workers (
    name         TEXT    PRIMARY KEY,
    owner_prefix TEXT    NOT NULL,
    queues       TEXT    NOT NULL,
    concurrency  INTEGER NOT NULL,
    started_ms   INTEGER NOT NULL,
    heartbeat_ms INTEGER NOT NULL,
    stopped_ms   INTEGER,
    status       TEXT    NOT NULL
);
CREATE TABLE wf_superseded (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id          INTEGER NOT NULL REFERENCES wf_runs(id),
    step            INTEGER NOT NULL,
    attempt         INTEGER NOT NULL,
    idempotency_key TEXT    NOT NULL,
    owner           TEXT    NOT NULL,
    lease_token     INTEGER NOT NULL,
    at_ms           INTEGER NOT NULL,
    detail          TEXT    NOT NULL
);
"#,
        postgres: r#"
ALTER TABLE wf_runs ADD COLUMN queue TEXT NOT NULL DEFAULT 'default';
ALTER TABLE wf_runs ADD COLUMN ready_ms BIGINT NOT NULL DEFAULT 0;
ALTER TABLE wf_runs ADD COLUMN lease_ms BIGINT NOT NULL DEFAULT 30000;
ALTER TABLE wf_runs ADD COLUMN max_crashes BIGINT NOT NULL DEFAULT 5;
ALTER TABLE wf_runs ADD COLUMN event_count BIGINT NOT NULL DEFAULT 0;
ALTER TABLE wf_runs ADD COLUMN step_count BIGINT NOT NULL DEFAULT 0;
UPDATE wf_runs SET
    event_count = (SELECT COALESCE(MAX(seq), 0) FROM wf_events e WHERE e.run_id = wf_runs.id),
    step_count = (SELECT COALESCE(MAX(seq), 0) FROM wf_steps s WHERE s.run_id = wf_runs.id);
CREATE INDEX wf_runs_claimable ON wf_runs(queue, ready_ms) WHERE status = 'running';
CREATE TABLE wf_workers (
    name         TEXT   PRIMARY KEY,
    owner_prefix TEXT   NOT NULL,
    queues       TEXT   NOT NULL,
    concurrency  BIGINT NOT NULL,
    started_ms   BIGINT NOT NULL,
    heartbeat_ms BIGINT NOT NULL,
    stopped_ms   BIGINT,
    status       TEXT   NOT NULL
);
CREATE TABLE wf_superseded (
    id              BIGSERIAL PRIMARY KEY,
    run_id          BIGINT NOT NULL REFERENCES wf_runs(id),
    step            BIGINT NOT NULL,
    attempt         BIGINT NOT NULL,
    idempotency_key TEXT   NOT NULL,
    owner           TEXT   NOT NULL,
    lease_token     BIGINT NOT NULL,
    at_ms           BIGINT NOT NULL,
    detail          TEXT   NOT NULL
);
"#,
    },
    // Version 3: an index that covers every column a run listing reads
    // (`attnflow ui`, `workflow runs`), so counting, grouping and paging
    // 10,000 runs never reads the rows' spec text.
    Migration {
        version: 3,
        sqlite: r#"
CREATE INDEX wf_runs_listing ON wf_runs(created_ms, id, workflow, status, current_state, crash_count, updated_ms, finished_ms);
"#,
        postgres: r#"
CREATE INDEX wf_runs_listing ON wf_runs(created_ms, id, workflow, status, current_state, crash_count, updated_ms, finished_ms);
"#,
    },
    // Version 4: PostgreSQL writes a transition in one statement (fencing,
    // step, run and events as data-modifying CTEs, one round trip), and
    // that statement must be able to abort itself when a step is not in
    // the state it expects. Plain SQL cannot raise; this function can.
    // VOLATILE, so the planner never folds a call with constant arguments
    // into an error before the CASE around it has chosen its branch.
    Migration {
        version: 4,
        sqlite: "-- SQLite writes a transition statement by statement; nothing to add.\n",
        postgres: r#"
CREATE FUNCTION wf_abort(message TEXT) RETURNS BIGINT LANGUAGE plpgsql VOLATILE AS $$
BEGIN RAISE EXCEPTION '%', message; END
$$;
"#,
    },
];
