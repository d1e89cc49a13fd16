//! The inference variants give the training variants' bits on the same
//! input, and neither depends on the number of threads.

mod common;

use attnflow_kernels::{
    activate, activation, add_layer_norm_in_place, add_positions, add_positions_in_place,
    concat_rows, cross_entropy, cross_entropy_value, embed_into, layer_norm, layer_norm_into,
    linear, linear_activation, linear_into, rms_norm, rms_norm_into, rotary, rotary_in_place,
    softmax_last_dim, softmax_rows_in_place, swiglu, swiglu_into, swiglu_packed_into, Activation,
    HeadsLayout, RotaryConfig, RotaryScaling, RotaryTables, Weight,
};
use candle_core::{DType, Device, Tensor};
use common::{bits, f32_values, on_threads, tensor, var, Seeded};

const ACTIVATIONS: [Activation; 4] = [
    Activation::Identity,
    Activation::GeluTanh,
    Activation::GeluErf,
    Activation::Silu,
];

/// Sizes big enough for every kernel to split its work over threads and
/// blocks (products over four column blocks, row kernels over many row
/// blocks).
const TOKENS: usize = 8 * 64;
const INPUTS: usize = 128;
const OUTPUTS: usize = 256;

#[test]
fn linear_inference_is_linear_training_bit_for_bit() {
    let mut rng = Seeded(1);
    let x = rng.values(TOKENS * INPUTS, 1.0);
    let w = rng.values(OUTPUTS * INPUTS, 0.1);
    let b = rng.values(OUTPUTS, 0.1);
    for activation in ACTIVATIONS {
        for bias in [None, Some(b.as_slice())] {
            let mut out = vec![0f32; TOKENS * OUTPUTS];
            linear_into(
                &mut out,
                &x,
                Weight::new(&w, OUTPUTS, INPUTS),
                bias,
                activation,
            );
            let trained = linear_activation(
                &tensor(&x, &[TOKENS, INPUTS]),
                &tensor(&w, &[OUTPUTS, INPUTS]),
                bias.map(|b| tensor(b, &[OUTPUTS])).as_ref(),
                activation,
            )
            .unwrap();
            assert_eq!(
                bits(&out),
                bits(&f32_values(&trained)),
                "{activation:?}, bias {}",
                bias.is_some()
            );
        }
    }
}

#[test]
fn a_transposed_weight_gives_the_same_product() {
    // GPT-2's Conv1D stores W as (inputs, outputs).
    let mut rng = Seeded(2);
    let (tokens, inputs, outputs) = (37, 48, 80);
    let x = rng.values(tokens * inputs, 1.0);
    let w = rng.values(outputs * inputs, 0.2);
    let mut transposed = vec![0f32; w.len()];
    for o in 0..outputs {
        for i in 0..inputs {
            transposed[i * outputs + o] = w[o * inputs + i];
        }
    }
    let mut a = vec![0f32; tokens * outputs];
    let mut b = vec![0f32; tokens * outputs];
    linear_into(
        &mut a,
        &x,
        Weight::new(&w, outputs, inputs),
        None,
        Activation::GeluTanh,
    );
    linear_into(
        &mut b,
        &x,
        Weight::transposed(&transposed, inputs, outputs),
        None,
        Activation::GeluTanh,
    );
    for (a, b) in a.iter().zip(&b) {
        assert!((a - b).abs() <= 1e-5 * (1.0 + a.abs()), "{a} vs {b}");
    }
}

#[test]
fn a_packed_weight_is_the_separate_products_side_by_side() {
    let mut rng = Seeded(3);
    let (tokens, inputs, width) = (21, 32, 16);
    let x = rng.values(tokens * inputs, 1.0);
    let parts: Vec<Vec<f32>> = (0..3).map(|_| rng.values(width * inputs, 0.3)).collect();
    let biases: Vec<Vec<f32>> = (0..3).map(|_| rng.values(width, 0.3)).collect();
    let packed = concat_rows(&[&parts[0], &parts[1], &parts[2]]);
    let packed_bias = concat_rows(&[&biases[0], &biases[1], &biases[2]]);
    let mut together = vec![0f32; tokens * 3 * width];
    linear_into(
        &mut together,
        &x,
        Weight::new(&packed, 3 * width, inputs),
        Some(&packed_bias),
        Activation::Identity,
    );
    for (part, (weight, bias)) in parts.iter().zip(&biases).enumerate() {
        let mut alone = vec![0f32; tokens * width];
        linear_into(
            &mut alone,
            &x,
            Weight::new(weight, width, inputs),
            Some(bias),
            Activation::Identity,
        );
        for t in 0..tokens {
            let row = &together[t * 3 * width + part * width..t * 3 * width + (part + 1) * width];
            for (a, b) in row.iter().zip(&alone[t * width..(t + 1) * width]) {
                assert!(
                    (a - b).abs() <= 1e-5 * (1.0 + a.abs()),
                    "part {part} token {t}"
                );
            }
        }
    }
    // And SwiGLU from a packed [gate | up] product is SwiGLU of the halves.
    let gate_up = &together[..tokens * 2 * width];
    let gate_up: Vec<f32> = (0..tokens)
        .flat_map(|t| gate_up[t * 2 * width..(t + 1) * 2 * width].to_vec())
        .collect();
    let mut packed_out = vec![0f32; tokens * width];
    swiglu_packed_into(&mut packed_out, &gate_up, width);
    let gate: Vec<f32> = (0..tokens)
        .flat_map(|t| gate_up[t * 2 * width..t * 2 * width + width].to_vec())
        .collect();
    let up: Vec<f32> = (0..tokens)
        .flat_map(|t| gate_up[t * 2 * width + width..(t + 1) * 2 * width].to_vec())
        .collect();
    let mut separate = vec![0f32; tokens * width];
    swiglu_into(&mut separate, &gate, &up);
    assert_eq!(bits(&packed_out), bits(&separate));
}

#[test]
fn element_and_row_kernels_match_training_bit_for_bit() {
    let mut rng = Seeded(4);
    let x = rng.values(TOKENS * OUTPUTS, 3.0);
    let residual = rng.values(TOKENS * OUTPUTS, 1.0);
    let gain = rng.values(OUTPUTS, 1.0);
    let shift = rng.values(OUTPUTS, 1.0);
    let shape = [TOKENS, OUTPUTS];
    for kind in ACTIVATIONS {
        let mut values = x.clone();
        activate(kind, &mut values);
        let trained = activation(&tensor(&x, &shape), kind).unwrap();
        assert_eq!(bits(&values), bits(&f32_values(&trained)), "{kind:?}");
    }
    let up = rng.values(x.len(), 1.0);
    let mut product = vec![0f32; x.len()];
    swiglu_into(&mut product, &x, &up);
    let trained = swiglu(&tensor(&x, &shape), &tensor(&up, &shape)).unwrap();
    assert_eq!(bits(&product), bits(&f32_values(&trained)), "swiglu");

    let mut normed = vec![0f32; x.len()];
    layer_norm_into(&mut normed, &x, &gain, Some(&shift), 1e-5);
    let trained = layer_norm(
        &tensor(&x, &shape),
        &tensor(&gain, &[OUTPUTS]),
        Some(&tensor(&shift, &[OUTPUTS])),
        1e-5,
    )
    .unwrap();
    assert_eq!(bits(&normed), bits(&f32_values(&trained)), "layer norm");

    // LN(x + residual) in place equals the sum then the norm.
    let mut fused = x.clone();
    add_layer_norm_in_place(&mut fused, &residual, &gain, Some(&shift), 1e-5);
    let summed: Vec<f32> = x.iter().zip(&residual).map(|(a, b)| a + b).collect();
    let mut want = vec![0f32; x.len()];
    layer_norm_into(&mut want, &summed, &gain, Some(&shift), 1e-5);
    assert_eq!(bits(&fused), bits(&want), "add + layer norm");

    let mut rms = vec![0f32; x.len()];
    rms_norm_into(&mut rms, &x, &gain, 1e-6);
    let trained = rms_norm(&tensor(&x, &shape), &tensor(&gain, &[OUTPUTS]), 1e-6).unwrap();
    assert_eq!(bits(&rms), bits(&f32_values(&trained)), "rms norm");

    let mut soft = x.clone();
    softmax_rows_in_place(&mut soft, OUTPUTS);
    let trained = softmax_last_dim(&tensor(&x, &shape)).unwrap();
    assert_eq!(bits(&soft), bits(&f32_values(&trained)), "softmax");

    let targets: Vec<u32> = (0..TOKENS).map(|t| (t * 7 % OUTPUTS) as u32).collect();
    let weights: Vec<f32> = (0..TOKENS).map(|t| (t % 3) as f32).collect();
    let total = f64::from(weights.iter().sum::<f32>());
    let value = cross_entropy_value(&x, OUTPUTS, &targets, &weights, total).unwrap();
    let trained = cross_entropy(
        &tensor(&x, &shape),
        &Tensor::from_vec(targets.clone(), TOKENS, &Device::Cpu).unwrap(),
        &tensor(&weights, &[TOKENS]),
        total,
    )
    .unwrap();
    assert_eq!(
        value.to_bits(),
        trained.to_scalar::<f32>().unwrap().to_bits(),
        "cross-entropy"
    );
    let mut bad = targets;
    bad[5] = OUTPUTS as u32;
    let error = cross_entropy_value(&x, OUTPUTS, &bad, &weights, total).unwrap_err();
    assert!(
        error.to_string().contains(&format!("target {OUTPUTS}")),
        "{error}"
    );
}

#[test]
fn positions_and_rotary_match_training_bit_for_bit() {
    let mut rng = Seeded(5);
    let (batch, heads, seq, head_dim) = (2, 3, 9, 16);
    let x = rng.values(batch * heads * seq * head_dim, 1.0);
    let tables = RotaryTables::new(
        &RotaryConfig {
            dims: head_dim,
            theta: 500_000.0,
            scaling: RotaryScaling::Llama3 {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 32,
            },
        },
        64,
    );
    let mut turned = x.clone();
    rotary_in_place(
        &mut turned,
        HeadsLayout::contiguous(heads, seq, head_dim),
        (batch, heads, seq),
        &tables,
        11,
    );
    let trained = rotary(&tensor(&x, &[batch, heads, seq, head_dim]), &tables, 11).unwrap();
    assert_eq!(bits(&turned), bits(&f32_values(&trained)), "rotary");

    let table = rng.values(20 * head_dim, 1.0);
    let mut placed = x.clone();
    add_positions_in_place(&mut placed, &table, head_dim, seq, 0);
    let trained = add_positions(
        &tensor(&x, &[batch * heads, seq, head_dim]),
        &tensor(&table, &[20, head_dim]),
    )
    .unwrap();
    assert_eq!(bits(&placed), bits(&f32_values(&trained)), "positions");
}

#[test]
fn rotary_reads_a_packed_product_in_place() {
    // Rotating the query part of a packed (tokens, 3·d) product through a
    // token-row layout equals rotating the contiguous heads.
    let mut rng = Seeded(6);
    let (batch, heads, seq, head_dim) = (2, 2, 5, 8);
    let d = heads * head_dim;
    let packed = rng.values(batch * seq * 3 * d, 1.0);
    let tables = RotaryTables::new(
        &RotaryConfig {
            dims: head_dim,
            theta: 10_000.0,
            scaling: RotaryScaling::None,
        },
        16,
    );
    let mut in_rows = packed.clone();
    rotary_in_place(
        &mut in_rows,
        HeadsLayout::token_rows(seq, 3 * d, head_dim, 0),
        (batch, heads, seq),
        &tables,
        3,
    );
    let mut heads_contiguous = vec![0f32; batch * heads * seq * head_dim];
    for b in 0..batch {
        for h in 0..heads {
            for s in 0..seq {
                let from = (b * seq + s) * 3 * d + h * head_dim;
                let to = ((b * heads + h) * seq + s) * head_dim;
                heads_contiguous[to..to + head_dim].copy_from_slice(&packed[from..from + head_dim]);
            }
        }
    }
    rotary_in_place(
        &mut heads_contiguous,
        HeadsLayout::contiguous(heads, seq, head_dim),
        (batch, heads, seq),
        &tables,
        3,
    );
    for b in 0..batch {
        for h in 0..heads {
            for s in 0..seq {
                let from = (b * seq + s) * 3 * d + h * head_dim;
                let to = ((b * heads + h) * seq + s) * head_dim;
                assert_eq!(
                    bits(&in_rows[from..from + head_dim]),
                    bits(&heads_contiguous[to..to + head_dim])
                );
            }
        }
    }
    // The key and value parts are untouched.
    for t in 0..batch * seq {
        assert_eq!(
            bits(&in_rows[t * 3 * d + d..(t + 1) * 3 * d]),
            bits(&packed[t * 3 * d + d..(t + 1) * 3 * d])
        );
    }
}

#[test]
fn embedding_lookups_name_a_bad_id() {
    let table: Vec<f32> = (0..12).map(|v| v as f32).collect();
    let mut out = vec![0f32; 6];
    embed_into(&mut out, &table, 3, &[2, 0]).unwrap();
    assert_eq!(out, [6.0, 7.0, 8.0, 0.0, 1.0, 2.0]);
    let error = embed_into(&mut out, &table, 3, &[1, 4])
        .unwrap_err()
        .to_string();
    assert!(error.contains("id 4 at position 1"), "{error}");
}

#[test]
fn training_results_do_not_depend_on_the_number_of_threads() {
    let mut rng = Seeded(7);
    let x = rng.values(TOKENS * INPUTS, 1.0);
    let w = rng.values(OUTPUTS * INPUTS, 0.1);
    let b = rng.values(OUTPUTS, 0.1);
    let g = rng.values(OUTPUTS, 1.0);
    let run = |threads: usize| -> Vec<Vec<u32>> {
        on_threads(threads, || {
            let x = var(&x, &[8, 64, INPUTS], DType::F32);
            let w = var(&w, &[OUTPUTS, INPUTS], DType::F32);
            let b = var(&b, &[OUTPUTS], DType::F32);
            let g = var(&g, &[OUTPUTS], DType::F32);
            let h = linear_activation(&x, &w, Some(&b), Activation::GeluErf).unwrap();
            let h = layer_norm(&h, &g, Some(&b), 1e-5).unwrap();
            let h = rms_norm(&h, &g, 1e-5).unwrap();
            let h = activation(&h, Activation::Silu).unwrap();
            let h = softmax_last_dim(&h).unwrap();
            let h = linear(&h, &w.t().unwrap().contiguous().unwrap(), None).unwrap();
            let loss = h.sqr().unwrap().sum_all().unwrap();
            let grads = loss.backward().unwrap();
            let mut out = vec![bits(&f32_values(&h))];
            for v in [&x, &w, &b, &g] {
                out.push(bits(&f32_values(grads.get(v).unwrap())));
            }
            out
        })
    };
    let one = run(1);
    assert_eq!(one, run(2));
    assert_eq!(one, run(3));
}

#[test]
fn products_do_not_depend_on_the_number_of_threads() {
    // Split into one column block per thread from 16 rows on: each output
    // element must come out the same whatever the blocks. Shapes with and
    // without a remainder past the last 64 columns, and one below 16 rows
    // (split by shape only).
    let mut rng = Seeded(9);
    for (m, k, n) in [
        (900, 384, 1152),
        (64, 1536, 384),
        (17, 200, 200),
        (300, 64, 129),
        (5, 1536, 1536),
    ] {
        let x = rng.values(m * k, 1.0);
        let w = rng.values(n * k, 0.1);
        let run = |threads: usize| {
            on_threads(threads, || {
                let mut out = vec![0f32; m * n];
                linear_into(
                    &mut out,
                    &x,
                    Weight::new(&w, n, k),
                    None,
                    Activation::Identity,
                );
                bits(&out)
            })
        };
        let one = run(1);
        for threads in [2, 3, 4] {
            assert_eq!(
                run(threads),
                one,
                "({m} × {k}) · ({k} × {n}) on {threads} threads"
            );
        }
    }
}

#[test]
fn inference_results_do_not_depend_on_the_number_of_threads() {
    let mut rng = Seeded(8);
    let x = rng.values(TOKENS * INPUTS, 1.0);
    let w = rng.values(OUTPUTS * INPUTS, 0.1);
    let b = rng.values(OUTPUTS, 0.1);
    let g = rng.values(OUTPUTS, 1.0);
    let run = |threads: usize| {
        on_threads(threads, || {
            let mut h = vec![0f32; TOKENS * OUTPUTS];
            linear_into(
                &mut h,
                &x,
                Weight::new(&w, OUTPUTS, INPUTS),
                Some(&b),
                Activation::GeluErf,
            );
            let residual = h.clone();
            add_layer_norm_in_place(&mut h, &residual, &g, Some(&b), 1e-5);
            activate(Activation::GeluTanh, &mut h);
            softmax_rows_in_place(&mut h, OUTPUTS);
            bits(&h)
        })
    };
    let one = run(1);
    assert_eq!(one, run(2));
    assert_eq!(one, run(3));
}
