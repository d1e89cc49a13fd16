//! Parquet rows through the `parquet` crate's row reader (no arrow), one row
//! group in memory at a time.

use std::fs::File;
use std::path::{Path, PathBuf};

use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::reader::RowIter;
use parquet::record::Field;

use super::{Body, Malformed, MalformedKind, Record, RecordSource};
use crate::error::{DataError, DataResult};

/// Streaming Parquet source.
pub struct ParquetSource {
    rows: RowIter<'static>,
    row: u64,
    total_rows: u64,
    failed: bool,
    columns: Vec<String>,
    path: PathBuf,
}

impl ParquetSource {
    /// Opens a Parquet file; a file whose footer cannot be read is an error
    /// for the whole file (there is no record to quarantine).
    pub fn new(file: File, path: &Path) -> DataResult<Self> {
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            SerializedFileReader::new(file)
        }))
        .unwrap_or_else(|_| {
            Err(parquet::errors::ParquetError::General(
                "the Parquet footer is damaged".to_owned(),
            ))
        });
        let reader = opened.map_err(|error| DataError::Source {
            path: path.to_path_buf(),
            line: 0,
            message: format!("not a readable Parquet file: {error}"),
        })?;
        let metadata = reader.metadata();
        let total_rows = metadata.file_metadata().num_rows().max(0) as u64;
        let columns = metadata
            .file_metadata()
            .schema_descr()
            .root_schema()
            .get_fields()
            .iter()
            .map(|field| field.name().to_owned())
            .collect();
        Ok(Self {
            rows: RowIter::from_file_into(Box::new(reader)),
            row: 0,
            total_rows,
            failed: false,
            columns,
            path: path.to_path_buf(),
        })
    }

    /// The file path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn to_json(field: &Field) -> serde_json::Value {
    use serde_json::Value;
    match field {
        Field::Null => Value::Null,
        Field::Bool(value) => Value::Bool(*value),
        Field::Byte(value) => Value::from(*value),
        Field::Short(value) => Value::from(*value),
        Field::Int(value) => Value::from(*value),
        Field::Long(value) => Value::from(*value),
        Field::UByte(value) => Value::from(*value),
        Field::UShort(value) => Value::from(*value),
        Field::UInt(value) => Value::from(*value),
        Field::ULong(value) => Value::from(*value),
        Field::Float(value) => serde_json::Number::from_f64(f64::from(*value))
            .map_or_else(|| Value::String(value.to_string()), Value::Number),
        Field::Double(value) => serde_json::Number::from_f64(*value)
            .map_or_else(|| Value::String(value.to_string()), Value::Number),
        Field::Str(text) => Value::String(text.clone()),
        Field::Bytes(bytes) => match std::str::from_utf8(bytes.data()) {
            Ok(text) => Value::String(text.to_owned()),
            Err(_) => Value::Array(bytes.data().iter().map(|&byte| Value::from(byte)).collect()),
        },
        Field::ListInternal(list) => Value::Array(list.elements().iter().map(to_json).collect()),
        Field::Group(row) => Value::Object(
            row.get_column_iter()
                .map(|(name, field)| (name.clone(), to_json(field)))
                .collect(),
        ),
        Field::MapInternal(map) => Value::Array(
            map.entries()
                .iter()
                .map(|(key, value)| Value::Array(vec![to_json(key), to_json(value)]))
                .collect(),
        ),
        other => Value::String(other.to_string()),
    }
}

impl RecordSource for ParquetSource {
    fn next_record(&mut self, record: &mut Record) -> DataResult<bool> {
        if self.failed {
            return Ok(false);
        }
        // The decoder is third-party code fed untrusted bytes: a panic in it
        // becomes an unreadable-rows entry rather than a crash.
        let rows = &mut self.rows;
        let next = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rows.next())) {
            Ok(Some(next)) => next,
            Ok(None) => return Ok(false),
            Err(_) => Err(parquet::errors::ParquetError::General(
                "the Parquet decoder failed on damaged data".to_owned(),
            )),
        };
        self.row += 1;
        record.row = self.row;
        record.line = self.row;
        record.raw_cut = false;
        record.raw.clear();
        match next {
            Ok(row) => {
                let map: serde_json::Map<String, serde_json::Value> = row
                    .get_column_iter()
                    .map(|(name, field)| (name.clone(), to_json(field)))
                    .collect();
                serde_json::to_writer(&mut record.raw, &map)
                    .map_err(|error| DataError::io(&self.path, error.into()))?;
                record.body = Body::Json(map);
            }
            Err(error) => {
                // Decoding cannot resume inside a damaged column chunk: the
                // rest of the file becomes one quarantined entry.
                self.failed = true;
                let left = self.total_rows.saturating_sub(self.row - 1);
                record.raw.extend_from_slice(error.to_string().as_bytes());
                record.body = Body::Malformed(Malformed {
                    kind: MalformedKind::Unreadable,
                    column: None,
                    message: format!(
                        "cannot decode rows from {} on ({left} rows declared left): {error}",
                        self.row
                    ),
                });
            }
        }
        Ok(true)
    }

    fn columns(&self) -> &[String] {
        &self.columns
    }

    fn bytes_read(&self) -> u64 {
        self.row
    }
}
