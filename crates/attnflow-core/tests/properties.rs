//! Invariants of exact attention, over random shapes and values.

mod common;

use attnflow_core::{
    attention_matrix, scaled_dot_product_attention, AttentionMask, MultiHeadAttention,
    MultiHeadAttentionConfig, SdpaOptions,
};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use common::{seeded, values};
use proptest::prelude::*;

/// (batch, heads, n, m, d) for small random problems.
fn dims() -> impl Strategy<Value = (usize, usize, usize, usize, usize)> {
    (1usize..3, 1usize..4, 1usize..10, 1usize..10, 1usize..9)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Unmasked rows sum to one; rows whose keys are all padded are zero;
    /// nothing is NaN, and the output of a fully masked row is zero.
    #[test]
    fn rows_sum_to_one_and_fully_masked_rows_are_zero(
        (batch, heads, n, m, d) in dims(),
        seed in any::<u64>(),
        scale in prop_oneof![Just(1.0f64), Just(100.0), Just(1e4)],
        padded_per_batch in proptest::collection::vec(0usize..10, 2),
    ) {
        let q = (seeded(&[batch, heads, n, d], seed, DType::F32) * scale).unwrap();
        let k = seeded(&[batch, heads, m, d], seed ^ 1, DType::F32);
        let v = seeded(&[batch, heads, m, d], seed ^ 2, DType::F32);
        let padding: Vec<u8> = (0..batch)
            .flat_map(|b| {
                let padded = padded_per_batch[b].min(m);
                (0..m).map(move |j| u8::from(j + padded >= m))
            })
            .collect();
        let padding = Tensor::from_vec(padding.clone(), (batch, m), &Device::Cpu).unwrap();
        let mask = AttentionMask::none().with_key_padding(padding);
        let attended = scaled_dot_product_attention(&q, &k, &v, &mask, &SdpaOptions::default()).unwrap();
        let weights = values(&attended.weights);
        let output = values(&attended.output);
        prop_assert!(weights.iter().chain(&output).all(|x| x.is_finite()));
        for (b, &padded) in padded_per_batch.iter().enumerate().take(batch) {
            let all_padded = padded >= m;
            for row in 0..heads * n {
                let start = (b * heads * n + row) * m;
                let sum: f64 = weights[start..start + m].iter().sum();
                if all_padded {
                    prop_assert_eq!(sum, 0.0);
                    let out_start = (b * heads * n + row) * d;
                    prop_assert!(output[out_start..out_start + d].iter().all(|&x| x == 0.0));
                } else {
                    prop_assert!((sum - 1.0).abs() < 1e-6, "row sum {}", sum);
                }
            }
        }
    }

    /// Causal weights are exactly zero above the diagonal.
    #[test]
    fn causal_weights_are_zero_above_the_diagonal(
        (batch, heads, n, m, d) in dims(),
        seed in any::<u64>(),
    ) {
        let q = seeded(&[batch, heads, n, d], seed, DType::F32);
        let k = seeded(&[batch, heads, m, d], seed ^ 1, DType::F32);
        let v = seeded(&[batch, heads, m, d], seed ^ 2, DType::F32);
        let attended = scaled_dot_product_attention(&q, &k, &v, &AttentionMask::causal(), &SdpaOptions::default()).unwrap();
        let weights = values(&attended.weights);
        for (index, w) in weights.iter().enumerate() {
            let (row, col) = ((index / m) % n, index % m);
            if col > row {
                prop_assert_eq!(*w, 0.0);
            }
        }
    }

    /// §2.1: every row of softmax(WᵀX) sums to one and is non-negative.
    #[test]
    fn attention_matrix_rows_are_distributions(d in 1usize..6, n in 1usize..8, m in 1usize..8, seed in any::<u64>()) {
        let w = (seeded(&[d, n], seed, DType::F64) * 20.0).unwrap();
        let x = seeded(&[d, m], seed ^ 7, DType::F64);
        let a = attention_matrix(&w, &x).unwrap();
        prop_assert_eq!(a.dims(), &[n, m]);
        let a = values(&a);
        for row in a.chunks(m) {
            prop_assert!(row.iter().all(|&x| (0.0..=1.0).contains(&x)));
            prop_assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        }
    }

    /// Self-attention without positional input is permutation-equivariant:
    /// permuting the tokens permutes the output rows and the weights.
    #[test]
    fn multi_head_self_attention_is_permutation_equivariant(
        n in 1usize..8,
        heads in prop_oneof![Just(1usize), Just(2), Just(4)],
        seed in any::<u64>(),
        rotation in 0usize..8,
    ) {
        let embed_dim = 8;
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
        let mha = MultiHeadAttention::new(&MultiHeadAttentionConfig::new(embed_dim, heads), vb).unwrap();
        for (index, var) in varmap.all_vars().iter().enumerate() {
            var.set(&seeded(var.dims(), seed ^ index as u64, DType::F64)).unwrap();
        }
        let x = seeded(&[1, n, embed_dim], seed ^ 99, DType::F64);
        // A permutation: rotate by `rotation`, then reverse.
        let permutation: Vec<u32> = (0..n).map(|i| ((n - 1 - i + rotation) % n) as u32).collect();
        let index = Tensor::new(permutation.as_slice(), &Device::Cpu).unwrap();
        let permuted = x.index_select(&index, 1).unwrap();
        let mask = AttentionMask::none();
        let (out, weights) = mha.forward(&x, &x, &x, &mask, true).unwrap();
        let (out_p, weights_p) = mha.forward(&permuted, &permuted, &permuted, &mask, true).unwrap();
        let expected_out = values(&out.index_select(&index, 1).unwrap());
        for (a, b) in values(&out_p).iter().zip(&expected_out) {
            prop_assert!((a - b).abs() < 1e-12);
        }
        let expected_weights = weights.unwrap().index_select(&index, 2).unwrap().index_select(&index, 3).unwrap();
        for (a, b) in values(&weights_p.unwrap()).iter().zip(&values(&expected_weights)) {
            prop_assert!((a - b).abs() < 1e-12);
        }
    }
}

#[test]
fn fully_masked_rows_have_finite_zero_gradients() {
    let q = Var::from_tensor(&seeded(&[1, 1, 2, 3], 1, DType::F32)).unwrap();
    let k = Var::from_tensor(&seeded(&[1, 1, 2, 3], 2, DType::F32)).unwrap();
    let v = Var::from_tensor(&seeded(&[1, 1, 2, 3], 3, DType::F32)).unwrap();
    let blocked = Tensor::new(
        &[[f32::NEG_INFINITY, f32::NEG_INFINITY], [0.0, 0.0]],
        &Device::Cpu,
    )
    .unwrap();
    let mask = AttentionMask::none().with_additive(blocked);
    let attended =
        scaled_dot_product_attention(&q, &k, &v, &mask, &SdpaOptions::default()).unwrap();
    let weights = values(&attended.weights);
    assert_eq!(
        &weights[..2],
        &[0.0, 0.0],
        "the all -inf row attends to nothing"
    );
    assert!((weights[2] + weights[3] - 1.0).abs() < 1e-6);
    let grads = attended.output.sum_all().unwrap().backward().unwrap();
    for var in [&q, &k, &v] {
        assert!(values(grads.get(var.as_tensor()).unwrap())
            .iter()
            .all(|g| g.is_finite()));
    }
    let dq = values(grads.get(q.as_tensor()).unwrap());
    assert!(
        dq[..3].iter().all(|&g| g == 0.0),
        "no gradient reaches a query that sees nothing"
    );
}

#[test]
fn shape_errors_name_the_tensor() {
    let q = seeded(&[2, 4], 1, DType::F32);
    let cases = [
        (
            "k",
            seeded(&[2, 5], 2, DType::F32),
            seeded(&[2, 4], 3, DType::F32),
        ),
        (
            "v",
            seeded(&[2, 4], 2, DType::F32),
            seeded(&[3, 4], 3, DType::F32),
        ),
        (
            "k",
            seeded(&[1, 2, 4], 2, DType::F32),
            seeded(&[2, 4], 3, DType::F32),
        ),
    ];
    for (culprit, k, v) in cases {
        let error = scaled_dot_product_attention(
            &q,
            &k,
            &v,
            &AttentionMask::none(),
            &SdpaOptions::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(error.starts_with(&format!("tensor `{culprit}`")), "{error}");
    }
    let error = scaled_dot_product_attention(
        &q,
        &q,
        &q,
        &AttentionMask::none()
            .with_key_padding(Tensor::zeros((1, 3), DType::U8, &Device::Cpu).unwrap()),
        &SdpaOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("key_padding") && error.contains("(1, 2)"),
        "{error}"
    );
    let error = MultiHeadAttention::new(
        &MultiHeadAttentionConfig::new(10, 3),
        VarBuilder::zeros(DType::F32, &Device::Cpu),
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("embed_dim") && error.contains("not divisible"),
        "{error}"
    );
}
