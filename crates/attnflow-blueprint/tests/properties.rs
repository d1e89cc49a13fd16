//! Invariants of the account, the receptive field and the scaling fit,
//! over randomly drawn model sizes.

use attnflow_blueprint::cost::visible_entries;
use attnflow_blueprint::ops::Mask;
use attnflow_blueprint::{
    account, scale, summary, Blueprint, Convention, Cost, CostOptions, Counting, Reach, Spec,
};
use proptest::prelude::*;

/// A decoder with every costed op kind; sizes come from `--set`-style overrides.
const DECODER: &str = r#"[dims]
batch = 2
seq = 16
vocab = 50
d_model = 32
heads = 4
layers = 2
window = 4
d_ff = "4 * d_model"

[[node]]
name = "tokens"
op = "input"
shape = ["batch", "seq"]
dtype = "index"

[[node]]
name = "embed"
op = "embedding"
input = "tokens"
vocab = "vocab"
dim = "d_model"

[[node]]
name = "positions"
op = "positional"
input = "embed"
kind = "learned"
max_len = "seq"

[[block]]
name = "block"
repeat = "layers"
input = "positions"
output = "ffn_residual"

[[block.node]]
name = "norm1"
op = "layer_norm"
input = "in"

[[block.node]]
name = "attn"
op = "attention"
input = "norm1"
heads = "heads"
mask = "window"
window = "window"
rotary = true

[[block.node]]
name = "attn_residual"
op = "add"
input = ["in", "attn"]

[[block.node]]
name = "norm2"
op = "rms_norm"
input = "attn_residual"

[[block.node]]
name = "ffn"
op = "feed_forward"
input = "norm2"
hidden = "d_ff"
activation = "gelu_tanh"
gated = true

[[block.node]]
name = "ffn_residual"
op = "add"
input = ["attn_residual", "ffn"]

[[node]]
name = "norm"
op = "layer_norm"
input = "block"

[[node]]
name = "probabilities"
op = "softmax"
input = "norm"

[[node]]
name = "pooled"
op = "pool"
input = "norm"
kind = "mean"

[[node]]
name = "head"
op = "head"
input = "norm"
out = "vocab"
tie = "embed"
"#;

fn decoder(dims: &[(&str, u64)]) -> Blueprint {
    let overrides: Vec<(String, String)> = dims
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect();
    Blueprint::from_text("decoder.toml", DECODER, &overrides).unwrap()
}

fn options() -> impl Strategy<Value = CostOptions> {
    (0usize..3, any::<bool>()).prop_map(|(convention, exact)| CostOptions {
        convention: Convention::ALL[convention].1,
        counting: if exact {
            Counting::Exact
        } else {
            Counting::Dense
        },
        ..CostOptions::default()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn costs_are_additive_over_nodes(
        batch in 1u64..4, seq in 1u64..40, heads in 1u64..5, head_dim in 1u64..9,
        layers in 1u64..4, window in 1u64..10, options in options(),
    ) {
        let blueprint = decoder(&[
            ("batch", batch), ("seq", seq), ("heads", heads),
            ("d_model", heads * head_dim * 2), ("layers", layers), ("window", window),
        ]);
        let account = account(&blueprint, options);
        let sum = account.nodes.iter().fold(Cost::default(), |sum, node| sum + node.cost);
        prop_assert_eq!(sum, account.total);
        let by_op = account.by_op.values().fold(Cost::default(), |sum, cost| sum + *cost);
        prop_assert_eq!(by_op, account.total);
        prop_assert_eq!(account.total.forward_flops, account.total.flops.total());
        prop_assert_eq!(account.total.training_flops, 3 * account.total.forward_flops);
    }

    #[test]
    fn doubling_batch_doubles_flops_and_memory(
        batch in 1u64..5, seq in 1u64..40, layers in 1u64..4, window in 1u64..10, options in options(),
    ) {
        let single = account(&decoder(&[("batch", batch), ("seq", seq), ("layers", layers), ("window", window)]), options).total;
        let double = account(&decoder(&[("batch", 2 * batch), ("seq", seq), ("layers", layers), ("window", window)]), options).total;
        prop_assert_eq!(double.forward_flops, 2 * single.forward_flops);
        prop_assert_eq!(double.flops, single.flops.times(2));
        prop_assert_eq!(double.macs, 2 * single.macs);
        prop_assert_eq!(double.activation_bytes, 2 * single.activation_bytes);
        prop_assert_eq!(double.params, single.params);
    }

    /// With a full mask, attention's FLOPs are `a·n² + b·n` in the sequence
    /// length n: the quadratic part (f(2n) − 2f(n) = 2a·n²) scales as n².
    #[test]
    fn attention_flops_grow_as_n_squared(
        n in 1u64..200, m in 1u64..200, heads in 1u64..5, options in options(),
    ) {
        let attention = |seq: u64| {
            let blueprint = decoder(&[("seq", seq), ("heads", heads), ("d_model", heads * 8), ("window", 1_000_000)]);
            account(&blueprint, options).by_op["attention"].forward_flops as i128
        };
        let quadratic = |seq: u64| attention(2 * seq) - 2 * attention(seq);
        let (n, m) = (i128::from(n), i128::from(m));
        prop_assert_eq!(quadratic(n as u64) * m * m, quadratic(m as u64) * n * n);
        prop_assert!(quadratic(n as u64) > 0);
    }

    /// L layers of a causal window w: the last position sees L·(w − 1) + 1
    /// input positions (capped by the sequence).
    #[test]
    fn sliding_windows_compose(window in 1u64..12, layers in 1u64..8, seq in 1u64..120) {
        let blueprint = decoder(&[("window", window), ("layers", layers), ("seq", seq)]);
        let summary = summary(&blueprint);
        let head = summary.receptive.iter().find(|entry| entry.output == "head").unwrap();
        prop_assert_eq!(head.input.as_str(), "tokens");
        prop_assert_eq!(head.seen_by_last, (layers * (window - 1) + 1).min(seq));
        prop_assert_eq!(head.seen_by_first, 1);
        let pooled = summary.receptive.iter().find(|entry| entry.output == "pooled").unwrap();
        prop_assert_eq!(pooled.reach, Reach::All);
        prop_assert_eq!(pooled.seen_by_first, seq);
    }

    /// Exact counts keep only visible entries: causal gives n(n+1)/2.
    #[test]
    fn exact_causal_entries(queries in 1u64..3000) {
        prop_assert_eq!(visible_entries(queries, queries, Mask::Causal), u128::from(queries) * u128::from(queries + 1) / 2);
        prop_assert_eq!(visible_entries(queries, queries, Mask::None), u128::from(queries) * u128::from(queries));
    }

    /// The scale command's fit is within 0.05 of the true exponent: 2 for
    /// full attention's FLOPs and 1 for the rest once n ≫ d.
    #[test]
    fn fitted_exponent_is_close(start in 11u32..14, points in 3usize..6, options in options()) {
        let spec = Spec::parse("decoder.toml", DECODER).unwrap();
        let values: Vec<u64> = (0..points).map(|step| 1u64 << (start as usize + step)).collect();
        let overrides = vec![("window".to_string(), "100000000".to_string()), ("d_model".to_string(), "16".to_string())];
        let full = CostOptions { counting: Counting::Dense, ..options };
        let report = scale(&spec, "seq", &values, &overrides, full, |_| {}).unwrap();
        let attention = report.attention.unwrap();
        prop_assert!((attention.exponent - 2.0).abs() < 0.05, "{:?}", attention);
        // Learned positions grow with seq (max_len = seq, 16 wide); nothing else does.
        for pair in report.points.windows(2) {
            prop_assert_eq!(pair[1].params - pair[0].params, u128::from(pair[1].value - pair[0].value) * 16);
        }
        let linear = scale(&spec, "batch", &[1, 2, 4, 8], &overrides, options, |_| {}).unwrap();
        prop_assert!((linear.time.unwrap().exponent - 1.0).abs() < 1e-9);
        prop_assert!((linear.memory.unwrap().exponent - 1.0).abs() < 1e-9);
    }
}

#[test]
fn receptive_field_of_full_and_causal_masks() {
    let full = DECODER.replace("mask = \"window\"\nwindow = \"window\"", "mask = \"none\"");
    let blueprint = Blueprint::from_text("full.toml", &full, &[]).unwrap();
    let head = summary(&blueprint)
        .receptive
        .into_iter()
        .find(|entry| entry.output == "head")
        .unwrap();
    assert_eq!((head.seen_by_first, head.seen_by_last), (16, 16));
    let causal = DECODER.replace(
        "mask = \"window\"\nwindow = \"window\"",
        "mask = \"causal\"",
    );
    let blueprint = Blueprint::from_text("causal.toml", &causal, &[]).unwrap();
    let head = summary(&blueprint)
        .receptive
        .into_iter()
        .find(|entry| entry.output == "head")
        .unwrap();
    assert_eq!((head.seen_by_first, head.seen_by_last), (1, 16));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Damaged specs give errors, never panics, and errors point inside the text.
    #[test]
    fn damaged_specs_never_panic(cut in 0usize..DECODER.len(), junk in "[a-z0-9_=\\[\\]\" .*/-]{0,6}", drop in 0usize..12) {
        let mut text = DECODER.to_string();
        let cut = (0..=cut).rev().find(|index| text.is_char_boundary(*index)).unwrap_or(0);
        let end = (cut + drop).min(text.len());
        let end = (end..=text.len()).find(|index| text.is_char_boundary(*index)).unwrap_or(text.len());
        text.replace_range(cut..end, &junk);
        match Blueprint::from_text("damaged.toml", &text, &[]) {
            Ok(blueprint) => {
                let _ = account(&blueprint, CostOptions::default());
                let _ = summary(&blueprint);
            }
            Err(error) => {
                let spec = error.spec().expect("text faults are spec faults");
                prop_assert!(spec.location.line >= 1 && spec.location.line <= text.lines().count() + 1);
                prop_assert!(spec.location.span.end <= text.len());
            }
        }
    }
}

/// A pure `n × n` product: FLOPs are exactly `c·n²`, so the fit must give 2.
#[test]
fn fit_recovers_an_exact_square_law() {
    let text = r#"[dims]
seq = 8
d = 16

[[node]]
name = "x"
op = "input"
shape = ["seq", "d"]

[[node]]
name = "gram"
op = "matmul"
input = ["x", "x"]
transpose_b = true
"#;
    let spec = Spec::parse("gram.toml", text).unwrap();
    for (name, convention) in [
        ("granular", Convention::Granular),
        ("matmul", Convention::Matmul),
    ] {
        let options = CostOptions {
            convention,
            ..CostOptions::default()
        };
        let report = scale(&spec, "seq", &[8, 16, 32, 64, 100], &[], options, |_| {}).unwrap();
        let time = report.time.unwrap();
        assert!((time.exponent - 2.0).abs() < 1e-9, "{name}: {time:?}");
        assert!((time.r_squared - 1.0).abs() < 1e-9);
        // Memory: the n×n output dominates, but the n×d input is there too.
        let memory = report.memory.unwrap();
        assert!(memory.exponent > 1.0 && memory.exponent < 2.0, "{memory:?}");
    }
}
