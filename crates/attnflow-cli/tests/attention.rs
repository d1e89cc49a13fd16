//! `attnflow attention sdpa` on real files, good and bad.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use candle_core::{DType, Device, Tensor};
use predicates::prelude::*;

fn attnflow() -> Command {
    Command::cargo_bin("attnflow").expect("binary builds")
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/attention")
        .join(name)
}

fn ramp(shape: &[usize], offset: f32) -> Tensor {
    let count: usize = shape.iter().product();
    let values: Vec<f32> = (0..count)
        .map(|i| ((i as f32 + offset) * 0.37).sin())
        .collect();
    Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
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

fn rows(weights: &Tensor) -> Vec<Vec<f32>> {
    let m = *weights.dims().last().unwrap();
    let flat = weights.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    flat.chunks(m).map(<[f32]>::to_vec).collect()
}

#[test]
fn version_and_help() {
    attnflow()
        .arg("--version")
        .assert()
        .success()
        .stdout(predicate::str::starts_with("attnflow "));
    attnflow()
        .args(["attention", "sdpa", "--help"])
        .assert()
        .success()
        .stdout(predicate::str::contains("key_padding"));
}

#[test]
fn example_self_attention_respects_padding() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.safetensors");
    attnflow()
        .args(["attention", "sdpa", "--input"])
        .arg(example("self_attention.safetensors"))
        .arg("--output")
        .arg(&out)
        .assert()
        .success()
        .stdout(predicate::str::contains("(2, 4, 6, 6)"));
    let result = candle_core::safetensors::load(&out, &Device::Cpu).unwrap();
    assert_eq!(result["output"].dims(), &[2, 4, 6, 8]);
    let weights = &result["weights"];
    assert_eq!(weights.dims(), &[2, 4, 6, 6]);
    for (index, row) in rows(weights).iter().enumerate() {
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        // The example pads the last two keys of batch element 1.
        if index >= 4 * 6 {
            assert_eq!(&row[4..], &[0.0, 0.0], "row {index} attends to padding");
        }
    }
}

#[test]
fn example_multi_head_gives_per_head_weights_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.safetensors");
    let assert = attnflow()
        .args([
            "attention",
            "sdpa",
            "--heads",
            "4",
            "--causal",
            "--json",
            "--input",
        ])
        .arg(example("multi_head.safetensors"))
        .arg("--output")
        .arg(&out)
        .assert()
        .success();
    let summary: serde_json::Value = serde_json::from_slice(&assert.get_output().stdout).unwrap();
    assert_eq!(summary["mode"], "multi-head");
    assert_eq!(summary["weights_shape"], serde_json::json!([2, 4, 6, 6]));
    let result = candle_core::safetensors::load(&out, &Device::Cpu).unwrap();
    assert_eq!(result["output"].dims(), &[2, 6, 16]);
    for (index, row) in rows(&result["weights"]).iter().enumerate() {
        let query = index % 6;
        assert!(
            row[query + 1..].iter().all(|&w| w == 0.0),
            "causal row {index}: {row:?}"
        );
    }
}

#[test]
fn boolean_and_float_masks_from_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (q, k, v) = (ramp(&[3, 4], 0.0), ramp(&[5, 4], 1.0), ramp(&[5, 2], 2.0));
    // Allowed mask: query i may attend to keys 0..=i+1.
    let allowed: Vec<u8> = (0..3)
        .flat_map(|i| (0..5).map(move |j| u8::from(j <= i + 1)))
        .collect();
    let allowed = Tensor::from_vec(allowed, (3, 5), &Device::Cpu).unwrap();
    let input = save(
        dir.path(),
        "in.safetensors",
        &[
            ("q", q.clone()),
            ("k", k.clone()),
            ("v", v.clone()),
            ("mask", allowed),
        ],
    );
    let out = dir.path().join("out.safetensors");
    attnflow()
        .args(["attention", "sdpa", "--input"])
        .arg(&input)
        .arg("--output")
        .arg(&out)
        .assert()
        .success();
    let weights = candle_core::safetensors::load(&out, &Device::Cpu).unwrap()["weights"].clone();
    for (i, row) in rows(&weights).iter().enumerate() {
        assert!(row[i + 2..].iter().all(|&w| w == 0.0));
        assert!(row[..i + 2].iter().all(|&w| w > 0.0));
    }
    // The same restriction as an additive float mask gives the same weights.
    let additive: Vec<f32> = (0..3)
        .flat_map(|i| (0..5).map(move |j| if j <= i + 1 { 0.0 } else { f32::NEG_INFINITY }))
        .collect();
    let additive = Tensor::from_vec(additive, (3, 5), &Device::Cpu).unwrap();
    let input = save(
        dir.path(),
        "in2.safetensors",
        &[("q", q), ("k", k), ("v", v), ("mask", additive)],
    );
    let out2 = dir.path().join("out2.safetensors");
    attnflow()
        .args(["attention", "sdpa", "--input"])
        .arg(&input)
        .arg("--output")
        .arg(&out2)
        .assert()
        .success();
    let weights2 = candle_core::safetensors::load(&out2, &Device::Cpu).unwrap()["weights"].clone();
    assert_eq!(rows(&weights), rows(&weights2));
}

/// Each bad input exits 2 with a message naming the file and the fault.
#[test]
fn bad_inputs_exit_2_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = |n: usize| ramp(&[n, 4], n as f32);
    let not_safetensors = d.join("notes.txt");
    std::fs::write(&not_safetensors, "hello").unwrap();
    let truncated = d.join("truncated.safetensors");
    let full = std::fs::read(save(
        d,
        "full.safetensors",
        &[("q", good(3)), ("k", good(3)), ("v", good(3))],
    ))
    .unwrap();
    std::fs::write(&truncated, &full[..full.len() - 7]).unwrap();
    let cases: Vec<(PathBuf, Vec<&str>, &str)> = vec![
        (d.join("missing.safetensors"), vec![], "cannot read"),
        (not_safetensors, vec![], "not a valid safetensors file"),
        (truncated, vec![], "not a valid safetensors file"),
        (
            save(d, "no_v.safetensors", &[("q", good(3)), ("k", good(3))]),
            vec![],
            "no tensor named `v` (the file holds: k, q)",
        ),
        (
            save(
                d,
                "rank.safetensors",
                &[
                    ("q", ramp(&[4], 0.0)),
                    ("k", ramp(&[4], 0.0)),
                    ("v", ramp(&[4], 0.0)),
                ],
            ),
            vec![],
            "tensor `q`",
        ),
        (
            save(
                d,
                "mismatch.safetensors",
                &[("q", good(3)), ("k", good(5)), ("v", good(4))],
            ),
            vec![],
            "tensor `v`: has 4 positions but k has 5",
        ),
        (
            save(
                d,
                "width.safetensors",
                &[("q", good(3)), ("k", ramp(&[3, 6], 0.0)), ("v", good(3))],
            ),
            vec![],
            "tensor `k`: feature width 6",
        ),
        (
            save(
                d,
                "ints.safetensors",
                &[
                    ("q", good(3).to_dtype(DType::U32).unwrap()),
                    ("k", good(3)),
                    ("v", good(3)),
                ],
            ),
            vec![],
            "must be a float tensor",
        ),
        (
            save(
                d,
                "mask.safetensors",
                &[
                    ("q", good(3)),
                    ("k", good(3)),
                    ("v", good(3)),
                    (
                        "mask",
                        Tensor::ones((2, 2), DType::U8, &Device::Cpu).unwrap(),
                    ),
                ],
            ),
            vec![],
            "does not broadcast",
        ),
        (
            save(
                d,
                "projections.safetensors",
                &[
                    ("q", ramp(&[1, 3, 4], 0.0)),
                    ("k", ramp(&[1, 3, 4], 0.0)),
                    ("v", ramp(&[1, 3, 4], 0.0)),
                    ("q_proj.weight", ramp(&[4, 4], 0.0)),
                    ("k_proj.weight", ramp(&[4, 4], 0.0)),
                    ("v_proj.weight", ramp(&[4, 4], 0.0)),
                    ("out_proj.weight", ramp(&[4, 3], 0.0)),
                ],
            ),
            vec!["--heads", "2"],
            "projection weights do not fit",
        ),
        (
            save(
                d,
                "no_out_proj.safetensors",
                &[
                    ("q", ramp(&[1, 3, 4], 0.0)),
                    ("k", ramp(&[1, 3, 4], 0.0)),
                    ("v", ramp(&[1, 3, 4], 0.0)),
                    ("q_proj.weight", ramp(&[4, 4], 0.0)),
                    ("k_proj.weight", ramp(&[4, 4], 0.0)),
                    ("v_proj.weight", ramp(&[4, 4], 0.0)),
                ],
            ),
            vec!["--heads", "2"],
            "no tensor named `out_proj.weight`",
        ),
    ];
    for (input, extra, message) in cases {
        let out = d.join("out.safetensors");
        attnflow()
            .args(["attention", "sdpa", "--input"])
            .arg(&input)
            .arg("--output")
            .arg(&out)
            .args(extra)
            .assert()
            .code(2)
            .stderr(predicate::str::contains(message))
            .stderr(predicate::str::contains(
                input.file_name().unwrap().to_str().unwrap(),
            ));
        assert!(
            !out.exists(),
            "{}: no output is written for bad input",
            input.display()
        );
    }
    attnflow()
        .args(["attention", "sdpa", "--input", "x"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--output"));
    attnflow()
        .args([
            "attention",
            "sdpa",
            "--input",
            "x",
            "--output",
            "y",
            "--scale",
            "abc",
        ])
        .assert()
        .code(2);
}
