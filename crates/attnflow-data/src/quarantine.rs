//! A quarantined record read back for people: its listing entry, the bytes
//! it had in its file, and those bytes split into named cells (CSV columns
//! or JSON keys) so a viewer can mark the cell each violation is about.

use serde::Serialize;

use crate::run::reparse;
use crate::schema::SourceOptions;
use crate::source::Body;
use crate::store::{QuarantineEntry, Store};
use crate::DataResult;

/// One quarantined record with its raw bytes and cells.
#[derive(Debug, Clone, Serialize)]
pub struct QuarantinedRecord {
    /// The listing entry: source, line, every violation.
    pub entry: QuarantineEntry,
    /// The record's bytes as they were in the file.
    pub raw: Vec<u8>,
    /// Whether `raw` was cut at the schema's `max_record_bytes`.
    pub raw_cut: bool,
    /// The record split as its source reads it; empty when it does not
    /// parse (malformed input), in which case the raw bytes are all there is.
    pub cells: Vec<RecordCell>,
}

/// One named value of a record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordCell {
    /// The column or key.
    pub name: String,
    /// The value as text (JSON values other than strings as JSON).
    pub text: String,
}

/// Reads quarantined record `id` (of a finished run) and splits its bytes
/// as its source's format, delimiter, quote and columns say; `None` when
/// there is no such record.
pub fn quarantined_record(store: &Store, id: i64) -> DataResult<Option<QuarantinedRecord>> {
    let Some((entry, source, mut record)) = store.quarantined(id)? else {
        return Ok(None);
    };
    let raw = record.raw.clone();
    let raw_cut = record.raw_cut;
    reparse(&mut record, &source, &SourceOptions::default())?;
    let cells = match &record.body {
        Body::Text { .. } => source
            .columns
            .iter()
            .enumerate()
            .filter_map(|(index, name)| {
                Some(RecordCell {
                    name: name.clone(),
                    text: record.text_field(index)?.to_owned(),
                })
            })
            .collect(),
        Body::Json(object) => object
            .iter()
            .map(|(name, value)| RecordCell {
                name: name.clone(),
                text: match value {
                    serde_json::Value::String(text) => text.clone(),
                    other => other.to_string(),
                },
            })
            .collect(),
        Body::Malformed(_) => Vec::new(),
    };
    Ok(Some(QuarantinedRecord {
        entry,
        raw,
        raw_cut,
        cells,
    }))
}
