//! Streaming record sources: CSV, JSON Lines and Parquet.
//!
//! Every source yields one [`Record`] at a time into a buffer the caller
//! reuses, so memory stays bounded by the longest record (capped by
//! `max_record_bytes`) whatever the file size. Malformed input is never an
//! error here: a record that cannot be parsed comes back as
//! [`Body::Malformed`] with its raw bytes and reason, to be quarantined.

mod csv;
mod jsonl;
mod parquet;

use std::fs::File;
use std::io::Read;
use std::ops::Range;
use std::path::Path;

use serde::Serialize;

pub(crate) use self::csv::record_from_line;
pub use self::csv::CsvSource;
pub use self::jsonl::JsonlSource;
pub use self::parquet::ParquetSource;

use crate::error::{DataError, DataResult};
use crate::schema::{Format, Schema, SourceOptions};

/// Why a record could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MalformedKind {
    /// A quote inside an unquoted field, or text after a closing quote.
    BadQuoting,
    /// A CSV record with more or fewer fields than the header.
    ColumnCount,
    /// Bytes that are not UTF-8.
    InvalidUtf8,
    /// A JSON Lines line that is not valid JSON.
    InvalidJson,
    /// A JSON Lines line that is valid JSON but not an object.
    NotAnObject,
    /// The file ends inside a record (open quote, cut JSON).
    Truncated,
    /// A record longer than `max_record_bytes`.
    TooLong,
    /// A Parquet row group or page that cannot be decoded.
    Unreadable,
}

impl MalformedKind {
    /// The rule name recorded in the quarantine table.
    pub fn rule(self) -> &'static str {
        match self {
            MalformedKind::BadQuoting => "bad_quoting",
            MalformedKind::ColumnCount => "column_count",
            MalformedKind::InvalidUtf8 => "invalid_utf8",
            MalformedKind::InvalidJson => "invalid_json",
            MalformedKind::NotAnObject => "not_an_object",
            MalformedKind::Truncated => "truncated",
            MalformedKind::TooLong => "too_long",
            MalformedKind::Unreadable => "unreadable",
        }
    }
}

/// A record that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    /// The kind of fault.
    pub kind: MalformedKind,
    /// 1-based column (CSV field number, or byte column for JSON) when known.
    pub column: Option<u64>,
    /// A sentence for people.
    pub message: String,
}

/// The parsed content of a record.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// CSV: the unescaped fields, concatenated, and the end offset of each.
    Text {
        /// All fields, unescaped, back to back.
        text: String,
        /// `text[ends[i-1]..ends[i]]` is field `i`.
        ends: Vec<usize>,
    },
    /// JSON Lines and Parquet: the record as a JSON object.
    Json(serde_json::Map<String, serde_json::Value>),
    /// The record could not be parsed.
    Malformed(Malformed),
}

/// One record read from a source. Reused between calls to avoid
/// allocating per record.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// 1-based number of the record in its file (header excluded).
    pub row: u64,
    /// 1-based line where the record starts (the row for Parquet).
    pub line: u64,
    /// The record's bytes as they were in the file (a JSON rendering for
    /// Parquet), kept so quarantined records lose nothing.
    pub raw: Vec<u8>,
    /// True when `raw` was cut at `max_record_bytes`.
    pub raw_cut: bool,
    /// The parsed content.
    pub body: Body,
}

impl Default for Record {
    fn default() -> Self {
        Self {
            row: 0,
            line: 0,
            raw: Vec::new(),
            raw_cut: false,
            body: Body::Malformed(Malformed {
                kind: MalformedKind::Unreadable,
                column: None,
                message: String::new(),
            }),
        }
    }
}

impl Record {
    /// The CSV field `index` when the record is text.
    pub fn text_field(&self, index: usize) -> Option<&str> {
        match &self.body {
            Body::Text { text, ends } => {
                let end = *ends.get(index)?;
                let start = if index == 0 { 0 } else { ends[index - 1] };
                text.get(start..end)
            }
            _ => None,
        }
    }
}

/// A stream of records.
pub trait RecordSource: Send {
    /// Reads the next record into `record`; `Ok(false)` at the end. Errors
    /// are I/O failures only: malformed input comes back as a record.
    fn next_record(&mut self, record: &mut Record) -> DataResult<bool>;

    /// Column names: the CSV header, or empty when records are keyed by
    /// name (JSON) or the CSV file has no header.
    fn columns(&self) -> &[String];

    /// Bytes consumed so far, for progress.
    fn bytes_read(&self) -> u64;

    /// How the lines of [`RecordSource::next_block`] split into fields;
    /// `None` for sources that yield no blocks.
    fn block_layout(&self) -> Option<BlockLayout> {
        None
    }

    /// Moves a run of whole records that need no quote handling (CSV lines
    /// without a quote, each within `max_record_bytes`) into `block`,
    /// exactly the bytes `next_record` would have consumed for them, and
    /// returns the line the block starts at and where in `block` it lies
    /// (the source may swap its own buffer with `block` rather than copy). `Ok(None)` when the next
    /// record must be read with `next_record`. Blank lines in a block hold
    /// no record, as in `next_record`; records in a block are not counted
    /// in the source's row numbers, so a caller mixing blocks and records
    /// numbers rows itself.
    fn next_block(&mut self, block: &mut Vec<u8>) -> DataResult<Option<(u64, Range<usize>)>> {
        let _ = block;
        Ok(None)
    }
}

/// How a block's lines split into fields (see [`RecordSource::next_block`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockLayout {
    /// Field delimiter (ASCII, not a line break).
    pub delimiter: u8,
    /// Quote byte (never present in a block).
    pub quote: u8,
    /// Fields every record must have (0: any number).
    pub expected_columns: usize,
}

/// Opens `path` as a source of the given format.
pub fn open(
    path: &Path,
    format: Format,
    options: &SourceOptions,
    field_count: usize,
) -> DataResult<Box<dyn RecordSource>> {
    let file = File::open(path).map_err(|error| DataError::io(path, error))?;
    Ok(match format {
        Format::Csv => Box::new(CsvSource::new(file, path, options, field_count)?),
        Format::Jsonl => Box::new(JsonlSource::new(file, path, options.max_record_bytes)),
        Format::Parquet => Box::new(ParquetSource::new(file, path)?),
    })
}

/// Opens `path` with the options and format of `schema`.
pub fn open_for_schema(path: &Path, schema: &Schema) -> DataResult<Box<dyn RecordSource>> {
    open(
        path,
        schema.format_of(path)?,
        &schema.source,
        schema.fields.len(),
    )
}

/// Reads records from any reader (used for re-checking quarantined raw
/// bytes and by the fuzz targets).
pub fn from_reader<'a>(
    reader: impl Read + Send + 'a,
    name: &Path,
    format: Format,
    options: &SourceOptions,
    field_count: usize,
) -> DataResult<Box<dyn RecordSource + 'a>> {
    Ok(match format {
        Format::Csv => Box::new(CsvSource::new(reader, name, options, field_count)?),
        Format::Jsonl => Box::new(JsonlSource::new(reader, name, options.max_record_bytes)),
        Format::Parquet => {
            return Err(DataError::Source {
                path: name.to_path_buf(),
                line: 0,
                message: "Parquet needs a seekable file".to_owned(),
            })
        }
    })
}
