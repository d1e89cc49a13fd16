//! Fuzzes the parallel check path (`check_files`: whole quote-free lines
//! cut into blocks and checked by several workers, other records read one
//! at a time, uniqueness decided in file order) against the plain path: a
//! record-by-record reader and `Checker::check` on each. Any bytes must
//! give the same counts and the same quarantined rows, lines and
//! violations, and the books must balance. A panic is a bug.

#![no_main]

use std::path::{Path, PathBuf};

use attnflow_data::check::Checker;
use attnflow_data::run::{check_files, CheckOptions};
use attnflow_data::schema::{Format, Schema};
use attnflow_data::source::{from_reader, Record};
use libfuzzer_sys::fuzz_target;

// max_record_bytes at the block path's minimum, so small inputs already
// make several blocks.
const SCHEMA: &str = r#"
[source]
header = false
max_record_bytes = 4096
null_values = ["", "NA"]
[[field]]
name = "id"
type = "int"
unique = true
min = 1
[[field]]
name = "name"
type = "string"
regex = "[A-Z]{3}-[0-9]{2}"
[[field]]
name = "score"
type = "float"
max = 100.0
[[field]]
name = "flag"
type = "bool"
[[rule]]
check = "id > 5 or score < 50"
"#;

fn scratch_file() -> PathBuf {
    std::env::temp_dir().join(format!("attnflow-fuzz-{}.csv", std::process::id()))
}

fuzz_target!(|data: &[u8]| {
    let schema = Schema::parse(Path::new("fuzz.toml"), SCHEMA).expect("fuzz schema is valid");
    let path = scratch_file();

    // The plain path.
    let Ok(mut source) = from_reader(data, &path, Format::Csv, &schema.source, schema.fields.len()) else {
        return;
    };
    let mut checker = Checker::new(&schema);
    let binding = checker.bind(source.columns(), &path, false).expect("binding by position");
    let mut record = Record::default();
    let mut expected = Vec::new();
    let (mut read, mut accepted) = (0u64, 0u64);
    while source.next_record(&mut record).expect("reading from memory cannot fail") {
        read += 1;
        match checker.check(&record, &binding) {
            Ok(values) => {
                accepted += 1;
                checker.give_back(values);
            }
            Err(violations) => expected.push((record.row, record.line, format!("{violations:?}"))),
        }
    }

    // The parallel path on the same bytes in a file.
    std::fs::write(&path, data).expect("scratch file is writable");
    let options = CheckOptions { progress: false, sample_limit: usize::MAX };
    let report = check_files(&schema, std::slice::from_ref(&path), None, &options)
        .expect("the parallel path reads what the plain path read");
    assert_eq!(report.read, report.accepted + report.quarantined);
    assert_eq!((report.read, report.accepted), (read, accepted));
    let got: Vec<_> = report
        .samples
        .iter()
        .map(|sample| (sample.row, sample.line, format!("{:?}", sample.violations)))
        .collect();
    assert_eq!(got, expected);
});
