//! Parquet sources: rows are read through the row reader, typed and checked
//! like any other record; a damaged file is an error or a quarantined
//! entry, never a panic.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use attnflow_data::run::{check_files, CheckOptions};
use attnflow_data::store::Store;
use attnflow_data::Schema;
use parquet::data_type::{ByteArray, ByteArrayType, DoubleType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;

const SCHEMA: &str = r#"
name = "scores"
[[field]]
name = "id"
type = "int"
required = true
unique = true
[[field]]
name = "name"
type = "string"
required = true
[[field]]
name = "score"
type = "float"
min = 0
max = 1
"#;

/// One row: id, name, score; `None` is null.
type Row<'a> = (i64, Option<&'a str>, Option<f64>);

/// Writes one row group per slice of rows.
fn write_parquet(path: &Path, groups: &[Vec<Row<'_>>]) {
    let message = parse_message_type(
        "message scores { REQUIRED INT64 id; OPTIONAL BINARY name (UTF8); OPTIONAL DOUBLE score; }",
    )
    .unwrap();
    let properties = Arc::new(WriterProperties::builder().build());
    let mut writer =
        SerializedFileWriter::new(File::create(path).unwrap(), Arc::new(message), properties)
            .unwrap();
    for rows in groups {
        let mut group = writer.next_row_group().unwrap();
        let mut index = 0;
        while let Some(mut column) = group.next_column().unwrap() {
            match index {
                0 => {
                    let ids: Vec<i64> = rows.iter().map(|row| row.0).collect();
                    column
                        .typed::<Int64Type>()
                        .write_batch(&ids, None, None)
                        .unwrap();
                }
                1 => {
                    let levels: Vec<i16> =
                        rows.iter().map(|row| i16::from(row.1.is_some())).collect();
                    let names: Vec<ByteArray> = rows
                        .iter()
                        .filter_map(|row| row.1)
                        .map(ByteArray::from)
                        .collect();
                    column
                        .typed::<ByteArrayType>()
                        .write_batch(&names, Some(&levels), None)
                        .unwrap();
                }
                _ => {
                    let levels: Vec<i16> =
                        rows.iter().map(|row| i16::from(row.2.is_some())).collect();
                    let scores: Vec<f64> = rows.iter().filter_map(|row| row.2).collect();
                    column
                        .typed::<DoubleType>()
                        .write_batch(&scores, Some(&levels), None)
                        .unwrap();
                }
            }
            column.close().unwrap();
            index += 1;
        }
        group.close().unwrap();
    }
    writer.close().unwrap();
}

fn sample(directory: &Path) -> PathBuf {
    let path = directory.join("scores.parquet");
    write_parquet(
        &path,
        &[
            vec![
                (1, Some("a"), Some(0.5)),
                (2, None, Some(0.1)),
                (3, Some("c"), Some(1.5)),
            ],
            vec![
                (4, Some("d"), None),
                (1, Some("dup"), Some(0.2)),
                (6, Some("f"), Some(0.0)),
            ],
        ],
    );
    path
}

#[test]
fn parquet_rows_are_checked_and_stored() {
    let directory = tempfile::tempdir().unwrap();
    let path = sample(directory.path());
    let schema = Schema::parse(Path::new("schema.toml"), SCHEMA).unwrap();
    let mut store = Store::open(&directory.path().join("store.db")).unwrap();
    let report = check_files(
        &schema,
        std::slice::from_ref(&path),
        Some(&mut store),
        &CheckOptions::default(),
    )
    .unwrap();
    assert_eq!(
        (report.read, report.accepted, report.quarantined),
        (6, 3, 3)
    );
    assert_eq!(report.by_rule.get("required"), Some(&1));
    assert_eq!(report.by_rule.get("max"), Some(&1));
    assert_eq!(report.by_rule.get("unique"), Some(&1));
    let rows: Vec<u64> = report.samples.iter().map(|sample| sample.row).collect();
    assert_eq!(rows, [2, 3, 5]);
    let queued: Vec<String> = store
        .connection()
        .query(
            "read queue",
            "SELECT record FROM data_ready ORDER BY row",
            &[],
        )
        .unwrap()
        .iter()
        .map(|row| row.text(0).unwrap())
        .collect();
    assert_eq!(queued[0], r#"{"id":1,"name":"a","score":0.5}"#);
    assert_eq!(queued[1], r#"{"id":4,"name":"d","score":null}"#);
}

#[test]
fn damaged_parquet_files_never_panic() {
    let directory = tempfile::tempdir().unwrap();
    let path = sample(directory.path());
    let bytes = std::fs::read(&path).unwrap();
    let schema = Schema::parse(Path::new("schema.toml"), SCHEMA).unwrap();
    let options = CheckOptions::default();

    // Truncated: the footer is gone, so the file as a whole is bad input.
    let truncated = directory.path().join("truncated.parquet");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let error = check_files(&schema, &[truncated], None, &options).unwrap_err();
    assert!(error.is_bad_input());
    assert!(error.to_string().contains("truncated.parquet"), "{error}");

    // Damage in the data pages: either the file is refused or the rest of
    // it is quarantined as unreadable; the books balance either way.
    for position in (4..bytes.len().saturating_sub(8)).step_by(7) {
        let mut damaged = bytes.clone();
        damaged[position] ^= 0x5a;
        let damaged_path = directory.path().join("damaged.parquet");
        std::fs::write(&damaged_path, &damaged).unwrap();
        if let Ok(report) = check_files(&schema, &[damaged_path], None, &options) {
            assert_eq!(report.read, report.accepted + report.quarantined);
        }
    }
}
