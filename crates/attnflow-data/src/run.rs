//! Check runs: stream every record of every file through `I(d)` (§6.1) and
//! route it to the processing queue or to quarantine, then prove the books
//! balance (read = accepted + quarantined). Also re-checks quarantined
//! records after a schema fix.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Mutex};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::check::{check_record, Binding, Checker, Violation};
use crate::error::{DataError, DataResult};
use crate::fast::{line_at, BlockChecker, Checked, Scratch, PASSED};
use crate::schema::{Format, Schema, SourceOptions};
use crate::source::{
    self, record_from_line, BlockLayout, Body, CsvSource, JsonlSource, Malformed, MalformedKind,
    Record, RecordSource,
};
use crate::store::{QueueBatch, Store};
use crate::value::{append_record_json, json_keys, ValueRef};

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
#[derive(Debug, Clone, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    append_record_json(out, keys, values);
}

fn field_names(schema: &Schema) -> impl Iterator<Item = &str> {
    schema.fields.iter().map(|field| field.name.as_str())
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
            // Each value goes into the set as it is read: a queue of 10 M
            // rows would otherwise be held twice, once as JSON values.
            store.queued_values(&schema.name, &field.name, |value| {
                checker.seed_unique(index, &value)
            })?;
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
    let report = check_files_in(schema, files, store.as_deref_mut(), options);
    release_memory(store.as_deref());
    report
}

/// After a run: the store's page cache and what the run's threads freed go
/// back to the system, so a process that runs many checks (the web app, a
/// worker, a bench's rounds) stays at the size of one.
fn release_memory(store: Option<&Store>) {
    if let Some(store) = store {
        store.release_cache();
    }
    attnflow_base::release_free_memory();
}

fn check_files_in(
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

/// Records per batch when the reader parses records one by one.
const BATCH_RECORDS: usize = 2048;

/// What an item of work holds.
#[derive(Clone, Copy)]
enum Kind {
    /// `bytes[start..end]` holds whole quote-free lines starting at this
    /// line.
    Block {
        first_line: u64,
        start: usize,
        end: usize,
    },
    /// The first `count` of `records`.
    Records { count: usize },
}

/// One unit of work: read in file order by the reader, checked by any
/// worker, merged in file order. Recycled, with its buffers.
struct Item {
    sequence: u64,
    kind: Kind,
    bytes: Vec<u8>,
    records: Vec<Record>,
    bytes_read: u64,
    error: Option<DataError>,
    checked: Checked,
}

impl Item {
    fn new() -> Self {
        Self {
            sequence: 0,
            kind: Kind::Records { count: 0 },
            bytes: Vec::new(),
            records: Vec::new(),
            bytes_read: 0,
            error: None,
            checked: Checked::default(),
        }
    }
}

/// Worker threads for checking: the machine's cores (at most 8).
fn worker_count() -> usize {
    std::thread::available_parallelism()
        .map(|count| count.get())
        .unwrap_or(1)
        .clamp(1, 8)
}

/// The reader stage: cuts the source into items (blocks of whole
/// quote-free lines where it can, batches of records parsed one by one
/// elsewhere) in file order, until the source ends, fails, or the merger
/// hangs up (after an error). At most `in_flight` items exist at a time,
/// so memory stays bounded whatever the file.
fn read_items(
    source: &mut Box<dyn RecordSource>,
    in_flight: usize,
    work: &mpsc::Sender<Item>,
    recycled: &mpsc::Receiver<Item>,
) {
    let mut fresh = in_flight;
    let mut sequence = 0;
    // A block found while filling a batch of records; it goes next.
    let mut pending: Option<(Vec<u8>, u64, std::ops::Range<usize>)> = None;
    let mut spare_block = Vec::new();
    loop {
        let mut item = if fresh > 0 {
            fresh -= 1;
            Item::new()
        } else {
            match recycled.recv() {
                Ok(item) => item,
                Err(_) => return,
            }
        };
        item.sequence = sequence;
        sequence += 1;
        let mut finished = false;
        if let Some((bytes, first_line, range)) = pending.take() {
            spare_block = std::mem::replace(&mut item.bytes, bytes);
            item.kind = Kind::Block {
                first_line,
                start: range.start,
                end: range.end,
            };
        } else {
            match source.next_block(&mut item.bytes) {
                Ok(Some((first_line, range))) => {
                    item.kind = Kind::Block {
                        first_line,
                        start: range.start,
                        end: range.end,
                    }
                }
                Ok(None) => {
                    let mut count = 0;
                    while count < BATCH_RECORDS {
                        if item.records.len() == count {
                            item.records.push(Record::default());
                        }
                        match source.next_record(&mut item.records[count]) {
                            Ok(true) => count += 1,
                            Ok(false) => {
                                finished = true;
                                break;
                            }
                            Err(error) => {
                                item.error = Some(error);
                                break;
                            }
                        }
                        match source.next_block(&mut spare_block) {
                            Ok(Some((first_line, range))) => {
                                pending =
                                    Some((std::mem::take(&mut spare_block), first_line, range));
                                break;
                            }
                            Ok(None) => {}
                            Err(error) => {
                                item.error = Some(error);
                                break;
                            }
                        }
                    }
                    item.kind = Kind::Records { count };
                }
                Err(error) => item.error = Some(error),
            }
        }
        item.bytes_read = source.bytes_read();
        let stop = finished || item.error.is_some();
        if work.send(item).is_err() || stop {
            return;
        }
    }
}

/// The worker stage: checks items as they come, in any order.
fn check_items(
    checker: &BlockChecker<'_>,
    layout: Option<&BlockLayout>,
    binding: &Binding,
    work: &Mutex<mpsc::Receiver<Item>>,
    done: &mpsc::Sender<Item>,
) {
    let mut scratch = Scratch::default();
    loop {
        let received = match work.lock() {
            Ok(receiver) => receiver.recv(),
            Err(_) => return,
        };
        let Ok(mut item) = received else {
            return;
        };
        // A panic here would leave the merger waiting for this item forever;
        // it becomes the item's error instead, which stops the run.
        let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            check_item(checker, layout, binding, &mut item, &mut scratch)
        }));
        if checked.is_err() {
            item.error = Some(DataError::Internal {
                message: format!(
                    "checking the records before byte {} panicked",
                    item.bytes_read
                ),
            });
            scratch = Scratch::default();
        }
        if done.send(item).is_err() {
            return;
        }
    }
}

/// Checks one item in place (nothing to do for an item carrying an error).
fn check_item(
    checker: &BlockChecker<'_>,
    layout: Option<&BlockLayout>,
    binding: &Binding,
    item: &mut Item,
    scratch: &mut Scratch,
) {
    if item.error.is_none() {
        match (item.kind, layout) {
            (
                Kind::Block {
                    first_line,
                    start,
                    end,
                },
                Some(layout),
            ) => checker.check_block(
                &item.bytes[start..end],
                first_line,
                layout,
                &mut item.checked,
                scratch,
            ),
            (Kind::Records { count }, _) => {
                checker.check_records(&item.records[..count], binding, &mut item.checked, scratch)
            }
            (Kind::Block { .. }, None) => unreachable!("blocks come with a layout"),
        }
    }
}

/// What the merger hands the store's writer thread, in file order.
enum Write {
    /// Accepted records.
    Rows(QueueBatch),
    /// Quarantined records and their violations (copied), in file order.
    Quarantine(Vec<(Record, Vec<Violation>)>),
}

/// Quarantined records handed to the writer at once: a file of rejects
/// (a second run over the same file, every record a duplicate) would
/// otherwise wake the writer once per record.
const QUARANTINE_BATCH: usize = 1024;

/// Accepted records per batch handed to the writer.
const WRITE_BATCH: usize = 8192;

/// Batches on their way to the writer at most, so memory stays bounded
/// when the store is slower than the check.
const WRITES_IN_FLIGHT: usize = 4;

/// The merger's end of the writer thread.
struct RowWriter {
    run_id: i64,
    batch: QueueBatch,
    rejects: Vec<(Record, Vec<Violation>)>,
    writes: mpsc::SyncSender<Write>,
    recycled: mpsc::Receiver<QueueBatch>,
}

impl RowWriter {
    fn send(&self, write: Write) -> DataResult<()> {
        // The writer hung up because it failed; its own error is the one
        // reported (see `check_sources`).
        self.writes.send(write).map_err(|_| DataError::Internal {
            message: "the store's writer stopped".to_owned(),
        })
    }

    fn send_rejects(&mut self) -> DataResult<()> {
        if self.rejects.is_empty() {
            return Ok(());
        }
        let rejects = std::mem::take(&mut self.rejects);
        self.send(Write::Quarantine(rejects))
    }

    /// Sends what is waiting: rejects, then accepted rows.
    fn send_all(&mut self) -> DataResult<()> {
        self.send_rejects()?;
        self.send_rows()
    }

    fn send_rows(&mut self) -> DataResult<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let spare = self
            .recycled
            .try_recv()
            .unwrap_or_else(|_| self.batch.empty_like());
        let full = std::mem::replace(&mut self.batch, spare);
        self.send(Write::Rows(full))
    }
}

/// The writer thread: the only user of the store while a file is checked,
/// so SQLite's inserts (or PostgreSQL's COPY) run beside the check.
fn write_records(
    store: &mut Store,
    run_id: i64,
    source_id: i64,
    writes: mpsc::Receiver<Write>,
    recycle: mpsc::Sender<QueueBatch>,
) -> DataResult<()> {
    for write in writes {
        match write {
            Write::Rows(mut batch) => {
                store.enqueue_batch(&batch)?;
                batch.clear();
                let _ = recycle.send(batch);
            }
            Write::Quarantine(rejects) => {
                for (record, violations) in &rejects {
                    store.quarantine(run_id, source_id, record, violations)?;
                }
            }
        }
    }
    Ok(())
}

/// Where the merger writes and counts one file's records.
struct Routing<'a, 'b> {
    schema: &'a Schema,
    checker: &'a mut Checker<'b>,
    binding: &'a Binding,
    layout: Option<BlockLayout>,
    unique_fields: &'a [usize],
    writer: Option<RowWriter>,
    source_id: i64,
    name: &'a str,
    sample_limit: usize,
    count: &'a mut FileCount,
    report: &'a mut CheckReport,
    row: u64,
}

impl Routing<'_, '_> {
    fn quarantine(&mut self, record: &Record, violations: &[Violation]) -> DataResult<()> {
        self.count.quarantined += 1;
        if let Some(writer) = &mut self.writer {
            writer.rejects.push((record.clone(), violations.to_vec()));
            if writer.rejects.len() >= QUARANTINE_BATCH {
                writer.send_rejects()?;
            }
        }
        self.report
            .note_quarantine(self.name, record, violations, self.sample_limit);
        Ok(())
    }

    fn accept(&mut self, line: u64, json: &str) -> DataResult<()> {
        self.count.accepted += 1;
        if let Some(writer) = &mut self.writer {
            writer
                .batch
                .push(writer.run_id, self.source_id, self.row, line, json);
            if writer.batch.len() >= WRITE_BATCH {
                writer.send_rows()?;
            }
        }
        Ok(())
    }

    /// Routes a checked item's records in file order: uniqueness is decided
    /// here, where every earlier record has been seen.
    fn merge(&mut self, item: &mut Item) -> DataResult<()> {
        if let Some(error) = item.error.take() {
            return Err(error);
        }
        let unique_count = self.unique_fields.len();
        let mut passed = 0;
        let checked = &mut item.checked;
        for entry in &checked.entries {
            self.row += 1;
            self.count.read += 1;
            if entry.failed != PASSED {
                let (built, violations) = &mut checked.failed[entry.failed as usize];
                let record = match built {
                    Some(record) => record,
                    None => &mut item.records[entry.start as usize],
                };
                record.row = self.row;
                self.quarantine(record, violations)?;
                continue;
            }
            let keys = &checked.keys[passed * unique_count..(passed + 1) * unique_count];
            let json = if checked.json_ends.is_empty() {
                ""
            } else {
                let from = if passed == 0 {
                    0
                } else {
                    checked.json_ends[passed - 1]
                };
                &checked.json[from..checked.json_ends[passed]]
            };
            passed += 1;
            if self.checker.claim_keys(self.unique_fields, keys) {
                self.accept(entry.line, json)?;
                continue;
            }
            // A duplicate: rebuild the record and its values for the
            // quarantine entry (rare, so the general path is fine).
            let mut built;
            let record = match (item.kind, &self.layout) {
                (Kind::Block { start, end, .. }, Some(layout)) => {
                    let block = &item.bytes[start..end];
                    built = record_from_line(line_at(block, entry.start), entry.line, layout);
                    &mut built
                }
                _ => &mut item.records[entry.start as usize],
            };
            record.row = self.row;
            let verdict = match check_record(self.schema, record, self.binding, Vec::new()) {
                Ok(values) => self.checker.claim_unique(&values),
                Err(violations) => Err(violations),
            };
            match verdict {
                Ok(()) => self.accept(entry.line, json)?,
                Err(violations) => self.quarantine(record, &violations)?,
            }
        }
        Ok(())
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
    let json_keys = store.is_some().then(|| json_keys(field_names(schema)));
    let unique_fields = checker.unique_fields();
    let workers = worker_count();
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
        let layout = source.block_layout();
        let block_checker =
            BlockChecker::new(schema, &binding, unique_fields.clone(), json_keys.clone());
        // Three stages: a reader thread cuts the file into items in file
        // order, workers check them in parallel (everything but
        // uniqueness), and this thread takes them back in file order to
        // decide uniqueness and route every record. Items are recycled, so
        // memory stays at a few items whatever the file.
        let (write_sender, write_receiver) = mpsc::sync_channel::<Write>(WRITES_IN_FLIGHT);
        let (batch_sender, batch_receiver) = mpsc::channel::<QueueBatch>();
        let store_run = match (store.as_deref_mut(), run_id) {
            (Some(store), Some(run_id)) => Some((store, run_id)),
            _ => None,
        };
        let first_batch = store_run
            .as_ref()
            .map(|(store, _)| store.queue_batch())
            .unwrap_or_default();
        let mut routing = Routing {
            schema,
            checker: &mut *checker,
            binding: &binding,
            layout,
            unique_fields: &unique_fields,
            writer: run_id
                .filter(|_| store_run.is_some())
                .map(|run_id| RowWriter {
                    run_id,
                    batch: first_batch,
                    writes: write_sender,
                    recycled: batch_receiver,
                    rejects: Vec::new(),
                }),
            source_id,
            name: &name,
            sample_limit: options.sample_limit,
            count: &mut count,
            report: &mut *report,
            row: 0,
        };
        let (work_sender, work_receiver) = mpsc::channel::<Item>();
        let (done_sender, done_receiver) = mpsc::channel::<Item>();
        let (recycle_sender, recycle_receiver) = mpsc::channel::<Item>();
        let work_receiver = Mutex::new(work_receiver);
        std::thread::scope(|scope| -> DataResult<()> {
            // Owned here, so a failed merge hangs up on the reader (which
            // then stops, and with it the workers) before the scope joins.
            let recycle_sender = recycle_sender;
            let writer = store_run.map(|(store, run_id)| {
                scope.spawn(move || {
                    write_records(store, run_id, source_id, write_receiver, batch_sender)
                })
            });
            let reader_source = &mut source;
            scope.spawn(move || {
                read_items(
                    reader_source,
                    2 * workers + 2,
                    &work_sender,
                    &recycle_receiver,
                )
            });
            for _ in 0..workers {
                let done_sender = done_sender.clone();
                let (block_checker, work_receiver, binding) =
                    (&block_checker, &work_receiver, &binding);
                scope.spawn(move || {
                    check_items(
                        block_checker,
                        layout.as_ref(),
                        binding,
                        work_receiver,
                        &done_sender,
                    )
                });
            }
            drop(done_sender);
            let merged = (|| -> DataResult<()> {
                let mut waiting = BTreeMap::new();
                let mut next = 0;
                for item in done_receiver {
                    waiting.insert(item.sequence, item);
                    while let Some(mut item) = waiting.remove(&next) {
                        next += 1;
                        routing.merge(&mut item)?;
                        bar.set_position(done_bytes + item.bytes_read);
                        // The reader may have finished; a closed channel is fine.
                        let _ = recycle_sender.send(item);
                    }
                }
                routing.writer.as_mut().map_or(Ok(()), RowWriter::send_all)
            })();
            drop(recycle_sender);
            // Hanging up tells the writer the file is done.
            routing.writer = None;
            let written = match writer.map(|handle| handle.join()) {
                None | Some(Ok(Ok(()))) => Ok(()),
                Some(Ok(Err(error))) => Err(error),
                Some(Err(_)) => Err(DataError::Internal {
                    message: format!("writing the records of {name} to the store panicked"),
                }),
            };
            // The writer's own error explains why the merger could not send.
            written.and(merged)
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

/// Re-parses a quarantined record's raw bytes in its source format, as its
/// source's delimiter, quote and columns say (`options` gives the rest).
pub(crate) fn reparse(
    raw_record: &mut Record,
    source: &crate::store::StoredSource,
    options: &SourceOptions,
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
                ..options.clone()
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
            let mut reader =
                JsonlSource::new(&raw[..], path, options.max_record_bytes.max(raw.len() + 1));
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
    let report = recheck_in(schema, store, options);
    release_memory(Some(store));
    report
}

fn recheck_in(
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
    let keys = json_keys(field_names(schema));
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
            reparse(&mut record, &source, &schema.source)?;
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
