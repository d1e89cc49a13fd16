//! The SQLite store: the processing queue that training reads, the
//! quarantine, and the books of every run.
//!
//! Tables are prefixed `data_` so the same file can also hold the workflow
//! engine's tables. Writes are batched in transactions; a run is `running`
//! until its books balance, then `done`. Readers of the queue must take rows
//! of `done` runs only (the view `data_ready` does exactly that). A run that
//! fails removes its rows and is marked `failed`.

use std::path::{Path, PathBuf};

use attnflow_store::{args, Backend, Component, Connection, DbError, Location, Migration, Row};
use serde::Serialize;

use crate::check::Violation;
use crate::error::{DataError, DataResult};
use crate::schema::{Format, Schema};
use crate::source::Record;

/// Version of the `data_` tables; bumped on incompatible changes.
pub const SCHEMA_VERSION: i64 = 2;

/// The data tables, for `attnflow store copy|migrate`.
pub const TABLES: attnflow_store::Tables = attnflow_store::Tables {
    component: COMPONENT,
    tables: &[
        attnflow_store::Table {
            name: "data_runs",
            columns: &[
                "id",
                "kind",
                "status",
                "schema_name",
                "schema_path",
                "schema_text",
                "queue_start",
                "started_at",
                "finished_at",
                "read",
                "accepted",
                "quarantined",
            ],
            serial_id: true,
        },
        attnflow_store::Table {
            name: "data_sources",
            columns: &[
                "id",
                "run_id",
                "path",
                "format",
                "columns",
                "delimiter",
                "quote",
            ],
            serial_id: true,
        },
        attnflow_store::Table {
            name: "data_queue",
            columns: &["id", "run_id", "source_id", "row", "line", "record"],
            serial_id: true,
        },
        attnflow_store::Table {
            name: "data_quarantine",
            columns: &[
                "id",
                "run_id",
                "source_id",
                "row",
                "line",
                "field",
                "rule",
                "value",
                "message",
                "violations",
                "raw",
                "raw_cut",
                "last_checked_run",
                "released_by_run",
            ],
            serial_id: true,
        },
    ],
};

/// The data queue's tables, the same on both backends.
pub const COMPONENT: Component = Component {
    name: "data",
    version_table: "data_schema_version",
    migrations: &[
        Migration {
            version: 1,
            sqlite: SQLITE_TABLES,
            postgres: POSTGRES_TABLES,
        },
        Migration {
            version: 2,
            sqlite: SQLITE_QUEUE_WITHOUT_REFERENCES,
            postgres: "SELECT 1",
        },
        Migration {
            version: 3,
            sqlite: "SELECT 1",
            postgres: POSTGRES_QUEUE_IDS_CACHED,
        },
        Migration {
            version: 4,
            sqlite: "SELECT 1",
            postgres: POSTGRES_QUARANTINE_WITHOUT_REFERENCES,
        },
    ],
};

// Version 2: the SQLite queue loses its foreign keys, as on PostgreSQL.
// They cost two index lookups per queued row, the writer's largest cost
// after the insert itself, and guard ids only this module writes; each
// run's books are verified against the tables before it commits.
const SQLITE_QUEUE_WITHOUT_REFERENCES: &str = "
CREATE TABLE data_queue_next (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL,
    source_id INTEGER NOT NULL,
    row INTEGER NOT NULL,
    line INTEGER NOT NULL,
    record TEXT NOT NULL
);
INSERT INTO data_queue_next (id, run_id, source_id, row, line, record)
    SELECT id, run_id, source_id, row, line, record FROM data_queue;
DROP VIEW data_ready;
DROP TABLE data_queue;
ALTER TABLE data_queue_next RENAME TO data_queue;
CREATE VIEW data_ready AS
    SELECT q.* FROM data_queue q JOIN data_runs r ON r.id = q.run_id WHERE r.status = 'done';
";

// Version 3: a PostgreSQL session takes queue ids 8,192 at a time. Without
// a cache every row's `nextval` locks the sequence's page and logs it every
// 32 values: 15% of the server's time per COPYed row. A run discards its
// session's cached ids when it begins ([`Store::begin_run`]), so its ids
// still all come after every id in the queue at its start.
const POSTGRES_QUEUE_IDS_CACHED: &str = "ALTER SEQUENCE data_queue_id_seq CACHE 8192";

// Version 4: PostgreSQL's quarantine loses its foreign keys, as its queue
// never had them. Checking them is a query per key per row (an SPI
// statement from a trigger): 78% of the server's time for a COPY of
// quarantined records, which is every record when a file is checked again.
// Only this module writes those ids, and each run's books are verified
// before it commits. (SQLite checks its keys in the row's own B-tree
// lookups and keeps them.)
const POSTGRES_QUARANTINE_WITHOUT_REFERENCES: &str = "
ALTER TABLE data_quarantine
    DROP CONSTRAINT IF EXISTS data_quarantine_run_id_fkey,
    DROP CONSTRAINT IF EXISTS data_quarantine_source_id_fkey";

const SQLITE_TABLES: &str = "
CREATE TABLE IF NOT EXISTS data_runs (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'running',
    schema_name TEXT NOT NULL,
    schema_path TEXT NOT NULL,
    schema_text TEXT NOT NULL,
    queue_start INTEGER NOT NULL DEFAULT 0,
    started_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    finished_at TEXT,
    read INTEGER,
    accepted INTEGER,
    quarantined INTEGER
);
CREATE TABLE IF NOT EXISTS data_sources (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES data_runs(id),
    path TEXT NOT NULL,
    format TEXT NOT NULL,
    columns TEXT NOT NULL,
    delimiter INTEGER NOT NULL,
    quote INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS data_queue (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES data_runs(id),
    source_id INTEGER NOT NULL REFERENCES data_sources(id),
    row INTEGER NOT NULL,
    line INTEGER NOT NULL,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS data_quarantine (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES data_runs(id),
    source_id INTEGER NOT NULL REFERENCES data_sources(id),
    row INTEGER NOT NULL,
    line INTEGER NOT NULL,
    field TEXT,
    rule TEXT NOT NULL,
    value TEXT,
    message TEXT NOT NULL,
    violations TEXT NOT NULL,
    raw BLOB NOT NULL,
    raw_cut INTEGER NOT NULL,
    last_checked_run INTEGER NOT NULL,
    released_by_run INTEGER
);
CREATE INDEX IF NOT EXISTS data_quarantine_run ON data_quarantine(run_id);
CREATE VIEW IF NOT EXISTS data_ready AS
    SELECT q.* FROM data_queue q JOIN data_runs r ON r.id = q.run_id WHERE r.status = 'done';
";

// The queue has no foreign keys and no index but its key here: COPY then
// does the least work per row, and the run's books are verified against
// the tables before it commits (a run's rows are an id range).
const POSTGRES_TABLES: &str = "
CREATE TABLE data_runs (
    id BIGSERIAL PRIMARY KEY,
    kind TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'running',
    schema_name TEXT NOT NULL,
    schema_path TEXT NOT NULL,
    schema_text TEXT NOT NULL,
    queue_start BIGINT NOT NULL DEFAULT 0,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    read BIGINT,
    accepted BIGINT,
    quarantined BIGINT
);
CREATE TABLE data_sources (
    id BIGSERIAL PRIMARY KEY,
    run_id BIGINT NOT NULL REFERENCES data_runs(id),
    path TEXT NOT NULL,
    format TEXT NOT NULL,
    columns TEXT NOT NULL,
    delimiter BIGINT NOT NULL,
    quote BIGINT NOT NULL
);
CREATE TABLE data_queue (
    id BIGSERIAL PRIMARY KEY,
    run_id BIGINT NOT NULL,
    source_id BIGINT NOT NULL,
    row BIGINT NOT NULL,
    line BIGINT NOT NULL,
    record TEXT NOT NULL
);
CREATE TABLE data_quarantine (
    id BIGSERIAL PRIMARY KEY,
    run_id BIGINT NOT NULL REFERENCES data_runs(id),
    source_id BIGINT NOT NULL REFERENCES data_sources(id),
    row BIGINT NOT NULL,
    line BIGINT NOT NULL,
    field TEXT,
    rule TEXT NOT NULL,
    value TEXT,
    message TEXT NOT NULL,
    violations TEXT NOT NULL,
    raw BYTEA NOT NULL,
    raw_cut BIGINT NOT NULL,
    last_checked_run BIGINT NOT NULL,
    released_by_run BIGINT
);
CREATE INDEX data_quarantine_run ON data_quarantine(run_id);
CREATE VIEW data_ready AS
    SELECT q.* FROM data_queue q JOIN data_runs r ON r.id = q.run_id WHERE r.status = 'done';
";

/// SQLite settings: fewer checkpoints make bulk inserts markedly faster.
/// The page cache (16 MiB) holds a WAL batch whole; a larger one only held
/// a bulk load's pages back from the disk until its commit, and cost more
/// to fill than to spill (64 MiB: 2.44 M rows/s into the queue; 16 MiB:
/// 2.72 M, before the [`Flusher`]). 16 KiB pages (for a new file; an existing one keeps its own) mean a
/// quarter of the pages, page headers and WAL frames per queued row.
const SQLITE_SETUP: &str =
    "PRAGMA page_size = 16384; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
     PRAGMA foreign_keys = ON; PRAGMA cache_size = -16384; PRAGMA wal_autocheckpoint = 8192;";

/// Now, as stored in `started_at` and `finished_at`.
fn timestamp() -> String {
    let now = attnflow_base::time::now_milliseconds();
    format!(
        "{}.{:03}Z",
        attnflow_base::time::format_utc(now).replace(' ', "T"),
        now.rem_euclid(1000)
    )
}

/// Records per transaction: large enough to amortise commits, small enough
/// to keep the WAL short.
const BATCH: usize = 50_000;

/// How long a check waits for other users of an SQLite file to let go
/// before loading in WAL batches instead of one bulk transaction.
const BULK_SWITCH_WAIT: std::time::Duration = std::time::Duration::from_millis(50);

/// A thread that flushes an SQLite file's written pages to disk every
/// 20 ms while a bulk load runs. The load's one commit ends with an fsync,
/// which otherwise waited for the whole run's pages at once: 57 ms of a
/// 1 M-row load (`strace -T`), 4 ms with the flusher. It uses SQLite's own
/// descriptor ([`attnflow_base::OpenFile`]): opening and closing another
/// would drop SQLite's locks on the file.
struct Flusher {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Flusher {
    fn start(path: &Path) -> Option<Flusher> {
        let file = attnflow_base::OpenFile::find(path)?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("attnflow-flush".into())
            .spawn(move || {
                while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::park_timeout(std::time::Duration::from_millis(20));
                    file.sync_data();
                }
            })
            .ok()?;
        Some(Flusher { stop, thread })
    }

    fn stop(self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.thread().unpark();
        let _ = self.thread.join();
    }
}

/// An open store: an SQLite file or a PostgreSQL database.
pub struct Store {
    connection: Connection,
    path: PathBuf,
    pending: usize,
    queued: QueueBatch,
    copy: Vec<u8>,
    /// Quarantined records on their way in as binary COPY (PostgreSQL),
    /// so a run with many rejects pays no round trip per record.
    quarantined: Vec<u8>,
    /// The open run loads in one rollback-journal transaction (SQLite).
    bulk: bool,
    /// Flushes the file's written pages to disk while a bulk load runs.
    flusher: Option<Flusher>,
    /// Queue rows the database reported inserted by the open run: the
    /// change counts of SQLite's INSERTs, the command tags of PostgreSQL's
    /// COPY.
    inserted: u64,
}

/// Accepted records on their way to the queue, in file order, with their
/// JSON already made: a check fills batches and the store's writer takes
/// them whole (on SQLite, multi-row INSERTs; on PostgreSQL, binary COPY).
#[derive(Default, Debug)]
pub struct QueueBatch {
    /// `(run_id, source_id, row, line)` of each record.
    keys: Vec<[i64; 4]>,
    /// The records' JSON, back to back.
    json: String,
    /// Where each record's JSON ends in `json`.
    ends: Vec<usize>,
    /// A batch for PostgreSQL holds its records as binary COPY rows
    /// instead, made by whoever fills it: the writer then only sends bytes,
    /// and the server never waits while it encodes the next chunk.
    copy: Option<Vec<u8>>,
    /// Records in `copy`.
    copied: usize,
}

impl QueueBatch {
    /// An empty batch of the same form (rows or COPY data).
    pub fn empty_like(&self) -> QueueBatch {
        QueueBatch {
            copy: self.copy.as_ref().map(|_| Vec::new()),
            ..QueueBatch::default()
        }
    }

    /// Appends an accepted record (as a JSON object).
    pub fn push(&mut self, run_id: i64, source_id: i64, row: u64, line: u64, record_json: &str) {
        let keys = [run_id, source_id, row as i64, line as i64];
        match &mut self.copy {
            Some(copy) => {
                append_copy_row(copy, &keys, record_json);
                self.copied += 1;
            }
            None => {
                self.keys.push(keys);
                self.json.push_str(record_json);
                self.ends.push(self.json.len());
            }
        }
    }

    /// Records in the batch.
    pub fn len(&self) -> usize {
        self.keys.len() + self.copied
    }

    /// Whether the batch holds no record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Empties the batch, keeping its buffers.
    pub fn clear(&mut self) {
        self.keys.clear();
        self.json.clear();
        self.ends.clear();
        if let Some(copy) = &mut self.copy {
            copy.clear();
        }
        self.copied = 0;
    }

    /// Record `index`: its keys and JSON.
    fn row(&self, index: usize) -> (&[i64; 4], &str) {
        let start = if index == 0 { 0 } else { self.ends[index - 1] };
        (&self.keys[index], &self.json[start..self.ends[index]])
    }
}

/// Rows per multi-row INSERT into the queue (SQLite): SQLite spends most
/// of a single-row insert on statement overhead.
const QUEUE_GROUP: usize = 128;

/// Bytes of COPY data sent at once (PostgreSQL).
const COPY_CHUNK: usize = 4 << 20;

/// `INSERT OR FAIL INTO data_queue ... VALUES (?1,?2,?,?,?), ...` for
/// `rows` rows of one run and source: the run and source ids are bound once
/// per statement (`?1`, `?2`), each row's own row, line and record after
/// them.
///
/// `OR FAIL` spares SQLite a statement journal. A multi-row statement that
/// may abort on a constraint (the columns are `NOT NULL`) must be able to
/// undo its own earlier rows, so SQLite copied every page it touched that
/// existed before it (the file's first page, the last leaf and its parents)
/// into a temporary file: 205 MB of writes for 1 M rows, per `strace`. A
/// failed statement here fails the whole run, whose transaction is rolled
/// back, so the statement never needs to undo itself.
fn queue_insert(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT OR FAIL INTO data_queue (run_id, source_id, row, line, record) VALUES ",
    );
    for index in 0..rows {
        if index > 0 {
            sql.push(',');
        }
        sql.push_str("(?1,?2,?,?,?)");
    }
    sql
}

/// The start of a binary COPY stream: signature, flags, no extension.
const COPY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// Appends a BIGINT field to a binary COPY row.
fn copy_i64(out: &mut Vec<u8>, value: i64) {
    out.extend_from_slice(&8i32.to_be_bytes());
    out.extend_from_slice(&value.to_be_bytes());
}

/// Appends a TEXT or BYTEA field (NULL for `None`) to a binary COPY row.
fn copy_bytes(out: &mut Vec<u8>, value: Option<&[u8]>) {
    match value {
        // A field never nears 2 GiB: the checker bounds records far below.
        Some(bytes) => {
            out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
            out.extend_from_slice(bytes);
        }
        None => out.extend_from_slice(&(-1i32).to_be_bytes()),
    }
}

/// Appends one queue row to a binary COPY stream: four BIGINTs and the
/// record's text, each with its length. Binary spares both sides the text
/// format's escaping and the server its number parsing (COPY's parsing was
/// a quarter of the server's time per row).
fn append_copy_row(out: &mut Vec<u8>, keys: &[i64; 4], json: &str) {
    out.extend_from_slice(&5i16.to_be_bytes());
    for &key in keys {
        copy_i64(out, key);
    }
    copy_bytes(out, Some(json.as_bytes()));
}

/// The columns a quarantined record is written to, in the order of
/// [`append_quarantine_row`] (a macro, so the statements below are
/// constants).
macro_rules! quarantine_columns {
    () => {
        "run_id, source_id, row, line, field, rule, value, message, violations, raw, raw_cut, last_checked_run"
    };
}

/// One quarantined record (SQLite).
const QUARANTINE_INSERT: &str = concat!(
    "INSERT INTO data_quarantine (",
    quarantine_columns!(),
    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?1)"
);

/// Quarantined records in binary COPY form (PostgreSQL).
const QUARANTINE_COPY: &str = concat!(
    "COPY data_quarantine (",
    quarantine_columns!(),
    ") FROM STDIN (FORMAT binary)"
);

/// Appends one quarantined record to a binary COPY stream, its first
/// violation in columns of their own and all of them as JSON.
fn append_quarantine_row(
    out: &mut Vec<u8>,
    run_id: i64,
    source_id: i64,
    record: &Record,
    violations: &[Violation],
) {
    let first = &violations[0];
    let all = serde_json::to_string(violations).unwrap_or_default();
    out.extend_from_slice(&12i16.to_be_bytes());
    for key in [run_id, source_id, record.row as i64, record.line as i64] {
        copy_i64(out, key);
    }
    copy_bytes(out, first.field.as_deref().map(str::as_bytes));
    copy_bytes(out, Some(first.rule.as_bytes()));
    copy_bytes(out, first.value.as_deref().map(str::as_bytes));
    copy_bytes(out, Some(first.message.as_bytes()));
    copy_bytes(out, Some(all.as_bytes()));
    copy_bytes(out, Some(&record.raw));
    copy_i64(out, i64::from(record.raw_cut));
    copy_i64(out, run_id);
}

/// Ends a binary COPY stream in `data` and sends it (when it holds a row),
/// then empties `data`. Returns the rows the server inserted.
fn send_binary_copy(
    connection: &Connection,
    operation: &str,
    sql: &str,
    data: &mut Vec<u8>,
) -> DataResult<u64> {
    if data.len() > COPY_HEADER.len() {
        // The trailer: a row of -1 fields.
        data.extend_from_slice(&(-1i16).to_be_bytes());
        let rows = connection.copy_in(operation, sql, data)?;
        data.clear();
        return Ok(rows);
    }
    data.clear();
    Ok(0)
}

/// A stored source file of a run.
#[derive(Debug, Clone)]
pub struct StoredSource {
    /// Row id in `data_sources`.
    pub id: i64,
    /// The file.
    pub path: String,
    /// Its format.
    pub format: Format,
    /// Its column names (the header, or the schema's field names).
    pub columns: Vec<String>,
    /// CSV delimiter.
    pub delimiter: u8,
    /// CSV quote.
    pub quote: u8,
}

/// One quarantined record as listed by `data quarantine`.
#[derive(Debug, Clone, Serialize)]
pub struct QuarantineEntry {
    /// Row id.
    pub id: i64,
    /// The run that quarantined it.
    pub run_id: i64,
    /// Source file.
    pub source: String,
    /// Record number in the file.
    pub row: u64,
    /// Line where it starts.
    pub line: u64,
    /// Field at fault (first violation).
    pub field: Option<String>,
    /// Rule broken (first violation).
    pub rule: String,
    /// Offending value (first violation).
    pub value: Option<String>,
    /// Explanation (first violation).
    pub message: String,
    /// All violations.
    pub violations: Vec<Violation>,
    /// The run that released it after a re-check, if any.
    pub released_by_run: Option<i64>,
}

/// Which quarantined records a listing shows; each condition given must
/// hold. Rule, field and source are those of a record's first violation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuarantineFilter {
    /// Also records a re-check released.
    pub include_released: bool,
    /// Only records of this rule.
    pub rule: Option<String>,
    /// Only records of this field.
    pub field: Option<String>,
    /// Only records of this source file.
    pub source: Option<String>,
}

/// Records still held, counted three ways (largest first).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct QuarantineFacets {
    /// By the rule of their first violation.
    pub by_rule: Vec<(String, u64)>,
    /// By the field of their first violation (record-level faults have none).
    pub by_field: Vec<(String, u64)>,
    /// By source file.
    pub by_source: Vec<(String, u64)>,
}

const ENTRY_COLUMNS: &str = "q.id, q.run_id, s.path, q.row, q.line, q.field, q.rule, q.value, q.message, q.violations, q.released_by_run";

const QUARANTINE_FROM: &str = "FROM data_quarantine q JOIN data_sources s ON s.id = q.source_id JOIN data_runs r ON r.id = q.run_id";

/// Parameters ?1 .. ?4: include released (0/1), rule, field, source.
const QUARANTINE_WHERE: &str = "r.status = 'done' AND (?1 = 1 OR q.released_by_run IS NULL) \
     AND (CAST(?2 AS TEXT) IS NULL OR q.rule = ?2) AND (CAST(?3 AS TEXT) IS NULL OR q.field = ?3) \
     AND (CAST(?4 AS TEXT) IS NULL OR s.path = ?4)";

fn entry_from_row(row: &Row) -> Result<QuarantineEntry, DbError> {
    let violations = row.text(9)?;
    Ok(QuarantineEntry {
        id: row.i64(0)?,
        run_id: row.i64(1)?,
        source: row.text(2)?,
        row: row.i64(3)? as u64,
        line: row.i64(4)? as u64,
        field: row.opt_text(5)?,
        rule: row.text(6)?,
        value: row.opt_text(7)?,
        message: row.text(8)?,
        violations: serde_json::from_str(&violations).unwrap_or_default(),
        released_by_run: row.opt_i64(10)?,
    })
}

/// Books of one run, as stored.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// Run id.
    pub id: i64,
    /// `check` or `recheck`.
    pub kind: String,
    /// `running`, `done` or `failed`.
    pub status: String,
    /// Schema name.
    pub schema: String,
    /// When it started (UTC).
    pub started_at: String,
    /// Records read.
    pub read: Option<u64>,
    /// Records accepted.
    pub accepted: Option<u64>,
    /// Records quarantined.
    pub quarantined: Option<u64>,
}

impl Store {
    /// Opens (creating if needed) the SQLite store at `path`, in WAL mode.
    pub fn open(path: &Path) -> DataResult<Self> {
        Store::connect(&Location::Sqlite(path.to_path_buf()))
    }

    /// Opens the store named by a `--db` location (an SQLite file, created
    /// if needed, or a PostgreSQL database) and migrates its `data_` tables.
    pub fn connect(location: &Location) -> DataResult<Self> {
        let connection = Connection::open(location, SQLITE_SETUP)?;
        COMPONENT.migrate(&connection)?;
        Ok(Self::on(location, connection))
    }

    /// Opens an existing store for reading (the web app) or a re-check:
    /// nothing is created or migrated, the data tables must be at this
    /// build's version, and another process's lock is waited for at most
    /// `busy`.
    pub fn open_existing(location: &Location, busy: std::time::Duration) -> DataResult<Self> {
        let connection = Connection::open_existing(location, SQLITE_SETUP, busy)?;
        COMPONENT.check_current(&connection)?;
        Ok(Self::on(location, connection))
    }

    /// A store on an open connection, with nothing buffered.
    fn on(location: &Location, connection: Connection) -> Self {
        Self {
            path: PathBuf::from(location.to_string()),
            connection,
            pending: 0,
            queued: QueueBatch::default(),
            copy: Vec::new(),
            quarantined: Vec::new(),
            inserted: 0,
            bulk: false,
            flusher: None,
        }
    }

    /// The store's name (a file path, or a URL without password).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The underlying connection, for readers such as training.
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// Frees the connection's page cache (SQLite; PostgreSQL's is the
    /// server's). Best effort: the next query fills it again.
    pub fn release_cache(&self) {
        if self.connection.backend() == Backend::Sqlite {
            let _ = self
                .connection
                .batch("release cache", "PRAGMA shrink_memory");
        }
    }

    /// An empty batch of accepted records in the form this store writes
    /// fastest.
    pub fn queue_batch(&self) -> QueueBatch {
        QueueBatch {
            copy: (self.connection.backend() == Backend::Postgres).then(Vec::new),
            ..QueueBatch::default()
        }
    }

    /// Starts a run and opens its first transaction.
    pub fn begin_run(&mut self, kind: &str, schema: &Schema) -> DataResult<i64> {
        self.bulk = kind == "check" && self.enter_bulk_load();
        if self.bulk {
            self.flusher = Flusher::start(&self.path);
        }
        self.inserted = 0;
        if self.connection.backend() == Backend::Postgres {
            // Ids cached by this session before (an earlier run on the same
            // connection) may lie below ids other sessions queued since.
            self.connection
                .batch("begin run", "DISCARD SEQUENCES")
                .map_err(DataError::from)?;
        }
        // The run row is written in the run's first transaction, so a run
        // that fails before its first batch leaves no trace at all.
        if let Err(error) = self.connection.begin("begin run") {
            self.leave_bulk_load();
            return Err(error.into());
        }
        let id = self.connection.query_i64(
            "begin run",
            "INSERT INTO data_runs (kind, schema_name, schema_path, schema_text, queue_start, started_at)
             VALUES (?1, ?2, ?3, ?4, (SELECT COALESCE(MAX(id), 0) FROM data_queue), ?5) RETURNING id",
            args![
                kind,
                &schema.name,
                schema.path.display().to_string().as_str(),
                &schema.text,
                timestamp().as_str()
            ],
        )?;
        self.pending = 0;
        Ok(id)
    }

    /// Registers a source file of a run.
    pub fn add_source(
        &mut self,
        run_id: i64,
        path: &Path,
        format: Format,
        columns: &[String],
        delimiter: u8,
        quote: u8,
    ) -> DataResult<i64> {
        let columns = serde_json::to_string(columns).unwrap_or_default();
        Ok(self.connection.query_i64(
            "add source",
            "INSERT INTO data_sources (run_id, path, format, columns, delimiter, quote)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING id",
            args![
                run_id,
                path.display().to_string().as_str(),
                format.name(),
                &columns,
                i64::from(delimiter),
                i64::from(quote)
            ],
        )?)
    }

    /// On SQLite, when no other connection has the file open, switches it
    /// from WAL to a rollback journal so the run loads in one transaction.
    ///
    /// In WAL mode every page is written twice (to the WAL, then by a
    /// checkpoint into the file) and each checkpoint waits for two fsyncs
    /// on the writer's thread; that was most of a queued row's cost. With a
    /// rollback journal, pages appended beyond the file's old end need no
    /// journal copy, so the queue is written once, and the one commit is
    /// still atomic: a crash leaves a hot journal that the next open rolls
    /// back, and no row of the run is ever visible before it is done.
    /// Readers that arrive during the load wait for it, as writers already
    /// did. WAL comes back when the run ends ([`Store::leave_bulk_load`]).
    fn enter_bulk_load(&self) -> bool {
        // Another connection (the web app, a worker) keeps WAL mode: the
        // switch needs the file alone, and must not wait long for it.
        self.connection.try_journal_mode("DELETE", BULK_SWITCH_WAIT)
    }

    /// Puts the file back in WAL mode after a bulk load (committed or
    /// rolled back). Should another connection hold it just now, the file
    /// stays in rollback mode, which is as safe; the next open of the
    /// store sets WAL again.
    fn leave_bulk_load(&mut self) {
        if let Some(flusher) = self.flusher.take() {
            flusher.stop();
        }
        if std::mem::take(&mut self.bulk) {
            self.connection.try_journal_mode("WAL", BULK_SWITCH_WAIT);
        }
    }

    /// Writes the buffered queue rows (and, on PostgreSQL, sends the COPY
    /// data).
    fn flush_queue(&mut self) -> DataResult<()> {
        let queued = std::mem::take(&mut self.queued);
        let written = self.write_rows(&queued);
        self.queued = queued;
        self.queued.clear();
        written?;
        self.send_copy()?;
        self.send_quarantined()
    }

    fn send_copy(&mut self) -> DataResult<()> {
        self.inserted += send_binary_copy(
            &self.connection,
            "queue records",
            "COPY data_queue (run_id, source_id, row, line, record) FROM STDIN (FORMAT binary)",
            &mut self.copy,
        )?;
        Ok(())
    }

    fn send_quarantined(&mut self) -> DataResult<()> {
        send_binary_copy(
            &self.connection,
            "quarantine records",
            QUARANTINE_COPY,
            &mut self.quarantined,
        )?;
        Ok(())
    }

    /// Writes `batch` into the open transaction: on SQLite as multi-row
    /// INSERTs with the parameters bound in place; on PostgreSQL as binary
    /// COPY, sent whenever a chunk is full.
    fn write_rows(&mut self, batch: &QueueBatch) -> DataResult<()> {
        if self.connection.backend() == Backend::Postgres {
            if let Some(copy) = &batch.copy {
                if self.copy.is_empty() {
                    self.copy.extend_from_slice(COPY_HEADER);
                }
                self.copy.extend_from_slice(copy);
                if self.copy.len() >= COPY_CHUNK {
                    self.send_copy()?;
                }
            }
            for index in 0..batch.keys.len() {
                let (keys, json) = batch.row(index);
                if self.copy.is_empty() {
                    self.copy.extend_from_slice(COPY_HEADER);
                }
                append_copy_row(&mut self.copy, keys, json);
                if self.copy.len() >= COPY_CHUNK {
                    self.send_copy()?;
                }
            }
            return Ok(());
        }
        let sqlite = self
            .connection
            .sqlite()
            .expect("the backend was checked above");
        let path = &self.path;
        let fail = |error| DataError::store(path, error);
        static FULL_GROUP: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let full_group = FULL_GROUP.get_or_init(|| queue_insert(QUEUE_GROUP));
        let mut first = 0;
        while first < batch.keys.len() {
            // A group: up to QUEUE_GROUP rows of one run and source (a
            // re-check releases records of several sources in one batch).
            let [run_id, source_id, ..] = batch.keys[first];
            let group = batch.keys[first..]
                .iter()
                .take(QUEUE_GROUP)
                .take_while(|keys| keys[0] == run_id && keys[1] == source_id)
                .count();
            let mut statement = if group == QUEUE_GROUP {
                sqlite.prepare_cached(full_group)
            } else {
                sqlite.prepare_cached(&queue_insert(group))
            }
            .map_err(fail)?;
            statement.raw_bind_parameter(1, run_id).map_err(fail)?;
            statement.raw_bind_parameter(2, source_id).map_err(fail)?;
            for index in 0..group {
                let (keys, json) = batch.row(first + index);
                let parameter = 3 + 3 * index;
                statement
                    .raw_bind_parameter(parameter, keys[2])
                    .map_err(fail)?;
                statement
                    .raw_bind_parameter(parameter + 1, keys[3])
                    .map_err(fail)?;
                statement
                    .raw_bind_parameter(parameter + 2, json)
                    .map_err(fail)?;
            }
            first += group;
            self.inserted += statement.raw_execute().map_err(fail)? as u64;
        }
        Ok(())
    }

    /// Counts `records` written into the open transaction; commits and
    /// opens the next one every batch.
    fn count_written(&mut self, records: usize) -> DataResult<()> {
        self.pending += records;
        // PostgreSQL has no WAL to keep short: commit less often.
        let batch = match self.connection.backend() {
            Backend::Sqlite => BATCH,
            Backend::Postgres => 10 * BATCH,
        };
        // A bulk load commits once, at the end.
        if self.pending >= batch && !self.bulk {
            self.flush_queue()?;
            self.connection.batch("commit a batch", "COMMIT; BEGIN")?;
            self.pending = 0;
        }
        Ok(())
    }

    fn tick(&mut self) -> DataResult<()> {
        self.count_written(1)
    }

    /// Appends an accepted record (as a JSON object) to the queue.
    pub fn enqueue(
        &mut self,
        run_id: i64,
        source_id: i64,
        row: u64,
        line: u64,
        record_json: &str,
    ) -> DataResult<()> {
        self.queued.push(run_id, source_id, row, line, record_json);
        if self.queued.len() >= QUEUE_GROUP {
            self.flush_queue()?;
        }
        self.tick()
    }

    /// Appends a batch of accepted records to the queue, after any queued
    /// one by one.
    pub fn enqueue_batch(&mut self, batch: &QueueBatch) -> DataResult<()> {
        if !self.queued.is_empty() {
            self.flush_queue()?;
        }
        self.write_rows(batch)?;
        self.count_written(batch.len())
    }

    /// Quarantines a record with all its violations.
    pub fn quarantine(
        &mut self,
        run_id: i64,
        source_id: i64,
        record: &Record,
        violations: &[Violation],
    ) -> DataResult<()> {
        if self.connection.backend() == Backend::Postgres {
            if self.quarantined.is_empty() {
                self.quarantined.extend_from_slice(COPY_HEADER);
            }
            append_quarantine_row(&mut self.quarantined, run_id, source_id, record, violations);
            if self.quarantined.len() >= COPY_CHUNK {
                self.send_quarantined()?;
            }
            return self.tick();
        }
        let first = &violations[0];
        let all = serde_json::to_string(violations).unwrap_or_default();
        self.connection.execute(
            "quarantine a record",
            QUARANTINE_INSERT,
            args![
                run_id,
                source_id,
                record.row as i64,
                record.line as i64,
                first.field.as_deref(),
                first.rule.as_str(),
                first.value.as_deref(),
                first.message.as_str(),
                &all,
                record.raw.as_slice(),
                record.raw_cut
            ],
        )?;
        self.tick()
    }

    /// Marks a quarantined record released into the queue by a re-check.
    pub fn release(&mut self, quarantine_id: i64, run_id: i64) -> DataResult<()> {
        self.connection.execute(
            "release a record",
            "UPDATE data_quarantine SET released_by_run = ?2, last_checked_run = ?2 WHERE id = ?1",
            args![quarantine_id, run_id],
        )?;
        self.tick()
    }

    /// Records the violations a re-check found for a still-quarantined record.
    pub fn requarantine(
        &mut self,
        quarantine_id: i64,
        run_id: i64,
        violations: &[Violation],
    ) -> DataResult<()> {
        let first = &violations[0];
        let all = serde_json::to_string(violations).unwrap_or_default();
        self.connection.execute(
            "quarantine a record again",
            "UPDATE data_quarantine SET field = ?3, rule = ?4, value = ?5, message = ?6, violations = ?7, last_checked_run = ?2 WHERE id = ?1",
            args![
                quarantine_id,
                run_id,
                first.field.as_deref(),
                first.rule.as_str(),
                first.value.as_deref(),
                first.message.as_str(),
                &all
            ],
        )?;
        self.tick()
    }

    /// Commits the run after checking its books against the tables: the
    /// rows it wrote must equal what it counted.
    pub fn finish_run(
        &mut self,
        run_id: i64,
        read: u64,
        accepted: u64,
        quarantined: u64,
        recheck: bool,
    ) -> DataResult<()> {
        self.flush_queue()?;
        let (stored_accepted, stored_quarantined): (i64, i64) = if recheck {
            (
                self.count("SELECT COUNT(*) FROM data_quarantine WHERE released_by_run = ?1", run_id)?,
                self.count("SELECT COUNT(*) FROM data_quarantine WHERE last_checked_run = ?1 AND released_by_run IS NULL", run_id)?,
            )
        } else {
            (
                // The database's own count of the rows it inserted: the
                // INSERTs' change counts (SQLite), the COPY command tags
                // (PostgreSQL). Counting the run's rows again would read
                // them all back: 7% of PostgreSQL's time for a run, and on
                // SQLite a serial scan of the whole run after the last
                // insert.
                self.inserted as i64,
                self.count(
                    "SELECT COUNT(*) FROM data_quarantine WHERE run_id = ?1",
                    run_id,
                )?,
            )
        };
        if read != accepted + quarantined
            || stored_accepted as u64 != accepted
            || stored_quarantined as u64 != quarantined
        {
            return Err(DataError::Accounting {
                read,
                accepted: stored_accepted as u64,
                quarantined: stored_quarantined as u64,
            });
        }
        self.connection.execute(
            "finish run",
            "UPDATE data_runs SET status = 'done', finished_at = ?5, read = ?2, accepted = ?3, quarantined = ?4 WHERE id = ?1",
            args![run_id, read as i64, accepted as i64, quarantined as i64, timestamp().as_str()],
        )?;
        self.connection.commit("finish run")?;
        self.leave_bulk_load();
        Ok(())
    }

    /// Undoes what a failed run wrote (best effort) and marks it failed.
    pub fn abandon_run(&mut self, run_id: i64) {
        self.queued = QueueBatch::default();
        self.copy = Vec::new();
        self.quarantined = Vec::new();
        self.connection.rollback();
        self.leave_bulk_load();
        let _ = self.connection.transaction("abandon run", |connection| {
            connection.execute(
                "abandon run",
                "DELETE FROM data_queue WHERE run_id = ?1",
                args![run_id],
            )?;
            connection.execute(
                "abandon run",
                "DELETE FROM data_quarantine WHERE run_id = ?1",
                args![run_id],
            )?;
            connection.execute(
                "abandon run",
                "UPDATE data_quarantine SET released_by_run = NULL WHERE released_by_run = ?1",
                args![run_id],
            )?;
            connection.execute(
                "abandon run",
                "UPDATE data_runs SET status = 'failed' WHERE id = ?1",
                args![run_id],
            )?;
            Ok::<(), DbError>(())
        });
    }

    /// Deletes a finished run and every row it wrote (benches clean up
    /// after themselves this way).
    pub fn remove_run(&mut self, run_id: i64) -> DataResult<()> {
        self.connection.transaction("remove run", |connection| {
            for sql in [
                "DELETE FROM data_queue WHERE run_id = ?1",
                "DELETE FROM data_quarantine WHERE run_id = ?1",
                "DELETE FROM data_sources WHERE run_id = ?1",
                "DELETE FROM data_runs WHERE id = ?1",
            ] {
                connection.execute("remove run", sql, args![run_id])?;
            }
            Ok::<(), DbError>(())
        })?;
        Ok(())
    }

    fn count(&self, sql: &str, run_id: i64) -> DataResult<i64> {
        Ok(self
            .connection
            .query_i64("count rows", sql, args![run_id])?)
    }

    /// Values of `field` already in the queue for schemas named
    /// `schema_name`, to keep `unique` across runs. Calls `visit` per value.
    pub fn queued_values(
        &self,
        schema_name: &str,
        field: &str,
        mut visit: impl FnMut(serde_json::Value),
    ) -> DataResult<()> {
        // Both backends hand back the field's JSON text, so its type (an
        // integer, a string) survives.
        let (sql, key) = match self.connection.backend() {
            Backend::Sqlite => (
                "SELECT json_quote(json_extract(q.record, ?2)) FROM data_queue q JOIN data_runs r ON r.id = q.run_id WHERE r.status = 'done' AND r.schema_name = ?1",
                format!("$.\"{}\"", field.replace('"', "\\\"")),
            ),
            Backend::Postgres => (
                "SELECT (q.record::jsonb -> ?2)::text FROM data_queue q JOIN data_runs r ON r.id = q.run_id WHERE r.status = 'done' AND r.schema_name = ?1",
                field.to_string(),
            ),
        };
        self.connection
            .for_each("read queued values", sql, args![schema_name, &key], |row| {
                if let Some(text) = row.opt_text(0)? {
                    if let Ok(value) = serde_json::from_str::<serde_json::Value>(&text) {
                        if !value.is_null() {
                            visit(value);
                        }
                    }
                }
                Ok::<(), DataError>(())
            })
    }

    /// Quarantined records not yet released, after `after_id`, at most
    /// `limit`, with their sources (for re-checking).
    pub fn pending_quarantine(
        &self,
        after_id: i64,
        limit: usize,
    ) -> DataResult<Vec<(i64, StoredSource, Record)>> {
        let rows = self.connection.query(
            "read pending quarantine",
            "SELECT q.id, q.row, q.line, q.raw, q.raw_cut, s.id, s.path, s.format, s.columns, s.delimiter, s.quote
             FROM data_quarantine q JOIN data_sources s ON s.id = q.source_id JOIN data_runs r ON r.id = q.run_id
             WHERE q.released_by_run IS NULL AND r.status = 'done' AND q.id > ?1 ORDER BY q.id LIMIT ?2",
            args![after_id, limit.min(i64::MAX as usize) as i64],
        )?;
        let convert = |row: &Row| -> Result<(i64, StoredSource, Record), DbError> {
            let format = row.text(7)?;
            let columns = row.text(8)?;
            Ok((
                row.i64(0)?,
                StoredSource {
                    id: row.i64(5)?,
                    path: row.text(6)?,
                    format: Format::parse(&format).unwrap_or(Format::Csv),
                    columns: serde_json::from_str(&columns).unwrap_or_default(),
                    delimiter: row.i64(9)? as u8,
                    quote: row.i64(10)? as u8,
                },
                Record {
                    row: row.i64(1)? as u64,
                    line: row.i64(2)? as u64,
                    raw: row.bytes(3)?,
                    raw_cut: row.flag(4)?,
                    ..Record::default()
                },
            ))
        };
        Ok(rows.iter().map(convert).collect::<Result<Vec<_>, _>>()?)
    }

    /// Lists quarantined records (pending only unless `include_released`),
    /// optionally of one rule, at most `limit`.
    pub fn list_quarantine(
        &self,
        include_released: bool,
        rule: Option<&str>,
        limit: usize,
    ) -> DataResult<Vec<QuarantineEntry>> {
        let filter = QuarantineFilter {
            include_released,
            rule: rule.map(str::to_owned),
            ..QuarantineFilter::default()
        };
        self.quarantine_page(&filter, 0, limit)
    }

    /// The quarantined records `filter` selects, in id order, after
    /// skipping `offset`, at most `limit`.
    pub fn quarantine_page(
        &self,
        filter: &QuarantineFilter,
        offset: usize,
        limit: usize,
    ) -> DataResult<Vec<QuarantineEntry>> {
        let rows = self.connection.query(
            "list quarantine",
            &format!(
                "SELECT {ENTRY_COLUMNS} {QUARANTINE_FROM} WHERE {QUARANTINE_WHERE} ORDER BY q.id LIMIT ?5 OFFSET ?6"
            ),
            args![
                i64::from(filter.include_released),
                filter.rule.as_deref(),
                filter.field.as_deref(),
                filter.source.as_deref(),
                limit.min(i64::MAX as usize) as i64,
                offset.min(i64::MAX as usize) as i64
            ],
        )?;
        Ok(rows
            .iter()
            .map(entry_from_row)
            .collect::<Result<Vec<_>, _>>()?)
    }

    /// How many quarantined records `filter` selects.
    pub fn count_quarantine(&self, filter: &QuarantineFilter) -> DataResult<u64> {
        let count = self.connection.query_i64(
            "count quarantine",
            &format!("SELECT COUNT(*) {QUARANTINE_FROM} WHERE {QUARANTINE_WHERE}"),
            args![
                i64::from(filter.include_released),
                filter.rule.as_deref(),
                filter.field.as_deref(),
                filter.source.as_deref()
            ],
        )?;
        Ok(count.max(0) as u64)
    }

    /// Records still held, counted by the rule, the field and the source
    /// file of their first violation.
    pub fn quarantine_facets(&self) -> DataResult<QuarantineFacets> {
        Ok(QuarantineFacets {
            by_rule: self.held_by("q.rule")?,
            by_field: self.held_by("q.field")?,
            by_source: self.held_by("s.path")?,
        })
    }

    /// Records still held per value of `column` (largest count first).
    fn held_by(&self, column: &str) -> DataResult<Vec<(String, u64)>> {
        let rows = self.connection.query(
            "count quarantine",
            &format!(
                "SELECT {column}, COUNT(*) {QUARANTINE_FROM} \
                 WHERE r.status = 'done' AND q.released_by_run IS NULL AND {column} IS NOT NULL \
                 GROUP BY {column} ORDER BY COUNT(*) DESC, {column}"
            ),
            &[],
        )?;
        Ok(rows
            .iter()
            .map(|row| Ok((row.text(0)?, row.i64(1)?.max(0) as u64)))
            .collect::<Result<Vec<_>, DbError>>()?)
    }

    /// One quarantined record with its source and stored bytes (not yet
    /// parsed: see `run::quarantined_record`), if it exists in a finished run.
    pub fn quarantined(
        &self,
        id: i64,
    ) -> DataResult<Option<(QuarantineEntry, StoredSource, Record)>> {
        let row = self.connection.query_opt(
            "read a quarantined record",
            &format!(
                "SELECT {ENTRY_COLUMNS}, q.raw, q.raw_cut, s.id, s.format, s.columns, s.delimiter, s.quote \
                 {QUARANTINE_FROM} WHERE q.id = ?1"
            ),
            args![id],
        )?;
        let Some(row) = row else {
            return Ok(None);
        };
        let entry = entry_from_row(&row)?;
        let format = row.text(14)?;
        let columns = row.text(15)?;
        let source = StoredSource {
            id: row.i64(13)?,
            path: entry.source.clone(),
            format: Format::parse(&format).unwrap_or(Format::Csv),
            columns: serde_json::from_str(&columns).unwrap_or_default(),
            delimiter: row.i64(16)? as u8,
            quote: row.i64(17)? as u8,
        };
        let record = Record {
            row: entry.row,
            line: entry.line,
            raw: row.bytes(11)?,
            raw_cut: row.flag(12)?,
            ..Record::default()
        };
        Ok(Some((entry, source, record)))
    }

    /// The schema of the newest finished run: its name, the path it was
    /// read from and its text (what a re-check starts from).
    pub fn latest_schema(&self) -> DataResult<Option<(String, String, String)>> {
        let row = self.connection.query_opt(
            "read the latest schema",
            "SELECT schema_name, schema_path, schema_text FROM data_runs WHERE status = 'done' ORDER BY id DESC LIMIT 1",
            &[],
        )?;
        Ok(match row {
            Some(row) => Some((row.text(0)?, row.text(1)?, row.text(2)?)),
            None => None,
        })
    }

    /// Pending quarantined records per rule.
    pub fn quarantine_counts(&self) -> DataResult<Vec<(String, u64)>> {
        self.held_by("q.rule")
    }

    /// All runs, oldest first.
    pub fn runs(&self) -> DataResult<Vec<RunSummary>> {
        let rows = self.connection.query(
            "list runs",
            "SELECT id, kind, status, schema_name, started_at, read, accepted, quarantined FROM data_runs ORDER BY id",
            &[],
        )?;
        let convert = |row: &Row| -> Result<RunSummary, DbError> {
            Ok(RunSummary {
                id: row.i64(0)?,
                kind: row.text(1)?,
                status: row.text(2)?,
                schema: row.text(3)?,
                started_at: row.text(4)?,
                read: row.opt_i64(5)?.map(|value| value as u64),
                accepted: row.opt_i64(6)?.map(|value| value as u64),
                quarantined: row.opt_i64(7)?.map(|value| value as u64),
            })
        };
        Ok(rows.iter().map(convert).collect::<Result<Vec<_>, _>>()?)
    }

    /// Number of rows in the queue from finished runs.
    pub fn queue_length(&self) -> DataResult<u64> {
        Ok(self
            .connection
            .query_i64("count the queue", "SELECT COUNT(*) FROM data_ready", &[])?
            as u64)
    }

    /// Visits the records one run accepted into the queue, in queue order,
    /// as JSON objects (what training reads).
    pub fn queued_records(
        &self,
        run_id: i64,
        mut visit: impl FnMut(serde_json::Value),
    ) -> DataResult<()> {
        // The run's rows follow the queue's end at its start: an id range.
        self.connection.for_each(
            "read the queue",
            "SELECT record FROM data_queue
             WHERE id > (SELECT queue_start FROM data_runs WHERE id = ?1) AND run_id = ?1 ORDER BY id",
            args![run_id],
            |row| {
                let text = row.text(0)?;
                // The store wrote this JSON itself; a row that does not
                // parse means the store was damaged.
                let value = serde_json::from_str(&text).map_err(|error| DataError::Internal {
                    message: format!("{}: a queued record is not JSON: {error}", self.path.display()),
                })?;
                visit(value);
                Ok::<(), DataError>(())
            },
        )
    }
}
