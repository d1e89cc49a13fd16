//! `attnflow blueprint ... DIR` on a Hugging Face model directory: the
//! blueprint derived from its config.json by attnflow-models.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use candle_core::{DType, Device, Tensor};
use predicates::prelude::*;

fn attnflow() -> Command {
    Command::cargo_bin("attnflow").expect("binary builds")
}

/// The total parameter count `blueprint cost --json` reports for `spec`.
fn cost_params(spec: &Path) -> u64 {
    let assert = attnflow()
        .args(["blueprint", "cost", "--json"])
        .arg(spec)
        .assert()
        .success();
    let account: serde_json::Value = serde_json::from_slice(&assert.get_output().stdout).unwrap();
    account["total"]["params"].as_u64().unwrap()
}

/// A small consistent BERT directory (zeros for weights: only names and
/// shapes matter to the blueprint); returns it and its tensors.
fn tiny_model(dir: &Path, with_pooler: bool) -> (PathBuf, HashMap<String, Tensor>) {
    let model = dir.join(if with_pooler {
        "tiny"
    } else {
        "tiny-no-pooler"
    });
    std::fs::create_dir_all(&model).unwrap();
    std::fs::write(
        model.join("config.json"),
        r#"{"model_type": "bert", "architectures": ["BertModel"], "hidden_size": 4,
            "num_attention_heads": 2, "num_hidden_layers": 1, "intermediate_size": 8,
            "max_position_embeddings": 16, "vocab_size": 3, "type_vocab_size": 2}"#,
    )
    .unwrap();
    std::fs::write(model.join("tokenizer.json"), "{}").unwrap();
    let mut shapes: Vec<(String, Vec<usize>)> = [
        ("embeddings.word_embeddings.weight", vec![3, 4]),
        ("embeddings.position_embeddings.weight", vec![16, 4]),
        ("embeddings.token_type_embeddings.weight", vec![2, 4]),
        ("embeddings.LayerNorm.weight", vec![4]),
        ("embeddings.LayerNorm.bias", vec![4]),
        ("encoder.layer.0.attention.self.query.weight", vec![4, 4]),
        ("encoder.layer.0.attention.self.query.bias", vec![4]),
        ("encoder.layer.0.attention.self.key.weight", vec![4, 4]),
        ("encoder.layer.0.attention.self.key.bias", vec![4]),
        ("encoder.layer.0.attention.self.value.weight", vec![4, 4]),
        ("encoder.layer.0.attention.self.value.bias", vec![4]),
        ("encoder.layer.0.attention.output.dense.weight", vec![4, 4]),
        ("encoder.layer.0.attention.output.dense.bias", vec![4]),
        ("encoder.layer.0.attention.output.LayerNorm.weight", vec![4]),
        ("encoder.layer.0.attention.output.LayerNorm.bias", vec![4]),
        ("encoder.layer.0.intermediate.dense.weight", vec![8, 4]),
        ("encoder.layer.0.intermediate.dense.bias", vec![8]),
        ("encoder.layer.0.output.dense.weight", vec![4, 8]),
        ("encoder.layer.0.output.dense.bias", vec![4]),
        ("encoder.layer.0.output.LayerNorm.weight", vec![4]),
        ("encoder.layer.0.output.LayerNorm.bias", vec![4]),
    ]
    .into_iter()
    .map(|(name, shape)| (name.to_string(), shape))
    .collect();
    if with_pooler {
        shapes.push(("pooler.dense.weight".to_string(), vec![4, 4]));
        shapes.push(("pooler.dense.bias".to_string(), vec![4]));
    }
    let tensors: HashMap<String, Tensor> = shapes
        .into_iter()
        .map(|(name, shape)| {
            (
                name,
                Tensor::zeros(shape, DType::F32, &Device::Cpu).unwrap(),
            )
        })
        .collect();
    candle_core::safetensors::save(&tensors, model.join("model.safetensors")).unwrap();
    (model, tensors)
}

#[test]
fn cost_of_a_model_directory_counts_its_tensors() {
    let dir = tempfile::tempdir().unwrap();
    for with_pooler in [true, false] {
        let (model, tensors) = tiny_model(dir.path(), with_pooler);
        let stored: usize = tensors.values().map(Tensor::elem_count).sum();
        assert_eq!(cost_params(&model), stored as u64, "pooler: {with_pooler}");
    }
    let (model, _) = tiny_model(dir.path(), true);
    attnflow()
        .args(["blueprint", "cost", "--set", "seq=8"])
        .arg(&model)
        .assert()
        .success()
        .stdout(predicate::str::contains("tiny:").and(predicate::str::contains("seq=8")));
    attnflow()
        .args(["blueprint", "check"])
        .arg(&model)
        .assert()
        .success();
}

#[test]
fn refuses_broken_model_directories() {
    let dir = tempfile::tempdir().unwrap();
    let (model, _) = tiny_model(dir.path(), true);
    std::fs::write(model.join("config.json"), r#"{"model_type": "mamba"}"#).unwrap();
    attnflow()
        .args(["blueprint", "cost"])
        .arg(&model)
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "config.json: unsupported architecture",
        ));
    std::fs::remove_file(model.join("model.safetensors")).unwrap();
    attnflow()
        .args(["blueprint", "cost"])
        .arg(&model)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("model.safetensors: missing"));
}

#[test]
fn minilm_has_its_published_parameter_count() {
    let Some(model) = attnflow_testkit::model(attnflow_testkit::Model::MiniLm) else {
        return;
    };
    assert_eq!(cost_params(Path::new(&model)), 22_713_216);
}
