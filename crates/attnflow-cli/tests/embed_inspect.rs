//! `attnflow attention inspect --model DIR --text ...`: the attention report
//! on a real pretrained model, labelled with its word pieces.

use std::path::PathBuf;

use assert_cmd::Command;
use predicates::prelude::*;

fn attnflow() -> Command {
    Command::cargo_bin("attnflow").expect("binary builds")
}

/// The unpacked all-MiniLM-L6-v2 directory (`attnflow_testkit`: fails when
/// missing, unless the run opted out of models).
fn model_dir(_test: &str) -> Option<PathBuf> {
    attnflow_testkit::model(attnflow_testkit::Model::MiniLm)
}

#[test]
fn inspects_minilm_with_word_piece_labels() {
    let Some(model) = model_dir("inspects_minilm_with_word_piece_labels") else {
        return;
    };
    let out = tempfile::tempdir().unwrap();
    attnflow()
        .args([
            "attention",
            "inspect",
            "--text",
            "Café crème, déjà vu.",
            "--model",
        ])
        .arg(&model)
        .arg("--out")
        .arg(out.path())
        .assert()
        .success()
        .stdout(predicate::str::contains("6 layers × 12 heads"));
    let statistics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("statistics.json")).unwrap())
            .unwrap();
    // The tokenizer's word pieces (as transformers gives them), not characters.
    assert_eq!(
        statistics["tokens"],
        serde_json::json!(["[CLS]", "cafe", "cr", "##eme", ",", "de", "##ja", "vu", ".", "[SEP]"])
    );
    assert_eq!(statistics["heads"].as_array().unwrap().len(), 6 * 12);
    let rollout: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("rollout.json")).unwrap())
            .unwrap();
    for row in rollout["rollout"].as_array().unwrap() {
        let sum: f64 = row
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .sum();
        assert!((sum - 1.0).abs() < 1e-6, "rollout row sums to {sum}");
    }
    let report = std::fs::read_to_string(out.path().join("report.html")).unwrap();
    assert!(report.contains("##eme"));
}

#[test]
fn refuses_model_misuse_with_exit_2() {
    let out = tempfile::tempdir().unwrap();
    attnflow()
        .args([
            "attention",
            "inspect",
            "--model",
            "/nonexistent/model",
            "--text",
            "hi",
            "--out",
        ])
        .arg(out.path())
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "/nonexistent/model: not a model directory",
        ));
    attnflow()
        .args([
            "attention",
            "inspect",
            "--model",
            "/nonexistent/model",
            "--out",
        ])
        .arg(out.path())
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--text"));
}
