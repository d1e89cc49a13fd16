//! Fuzzes the CSV reader and the check behind it: any bytes must give
//! records (good or malformed) whose raw bytes account for the whole input,
//! and checking them must balance the books. A panic is a bug.

#![no_main]

use std::path::Path;

use attnflow_data::check::Checker;
use attnflow_data::schema::{Format, Schema};
use attnflow_data::source::{from_reader, Record};
use libfuzzer_sys::fuzz_target;

const SCHEMA: &str = r#"
[source]
header = false
max_record_bytes = 64
[[field]]
name = "id"
type = "int"
unique = true
[[field]]
name = "name"
type = "string"
regex = "[a-z]*"
[[field]]
name = "tags"
type = "tokens"
[[rule]]
check = "id > 0 or len(name) > 2"
"#;

fuzz_target!(|data: &[u8]| {
    let schema = Schema::parse(Path::new("fuzz.toml"), SCHEMA).expect("fuzz schema is valid");
    let Ok(mut source) = from_reader(data, Path::new("fuzz.csv"), Format::Csv, &schema.source, schema.fields.len()) else {
        return;
    };
    let mut checker = Checker::new(&schema);
    let binding = checker.bind(source.columns(), Path::new("fuzz.csv"), false).expect("binding by position");
    let mut record = Record::default();
    let (mut read, mut accepted, mut quarantined, mut raw_bytes) = (0u64, 0u64, 0u64, 0usize);
    while source.next_record(&mut record).expect("reading from memory cannot fail") {
        read += 1;
        raw_bytes += record.raw.len();
        match checker.check(&record, &binding) {
            Ok(values) => {
                accepted += 1;
                checker.give_back(values);
            }
            Err(violations) => {
                assert!(!violations.is_empty());
                quarantined += 1;
            }
        }
    }
    assert_eq!(read, accepted + quarantined);
    assert!(raw_bytes <= data.len());
});
