//! `attnflow bench attention` on tiny sizes: the table, the JSON, the
//! PyTorch-missing path and bad flags. (Timings themselves are not checked:
//! tests must not depend on wall-clock speed.)

use assert_cmd::Command;
use predicates::prelude::*;

fn attnflow() -> Command {
    Command::cargo_bin("attnflow").unwrap()
}

#[test]
fn quick_run_prints_a_table_with_every_engine() {
    attnflow()
        .args([
            "bench",
            "attention",
            "--sizes",
            "64",
            "--quick",
            "--rounds",
            "1",
            "--heads",
            "2",
            "--python",
            "/nonexistent/python3",
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains("| 64 | fwd |"))
        .stdout(predicate::str::contains("| 64 | fwd+bwd |"))
        .stdout(predicate::str::contains("matmul ceiling"))
        .stdout(predicate::str::contains(
            "PyTorch not run: cannot run /nonexistent/python3",
        ));
}

#[test]
fn json_holds_measured_rows_and_skips_the_exact_path_over_its_memory_limit() {
    let output = attnflow()
        .args([
            "bench",
            "attention",
            "--sizes",
            "64,48",
            "--quick",
            "--no-torch",
            "--json",
            "--rounds",
            "1",
            "--exact-limit-gb",
            "0.0001",
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["ratios"].as_array().unwrap().len(), 4);
    let report = &report["rounds"][0];
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 4);
    for row in rows {
        assert_eq!(row["fused"]["status"], "measured", "{row}");
        assert!(row["fused"]["gflops"].as_f64().unwrap() > 0.0);
        assert!(row["fused"]["peak_rss_bytes"].as_u64().unwrap() > 0);
        assert_eq!(row["exact"]["status"], "skipped", "{row}");
        assert_eq!(row["torch"]["status"], "skipped", "{row}");
    }
    assert_eq!(rows[2]["n"], 48);
    assert_eq!(report["torch_note"], "PyTorch not requested");
    assert!(report["matmul_gflops"].as_f64().unwrap() > 0.0);
}

#[test]
fn bad_flags_exit_with_2_and_say_which() {
    for (args, message) in [
        (vec!["--sizes", "0"], "--sizes"),
        (vec!["--heads", "0"], "--heads"),
        (vec!["--exact-limit-gb=-1"], "--exact-limit-gb"),
        (vec!["--sizes", "abc"], "--sizes"),
    ] {
        attnflow()
            .args(["bench", "attention"])
            .args(&args)
            .assert()
            .code(2)
            .stderr(predicate::str::contains(message));
    }
    attnflow()
        .args(["bench", "attention", "--case", "{not json"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--case"));
}
