//! Property tests: corrupt random records of a generated file and check that
//! nothing is lost (read = accepted + quarantined, every byte accounted for)
//! and that every quarantined record carries the right reason.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use attnflow_data::run::{check_files, CheckOptions};
use attnflow_data::schema::SourceOptions;
use attnflow_data::source::{CsvSource, JsonlSource, Record, RecordSource};
use attnflow_data::Schema;
use proptest::prelude::*;

const SCHEMA: &str = r#"
name = "corruption"
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
max = 100
[[field]]
name = "flag"
type = "bool"
"#;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Corruption {
    /// A 0xFF byte inside the name: invalid UTF-8.
    InvalidUtf8,
    /// The line is cut after its second field: too few columns.
    CutLine,
    /// A quote in the middle of an unquoted name.
    QuoteInField,
    /// The name opens a quote that is never closed on its line.
    UnclosedQuote,
    /// Letters where the score should be: a type error.
    LettersInScore,
    /// A score above the maximum.
    ScoreTooHigh,
}

fn expected_rules(corruption: Corruption) -> &'static [&'static str] {
    match corruption {
        Corruption::InvalidUtf8 => &["invalid_utf8"],
        Corruption::CutLine => &["column_count"],
        Corruption::QuoteInField => &["bad_quoting"],
        // Closed by a later quote (then text follows it), or by the end of
        // the file.
        Corruption::UnclosedQuote => &["bad_quoting", "truncated"],
        Corruption::LettersInScore => &["type"],
        Corruption::ScoreTooHigh => &["max"],
    }
}

fn corruption_strategy() -> impl Strategy<Value = Corruption> {
    prop_oneof![
        Just(Corruption::InvalidUtf8),
        Just(Corruption::CutLine),
        Just(Corruption::QuoteInField),
        Just(Corruption::UnclosedQuote),
        Just(Corruption::LettersInScore),
        Just(Corruption::ScoreTooHigh),
    ]
}

/// A clean row; some names are quoted and hold commas (always starting
/// with a letter after the quote, so a stray open quote elsewhere closes
/// against it and is then followed by text).
fn clean_row(id: usize, seed: u64) -> String {
    let name = format!("n{}x{}", seed % 1000, id);
    let name = if seed % 3 == 0 {
        format!("\"{name},q\"")
    } else {
        name
    };
    format!(
        "{id},{name},{}.{},{}\n",
        seed % 100,
        seed % 10,
        if seed % 2 == 0 { "true" } else { "false" }
    )
}

fn corrupt_row(id: usize, seed: u64, corruption: Corruption) -> Vec<u8> {
    match corruption {
        Corruption::InvalidUtf8 => format!("{id},bad\u{1}name,1.5,true\n")
            .replace('\u{1}', "\u{0}")
            .into_bytes()
            .into_iter()
            .map(|byte| if byte == 0 { 0xFF } else { byte })
            .collect(),
        Corruption::CutLine => format!("{id},cut\n").into_bytes(),
        Corruption::QuoteInField => format!("{id},ab\"cd,2.5,false\n").into_bytes(),
        Corruption::UnclosedQuote => format!("{id},\"open,{}.5,true\n", seed % 100).into_bytes(),
        Corruption::LettersInScore => format!("{id},letters,abc{},true\n", seed % 7).into_bytes(),
        Corruption::ScoreTooHigh => format!("{id},high,{}.5,true\n", 101 + seed % 50).into_bytes(),
    }
}

fn write(directory: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = directory.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Reads records directly and checks that their raw bytes, in order, are
/// exactly the file body minus blank lines: no byte is lost or duplicated.
fn assert_every_byte_accounted(body: &[u8], records: &[Record]) {
    let mut position = 0;
    for record in records {
        assert!(!record.raw_cut);
        loop {
            if body[position..].starts_with(b"\n") {
                position += 1;
            } else if body[position..].starts_with(b"\r\n") {
                position += 2;
            } else {
                break;
            }
        }
        assert_eq!(
            &body[position..position + record.raw.len()],
            &record.raw[..],
            "record at line {}",
            record.line
        );
        position += record.raw.len();
    }
    assert!(
        body[position..]
            .iter()
            .all(|&byte| byte == b'\n' || byte == b'\r'),
        "unread bytes left"
    );
}

fn read_csv_records(bytes: &[u8]) -> (usize, Vec<Record>) {
    let header_length = bytes
        .iter()
        .position(|&byte| byte == b'\n')
        .map_or(bytes.len(), |index| index + 1);
    let mut source =
        CsvSource::new(bytes, Path::new("data.csv"), &SourceOptions::default(), 4).unwrap();
    let mut records = Vec::new();
    let mut record = Record::default();
    while source.next_record(&mut record).unwrap() {
        records.push(record.clone());
    }
    (header_length, records)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn corrupted_records_are_quarantined_with_the_right_reason(
        rows in 5usize..120,
        seeds in proptest::collection::vec(any::<u64>(), 120),
        picks in proptest::collection::vec((0usize..120, corruption_strategy()), 0..12),
        truncate_last in any::<bool>(),
    ) {
        // Corrupt some rows; keep corrupted rows apart so each fault is
        // judged on its own line.
        let mut corrupted: BTreeMap<usize, Corruption> = BTreeMap::new();
        for (row, corruption) in picks {
            let row = row % rows;
            if !corrupted.contains_key(&row) && !corrupted.contains_key(&(row + 1)) && (row == 0 || !corrupted.contains_key(&(row - 1))) {
                corrupted.insert(row, corruption);
            }
        }
        let mut bytes = b"id,name,score,flag\n".to_vec();
        let mut line_of_row = Vec::new();
        for (row, &seed) in seeds.iter().enumerate().take(rows) {
            line_of_row.push(row as u64 + 2);
            match corrupted.get(&row) {
                Some(&corruption) => bytes.extend(corrupt_row(row + 1, seed, corruption)),
                None => bytes.extend(clean_row(row + 1, seed).into_bytes()),
            }
        }
        // A truncated file: the last row stops inside an opened quote.
        if truncate_last && !corrupted.contains_key(&(rows - 1)) && !corrupted.contains_key(&(rows - 2)) {
            bytes.extend_from_slice(format!("{},\"cut off in the mid", rows + 1).as_bytes());
            line_of_row.push(rows as u64 + 2);
            corrupted.insert(rows, Corruption::UnclosedQuote);
        }
        let total_rows = line_of_row.len() as u64;

        let directory = tempfile::tempdir().unwrap();
        let path = write(directory.path(), "data.csv", &bytes);
        let schema = Schema::parse(Path::new("schema.toml"), SCHEMA).unwrap();
        let options = CheckOptions { progress: false, sample_limit: usize::MAX };
        let report = check_files(&schema, &[path], None, &options).unwrap();

        prop_assert_eq!(report.read, report.accepted + report.quarantined);
        prop_assert_eq!(report.read, total_rows, "one record per line, corrupted or not");
        prop_assert_eq!(report.quarantined as usize, corrupted.len());
        let mut by_line: BTreeMap<u64, String> = BTreeMap::new();
        for sample in &report.samples {
            by_line.insert(sample.line, sample.violations[0].rule.clone());
        }
        for (&row, &corruption) in &corrupted {
            let line = line_of_row[row];
            let rule = by_line.get(&line);
            prop_assert!(rule.is_some(), "line {} ({:?}) was not quarantined; quarantined: {:?}", line, corruption, by_line);
            let rule = rule.unwrap();
            prop_assert!(expected_rules(corruption).contains(&rule.as_str()), "line {} ({:?}) quarantined as {}", line, corruption, rule);
        }

        let (header_length, records) = read_csv_records(&bytes);
        assert_every_byte_accounted(&bytes[header_length..], &records);
    }

    #[test]
    fn random_byte_damage_never_loses_a_byte(
        rows in 1usize..60,
        seeds in proptest::collection::vec(any::<u64>(), 60),
        damage in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..20),
        cut in proptest::option::of(any::<usize>()),
    ) {
        let mut bytes = b"id,name,score,flag\n".to_vec();
        let header = bytes.len();
        for (row, &seed) in seeds.iter().enumerate().take(rows) {
            bytes.extend(clean_row(row + 1, seed).into_bytes());
        }
        for (position, byte) in damage {
            let position = header + position % (bytes.len() - header);
            bytes[position] = byte;
        }
        if let Some(cut) = cut {
            bytes.truncate(header + cut % (bytes.len() - header + 1));
        }
        let (header_length, records) = read_csv_records(&bytes);
        prop_assert_eq!(header_length, header);
        assert_every_byte_accounted(&bytes[header_length..], &records);

        let directory = tempfile::tempdir().unwrap();
        let path = write(directory.path(), "data.csv", &bytes);
        let schema = Schema::parse(Path::new("schema.toml"), SCHEMA).unwrap();
        let report = check_files(&schema, &[path], None, &CheckOptions { progress: false, sample_limit: usize::MAX }).unwrap();
        prop_assert_eq!(report.read, report.accepted + report.quarantined);
        prop_assert_eq!(report.read, records.len() as u64);
        prop_assert!(report.samples.iter().all(|sample| !sample.violations.is_empty() && !sample.violations[0].rule.is_empty()));
    }

    #[test]
    fn jsonl_damage_is_quarantined_line_by_line(
        rows in 1usize..60,
        damage in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..10),
        cut in proptest::option::of(any::<usize>()),
    ) {
        let mut bytes = Vec::new();
        for row in 0..rows {
            bytes.extend(format!("{{\"id\": {}, \"name\": \"n{row}\", \"score\": {}.5, \"flag\": true}}\n", row + 1, row % 100).into_bytes());
        }
        for (position, byte) in damage {
            let position = position % bytes.len();
            bytes[position] = byte;
        }
        if let Some(cut) = cut {
            bytes.truncate(cut % (bytes.len() + 1));
        }
        let mut source = JsonlSource::new(&bytes[..], Path::new("data.jsonl"), 1 << 20);
        let mut record = Record::default();
        let mut read = 0u64;
        while source.next_record(&mut record).unwrap() {
            read += 1;
        }
        let non_blank_lines = bytes.split(|&byte| byte == b'\n').filter(|line| !line.iter().all(u8::is_ascii_whitespace)).count() as u64;
        prop_assert_eq!(read, non_blank_lines);

        let directory = tempfile::tempdir().unwrap();
        let path = write(directory.path(), "data.jsonl", &bytes);
        let schema = Schema::parse(Path::new("schema.toml"), SCHEMA).unwrap();
        let report = check_files(&schema, &[path], None, &CheckOptions { progress: false, sample_limit: usize::MAX }).unwrap();
        prop_assert_eq!(report.read, report.accepted + report.quarantined);
        prop_assert_eq!(report.read, read);
    }
}
