//! Decoders through the real binary: `generate` on SmolLM2, the attention
//! report of a decoder (opened in headless Chromium), `--save-weights`
//! read back, `eval-lm`, `blueprint cost` of a GGUF file, and a refusal
//! with exit 2 naming the file and the key or tensor for every class of
//! broken GGUF file.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use predicates::prelude::*;

fn attnflow() -> Command {
    Command::cargo_bin("attnflow").expect("binary builds")
}

fn smollm2() -> Option<PathBuf> {
    attnflow_testkit::model(attnflow_testkit::Model::SmolLm2)
}

/// The tiny GGUF that `tools/make_decoder_fixtures.py` writes (every
/// tensor type, a llama-bpe tokenizer in its metadata).
fn tiny_gguf() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../attnflow-models/tests/fixtures/decoders/tiny-llama-gguf/model.gguf")
}

fn tiny_directory(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../attnflow-models/tests/fixtures/decoders")
        .join(name)
}

/// The JSON a successful command printed (its stderr shown if it failed).
fn json_stdout(output: std::process::Output) -> serde_json::Value {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn json_file(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn smollm2_knows_the_capital_of_france() {
    let Some(model) = smollm2() else { return };
    attnflow()
        .args([
            "generate",
            "--prompt",
            "The capital of France is",
            "--max-tokens",
            "4",
            "--model",
        ])
        .arg(&model)
        .assert()
        .success()
        .stdout(predicate::str::starts_with(
            "The capital of France is Paris",
        ))
        .stderr(predicate::str::contains("tokens/s"));
    let output = attnflow()
        .args([
            "generate",
            "--json",
            "--prompt",
            "The capital of France is",
            "--max-tokens",
            "4",
            "--model",
        ])
        .arg(&model)
        .output()
        .unwrap();
    assert!(output.status.success());
    let value: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(
        value["text"].as_str().unwrap().starts_with(" Paris"),
        "{value}"
    );
    assert_eq!(
        value["prompt_ids"],
        serde_json::json!([504, 3575, 282, 4649, 314])
    );
    assert!(value["decode"]["tokens_per_second"].as_f64().unwrap() > 0.0);
}

/// Opens a report in headless Chromium: no console or script errors, and
/// the attention explorer redraws when its head selector changes.
fn opens_in_headless_chromium(report: &Path) {
    let Some(browser) = attnflow_testkit::chromium() else {
        return;
    };
    let page = browser.dump_dom(&format!("file://{}#selftest", report.display()), 5000);
    assert!(page.success, "chromium failed: {}", page.log);
    assert!(
        page.console_errors().is_empty(),
        "console errors: {}",
        page.log
    );
    assert!(
        !page.dom.contains("data-errors"),
        "script errors: {}",
        page.dom
    );
    assert!(
        page.dom.contains("data-selftest=\"view-changed\""),
        "the attention explorer did not redraw"
    );
}

#[test]
fn inspects_smollm2_with_kv_groups_and_saves_the_weights() {
    let Some(model) = smollm2() else { return };
    let out = tempfile::tempdir().unwrap();
    let output = attnflow()
        .args([
            "attention",
            "inspect",
            "--json",
            "--save-weights",
            "--text",
            "The capital of France is Paris.",
            "--model",
        ])
        .arg(&model)
        .arg("--out")
        .arg(out.path())
        .output()
        .unwrap();
    let summary = json_stdout(output);
    assert_eq!(
        (summary["layers"].as_u64(), summary["heads"].as_u64()),
        (Some(30), Some(9))
    );
    let statistics = json_file(&out.path().join("statistics.json"));
    assert_eq!(statistics["tokens"][1], " capital");
    let heads = statistics["heads"].as_array().unwrap();
    assert_eq!(heads.len(), 30 * 9);
    // 9 query heads share 3 key/value heads, three each.
    let groups: Vec<u64> = statistics["kv_groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|group| group.as_u64().unwrap())
        .collect();
    assert_eq!(groups, [0, 0, 0, 1, 1, 1, 2, 2, 2]);
    let report = std::fs::read_to_string(out.path().join("report.html")).unwrap();
    assert!(report.contains("heads 0–2 → KV 0"));
    opens_in_headless_chromium(&out.path().join("report.html"));

    // The saved maps are (layers, heads, n, n) and read back as a weights
    // file to the same statistics.
    let saved = out.path().join("attention.safetensors");
    let tensors = candle_core::safetensors::load(&saved, &candle_core::Device::Cpu).unwrap();
    let n = statistics["tokens"].as_array().unwrap().len();
    assert_eq!(tensors["attentions"].dims(), &[30, 9, n, n]);
    let again = tempfile::tempdir().unwrap();
    attnflow()
        .args(["attention", "inspect"])
        .arg(&saved)
        .arg("--out")
        .arg(again.path())
        .assert()
        .success();
    let reread = json_file(&again.path().join("statistics.json"));
    for (a, b) in heads.iter().zip(reread["heads"].as_array().unwrap()) {
        for field in ["mean_entropy", "first_token_share", "diagonal_share"] {
            let (x, y) = (a[field].as_f64().unwrap(), b[field].as_f64().unwrap());
            assert!((x - y).abs() < 1e-6, "{field}: {x} vs {y}");
        }
    }
}

#[test]
fn generate_writes_the_report_over_prompt_and_new_tokens() {
    let out = tempfile::tempdir().unwrap();
    let output = attnflow()
        .args([
            "generate",
            "--json",
            "--prompt",
            "The quick brown fox",
            "--max-tokens",
            "5",
            "--model",
        ])
        .arg(tiny_directory("llama"))
        .arg("--inspect")
        .arg(out.path())
        .output()
        .unwrap();
    let value = json_stdout(output);
    let total = value["prompt_ids"].as_array().unwrap().len()
        + value["generated_ids"].as_array().unwrap().len();
    let statistics = json_file(&out.path().join("statistics.json"));
    assert_eq!(statistics["tokens"].as_array().unwrap().len(), total);
    assert!(out.path().join("report.html").is_file());
    opens_in_headless_chromium(&out.path().join("report.html"));
}

#[test]
fn eval_lm_scores_a_text_with_a_sliding_window() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("text.txt");
    std::fs::write(
        &text,
        "The quick brown fox jumps over the lazy dog. ".repeat(8),
    )
    .unwrap();
    let output = attnflow()
        .args([
            "eval-lm",
            "--json",
            "--context",
            "32",
            "--stride",
            "16",
            "--model",
        ])
        .arg(tiny_directory("gpt2"))
        .arg("--text")
        .arg(&text)
        .output()
        .unwrap();
    let value = json_stdout(output);
    let report = &value["report"];
    let tokens = report["tokens"].as_u64().unwrap();
    assert_eq!(report["scored"].as_u64().unwrap(), tokens - 1);
    assert!(report["windows"].as_u64().unwrap() > 1);
    let perplexity = report["perplexity"].as_f64().unwrap();
    assert!(perplexity.is_finite() && perplexity > 1.0);
    attnflow()
        .args(["eval-lm", "--context", "100000", "--model"])
        .arg(tiny_directory("gpt2"))
        .arg("--text")
        .arg(&text)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("context"));
}

#[test]
fn blueprint_cost_of_a_gguf_file() {
    let Some(model) = smollm2() else { return };
    let output = attnflow()
        .args(["blueprint", "cost", "--json", "--context", "1000"])
        .arg(&model)
        .output()
        .unwrap();
    let value = json_stdout(output);
    assert_eq!(value["total"]["params"], 134_515_008u64);
    // 2 · 30 layers · 3 KV heads · 64 · 4 bytes.
    assert_eq!(value["inference"]["kv_cache_bytes_per_token"], 46_080u64);
    assert_eq!(value["inference"]["kv_cache_bytes"], 46_080_000u64);
    attnflow()
        .args(["blueprint", "cost"])
        .arg(tiny_directory("qwen2"))
        .assert()
        .success()
        .stdout(predicate::str::contains("KV cache per token"));
}

/// The bytes of the tiny GGUF with `edit` applied, written to a temp file.
fn broken(dir: &Path, name: &str, edit: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let mut bytes = std::fs::read(tiny_gguf()).unwrap();
    edit(&mut bytes);
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Where `needle` first occurs in `bytes`.
fn find(bytes: &[u8], needle: &[u8]) -> usize {
    bytes
        .windows(needle.len())
        .position(|window| window == needle)
        .unwrap_or_else(|| panic!("{:?} not in the file", String::from_utf8_lossy(needle)))
}

/// The offset of the type id of tensor `name` in the header's tensor table.
fn type_offset(bytes: &[u8], name: &str) -> usize {
    // The tensor table entry: u64 name length, the name, u32 dims, u64 per
    // dim, then the u32 type.
    let mut entry = (name.len() as u64).to_le_bytes().to_vec();
    entry.extend_from_slice(name.as_bytes());
    let start = find(bytes, &entry) + entry.len();
    let dims = u32::from_le_bytes(bytes[start..start + 4].try_into().unwrap()) as usize;
    start + 4 + 8 * dims
}

fn refuses(path: &Path, needles: &[&str]) {
    let output = attnflow()
        .args(["generate", "--prompt", "hi", "--model"])
        .arg(path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&path.display().to_string()),
        "names the file: {stderr}"
    );
    for needle in needles {
        assert!(stderr.contains(needle), "mentions {needle:?}: {stderr}");
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn broken_gguf_files_exit_2_naming_the_key_or_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let size = std::fs::metadata(tiny_gguf()).unwrap().len() as usize;
    // Not GGUF at all.
    refuses(
        &broken(dir.path(), "not.gguf", |bytes| {
            bytes[..4].copy_from_slice(b"PK\x03\x04")
        }),
        &["not a GGUF file"],
    );
    // Cut in the tensor data: the last tensor no longer fits.
    refuses(
        &broken(dir.path(), "cut.gguf", |bytes| bytes.truncate(size - 100)),
        &["truncated", "tensor `"],
    );
    // Cut inside the header's metadata.
    refuses(
        &broken(dir.path(), "header.gguf", |bytes| {
            let at = find(bytes, b"tokenizer.ggml.merges");
            bytes.truncate(at + 40);
        }),
        &["key `tokenizer.ggml.merges`"],
    );
    // Unknown architecture (same length, so the file stays well formed).
    refuses(
        &broken(dir.path(), "arch.gguf", |bytes| {
            // key, u32 type (string), u64 length, then the value.
            let key = b"general.architecture";
            let at = find(bytes, key) + key.len() + 4 + 8;
            assert_eq!(&bytes[at..at + 5], b"llama");
            bytes[at..at + 5].copy_from_slice(b"mamba");
        }),
        &["key `general.architecture`", "mamba"],
    );
    // An unknown quantisation type id.
    refuses(
        &broken(dir.path(), "type.gguf", |bytes| {
            let at = type_offset(bytes, "blk.1.ffn_up.weight");
            bytes[at..at + 4].copy_from_slice(&99u32.to_le_bytes());
        }),
        &["tensor `blk.1.ffn_up.weight`", "quantisation type 99"],
    );
    // A required key renamed away.
    refuses(
        &broken(dir.path(), "key.gguf", |bytes| {
            let at = find(bytes, b"llama.block_count");
            bytes[at..at + 5].copy_from_slice(b"xxxxx");
        }),
        &["key `llama.block_count`"],
    );
    // A tensor renamed away.
    refuses(
        &broken(dir.path(), "tensor.gguf", |bytes| {
            let at = find(bytes, b"blk.0.attn_v.weight");
            bytes[at..at + 3].copy_from_slice(b"xxx");
        }),
        &["blk.0.attn_v.weight"],
    );
    // A tensor whose shape does not fit the metadata.
    refuses(
        &broken(dir.path(), "width.gguf", |bytes| {
            let at = find(bytes, b"llama.feed_forward_length");
            let value = at + "llama.feed_forward_length".len() + 4;
            bytes[value..value + 4].copy_from_slice(&128u32.to_le_bytes());
        }),
        &["tensor `blk.0.ffn_gate.weight`", "[128, 64]"],
    );
}

#[test]
fn decoder_misuse_exits_2() {
    attnflow()
        .args(["generate", "--prompt", "hi", "--temperature=-1", "--model"])
        .arg(tiny_gguf())
        .assert()
        .code(2)
        .stderr(predicate::str::contains("temperature"));
    attnflow()
        .args([
            "generate",
            "--prompt",
            "hi",
            "--model",
            "/nonexistent/model.gguf",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("/nonexistent/model.gguf"));
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("empty.txt");
    std::fs::write(&text, "").unwrap();
    attnflow()
        .args(["eval-lm", "--model"])
        .arg(tiny_gguf())
        .arg("--text")
        .arg(&text)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("empty.txt"));
}

#[test]
fn bench_generate_reports_the_machine_and_both_cases() {
    let output = attnflow()
        .args([
            "bench",
            "generate",
            "--no-python",
            "--json",
            "--rounds",
            "2",
            "--prompt-tokens",
            "12",
            "--decode-prompt-tokens",
            "4",
            "--decode-tokens",
            "3",
            "--model",
        ])
        .arg(tiny_gguf())
        .output()
        .unwrap();
    let report = json_stdout(output);
    // The machine as every bench prints it: cores, SIMD path, attnflow's
    // matmul ceiling and the load average on both sides of the rounds.
    let machine = &report["machine"];
    assert!(machine["cores"].as_u64().unwrap() >= 1, "{machine}");
    assert!(machine["attnflow_matmul_gflops"].as_f64().unwrap() > 0.0);
    assert!(machine["load_before"].is_number() && machine["load_after"].is_number());
    let cases = report["cases"].as_array().unwrap();
    let names: Vec<&str> = cases.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["prefill", "decode"]);
    for case in cases {
        let figures = case["attnflow"].as_array().unwrap();
        assert_eq!(figures.len(), 2, "{case}");
        assert!(figures.iter().all(|f| f.as_f64().unwrap() > 0.0), "{case}");
        assert!(case["peer"].as_array().unwrap().is_empty());
        assert!(case["ratio"].is_null());
    }
    assert_eq!(report["peer"]["status"], "skipped", "{report}");
}

#[test]
fn panel_memory_comes_from_the_environment_and_bad_values_are_refused() {
    // 0 keeps no panels: perplexity over several windows still runs (its
    // products then dequantize each panel on demand every window).
    let text = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(text.path(), "the cat sat on the mat. ".repeat(20)).unwrap();
    attnflow()
        .env("ATTNFLOW_PANEL_MEMORY_MIB", "0")
        .args(["eval-lm", "--context", "16", "--json", "--model"])
        .arg(tiny_gguf())
        .arg("--text")
        .arg(text.path())
        .assert()
        .success();
    attnflow()
        .env("ATTNFLOW_PANEL_MEMORY_MIB", "lots")
        .args(["generate", "--prompt", "hi", "--max-tokens", "1", "--model"])
        .arg(tiny_gguf())
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "ATTNFLOW_PANEL_MEMORY_MIB: expected a whole number of MiB",
        ))
        .stderr(predicate::str::contains("`lots`"));
}
