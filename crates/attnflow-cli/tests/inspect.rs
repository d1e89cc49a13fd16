//! `attnflow attention inspect`, `attnflow attention blend` and
//! `attnflow verify` on real files, good and bad.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use candle_core::{Device, Tensor};
use predicates::prelude::*;

fn attnflow() -> Command {
    Command::cargo_bin("attnflow").expect("binary builds")
}

/// PNG signature, then the IHDR chunk's width and height.
fn png_size(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(
        &bytes[..8],
        b"\x89PNG\r\n\x1a\n",
        "{} is not a PNG",
        path.display()
    );
    assert_eq!(&bytes[12..16], b"IHDR");
    let number = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    (number(16), number(20))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&read(path)).unwrap()
}

/// Checks an SVG is one well-nested document: every opened element is
/// closed in order.
fn assert_well_formed_svg(svg: &str) {
    assert!(svg.trim_start().starts_with("<svg") || svg.contains("<svg "));
    let mut open: Vec<String> = Vec::new();
    let mut rest = svg;
    while let Some(start) = rest.find('<') {
        let end = rest[start..].find('>').expect("tag closes") + start;
        let tag = &rest[start + 1..end];
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(
                open.pop().as_deref(),
                Some(name.trim()),
                "mismatched </{name}>"
            );
        } else if !tag.ends_with('/') && !tag.starts_with('?') && !tag.starts_with('!') {
            open.push(tag.split_whitespace().next().unwrap().to_string());
        }
        rest = &rest[end + 1..];
    }
    assert!(open.is_empty(), "unclosed: {open:?}");
}

fn save(dir: &Path, name: &str, tensors: &[(&str, Tensor)]) -> PathBuf {
    let path = dir.join(name);
    let map: HashMap<String, Tensor> = tensors
        .iter()
        .map(|(n, t)| (n.to_string(), t.clone()))
        .collect();
    candle_core::safetensors::save(&map, &path).unwrap();
    path
}

/// `(layers, batch, heads, n, n)` identity maps.
fn identity_stack(layers: usize, batch: usize, heads: usize, n: usize) -> Tensor {
    let eye = Tensor::eye(n, candle_core::DType::F32, &Device::Cpu).unwrap();
    eye.broadcast_as((layers, batch, heads, n, n))
        .unwrap()
        .contiguous()
        .unwrap()
}

#[test]
fn seeded_model_inspection_writes_everything() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("inspection");
    let text = "hi <script>alert(1)</script>";
    let assert = attnflow()
        .args([
            "attention",
            "inspect",
            "--text",
            text,
            "--layers",
            "2",
            "--heads",
            "3",
            "--width",
            "12",
            "--out",
        ])
        .arg(&out)
        .assert()
        .success()
        .stdout(predicate::str::contains("2 layers × 3 heads"));
    let stdout = String::from_utf8_lossy(&assert.get_output().stdout).to_string();
    assert!(
        stdout.contains("entropy") && stdout.contains("rollout"),
        "{stdout}"
    );
    let n = text.chars().count();

    for layer in 0..2 {
        for head in 0..3 {
            let (width, height) =
                png_size(&out.join(format!("heatmaps/layer-{layer}-head-{head}.png")));
            assert!(width > 300 && height > 300, "{width} × {height}");
        }
    }
    png_size(&out.join("grid.png"));
    png_size(&out.join("rollout.png"));
    for svg in ["grid.svg", "rollout.svg"] {
        let svg = read(&out.join(svg));
        assert_well_formed_svg(&svg);
        assert!(!svg.contains("<script>"));
    }
    // Token labels on the rollout view (every other one fits at this size;
    // token 10 is ">", escaped).
    let rollout_svg = read(&out.join("rollout.svg"));
    assert!(rollout_svg.contains("\n&gt;\n") && rollout_svg.contains("\nh\n"));

    let statistics = json(&out.join("statistics.json"));
    assert_eq!(statistics["heads"].as_array().unwrap().len(), 6);
    let rollout = json(&out.join("rollout.json"));
    assert_eq!(rollout["target"], n - 1);
    let relevance: Vec<f64> = rollout["relevance"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(relevance.len(), n);
    assert!((relevance.iter().sum::<f64>() - 1.0).abs() < 1e-9);
    assert_eq!(rollout["flow"].as_array().unwrap().len(), n);

    let html = read(&out.join("report.html"));
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "external reference in report"
    );
    assert!(!html.contains("<script>alert(1)"));
    assert!(
        html.contains("\"\\u003c\""),
        "tokens travel as escaped JSON"
    );
    assert!(html.contains("data-explorer") && html.contains("Head statistics"));
}

#[test]
fn weights_file_with_tokens_file() {
    let dir = tempfile::tempdir().unwrap();
    let weights = save(
        dir.path(),
        "attn.safetensors",
        &[("attentions", identity_stack(2, 2, 2, 4))],
    );
    let tokens = dir.path().join("tokens.txt");
    std::fs::write(&tokens, "[CLS]\nthe\n cat\n[SEP]\n").unwrap();
    let out = dir.path().join("out");
    let assert = attnflow()
        .args(["attention", "inspect"])
        .arg(&weights)
        .arg("--tokens")
        .arg(&tokens)
        .args(["--batch", "1", "--target", "2", "--json", "--out"])
        .arg(&out)
        .assert()
        .success();
    let summary: serde_json::Value = serde_json::from_slice(&assert.get_output().stdout).unwrap();
    assert_eq!(summary["tokens"], 4);
    assert_eq!(summary["layers"], 2);
    assert_eq!(summary["top_relevance"][0]["text"], " cat");
    // Identity attention: every head looks only at itself.
    let statistics = json(&out.join("statistics.json"));
    for head in statistics["heads"].as_array().unwrap() {
        assert_eq!(head["diagonal_share"], 1.0);
        assert_eq!(head["mean_entropy"], 0.0);
    }
    let rollout = json(&out.join("rollout.json"));
    assert_eq!(
        rollout["relevance"],
        serde_json::json!([0.0, 0.0, 1.0, 0.0])
    );
    assert!(read(&out.join("report.html")).contains("[CLS]"));
}

#[test]
fn one_tensor_per_layer() {
    let dir = tempfile::tempdir().unwrap();
    let tensor = |values: Vec<f32>| Tensor::from_vec(values, (1, 3, 3), &Device::Cpu).unwrap();
    // Layer 0: every token reads token 0. Layer 1: token i reads i + 1 mod 3.
    let to_first = tensor(vec![1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0]);
    let shift = tensor(vec![0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0]);
    // Saved out of order: layers are ordered by their number, not the file.
    let weights = save(
        dir.path(),
        "layers.safetensors",
        &[("layer.1", shift), ("layer.0", to_first)],
    );
    let out = dir.path().join("out");
    attnflow()
        .args(["attention", "inspect"])
        .arg(&weights)
        .args(["--text", "abc", "--json", "--out"])
        .arg(&out)
        .assert()
        .success();
    // R0[i] = 0.5·e0 + 0.5·ei, R1[2] = 0.5·e0 + 0.5·e2, so row 2 of R1·R0 is
    // 0.5·R0[0] + 0.5·R0[2] = [0.75, 0, 0.25] (the other order would give
    // [0.5, 0.25, 0.25]).
    let rollout = json(&out.join("rollout.json"));
    assert_eq!(rollout["relevance"], serde_json::json!([0.75, 0.0, 0.25]));
}

#[test]
fn bad_inputs_exit_2_with_the_place() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let weights = save(
        dir.path(),
        "attn.safetensors",
        &[("attentions", identity_stack(1, 1, 1, 3))],
    );
    let run = |args: &[&str], message: &str| {
        attnflow()
            .args(args)
            .arg("--out")
            .arg(&out)
            .assert()
            .code(2)
            .stderr(predicate::str::contains(message));
    };
    let w = weights.to_str().unwrap();
    run(
        &["attention", "inspect", w, "--text", "abcd"],
        "holds maps over 3 tokens but 4 tokens were given",
    );
    run(&["attention", "inspect", w, "--target", "3"], "--target 3");
    run(
        &["attention", "inspect", w, "--fusion", "median"],
        "`median` is not one of mean, max, min",
    );
    run(
        &["attention", "inspect", w, "--discard", "1.0"],
        "discard ratio",
    );
    run(
        &["attention", "inspect", w, "--start-layer", "1"],
        "start layer",
    );
    run(&["attention", "inspect"], "--text");
    run(
        &[
            "attention",
            "inspect",
            "--text",
            "ab",
            "--width",
            "10",
            "--heads",
            "4",
        ],
        "not divisible",
    );

    let tokens = dir.path().join("tokens.txt");
    std::fs::write(&tokens, "a\n\nb\n").unwrap();
    run(
        &[
            "attention",
            "inspect",
            w,
            "--tokens",
            tokens.to_str().unwrap(),
        ],
        "tokens.txt:2: empty line",
    );

    let doubled = (identity_stack(1, 1, 1, 3) * 2.0).unwrap();
    let bad = save(dir.path(), "bad.safetensors", &[("attentions", doubled)]);
    run(
        &["attention", "inspect", bad.to_str().unwrap()],
        "layer 0 head 0: row 0 is not a probability distribution",
    );
    let nameless = save(
        dir.path(),
        "nameless.safetensors",
        &[(
            "q",
            Tensor::zeros((2, 2), candle_core::DType::F32, &Device::Cpu).unwrap(),
        )],
    );
    run(
        &["attention", "inspect", nameless.to_str().unwrap()],
        "one tensor per layer",
    );
    let garbage = dir.path().join("garbage.safetensors");
    std::fs::write(&garbage, b"not a safetensors file").unwrap();
    run(
        &["attention", "inspect", garbage.to_str().unwrap()],
        "garbage.safetensors: not a valid safetensors file",
    );
    assert!(
        !out.join("report.html").exists(),
        "nothing is written for bad input"
    );
}

#[test]
fn blend_of_two_csv_maps() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.csv");
    let b = dir.path().join("b.csv");
    std::fs::write(&a, "1, 0\n0.5, 0.5\n").unwrap();
    std::fs::write(&b, "0,1\n0.25,0.75\n").unwrap();
    let out = dir.path().join("blend");
    attnflow()
        .args(["attention", "blend"])
        .arg(&a)
        .arg(&b)
        .args(["--alpha", "0.25", "--out"])
        .arg(&out)
        .assert()
        .success()
        .stdout(predicate::str::contains("rows sum to 1"));
    let values: Vec<f64> = read(&out.join("blend.csv"))
        .split([',', '\n'])
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    let expected = [0.25, 0.75, 0.3125, 0.6875];
    for (v, e) in values.iter().zip(expected) {
        assert!((v - e).abs() < 1e-15, "{values:?}");
    }
    png_size(&out.join("blend.png"));
    let svg = read(&out.join("blend.svg"));
    assert_well_formed_svg(&svg);
    assert!(svg.contains("A_v") && svg.contains("A_l") && svg.contains("α = 0.25"));
}

#[test]
fn blend_refuses_bad_maps() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.csv");
    std::fs::write(&good, "0.5,0.5\n0.5,0.5\n").unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let out = dir.path().join("out");
    let run = |b: &Path, alpha: &str, message: &str| {
        attnflow()
            .args(["attention", "blend"])
            .arg(&good)
            .arg(b)
            .args(["--alpha", alpha, "--out"])
            .arg(&out)
            .assert()
            .code(2)
            .stderr(predicate::str::contains(message));
    };
    run(
        &write("word.csv", "0.5,0.5\n0.5,half\n"),
        "0.5",
        "word.csv:2:5: `half` is not a number",
    );
    run(
        &write("ragged.csv", "0.5,0.5\n1\n"),
        "0.5",
        "ragged.csv:2: 1 values",
    );
    run(
        &write("sum.csv", "0.5,0.5\n0.9,0.9\n"),
        "0.5",
        "sum.csv: A_l: row 1 is not a probability distribution",
    );
    run(
        &write("wide.csv", "0.2,0.3,0.5\n0.2,0.3,0.5\n"),
        "0.5",
        "equal shapes",
    );
    run(&good, "1.5", "α in [0, 1]");
}

#[test]
fn verify_prints_verdicts() {
    let assert = attnflow()
        .args(["verify", "--json", "--no-timing", "--trials", "20"])
        .assert()
        .success();
    let verdicts: serde_json::Value = serde_json::from_slice(&assert.get_output().stdout).unwrap();
    let status = |id: &str| {
        verdicts["claims"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .unwrap_or_else(|| panic!("no claim {id}"))["status"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(status("lemma-1"), "false");
    assert_eq!(status("lemma-2"), "holds under condition");
    assert_eq!(status("blend"), "holds");
    assert_eq!(status("selection"), "false");
    assert_eq!(status("theorem-1"), "definition, not a theorem");
    attnflow()
        .args(["verify", "--no-timing", "--trials", "20"])
        .assert()
        .success()
        .stdout(predicate::str::contains("lemma-1").and(predicate::str::contains("P·1 = c·1")));
}

fn train_example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/train")
        .join(name)
}

#[test]
fn checkpoint_and_blueprint_sources() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = dir.path().join("run");
    attnflow()
        .arg("train")
        .arg(train_example("reverse.toml"))
        .args(["--task", "reverse", "--steps", "3", "--json", "--out"])
        .arg(&checkpoint)
        .assert()
        .success();
    let out = dir.path().join("checkpoint");
    let assert = attnflow()
        .args(["attention", "inspect", "--checkpoint"])
        .arg(&checkpoint)
        .args(["--text", "3 1 4 1 5 9", "--json", "--out"])
        .arg(&out)
        .assert()
        .success();
    let summary: serde_json::Value = serde_json::from_slice(&assert.get_output().stdout).unwrap();
    // reverse.toml: 2 layers of 4 heads.
    assert_eq!(
        (summary["layers"].as_u64(), summary["heads"].as_u64()),
        (Some(2), Some(4))
    );
    assert_eq!(summary["tokens"], 6);
    assert!(summary["source"].as_str().unwrap().contains("task reverse"));
    assert!(read(&out.join("report.html")).contains("step 3"));
    attnflow()
        .args(["attention", "inspect", "--checkpoint"])
        .arg(&checkpoint)
        .args(["--text", "3 12", "--out"])
        .arg(&out)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("token 1 `12`").and(predicate::str::contains("0..11")));

    let seeded = |seed: &str| {
        let out = dir.path().join(format!("blueprint-{seed}"));
        attnflow()
            .args(["attention", "inspect", "--blueprint"])
            .arg(train_example("reverse.toml"))
            .args(["--text", "1 2 3 4", "--seed", seed, "--out"])
            .arg(&out)
            .assert()
            .success();
        read(&out.join("statistics.json"))
    };
    assert_eq!(seeded("1"), seeded("1"), "seeded weights repeat");
    assert_ne!(seeded("1"), seeded("2"));
    attnflow()
        .args(["attention", "inspect", "--blueprint"])
        .arg(train_example("reverse.toml"))
        .args(["--text", "one two", "--out"])
        .arg(dir.path().join("x"))
        .assert()
        .code(2)
        .stderr(predicate::str::contains("token 0 `one`"));
}
