//! Fuzzes the JSON Lines reader and the check behind it: any bytes must
//! give one record per non-blank line, and the books must balance.

#![no_main]

use std::path::Path;

use attnflow_data::check::Checker;
use attnflow_data::schema::{Format, Schema};
use attnflow_data::source::{from_reader, Record};
use libfuzzer_sys::fuzz_target;

const SCHEMA: &str = r#"
[source]
max_record_bytes = 256
[[field]]
name = "id"
type = "int"
unique = true
[[field]]
name = "score"
type = "float"
min = 0
[[field]]
name = "tags"
type = "tokens"
one_of = ["a", "b"]
"#;

fuzz_target!(|data: &[u8]| {
    let schema = Schema::parse(Path::new("fuzz.toml"), SCHEMA).expect("fuzz schema is valid");
    let mut source = from_reader(data, Path::new("fuzz.jsonl"), Format::Jsonl, &schema.source, schema.fields.len())
        .expect("JSON Lines readers always open");
    let mut checker = Checker::new(&schema);
    let binding = checker.bind(source.columns(), Path::new("fuzz.jsonl"), true).expect("keyed binding");
    let mut record = Record::default();
    let (mut read, mut accepted, mut quarantined) = (0u64, 0u64, 0u64);
    while source.next_record(&mut record).expect("reading from memory cannot fail") {
        read += 1;
        match checker.check(&record, &binding) {
            Ok(values) => {
                accepted += 1;
                checker.give_back(values);
            }
            Err(_) => quarantined += 1,
        }
    }
    assert_eq!(read, accepted + quarantined);
    let lines = data
        .split(|&byte| byte == b'\n')
        .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
        .count() as u64;
    assert_eq!(read, lines);
});
