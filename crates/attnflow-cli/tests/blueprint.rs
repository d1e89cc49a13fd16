//! `attnflow blueprint ...` end to end: the real binary on real files.
//! Every class of spec fault exits 2 with a message naming file:line:col.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use predicates::prelude::*;

fn attnflow() -> Command {
    Command::cargo_bin("attnflow").unwrap()
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/blueprints")
        .join(name)
}

/// A small valid spec; each fault test rewrites one line of it.
const BASE: &str = r#"[dims]
batch = 2
seq = 8
d_model = 32
heads = 4
d_ff = "4 * d_model"

[[node]]
name = "x"
op = "input"
shape = ["batch", "seq", "d_model"]

[[node]]
name = "attn"
op = "attention"
input = "x"
heads = "heads"

[[node]]
name = "residual"
op = "add"
input = ["x", "attn"]

[[node]]
name = "ffn"
op = "feed_forward"
input = "residual"
hidden = "d_ff"
"#;

/// Writes BASE with `from` replaced by `to`, runs `check`, and asserts exit
/// 2 with a message that contains `expected` and names `spec.toml:LINE:`.
fn assert_fault(from: &str, to: &str, line: usize, expected: &str) {
    assert!(BASE.contains(from), "{from}");
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("spec.toml");
    std::fs::write(&path, BASE.replacen(from, to, 1)).unwrap();
    attnflow()
        .args(["blueprint", "check"])
        .arg(&path)
        .assert()
        .code(2)
        .stderr(predicate::str::contains(format!("spec.toml:{line}:")))
        .stderr(predicate::str::contains(expected));
}

#[test]
fn check_prints_a_summary() {
    attnflow()
        .args(["blueprint", "check"])
        .arg(example("gpt2-small.toml"))
        .assert()
        .success()
        .stdout(predicate::str::contains("ok: gpt2-small"))
        .stdout(predicate::str::contains("124,439,808 parameters"))
        .stdout(predicate::str::contains("h ×12"));
}

#[test]
fn every_example_checks() {
    for name in [
        "tiny.toml",
        "gpt2-small.toml",
        "bert-base.toml",
        "all-MiniLM-L6-v2.toml",
        "llama-style.toml",
        "vit-b16.toml",
        "gpt3-175b.toml",
    ] {
        attnflow()
            .args(["blueprint", "check"])
            .arg(example(name))
            .assert()
            .success();
    }
}

#[test]
fn unknown_op_names_the_line() {
    assert_fault(
        "op = \"feed_forward\"",
        "op = \"feedforward\"",
        26,
        "unknown op `feedforward",
    );
}

#[test]
fn unknown_attribute_names_the_line() {
    assert_fault(
        "heads = \"heads\"",
        "head = \"heads\"",
        17,
        "unknown attribute `head",
    );
}

#[test]
fn unknown_input_names_the_line() {
    assert_fault(
        "input = \"residual\"",
        "input = \"residul\"",
        27,
        "unknown input `residul`",
    );
}

#[test]
fn cycle_names_the_line() {
    assert_fault(
        "input = \"x\"\nheads",
        "input = \"ffn\"\nheads",
        14,
        "cycle in the graph",
    );
}

#[test]
fn unknown_dimension_names_the_line() {
    assert_fault(
        "hidden = \"d_ff\"",
        "hidden = \"width\"",
        28,
        "unknown dimension `width`",
    );
}

#[test]
fn non_integer_names_the_line() {
    assert_fault(
        "d_ff = \"4 * d_model\"",
        "d_ff = \"2.5 * d_model\"",
        6,
        "is not a whole number",
    );
}

#[test]
fn non_divisible_names_the_line() {
    assert_fault(
        "d_ff = \"4 * d_model\"",
        "d_ff = \"d_model / 5\"",
        6,
        "32 is not divisible by 5",
    );
    assert_fault("heads = 4", "heads = 5", 17, "32 is not divisible by 5");
}

#[test]
fn mismatched_add_names_the_line() {
    assert_fault(
        "heads = \"heads\"",
        "heads = \"heads\"\nout = 16",
        23,
        "shape mismatch at `add`",
    );
}

#[test]
fn mismatched_matmul_names_the_line() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("spec.toml");
    let text =
        format!("{BASE}\n[[node]]\nname = \"scores\"\nop = \"matmul\"\ninput = [\"x\", \"ffn\"]\n");
    std::fs::write(&path, &text).unwrap();
    attnflow()
        .args(["blueprint", "check"])
        .arg(&path)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("spec.toml:32:"))
        .stderr(predicate::str::contains("shape mismatch at `matmul`"))
        .stderr(predicate::str::contains("node `scores`"));
}

#[test]
fn toml_syntax_errors_name_the_line() {
    assert_fault("batch = 2", "batch = ", 2, "invalid TOML");
}

#[test]
fn bad_overrides_and_files_exit_2() {
    attnflow()
        .args(["blueprint", "cost"])
        .arg(example("tiny.toml"))
        .args(["--set", "sequence=4"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("`sequence` is not a dimension"));
    attnflow()
        .args(["blueprint", "cost"])
        .arg(example("tiny.toml"))
        .args(["--set", "seq"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("expected dim=value"));
    // 32 features cannot split into 5 heads: the fault is at the attention node.
    attnflow()
        .args(["blueprint", "check"])
        .arg(example("tiny.toml"))
        .args(["--set", "heads=5"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("node `block.0.attn`"));
    attnflow()
        .args(["blueprint", "check", "no/such/file.toml"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no/such/file.toml"));
    attnflow()
        .args(["blueprint", "cost"])
        .arg(example("tiny.toml"))
        .args(["--convention", "fvcore"])
        .assert()
        .code(2);
}

#[test]
fn cost_table_json_and_markdown() {
    attnflow()
        .args(["blueprint", "cost"])
        .arg(example("gpt2-small.toml"))
        .assert()
        .success()
        .stdout(predicate::str::contains("h.*.attn ×12"))
        .stdout(predicate::str::contains("parameters 124,439,808"));
    let output = attnflow()
        .args(["blueprint", "cost", "--json", "--convention", "matmul"])
        .arg(example("gpt2-small.toml"))
        .output()
        .unwrap();
    assert!(output.status.success());
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["total"]["params"], 124_439_808u64);
    // tools/blueprint_flop_fixture.py: FlopCounterMode on GPT-2 small at 1024 tokens.
    assert_eq!(json["total"]["forward_flops"], 291_648_307_200u64);
    attnflow()
        .args(["blueprint", "cost", "--markdown", "--expand"])
        .arg(example("tiny.toml"))
        .assert()
        .success()
        .stdout(predicate::str::contains("| block.1.attn | attention |"));
}

#[test]
fn show_reports_the_receptive_field() {
    attnflow()
        .args(["blueprint", "show"])
        .arg(example("tiny.toml"))
        .assert()
        .success()
        .stdout(predicate::str::contains("M = (I, O, F, R)"))
        .stdout(predicate::str::contains("i-6 ..= i+0"));
    let output = attnflow()
        .args([
            "blueprint",
            "show",
            "--json",
            "--set",
            "layers=3",
            "--set",
            "window=5",
        ])
        .arg(example("tiny.toml"))
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    // 3 layers of a window of 5: 3·(5 − 1) + 1 positions.
    assert_eq!(json["receptive"][0]["seen_by_last"], 13);
}

#[test]
fn scale_fits_the_exponent() {
    let output = attnflow()
        .args([
            "blueprint",
            "scale",
            "--dim",
            "seq",
            "--values",
            "1024,2048,4096",
            "--json",
        ])
        .arg(example("tiny.toml"))
        .args(["--set", "window=100000"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let exponent = json["attention"]["exponent"].as_f64().unwrap();
    assert!((exponent - 2.0).abs() < 0.05, "{exponent}");
    attnflow()
        .args(["blueprint", "scale", "--dim", "width", "--values", "1,2"])
        .arg(example("tiny.toml"))
        .assert()
        .code(2)
        .stderr(predicate::str::contains("`width` is not a dimension"));
}

#[test]
fn diagrams_in_three_formats() {
    attnflow()
        .args(["blueprint", "diagram"])
        .arg(example("gpt2-small.toml"))
        .assert()
        .success()
        .stdout(predicate::str::starts_with("flowchart TD"))
        .stdout(predicate::str::contains("h ×12"));
    attnflow()
        .args(["blueprint", "diagram", "--format", "dot", "--shapes"])
        .arg(example("tiny.toml"))
        .assert()
        .success()
        .stdout(predicate::str::starts_with("digraph"))
        .stdout(predicate::str::contains("[2, 16, 32]"));
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("tiny.svg");
    attnflow()
        .args([
            "blueprint",
            "diagram",
            "--format",
            "svg",
            "--cost",
            "--expand",
            "-o",
        ])
        .arg(&path)
        .arg(example("tiny.toml"))
        .assert()
        .success();
    let svg = std::fs::read_to_string(&path).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("block.1.attn"));
}

#[test]
fn figure_one_draws_an_attention_node() {
    attnflow()
        .args(["blueprint", "diagram", "--node", "h.3.attn"])
        .arg(example("gpt2-small.toml"))
        .assert()
        .success()
        .stdout(predicate::str::contains("A = softmax(S) by rows"))
        .stdout(predicate::str::contains("[1, 12, 1024, 1024]"))
        .stdout(predicate::str::contains("mask: causal"));
    attnflow()
        .args(["blueprint", "diagram", "--node", "h.3.mlp"])
        .arg(example("gpt2-small.toml"))
        .assert()
        .code(2)
        .stderr(predicate::str::contains("is a `feed_forward` node"));
    attnflow()
        .args(["blueprint", "diagram", "--node", "h.3.atn"])
        .arg(example("gpt2-small.toml"))
        .assert()
        .code(2)
        .stderr(predicate::str::contains("did you mean `h.3.attn`"));
}
