//! The fused kernel agrees with the exact path: outputs, log-sum-exp,
//! gradients and weights on demand, on every SIMD path this machine has and
//! always on the portable one, with default and deliberately awkward tiles.
//!
//! The reference is the exact path run in f64 on the same (f32-valued)
//! inputs, so the comparison measures the fused kernel's error alone. Errors
//! are relative to the largest magnitude of the reference tensor
//! (`max |fused − exact| ≤ 1e-5 · max |exact|`).

mod common;

use attnflow_core::{
    attend, fused_attention, fused_attention_weights, fused_unsupported_reason,
    scaled_dot_product_attention, AttentionMask, FusedOptions, MultiHeadAttention,
    MultiHeadAttentionConfig, SdpaOptions, SimdPath, Tiling,
};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use common::{seeded, values};
use proptest::prelude::*;

const TOLERANCE: f64 = 1e-5;

/// One attention problem.
#[derive(Clone, Debug)]
struct Case {
    batch: usize,
    heads: usize,
    kv_heads: usize,
    n: usize,
    m: usize,
    d: usize,
    dv: usize,
    causal: bool,
    /// Per batch, which keys are padding (`None`: no padding mask).
    padding: Option<Vec<Vec<bool>>>,
    seed: u64,
}

impl Case {
    fn new(n: usize, m: usize, d: usize) -> Self {
        Self {
            batch: 1,
            heads: 1,
            kv_heads: 1,
            n,
            m,
            d,
            dv: d,
            causal: false,
            padding: None,
            seed: 7,
        }
    }

    fn inputs(&self) -> (Tensor, Tensor, Tensor) {
        let q = seeded(
            &[self.batch, self.heads, self.n, self.d],
            self.seed,
            DType::F32,
        );
        let k = seeded(
            &[self.batch, self.kv_heads, self.m, self.d],
            self.seed + 1,
            DType::F32,
        );
        // Scaled up so that scores reach well beyond [-1, 1] and the softmax
        // is far from uniform.
        let q = (q * 3.0).unwrap();
        let v = seeded(
            &[self.batch, self.kv_heads, self.m, self.dv],
            self.seed + 2,
            DType::F32,
        );
        (q, k, v)
    }

    fn mask(&self) -> AttentionMask {
        let mut mask = AttentionMask::none().with_causal(self.causal);
        if let Some(padding) = &self.padding {
            let flat: Vec<u8> = padding.iter().flatten().map(|p| *p as u8).collect();
            mask = mask.with_key_padding(
                Tensor::from_vec(flat, (self.batch, self.m), &Device::Cpu).unwrap(),
            );
        }
        mask
    }
}

fn f64_of(t: &Tensor) -> Tensor {
    t.to_dtype(DType::F64).unwrap()
}

/// `max |got − want| ≤ TOLERANCE · max |want|`, and no NaN anywhere.
fn assert_close(got: &Tensor, want: &Tensor, label: &str) {
    assert_close_with_floor(got, want, 0.0, label)
}

/// As [`assert_close`], with the error measured against at least `floor`.
/// A gradient that is exactly zero in exact arithmetic (one visible key:
/// the softmax is constant) is computed as `P ∘ (dP − D)` with `dP ≈ D`, a
/// difference of terms of order `|dO|·|V|` (about 1 here), so it comes out
/// as f32 rounding noise of about 1e-7 around zero; the floor of 0.1 lets
/// that through and nothing larger than 1e-6.
fn assert_close_with_floor(got: &Tensor, want: &Tensor, floor: f64, label: &str) {
    assert_eq!(got.dims(), want.dims(), "{label}: shapes");
    let got = values(got);
    let want = values(want);
    assert!(
        got.iter().all(|g| g.is_finite()),
        "{label}: non-finite value"
    );
    let scale = want.iter().fold(floor, |a, w| a.max(w.abs()));
    let worst = got
        .iter()
        .zip(&want)
        .map(|(g, w)| (g - w).abs())
        .fold(0f64, f64::max);
    assert!(
        worst <= TOLERANCE * scale.max(f64::MIN_POSITIVE),
        "{label}: max error {worst:e} vs largest value {scale:e}"
    );
}

fn paths() -> Vec<SimdPath> {
    SimdPath::ALL
        .into_iter()
        .filter(|p| p.is_available())
        .collect()
}

/// Checks the forward and the gradients of one case against the f64 exact
/// path, for the given path and tiling.
fn check_case(case: &Case, path: SimdPath, tiling: Option<Tiling>) {
    let label = format!("{case:?} path {path} tiling {tiling:?}");
    let (q, k, v) = case.inputs();
    let mask = case.mask();
    let options = FusedOptions {
        scale: None,
        path: Some(path),
        tiling,
    };

    let (q_var, k_var, v_var) = (
        Var::from_tensor(&q).unwrap(),
        Var::from_tensor(&k).unwrap(),
        Var::from_tensor(&v).unwrap(),
    );
    let fused = fused_attention(&q_var, &k_var, &v_var, &mask, &options).unwrap();
    let (q64, k64, v64) = (
        Var::from_tensor(&f64_of(&q)).unwrap(),
        Var::from_tensor(&f64_of(&k)).unwrap(),
        Var::from_tensor(&f64_of(&v)).unwrap(),
    );
    let exact =
        scaled_dot_product_attention(&q64, &k64, &v64, &mask, &SdpaOptions::default()).unwrap();
    assert_close(&fused.output, &exact.output, &format!("{label}: output"));

    // The log-sum-exp is what the weights are recomputed from: check the
    // weights of every head and row against the exact ones.
    let heads: Vec<usize> = (0..case.heads).collect();
    let weights =
        fused_attention_weights(&q, &k, &fused.log_sum_exp, &mask, None, &heads, 0..case.n)
            .unwrap();
    assert_close(&weights, &exact.weights, &format!("{label}: weights"));

    // A loss through the output alone, with a probe so every output element
    // has its own gradient.
    let probe = seeded(fused.output.dims(), case.seed + 3, DType::F32);
    let loss = (&fused.output * &probe).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    let exact_loss = (&exact.output * f64_of(&probe)).unwrap().sum_all().unwrap();
    let exact_grads = exact_loss.backward().unwrap();
    for (name, var, var64) in [
        ("dq", &q_var, &q64),
        ("dk", &k_var, &k64),
        ("dv", &v_var, &v64),
    ] {
        let got = grads.get(var.as_tensor()).expect("fused gradient present");
        let want = exact_grads
            .get(var64.as_tensor())
            .expect("exact gradient present");
        assert_close_with_floor(got, want, 0.1, &format!("{label}: {name}"));
    }
}

fn named_cases() -> Vec<Case> {
    let mut cases = vec![
        Case::new(1, 1, 8),
        Case {
            causal: true,
            batch: 2,
            heads: 3,
            kv_heads: 3,
            ..Case::new(7, 7, 16)
        },
        Case {
            heads: 2,
            kv_heads: 1,
            padding: Some(vec![(0..65).map(|j| j % 5 == 3).collect()]),
            ..Case::new(129, 65, 32)
        },
        Case {
            batch: 2,
            heads: 2,
            kv_heads: 2,
            dv: 24,
            padding: Some(vec![
                (0..200).map(|j| j >= 150).collect(),
                (0..200).map(|j| j < 10).collect(),
            ]),
            ..Case::new(33, 200, 128)
        },
        // Causal with more queries than keys and the other way round.
        Case {
            causal: true,
            ..Case::new(40, 17, 8)
        },
        Case {
            causal: true,
            heads: 4,
            kv_heads: 2,
            ..Case::new(17, 40, 64)
        },
    ];
    // Fully masked rows: key 0 is padding, so causal query 0 sees nothing;
    // and the whole second batch is padding.
    cases.push(Case {
        batch: 2,
        causal: true,
        padding: Some(vec![
            (0..30).map(|j| j == 0 || j == 29).collect(),
            vec![true; 30],
        ]),
        ..Case::new(30, 30, 16)
    });
    cases
}

#[test]
fn fused_matches_exact_on_named_cases_with_every_path() {
    for case in named_cases() {
        for path in paths() {
            check_case(&case, path, None);
            check_case(
                &case,
                path,
                Some(Tiling {
                    query_block: 5,
                    key_block: 7,
                }),
            );
        }
    }
}

#[test]
fn fused_matches_exact_at_n_1000_causal() {
    let case = Case {
        causal: true,
        heads: 2,
        kv_heads: 2,
        ..Case::new(1000, 1000, 64)
    };
    check_case(&case, SimdPath::detect(), None);
}

#[test]
fn fused_matches_exact_at_n_1000_padded_on_the_portable_path() {
    let case = Case {
        padding: Some(vec![(0..1000).map(|j| j > 900 || j % 97 == 0).collect()]),
        ..Case::new(1000, 1000, 64)
    };
    check_case(&case, SimdPath::Portable, None);
}

#[test]
fn fully_masked_rows_give_zero_output_and_gradient() {
    let case = Case {
        batch: 2,
        padding: Some(vec![vec![false; 12], vec![true; 12]]),
        ..Case::new(9, 12, 8)
    };
    let (q, k, v) = case.inputs();
    let q = Var::from_tensor(&q).unwrap();
    let fused = fused_attention(&q, &k, &v, &case.mask(), &FusedOptions::default()).unwrap();
    let masked = values(&fused.output.get(1).unwrap());
    assert!(masked.iter().all(|x| *x == 0.0));
    let lse = values(&fused.log_sum_exp.get(1).unwrap());
    assert!(lse.iter().all(|l| *l == f64::NEG_INFINITY));
    // A sum-all loss sends a stride-0 broadcast gradient into the backward.
    let grads = fused.output.sum_all().unwrap().backward().unwrap();
    let dq = grads.get(q.as_tensor()).unwrap();
    assert!(values(&dq.get(1).unwrap()).iter().all(|g| *g == 0.0));
    assert!(values(dq).iter().all(|g| g.is_finite()));
}

#[test]
fn ranks_two_and_three_and_explicit_scale_work() {
    let q = seeded(&[2, 10, 8], 1, DType::F32);
    let k = seeded(&[2, 13, 8], 2, DType::F32);
    let v = seeded(&[2, 13, 5], 3, DType::F32);
    let options = FusedOptions::with_scale(Some(0.7));
    let fused = fused_attention(&q, &k, &v, &AttentionMask::causal(), &options).unwrap();
    assert_eq!(fused.log_sum_exp.dims(), [2, 10]);
    let exact = scaled_dot_product_attention(
        &f64_of(&q),
        &f64_of(&k),
        &f64_of(&v),
        &AttentionMask::causal(),
        &SdpaOptions { scale: Some(0.7) },
    )
    .unwrap();
    assert_close(&fused.output, &exact.output, "rank 3");

    let single = fused_attention(
        &q.get(0).unwrap(),
        &k.get(0).unwrap(),
        &v.get(0).unwrap(),
        &AttentionMask::none(),
        &FusedOptions::default(),
    )
    .unwrap();
    assert_eq!(single.output.dims(), [10, 5]);
    assert_eq!(single.log_sum_exp.dims(), [10]);
}

#[test]
fn weights_on_demand_return_only_the_chosen_heads_and_rows() {
    let case = Case {
        heads: 4,
        kv_heads: 2,
        causal: true,
        ..Case::new(50, 50, 16)
    };
    let (q, k, v) = case.inputs();
    let fused = fused_attention(&q, &k, &v, &case.mask(), &FusedOptions::default()).unwrap();
    let weights = fused_attention_weights(
        &q,
        &k,
        &fused.log_sum_exp,
        &case.mask(),
        None,
        &[3, 0],
        20..23,
    )
    .unwrap();
    assert_eq!(weights.dims(), [1, 2, 3, 50]);
    let exact = scaled_dot_product_attention(
        &f64_of(&q),
        &f64_of(&k),
        &f64_of(&v),
        &case.mask(),
        &SdpaOptions::default(),
    )
    .unwrap()
    .weights;
    for (slot, head) in [(0, 3), (1, 0)] {
        let want = exact
            .get(0)
            .unwrap()
            .get(head)
            .unwrap()
            .narrow(0, 20, 3)
            .unwrap();
        let got = weights.get(0).unwrap().get(slot).unwrap();
        assert_close(&got, &want, &format!("head {head}"));
    }
    // Rows sum to one.
    for row_sum in values(&weights.sum(3).unwrap()) {
        assert!((row_sum - 1.0).abs() < 1e-5);
    }
    let bad_head =
        fused_attention_weights(&q, &k, &fused.log_sum_exp, &case.mask(), None, &[4], 0..1);
    assert!(bad_head.unwrap_err().to_string().contains("head 4"));
    let bad_rows =
        fused_attention_weights(&q, &k, &fused.log_sum_exp, &case.mask(), None, &[0], 40..51);
    assert!(bad_rows.unwrap_err().to_string().contains("rows"));
}

#[test]
fn unsupported_inputs_are_refused_by_the_fused_kernel_and_served_by_attend() {
    let q = seeded(&[1, 1, 70, 8], 1, DType::F32);
    let k = seeded(&[1, 1, 70, 8], 2, DType::F32);
    let v = seeded(&[1, 1, 70, 8], 3, DType::F32);
    let additive = AttentionMask::none().with_additive(seeded(&[70, 70], 4, DType::F32));
    let reason = fused_unsupported_reason(&q, &k, &v, &additive).unwrap();
    assert!(reason.contains("additive"), "{reason}");
    assert!(fused_attention(&q, &k, &v, &additive, &FusedOptions::default()).is_err());
    let via_attend = attend(&q, &k, &v, &additive, &SdpaOptions::default()).unwrap();
    let exact = scaled_dot_product_attention(&q, &k, &v, &additive, &SdpaOptions::default())
        .unwrap()
        .output;
    assert_close(&via_attend, &exact, "attend with an additive mask");

    // f64 goes through the exact path.
    let via_attend = attend(
        &f64_of(&q),
        &f64_of(&k),
        &f64_of(&v),
        &AttentionMask::causal(),
        &SdpaOptions::default(),
    )
    .unwrap();
    assert_eq!(via_attend.dtype(), DType::F64);

    let tiny = FusedOptions {
        tiling: Some(Tiling {
            query_block: 0,
            key_block: 8,
        }),
        ..FusedOptions::default()
    };
    let error = fused_attention(&q, &k, &v, &AttentionMask::none(), &tiny).unwrap_err();
    assert!(error.to_string().contains("tiling"), "{error}");
    let bad_padding = AttentionMask::none()
        .with_key_padding(Tensor::zeros((1, 3), DType::U8, &Device::Cpu).unwrap());
    let error = fused_attention(&q, &k, &v, &bad_padding, &FusedOptions::default()).unwrap_err();
    assert!(error.to_string().contains("key_padding"), "{error}");
}

#[test]
fn multi_head_attention_without_weights_uses_the_fused_path_and_agrees() {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let block = MultiHeadAttention::new(&MultiHeadAttentionConfig::new(32, 4), vb).unwrap();
    let x = seeded(&[2, 80, 32], 9, DType::F32);
    let mask = AttentionMask::causal();
    let (fast, none) = block.forward(&x, &x, &x, &mask, false).unwrap();
    assert!(none.is_none());
    let (exact, weights) = block.forward(&x, &x, &x, &mask, true).unwrap();
    assert!(weights.is_some());
    assert_close(&fast, &exact, "multi-head output");
    // Training through the fused path reaches every projection.
    let grads = fast.sqr().unwrap().sum_all().unwrap().backward().unwrap();
    for var in varmap.all_vars() {
        let grad = grads
            .get(var.as_tensor())
            .expect("every Var has a gradient");
        let grad = values(grad);
        assert!(grad.iter().all(|g| g.is_finite()));
        assert!(grad.iter().any(|g| *g != 0.0));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn fused_matches_exact_on_random_shapes(
        n in 1usize..48,
        m in 1usize..48,
        d in prop::sample::select(vec![8usize, 16, 24, 64, 128]),
        dv in 1usize..20,
        causal in any::<bool>(),
        pad_every in prop::option::of(2usize..6),
        query_block in 1usize..20,
        key_block in 1usize..40,
        portable in any::<bool>(),
        seed in 0u64..1000,
    ) {
        let case = Case {
            dv,
            causal,
            padding: pad_every.map(|every| vec![(0..m).map(|j| j % every == 1).collect()]),
            seed,
            ..Case::new(n, m, d)
        };
        let path = if portable { SimdPath::Portable } else { SimdPath::detect() };
        check_case(&case, path, Some(Tiling { query_block, key_block }));
    }
}
