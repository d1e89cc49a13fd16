//! The durable run store: one SQLite file (WAL, `synchronous=FULL`) with
//! runs, steps and an append-only event log.
//!
//! Invariants a newcomer must not break:
//! * Every change the engine is about to act on is committed first (an
//!   attempt is recorded as started before its action runs; a transition is
//!   recorded before the next state's step begins).
//! * Every executor write happens in one `BEGIN IMMEDIATE` transaction that
//!   first checks the executor's lease token and expiry (fencing): an
//!   executor whose lease expired or was taken over writes nothing.
//! * `wf_events` is append-only and `wf_runs` rows are never deleted; SQLite
//!   triggers enforce both.
//! * Tables carry the `wf_` prefix so that the same file can hold other
//!   crates' tables.

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use serde::Serialize;

use crate::spec::{Outcome, Spec, TerminalKind};

/// The schema version this build writes; older files are migrated forward.
pub const SCHEMA_VERSION: i64 = 1;

/// Forward migrations: `(version, SQL)`; migration `v` turns a version
/// `v - 1` store into a version `v` store.
const MIGRATIONS: &[(i64, &str)] = &[(
    1,
    r#"
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
)];

/// A source of "now" in milliseconds since the Unix epoch; tests inject a
/// [`ManualClock`] so that lease expiry never depends on wall-clock timing.
pub trait Clock: Send + Sync {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_millis() as i64)
    }
}

/// A clock that moves only when told to.
#[derive(Debug, Default)]
pub struct ManualClock {
    now: AtomicI64,
}

impl ManualClock {
    /// A clock showing `now_ms`.
    pub fn new(now_ms: i64) -> Self {
        ManualClock {
            now: AtomicI64::new(now_ms),
        }
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        self.now.fetch_add(by.as_millis() as i64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.now.load(Ordering::SeqCst)
    }
}

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite refused an operation.
    #[error("workflow store {path}: {operation}: {source}")]
    Sqlite {
        /// The database file.
        path: String,
        /// What the store was doing.
        operation: &'static str,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// The file was written by a newer attnflow.
    #[error("workflow store {path}: schema version {found} is newer than this attnflow supports ({supported}); use a newer attnflow")]
    SchemaTooNew {
        /// The database file.
        path: String,
        /// The file's version.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },
    /// No run with that id.
    #[error("workflow store {path}: no run with id {run}")]
    UnknownRun {
        /// The database file.
        path: String,
        /// The id asked for.
        run: i64,
    },
    /// This executor's lease expired or was taken over; it must stop.
    #[error("run {run}: this executor's lease (token {token}) is no longer valid: {reason}; its writes are rejected")]
    LeaseLost {
        /// The run.
        run: i64,
        /// The executor's token.
        token: i64,
        /// Why.
        reason: String,
    },
    /// Another live executor holds the run.
    #[error("run {run} is being executed by {owner} (its lease runs for {remaining_ms} ms more); wait for it or let the lease expire")]
    LeaseHeld {
        /// The run.
        run: i64,
        /// The holder.
        owner: String,
        /// Time left on its lease.
        remaining_ms: i64,
    },
    /// The run already reached a terminal state.
    #[error("run {run} already finished: {status}")]
    Finished {
        /// The run.
        run: i64,
        /// `succeeded` or `failed`.
        status: RunStatus,
    },
    /// The run crashed more often than its spec allows.
    #[error("run {run} crashed {crashes} times (the cap is {cap}); it is marked crashed: look at `attnflow workflow show {run}`, then `attnflow workflow restart {run}`")]
    CrashLoop {
        /// The run.
        run: i64,
        /// Crashes counted.
        crashes: i64,
        /// The spec's `max_crashes`.
        cap: u32,
    },
    /// Only failed or crashed runs can be restarted.
    #[error("run {run} is {status}; only failed or crashed runs can be restarted")]
    NotRestartable {
        /// The run.
        run: i64,
        /// Its status.
        status: RunStatus,
    },
    /// A row the store wrote earlier does not make sense.
    #[error("workflow store {path}: corrupt record: {detail}")]
    Corrupt {
        /// The database file.
        path: String,
        /// What is inconsistent.
        detail: String,
    },
}

/// A run's lifecycle status (distinct from its workflow state).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Not finished; an executor holds it or will resume it.
    Running,
    /// Reached a `terminal = "success"` state.
    Succeeded,
    /// Reached a `terminal = "failure"` state (for example retries exhausted).
    Failed,
    /// Its executors crashed more often than the crash-loop cap allows.
    Crashed,
}

impl RunStatus {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Crashed => "crashed",
        }
    }

    fn parse(text: &str) -> Option<RunStatus> {
        [
            RunStatus::Running,
            RunStatus::Succeeded,
            RunStatus::Failed,
            RunStatus::Crashed,
        ]
        .into_iter()
        .find(|status| status.as_str() == text)
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// The kinds of entries in the event log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A run was created in its initial state.
    RunCreated,
    /// An executor took the run's lease.
    LeaseAcquired,
    /// The previous executor died holding the lease.
    ExecutorCrashed,
    /// The crash-loop cap was reached; the run is marked crashed.
    CrashLoop,
    /// An executor gave the lease back without finishing.
    LeaseReleased,
    /// A step (one visit to a state) began.
    StepStarted,
    /// An attempt of the step's action is about to run.
    AttemptStarted,
    /// An attempt's action returned.
    AttemptFinished,
    /// Another attempt will follow after a backoff.
    RetryScheduled,
    /// The step ended with its final outcome.
    StepCompleted,
    /// The run moved from one state to another (§5.2 counts these).
    Transition,
    /// The run reached a terminal state.
    RunFinished,
    /// A failed or crashed run was restarted.
    Restarted,
}

impl EventKind {
    const ALL: [EventKind; 13] = [
        EventKind::RunCreated,
        EventKind::LeaseAcquired,
        EventKind::ExecutorCrashed,
        EventKind::CrashLoop,
        EventKind::LeaseReleased,
        EventKind::StepStarted,
        EventKind::AttemptStarted,
        EventKind::AttemptFinished,
        EventKind::RetryScheduled,
        EventKind::StepCompleted,
        EventKind::Transition,
        EventKind::RunFinished,
        EventKind::Restarted,
    ];

    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::RunCreated => "run_created",
            EventKind::LeaseAcquired => "lease_acquired",
            EventKind::ExecutorCrashed => "executor_crashed",
            EventKind::CrashLoop => "crash_loop",
            EventKind::LeaseReleased => "lease_released",
            EventKind::StepStarted => "step_started",
            EventKind::AttemptStarted => "attempt_started",
            EventKind::AttemptFinished => "attempt_finished",
            EventKind::RetryScheduled => "retry_scheduled",
            EventKind::StepCompleted => "step_completed",
            EventKind::Transition => "transition",
            EventKind::RunFinished => "run_finished",
            EventKind::Restarted => "restarted",
        }
    }

    fn parse(text: &str) -> Option<EventKind> {
        EventKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text)
    }
}

/// One row of `wf_runs`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunRecord {
    /// The run id.
    pub id: i64,
    /// The workflow's name.
    pub workflow: String,
    /// Where the spec came from.
    pub spec_origin: String,
    /// The spec text the run follows.
    #[serde(skip)]
    pub spec_source: String,
    /// Lifecycle status.
    pub status: RunStatus,
    /// The workflow state the run is in.
    pub current_state: String,
    /// Restart count; `max_visits` counts within one epoch.
    pub epoch: i64,
    /// Executor crashes since the last restart.
    pub crash_count: i64,
    /// The executor holding the lease, if any.
    pub lease_owner: Option<String>,
    /// Incremented by every lease acquisition (the fencing token).
    pub lease_token: i64,
    /// When the lease expires (ms since the epoch).
    pub lease_expires_ms: Option<i64>,
    /// Creation time (ms since the epoch).
    pub created_ms: i64,
    /// Last write (ms since the epoch).
    pub updated_ms: i64,
    /// When it reached a terminal state.
    pub finished_ms: Option<i64>,
}

/// One row of `wf_steps`: one visit of a run to a state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepRecord {
    /// The run.
    pub run_id: i64,
    /// 1-based sequence number in the run.
    pub seq: i64,
    /// The state visited.
    pub state: String,
    /// The run's epoch when the step began.
    pub epoch: i64,
    /// Whether the step's outcome is recorded.
    pub completed: bool,
    /// The latest attempt started (0 before the first).
    pub attempt: i64,
    /// Whether the latest attempt has no recorded result yet.
    pub attempt_open: bool,
    /// The latest attempt's outcome.
    pub last_outcome: Option<String>,
    /// Earliest time of the next attempt after a backoff.
    pub retry_at_ms: Option<i64>,
    /// The step's final outcome.
    pub outcome: Option<String>,
    /// The state the run moved to.
    pub next_state: Option<String>,
    /// When it began.
    pub started_ms: i64,
    /// When it completed.
    pub finished_ms: Option<i64>,
}

/// One row of the event log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventRecord {
    /// The run.
    pub run_id: i64,
    /// 1-based, gapless sequence number in the run.
    pub seq: i64,
    /// When it was written (ms since the epoch).
    pub at_ms: i64,
    /// What happened.
    pub kind: EventKind,
    /// The step it concerns.
    pub step: Option<i64>,
    /// The state it concerns (the source state of a transition).
    pub state: Option<String>,
    /// The attempt it concerns.
    pub attempt: Option<i64>,
    /// The outcome it records.
    pub outcome: Option<String>,
    /// The target state of a transition.
    pub to_state: Option<String>,
    /// The attempt's idempotency key.
    pub idempotency_key: Option<String>,
    /// The lease token of the executor that wrote it.
    pub lease_token: Option<i64>,
    /// A note for people.
    pub detail: String,
}

/// One recorded transition, for the Markov analysis (§5.2).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TransitionRecord {
    /// The run.
    pub run_id: i64,
    /// The run's workflow name.
    pub workflow: String,
    /// Source state.
    pub from: String,
    /// Target state.
    pub to: String,
    /// The outcome that chose the edge.
    pub outcome: String,
}

/// An executor's right to write to one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The run.
    pub run_id: i64,
    /// Who holds it (`host:pid:nonce`).
    pub owner: String,
    /// The fencing token; writes carrying an older token are rejected.
    pub token: i64,
    /// How long each write or heartbeat extends it.
    pub duration: Duration,
}

/// What an executor decided after an attempt finished.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptDecision {
    /// Run another attempt of the same step no earlier than `at_ms`.
    Retry {
        /// Earliest start of the next attempt.
        at_ms: i64,
    },
    /// End the step and move to `next_state`.
    Complete {
        /// The step's final outcome.
        outcome: Outcome,
        /// The state to move to.
        next_state: String,
        /// Set when `next_state` is terminal: how the run ended.
        terminal: Option<TerminalKind>,
        /// Also begin `next_state`'s step and record its first attempt as
        /// started, in the same transaction (one commit per transition).
        begin_next: bool,
    },
}

#[derive(Default)]
struct NewEvent<'a> {
    step: Option<i64>,
    state: Option<&'a str>,
    attempt: Option<i64>,
    outcome: Option<&'a str>,
    to_state: Option<&'a str>,
    idempotency_key: Option<&'a str>,
    lease_token: Option<i64>,
    detail: &'a str,
}

fn append_event(
    transaction: &Transaction<'_>,
    run_id: i64,
    now_ms: i64,
    kind: EventKind,
    event: NewEvent<'_>,
) -> rusqlite::Result<()> {
    // Inside BEGIN IMMEDIATE no other writer can interleave, so max + 1 is
    // gapless and unique.
    transaction.execute(
        "INSERT INTO wf_events (run_id, seq, at_ms, kind, step, state, attempt, outcome, to_state, \
         idempotency_key, lease_token, detail) \
         VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM wf_events WHERE run_id = ?1), \
         ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        params![
            run_id,
            now_ms,
            kind.as_str(),
            event.step,
            event.state,
            event.attempt,
            event.outcome,
            event.to_state,
            event.idempotency_key,
            event.lease_token,
            event.detail,
        ],
    )?;
    Ok(())
}

const RUN_COLUMNS: &str = "id, workflow, spec_origin, spec_source, status, current_state, epoch, \
     crash_count, lease_owner, lease_token, lease_expires_ms, created_ms, updated_ms, finished_ms";

const STEP_COLUMNS: &str =
    "run_id, seq, state, epoch, status, attempt, attempt_open, last_outcome, \
     retry_at_ms, outcome, next_state, started_ms, finished_ms";

const EVENT_COLUMNS: &str = "run_id, seq, at_ms, kind, step, state, attempt, outcome, to_state, \
     idempotency_key, lease_token, detail";

fn conversion_error(column: usize, message: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(column, rusqlite::types::Type::Text, message.into())
}

fn run_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RunRecord> {
    let status: String = row.get(4)?;
    Ok(RunRecord {
        id: row.get(0)?,
        workflow: row.get(1)?,
        spec_origin: row.get(2)?,
        spec_source: row.get(3)?,
        status: RunStatus::parse(&status)
            .ok_or_else(|| conversion_error(4, format!("unknown run status `{status}`")))?,
        current_state: row.get(5)?,
        epoch: row.get(6)?,
        crash_count: row.get(7)?,
        lease_owner: row.get(8)?,
        lease_token: row.get(9)?,
        lease_expires_ms: row.get(10)?,
        created_ms: row.get(11)?,
        updated_ms: row.get(12)?,
        finished_ms: row.get(13)?,
    })
}

fn step_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<StepRecord> {
    let status: String = row.get(4)?;
    Ok(StepRecord {
        run_id: row.get(0)?,
        seq: row.get(1)?,
        state: row.get(2)?,
        epoch: row.get(3)?,
        completed: status == "completed",
        attempt: row.get(5)?,
        attempt_open: row.get::<_, i64>(6)? != 0,
        last_outcome: row.get(7)?,
        retry_at_ms: row.get(8)?,
        outcome: row.get(9)?,
        next_state: row.get(10)?,
        started_ms: row.get(11)?,
        finished_ms: row.get(12)?,
    })
}

fn event_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<EventRecord> {
    let kind: String = row.get(3)?;
    Ok(EventRecord {
        run_id: row.get(0)?,
        seq: row.get(1)?,
        at_ms: row.get(2)?,
        kind: EventKind::parse(&kind)
            .ok_or_else(|| conversion_error(3, format!("unknown event kind `{kind}`")))?,
        step: row.get(4)?,
        state: row.get(5)?,
        attempt: row.get(6)?,
        outcome: row.get(7)?,
        to_state: row.get(8)?,
        idempotency_key: row.get(9)?,
        lease_token: row.get(10)?,
        detail: row.get(11)?,
    })
}

/// Whether the executor named `owner` (`host:pid:nonce`) is certainly dead:
/// it ran on this host and its process no longer exists (or is a zombie).
/// Anything uncertain counts as alive, so the lease must expire first.
fn owner_is_dead(owner: &str) -> bool {
    let mut parts = owner.splitn(3, ':');
    let (Some(host), Some(pid)) = (parts.next(), parts.next()) else {
        return false;
    };
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    if host != host_name() || pid == std::process::id() || !Path::new("/proc/self").exists() {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state letter follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
    }
}

/// This machine's name, as recorded in lease owners.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .ok()
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_string())
        .replace(':', "_")
}

/// A fresh executor identity: `host:pid:nonce`.
pub fn new_owner_id() -> String {
    static COUNTER: AtomicI64 = AtomicI64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed) as u64;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos() as u64);
    let nonce = crate::action::splitmix64(nanos ^ (u64::from(std::process::id()) << 32) ^ count);
    format!("{}:{}:{nonce:016x}", host_name(), std::process::id())
}

/// The durable store. See the module documentation for its invariants.
pub struct Store {
    connection: Connection,
    path: String,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Store")
            .field("path", &self.path)
            .finish()
    }
}

impl Store {
    /// Opens (creating if needed) the store at `path` and migrates it.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let label = path.display().to_string();
        let connection = Connection::open(path).map_err(|source| StoreError::Sqlite {
            path: label.clone(),
            operation: "open",
            source,
        })?;
        Store::with_label(connection, label)
    }

    /// Uses an already open connection (for example one shared with other
    /// crates' tables) and migrates it.
    pub fn from_connection(connection: Connection) -> Result<Store, StoreError> {
        let label = connection
            .path()
            .filter(|path| !path.is_empty())
            .unwrap_or(":memory:")
            .to_string();
        Store::with_label(connection, label)
    }

    fn with_label(connection: Connection, path: String) -> Result<Store, StoreError> {
        let mut store = Store {
            connection,
            path,
            clock: Arc::new(SystemClock),
        };
        store.configure()?;
        store.migrate()?;
        Ok(store)
    }

    /// Replaces the clock (tests use a [`ManualClock`]).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Store {
        self.clock = clock;
        self
    }

    /// The underlying connection, for callers that keep their own tables in
    /// the same file.
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// The database path (or `:memory:`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// "Now" by the store's clock.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    fn sqlite<T>(
        &self,
        operation: &'static str,
        result: rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        result.map_err(|source| StoreError::Sqlite {
            path: self.path.clone(),
            operation,
            source,
        })
    }

    fn configure(&mut self) -> Result<(), StoreError> {
        // WAL lets readers (`runs`, `show`, the crash test) read while an
        // executor writes; synchronous=FULL makes every commit durable
        // before the engine acts on it.
        let result = self
            .connection
            .busy_timeout(Duration::from_secs(10))
            .and_then(|()| {
                self.connection
                    .query_row("PRAGMA journal_mode = WAL", [], |row| {
                        row.get::<_, String>(0)
                    })
            })
            .and_then(|_| self.connection.pragma_update(None, "synchronous", "FULL"))
            .and_then(|()| self.connection.pragma_update(None, "foreign_keys", "ON"));
        self.sqlite("configure", result)
    }

    /// The schema version stored in the file (0 for a new file).
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        let result = self
            .connection
            .query_row("SELECT version FROM wf_schema_version", [], |row| {
                row.get::<_, i64>(0)
            })
            .optional();
        self.sqlite("read schema version", result)
            .map(|version| version.unwrap_or(0))
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let path = self.path.clone();
        let transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|source| StoreError::Sqlite {
                path: path.clone(),
                operation: "begin migration",
                source,
            })?;
        let result = (|| -> Result<(), StoreError> {
            let sqlite = |operation, source| StoreError::Sqlite {
                path: path.clone(),
                operation,
                source,
            };
            transaction
                .execute(
                    "CREATE TABLE IF NOT EXISTS wf_schema_version (version INTEGER NOT NULL)",
                    [],
                )
                .map_err(|source| sqlite("create schema table", source))?;
            let found: Option<i64> = transaction
                .query_row("SELECT version FROM wf_schema_version", [], |row| {
                    row.get(0)
                })
                .optional()
                .map_err(|source| sqlite("read schema version", source))?;
            let found = match found {
                Some(version) => version,
                None => {
                    transaction
                        .execute("INSERT INTO wf_schema_version (version) VALUES (0)", [])
                        .map_err(|source| sqlite("initialise schema version", source))?;
                    0
                }
            };
            if found > SCHEMA_VERSION {
                return Err(StoreError::SchemaTooNew {
                    path: path.clone(),
                    found,
                    supported: SCHEMA_VERSION,
                });
            }
            for (version, sql) in MIGRATIONS.iter().filter(|(version, _)| *version > found) {
                transaction
                    .execute_batch(sql)
                    .map_err(|source| sqlite("migrate schema", source))?;
                transaction
                    .execute("UPDATE wf_schema_version SET version = ?1", [version])
                    .map_err(|source| sqlite("record schema version", source))?;
            }
            Ok(())
        })();
        result?;
        transaction.commit().map_err(|source| StoreError::Sqlite {
            path,
            operation: "commit migration",
            source,
        })
    }

    /// Creates a run of `spec` in its initial state and records `run_created`.
    pub fn create_run(&mut self, spec: &Spec) -> Result<i64, StoreError> {
        let now = self.now_ms();
        let result = (|| {
            let transaction = self
                .connection
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            transaction.execute(
                "INSERT INTO wf_runs (workflow, spec_origin, spec_source, status, current_state, \
                 created_ms, updated_ms) VALUES (?1, ?2, ?3, 'running', ?4, ?5, ?5)",
                params![spec.name, spec.origin(), spec.source(), spec.initial, now],
            )?;
            let run_id = transaction.last_insert_rowid();
            append_event(
                &transaction,
                run_id,
                now,
                EventKind::RunCreated,
                NewEvent {
                    state: Some(&spec.initial),
                    detail: spec.origin(),
                    ..NewEvent::default()
                },
            )?;
            transaction.commit()?;
            Ok(run_id)
        })();
        self.sqlite("create run", result)
    }

    /// Takes the run's lease for `owner`.
    ///
    /// Fails with [`StoreError::LeaseHeld`] while another live executor
    /// holds it. A lease left behind by an executor that died (its lease
    /// expired, or its process is gone) counts as a crash: the crash is
    /// recorded and, past `max_crashes`, the run is marked crashed and
    /// [`StoreError::CrashLoop`] returned.
    pub fn acquire_lease(
        &mut self,
        run_id: i64,
        owner: &str,
        duration: Duration,
        max_crashes: u32,
    ) -> Result<Lease, StoreError> {
        let now = self.now_ms();
        let path = self.path.clone();
        let sqlite = |source| StoreError::Sqlite {
            path: path.clone(),
            operation: "acquire lease",
            source,
        };
        let transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sqlite)?;
        let run = read_run(&transaction, run_id)
            .map_err(sqlite)?
            .ok_or_else(|| StoreError::UnknownRun {
                path: path.clone(),
                run: run_id,
            })?;
        match run.status {
            RunStatus::Succeeded | RunStatus::Failed => {
                return Err(StoreError::Finished {
                    run: run_id,
                    status: run.status,
                })
            }
            RunStatus::Crashed => {
                return Err(StoreError::CrashLoop {
                    run: run_id,
                    crashes: run.crash_count,
                    cap: max_crashes,
                })
            }
            RunStatus::Running => {}
        }
        let mut crash_count = run.crash_count;
        if let Some(previous) = &run.lease_owner {
            let expires = run.lease_expires_ms.unwrap_or(0);
            if expires > now && !owner_is_dead(previous) {
                return Err(StoreError::LeaseHeld {
                    run: run_id,
                    owner: previous.clone(),
                    remaining_ms: expires - now,
                });
            }
            // The previous executor never released the lease: it crashed.
            crash_count += 1;
            let detail = format!(
                "executor {previous} (token {}) died without releasing its lease; crash {crash_count} of at most {max_crashes}",
                run.lease_token
            );
            append_event(
                &transaction,
                run_id,
                now,
                EventKind::ExecutorCrashed,
                NewEvent {
                    state: Some(&run.current_state),
                    lease_token: Some(run.lease_token),
                    detail: &detail,
                    ..NewEvent::default()
                },
            )
            .map_err(sqlite)?;
            if crash_count > i64::from(max_crashes) {
                transaction
                    .execute(
                        "UPDATE wf_runs SET status = 'crashed', crash_count = ?2, lease_owner = NULL, \
                         lease_expires_ms = NULL, updated_ms = ?3 WHERE id = ?1",
                        params![run_id, crash_count, now],
                    )
                    .map_err(sqlite)?;
                append_event(
                    &transaction,
                    run_id,
                    now,
                    EventKind::CrashLoop,
                    NewEvent {
                        state: Some(&run.current_state),
                        detail: "crash-loop cap reached; restart the run explicitly",
                        ..NewEvent::default()
                    },
                )
                .map_err(sqlite)?;
                transaction.commit().map_err(sqlite)?;
                return Err(StoreError::CrashLoop {
                    run: run_id,
                    crashes: crash_count,
                    cap: max_crashes,
                });
            }
        }
        let token = run.lease_token + 1;
        let expires = now + duration.as_millis() as i64;
        transaction
            .execute(
                "UPDATE wf_runs SET lease_owner = ?2, lease_token = ?3, lease_expires_ms = ?4, \
                 crash_count = ?5, updated_ms = ?6 WHERE id = ?1",
                params![run_id, owner, token, expires, crash_count, now],
            )
            .map_err(sqlite)?;
        append_event(
            &transaction,
            run_id,
            now,
            EventKind::LeaseAcquired,
            NewEvent {
                state: Some(&run.current_state),
                lease_token: Some(token),
                detail: owner,
                ..NewEvent::default()
            },
        )
        .map_err(sqlite)?;
        transaction.commit().map_err(sqlite)?;
        Ok(Lease {
            run_id,
            owner: owner.to_string(),
            token,
            duration,
        })
    }

    /// Runs `write` in one immediate transaction after checking, in that
    /// same transaction, that `lease` is still the run's current, unexpired
    /// lease; extends the lease on success. This is the fencing that keeps
    /// an executor whose lease lapsed from writing.
    fn fenced<T>(
        &mut self,
        lease: &Lease,
        operation: &'static str,
        write: impl FnOnce(&Transaction<'_>, i64) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let now = self.now_ms();
        let path = self.path.clone();
        let sqlite = |source| StoreError::Sqlite {
            path: path.clone(),
            operation,
            source,
        };
        let transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sqlite)?;
        let holder: Option<(Option<String>, i64, Option<i64>)> = transaction
            .query_row(
                "SELECT lease_owner, lease_token, lease_expires_ms FROM wf_runs WHERE id = ?1",
                [lease.run_id],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .optional()
            .map_err(sqlite)?;
        let Some((owner, token, expires)) = holder else {
            return Err(StoreError::UnknownRun {
                path: path.clone(),
                run: lease.run_id,
            });
        };
        let lost = |reason: String| StoreError::LeaseLost {
            run: lease.run_id,
            token: lease.token,
            reason,
        };
        if token != lease.token || owner.as_deref() != Some(lease.owner.as_str()) {
            return Err(lost(format!(
                "the run's lease is now token {token} held by {}",
                owner.as_deref().unwrap_or("nobody")
            )));
        }
        let expires = expires.unwrap_or(0);
        if expires <= now {
            return Err(lost(format!("it expired {} ms ago", now - expires)));
        }
        transaction
            .execute(
                "UPDATE wf_runs SET lease_expires_ms = ?2, updated_ms = ?3 WHERE id = ?1",
                params![lease.run_id, now + lease.duration.as_millis() as i64, now],
            )
            .map_err(sqlite)?;
        let value = write(&transaction, now).map_err(sqlite)?;
        transaction.commit().map_err(sqlite)?;
        Ok(value)
    }

    /// Extends the lease; fails once it is lost.
    pub fn heartbeat(&mut self, lease: &Lease) -> Result<(), StoreError> {
        self.fenced(lease, "heartbeat", |_, _| Ok(()))
    }

    /// Gives the lease back without finishing the run, so that the next
    /// executor does not count a crash.
    pub fn release_lease(&mut self, lease: &Lease, reason: &str) -> Result<(), StoreError> {
        self.fenced(lease, "release lease", |transaction, now| {
            transaction.execute(
                "UPDATE wf_runs SET lease_owner = NULL, lease_expires_ms = NULL WHERE id = ?1",
                [lease.run_id],
            )?;
            append_event(
                transaction,
                lease.run_id,
                now,
                EventKind::LeaseReleased,
                NewEvent {
                    lease_token: Some(lease.token),
                    detail: reason,
                    ..NewEvent::default()
                },
            )
        })
    }

    /// Begins a new step (a visit to `state`) and records `step_started`.
    pub fn begin_step(
        &mut self,
        lease: &Lease,
        state: &str,
        epoch: i64,
    ) -> Result<StepRecord, StoreError> {
        let run_id = lease.run_id;
        let seq = self.fenced(lease, "begin step", |transaction, now| {
            let seq: i64 = transaction.query_row(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM wf_steps WHERE run_id = ?1",
                [run_id],
                |row| row.get(0),
            )?;
            transaction.execute(
                "INSERT INTO wf_steps (run_id, seq, state, epoch, status, started_ms) \
                 VALUES (?1, ?2, ?3, ?4, 'running', ?5)",
                params![run_id, seq, state, epoch, now],
            )?;
            append_event(
                transaction,
                run_id,
                now,
                EventKind::StepStarted,
                NewEvent {
                    step: Some(seq),
                    state: Some(state),
                    lease_token: Some(lease.token),
                    ..NewEvent::default()
                },
            )?;
            Ok(seq)
        })?;
        self.step(run_id, seq)
    }

    /// Begins a new step and records its first attempt as started, in one
    /// transaction (one fsync instead of two on the common path).
    pub fn begin_step_with_attempt(
        &mut self,
        lease: &Lease,
        state: &str,
        epoch: i64,
    ) -> Result<StepRecord, StoreError> {
        let run_id = lease.run_id;
        let seq = self.fenced(lease, "begin step", |transaction, now| {
            insert_step_with_first_attempt(transaction, lease, state, epoch, now)
        })?;
        self.step(run_id, seq)
    }

    /// Records that attempt `attempt` of `step` is about to run, before it
    /// runs. `rerun` marks an attempt re-executed after a crash (same key).
    pub fn start_attempt(
        &mut self,
        lease: &Lease,
        step: &StepRecord,
        attempt: i64,
        idempotency_key: &str,
        rerun: bool,
    ) -> Result<(), StoreError> {
        let detail = if rerun {
            "re-executed: the previous executor died before recording this attempt's result"
        } else {
            ""
        };
        self.fenced(lease, "start attempt", |transaction, now| {
            let changed = transaction.execute(
                "UPDATE wf_steps SET attempt = ?3, attempt_open = 1, retry_at_ms = NULL \
                 WHERE run_id = ?1 AND seq = ?2 AND status = 'running'",
                params![step.run_id, step.seq, attempt],
            )?;
            if changed != 1 {
                return Err(rusqlite::Error::StatementChangedRows(changed));
            }
            append_event(
                transaction,
                step.run_id,
                now,
                EventKind::AttemptStarted,
                NewEvent {
                    step: Some(step.seq),
                    state: Some(&step.state),
                    attempt: Some(attempt),
                    idempotency_key: Some(idempotency_key),
                    lease_token: Some(lease.token),
                    detail,
                    ..NewEvent::default()
                },
            )
        })
    }

    /// Records an attempt's result and what follows: a retry after a
    /// backoff, or the step's completion with the transition (and, for a
    /// terminal target, the run's end; or, with `begin_next`, the next
    /// step and its first attempt) in the same transaction. Returns the
    /// sequence number of a step begun this way.
    pub fn finish_attempt(
        &mut self,
        lease: &Lease,
        step: &StepRecord,
        attempt: i64,
        outcome: Outcome,
        detail: &str,
        decision: &AttemptDecision,
    ) -> Result<Option<i64>, StoreError> {
        self.fenced(lease, "finish attempt", |transaction, now| {
            let changed = transaction.execute(
                "UPDATE wf_steps SET attempt_open = 0, last_outcome = ?4 \
                 WHERE run_id = ?1 AND seq = ?2 AND attempt = ?3 AND status = 'running'",
                params![step.run_id, step.seq, attempt, outcome.as_str()],
            )?;
            if changed != 1 {
                return Err(rusqlite::Error::StatementChangedRows(changed));
            }
            append_event(
                transaction,
                step.run_id,
                now,
                EventKind::AttemptFinished,
                NewEvent {
                    step: Some(step.seq),
                    state: Some(&step.state),
                    attempt: Some(attempt),
                    outcome: Some(outcome.as_str()),
                    lease_token: Some(lease.token),
                    detail,
                    ..NewEvent::default()
                },
            )?;
            match decision {
                AttemptDecision::Retry { at_ms } => {
                    transaction.execute(
                        "UPDATE wf_steps SET retry_at_ms = ?3 WHERE run_id = ?1 AND seq = ?2",
                        params![step.run_id, step.seq, at_ms],
                    )?;
                    append_event(
                        transaction,
                        step.run_id,
                        now,
                        EventKind::RetryScheduled,
                        NewEvent {
                            step: Some(step.seq),
                            state: Some(&step.state),
                            attempt: Some(attempt + 1),
                            lease_token: Some(lease.token),
                            detail: &format!("next attempt in {} ms", (at_ms - now).max(0)),
                            ..NewEvent::default()
                        },
                    )?;
                    Ok(None)
                }
                AttemptDecision::Complete {
                    outcome,
                    next_state,
                    terminal,
                    begin_next,
                } => {
                    complete_step(
                        transaction,
                        lease,
                        step,
                        now,
                        *outcome,
                        next_state,
                        *terminal,
                    )?;
                    if *begin_next && terminal.is_none() {
                        let epoch: i64 = transaction.query_row(
                            "SELECT epoch FROM wf_runs WHERE id = ?1",
                            [step.run_id],
                            |row| row.get(0),
                        )?;
                        insert_step_with_first_attempt(transaction, lease, next_state, epoch, now)
                            .map(Some)
                    } else {
                        Ok(None)
                    }
                }
            }
        })
    }

    /// Completes `step` without running its action: the state's
    /// `max_visits` was reached, so the `exhausted` transition is taken.
    pub fn complete_exhausted(
        &mut self,
        lease: &Lease,
        step: &StepRecord,
        next_state: &str,
        terminal: Option<TerminalKind>,
    ) -> Result<(), StoreError> {
        self.fenced(lease, "complete exhausted step", |transaction, now| {
            complete_step(
                transaction,
                lease,
                step,
                now,
                Outcome::Exhausted,
                next_state,
                terminal,
            )
        })
    }

    /// Puts a failed or crashed run back to work: a failed run restarts at
    /// the state of its last failed step, a crashed run where it stopped.
    /// Starts a new epoch (so `max_visits` counts afresh) and clears the
    /// crash count. Returns the state it restarts in.
    pub fn restart(&mut self, run_id: i64) -> Result<String, StoreError> {
        let now = self.now_ms();
        let path = self.path.clone();
        let sqlite = |source| StoreError::Sqlite {
            path: path.clone(),
            operation: "restart run",
            source,
        };
        let transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sqlite)?;
        let run = read_run(&transaction, run_id)
            .map_err(sqlite)?
            .ok_or_else(|| StoreError::UnknownRun {
                path: path.clone(),
                run: run_id,
            })?;
        let restart_state = match run.status {
            RunStatus::Crashed => run.current_state.clone(),
            RunStatus::Failed => {
                // The most recent step whose action failed; a spec may also
                // end in failure with no failed action, then the state
                // before the terminal one is retried.
                let failed: Option<String> = transaction
                    .query_row(
                        "SELECT state FROM wf_steps WHERE run_id = ?1 \
                         AND outcome IN ('failed', 'invalid', 'timeout') ORDER BY seq DESC LIMIT 1",
                        [run_id],
                        |row| row.get(0),
                    )
                    .optional()
                    .map_err(sqlite)?;
                let last: Option<String> = transaction
                    .query_row(
                        "SELECT state FROM wf_steps WHERE run_id = ?1 ORDER BY seq DESC LIMIT 1",
                        [run_id],
                        |row| row.get(0),
                    )
                    .optional()
                    .map_err(sqlite)?;
                failed.or(last).ok_or_else(|| StoreError::Corrupt {
                    path: path.clone(),
                    detail: format!("run {run_id} failed without any recorded step"),
                })?
            }
            status => {
                return Err(StoreError::NotRestartable {
                    run: run_id,
                    status,
                })
            }
        };
        transaction
            .execute(
                "UPDATE wf_runs SET status = 'running', current_state = ?2, epoch = epoch + 1, \
                 crash_count = 0, lease_owner = NULL, lease_expires_ms = NULL, finished_ms = NULL, \
                 updated_ms = ?3 WHERE id = ?1",
                params![run_id, restart_state, now],
            )
            .map_err(sqlite)?;
        let detail = format!(
            "restarted from {} run in state `{restart_state}` (epoch {})",
            run.status,
            run.epoch + 1
        );
        append_event(
            &transaction,
            run_id,
            now,
            EventKind::Restarted,
            NewEvent {
                state: Some(&restart_state),
                detail: &detail,
                ..NewEvent::default()
            },
        )
        .map_err(sqlite)?;
        transaction.commit().map_err(sqlite)?;
        Ok(restart_state)
    }

    /// The run with id `run_id`.
    pub fn run(&self, run_id: i64) -> Result<RunRecord, StoreError> {
        let result = self.connection.query_row(
            &format!("SELECT {RUN_COLUMNS} FROM wf_runs WHERE id = ?1"),
            [run_id],
            run_from_row,
        );
        self.sqlite("read run", result.optional())?
            .ok_or_else(|| StoreError::UnknownRun {
                path: self.path.clone(),
                run: run_id,
            })
    }

    /// All runs, oldest first.
    pub fn runs(&self) -> Result<Vec<RunRecord>, StoreError> {
        let result = (|| {
            let mut statement = self
                .connection
                .prepare(&format!("SELECT {RUN_COLUMNS} FROM wf_runs ORDER BY id"))?;
            let rows = statement.query_map([], run_from_row)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })();
        self.sqlite("list runs", result)
    }

    /// The run's steps in order.
    pub fn steps(&self, run_id: i64) -> Result<Vec<StepRecord>, StoreError> {
        let result = (|| {
            let mut statement = self.connection.prepare(&format!(
                "SELECT {STEP_COLUMNS} FROM wf_steps WHERE run_id = ?1 ORDER BY seq"
            ))?;
            let rows = statement.query_map([run_id], step_from_row)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })();
        self.sqlite("list steps", result)
    }

    /// One step.
    pub fn step(&self, run_id: i64, seq: i64) -> Result<StepRecord, StoreError> {
        let result = self.connection.query_row(
            &format!("SELECT {STEP_COLUMNS} FROM wf_steps WHERE run_id = ?1 AND seq = ?2"),
            [run_id, seq],
            step_from_row,
        );
        self.sqlite("read step", result)
    }

    /// The run's step that has not completed, if any (there is at most one).
    pub fn open_step(&self, run_id: i64) -> Result<Option<StepRecord>, StoreError> {
        let result = self
            .connection
            .query_row(
                &format!(
                    "SELECT {STEP_COLUMNS} FROM wf_steps WHERE run_id = ?1 AND status = 'running' \
                     ORDER BY seq DESC LIMIT 1"
                ),
                [run_id],
                step_from_row,
            )
            .optional();
        self.sqlite("read open step", result)
    }

    /// How many steps of the run visited `state` in `epoch`.
    pub fn visits(&self, run_id: i64, state: &str, epoch: i64) -> Result<i64, StoreError> {
        let result = self.connection.query_row(
            "SELECT COUNT(*) FROM wf_steps WHERE run_id = ?1 AND state = ?2 AND epoch = ?3",
            params![run_id, state, epoch],
            |row| row.get(0),
        );
        self.sqlite("count visits", result)
    }

    /// The run's event log in order.
    pub fn events(&self, run_id: i64) -> Result<Vec<EventRecord>, StoreError> {
        let result = (|| {
            let mut statement = self.connection.prepare(&format!(
                "SELECT {EVENT_COLUMNS} FROM wf_events WHERE run_id = ?1 ORDER BY seq"
            ))?;
            let rows = statement.query_map([run_id], event_from_row)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })();
        self.sqlite("read events", result)
    }

    /// Every recorded transition, optionally of one workflow only, in
    /// run and event order.
    pub fn transitions(&self, workflow: Option<&str>) -> Result<Vec<TransitionRecord>, StoreError> {
        let result = (|| {
            let mut statement = self.connection.prepare(
                "SELECT e.run_id, r.workflow, e.state, e.to_state, e.outcome \
                 FROM wf_events e JOIN wf_runs r ON r.id = e.run_id \
                 WHERE e.kind = 'transition' AND (?1 IS NULL OR r.workflow = ?1) \
                 ORDER BY e.run_id, e.seq",
            )?;
            let rows = statement.query_map([workflow], |row| {
                Ok(TransitionRecord {
                    run_id: row.get(0)?,
                    workflow: row.get(1)?,
                    from: row.get(2)?,
                    to: row.get(3)?,
                    outcome: row.get(4)?,
                })
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })();
        self.sqlite("read transitions", result)
    }
}

fn read_run(transaction: &Transaction<'_>, run_id: i64) -> rusqlite::Result<Option<RunRecord>> {
    transaction
        .query_row(
            &format!("SELECT {RUN_COLUMNS} FROM wf_runs WHERE id = ?1"),
            [run_id],
            run_from_row,
        )
        .optional()
}

/// Inserts a new open step of `state` whose first attempt is recorded as
/// started, with its `step_started` and `attempt_started` events.
fn insert_step_with_first_attempt(
    transaction: &Transaction<'_>,
    lease: &Lease,
    state: &str,
    epoch: i64,
    now: i64,
) -> rusqlite::Result<i64> {
    let run_id = lease.run_id;
    let seq: i64 = transaction.query_row(
        "SELECT COALESCE(MAX(seq), 0) + 1 FROM wf_steps WHERE run_id = ?1",
        [run_id],
        |row| row.get(0),
    )?;
    transaction.execute(
        "INSERT INTO wf_steps (run_id, seq, state, epoch, status, attempt, attempt_open, started_ms) \
         VALUES (?1, ?2, ?3, ?4, 'running', 1, 1, ?5)",
        params![run_id, seq, state, epoch, now],
    )?;
    let common = || NewEvent {
        step: Some(seq),
        state: Some(state),
        lease_token: Some(lease.token),
        ..NewEvent::default()
    };
    append_event(transaction, run_id, now, EventKind::StepStarted, common())?;
    let key = crate::action::TaskContext::idempotency_key_for(run_id, seq, 1);
    append_event(
        transaction,
        run_id,
        now,
        EventKind::AttemptStarted,
        NewEvent {
            attempt: Some(1),
            idempotency_key: Some(&key),
            ..common()
        },
    )?;
    Ok(seq)
}

fn complete_step(
    transaction: &Transaction<'_>,
    lease: &Lease,
    step: &StepRecord,
    now: i64,
    outcome: Outcome,
    next_state: &str,
    terminal: Option<TerminalKind>,
) -> rusqlite::Result<()> {
    let changed = transaction.execute(
        "UPDATE wf_steps SET status = 'completed', outcome = ?3, next_state = ?4, finished_ms = ?5 \
         WHERE run_id = ?1 AND seq = ?2 AND status = 'running'",
        params![step.run_id, step.seq, outcome.as_str(), next_state, now],
    )?;
    if changed != 1 {
        return Err(rusqlite::Error::StatementChangedRows(changed));
    }
    let common = || NewEvent {
        step: Some(step.seq),
        state: Some(&step.state),
        outcome: Some(outcome.as_str()),
        lease_token: Some(lease.token),
        ..NewEvent::default()
    };
    append_event(
        transaction,
        step.run_id,
        now,
        EventKind::StepCompleted,
        common(),
    )?;
    append_event(
        transaction,
        step.run_id,
        now,
        EventKind::Transition,
        NewEvent {
            to_state: Some(next_state),
            ..common()
        },
    )?;
    match terminal {
        None => {
            transaction.execute(
                "UPDATE wf_runs SET current_state = ?2 WHERE id = ?1",
                params![step.run_id, next_state],
            )?;
        }
        Some(kind) => {
            let status = match kind {
                TerminalKind::Success => RunStatus::Succeeded,
                TerminalKind::Failure => RunStatus::Failed,
            };
            transaction.execute(
                "UPDATE wf_runs SET current_state = ?2, status = ?3, finished_ms = ?4, \
                 lease_owner = NULL, lease_expires_ms = NULL WHERE id = ?1",
                params![step.run_id, next_state, status.as_str(), now],
            )?;
            append_event(
                transaction,
                step.run_id,
                now,
                EventKind::RunFinished,
                NewEvent {
                    state: Some(next_state),
                    lease_token: Some(lease.token),
                    detail: status.as_str(),
                    ..NewEvent::default()
                },
            )?;
        }
    }
    Ok(())
}
