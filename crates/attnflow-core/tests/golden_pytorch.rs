//! Exact attention against PyTorch golden fixtures.
//!
//! The fixtures in `tests/fixtures/attention_golden.*` are made by
//! `tools/make_attention_fixtures.py` from `F.scaled_dot_product_attention`
//! and `nn.MultiheadAttention` (with their autograd gradients). Every output,
//! weight and gradient must agree within 1e-5 (f32), relative to the
//! magnitude of the reference where that exceeds one.

use std::collections::HashMap;
use std::path::PathBuf;

use attnflow_core::{
    scaled_dot_product_attention, AttentionMask, MultiHeadAttention, MultiHeadAttentionConfig,
    SdpaOptions,
};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use serde_json::Value;

const TOLERANCE: f32 = 1e-5;

fn fixtures() -> (HashMap<String, Tensor>, Vec<Value>) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let tensors =
        candle_core::safetensors::load(dir.join("attention_golden.safetensors"), &Device::Cpu)
            .expect("golden tensors load");
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("attention_golden.json")).expect("manifest reads"),
    )
    .expect("manifest parses");
    let cases = manifest["cases"].as_array().expect("cases").clone();
    (tensors, cases)
}

/// Largest absolute difference, scaled down where the reference exceeds one.
fn max_error(actual: &Tensor, expected: &Tensor) -> f32 {
    assert_eq!(actual.dims(), expected.dims(), "shapes differ");
    let actual = actual.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let expected = expected.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    actual
        .iter()
        .zip(&expected)
        .map(|(a, e)| (a - e).abs() / e.abs().max(1.0))
        .fold(0.0, f32::max)
}

struct Tracker {
    worst: f32,
    worst_where: String,
}

impl Tracker {
    fn check(&mut self, case: &str, what: &str, actual: &Tensor, expected: &Tensor) {
        let error = max_error(actual, expected);
        assert!(
            error <= TOLERANCE,
            "{case}: {what} differs from PyTorch by {error:e} (tolerance {TOLERANCE:e})"
        );
        if error > self.worst {
            self.worst = error;
            self.worst_where = format!("{case}: {what}");
        }
    }
}

#[test]
fn scaled_dot_product_attention_matches_pytorch() {
    let (tensors, cases) = fixtures();
    let get = |prefix: &str, name: &str| tensors[&format!("{prefix}.{name}")].clone();
    let mut tracker = Tracker {
        worst: 0.0,
        worst_where: String::new(),
    };
    let mut count = 0;
    for case in cases.iter().filter(|c| c["kind"] == "sdpa") {
        let name = case["name"].as_str().unwrap();
        let prefix = case["prefix"].as_str().unwrap();
        let q = Var::from_tensor(&get(prefix, "q")).unwrap();
        let k = Var::from_tensor(&get(prefix, "k")).unwrap();
        let v = Var::from_tensor(&get(prefix, "v")).unwrap();
        let mut mask = AttentionMask::none().with_causal(case["causal"].as_bool().unwrap());
        match case["mask"].as_str() {
            Some("key_padding") => mask = mask.with_key_padding(get(prefix, "key_padding")),
            Some("allowed") => mask = mask.with_allowed(get(prefix, "mask")),
            Some("additive") => mask = mask.with_additive(get(prefix, "mask")),
            None => {}
            Some(other) => panic!("unknown mask kind {other}"),
        }
        let options = SdpaOptions {
            scale: case["scale"].as_f64(),
        };
        let attended = scaled_dot_product_attention(&q, &k, &v, &mask, &options).unwrap();
        tracker.check(name, "output", &attended.output, &get(prefix, "output"));
        tracker.check(name, "weights", &attended.weights, &get(prefix, "weights"));

        let loss = (attended.output * get(prefix, "grad"))
            .unwrap()
            .sum_all()
            .unwrap();
        let grads = loss.backward().unwrap();
        for (var, key) in [(&q, "dq"), (&k, "dk"), (&v, "dv")] {
            let grad = grads.get(var.as_tensor()).expect("gradient present");
            tracker.check(name, key, grad, &get(prefix, key));
        }
        count += 1;
    }
    assert!(
        count >= 10,
        "expected the fixture's sdpa cases, found {count}"
    );
    println!(
        "sdpa: {count} cases, max error {:e} at {}",
        tracker.worst, tracker.worst_where
    );
}

#[test]
fn multi_head_attention_matches_pytorch() {
    let (tensors, cases) = fixtures();
    let get = |prefix: &str, name: &str| tensors[&format!("{prefix}.{name}")].clone();
    let mut tracker = Tracker {
        worst: 0.0,
        worst_where: String::new(),
    };
    let mut count = 0;
    for case in cases.iter().filter(|c| c["kind"] == "mha") {
        let name = case["name"].as_str().unwrap();
        let prefix = case["prefix"].as_str().unwrap();
        let config = MultiHeadAttentionConfig {
            embed_dim: case["embed_dim"].as_u64().unwrap() as usize,
            num_heads: case["heads"].as_u64().unwrap() as usize,
            key_dim: case["key_dim"].as_u64().map(|d| d as usize),
            value_dim: case["value_dim"].as_u64().map(|d| d as usize),
            bias: case["bias"].as_bool().unwrap(),
        };
        let varmap = VarMap::new();
        let param_prefix = format!("{prefix}.param.");
        for (key, tensor) in &tensors {
            if let Some(param) = key.strip_prefix(&param_prefix) {
                varmap
                    .data()
                    .lock()
                    .unwrap()
                    .insert(param.to_string(), Var::from_tensor(tensor).unwrap());
            }
        }
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let mha = MultiHeadAttention::new(&config, vb).unwrap();

        let query = Var::from_tensor(&get(prefix, "query")).unwrap();
        let self_attention = case["self_attention"].as_bool().unwrap();
        let (key, value) = if self_attention {
            (query.clone(), query.clone())
        } else {
            (
                Var::from_tensor(&get(prefix, "key")).unwrap(),
                Var::from_tensor(&get(prefix, "value")).unwrap(),
            )
        };
        let mut mask = AttentionMask::none().with_causal(case["causal"].as_bool().unwrap());
        if case["key_padding"].as_bool().unwrap() {
            mask = mask.with_key_padding(get(prefix, "key_padding"));
        }
        let (output, weights) = mha.forward(&query, &key, &value, &mask, true).unwrap();
        tracker.check(name, "output", &output, &get(prefix, "output"));
        tracker.check(name, "weights", &weights.unwrap(), &get(prefix, "weights"));

        let loss = (output * get(prefix, "grad")).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        tracker.check(
            name,
            "dquery",
            grads.get(query.as_tensor()).unwrap(),
            &get(prefix, "dquery"),
        );
        if !self_attention {
            tracker.check(
                name,
                "dkey",
                grads.get(key.as_tensor()).unwrap(),
                &get(prefix, "dkey"),
            );
            tracker.check(
                name,
                "dvalue",
                grads.get(value.as_tensor()).unwrap(),
                &get(prefix, "dvalue"),
            );
        }
        let grad_prefix = format!("{prefix}.param_grad.");
        let data = varmap.data().lock().unwrap();
        let mut params_checked = 0;
        for (param, var) in data.iter() {
            let expected = &tensors[&format!("{grad_prefix}{param}")];
            let grad = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{name}: no gradient for {param}"));
            tracker.check(name, &format!("grad of {param}"), grad, expected);
            params_checked += 1;
        }
        let expected_params = if config.bias { 8 } else { 4 };
        assert_eq!(
            params_checked, expected_params,
            "{name}: parameters checked"
        );
        count += 1;
    }
    assert!(
        count >= 4,
        "expected the fixture's mha cases, found {count}"
    );
    println!(
        "mha: {count} cases, max error {:e} at {}",
        tracker.worst, tracker.worst_where
    );
}
