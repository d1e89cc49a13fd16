//! Each training op against its reference composition of candle ops: the
//! forward value and the gradients against the reference run in f64 (by
//! candle's autograd), and central finite differences of the op itself.

mod common;

use attnflow_kernels::{
    activation, add_positions, cross_entropy, layer_norm, linear, linear_activation,
    linear_after_activation, linear_after_gelu, linear_from_heads, linear_to_heads, rms_norm,
    rotary, softmax_last_dim, swiglu, Activation, RotaryConfig, RotaryScaling, RotaryTables,
};
use candle_core::{Device, Tensor};
use common::{check, Seeded};

const ACTIVATIONS: [Activation; 4] = [
    Activation::Identity,
    Activation::GeluTanh,
    Activation::GeluErf,
    Activation::Silu,
];

#[test]
fn linear_on_panels_matches_the_reference() {
    // 40 tokens: the forward lays the weight out in panels (70 outputs: a
    // whole panel and a partial one); the backward is unchanged.
    let mut rng = Seeded(12);
    let (tokens, inputs, outputs) = (40, 12, 70);
    let x = rng.values(tokens * inputs, 1.0);
    let w = rng.values(outputs * inputs, 0.5);
    let b = rng.values(outputs, 0.5);
    let operands = vec![
        (x, vec![tokens, inputs]),
        (w, vec![outputs, inputs]),
        (b, vec![outputs]),
    ];
    for activation in ACTIVATIONS {
        check(
            &format!("linear on panels then {activation:?}"),
            &operands,
            &|t| linear_activation(&t[0], &t[1], Some(&t[2]), activation).unwrap(),
        );
    }
}

#[test]
fn linear_maps_match_the_reference() {
    let mut rng = Seeded(11);
    let (batch, seq, inputs, outputs, heads) = (2, 5, 12, 8, 4);
    let x = rng.values(batch * seq * inputs, 1.0);
    let w = rng.values(outputs * inputs, 0.5);
    let b = rng.values(outputs, 0.5);
    let operands = |x: &[f32], x_shape: Vec<usize>, bias: bool| {
        let mut all = vec![(x.to_vec(), x_shape), (w.clone(), vec![outputs, inputs])];
        if bias {
            all.push((b.clone(), vec![outputs]));
        }
        all
    };
    let rows = vec![batch, seq, inputs];
    check("linear", &operands(&x, rows.clone(), true), &|t| {
        linear(&t[0], &t[1], Some(&t[2])).unwrap()
    });
    check(
        "linear without bias",
        &operands(&x, rows.clone(), false),
        &|t| linear(&t[0], &t[1], None).unwrap(),
    );
    for activation in ACTIVATIONS {
        check(
            &format!("linear then {activation:?}"),
            &operands(&x, rows.clone(), true),
            &|t| linear_activation(&t[0], &t[1], Some(&t[2]), activation).unwrap(),
        );
        check(
            &format!("linear after {activation:?}"),
            &operands(&x, rows.clone(), true),
            &|t| linear_after_activation(&t[0], &t[1], Some(&t[2]), activation).unwrap(),
        );
    }
    check(
        "linear after gelu",
        &operands(&x, rows.clone(), true),
        &|t| linear_after_gelu(&t[0], &t[1], Some(&t[2])).unwrap(),
    );
    check("linear to heads", &operands(&x, rows, true), &|t| {
        linear_to_heads(&t[0], &t[1], Some(&t[2]), heads).unwrap()
    });
    check(
        "linear from heads",
        &operands(&x, vec![batch, heads, seq, inputs / heads], true),
        &|t| linear_from_heads(&t[0], &t[1], Some(&t[2])).unwrap(),
    );
}

#[test]
fn head_layouts_are_the_transposes_they_stand_for() {
    let mut rng = Seeded(5);
    let (batch, seq, width, heads) = (3, 4, 8, 2);
    let x = common::tensor(&rng.values(batch * seq * width, 1.0), &[batch, seq, width]);
    let w = common::tensor(&rng.values(width * width, 1.0), &[width, width]);
    let rows = linear(&x, &w, None).unwrap();
    let split = linear_to_heads(&x, &w, None, heads).unwrap();
    let want = rows
        .reshape((batch, seq, heads, width / heads))
        .unwrap()
        .transpose(1, 2)
        .unwrap()
        .contiguous()
        .unwrap();
    assert_eq!(common::values(&split), common::values(&want));
    let merged = linear_from_heads(&split, &w, None).unwrap();
    let want = linear(&rows, &w, None).unwrap();
    assert_eq!(common::values(&merged), common::values(&want));
}

#[test]
fn norms_match_the_reference() {
    let mut rng = Seeded(13);
    let (rows, width) = (6, 37);
    let mut x = rng.values(rows * width, 2.0);
    // An offset row: the centring must not lose it.
    for value in &mut x[..width] {
        *value += 5.0;
    }
    let g = rng.values(width, 1.0);
    let b = rng.values(width, 1.0);
    check(
        "layer_norm",
        &[
            (x.clone(), vec![2, 3, width]),
            (g.clone(), vec![width]),
            (b, vec![width]),
        ],
        &|t| layer_norm(&t[0], &t[1], Some(&t[2]), 1e-5).unwrap(),
    );
    check(
        "layer_norm without shift",
        &[(x.clone(), vec![rows, width]), (g.clone(), vec![width])],
        &|t| layer_norm(&t[0], &t[1], None, 1e-5).unwrap(),
    );
    check(
        "rms_norm",
        &[(x, vec![rows, width]), (g, vec![width])],
        &|t| rms_norm(&t[0], &t[1], 1e-6).unwrap(),
    );
}

#[test]
fn activations_match_the_reference() {
    let mut rng = Seeded(17);
    let x = rng.values(4 * 9, 3.0);
    for kind in ACTIVATIONS {
        check(&format!("{kind:?}"), &[(x.clone(), vec![4, 9])], &|t| {
            activation(&t[0], kind).unwrap()
        });
    }
    check(
        "swiglu",
        &[(x.clone(), vec![4, 9]), (rng.values(36, 2.0), vec![4, 9])],
        &|t| swiglu(&t[0], &t[1]).unwrap(),
    );
}

#[test]
fn softmax_and_cross_entropy_match_the_reference() {
    let mut rng = Seeded(23);
    let (batch, seq, vocab) = (3, 5, 21);
    let logits = rng.values(batch * seq * vocab, 4.0);
    check(
        "softmax",
        &[(logits.clone(), vec![batch, seq, vocab])],
        &|t| softmax_last_dim(&t[0]).unwrap(),
    );
    let targets: Vec<u32> = (0..batch * seq)
        .map(|_| rng.below(vocab as u64) as u32)
        .collect();
    let weights: Vec<f32> = (0..batch * seq)
        .map(|i| if i % 4 == 0 { 0.0 } else { 1.0 })
        .collect();
    let total = f64::from(weights.iter().sum::<f32>());
    let targets = Tensor::from_vec(targets, (batch, seq), &Device::Cpu).unwrap();
    let weights = Tensor::from_vec(weights, (batch, seq), &Device::Cpu).unwrap();
    check(
        "cross_entropy",
        &[(logits, vec![batch, seq, vocab])],
        &|t| {
            let weights = weights.to_dtype(t[0].dtype()).unwrap();
            cross_entropy(&t[0], &targets, &weights, total).unwrap()
        },
    );
}

#[test]
fn positions_and_rotary_match_the_reference() {
    let mut rng = Seeded(19);
    check(
        "add_positions",
        &[
            (rng.values(3 * 4 * 6, 1.0), vec![3, 4, 6]),
            (rng.values(7 * 6, 1.0), vec![7, 6]),
        ],
        &|t| add_positions(&t[0], &t[1]).unwrap(),
    );
    for (dims, scaling) in [
        (8, RotaryScaling::None),
        (6, RotaryScaling::Linear { factor: 2.0 }),
        (
            8,
            RotaryScaling::Llama3 {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 16,
            },
        ),
    ] {
        let tables = RotaryTables::new(
            &RotaryConfig {
                dims,
                theta: 10_000.0,
                scaling,
            },
            20,
        );
        check(
            &format!("rotary {dims} dims {scaling:?}"),
            &[(rng.values(2 * 3 * 5 * 8, 1.0), vec![2, 3, 5, 8])],
            &|t| rotary(&t[0], &tables, 4).unwrap(),
        );
    }
}
