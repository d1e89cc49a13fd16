//! `attnflow bench train` at tiny sizes: attnflow's side always runs; the
//! PyTorch side is skipped with a note when its interpreter cannot import
//! torch, and runs interleaved with ours when it can.
//!
//! The interleaved test needs PyTorch (a 2.5 GB install from PyPI, which
//! `tools/test` does not make), so it is ignored by default and run with
//! `ATTNFLOW_TEST_PYTHON=/path/to/python cargo test -p attnflow-cli --test
//! train_bench -- --ignored`.

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

fn attnflow() -> Command {
    Command::cargo_bin("attnflow").unwrap()
}

#[test]
fn bench_train_runs_attnflow_and_notes_a_missing_pytorch() {
    let dir = tempfile::tempdir().unwrap();
    let python = dir.path().join("no-python-here");
    attnflow()
        .args(["bench", "train", "--rounds", "1"])
        .args(TINY)
        .arg("--python")
        .arg(&python)
        .assert()
        .success()
        .stdout(predicate::str::contains("size medium"))
        .stdout(predicate::str::contains("machine: "))
        .stdout(predicate::str::contains("PyTorch skipped"));
    let output = attnflow()
        .args(["bench", "train", "--no-torch", "--json", "--rounds", "1"])
        .args(TINY)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let round = &report["sizes"][0]["rounds"][0];
    assert_eq!(round["attnflow"]["tokens"], 2 * 2 * 8);
    assert!(round["attnflow"]["tokens_per_second"].as_f64().unwrap() > 0.0);
    assert!(round["pytorch"].is_null());
    assert!(report["sizes"][0]["ratios"][0]["ratio"].is_null());
    for (args, message) in [
        (vec!["--seq", "7"], "seq"),
        (vec!["--size", "huge"], "--size"),
        (vec!["--rounds", "0"], "--rounds"),
    ] {
        attnflow()
            .args(["bench", "train", "--no-torch"])
            .args(args)
            .assert()
            .code(2)
            .stderr(predicate::str::contains(message));
    }
}

#[test]
#[ignore = "needs a Python that can import torch: set ATTNFLOW_TEST_PYTHON and pass --ignored"]
fn bench_train_interleaves_rounds_with_pytorch_and_reports_the_machine() {
    let Some(python) = attnflow_testkit::torch_python() else {
        return;
    };
    let output = attnflow()
        .args([
            "bench", "train", "--rounds", "2", "--json", "--size", "small",
        ])
        .args(TINY)
        .arg("--python")
        .arg(&python)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let sizes = report["sizes"].as_array().unwrap();
    assert_eq!(sizes.len(), 1);
    let size = &sizes[0];
    assert_eq!(size["size"], "small");

    let machine = &size["machine"];
    assert!(!machine["cpu_model"].as_str().unwrap().is_empty());
    assert!(machine["cores"].as_u64().unwrap() >= 1);
    assert!(!machine["simd_path"].as_str().unwrap().is_empty());
    assert!(machine["attnflow_matmul_gflops"].as_f64().unwrap() > 0.0);
    assert!(machine["pytorch_matmul_gflops"].as_f64().unwrap() > 0.0);
    assert!(machine["load_before"].as_f64().unwrap() >= 0.0);
    assert!(machine["load_after"].as_f64().unwrap() >= 0.0);

    let rounds = size["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 2);
    let mut ratios = Vec::new();
    for round in rounds {
        for side in ["attnflow", "pytorch"] {
            assert_eq!(round[side]["tokens"], 2 * 2 * 8, "{side}: {round}");
            assert!(round[side]["last_loss"].as_f64().unwrap().is_finite());
        }
        ratios.push(round["ratio"].as_f64().unwrap());
    }
    // The same flags on both sides: the size's preset with the overrides.
    assert_eq!(rounds[0]["options"]["layers"], 2);
    assert_eq!(rounds[0]["options"]["d_model"], 16);

    let tokens = &size["ratios"][0];
    assert_eq!(tokens["label"], "tokens/s");
    let spread = &tokens["ratio"];
    let values: Vec<f64> = spread["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|value| value.as_f64().unwrap())
        .collect();
    assert_eq!(values, ratios);
    let (min, max) = (ratios[0].min(ratios[1]), ratios[0].max(ratios[1]));
    assert_eq!(spread["min"].as_f64().unwrap(), min);
    assert_eq!(spread["max"].as_f64().unwrap(), max);
    assert!((spread["median"].as_f64().unwrap() - (min + max) / 2.0).abs() < 1e-12);
}
