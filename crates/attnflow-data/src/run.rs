//! Check runs: stream every record of every file through `I(d)` (§6.1) and
//! route it to the processing queue or to quarantine, then prove the books
//! balance (read = accepted + quarantined). Also re-checks quarantined
//! records after a schema fix.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::check::{Binding, Checker, Violation};
use crate::error::{DataError, DataResult};
use crate::schema::{Format, Schema, SourceOptions};
use crate::source::{
    self, Body, CsvSource, JsonlSource, Malformed, MalformedKind, Record, RecordSource,
};
use crate::store::Store;
use crate::value::{write_json_string, ValueRef};

/// Options of a check run.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Show a progress bar on stderr (hidden when stderr is not a terminal).
    pub progress: bool,
    /// How many quarantined records to keep as samples in the report.
    pub sample_limit: usize,
}

impl Default for CheckOptions {
    fn default() -> Self {
        Self {
            progress: false,
            sample_limit: 20,
        }
    }
}

/// Counts for one file.
#[derive(Debug, Clone, Serialize)]
pub struct FileCount {
    /// The file.
    pub path: String,
    /// Its format.
    pub format: Format,
    /// Records read.
    pub read: u64,
    /// Records accepted into the queue.
    pub accepted: u64,
    /// Records quarantined.
    pub quarantined: u64,
}

/// One quarantined record, as shown in a run's report.
#[derive(Debug, Clone, Serialize)]
pub struct QuarantineSample {
    /// Source file.
    pub source: String,
    /// Record number in the file.
    pub row: u64,
    /// Line where the record starts.
    pub line: u64,
    /// Every violation.
    pub violations: Vec<Violation>,
}

/// The outcome of a check or re-check run.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// `check` or `recheck`.
    pub kind: String,
    /// The run's id in the store (`None` for a dry run).
    pub run_id: Option<i64>,
    /// The store, when one was written.
    pub database: Option<String>,
    /// Schema name.
    pub schema: String,
    /// Per file counts.
    pub files: Vec<FileCount>,
    /// Records read.
    pub read: u64,
    /// Records accepted.
    pub accepted: u64,
    /// Records quarantined.
    pub quarantined: u64,
    /// Quarantined records by the rule of their first violation.
    pub by_rule: BTreeMap<String, u64>,
    /// The first quarantined records.
    pub samples: Vec<QuarantineSample>,
    /// Wall time of the run.
    pub seconds: f64,
}

impl CheckReport {
    fn new(kind: &str, schema: &Schema, store: Option<&Store>) -> Self {
        Self {
            kind: kind.to_owned(),
            run_id: None,
            database: store.map(|store| store.path().display().to_string()),
            schema: schema.name.clone(),
            files: Vec::new(),
            read: 0,
            accepted: 0,
            quarantined: 0,
            by_rule: BTreeMap::new(),
            samples: Vec::new(),
            seconds: 0.0,
        }
    }

    /// Records per second.
    pub fn records_per_second(&self) -> f64 {
        if self.seconds > 0.0 {
            self.read as f64 / self.seconds
        } else {
            0.0
        }
    }

    fn note_quarantine(
        &mut self,
        source: &str,
        record: &Record,
        violations: &[Violation],
        limit: usize,
    ) {
        *self.by_rule.entry(violations[0].rule.clone()).or_default() += 1;
        if self.samples.len() < limit {
            self.samples.push(QuarantineSample {
                source: source.to_owned(),
                row: record.row,
                line: record.line,
                violations: violations.to_vec(),
            });
        }
    }

    fn assert_balanced(&self) -> DataResult<()> {
        let files_balance = self
            .files
            .iter()
            .all(|file| file.read == file.accepted + file.quarantined);
        if self.read != self.accepted + self.quarantined || !files_balance {
            return Err(DataError::Accounting {
                read: self.read,
                accepted: self.accepted,
                quarantined: self.quarantined,
            });
        }
        Ok(())
    }
}

/// Writes an accepted record as a JSON object into `out`, reusing it.
fn record_json(out: &mut String, keys: &[String], values: &[ValueRef<'_>]) {
    out.clear();
    out.push('{');
    for (index, (key, value)) in keys.iter().zip(values).enumerate() {
        if index > 0 {
            out.push(',');
        }
        out.push_str(key);
        value.write_json(out);
    }
    out.push('}');
}

fn json_keys(schema: &Schema) -> Vec<String> {
    schema
        .fields
        .iter()
        .map(|field| {
            let mut key = String::new();
            write_json_string(&mut key, &field.name);
            key.push(':');
            key
        })
        .collect()
}

fn progress_bar(enabled: bool, total: u64) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} checking [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

fn seed_unique(checker: &mut Checker<'_>, store: &Store) -> DataResult<()> {
    let schema = checker.schema();
    for (index, field) in schema.fields.iter().enumerate() {
        if field.unique {
            let mut values = Vec::new();
            store.queued_values(&schema.name, &field.name, |value| values.push(value))?;
            for value in values {
                checker.seed_unique(index, &value);
            }
        }
    }
    Ok(())
}

/// Checks `files` against `schema`. With a store, accepted records go to
/// `data_queue` and the rest to `data_quarantine` in one run whose books are
/// verified against the tables; without one (a dry run) only the report is
/// produced. Every file is opened and its header bound before any record is
/// written, so a bad file stops the run before it starts.
pub fn check_files(
    schema: &Schema,
    files: &[PathBuf],
    mut store: Option<&mut Store>,
    options: &CheckOptions,
) -> DataResult<CheckReport> {
    let started = Instant::now();
    let mut checker = Checker::new(schema);
    let mut opened: Vec<(PathBuf, Format, Box<dyn RecordSource>, Binding)> =
        Vec::with_capacity(files.len());
    let mut total_bytes = 0;
    for path in files {
        let format = schema.format_of(path)?;
        let source = source::open(path, format, &schema.source, schema.fields.len())?;
        let binding = checker.bind(source.columns(), path, format != Format::Csv)?;
        total_bytes += std::fs::metadata(path)
            .map(|metadata| metadata.len())
            .unwrap_or(0);
        opened.push((path.clone(), format, source, binding));
    }
    let mut report = CheckReport::new("check", schema, store.as_deref());
    let run_id = match store.as_deref_mut() {
        Some(store) => {
            seed_unique(&mut checker, store)?;
            Some(store.begin_run("check", schema)?)
        }
        None => None,
    };
    report.run_id = run_id;
    let result = check_sources(
        schema,
        &mut checker,
        opened,
        store.as_deref_mut(),
        run_id,
        options,
        total_bytes,
        &mut report,
    );
    if let Err(error) = result {
        if let (Some(store), Some(run_id)) = (store, run_id) {
            store.abandon_run(run_id);
        }
        return Err(error);
    }
    report.assert_balanced()?;
    if let (Some(store), Some(run_id)) = (store, run_id) {
        if let Err(error) = store.finish_run(
            run_id,
            report.read,
            report.accepted,
            report.quarantined,
            false,
        ) {
            store.abandon_run(run_id);
            return Err(error);
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Records per batch handed from the reader thread to the checker.
const BATCH_RECORDS: usize = 2048;

/// A batch of parsed records: the first `count` are filled.
struct Batch {
    records: Vec<Record>,
    count: usize,
    bytes_read: u64,
}

/// The reader stage: fills recycled batches until the source ends or the
/// checker hangs up (after an error).
fn read_batches(
    source: &mut Box<dyn RecordSource>,
    full: &mpsc::SyncSender<DataResult<Batch>>,
    empty: &mpsc::Receiver<Vec<Record>>,
) {
    let mut spare_batches = 3;
    loop {
        let mut records = if spare_batches > 0 {
            spare_batches -= 1;
            Vec::with_capacity(BATCH_RECORDS)
        } else {
            match empty.recv() {
                Ok(records) => records,
                Err(_) => return,
            }
        };
        let mut count = 0;
        while count < BATCH_RECORDS {
            if records.len() == count {
                records.push(Record::default());
            }
            match source.next_record(&mut records[count]) {
                Ok(true) => count += 1,
                Ok(false) => break,
                Err(error) => {
                    let _ = full.send(Err(error));
                    return;
                }
            }
        }
        let finished = count < BATCH_RECORDS;
        let batch = Batch {
            records,
            count,
            bytes_read: source.bytes_read(),
        };
        if full.send(Ok(batch)).is_err() || finished {
            return;
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn check_sources(
    schema: &Schema,
    checker: &mut Checker<'_>,
    opened: Vec<(PathBuf, Format, Box<dyn RecordSource>, Binding)>,
    mut store: Option<&mut Store>,
    run_id: Option<i64>,
    options: &CheckOptions,
    total_bytes: u64,
    report: &mut CheckReport,
) -> DataResult<()> {
    let bar = progress_bar(options.progress, total_bytes);
    let keys = json_keys(schema);
    let mut json = String::new();
    let mut done_bytes = 0;
    for (path, format, mut source, binding) in opened {
        let name = path.display().to_string();
        let source_id = match (store.as_deref_mut(), run_id) {
            (Some(store), Some(run_id)) => {
                let columns: Vec<String> = if source.columns().is_empty() {
                    schema
                        .fields
                        .iter()
                        .map(|field| field.name.clone())
                        .collect()
                } else {
                    source.columns().to_vec()
                };
                store.add_source(
                    run_id,
                    &path,
                    format,
                    &columns,
                    schema.source.delimiter,
                    schema.source.quote,
                )?
            }
            _ => 0,
        };
        let mut count = FileCount {
            path: name.clone(),
            format,
            read: 0,
            accepted: 0,
            quarantined: 0,
        };
        bar.set_message(name.clone());
        // Two-stage pipeline: a reader thread parses batches of records
        // while this thread checks and routes the previous batch. Batches
        // are recycled, so memory stays at a few batches whatever the file.
        std::thread::scope(|scope| -> DataResult<()> {
            let (full_sender, full_receiver) = mpsc::sync_channel::<DataResult<Batch>>(2);
            let (empty_sender, empty_receiver) = mpsc::sync_channel::<Vec<Record>>(4);
            let reader_source = &mut source;
            scope.spawn(move || read_batches(reader_source, &full_sender, &empty_receiver));
            for batch in full_receiver {
                let batch = batch?;
                for record in &batch.records[..batch.count] {
                    count.read += 1;
                    match checker.check(record, &binding) {
                        Ok(values) => {
                            count.accepted += 1;
                            if let (Some(store), Some(run_id)) = (store.as_deref_mut(), run_id) {
                                record_json(&mut json, &keys, &values);
                                store.enqueue(run_id, source_id, record.row, record.line, &json)?;
                            }
                            checker.give_back(values);
                        }
                        Err(violations) => {
                            count.quarantined += 1;
                            if let (Some(store), Some(run_id)) = (store.as_deref_mut(), run_id) {
                                store.quarantine(run_id, source_id, record, &violations)?;
                            }
                            report.note_quarantine(
                                &name,
                                record,
                                &violations,
                                options.sample_limit,
                            );
                        }
                    }
                }
                bar.set_position(done_bytes + batch.bytes_read);
                // The reader may have finished; a closed channel is fine.
                let _ = empty_sender.send(batch.records);
            }
            Ok(())
        })?;
        done_bytes += std::fs::metadata(&path)
            .map(|metadata| metadata.len())
            .unwrap_or(0);
        bar.set_position(done_bytes);
        report.read += count.read;
        report.accepted += count.accepted;
        report.quarantined += count.quarantined;
        report.files.push(count);
    }
    bar.finish_and_clear();
    Ok(())
}

/// Re-parses a quarantined record's raw bytes in its source format.
fn reparse(
    raw_record: &mut Record,
    source: &crate::store::StoredSource,
    schema: &Schema,
) -> DataResult<()> {
    let row = raw_record.row;
    let line = raw_record.line;
    if raw_record.raw_cut {
        raw_record.body = Body::Malformed(Malformed {
            kind: MalformedKind::TooLong,
            column: None,
            message: "the stored record was cut at max_record_bytes; it cannot be re-checked"
                .to_owned(),
        });
        return Ok(());
    }
    let raw = std::mem::take(&mut raw_record.raw);
    let path = Path::new(&source.path);
    let parsed = match source.format {
        Format::Csv => {
            let options = SourceOptions {
                delimiter: source.delimiter,
                quote: source.quote,
                header: false,
                ..schema.source.clone()
            };
            let mut reader =
                CsvSource::with_columns(&raw[..], path, &options, source.columns.clone());
            let mut parsed = Record::default();
            let found = reader.next_record(&mut parsed)?;
            let mut extra = Record::default();
            if found && reader.next_record(&mut extra)? {
                parsed.body = Body::Malformed(Malformed {
                    kind: MalformedKind::BadQuoting,
                    column: None,
                    message: "the stored bytes hold more than one record".to_owned(),
                });
            }
            found.then_some(parsed)
        }
        Format::Jsonl => {
            let mut reader = JsonlSource::new(
                &raw[..],
                path,
                schema.source.max_record_bytes.max(raw.len() + 1),
            );
            let mut parsed = Record::default();
            reader.next_record(&mut parsed)?.then_some(parsed)
        }
        Format::Parquet => Some(Record {
            body: match serde_json::from_slice::<serde_json::Value>(&raw) {
                Ok(serde_json::Value::Object(map)) => Body::Json(map),
                _ => Body::Malformed(Malformed {
                    kind: MalformedKind::Unreadable,
                    column: None,
                    message: String::from_utf8_lossy(&raw).into_owned(),
                }),
            },
            ..Record::default()
        }),
    };
    *raw_record = parsed.unwrap_or_else(|| Record {
        body: Body::Malformed(Malformed {
            kind: MalformedKind::Truncated,
            column: None,
            message: "the stored bytes hold no record".to_owned(),
        }),
        ..Record::default()
    });
    raw_record.raw = raw;
    raw_record.row = row;
    raw_record.line = line;
    Ok(())
}

/// Re-checks every pending quarantined record against `schema` (typically
/// after fixing it): records that now pass move to the queue (their
/// quarantine rows are kept, marked released), the rest get their new
/// reasons. Uniqueness is checked against what the queue already holds.
pub fn recheck(
    schema: &Schema,
    store: &mut Store,
    options: &CheckOptions,
) -> DataResult<CheckReport> {
    let started = Instant::now();
    let mut checker = Checker::new(schema);
    seed_unique(&mut checker, store)?;
    let mut report = CheckReport::new("recheck", schema, Some(store));
    let run_id = store.begin_run("recheck", schema)?;
    report.run_id = Some(run_id);
    match recheck_pages(schema, &mut checker, store, run_id, options, &mut report) {
        Ok(()) => {}
        Err(error) => {
            store.abandon_run(run_id);
            return Err(error);
        }
    }
    report.assert_balanced()?;
    if let Err(error) = store.finish_run(
        run_id,
        report.read,
        report.accepted,
        report.quarantined,
        true,
    ) {
        store.abandon_run(run_id);
        return Err(error);
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

fn recheck_pages(
    schema: &Schema,
    checker: &mut Checker<'_>,
    store: &mut Store,
    run_id: i64,
    options: &CheckOptions,
    report: &mut CheckReport,
) -> DataResult<()> {
    let keys = json_keys(schema);
    let mut json = String::new();
    let mut after = 0;
    let mut per_file: BTreeMap<String, FileCount> = BTreeMap::new();
    loop {
        let page = store.pending_quarantine(after, 1000)?;
        let Some((last, _, _)) = page.last() else {
            break;
        };
        after = *last;
        for (quarantine_id, source, mut record) in page {
            reparse(&mut record, &source, schema)?;
            let binding = match source.format {
                Format::Csv => Binding::Columns(
                    schema
                        .fields
                        .iter()
                        .map(|field| {
                            source
                                .columns
                                .iter()
                                .position(|column| *column == field.name)
                        })
                        .collect(),
                ),
                _ => Binding::Keys,
            };
            let count = per_file
                .entry(source.path.clone())
                .or_insert_with(|| FileCount {
                    path: source.path.clone(),
                    format: source.format,
                    read: 0,
                    accepted: 0,
                    quarantined: 0,
                });
            count.read += 1;
            report.read += 1;
            match checker.check(&record, &binding) {
                Ok(values) => {
                    count.accepted += 1;
                    report.accepted += 1;
                    record_json(&mut json, &keys, &values);
                    store.enqueue(run_id, source.id, record.row, record.line, &json)?;
                    store.release(quarantine_id, run_id)?;
                }
                Err(violations) => {
                    count.quarantined += 1;
                    report.quarantined += 1;
                    store.requarantine(quarantine_id, run_id, &violations)?;
                    report.note_quarantine(
                        &source.path,
                        &record,
                        &violations,
                        options.sample_limit,
                    );
                }
            }
        }
    }
    report.files = per_file.into_values().collect();
    Ok(())
}
