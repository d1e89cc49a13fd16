//! `attnflow data ...` and `attnflow bench data` on real files in a temp dir.

use std::path::{Path, PathBuf};

use assert_cmd::cargo::CommandCargoExt;
use assert_cmd::Command;
use predicates::prelude::*;

fn attnflow() -> Command {
    Command::cargo_bin("attnflow").unwrap()
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/data")
}

fn json(output: &[u8]) -> serde_json::Value {
    serde_json::from_slice(output)
        .unwrap_or_else(|error| panic!("{error}: {}", String::from_utf8_lossy(output)))
}

#[test]
fn check_routes_every_example_record_and_recheck_releases_the_fixed_one() {
    let directory = tempfile::tempdir().unwrap();
    let db = directory.path().join("store.db");
    let examples = examples();
    attnflow()
        .args(["data", "check"])
        .arg(examples.join("orders.toml"))
        .arg(examples.join("orders.csv"))
        .arg(examples.join("orders.jsonl"))
        .arg("--db")
        .arg(&db)
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "read 22 = accepted 8 + quarantined 14",
        ))
        .stdout(predicate::str::contains("orders.csv:12"))
        .stdout(predicate::str::contains("bad_quoting"));

    let output = attnflow()
        .args(["data", "quarantine", "--json", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(output.status.success());
    let listed = json(&output.stdout);
    let entries = listed["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 14);
    let quantity = entries.iter().find(|entry| entry["rule"] == "max").unwrap();
    assert_eq!(quantity["field"], "quantity");
    assert_eq!(quantity["value"], "250");
    assert_eq!(quantity["line"], 7);
    assert!(quantity["source"].as_str().unwrap().ends_with("orders.csv"));

    let output = attnflow()
        .args(["data", "recheck", "--json"])
        .arg(examples.join("orders_fixed.toml"))
        .arg("--db")
        .arg(&db)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report = json(&output.stdout);
    assert_eq!(
        (
            report["read"].as_u64(),
            report["accepted"].as_u64(),
            report["quarantined"].as_u64()
        ),
        (Some(14), Some(1), Some(13))
    );

    attnflow()
        .args(["data", "quarantine", "--rule", "type", "--db"])
        .arg(&db)
        .assert()
        .success()
        .stdout(predicate::str::contains("13 records in quarantine"))
        .stdout(predicate::str::contains("must be an integer, found `two`"));
}

#[test]
fn dry_run_writes_nothing_and_strict_fails_on_quarantine() {
    let directory = tempfile::tempdir().unwrap();
    let examples = examples();
    attnflow()
        .current_dir(directory.path())
        .args(["data", "check", "--dry-run", "--strict"])
        .arg(examples.join("orders.toml"))
        .arg(examples.join("orders.csv"))
        .assert()
        .code(1)
        .stdout(predicate::str::contains("dry run"))
        .stderr(predicate::str::contains(
            "10 of 15 records were quarantined",
        ));
    assert!(!directory.path().join("attnflow.db").exists());
}

#[test]
fn a_clean_file_passes_strict() {
    let directory = tempfile::tempdir().unwrap();
    let schema = directory.path().join("schema.toml");
    std::fs::write(
        &schema,
        "[[field]]\nname = \"a\"\ntype = \"int\"\nrequired = true\n",
    )
    .unwrap();
    let data = directory.path().join("data.txt");
    std::fs::write(&data, "a\n1\n2\n").unwrap();
    // Unknown extension: the schema must say the format.
    attnflow()
        .args(["data", "check", "--dry-run"])
        .arg(&schema)
        .arg(&data)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("cannot tell the format"));
    let csv = directory.path().join("data.csv");
    std::fs::write(&csv, "a\n1\n2\n").unwrap();
    attnflow()
        .args(["data", "check", "--strict", "--db"])
        .arg(directory.path().join("s.db"))
        .arg(&schema)
        .arg(&csv)
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "read 2 = accepted 2 + quarantined 0",
        ));
}

#[test]
fn schema_errors_name_file_line_and_column() {
    let directory = tempfile::tempdir().unwrap();
    let schema = directory.path().join("broken.toml");
    std::fs::write(&schema, "[[field]]\nname = \"a\"\ntype = \"integr\"\n").unwrap();
    let data = directory.path().join("data.csv");
    std::fs::write(&data, "a\n1\n").unwrap();
    attnflow()
        .args(["data", "check", "--dry-run"])
        .arg(&schema)
        .arg(&data)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("broken.toml:3:8"))
        .stderr(predicate::str::contains("unknown type `integr`"));

    std::fs::write(
        &schema,
        "[[field]]\nname = \"a\"\ntype = \"int\"\n[[rule]]\ncheck = \"a <= b\"\n",
    )
    .unwrap();
    attnflow()
        .args(["data", "profile"])
        .arg(&schema)
        .arg(&data)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("broken.toml:5:15"))
        .stderr(predicate::str::contains("unknown field `b`"));
}

#[test]
fn unreadable_inputs_exit_2_naming_the_file() {
    let directory = tempfile::tempdir().unwrap();
    let examples = examples();
    attnflow()
        .args(["data", "check", "--dry-run"])
        .arg(examples.join("orders.toml"))
        .arg(directory.path().join("missing.csv"))
        .assert()
        .code(2)
        .stderr(predicate::str::contains("missing.csv"));

    let headerless = directory.path().join("other.csv");
    std::fs::write(&headerless, "name,price\nx,1\n").unwrap();
    attnflow()
        .args(["data", "check", "--dry-run"])
        .arg(examples.join("orders.toml"))
        .arg(&headerless)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("other.csv:1"))
        .stderr(predicate::str::contains("no column `order_id`"));

    let parquet = directory.path().join("fake.parquet");
    std::fs::write(&parquet, b"not parquet at all").unwrap();
    attnflow()
        .args(["data", "check", "--dry-run"])
        .arg(examples.join("orders.toml"))
        .arg(&parquet)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("fake.parquet"));

    attnflow()
        .args(["data", "quarantine", "--db"])
        .arg(directory.path().join("none.db"))
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no such store"));
}

#[test]
fn profile_reports_counts_and_moments() {
    let examples = examples();
    let output = attnflow()
        .args(["data", "profile", "--json"])
        .arg(examples.join("orders.toml"))
        .arg(examples.join("orders.csv"))
        .arg(examples.join("orders.jsonl"))
        .output()
        .unwrap();
    assert!(output.status.success());
    let report = json(&output.stdout);
    assert_eq!(report["records"], 22);
    assert_eq!(report["malformed"], 4);
    let quantity = report["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|field| field["name"] == "quantity")
        .unwrap();
    // 16 integer quantities (two are not integers); max 250.
    assert_eq!(quantity["count"], 16);
    assert_eq!(quantity["invalid"], 2);
    assert_eq!(quantity["max"], 250.0);
    let histogram_total: u64 = quantity["histogram"]
        .as_array()
        .unwrap()
        .iter()
        .map(|bin| bin["count"].as_u64().unwrap())
        .sum();
    assert_eq!(histogram_total, 16);
    attnflow()
        .args(["data", "profile"])
        .arg(examples.join("orders.toml"))
        .arg(examples.join("orders.csv"))
        .assert()
        .success()
        .stdout(predicate::str::contains("quantity (value histogram)"));
}

#[test]
fn select_solves_budget_and_cover_exactly_and_writes_the_choice() {
    let directory = tempfile::tempdir().unwrap();
    let items = examples().join("items.csv");
    let output = attnflow()
        .args([
            "data",
            "select",
            "--weight",
            "cost_gpu_hours",
            "--value",
            "value",
            "--budget",
            "40",
            "--id",
            "item",
            "--json",
        ])
        .arg(&items)
        .output()
        .unwrap();
    assert!(output.status.success());
    let answer = json(&output.stdout);
    assert_eq!(answer["selection"]["exact"], true);
    assert_eq!(answer["selection"]["method"], "dynamic_programming");
    // Checked by hand over all 4096 subsets (tools-free: the unit tests brute-force random cases).
    assert_eq!(answer["selection"]["total_value"], 110.0);
    assert!(answer["selection"]["total_weight"].as_f64().unwrap() <= 40.0);

    let chosen = directory.path().join("chosen.csv");
    attnflow()
        .args([
            "data",
            "select",
            "--weight",
            "label_minutes",
            "--value",
            "value",
            "--budget",
            "150",
            "--cover",
            "--id",
            "item",
            "--output",
        ])
        .arg(&chosen)
        .arg(&items)
        .assert()
        .success()
        .stdout(predicate::str::contains("optimal (proven)"))
        .stdout(predicate::str::contains("total cost 189"));
    let written = std::fs::read_to_string(&chosen).unwrap();
    assert!(written.starts_with("id,weight,value\n"));
    assert_eq!(written.lines().count(), 7);

    attnflow()
        .args([
            "data",
            "select",
            "--weight",
            "cost_gpu_hours",
            "--value",
            "value",
            "--budget",
            "40",
            "--method",
            "greedy",
        ])
        .arg(&items)
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "greedy by ratio with the LP bound",
        ))
        .stdout(predicate::str::contains("no selection beats"));
}

#[test]
fn select_rejects_bad_columns_values_and_budgets() {
    let directory = tempfile::tempdir().unwrap();
    let items = examples().join("items.csv");
    attnflow()
        .args([
            "data", "select", "--weight", "nope", "--value", "value", "--budget", "40",
        ])
        .arg(&items)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("items.csv:1"))
        .stderr(predicate::str::contains("no column `nope`"));
    let bad = directory.path().join("bad.csv");
    std::fs::write(&bad, "w,v\n1,2\n-3,4\n").unwrap();
    attnflow()
        .args([
            "data", "select", "--weight", "w", "--value", "v", "--budget", "4",
        ])
        .arg(&bad)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("bad.csv:3"))
        .stderr(predicate::str::contains("below the minimum"));
    attnflow()
        .args([
            "data",
            "select",
            "--weight",
            "cost_gpu_hours",
            "--value",
            "value",
            "--budget",
            "-1",
        ])
        .arg(&items)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("budget"));
    attnflow()
        .args([
            "data",
            "select",
            "--weight",
            "cost_gpu_hours",
            "--value",
            "value",
            "--budget",
            "100000",
            "--cover",
        ])
        .arg(&items)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("cannot be covered"));
}

/// `attnflow bench data --rows ROWS --rounds ROUNDS --no-pandera --json`,
/// which must succeed.
fn bench_data_json(rows: &str, rounds: &str) -> serde_json::Value {
    let output = attnflow()
        .args([
            "bench",
            "data",
            "--no-pandera",
            "--json",
            "--rows",
            rows,
            "--rounds",
            rounds,
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    json(&output.stdout)
}

#[test]
fn bench_data_checks_the_generated_file() {
    let report = bench_data_json("3000", "1");
    assert_eq!(report["rounds"].as_array().unwrap().len(), 1);
    assert!(report["machine"]["cores"].as_u64().unwrap() >= 1);
    let report = &report["rounds"][0];
    assert_eq!(report["rows"], 3000);
    // 3 rows over 997, 2 over 1009, 2 over 1013: planted, and all found.
    assert_eq!(report["expected_invalid"], 7);
    assert_eq!(report["attnflow"]["invalid_rows"], 7);
    assert_eq!(report["attnflow_with_store"]["invalid_rows"], 7);
    attnflow()
        .args(["bench", "data", "--rows", "0"])
        .assert()
        .code(2);
}

#[test]
fn bench_data_rounds_do_not_pile_up_memory() {
    // Each round checks into a fresh SQLite store whose page cache fills
    // in the writer thread's arena; a check hands it back when it ends.
    // Without that, four rounds of 200k rows grew by 40 MB (the growth
    // follows the store's size); with it, by under 10.
    let report = bench_data_json("400000", "4");
    let peak = |round: usize| report["rounds"][round]["peak_rss_bytes"].as_f64().unwrap() / 1e6;
    let (first, last) = (peak(0), peak(3));
    assert!(
        last < first + 30.0,
        "peak memory grew from {first:.1} MB after one round to {last:.1} MB after four"
    );
}

#[test]
fn bench_keep_leaves_a_file_the_bench_schema_checks() {
    let directory = tempfile::tempdir().unwrap();
    let kept = directory.path().join("kept");
    attnflow()
        .args([
            "bench",
            "data",
            "--rows",
            "1000",
            "--no-pandera",
            "--no-store",
            "--rounds",
            "1",
            "--keep",
        ])
        .arg(&kept)
        .assert()
        .success()
        .stdout(predicate::str::contains("rows/s"));
    attnflow()
        .args(["data", "check", "--dry-run"])
        .arg(examples().join("bench.toml"))
        .arg(kept.join("bench.csv"))
        .assert()
        .success()
        // Row 997 is the only planted fault below 1009.
        .stdout(predicate::str::contains(
            "read 1000 = accepted 999 + quarantined 1",
        ));
}

/// A check run loads SQLite in one rollback-journal transaction: killed
/// mid-load, it leaves the store as it was (the journal rolls the pages
/// back on the next open), and checking the same file again queues every
/// record once, as a first run would.
#[test]
fn a_check_killed_mid_load_leaves_nothing_and_a_rerun_queues_everything() {
    let directory = tempfile::tempdir().unwrap();
    let kept = directory.path().join("kept");
    attnflow()
        .args([
            "bench",
            "data",
            "--rows",
            "1500000",
            "--no-pandera",
            "--no-store",
        ])
        .args(["--rounds", "1", "--keep"])
        .arg(&kept)
        .assert()
        .success();
    let schema = examples().join("bench.toml");
    let csv = kept.join("bench.csv");
    let dry = attnflow()
        .args(["data", "check", "--dry-run"])
        .arg(&schema)
        .arg(&csv)
        .output()
        .unwrap();
    let summary = |stdout: &[u8]| {
        let text = String::from_utf8_lossy(stdout).into_owned();
        text.lines()
            .find(|line| line.contains("read "))
            .unwrap_or_else(|| panic!("no summary in {text}"))
            .trim()
            .to_string()
    };
    let want = summary(&dry.stdout);

    let db = directory.path().join("store.db");
    let journal = directory.path().join("store.db-journal");
    let mut child = std::process::Command::cargo_bin("attnflow")
        .unwrap()
        .args(["data", "check", "--db"])
        .arg(&db)
        .arg(&schema)
        .arg(&csv)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The journal exists only while the load's transaction is open.
    let started = std::time::Instant::now();
    while !journal.exists() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the load ended before it could be killed"
        );
        assert!(
            started.elapsed().as_secs() < 60,
            "no journal after a minute"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the load ended before it could be killed"
    );
    child.kill().unwrap();
    child.wait().unwrap();

    let output = attnflow()
        .args(["data", "quarantine", "--json", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(json(&output.stdout)["entries"].as_array().unwrap().len(), 0);
    assert!(
        !journal.exists(),
        "the hot journal was not rolled back on open"
    );

    let rerun = attnflow()
        .args(["data", "check", "--db"])
        .arg(&db)
        .arg(&schema)
        .arg(&csv)
        .output()
        .unwrap();
    assert!(
        rerun.status.success(),
        "{}",
        String::from_utf8_lossy(&rerun.stderr)
    );
    assert_eq!(summary(&rerun.stdout), want);
}
