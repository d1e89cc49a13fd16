//! `attnflow embed` on real files, good and bad. The tests that need
//! all-MiniLM-L6-v2 read `ATTNFLOW_TEST_MODEL_DIR` (set by `.ci/run`); the
//! refusals run on a broken copy of a tiny model directory written here.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use candle_core::Device;
use predicates::prelude::*;

fn attnflow() -> Command {
    Command::cargo_bin("attnflow").expect("binary builds")
}

/// The unpacked all-MiniLM-L6-v2 directory (`attnflow_testkit`: fails when
/// missing, unless the run opted out of models).
fn model_dir(_test: &str) -> Option<PathBuf> {
    attnflow_testkit::model(attnflow_testkit::Model::MiniLm)
}

fn golden_embeddings() -> (Vec<String>, Vec<Vec<f32>>) {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../attnflow-models/tests/fixtures");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures.join("bert_golden.json")).unwrap())
            .unwrap();
    let texts = meta["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|case| case["text"].as_str().unwrap().to_string())
        .collect();
    let tensors =
        candle_core::safetensors::load(fixtures.join("bert_golden.safetensors"), &Device::Cpu)
            .unwrap();
    (
        texts,
        tensors["sentences.embeddings"].to_vec2::<f32>().unwrap(),
    )
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

#[test]
fn jsonl_matches_sentence_transformers() {
    let Some(model) = model_dir("jsonl_matches_sentence_transformers") else {
        return;
    };
    let (texts, expected) = golden_embeddings();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("texts.txt");
    // CRLF endings and no final newline are both fine.
    std::fs::write(&input, texts.join("\r\n")).unwrap();
    let output = dir.path().join("out.jsonl");
    attnflow()
        .args(["embed", "--batch-size", "3", "--model"])
        .arg(&model)
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(&output)
        .assert()
        .success()
        .stdout(predicate::str::contains(format!(
            "embedded {} texts",
            texts.len()
        )))
        .stdout(predicate::str::contains(
            "1 texts were cut to 256 tokens (lines 7)",
        ))
        .stdout(predicate::str::contains("lines are empty"))
        .stdout(predicate::str::contains("texts/s"));
    let written = std::fs::read_to_string(&output).unwrap();
    let lines: Vec<serde_json::Value> = written
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), texts.len());
    for (index, line) in lines.iter().enumerate() {
        assert_eq!(line["line"], index + 1);
        assert_eq!(line["text"], texts[index].as_str());
        let embedding: Vec<f32> = serde_json::from_value(line["embedding"].clone()).unwrap();
        assert_eq!(embedding.len(), 384);
        let similarity = cosine(&embedding, &expected[index]);
        assert!(
            similarity > 0.9999,
            "line {}: cosine {similarity}",
            index + 1
        );
    }
    assert_eq!(lines[6]["truncated"], true);
    assert_eq!(lines[6]["tokens"], 256);
}

#[test]
fn safetensors_output_and_json_summary() {
    let Some(model) = model_dir("safetensors_output_and_json_summary") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("texts.txt");
    std::fs::write(
        &input,
        "A man is eating food.\nA man is eating a meal.\nThe sky is blue.\n",
    )
    .unwrap();
    let output = dir.path().join("out.safetensors");
    let assert = attnflow()
        .args(["embed", "--format", "safetensors", "--json", "--model"])
        .arg(&model)
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(&output)
        .assert()
        .success();
    let summary: serde_json::Value = serde_json::from_slice(&assert.get_output().stdout).unwrap();
    assert_eq!(summary["texts"], 3);
    assert_eq!(summary["pooling"], "mean");
    assert_eq!(summary["normalized"], true);
    let tensors = candle_core::safetensors::load(&output, &Device::Cpu).unwrap();
    let embeddings = tensors["embeddings"].to_vec2::<f32>().unwrap();
    assert_eq!(embeddings.len(), 3);
    // Paraphrases sit closer than unrelated sentences.
    assert!(cosine(&embeddings[0], &embeddings[1]) > cosine(&embeddings[0], &embeddings[2]) + 0.3);
    assert_eq!(tensors["token_counts"].to_vec1::<u32>().unwrap(), [8, 9, 7]);
}

#[test]
fn jsonl_to_stdout_keeps_the_summary_on_stderr() {
    let Some(model) = model_dir("jsonl_to_stdout_keeps_the_summary_on_stderr") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("texts.txt");
    std::fs::write(&input, "hello\nworld\n").unwrap();
    let assert = attnflow()
        .args(["embed", "--model"])
        .arg(&model)
        .arg("--input")
        .arg(&input)
        .assert()
        .success()
        .stderr(predicate::str::contains("embedded 2 texts"));
    let stdout = String::from_utf8(assert.get_output().stdout.clone()).unwrap();
    assert_eq!(stdout.lines().count(), 2);
    for line in stdout.lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap();
    }
}

/// A directory that looks like a model but is broken in one way.
fn broken_model(dir: &Path, config: &str, tensors: &[(&str, Vec<usize>)]) -> PathBuf {
    let model = dir.join("model");
    std::fs::create_dir_all(&model).unwrap();
    std::fs::write(model.join("config.json"), config).unwrap();
    std::fs::write(
        model.join("tokenizer.json"),
        r###"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,
            "pre_tokenizer":{"type":"BertPreTokenizer"},"post_processor":null,"decoder":null,
            "model":{"type":"WordPiece","unk_token":"[UNK]","continuing_subword_prefix":"##",
                     "max_input_chars_per_word":100,"vocab":{"[PAD]":0,"[UNK]":1,"hello":2}}}"###,
    )
    .unwrap();
    let map: std::collections::HashMap<String, candle_core::Tensor> = tensors
        .iter()
        .map(|(name, shape)| {
            let tensor =
                candle_core::Tensor::zeros(shape.as_slice(), candle_core::DType::F32, &Device::Cpu)
                    .unwrap();
            (name.to_string(), tensor)
        })
        .collect();
    candle_core::safetensors::save(&map, model.join("model.safetensors")).unwrap();
    model
}

const TINY_CONFIG: &str = r#"{
  "model_type": "bert",
  "architectures": ["BertModel"],
  "hidden_size": 4, "num_attention_heads": 2, "num_hidden_layers": 1,
  "intermediate_size": 8, "max_position_embeddings": 16, "vocab_size": 3
}"#;

fn embed_fails(model: &Path, input: &Path) -> assert_cmd::assert::Assert {
    attnflow()
        .args(["embed", "--model"])
        .arg(model)
        .arg("--input")
        .arg(input)
        .assert()
}

#[test]
fn refuses_bad_models_and_inputs_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("texts.txt");
    std::fs::write(&input, "hello\n").unwrap();

    embed_fails(&dir.path().join("no-such-model"), &input)
        .code(2)
        .stderr(predicate::str::contains(
            "no-such-model: not a model directory",
        ));

    let model = broken_model(
        dir.path(),
        TINY_CONFIG,
        &[("embeddings.word_embeddings.weight", vec![3, 4])],
    );
    embed_fails(&model, &input)
        .code(2)
        .stderr(predicate::str::contains(
            "model.safetensors: missing tensor `embeddings.position_embeddings.weight`",
        ));

    let model = broken_model(
        dir.path(),
        TINY_CONFIG,
        &[("embeddings.word_embeddings.weight", vec![4, 3])],
    );
    embed_fails(&model, &input).code(2).stderr(predicate::str::contains(
        "tensor `embeddings.word_embeddings.weight` has shape [4, 3], but config.json implies [3, 4]",
    ));

    let model = broken_model(
        dir.path(),
        "{\"model_type\": \"bert\",\n \"hidden_size\": }",
        &[],
    );
    embed_fails(&model, &input)
        .code(2)
        .stderr(predicate::str::contains("config.json:2:17: invalid JSON"));

    let model = broken_model(
        dir.path(),
        r#"{"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}"#,
        &[],
    );
    embed_fails(&model, &input)
        .code(2)
        .stderr(predicate::str::contains(
            "unsupported architecture model_type \"gpt2\"",
        ));

    let model = broken_model(
        dir.path(),
        &TINY_CONFIG.replace("\"hidden_size\": 4,", ""),
        &[],
    );
    embed_fails(&model, &input)
        .code(2)
        .stderr(predicate::str::contains(
            "field `hidden_size`: required, but absent",
        ));

    std::fs::remove_file(model.join("tokenizer.json")).unwrap();
    embed_fails(&model, &input)
        .code(2)
        .stderr(predicate::str::contains("tokenizer.json: missing"));

    // Input faults are found before the model is read.
    let bad_text = dir.path().join("bad.txt");
    std::fs::write(&bad_text, b"fine\nbro\xffken\n").unwrap();
    embed_fails(&model, &bad_text)
        .code(2)
        .stderr(predicate::str::contains("bad.txt:2:4: not valid UTF-8"));
    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, b"").unwrap();
    embed_fails(&model, &empty)
        .code(2)
        .stderr(predicate::str::contains("is empty"));
    embed_fails(&model, &dir.path().join("absent.txt"))
        .code(2)
        .stderr(predicate::str::contains("cannot read"));
    attnflow()
        .args(["embed", "--format", "safetensors", "--model"])
        .arg(&model)
        .arg("--input")
        .arg(&input)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--output"));
    attnflow()
        .args(["embed", "--batch-size", "0", "--model"])
        .arg(&model)
        .arg("--input")
        .arg(&input)
        .assert()
        .code(2);
}

#[test]
fn bench_embed_reports_throughput_and_a_missing_peer() {
    let Some(model) = model_dir("bench_embed_reports_throughput_and_a_missing_peer") else {
        return;
    };
    let assert = attnflow()
        .args([
            "bench",
            "embed",
            "--texts",
            "12",
            "--batch-size",
            "5",
            "--json",
            "--rounds",
            "2",
        ])
        .args(["--python", "/nonexistent/python3", "--model"])
        .arg(&model)
        .assert()
        .success();
    let report: serde_json::Value = serde_json::from_slice(&assert.get_output().stdout).unwrap();
    assert_eq!(report["rounds"].as_array().unwrap().len(), 2);
    assert!(report["ratios"][0]["ratio"].is_null());
    let report = &report["rounds"][1];
    assert_eq!(report["texts"], 12);
    assert!(report["attnflow_texts_per_second"].as_f64().unwrap() > 0.0);
    assert_eq!(report["peer"]["status"], "skipped");
    assert!(report["peer"]["reason"]
        .as_str()
        .unwrap()
        .contains("cannot start /nonexistent/python3"));
    assert!(report["ratio"].is_null());
    attnflow()
        .args([
            "bench",
            "embed",
            "--texts",
            "3",
            "--no-python",
            "--rounds",
            "1",
        ])
        .arg("--model")
        .arg(&model)
        .assert()
        .success()
        .stdout(predicate::str::contains("attnflow").and(predicate::str::contains("texts/s")))
        .stdout(predicate::str::contains("not run: skipped by request"));
    attnflow()
        .args(["bench", "embed", "--texts", "0", "--model"])
        .arg(&model)
        .assert()
        .code(2);
}
