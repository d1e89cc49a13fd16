//! The parallel check path (blocks of whole lines checked by several
//! workers, uniqueness decided in file order) against the plain one: a
//! reader that parses one record at a time and `Checker::check` on each.
//! Over random files that cross many blocks (a small `max_record_bytes`
//! makes small blocks), with quoted fields holding newlines, CRLF, blank
//! lines, duplicates, bad quoting, wrong column counts, invalid UTF-8 and
//! unusual spellings, every record must get the same row, line, verdict,
//! violations, raw bytes and queued JSON.

use std::path::Path;

use attnflow_data::check::Checker;
use attnflow_data::run::{check_files, CheckOptions};
use attnflow_data::source::{Body, CsvSource, Record, RecordSource};
use attnflow_data::store::Store;
use attnflow_data::value::write_json_string;
use attnflow_data::Schema;
use proptest::prelude::*;

/// Small records limit: buffers of 8 KiB, blocks of at most 4 KiB.
const MAX_RECORD_BYTES: usize = 4096;

fn schema_text(delimiter: char, header: bool, rules: bool) -> String {
    let mut text = format!(
        r#"
name = "parallel"
[source]
delimiter = "{delimiter}"
header = {header}
max_record_bytes = {MAX_RECORD_BYTES}
null_values = ["", "NA"]
[[field]]
name = "id"
type = "int"
required = true
unique = true
min = 1
[[field]]
name = "category"
type = "string"
one_of = ["alpha", "beta", "gamma", "delta"]
[[field]]
name = "score"
type = "float"
min = 0.0
max = 100.0
[[field]]
name = "count"
type = "int"
min = 0
max = 1000
[[field]]
name = "active"
type = "bool"
[[field]]
name = "code"
type = "string"
unique = true
regex = "[A-Z]{{3}}-[0-9]{{4}}"
min_length = 8
"#
    );
    if rules {
        text.push_str(
            r#"
[[rule]]
name = "busy"
check = "count < 900 or score < 50"
"#,
        );
    }
    text
}

/// One cell of a column, mostly valid, sometimes odd.
fn cell(column: usize, row: usize, pick: u32, odd: bool) -> String {
    let pick = pick as usize;
    if !odd {
        return match column {
            0 => row.to_string(),
            1 => ["alpha", "beta", "gamma", "delta"][pick % 4].to_owned(),
            2 => format!("{}.{:02}", pick % 100, pick % 97),
            3 => (pick % 1001).to_string(),
            4 => ["true", "false", "True", "FALSE", "1", "0"][pick % 6].to_owned(),
            _ => format!(
                "{}{}{}-{:04}",
                (b'A' + (pick % 26) as u8) as char,
                (b'A' + (pick / 26 % 26) as u8) as char,
                (b'A' + (pick / 676 % 26) as u8) as char,
                row % 10_000
            ),
        };
    }
    let choices: &[&str] = match column {
        0 => &[
            "",
            "0",
            "-4",
            "+7",
            " 12",
            "x",
            "99999999999999999999",
            "7",
            "NA",
        ],
        1 => &["omega", "", "Alpha", "NA", "alphabetagammadelta", "alpha "],
        2 => &[
            "101.5",
            "-0.5",
            "1e2",
            "nan",
            "inf",
            ".5",
            "5.",
            "3.14159265358979",
            "x",
        ],
        3 => &["-5", "1001", "+3", "1.0", "", "00012"],
        4 => &["maybe", "yes", "N", "tRuE", "t\u{0}", ""],
        _ => &[
            "abc-1234",
            "ABC-123",
            "ÄBC-1234",
            "ABC-1234",
            "",
            "AB-12345",
        ],
    };
    choices[pick % choices.len()].to_owned()
}

fn quote(text: &str, extra: &str) -> String {
    format!("\"{}{extra}\"", text.replace('"', "\"\""))
}

/// A file of `rows` records (some damaged) with the given delimiter.
fn generate(rows: usize, seeds: &[u32], delimiter: char, header: bool) -> Vec<u8> {
    let mut bytes = Vec::new();
    if header {
        let names = ["id", "category", "score", "count", "active", "code"];
        bytes.extend(names.join(&delimiter.to_string()).into_bytes());
        bytes.push(b'\n');
    }
    // After an opened quote, the next line holds a quote that closes it, so
    // no record grows past `max_record_bytes` (whose verdict would depend
    // on the reader's buffer).
    let mut close_quote = false;
    for row in 1..=rows {
        let mut mixed = (u64::from(seeds[row % seeds.len()]) << 32 | row as u64)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        mixed ^= mixed >> 29;
        mixed = mixed.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        let seed = (mixed >> 32) as u32;
        let odd = seed % 11 == 0;
        let mut cells: Vec<String> = (0..6)
            .map(|column| {
                cell(
                    column,
                    row,
                    (mixed.rotate_left(column as u32 * 11) as u32) >> 3,
                    odd && seed % 6 == column as u32,
                )
            })
            .collect();
        // Duplicated ids and codes.
        if seed % 31 == 0 && row > 3 {
            cells[0] = (row - 3).to_string();
        }
        let shape = if close_quote { 0 } else { seed % 97 };
        close_quote = shape == 7;
        let mut line = match shape {
            // Quoted fields, with delimiters, quotes and newlines inside.
            0..=3 => {
                let column = (seed % 6) as usize;
                cells[column] = quote(
                    &cells[column],
                    ["", "\nnext line", "\r\nx", ",y", "\"q\""][(seed / 97 % 5) as usize],
                );
                cells.join(&delimiter.to_string())
            }
            4 => {
                cells.push("extra".to_owned());
                cells.join(&delimiter.to_string())
            }
            5 => cells[..4].join(&delimiter.to_string()),
            6 => format!("{}\"oops", cells.join(&delimiter.to_string())),
            7 => format!("\"open{}", cells.join(&delimiter.to_string())),
            _ => cells.join(&delimiter.to_string()),
        };
        if seed % 89 == 0 {
            line.push('\u{FFFD}');
        }
        let mut line = line.into_bytes();
        if seed % 101 == 0 {
            line.insert(line.len() / 2, 0xFF);
        }
        bytes.extend(line);
        bytes.extend_from_slice(match seed % 41 {
            0 => b"\r\n",
            1 => b"\n\n",
            2 => b"\r\n\r\n",
            3 => b"\r\r\n",
            _ => b"\n",
        });
    }
    bytes
}

/// What the plain path decides for each record: (row, line, queued JSON)
/// for accepted ones and (row, line, violations JSON, raw, raw cut) for
/// quarantined ones; `None` when a record is too long to be judged the
/// same whatever the reader's buffer (see `next_block`).
#[allow(clippy::type_complexity)]
fn reference(
    schema: &Schema,
    bytes: &[u8],
) -> Option<(
    Vec<(i64, i64, String)>,
    Vec<(i64, i64, String, Vec<u8>, bool)>,
)> {
    let path = Path::new("data.csv");
    let mut source = CsvSource::new(bytes, path, &schema.source, schema.fields.len()).ok()?;
    let mut checker = Checker::new(schema);
    let binding = checker.bind(source.columns(), path, false).ok()?;
    let keys: Vec<String> = schema
        .fields
        .iter()
        .map(|field| {
            let mut key = String::new();
            write_json_string(&mut key, &field.name);
            key.push(':');
            key
        })
        .collect();
    let mut accepted = Vec::new();
    let mut quarantined = Vec::new();
    let mut record = Record::default();
    while source.next_record(&mut record).unwrap() {
        let too_long =
            matches!(&record.body, Body::Malformed(fault) if fault.kind.rule() == "too_long");
        if too_long || record.raw.len() > MAX_RECORD_BYTES {
            return None;
        }
        match checker.check(&record, &binding) {
            Ok(values) => {
                let mut json = String::from("{");
                for (index, (key, value)) in keys.iter().zip(&values).enumerate() {
                    if index > 0 {
                        json.push(',');
                    }
                    json.push_str(key);
                    value.write_json(&mut json);
                }
                json.push('}');
                accepted.push((record.row as i64, record.line as i64, json));
            }
            Err(violations) => quarantined.push((
                record.row as i64,
                record.line as i64,
                serde_json::to_string(&violations).unwrap(),
                record.raw.clone(),
                record.raw_cut,
            )),
        }
    }
    Some((accepted, quarantined))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn the_parallel_path_decides_every_record_as_the_plain_path(
        rows in 200usize..4000,
        seeds in proptest::collection::vec(any::<u32>(), 1..64),
        delimiter in prop_oneof![Just(','), Just(';'), Just('\t')],
        header in any::<bool>(),
        rules in any::<bool>(),
    ) {
        let schema = Schema::parse(Path::new("schema.toml"), &schema_text(delimiter, header, rules)).unwrap();
        let bytes = generate(rows, &seeds, delimiter, header);
        let expected = reference(&schema, &bytes);
        prop_assume!(expected.is_some());
        let (expected_accepted, expected_quarantined) = expected.unwrap();

        let directory = tempfile::tempdir().unwrap();
        let csv = directory.path().join("data.csv");
        std::fs::write(&csv, &bytes).unwrap();
        let options = CheckOptions { progress: false, sample_limit: usize::MAX };

        // Without a store (values are not kept whole unless rules need them).
        let dry = check_files(&schema, std::slice::from_ref(&csv), None, &options).unwrap();
        prop_assert_eq!(dry.accepted as usize, expected_accepted.len());
        prop_assert_eq!(dry.quarantined as usize, expected_quarantined.len());
        let samples: Vec<(i64, i64, String)> = dry
            .samples
            .iter()
            .map(|sample| (sample.row as i64, sample.line as i64, serde_json::to_string(&sample.violations).unwrap()))
            .collect();
        let expected_samples: Vec<(i64, i64, String)> = expected_quarantined
            .iter()
            .map(|(row, line, violations, _, _)| (*row, *line, violations.clone()))
            .collect();
        prop_assert_eq!(samples, expected_samples);

        // With a store: the queue's JSON and the quarantine's raw bytes.
        let database = directory.path().join("check.db");
        let mut store = Store::open(&database).unwrap();
        let stored = check_files(&schema, std::slice::from_ref(&csv), Some(&mut store), &options).unwrap();
        prop_assert_eq!(stored.accepted, dry.accepted);
        drop(store);
        let connection = rusqlite::Connection::open(&database).unwrap();
        let accepted: Vec<(i64, i64, String)> = connection
            .prepare("SELECT row, line, record FROM data_queue ORDER BY id")
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        // The same values, read back: a number queued straight from its
        // cell keeps its own spelling (`98.00`, where the plain path writes
        // `98.0`).
        let read_back = |rows: Vec<(i64, i64, String)>| -> Vec<(i64, i64, serde_json::Value)> {
            rows.into_iter()
                .map(|(row, line, json)| (row, line, serde_json::from_str(&json).unwrap()))
                .collect()
        };
        prop_assert_eq!(read_back(accepted), read_back(expected_accepted));
        let quarantined: Vec<(i64, i64, String, Vec<u8>, bool)> = connection
            .prepare("SELECT row, line, violations, raw, raw_cut FROM data_quarantine ORDER BY id")
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        prop_assert_eq!(quarantined, expected_quarantined);
    }
}

#[test]
fn a_quoted_newline_across_block_edges_keeps_every_line_number() {
    // Plain lines, then a record whose quoted field spans three lines, many
    // times over: blocks end before each quote, so every quoted record is
    // read alone and the lines after it must continue the count.
    let schema = Schema::parse(Path::new("schema.toml"), &schema_text(',', true, false)).unwrap();
    let mut bytes = b"id,category,score,count,active,code\n".to_vec();
    let mut id = 0;
    let mut line = 1;
    let mut expected_lines = Vec::new();
    for round in 0..400 {
        for _ in 0..(round % 37) {
            id += 1;
            line += 1;
            expected_lines.push(line);
            bytes.extend(format!("{id},alpha,1.5,3,true,ABC-{:04}\n", id % 10_000).into_bytes());
        }
        id += 1;
        line += 1;
        expected_lines.push(line);
        bytes.extend(
            format!(
                "{id},\"beta\nspans\nlines\",2.5,4,false,XYZ-{:04}\n",
                id % 10_000
            )
            .into_bytes(),
        );
        line += 2;
    }
    let (_, quarantined) = reference(&schema, &bytes).unwrap();
    let directory = tempfile::tempdir().unwrap();
    let csv = directory.path().join("data.csv");
    std::fs::write(&csv, &bytes).unwrap();
    let report = check_files(
        &schema,
        &[csv],
        None,
        &CheckOptions {
            progress: false,
            sample_limit: usize::MAX,
        },
    )
    .unwrap();
    assert_eq!(report.read, id as u64);
    // The multi-line category is not one of the allowed values.
    assert_eq!(report.quarantined, 400);
    let lines: Vec<u64> = report.samples.iter().map(|sample| sample.line).collect();
    let reference_lines: Vec<u64> = quarantined.iter().map(|entry| entry.1 as u64).collect();
    assert_eq!(lines, reference_lines);
    let quoted_lines: Vec<u64> = expected_lines
        .iter()
        .zip(1..)
        .filter(|(_, row)| report.samples.iter().any(|sample| sample.row == *row))
        .map(|(line, _)| *line)
        .collect();
    assert_eq!(lines, quoted_lines);
    assert_eq!(*lines.last().unwrap(), line - 2);
}

#[test]
fn generated_files_are_judged_whole_by_the_reference() {
    // The property test only compares files the reference can judge; make
    // sure that is nearly all of them, with every kind of verdict present.
    let schema = Schema::parse(Path::new("schema.toml"), &schema_text(',', true, true)).unwrap();
    let mut rules = std::collections::BTreeSet::new();
    for seed in 0..8u32 {
        let bytes = generate(3000, &[seed, seed * 7 + 1], ',', true);
        let (accepted, quarantined) = reference(&schema, &bytes).expect("no over-long record");
        assert!(accepted.len() > 2000, "{}", accepted.len());
        for (_, _, violations, _, _) in quarantined {
            let violations: serde_json::Value = serde_json::from_str(&violations).unwrap();
            for violation in violations.as_array().unwrap() {
                rules.insert(violation["rule"].as_str().unwrap().to_owned());
            }
        }
    }
    for rule in [
        "unique",
        "type",
        "min",
        "max",
        "one_of",
        "regex",
        "min_length",
        "rule:busy",
        "bad_quoting",
        "column_count",
        "invalid_utf8",
    ] {
        assert!(rules.contains(rule), "no `{rule}` among {rules:?}");
    }
}
