//! The SQLite store: the processing queue that training reads, the
//! quarantine, and the books of every run.
//!
//! Tables are prefixed `data_` so the same file can also hold the workflow
//! engine's tables. Writes are batched in transactions; a run is `running`
//! until its books balance, then `done`. Readers of the queue must take rows
//! of `done` runs only (the view `data_ready` does exactly that). A run that
//! fails removes its rows and is marked `failed`.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use crate::check::Violation;
use crate::error::{DataError, DataResult};
use crate::schema::{Format, Schema};
use crate::source::Record;

/// Version of the `data_` tables; bumped on incompatible changes.
pub const SCHEMA_VERSION: i64 = 1;

const TABLES: &str = "
CREATE TABLE IF NOT EXISTS data_schema_version (version INTEGER NOT NULL);
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

/// Records per transaction: large enough to amortise commits, small enough
/// to keep the WAL short.
const BATCH: usize = 50_000;

/// An open store.
pub struct Store {
    connection: Connection,
    path: PathBuf,
    pending: usize,
    queued: QueueBuffer,
}

/// Accepted records waiting for one multi-row INSERT: SQLite spends most
/// of a single-row insert on statement overhead, so rows go in groups.
#[derive(Default)]
struct QueueBuffer {
    keys: Vec<[i64; 4]>,
    text: String,
    ends: Vec<usize>,
}

/// Rows per multi-row INSERT into the queue.
const QUEUE_GROUP: usize = 64;

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
    /// Opens (creating if needed) the store at `path`, in WAL mode.
    pub fn open(path: &Path) -> DataResult<Self> {
        let fail = |error| DataError::store(path, error);
        let connection = Connection::open(path).map_err(fail)?;
        connection
            .busy_timeout(std::time::Duration::from_secs(30))
            .map_err(fail)?;
        connection
            // A 64 MiB page cache and fewer checkpoints make bulk inserts
            // markedly faster and stay well within a check run's memory.
            .execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; \
                 PRAGMA cache_size = -65536; PRAGMA wal_autocheckpoint = 8192;",
            )
            .map_err(fail)?;
        connection.execute_batch(TABLES).map_err(fail)?;
        let version: Option<i64> = connection
            .query_row("SELECT version FROM data_schema_version", [], |row| {
                row.get(0)
            })
            .optional()
            .map_err(fail)?;
        match version {
            None => {
                connection.execute("INSERT INTO data_schema_version (version) VALUES (?1)", [SCHEMA_VERSION]).map_err(fail)?;
            }
            Some(version) if version == SCHEMA_VERSION => {}
            Some(version) => {
                return Err(DataError::StoreVersion {
                    path: path.to_path_buf(),
                    message: format!("data tables are version {version}, this attnflow reads version {SCHEMA_VERSION}"),
                })
            }
        }
        Ok(Self {
            connection,
            path: path.to_path_buf(),
            pending: 0,
            queued: QueueBuffer::default(),
        })
    }

    fn fail(&self) -> impl Fn(rusqlite::Error) -> DataError + '_ {
        move |error| DataError::store(&self.path, error)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The underlying connection, for readers such as training.
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// Starts a run and opens its first transaction.
    pub fn begin_run(&mut self, kind: &str, schema: &Schema) -> DataResult<i64> {
        // The run row is written in the run's first transaction, so a run
        // that fails before its first batch leaves no trace at all.
        self.connection
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(self.fail())?;
        self.connection
            .execute(
                "INSERT INTO data_runs (kind, schema_name, schema_path, schema_text, queue_start)
                 VALUES (?1, ?2, ?3, ?4, (SELECT COALESCE(MAX(rowid), 0) FROM data_queue))",
                params![
                    kind,
                    schema.name,
                    schema.path.display().to_string(),
                    schema.text
                ],
            )
            .map_err(self.fail())?;
        let id = self.connection.last_insert_rowid();
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
        self.connection
            .prepare_cached("INSERT INTO data_sources (run_id, path, format, columns, delimiter, quote) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")
            .and_then(|mut statement| {
                statement.execute(params![
                    run_id,
                    path.display().to_string(),
                    format.name(),
                    serde_json::to_string(columns).unwrap_or_default(),
                    delimiter,
                    quote
                ])
            })
            .map_err(self.fail())?;
        Ok(self.connection.last_insert_rowid())
    }

    /// Writes the buffered queue rows.
    fn flush_queue(&mut self) -> DataResult<()> {
        let count = self.queued.keys.len();
        if count == 0 {
            return Ok(());
        }
        let mut sql =
            String::from("INSERT INTO data_queue (run_id, source_id, row, line, record) VALUES ");
        for index in 0..count {
            if index > 0 {
                sql.push(',');
            }
            sql.push_str("(?,?,?,?,?)");
        }
        let buffer = &self.queued;
        let mut start = 0;
        let texts: Vec<&str> = buffer
            .ends
            .iter()
            .map(|&end| {
                let text = &buffer.text[start..end];
                start = end;
                text
            })
            .collect();
        let mut parameters: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(count * 5);
        for (keys, text) in buffer.keys.iter().zip(&texts) {
            for key in keys {
                parameters.push(key);
            }
            parameters.push(text);
        }
        let result = self
            .connection
            .prepare_cached(&sql)
            .and_then(|mut statement| statement.execute(rusqlite::params_from_iter(parameters)));
        result.map_err(|error| DataError::store(&self.path, error))?;
        self.queued.keys.clear();
        self.queued.ends.clear();
        self.queued.text.clear();
        Ok(())
    }

    fn tick(&mut self) -> DataResult<()> {
        self.pending += 1;
        if self.pending >= BATCH {
            self.flush_queue()?;
            self.connection
                .execute_batch("COMMIT; BEGIN")
                .map_err(self.fail())?;
            self.pending = 0;
        }
        Ok(())
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
        self.queued
            .keys
            .push([run_id, source_id, row as i64, line as i64]);
        self.queued.text.push_str(record_json);
        self.queued.ends.push(self.queued.text.len());
        if self.queued.keys.len() >= QUEUE_GROUP {
            self.flush_queue()?;
        }
        self.tick()
    }

    /// Quarantines a record with all its violations.
    pub fn quarantine(
        &mut self,
        run_id: i64,
        source_id: i64,
        record: &Record,
        violations: &[Violation],
    ) -> DataResult<()> {
        let first = &violations[0];
        self.connection
            .prepare_cached(
                "INSERT INTO data_quarantine (run_id, source_id, row, line, field, rule, value, message, violations, raw, raw_cut, last_checked_run)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?1)",
            )
            .and_then(|mut statement| {
                statement.execute(params![
                    run_id,
                    source_id,
                    record.row as i64,
                    record.line as i64,
                    first.field,
                    first.rule,
                    first.value,
                    first.message,
                    serde_json::to_string(violations).unwrap_or_default(),
                    record.raw,
                    record.raw_cut,
                ])
            })
            .map_err(self.fail())?;
        self.tick()
    }

    /// Marks a quarantined record released into the queue by a re-check.
    pub fn release(&mut self, quarantine_id: i64, run_id: i64) -> DataResult<()> {
        self.connection
            .prepare_cached("UPDATE data_quarantine SET released_by_run = ?2, last_checked_run = ?2 WHERE id = ?1")
            .and_then(|mut statement| statement.execute(params![quarantine_id, run_id]))
            .map_err(self.fail())?;
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
        self.connection
            .prepare_cached(
                "UPDATE data_quarantine SET field = ?3, rule = ?4, value = ?5, message = ?6, violations = ?7, last_checked_run = ?2 WHERE id = ?1",
            )
            .and_then(|mut statement| {
                statement.execute(params![
                    quarantine_id,
                    run_id,
                    first.field,
                    first.rule,
                    first.value,
                    first.message,
                    serde_json::to_string(violations).unwrap_or_default()
                ])
            })
            .map_err(self.fail())?;
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
                // Rows of this run come after the queue's end at its start
                // (rowids grow), so the count scans only this run's rows.
                self.count(
                    "SELECT COUNT(*) FROM data_queue WHERE rowid > (SELECT queue_start FROM data_runs WHERE id = ?1) AND run_id = ?1",
                    run_id,
                )?,
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
        self.connection
            .execute(
                "UPDATE data_runs SET status = 'done', finished_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), read = ?2, accepted = ?3, quarantined = ?4 WHERE id = ?1",
                params![run_id, read as i64, accepted as i64, quarantined as i64],
            )
            .map_err(self.fail())?;
        self.connection
            .execute_batch("COMMIT")
            .map_err(self.fail())?;
        Ok(())
    }

    /// Undoes what a failed run wrote (best effort) and marks it failed.
    pub fn abandon_run(&mut self, run_id: i64) {
        self.queued = QueueBuffer::default();
        let _ = self.connection.execute_batch("ROLLBACK");
        let _ = self.connection.execute_batch("BEGIN");
        let _ = self
            .connection
            .execute("DELETE FROM data_queue WHERE run_id = ?1", [run_id]);
        let _ = self
            .connection
            .execute("DELETE FROM data_quarantine WHERE run_id = ?1", [run_id]);
        let _ = self.connection.execute(
            "UPDATE data_quarantine SET released_by_run = NULL WHERE released_by_run = ?1",
            [run_id],
        );
        let _ = self.connection.execute(
            "UPDATE data_runs SET status = 'failed' WHERE id = ?1",
            [run_id],
        );
        let _ = self.connection.execute_batch("COMMIT");
    }

    fn count(&self, sql: &str, run_id: i64) -> DataResult<i64> {
        self.connection
            .query_row(sql, [run_id], |row| row.get(0))
            .map_err(self.fail())
    }

    /// Values of `field` already in the queue for schemas named
    /// `schema_name`, to keep `unique` across runs. Calls `visit` per value.
    pub fn queued_values(
        &self,
        schema_name: &str,
        field: &str,
        mut visit: impl FnMut(serde_json::Value),
    ) -> DataResult<()> {
        let path = format!("$.\"{}\"", field.replace('"', "\\\""));
        let mut statement = self
            .connection
            .prepare("SELECT json_extract(q.record, ?2) FROM data_queue q JOIN data_runs r ON r.id = q.run_id WHERE r.status = 'done' AND r.schema_name = ?1")
            .map_err(self.fail())?;
        let mut rows = statement
            .query(params![schema_name, path])
            .map_err(self.fail())?;
        while let Some(row) = rows.next().map_err(self.fail())? {
            let value = match row.get_ref(0).map_err(self.fail())? {
                rusqlite::types::ValueRef::Integer(number) => serde_json::Value::from(number),
                rusqlite::types::ValueRef::Real(number) => serde_json::Value::from(number),
                rusqlite::types::ValueRef::Text(text) => {
                    let text = String::from_utf8_lossy(text);
                    // json_extract returns arrays and objects as JSON text.
                    if text.starts_with('[') {
                        serde_json::from_str(&text)
                            .unwrap_or(serde_json::Value::String(text.into_owned()))
                    } else {
                        serde_json::Value::String(text.into_owned())
                    }
                }
                _ => continue,
            };
            visit(value);
        }
        Ok(())
    }

    /// Quarantined records not yet released, after `after_id`, at most
    /// `limit`, with their sources (for re-checking).
    pub fn pending_quarantine(
        &self,
        after_id: i64,
        limit: usize,
    ) -> DataResult<Vec<(i64, StoredSource, Record)>> {
        let mut statement = self
            .connection
            .prepare(
                "SELECT q.id, q.row, q.line, q.raw, q.raw_cut, s.id, s.path, s.format, s.columns, s.delimiter, s.quote
                 FROM data_quarantine q JOIN data_sources s ON s.id = q.source_id JOIN data_runs r ON r.id = q.run_id
                 WHERE q.released_by_run IS NULL AND r.status = 'done' AND q.id > ?1 ORDER BY q.id LIMIT ?2",
            )
            .map_err(self.fail())?;
        let rows = statement
            .query_map(params![after_id, limit as i64], |row| {
                let format: String = row.get(7)?;
                let columns: String = row.get(8)?;
                Ok((
                    row.get::<_, i64>(0)?,
                    StoredSource {
                        id: row.get(5)?,
                        path: row.get(6)?,
                        format: Format::parse(&format).unwrap_or(Format::Csv),
                        columns: serde_json::from_str(&columns).unwrap_or_default(),
                        delimiter: row.get(9)?,
                        quote: row.get(10)?,
                    },
                    Record {
                        row: row.get::<_, i64>(1)? as u64,
                        line: row.get::<_, i64>(2)? as u64,
                        raw: row.get(3)?,
                        raw_cut: row.get(4)?,
                        ..Record::default()
                    },
                ))
            })
            .map_err(self.fail())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(self.fail())
    }

    /// Lists quarantined records (pending only unless `include_released`),
    /// optionally of one rule, at most `limit`.
    pub fn list_quarantine(
        &self,
        include_released: bool,
        rule: Option<&str>,
        limit: usize,
    ) -> DataResult<Vec<QuarantineEntry>> {
        let mut statement = self
            .connection
            .prepare(
                "SELECT q.id, q.run_id, s.path, q.row, q.line, q.field, q.rule, q.value, q.message, q.violations, q.released_by_run
                 FROM data_quarantine q JOIN data_sources s ON s.id = q.source_id JOIN data_runs r ON r.id = q.run_id
                 WHERE r.status = 'done' AND (?1 OR q.released_by_run IS NULL) AND (?2 IS NULL OR q.rule = ?2)
                 ORDER BY q.id LIMIT ?3",
            )
            .map_err(self.fail())?;
        let rows = statement
            .query_map(
                params![include_released, rule, limit.min(i64::MAX as usize) as i64],
                |row| {
                    let violations: String = row.get(9)?;
                    Ok(QuarantineEntry {
                        id: row.get(0)?,
                        run_id: row.get(1)?,
                        source: row.get(2)?,
                        row: row.get::<_, i64>(3)? as u64,
                        line: row.get::<_, i64>(4)? as u64,
                        field: row.get(5)?,
                        rule: row.get(6)?,
                        value: row.get(7)?,
                        message: row.get(8)?,
                        violations: serde_json::from_str(&violations).unwrap_or_default(),
                        released_by_run: row.get(10)?,
                    })
                },
            )
            .map_err(self.fail())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(self.fail())
    }

    /// Pending quarantined records per rule.
    pub fn quarantine_counts(&self) -> DataResult<Vec<(String, u64)>> {
        let mut statement = self
            .connection
            .prepare(
                "SELECT q.rule, COUNT(*) FROM data_quarantine q JOIN data_runs r ON r.id = q.run_id
                 WHERE r.status = 'done' AND q.released_by_run IS NULL GROUP BY q.rule ORDER BY COUNT(*) DESC, q.rule",
            )
            .map_err(self.fail())?;
        let rows = statement
            .query_map([], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)? as u64))
            })
            .map_err(self.fail())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(self.fail())
    }

    /// All runs, oldest first.
    pub fn runs(&self) -> DataResult<Vec<RunSummary>> {
        let mut statement = self
            .connection
            .prepare("SELECT id, kind, status, schema_name, started_at, read, accepted, quarantined FROM data_runs ORDER BY id")
            .map_err(self.fail())?;
        let rows = statement
            .query_map([], |row| {
                Ok(RunSummary {
                    id: row.get(0)?,
                    kind: row.get(1)?,
                    status: row.get(2)?,
                    schema: row.get(3)?,
                    started_at: row.get(4)?,
                    read: row.get::<_, Option<i64>>(5)?.map(|value| value as u64),
                    accepted: row.get::<_, Option<i64>>(6)?.map(|value| value as u64),
                    quarantined: row.get::<_, Option<i64>>(7)?.map(|value| value as u64),
                })
            })
            .map_err(self.fail())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(self.fail())
    }

    /// Number of rows in the queue from finished runs.
    pub fn queue_length(&self) -> DataResult<u64> {
        self.connection
            .query_row("SELECT COUNT(*) FROM data_ready", [], |row| {
                row.get::<_, i64>(0)
            })
            .map(|count| count as u64)
            .map_err(self.fail())
    }

    /// Visits the records one run accepted into the queue, in queue order,
    /// as JSON objects (what training reads).
    pub fn queued_records(
        &self,
        run_id: i64,
        mut visit: impl FnMut(serde_json::Value),
    ) -> DataResult<()> {
        let mut statement = self
            .connection
            // The run's rows follow the queue's end at its start: a rowid
            // range, so no index on run_id is needed.
            .prepare(
                "SELECT record FROM data_queue
                 WHERE rowid > (SELECT queue_start FROM data_runs WHERE id = ?1) AND run_id = ?1 ORDER BY id",
            )
            .map_err(self.fail())?;
        let mut rows = statement.query(params![run_id]).map_err(self.fail())?;
        while let Some(row) = rows.next().map_err(self.fail())? {
            let text: String = row.get(0).map_err(self.fail())?;
            // The store wrote this JSON itself; a row that does not parse
            // means the file was damaged, which `fail` reports.
            let value = serde_json::from_str(&text).map_err(|error| {
                rusqlite::Error::FromSqlConversionFailure(
                    0,
                    rusqlite::types::Type::Text,
                    Box::new(error),
                )
            });
            visit(value.map_err(self.fail())?);
        }
        Ok(())
    }
}
