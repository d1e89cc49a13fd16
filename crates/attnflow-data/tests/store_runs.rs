//! Check runs against real stores (an SQLite file and a PostgreSQL
//! database, the same test bodies): routing, books, re-checks and
//! uniqueness across runs.

use std::path::{Path, PathBuf};

use attnflow_data::quarantine::{quarantined_record, RecordCell};
use attnflow_data::run::{check_files, recheck, CheckOptions};
use attnflow_data::store::{QuarantineFilter, Store};
use attnflow_data::Schema;
use attnflow_store::Location;

/// Runs `test` on an SQLite store and on a fresh PostgreSQL database.
fn each_backend(test: impl Fn(&tempfile::TempDir, &Location)) {
    let directory = tempfile::tempdir().unwrap();
    let location = Location::Sqlite(directory.path().join("store.db"));
    test(&directory, &location);
    if let Some(url) = attnflow_testkit::postgres_database() {
        let directory = tempfile::tempdir().unwrap();
        test(&directory, &Location::parse(&url).unwrap());
    }
}

fn schema(text: &str) -> Schema {
    Schema::parse(Path::new("schema.toml"), text).unwrap()
}

const STRICT: &str = r#"
name = "people"
[[field]]
name = "id"
type = "int"
required = true
unique = true
[[field]]
name = "age"
type = "int"
min = 0
max = 120
"#;

const RELAXED: &str = r#"
name = "people"
[[field]]
name = "id"
type = "int"
required = true
unique = true
[[field]]
name = "age"
type = "int"
min = 0
max = 200
"#;

fn write(directory: &Path, name: &str, text: &[u8]) -> PathBuf {
    let path = directory.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_run_routes_every_record_and_a_recheck_releases_fixed_ones() {
    each_backend(|directory, location| {
        let csv = write(
            directory.path(),
            "people.csv",
            b"id,age\n1,30\n2,150\n3,\"x\n4,40,9\n5,-1\n1,20\n",
        );
        let jsonl = write(
            directory.path(),
            "more.jsonl",
            b"{\"id\": 6, \"age\": 199}\n{\"id\": 7, \"age\": \"old\"}\nnot json\n",
        );
        let mut store = Store::connect(location).unwrap();

        let report = check_files(
            &schema(STRICT),
            &[csv.clone(), jsonl],
            Some(&mut store),
            &CheckOptions::default(),
        )
        .unwrap();
        assert_eq!(
            (report.read, report.accepted, report.quarantined),
            (9, 1, 8)
        );
        assert_eq!(report.by_rule["max"], 2);
        // The quote opened on line 4 is never closed: only that line is lost.
        assert_eq!(report.by_rule["truncated"], 1);
        assert_eq!(report.by_rule["column_count"], 1);
        assert_eq!(report.by_rule["min"], 1);
        assert_eq!(report.by_rule["unique"], 1);
        assert_eq!(report.by_rule["type"], 1);
        assert_eq!(report.by_rule["invalid_json"], 1);
        assert_eq!(store.queue_length().unwrap(), 1);
        let mut queued = Vec::new();
        store
            .queued_records(report.run_id.unwrap(), |record| queued.push(record))
            .unwrap();
        assert_eq!(queued, [serde_json::json!({"id": 1, "age": 30})]);
        let entries = store.list_quarantine(false, Some("max"), 100).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(
            (
                entries[0].row,
                entries[0].line,
                entries[0].field.as_deref(),
                entries[0].value.as_deref()
            ),
            (2, 3, Some("age"), Some("150"))
        );
        assert!(entries[0].source.ends_with("people.csv"));

        // The schema is relaxed: the two ages above 120 are now valid.
        let again = recheck(&schema(RELAXED), &mut store, &CheckOptions::default()).unwrap();
        assert_eq!((again.read, again.accepted, again.quarantined), (8, 2, 6));
        assert_eq!(store.queue_length().unwrap(), 3);
        assert_eq!(store.list_quarantine(false, None, 100).unwrap().len(), 6);
        assert_eq!(store.list_quarantine(true, None, 100).unwrap().len(), 8);
        // Id 1 is still a duplicate of the queued record, even in a re-check.
        assert_eq!(
            store
                .list_quarantine(false, Some("unique"), 100)
                .unwrap()
                .len(),
            1
        );

        // A second check of the same file finds its ids already queued.
        let twice = check_files(
            &schema(RELAXED),
            &[csv],
            Some(&mut store),
            &CheckOptions::default(),
        )
        .unwrap();
        assert_eq!(twice.by_rule.get("unique"), Some(&3), "{:?}", twice.by_rule);
        let mut queued = Vec::new();
        store
            .queued_records(twice.run_id.unwrap(), |record| queued.push(record))
            .unwrap();
        // Exactly the second run's accepted records, none of the first run's.
        assert_eq!(queued.len() as u64, twice.accepted);
        let runs = store.runs().unwrap();
        assert_eq!(runs.len(), 3);
        assert!(runs.iter().all(|run| run.status == "done"));
    });
}

#[test]
fn a_bad_header_stops_before_anything_is_written() {
    each_backend(|directory, location| {
        let good = write(directory.path(), "good.csv", b"id,age\n1,2\n");
        let bad = write(directory.path(), "bad.csv", b"name,age\nx,2\n");
        let mut store = Store::connect(location).unwrap();
        let error = check_files(
            &schema(STRICT),
            &[good, bad],
            Some(&mut store),
            &CheckOptions::default(),
        )
        .unwrap_err();
        assert!(error.to_string().contains("bad.csv:1"), "{error}");
        assert!(error.is_bad_input());
        assert!(store.runs().unwrap().is_empty());
    });
}

#[test]
fn a_newer_store_version_is_refused() {
    each_backend(|_directory, location| {
        drop(Store::connect(location).unwrap());
        let store = Store::connect(location).unwrap();
        store
            .connection()
            .execute("bump", "UPDATE data_schema_version SET version = 99", &[])
            .unwrap();
        drop(store);
        let error = Store::connect(location).err().unwrap();
        assert!(error.to_string().contains("version 99"), "{error}");
        assert!(error.is_bad_input());
    });
}

#[test]
fn quarantine_pages_facets_and_records_read_back_for_people() {
    each_backend(|directory, location| {
        let csv = write(
            directory.path(),
            "people.csv",
            b"id,age\n1,30\n2,150\n3,-4\n4,\"<b>\"\n5,40,9\n",
        );
        let jsonl = write(
            directory.path(),
            "more.jsonl",
            b"{\"id\": 6, \"age\": 199}\n",
        );
        let mut store = Store::connect(location).unwrap();
        check_files(
            &schema(STRICT),
            &[csv, jsonl],
            Some(&mut store),
            &CheckOptions::default(),
        )
        .unwrap();
        let facets = store.quarantine_facets().unwrap();
        assert_eq!(facets.by_rule[0], ("max".to_string(), 2));
        assert_eq!(
            facets.by_field.iter().map(|(_, n)| n).sum::<u64>(),
            4,
            "the column-count fault has no field: {facets:?}"
        );
        assert_eq!(facets.by_source.len(), 2);
        let by_field = QuarantineFilter {
            field: Some("age".into()),
            ..QuarantineFilter::default()
        };
        assert_eq!(store.count_quarantine(&by_field).unwrap(), 4);
        let second = store.quarantine_page(&by_field, 1, 2).unwrap();
        assert_eq!(second.len(), 2);
        let all = store.quarantine_page(&by_field, 0, 10).unwrap();
        let ids = |entries: &[attnflow_data::store::QuarantineEntry]| {
            entries.iter().map(|entry| entry.id).collect::<Vec<_>>()
        };
        assert_eq!(
            ids(&all[1..3]),
            ids(&second),
            "offset and limit page the same order"
        );
        let source = facets
            .by_source
            .iter()
            .find(|(path, _)| path.ends_with("more.jsonl"))
            .unwrap();
        let by_source = QuarantineFilter {
            source: Some(source.0.clone()),
            ..QuarantineFilter::default()
        };
        let json_entry = &store.quarantine_page(&by_source, 0, 10).unwrap()[0];

        let typed = all.iter().find(|entry| entry.rule == "type").unwrap();
        let record = quarantined_record(&store, typed.id).unwrap().unwrap();
        assert_eq!(record.raw, b"4,\"<b>\"\n", "the line as it was in the file");
        assert_eq!(
            record.cells,
            [
                RecordCell {
                    name: "id".into(),
                    text: "4".into()
                },
                RecordCell {
                    name: "age".into(),
                    text: "<b>".into()
                },
            ]
        );
        let json = quarantined_record(&store, json_entry.id).unwrap().unwrap();
        assert!(json.cells.contains(&RecordCell {
            name: "age".into(),
            text: "199".into()
        }));
        let columns = store
            .list_quarantine(false, Some("column_count"), 10)
            .unwrap();
        let malformed = quarantined_record(&store, columns[0].id).unwrap().unwrap();
        assert!(malformed.cells.is_empty(), "{:?}", malformed.cells);
        assert_eq!(malformed.raw, b"5,40,9\n");
        assert!(quarantined_record(&store, 9999).unwrap().is_none());
        let (name, _, text) = store.latest_schema().unwrap().unwrap();
        assert_eq!((name.as_str(), text.as_str()), ("people", STRICT));
    });
}

#[test]
fn checking_a_file_again_quarantines_every_record_as_a_duplicate_in_file_order() {
    each_backend(|directory, location| {
        // Enough rejects that PostgreSQL receives them in several COPY
        // chunks (4 MiB each).
        let rows = 40_000;
        let mut text = String::from("id,age\n");
        for id in 1..=rows {
            text.push_str(&format!("{id},{}\n", id % 100));
        }
        let csv = write(directory.path(), "people.csv", text.as_bytes());
        let mut store = Store::connect(location).unwrap();
        let first = check_files(
            &schema(STRICT),
            std::slice::from_ref(&csv),
            Some(&mut store),
            &CheckOptions::default(),
        )
        .unwrap();
        assert_eq!((first.accepted, first.quarantined), (rows, 0));
        let again = check_files(
            &schema(STRICT),
            &[csv],
            Some(&mut store),
            &CheckOptions::default(),
        )
        .unwrap();
        assert_eq!(
            (again.read, again.accepted, again.quarantined),
            (rows, 0, rows)
        );
        assert_eq!(again.by_rule["unique"], rows);
        let unique = QuarantineFilter {
            rule: Some("unique".into()),
            ..QuarantineFilter::default()
        };
        assert_eq!(store.count_quarantine(&unique).unwrap(), rows);
        let page = store.quarantine_page(&unique, 29_999, 2).unwrap();
        assert_eq!(
            page.iter()
                .map(|entry| (entry.row, entry.line, entry.value.as_deref()))
                .collect::<Vec<_>>(),
            [
                (30_000, 30_001, Some("30000")),
                (30_001, 30_002, Some("30001"))
            ],
            "ids follow the file"
        );
        let record = quarantined_record(&store, page[0].id).unwrap().unwrap();
        assert_eq!(record.raw, b"30000,0\n");
    });
}

#[test]
fn a_run_on_a_connection_that_queued_before_reads_back_every_record_in_file_order() {
    each_backend(|directory, location| {
        let file = |name: &str, first: u64| {
            let mut text = String::from("id,age\n");
            for id in first..first + 100 {
                text.push_str(&format!("{id},{}\n", id % 100));
            }
            write(directory.path(), name, text.as_bytes())
        };
        let (a, b, c) = (file("a.csv", 1), file("b.csv", 101), file("c.csv", 201));
        // Two connections take turns, as a long-lived worker and a one-off
        // check would: on PostgreSQL each session caches queue ids.
        let mut first = Store::connect(location).unwrap();
        let mut second = Store::connect(location).unwrap();
        let options = CheckOptions::default();
        check_files(&schema(STRICT), &[a], Some(&mut first), &options).unwrap();
        check_files(&schema(STRICT), &[b], Some(&mut second), &options).unwrap();
        let last = check_files(&schema(STRICT), &[c], Some(&mut first), &options).unwrap();
        assert_eq!(last.accepted, 100);
        let mut ids = Vec::new();
        first
            .queued_records(last.run_id.unwrap(), |record| {
                ids.push(record["id"].as_i64().unwrap())
            })
            .unwrap();
        assert_eq!(ids, (201..301).collect::<Vec<_>>());
        assert_eq!(first.queue_length().unwrap(), 300);
    });
}
