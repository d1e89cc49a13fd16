//! `attnflow bench train` at tiny sizes: attnflow's side always runs; the
//! PyTorch side is skipped with a note when its interpreter cannot import
//! torch.

use assert_cmd::Command;
use predicates::prelude::*;

const TINY: [&str; 14] = [
    "--steps",
    "2",
    "--warmup-steps",
    "1",
    "--d-model",
    "16",
    "--d-ff",
    "32",
    "--heads",
    "2",
    "--seq",
    "8",
    "--batch",
    "2",
];

#[test]
fn bench_train_runs_attnflow_and_notes_a_missing_pytorch() {
    let dir = tempfile::tempdir().unwrap();
    let python = dir.path().join("no-python-here");
    Command::cargo_bin("attnflow")
        .unwrap()
        .args(["bench", "train"])
        .args(TINY)
        .arg("--python")
        .arg(&python)
        .assert()
        .success()
        .stdout(predicate::str::contains("attnflow"))
        .stdout(predicate::str::contains("PyTorch skipped"));
    let output = Command::cargo_bin("attnflow")
        .unwrap()
        .args(["bench", "train", "--no-torch", "--json"])
        .args(TINY)
        .output()
        .unwrap();
    assert!(output.status.success());
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["attnflow"]["tokens"], 2 * 2 * 8);
    assert!(report["attnflow"]["tokens_per_second"].as_f64().unwrap() > 0.0);
    assert!(report["pytorch"].is_null());
    Command::cargo_bin("attnflow")
        .unwrap()
        .args(["bench", "train", "--seq", "7", "--no-torch"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("seq"));
}
