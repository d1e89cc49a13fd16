//! `attnflow train` and `attnflow eval` on real files in a temp dir.

use std::path::PathBuf;

use assert_cmd::Command;
use predicates::prelude::*;

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn attnflow() -> Command {
    Command::cargo_bin("attnflow").unwrap()
}

const SMALL: [&str; 8] = [
    "--set",
    "d_model=32",
    "--set",
    "layers=1",
    "--length",
    "6",
    "--symbols",
    "6",
];

#[test]
fn train_then_resume_then_eval() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let spec = examples().join("train/reverse.toml");
    attnflow()
        .arg("train")
        .arg(&spec)
        .args([
            "--task",
            "reverse",
            "--steps",
            "8",
            "--eval-every",
            "4",
            "--lambda",
            "0.1",
        ])
        .args(SMALL)
        .arg("--out")
        .arg(&out)
        .assert()
        .success()
        .stdout(predicate::str::contains("reverse-encoder"))
        .stdout(predicate::str::contains("gradient flow"))
        .stdout(predicate::str::contains("block.0"));
    for file in [
        "checkpoint.json",
        "metrics.jsonl",
        "eval.jsonl",
        "grad_norms.jsonl",
        "report.json",
        "spec.toml",
    ] {
        assert!(out.join(file).exists(), "{file} missing");
    }
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 8);
    let first: serde_json::Value = serde_json::from_str(metrics.lines().next().unwrap()).unwrap();
    for key in ["loss", "regulariser", "objective"] {
        assert!(first[key].is_number(), "{key} not logged: {first}");
    }

    // Resume with a larger budget; --json gives the report.
    let output = attnflow()
        .arg("train")
        .arg(&spec)
        .args(["--task", "reverse", "--steps", "12", "--json", "--resume"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["step"], 12);
    assert_eq!(report["steps_this_run"], 4);

    let output = attnflow()
        .arg("eval")
        .arg(&out)
        .arg("--json")
        .output()
        .unwrap();
    assert!(output.status.success());
    let evaluation: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(evaluation["evaluation"]["step"], 12);
    assert!(evaluation["evaluation"]["sequence_accuracy"].is_number());
    attnflow()
        .arg("eval")
        .arg(&out)
        .assert()
        .success()
        .stdout(predicate::str::contains("seq accuracy"));

    // A fresh run refuses to overwrite the checkpoint.
    attnflow()
        .arg("train")
        .arg(&spec)
        .args(["--task", "reverse", "--steps", "2"])
        .args(SMALL)
        .arg("--out")
        .arg(&out)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("already holds a checkpoint"));
}

#[test]
fn bad_input_exits_2_with_the_problem_named() {
    let dir = tempfile::tempdir().unwrap();
    let spec = examples().join("train/reverse.toml");
    attnflow()
        .arg("train")
        .arg(&spec)
        .args(["--task", "revers"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("`revers` is not a task"));
    attnflow()
        .arg("train")
        .arg(&spec)
        .args(["--task", "copy", "--regulariser", "band:x"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("band:W"));
    attnflow()
        .arg("train")
        .arg(&spec)
        .args(["--task", "copy", "--set", "nope=3"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("nope"));
    attnflow()
        .arg("train")
        .arg(dir.path().join("missing.toml"))
        .args(["--task", "copy"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("missing.toml"));
    attnflow()
        .arg("eval")
        .arg(dir.path())
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no checkpoint"));
    // A flipped byte in a checkpoint.
    let out = dir.path().join("run");
    attnflow()
        .arg("train")
        .arg(&spec)
        .args(["--task", "copy", "--steps", "2"])
        .args(SMALL)
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("checkpoint.json")).unwrap())
            .unwrap();
    let weights = out.join(meta["weights"]["file"].as_str().unwrap());
    let mut bytes = std::fs::read(&weights).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(&weights, bytes).unwrap();
    attnflow()
        .arg("eval")
        .arg(&out)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("checksum mismatch"));
}

/// The tiny decoder sees 7 positions (2 layers of window 4): it cannot see
/// the mirror token of a 16-token reverse, 31 positions back. `train` says
/// so before any step, with both numbers and the fix; `--strict` refuses
/// with exit 2 and writes nothing.
#[test]
fn a_task_beyond_the_receptive_field_is_named_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let spec = examples().join("blueprints/tiny.toml");
    let refused = dir.path().join("refused");
    attnflow()
        .arg("train")
        .arg(&spec)
        .args(["--task", "reverse", "--strict", "--out"])
        .arg(&refused)
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "task `reverse` needs each output to see 31 position(s) back",
        ))
        .stderr(predicate::str::contains("reaches 6 back"))
        .stderr(predicate::str::contains("--set window=17"))
        .stderr(predicate::str::contains("--set layers=11"));
    assert!(!refused.exists(), "--strict must refuse before any output");

    let out = dir.path().join("warned");
    let output = attnflow()
        .arg("train")
        .arg(&spec)
        .args(["--task", "reverse", "--steps", "2", "--json", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.starts_with("warning: task `reverse` needs"),
        "{stderr}"
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["receptive_field"]["fits"], false);
    assert_eq!(report["receptive_field"]["needed_back"], 31);
    assert_eq!(report["receptive_field"]["available_back"], 6);

    // The fix works: with the window it names, the task fits.
    attnflow()
        .arg("train")
        .arg(&spec)
        .args([
            "--task",
            "reverse",
            "--strict",
            "--steps",
            "1",
            "--set",
            "window=17",
            "--out",
        ])
        .arg(dir.path().join("fixed"))
        .assert()
        .success()
        .stderr(predicate::str::contains("warning").not());
}
