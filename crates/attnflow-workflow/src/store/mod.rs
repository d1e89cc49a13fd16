//! The durable run store: runs, steps and an append-only event log, in an
//! SQLite file (WAL, `synchronous=FULL`) or a PostgreSQL database
//! (`synchronous_commit` on), with the same tables and invariants.
//!
//! Invariants a newcomer must not break:
//! * Every change the engine is about to act on is committed first (an
//!   attempt is recorded as started before its action runs; a transition is
//!   recorded before the next state's step begins).
//! * Every executor write happens in one transaction that first checks, by
//!   one `UPDATE ... WHERE lease_token = ? AND lease_owner = ? AND
//!   lease_expires_ms > now`, the executor's lease (fencing): an executor
//!   whose lease expired or was taken over writes nothing. That statement
//!   also takes the run's row lock, so writers to one run are serialised on
//!   both backends, and it hands out the next event and step numbers from
//!   the run's counters (gapless).
//! * `wf_events` is append-only and `wf_runs` rows are never deleted;
//!   triggers enforce both on both backends.
//! * Tables carry the `wf_` prefix so that the same store can hold other
//!   crates' tables.

mod claims;
mod folded;
mod listing;
pub mod schema;

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use attnflow_store::{args, Backend, Connection, DbError, Location, Row, Value};
use serde::Serialize;

use crate::spec::{Outcome, Spec, TerminalKind};

pub use claims::{SupersededRecord, WorkerRecord};
pub use listing::{RunFilter, RunOrder, RunSummary};

/// The schema version this build writes; older stores are migrated forward.
pub const SCHEMA_VERSION: i64 = 4;

/// The notification channel that wakes workers (PostgreSQL).
pub const WAKE_CHANNEL: &str = "attnflow_workflow";

/// SQLite settings: WAL lets readers (`runs`, `show`, the crash test) read
/// while an executor writes; synchronous=FULL makes every commit durable
/// before the engine acts on it.
const SQLITE_SETUP: &str =
    "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;";

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
    /// The database refused, was unreachable, or is from a newer attnflow
    /// (see [`DbError::is_bad_input`] and [`DbError::is_lost`]).
    #[error(transparent)]
    Db(#[from] DbError),
    /// No run with that id.
    #[error("workflow store {path}: no run with id {run}")]
    UnknownRun {
        /// The store.
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
        /// The store.
        path: String,
        /// What is inconsistent.
        detail: String,
    },
}

impl StoreError {
    /// Whether the fault is the user's (`--db`, a missing run, a store
    /// from a newer attnflow): exit code 2.
    pub fn is_bad_input(&self) -> bool {
        match self {
            StoreError::Db(error) => error.is_bad_input(),
            StoreError::UnknownRun { .. } => true,
            _ => false,
        }
    }

    /// Whether the database server went away (the work is resumable).
    pub fn is_lost(&self) -> bool {
        matches!(self, StoreError::Db(error) if error.is_lost())
    }
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
    /// The queue of that state: only workers serving it claim the run.
    pub queue: String,
    /// When the run may next be claimed (ms since the epoch; a retry's
    /// backoff puts it in the future).
    pub ready_ms: i64,
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

impl StepRecord {
    /// A step as begun with its first attempt recorded as started.
    fn begun(run_id: i64, seq: i64, state: &str, epoch: i64, now_ms: i64) -> StepRecord {
        StepRecord {
            run_id,
            seq,
            state: state.to_string(),
            epoch,
            completed: false,
            attempt: 1,
            attempt_open: true,
            last_outcome: None,
            retry_at_ms: None,
            outcome: None,
            next_state: None,
            started_ms: now_ms,
            finished_ms: None,
        }
    }
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
        /// The queue of `next_state`.
        next_queue: String,
        /// Set when `next_state` is terminal: how the run ended.
        terminal: Option<TerminalKind>,
        /// Also begin `next_state`'s step and record its first attempt as
        /// started, in the same transaction (one commit per transition).
        begin_next: bool,
    },
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

#[derive(Default)]
struct NewEvent<'a> {
    kind: Option<EventKind>,
    step: Option<i64>,
    state: Option<&'a str>,
    attempt: Option<i64>,
    outcome: Option<&'a str>,
    to_state: Option<&'a str>,
    idempotency_key: Option<&'a str>,
    lease_token: Option<i64>,
    detail: &'a str,
}

impl<'a> NewEvent<'a> {
    fn of(kind: EventKind) -> NewEvent<'a> {
        NewEvent {
            kind: Some(kind),
            ..NewEvent::default()
        }
    }

    /// Attempt `attempt` of `step` ended with `outcome` under `lease`.
    fn attempt_finished(
        step: &'a StepRecord,
        attempt: i64,
        outcome: &'a str,
        lease: &Lease,
        detail: &'a str,
    ) -> NewEvent<'a> {
        NewEvent {
            step: Some(step.seq),
            state: Some(&step.state),
            attempt: Some(attempt),
            outcome: Some(outcome),
            lease_token: Some(lease.token),
            detail,
            ..NewEvent::of(EventKind::AttemptFinished)
        }
    }

    /// Attempt `attempt + 1` of `step` is scheduled (`detail` says when).
    fn retry_scheduled(
        step: &'a StepRecord,
        attempt: i64,
        lease: &Lease,
        detail: &'a str,
    ) -> NewEvent<'a> {
        NewEvent {
            step: Some(step.seq),
            state: Some(&step.state),
            attempt: Some(attempt + 1),
            lease_token: Some(lease.token),
            detail,
            ..NewEvent::of(EventKind::RetryScheduled)
        }
    }
}

/// Writes `events` as one multi-row INSERT with the sequence numbers
/// `first_seq`, `first_seq + 1`, ... The caller reserved them from the
/// run's `event_count` under its row lock.
fn insert_events(
    connection: &Connection,
    run_id: i64,
    now_ms: i64,
    first_seq: i64,
    events: &[NewEvent<'_>],
) -> Result<(), DbError> {
    if events.is_empty() {
        return Ok(());
    }
    let mut sql = String::from(
        "INSERT INTO wf_events (run_id, seq, at_ms, kind, step, state, attempt, outcome, \
         to_state, idempotency_key, lease_token, detail) VALUES ",
    );
    let mut values: Vec<Value<'_>> = Vec::with_capacity(events.len() * 12);
    for (index, event) in events.iter().enumerate() {
        if index > 0 {
            sql.push_str(", ");
        }
        let base = index * 12;
        sql.push('(');
        for column in 1..=12 {
            if column > 1 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("?{}", base + column));
        }
        sql.push(')');
        values.extend_from_slice(args![
            run_id,
            first_seq + index as i64,
            now_ms,
            event.kind.map_or("", EventKind::as_str),
            event.step,
            event.state,
            event.attempt,
            event.outcome,
            event.to_state,
            event.idempotency_key,
            event.lease_token,
            event.detail,
        ]);
    }
    connection.execute("append events", &sql, &values)?;
    Ok(())
}

/// Appends `events` to a run whose row this transaction has locked (or,
/// on SQLite, inside `BEGIN IMMEDIATE`): reserves their numbers from the
/// run's counter, then writes them.
fn append_events(
    connection: &Connection,
    run_id: i64,
    now_ms: i64,
    events: &[NewEvent<'_>],
) -> Result<(), DbError> {
    let last = connection.query_i64(
        "number events",
        "UPDATE wf_runs SET event_count = event_count + ?2 WHERE id = ?1 RETURNING event_count",
        args![run_id, events.len() as i64],
    )?;
    insert_events(
        connection,
        run_id,
        now_ms,
        last - events.len() as i64 + 1,
        events,
    )
}

const RUN_COLUMNS: &str = "id, workflow, spec_origin, spec_source, status, current_state, epoch, \
     crash_count, lease_owner, lease_token, lease_expires_ms, created_ms, updated_ms, finished_ms, \
     queue, ready_ms";

const STEP_COLUMNS: &str =
    "run_id, seq, state, epoch, status, attempt, attempt_open, last_outcome, \
     retry_at_ms, outcome, next_state, started_ms, finished_ms";

const EVENT_COLUMNS: &str = "run_id, seq, at_ms, kind, step, state, attempt, outcome, to_state, \
     idempotency_key, lease_token, detail";

fn conversion_error(column: usize, message: String) -> DbError {
    DbError::Value {
        store: String::new(),
        operation: "read a record".into(),
        column,
        message,
    }
}

fn run_from_row(row: &Row) -> Result<RunRecord, DbError> {
    let status = row.text(4)?;
    Ok(RunRecord {
        id: row.i64(0)?,
        workflow: row.text(1)?,
        spec_origin: row.text(2)?,
        spec_source: row.text(3)?,
        status: RunStatus::parse(&status)
            .ok_or_else(|| conversion_error(4, format!("unknown run status `{status}`")))?,
        current_state: row.text(5)?,
        epoch: row.i64(6)?,
        crash_count: row.i64(7)?,
        lease_owner: row.opt_text(8)?,
        lease_token: row.i64(9)?,
        lease_expires_ms: row.opt_i64(10)?,
        created_ms: row.i64(11)?,
        updated_ms: row.i64(12)?,
        finished_ms: row.opt_i64(13)?,
        queue: row.text(14)?,
        ready_ms: row.i64(15)?,
    })
}

fn step_from_row(row: &Row) -> Result<StepRecord, DbError> {
    Ok(StepRecord {
        run_id: row.i64(0)?,
        seq: row.i64(1)?,
        state: row.text(2)?,
        epoch: row.i64(3)?,
        completed: row.text(4)? == "completed",
        attempt: row.i64(5)?,
        attempt_open: row.flag(6)?,
        last_outcome: row.opt_text(7)?,
        retry_at_ms: row.opt_i64(8)?,
        outcome: row.opt_text(9)?,
        next_state: row.opt_text(10)?,
        started_ms: row.i64(11)?,
        finished_ms: row.opt_i64(12)?,
    })
}

fn event_from_row(row: &Row) -> Result<EventRecord, DbError> {
    let kind = row.text(3)?;
    Ok(EventRecord {
        run_id: row.i64(0)?,
        seq: row.i64(1)?,
        at_ms: row.i64(2)?,
        kind: EventKind::parse(&kind)
            .ok_or_else(|| conversion_error(3, format!("unknown event kind `{kind}`")))?,
        step: row.opt_i64(4)?,
        state: row.opt_text(5)?,
        attempt: row.opt_i64(6)?,
        outcome: row.opt_text(7)?,
        to_state: row.opt_text(8)?,
        idempotency_key: row.opt_text(9)?,
        lease_token: row.opt_i64(10)?,
        detail: row.text(11)?,
    })
}

/// What the fencing statement hands back: the first event and step
/// numbers reserved for this transaction, and the run's epoch.
#[derive(Debug, Clone, Copy)]
struct Fenced {
    first_event: i64,
    first_step: i64,
    epoch: i64,
    now: i64,
}

/// The durable store. See the module documentation for its invariants.
pub struct Store {
    connection: Connection,
    location: Option<Location>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Store")
            .field("store", &self.connection.label())
            .finish()
    }
}

/// `FOR UPDATE` where the backend has row locks (SQLite's `BEGIN
/// IMMEDIATE` already holds the whole file).
fn for_update(connection: &Connection) -> &'static str {
    match connection.backend() {
        Backend::Sqlite => "",
        Backend::Postgres => " FOR UPDATE",
    }
}

impl Store {
    /// Opens (creating if needed) the SQLite store at `path` and migrates it.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::connect(&Location::Sqlite(path.to_path_buf()))
    }

    /// Opens the store named by a `--db` location (an SQLite file, created
    /// if needed, or a PostgreSQL database) and migrates it.
    pub fn connect(location: &Location) -> Result<Store, StoreError> {
        let connection = Connection::open(location, SQLITE_SETUP)?;
        let store = Store {
            connection,
            location: Some(location.clone()),
            clock: Arc::new(SystemClock),
        };
        schema::COMPONENT.migrate(&store.connection)?;
        Ok(store)
    }

    /// Opens a store another connection of this process has just migrated
    /// (a worker's slots): checks its version instead of migrating, so
    /// slots starting together do not queue on the migration lock.
    pub fn connect_migrated(location: &Location) -> Result<Store, StoreError> {
        let connection = Connection::open(location, SQLITE_SETUP)?;
        schema::COMPONENT.check_current(&connection)?;
        Ok(Store {
            connection,
            location: Some(location.clone()),
            clock: Arc::new(SystemClock),
        })
    }

    /// Uses an already open SQLite connection (for example one shared with
    /// other crates' tables) and migrates it.
    pub fn from_connection(connection: rusqlite::Connection) -> Result<Store, StoreError> {
        let label = connection
            .path()
            .filter(|path| !path.is_empty())
            .unwrap_or(":memory:")
            .to_string();
        let connection = Connection::from_sqlite(connection, label, SQLITE_SETUP)?;
        let store = Store {
            connection,
            location: None,
            clock: Arc::new(SystemClock),
        };
        schema::COMPONENT.migrate(&store.connection)?;
        Ok(store)
    }

    /// Brings a store's workflow tables to this build's version without
    /// opening it for work; returns the versions before and after.
    pub fn migrate(location: &Location) -> Result<(i64, i64), StoreError> {
        let connection = Connection::open(location, SQLITE_SETUP)?;
        Ok(schema::COMPONENT.migrate(&connection)?)
    }

    /// Replaces the clock (tests use a [`ManualClock`]).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Store {
        self.clock = clock;
        self
    }

    /// The underlying connection, for callers that keep their own tables in
    /// the same store, and for tests.
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// The store's name for messages (a path, or a URL without password).
    pub fn path(&self) -> &str {
        self.connection.label()
    }

    /// Where the store is, when it was opened by location.
    pub fn location(&self) -> Option<&Location> {
        self.location.as_ref()
    }

    /// Which engine holds the store.
    pub fn backend(&self) -> Backend {
        self.connection.backend()
    }

    /// "Now" by the store's clock.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// After a lost server: connects again, for up to `budget`.
    pub fn reconnect(&self, budget: Duration) -> Result<(), StoreError> {
        Ok(self.connection.reconnect(budget)?)
    }

    /// The schema version stored (0 for a new store).
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(schema::COMPONENT.version(&self.connection)?)
    }

    /// Creates a run of `spec` in its initial state and records
    /// `run_created`. Workers serving the initial state's queue are woken.
    pub fn create_run(&mut self, spec: &Spec) -> Result<i64, StoreError> {
        let now = self.now_ms();
        let queue = spec.queue_of(&spec.initial).to_string();
        self.connection.transaction("create run", |connection| {
            let run_id = connection.query_i64(
                "create run",
                "INSERT INTO wf_runs (workflow, spec_origin, spec_source, status, current_state, \
                 created_ms, updated_ms, queue, ready_ms, lease_ms, max_crashes, event_count) \
                 VALUES (?1, ?2, ?3, 'running', ?4, ?5, ?5, ?6, ?5, ?7, ?8, 1) RETURNING id",
                args![
                    &spec.name,
                    spec.origin(),
                    spec.source(),
                    &spec.initial,
                    now,
                    &queue,
                    spec.lease.as_millis() as i64,
                    i64::from(spec.max_crashes),
                ],
            )?;
            insert_events(
                connection,
                run_id,
                now,
                1,
                &[NewEvent {
                    state: Some(&spec.initial),
                    detail: spec.origin(),
                    ..NewEvent::of(EventKind::RunCreated)
                }],
            )?;
            connection.notify(WAKE_CHANNEL, &queue)?;
            Ok(run_id)
        })
    }

    fn read_run_locked(&self, run_id: i64) -> Result<RunRecord, StoreError> {
        let row = self.connection.query_opt(
            "read run",
            &format!(
                "SELECT {RUN_COLUMNS} FROM wf_runs WHERE id = ?1{}",
                for_update(&self.connection)
            ),
            args![run_id],
        )?;
        match row {
            Some(row) => Ok(run_from_row(&row)?),
            None => Err(StoreError::UnknownRun {
                path: self.path().to_string(),
                run: run_id,
            }),
        }
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
        self.connection.begin("acquire lease")?;
        let result = (|| {
            let run = self.read_run_locked(run_id)?;
            self.take_lease(&run, owner, duration, max_crashes, now, true)
        })();
        self.end(result, "acquire lease")
    }

    /// Commits after `Ok` and after a crash-loop verdict (which is itself a
    /// record); rolls back otherwise.
    fn end<T>(&self, result: Result<T, StoreError>, operation: &str) -> Result<T, StoreError> {
        let keep = matches!(&result, Ok(_) | Err(StoreError::CrashLoop { .. }));
        if keep {
            if let Err(error) = self.connection.commit(operation) {
                self.connection.rollback();
                return Err(error.into());
            }
        } else {
            self.connection.rollback();
        }
        result
    }

    /// The lease-taking part of [`Store::acquire_lease`] and of a worker's
    /// claim, inside a transaction that holds the run's row.
    fn take_lease(
        &self,
        run: &RunRecord,
        owner: &str,
        duration: Duration,
        max_crashes: u32,
        now: i64,
        check_holder: bool,
    ) -> Result<Lease, StoreError> {
        let run_id = run.id;
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
        let mut events = Vec::new();
        let crash_detail;
        if let Some(previous) = &run.lease_owner {
            let expires = run.lease_expires_ms.unwrap_or(0);
            if check_holder && expires > now && !owner_is_dead(previous) {
                return Err(StoreError::LeaseHeld {
                    run: run_id,
                    owner: previous.clone(),
                    remaining_ms: expires - now,
                });
            }
            // The previous executor never released the lease: it crashed.
            crash_count += 1;
            crash_detail = format!(
                "executor {previous} (token {}) died without releasing its lease; crash {crash_count} of at most {max_crashes}",
                run.lease_token
            );
            events.push(NewEvent {
                state: Some(&run.current_state),
                lease_token: Some(run.lease_token),
                detail: &crash_detail,
                ..NewEvent::of(EventKind::ExecutorCrashed)
            });
            if crash_count > i64::from(max_crashes) {
                self.connection.execute(
                    "mark run crashed",
                    "UPDATE wf_runs SET status = 'crashed', crash_count = ?2, lease_owner = NULL, \
                     lease_expires_ms = NULL, updated_ms = ?3 WHERE id = ?1",
                    args![run_id, crash_count, now],
                )?;
                events.push(NewEvent {
                    state: Some(&run.current_state),
                    detail: "crash-loop cap reached; restart the run explicitly",
                    ..NewEvent::of(EventKind::CrashLoop)
                });
                append_events(&self.connection, run_id, now, &events)?;
                return Err(StoreError::CrashLoop {
                    run: run_id,
                    crashes: crash_count,
                    cap: max_crashes,
                });
            }
        }
        let token = run.lease_token + 1;
        let expires = now + duration.as_millis() as i64;
        self.connection.execute(
            "take lease",
            "UPDATE wf_runs SET lease_owner = ?2, lease_token = ?3, lease_expires_ms = ?4, \
             crash_count = ?5, updated_ms = ?6 WHERE id = ?1",
            args![run_id, owner, token, expires, crash_count, now],
        )?;
        events.push(NewEvent {
            state: Some(&run.current_state),
            lease_token: Some(token),
            detail: owner,
            ..NewEvent::of(EventKind::LeaseAcquired)
        });
        append_events(&self.connection, run_id, now, &events)?;
        Ok(Lease {
            run_id,
            owner: owner.to_string(),
            token,
            duration,
        })
    }

    /// Runs `write` in one transaction after checking, in that same
    /// transaction, that `lease` is still the run's current, unexpired
    /// lease; extends the lease and reserves `events` event numbers and
    /// `steps` step numbers. This is the fencing that keeps an executor
    /// whose lease lapsed from writing.
    fn fenced<T>(
        &mut self,
        lease: &Lease,
        operation: &'static str,
        events: i64,
        steps: i64,
        write: impl FnOnce(&Connection, Fenced) -> Result<T, DbError>,
    ) -> Result<T, StoreError> {
        let now = self.now_ms();
        self.connection.begin(operation)?;
        let result = (|| {
            let row = self.connection.query_opt(
                operation,
                "UPDATE wf_runs SET lease_expires_ms = ?5, updated_ms = ?4, \
                 event_count = event_count + ?6, step_count = step_count + ?7 \
                 WHERE id = ?1 AND lease_token = ?2 AND lease_owner = ?3 AND lease_expires_ms > ?4 \
                 RETURNING event_count, step_count, epoch",
                args![
                    lease.run_id,
                    lease.token,
                    &lease.owner,
                    now,
                    now + lease.duration.as_millis() as i64,
                    events,
                    steps
                ],
            )?;
            let Some(row) = row else {
                return Err(self.lease_lost(lease, now));
            };
            let fenced = Fenced {
                first_event: row.i64(0)? - events + 1,
                first_step: row.i64(1)? - steps + 1,
                epoch: row.i64(2)?,
                now,
            };
            Ok(write(&self.connection, fenced)?)
        })();
        match result {
            Ok(value) => match self.connection.commit(operation) {
                Ok(()) => Ok(value),
                Err(error) => {
                    self.connection.rollback();
                    Err(error.into())
                }
            },
            Err(error) => {
                self.connection.rollback();
                Err(error)
            }
        }
    }

    /// Why the fencing statement matched nothing.
    fn lease_lost(&self, lease: &Lease, now: i64) -> StoreError {
        let holder = self.connection.query_opt(
            "read lease",
            "SELECT lease_owner, lease_token, lease_expires_ms FROM wf_runs WHERE id = ?1",
            args![lease.run_id],
        );
        let row = match holder {
            Ok(Some(row)) => row,
            Ok(None) => {
                return StoreError::UnknownRun {
                    path: self.path().to_string(),
                    run: lease.run_id,
                }
            }
            Err(error) => return error.into(),
        };
        let owner = row.opt_text(0).ok().flatten();
        let token = row.i64(1).unwrap_or(0);
        let expires = row.opt_i64(2).ok().flatten().unwrap_or(0);
        let reason = if token != lease.token || owner.as_deref() != Some(lease.owner.as_str()) {
            format!(
                "the run's lease is now token {token} held by {}",
                owner.as_deref().unwrap_or("nobody")
            )
        } else {
            format!("it expired {} ms ago", now - expires)
        };
        StoreError::LeaseLost {
            run: lease.run_id,
            token: lease.token,
            reason,
        }
    }

    /// Extends the lease; fails once it is lost.
    pub fn heartbeat(&mut self, lease: &Lease) -> Result<(), StoreError> {
        self.fenced(lease, "heartbeat", 0, 0, |_, _| Ok(()))
    }

    /// Gives the lease back without finishing the run, so that the next
    /// executor does not count a crash. The run may be claimed again from
    /// `ready_ms` on (now, or when a backoff ends); workers are woken.
    pub fn release_lease(&mut self, lease: &Lease, reason: &str) -> Result<(), StoreError> {
        self.release_lease_until(lease, reason, None)
    }

    /// [`Store::release_lease`], with the run claimable only from `ready_ms`.
    pub fn release_lease_until(
        &mut self,
        lease: &Lease,
        reason: &str,
        ready_ms: Option<i64>,
    ) -> Result<(), StoreError> {
        self.fenced(lease, "release lease", 1, 0, |connection, fenced| {
            let queue = connection.query_one(
                "release lease",
                "UPDATE wf_runs SET lease_owner = NULL, lease_expires_ms = NULL, ready_ms = ?2 \
                 WHERE id = ?1 RETURNING queue",
                args![lease.run_id, ready_ms.unwrap_or(fenced.now).max(fenced.now)],
            )?;
            insert_events(
                connection,
                lease.run_id,
                fenced.now,
                fenced.first_event,
                &[NewEvent {
                    lease_token: Some(lease.token),
                    detail: reason,
                    ..NewEvent::of(EventKind::LeaseReleased)
                }],
            )?;
            connection.notify(WAKE_CHANNEL, &queue.text(0)?)
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
        let seq = self.fenced(lease, "begin step", 1, 1, |connection, fenced| {
            let seq = fenced.first_step;
            connection.execute(
                "begin step",
                "INSERT INTO wf_steps (run_id, seq, state, epoch, status, started_ms) \
                 VALUES (?1, ?2, ?3, ?4, 'running', ?5)",
                args![run_id, seq, state, epoch, fenced.now],
            )?;
            insert_events(
                connection,
                run_id,
                fenced.now,
                fenced.first_event,
                &[NewEvent {
                    step: Some(seq),
                    state: Some(state),
                    lease_token: Some(lease.token),
                    ..NewEvent::of(EventKind::StepStarted)
                }],
            )?;
            Ok(seq)
        })?;
        self.step(run_id, seq)
    }

    /// Begins a new step and records its first attempt as started, in one
    /// transaction (one commit instead of two on the common path).
    pub fn begin_step_with_attempt(
        &mut self,
        lease: &Lease,
        state: &str,
        epoch: i64,
    ) -> Result<StepRecord, StoreError> {
        let run_id = lease.run_id;
        self.fenced(lease, "begin step", 2, 1, |connection, fenced| {
            let key = crate::action::TaskContext::idempotency_key_for(run_id, fenced.first_step, 1);
            let events = step_with_attempt_events(lease, state, fenced.first_step, &key);
            insert_step_with_first_attempt(connection, lease, state, epoch, fenced)?;
            insert_events(connection, run_id, fenced.now, fenced.first_event, &events)?;
            // As inserted: not read back (one round trip less per run).
            Ok(StepRecord::begun(
                run_id,
                fenced.first_step,
                state,
                epoch,
                fenced.now,
            ))
        })
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
        self.fenced(lease, "start attempt", 1, 0, |connection, fenced| {
            let changed = connection.execute(
                "start attempt",
                "UPDATE wf_steps SET attempt = ?3, attempt_open = 1, retry_at_ms = NULL \
                 WHERE run_id = ?1 AND seq = ?2 AND status = 'running'",
                args![step.run_id, step.seq, attempt],
            )?;
            expect_one(connection, "start attempt", changed, step)?;
            insert_events(
                connection,
                step.run_id,
                fenced.now,
                fenced.first_event,
                &[NewEvent {
                    step: Some(step.seq),
                    state: Some(&step.state),
                    attempt: Some(attempt),
                    idempotency_key: Some(idempotency_key),
                    lease_token: Some(lease.token),
                    detail,
                    ..NewEvent::of(EventKind::AttemptStarted)
                }],
            )
        })
    }

    /// Records an attempt's result and what follows: a retry after a
    /// backoff, or the step's completion with the transition (and, for a
    /// terminal target, the run's end; or, with `begin_next`, the next
    /// step and its first attempt) in the same transaction. Returns the
    /// step begun this way, as recorded.
    pub fn finish_attempt(
        &mut self,
        lease: &Lease,
        step: &StepRecord,
        attempt: i64,
        outcome: Outcome,
        detail: &str,
        decision: &AttemptDecision,
    ) -> Result<Option<StepRecord>, StoreError> {
        let (events, steps) = match decision {
            AttemptDecision::Retry { .. } => (2, 0),
            AttemptDecision::Complete {
                terminal,
                begin_next,
                ..
            } => {
                let finished = i64::from(terminal.is_some());
                let next = i64::from(*begin_next && terminal.is_none());
                (3 + finished + 2 * next, next)
            }
        };
        if self.backend() == Backend::Postgres {
            return self.finish_attempt_folded(
                lease,
                step,
                attempt,
                outcome,
                detail,
                decision,
                (events, steps),
            );
        }
        self.fenced(
            lease,
            "finish attempt",
            events,
            steps,
            |connection, fenced| {
                // A completing attempt closes itself and its step in one
                // statement (one round trip less per transition).
                let changed = match decision {
                    AttemptDecision::Retry { .. } => connection.execute(
                        "finish attempt",
                        "UPDATE wf_steps SET attempt_open = 0, last_outcome = ?4 \
                         WHERE run_id = ?1 AND seq = ?2 AND attempt = ?3 AND status = 'running'",
                        args![step.run_id, step.seq, attempt, outcome.as_str()],
                    )?,
                    AttemptDecision::Complete {
                        outcome: step_outcome,
                        next_state,
                        ..
                    } => connection.execute(
                        "finish attempt",
                        "UPDATE wf_steps SET attempt_open = 0, last_outcome = ?4, \
                         status = 'completed', outcome = ?5, next_state = ?6, finished_ms = ?7 \
                         WHERE run_id = ?1 AND seq = ?2 AND attempt = ?3 AND status = 'running'",
                        args![
                            step.run_id,
                            step.seq,
                            attempt,
                            outcome.as_str(),
                            step_outcome.as_str(),
                            next_state.as_str(),
                            fenced.now
                        ],
                    )?,
                };
                expect_one(connection, "finish attempt", changed, step)?;
                let mut list = vec![NewEvent::attempt_finished(
                    step,
                    attempt,
                    outcome.as_str(),
                    lease,
                    detail,
                )];
                match decision {
                    AttemptDecision::Retry { at_ms } => {
                        connection.execute(
                            "schedule retry",
                            "UPDATE wf_steps SET retry_at_ms = ?3 WHERE run_id = ?1 AND seq = ?2",
                            args![step.run_id, step.seq, *at_ms],
                        )?;
                        let note = format!("next attempt in {} ms", (at_ms - fenced.now).max(0));
                        list.push(NewEvent::retry_scheduled(step, attempt, lease, &note));
                        insert_events(
                            connection,
                            step.run_id,
                            fenced.now,
                            fenced.first_event,
                            &list,
                        )?;
                        Ok(None)
                    }
                    AttemptDecision::Complete {
                        outcome,
                        next_state,
                        next_queue,
                        terminal,
                        begin_next,
                    } => {
                        complete_step(
                            connection, lease, step, fenced.now, *outcome, next_state, next_queue,
                            *terminal, &mut list, true,
                        )?;
                        let key;
                        let begun = if *begin_next && terminal.is_none() {
                            key = crate::action::TaskContext::idempotency_key_for(
                                step.run_id,
                                fenced.first_step,
                                1,
                            );
                            insert_step_with_first_attempt(
                                connection,
                                lease,
                                next_state,
                                fenced.epoch,
                                fenced,
                            )?;
                            list.extend(step_with_attempt_events(
                                lease,
                                next_state,
                                fenced.first_step,
                                &key,
                            ));
                            Some(StepRecord::begun(
                                step.run_id,
                                fenced.first_step,
                                next_state,
                                fenced.epoch,
                                fenced.now,
                            ))
                        } else {
                            None
                        };
                        insert_events(
                            connection,
                            step.run_id,
                            fenced.now,
                            fenced.first_event,
                            &list,
                        )?;
                        Ok(begun)
                    }
                }
            },
        )
    }

    /// Completes `step` without running its action: the state's
    /// `max_visits` was reached, so the `exhausted` transition is taken.
    pub fn complete_exhausted(
        &mut self,
        lease: &Lease,
        step: &StepRecord,
        next_state: &str,
        next_queue: &str,
        terminal: Option<TerminalKind>,
    ) -> Result<(), StoreError> {
        let events = 2 + i64::from(terminal.is_some());
        self.fenced(
            lease,
            "complete exhausted step",
            events,
            0,
            |connection, fenced| {
                let mut list = Vec::new();
                complete_step(
                    connection,
                    lease,
                    step,
                    fenced.now,
                    Outcome::Exhausted,
                    next_state,
                    next_queue,
                    terminal,
                    &mut list,
                    false,
                )?;
                insert_events(
                    connection,
                    step.run_id,
                    fenced.now,
                    fenced.first_event,
                    &list,
                )
            },
        )
    }

    /// Puts a failed or crashed run back to work: a failed run restarts at
    /// the state of its last failed step, a crashed run where it stopped.
    /// Starts a new epoch (so `max_visits` counts afresh) and clears the
    /// crash count. Returns the state it restarts in.
    pub fn restart(&mut self, run_id: i64) -> Result<String, StoreError> {
        let now = self.now_ms();
        self.connection.begin("restart run")?;
        let result = (|| {
            let run = self.read_run_locked(run_id)?;
            let restart_state = match run.status {
                RunStatus::Crashed => run.current_state.clone(),
                RunStatus::Failed => {
                    // The most recent step whose action failed; a spec may
                    // also end in failure with no failed action, then the
                    // state before the terminal one is retried.
                    let failed = self.connection.query_opt(
                        "restart run",
                        "SELECT state FROM wf_steps WHERE run_id = ?1 \
                         AND outcome IN ('failed', 'invalid', 'timeout') ORDER BY seq DESC LIMIT 1",
                        args![run_id],
                    )?;
                    let last = self.connection.query_opt(
                        "restart run",
                        "SELECT state FROM wf_steps WHERE run_id = ?1 ORDER BY seq DESC LIMIT 1",
                        args![run_id],
                    )?;
                    match failed.or(last) {
                        Some(row) => row.text(0)?,
                        None => {
                            return Err(StoreError::Corrupt {
                                path: self.path().to_string(),
                                detail: format!("run {run_id} failed without any recorded step"),
                            })
                        }
                    }
                }
                status => {
                    return Err(StoreError::NotRestartable {
                        run: run_id,
                        status,
                    })
                }
            };
            let queue = Spec::parse(&run.spec_origin, &run.spec_source)
                .map(|spec| spec.queue_of(&restart_state).to_string())
                .unwrap_or_else(|_| run.queue.clone());
            self.connection.execute(
                "restart run",
                "UPDATE wf_runs SET status = 'running', current_state = ?2, epoch = epoch + 1, \
                 crash_count = 0, lease_owner = NULL, lease_expires_ms = NULL, finished_ms = NULL, \
                 updated_ms = ?3, queue = ?4, ready_ms = ?3 WHERE id = ?1",
                args![run_id, &restart_state, now, &queue],
            )?;
            let detail = format!(
                "restarted from {} run in state `{restart_state}` (epoch {})",
                run.status,
                run.epoch + 1
            );
            append_events(
                &self.connection,
                run_id,
                now,
                &[NewEvent {
                    state: Some(&restart_state),
                    detail: &detail,
                    ..NewEvent::of(EventKind::Restarted)
                }],
            )?;
            self.connection.notify(WAKE_CHANNEL, &queue)?;
            Ok(restart_state)
        })();
        self.end(result, "restart run")
    }

    /// The run with id `run_id`.
    pub fn run(&self, run_id: i64) -> Result<RunRecord, StoreError> {
        let row = self.connection.query_opt(
            "read run",
            &format!("SELECT {RUN_COLUMNS} FROM wf_runs WHERE id = ?1"),
            args![run_id],
        )?;
        match row {
            Some(row) => Ok(run_from_row(&row)?),
            None => Err(StoreError::UnknownRun {
                path: self.path().to_string(),
                run: run_id,
            }),
        }
    }

    fn records<T>(
        &self,
        operation: &str,
        sql: &str,
        params: &[Value<'_>],
        convert: fn(&Row) -> Result<T, DbError>,
    ) -> Result<Vec<T>, StoreError> {
        let mut records = Vec::new();
        self.connection.for_each(operation, sql, params, |row| {
            records.push(convert(row)?);
            Ok::<(), DbError>(())
        })?;
        Ok(records)
    }

    /// All runs, oldest first.
    pub fn runs(&self) -> Result<Vec<RunRecord>, StoreError> {
        self.records(
            "list runs",
            &format!("SELECT {RUN_COLUMNS} FROM wf_runs ORDER BY id"),
            &[],
            run_from_row,
        )
    }

    /// The run's steps in order.
    pub fn steps(&self, run_id: i64) -> Result<Vec<StepRecord>, StoreError> {
        self.records(
            "list steps",
            &format!("SELECT {STEP_COLUMNS} FROM wf_steps WHERE run_id = ?1 ORDER BY seq"),
            args![run_id],
            step_from_row,
        )
    }

    /// One step.
    pub fn step(&self, run_id: i64, seq: i64) -> Result<StepRecord, StoreError> {
        let row = self.connection.query_one(
            "read step",
            &format!("SELECT {STEP_COLUMNS} FROM wf_steps WHERE run_id = ?1 AND seq = ?2"),
            args![run_id, seq],
        )?;
        Ok(step_from_row(&row)?)
    }

    /// The run's step that has not completed, if any (there is at most one).
    pub fn open_step(&self, run_id: i64) -> Result<Option<StepRecord>, StoreError> {
        let row = self.connection.query_opt(
            "read open step",
            &format!(
                "SELECT {STEP_COLUMNS} FROM wf_steps WHERE run_id = ?1 AND status = 'running' \
                 ORDER BY seq DESC LIMIT 1"
            ),
            args![run_id],
        )?;
        Ok(row.map(|row| step_from_row(&row)).transpose()?)
    }

    /// How many steps of the run visited `state` in `epoch`.
    pub fn visits(&self, run_id: i64, state: &str, epoch: i64) -> Result<i64, StoreError> {
        Ok(self.connection.query_i64(
            "count visits",
            "SELECT COUNT(*) FROM wf_steps WHERE run_id = ?1 AND state = ?2 AND epoch = ?3",
            args![run_id, state, epoch],
        )?)
    }

    /// The run's event log in order.
    pub fn events(&self, run_id: i64) -> Result<Vec<EventRecord>, StoreError> {
        self.records(
            "read events",
            &format!("SELECT {EVENT_COLUMNS} FROM wf_events WHERE run_id = ?1 ORDER BY seq"),
            args![run_id],
            event_from_row,
        )
    }

    /// How many events the run's log holds.
    pub fn event_count(&self, run_id: i64) -> Result<i64, StoreError> {
        Ok(self.connection.query_i64(
            "count events",
            "SELECT COUNT(*) FROM wf_events WHERE run_id = ?1",
            args![run_id],
        )?)
    }

    /// Every recorded transition, optionally of one workflow only, in
    /// run and event order.
    pub fn transitions(&self, workflow: Option<&str>) -> Result<Vec<TransitionRecord>, StoreError> {
        self.records(
            "read transitions",
            "SELECT e.run_id, r.workflow, e.state, e.to_state, e.outcome \
             FROM wf_events e JOIN wf_runs r ON r.id = e.run_id \
             WHERE e.kind = 'transition' AND (CAST(?1 AS TEXT) IS NULL OR r.workflow = ?1) \
             ORDER BY e.run_id, e.seq",
            args![workflow],
            |row| {
                Ok(TransitionRecord {
                    run_id: row.i64(0)?,
                    workflow: row.text(1)?,
                    from: row.text(2)?,
                    to: row.text(3)?,
                    outcome: row.text(4)?,
                })
            },
        )
    }
}

/// A statement meant to change exactly one row of `step` changed another
/// number: the step moved on under us (it completed, or another attempt
/// started), so this write must not happen.
fn expect_one(
    connection: &Connection,
    operation: &str,
    changed: u64,
    step: &StepRecord,
) -> Result<(), DbError> {
    if changed == 1 {
        return Ok(());
    }
    Err(DbError::Value {
        store: connection.label().to_string(),
        operation: operation.to_string(),
        column: 0,
        message: format!(
            "step {} of run {} is not in the expected state ({changed} rows matched); a completed step never runs again",
            step.seq, step.run_id
        ),
    })
}

fn step_with_attempt_events<'a>(
    lease: &Lease,
    state: &'a str,
    seq: i64,
    key: &'a str,
) -> [NewEvent<'a>; 2] {
    [
        NewEvent {
            step: Some(seq),
            state: Some(state),
            lease_token: Some(lease.token),
            ..NewEvent::of(EventKind::StepStarted)
        },
        NewEvent {
            step: Some(seq),
            state: Some(state),
            attempt: Some(1),
            idempotency_key: Some(key),
            lease_token: Some(lease.token),
            ..NewEvent::of(EventKind::AttemptStarted)
        },
    ]
}

/// Inserts a new open step of `state` whose first attempt is recorded as
/// started (its events are the caller's).
fn insert_step_with_first_attempt(
    connection: &Connection,
    lease: &Lease,
    state: &str,
    epoch: i64,
    fenced: Fenced,
) -> Result<(), DbError> {
    connection.execute(
        "begin step",
        "INSERT INTO wf_steps (run_id, seq, state, epoch, status, attempt, attempt_open, started_ms) \
         VALUES (?1, ?2, ?3, ?4, 'running', 1, 1, ?5)",
        args![lease.run_id, fenced.first_step, state, epoch, fenced.now],
    )?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn complete_step<'a>(
    connection: &Connection,
    lease: &Lease,
    step: &'a StepRecord,
    now: i64,
    outcome: Outcome,
    next_state: &'a str,
    next_queue: &str,
    terminal: Option<TerminalKind>,
    events: &mut Vec<NewEvent<'a>>,
    already_marked: bool,
) -> Result<(), DbError> {
    if !already_marked {
        let changed = connection.execute(
            "complete step",
            "UPDATE wf_steps SET status = 'completed', outcome = ?3, next_state = ?4, finished_ms = ?5 \
             WHERE run_id = ?1 AND seq = ?2 AND status = 'running'",
            args![step.run_id, step.seq, outcome.as_str(), next_state, now],
        )?;
        expect_one(connection, "complete step", changed, step)?;
    }
    completion_events(lease, step, outcome, next_state, terminal, events);
    match terminal {
        None => {
            connection.execute(
                "move run",
                "UPDATE wf_runs SET current_state = ?2, queue = ?3, ready_ms = ?4 WHERE id = ?1",
                args![step.run_id, next_state, next_queue, now],
            )?;
        }
        Some(kind) => {
            let status = terminal_status(kind);
            connection.execute(
                "finish run",
                "UPDATE wf_runs SET current_state = ?2, status = ?3, finished_ms = ?4, \
                 lease_owner = NULL, lease_expires_ms = NULL WHERE id = ?1",
                args![step.run_id, next_state, status.as_str(), now],
            )?;
        }
    }
    Ok(())
}

/// How a run that reached a terminal state ended.
fn terminal_status(kind: TerminalKind) -> RunStatus {
    match kind {
        TerminalKind::Success => RunStatus::Succeeded,
        TerminalKind::Failure => RunStatus::Failed,
    }
}

/// The events of a step's completion: `step_completed`, the transition
/// and, for a terminal target, `run_finished`.
fn completion_events<'a>(
    lease: &Lease,
    step: &'a StepRecord,
    outcome: Outcome,
    next_state: &'a str,
    terminal: Option<TerminalKind>,
    events: &mut Vec<NewEvent<'a>>,
) {
    let common = || NewEvent {
        step: Some(step.seq),
        state: Some(&step.state),
        outcome: Some(outcome.as_str()),
        lease_token: Some(lease.token),
        ..NewEvent::default()
    };
    events.push(NewEvent {
        kind: Some(EventKind::StepCompleted),
        ..common()
    });
    events.push(NewEvent {
        kind: Some(EventKind::Transition),
        to_state: Some(next_state),
        ..common()
    });
    if let Some(kind) = terminal {
        events.push(NewEvent {
            kind: Some(EventKind::RunFinished),
            state: Some(next_state),
            lease_token: Some(lease.token),
            detail: terminal_status(kind).as_str(),
            ..NewEvent::default()
        });
    }
}
