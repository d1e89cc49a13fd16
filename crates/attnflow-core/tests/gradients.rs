//! §2.3: gradients through attention agree with central finite differences
//! in f64.

mod common;

use attnflow_core::{
    attention_matrix, scaled_dot_product_attention, AttentionMask, MultiHeadAttention,
    MultiHeadAttentionConfig, SdpaOptions,
};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use common::{seeded, values};

const STEP: f64 = 1e-6;
const TOLERANCE: f64 = 1e-6;

/// Compares the autograd gradient of `loss` with respect to each input with
/// central differences, element by element.
fn check_gradients(inputs: &[Var], loss: impl Fn() -> Tensor, label: &str) {
    let grads = loss().backward().unwrap();
    for (index, input) in inputs.iter().enumerate() {
        let analytic = values(grads.get(input.as_tensor()).expect("gradient present"));
        let original = input.as_tensor().copy().unwrap();
        let shape = original.dims().to_vec();
        let base = values(&original);
        for element in 0..base.len() {
            let at = |delta: f64| {
                let mut perturbed = base.clone();
                perturbed[element] += delta;
                input
                    .set(&Tensor::from_vec(perturbed, shape.as_slice(), &Device::Cpu).unwrap())
                    .unwrap();
                loss().to_scalar::<f64>().unwrap()
            };
            let numeric = (at(STEP) - at(-STEP)) / (2.0 * STEP);
            input.set(&original).unwrap();
            let error = (numeric - analytic[element]).abs() / numeric.abs().max(1.0);
            assert!(
                error < TOLERANCE,
                "{label}: input {index} element {element}: autograd {} vs finite difference {numeric}",
                analytic[element]
            );
        }
    }
}

/// A loss that depends on both the output and the weights, so both paths of
/// the backward are exercised.
fn weighted_loss(output: &Tensor, weights: &Tensor, seed: u64) -> Tensor {
    let out_probe = seeded(output.dims(), seed, DType::F64);
    let weight_probe = seeded(weights.dims(), seed + 1, DType::F64);
    ((output * out_probe).unwrap().sum_all().unwrap()
        + (weights * weight_probe).unwrap().sum_all().unwrap())
    .unwrap()
}

#[test]
fn attention_matrix_gradient_matches_finite_differences() {
    let w = Var::from_tensor(&seeded(&[3, 4], 1, DType::F64)).unwrap();
    let x = Var::from_tensor(&seeded(&[3, 5], 2, DType::F64)).unwrap();
    let probe = seeded(&[4, 5], 3, DType::F64);
    check_gradients(
        &[w.clone(), x.clone()],
        || {
            (attention_matrix(&w, &x).unwrap() * &probe)
                .unwrap()
                .sum_all()
                .unwrap()
        },
        "attention_matrix",
    );
}

#[test]
fn sdpa_gradients_match_finite_differences_with_every_mask() {
    let (batch, heads, n, m, d) = (2, 2, 3, 4, 3);
    let q = Var::from_tensor(&seeded(&[batch, heads, n, d], 10, DType::F64)).unwrap();
    let k = Var::from_tensor(&seeded(&[batch, heads, m, d], 11, DType::F64)).unwrap();
    let v = Var::from_tensor(&seeded(&[batch, heads, m, 2], 12, DType::F64)).unwrap();
    let padding = Tensor::new(&[[0u8, 0, 0, 0], [0, 0, 1, 1]], &Device::Cpu).unwrap();
    let additive = (seeded(&[n, m], 13, DType::F64) * 0.5).unwrap();
    let masks = [
        ("none", AttentionMask::none()),
        ("causal", AttentionMask::causal()),
        (
            "padding",
            AttentionMask::none().with_key_padding(padding.clone()),
        ),
        ("additive", AttentionMask::none().with_additive(additive)),
        (
            "causal+padding (a fully masked row)",
            // Batch 1 pads keys 1..: query 0 still sees key 0; add padding of
            // key 0 for batch 0 to make its rows empty.
            AttentionMask::causal().with_key_padding(
                Tensor::new(&[[1u8, 1, 1, 1], [0, 0, 1, 1]], &Device::Cpu).unwrap(),
            ),
        ),
    ];
    for (label, mask) in masks {
        check_gradients(
            &[q.clone(), k.clone(), v.clone()],
            || {
                let attended =
                    scaled_dot_product_attention(&q, &k, &v, &mask, &SdpaOptions::default())
                        .unwrap();
                weighted_loss(&attended.output, &attended.weights, 20)
            },
            label,
        );
    }
}

#[test]
fn grouped_key_value_heads_gradients_match_finite_differences() {
    let q = Var::from_tensor(&seeded(&[1, 4, 3, 2], 30, DType::F64)).unwrap();
    let k = Var::from_tensor(&seeded(&[1, 2, 3, 2], 31, DType::F64)).unwrap();
    let v = Var::from_tensor(&seeded(&[1, 2, 3, 2], 32, DType::F64)).unwrap();
    check_gradients(
        &[q.clone(), k.clone(), v.clone()],
        || {
            let attended = scaled_dot_product_attention(
                &q,
                &k,
                &v,
                &AttentionMask::causal(),
                &SdpaOptions { scale: Some(0.7) },
            )
            .unwrap();
            weighted_loss(&attended.output, &attended.weights, 33)
        },
        "gqa",
    );
}

#[test]
fn multi_head_gradients_match_finite_differences_for_inputs_and_parameters() {
    let config = MultiHeadAttentionConfig {
        embed_dim: 4,
        num_heads: 2,
        key_dim: Some(3),
        value_dim: Some(5),
        bias: true,
    };
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
    let mha = MultiHeadAttention::new(&config, vb).unwrap();
    let query = Var::from_tensor(&seeded(&[2, 3, 4], 40, DType::F64)).unwrap();
    let key = Var::from_tensor(&seeded(&[2, 2, 3], 41, DType::F64)).unwrap();
    let value = Var::from_tensor(&seeded(&[2, 2, 5], 42, DType::F64)).unwrap();
    let mask = AttentionMask::none()
        .with_key_padding(Tensor::new(&[[0u8, 0], [0, 1]], &Device::Cpu).unwrap());
    let mut inputs = vec![query.clone(), key.clone(), value.clone()];
    inputs.extend(varmap.all_vars());
    assert_eq!(
        inputs.len(),
        3 + 8,
        "four projections with weights and biases"
    );
    check_gradients(
        &inputs,
        || {
            let (output, weights) = mha.forward(&query, &key, &value, &mask, true).unwrap();
            weighted_loss(&output, &weights.unwrap(), 43)
        },
        "multi-head",
    );
}
