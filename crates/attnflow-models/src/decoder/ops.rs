//! The element-wise and row-wise maths of a decoder layer on plain `f32`
//! rows: norms, activations, softmax. Each is a small function so the
//! forward reads like the formulas and the kernel layer can take over any
//! of them without touching the model.

use attnflow_core::exp_shift_sum;

use crate::decoder::config::Activation;

/// RMS norm (Zhang & Sennrich 2019) of each row of `x` (width `weight.len()`)
/// in place: `w ⊙ x / sqrt(mean(x²) + ε)`, the mean taken in f64.
pub fn rms_norm(x: &mut [f32], weight: &[f32], eps: f32) {
    let width = weight.len();
    for row in x.chunks_exact_mut(width) {
        let mean_square = row.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() / width as f64;
        // transformers: hidden * rsqrt(variance + eps), in f32.
        let inverse = 1.0 / ((mean_square as f32) + eps).sqrt();
        for (value, &scale) in row.iter_mut().zip(weight) {
            *value = scale * (*value * inverse);
        }
    }
}

/// LayerNorm of each row in place: `w ⊙ (x − μ) / sqrt(σ² + ε) + b`, with
/// the biased variance, statistics in f64.
pub fn layer_norm(x: &mut [f32], weight: &[f32], bias: &[f32], eps: f32) {
    let width = weight.len();
    for row in x.chunks_exact_mut(width) {
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / width as f64;
        let variance = row
            .iter()
            .map(|&v| (v as f64 - mean) * (v as f64 - mean))
            .sum::<f64>()
            / width as f64;
        let inverse = 1.0 / (variance + eps as f64).sqrt();
        for ((value, &scale), &shift) in row.iter_mut().zip(weight).zip(bias) {
            *value = ((*value as f64 - mean) * inverse) as f32 * scale + shift;
        }
    }
}

/// Adds `bias` to every row of `x`.
pub fn add_bias(x: &mut [f32], bias: &[f32]) {
    for row in x.chunks_exact_mut(bias.len()) {
        for (value, &shift) in row.iter_mut().zip(bias) {
            *value += shift;
        }
    }
}

/// `residual += update`, element by element.
pub fn add_in_place(residual: &mut [f32], update: &[f32]) {
    for (value, &delta) in residual.iter_mut().zip(update) {
        *value += delta;
    }
}

/// SwiGLU's product in place: `gate ← silu(gate) ⊙ up`, with
/// `silu(x) = x / (1 + e^{−x})` (the exponential vectorised).
pub fn silu_times(gate: &mut [f32], up: &[f32]) {
    const CHUNK: usize = 256;
    let mut negated = [0f32; CHUNK];
    for (gates, ups) in gate.chunks_mut(CHUNK).zip(up.chunks(CHUNK)) {
        let exponentials = &mut negated[..gates.len()];
        for (slot, &value) in exponentials.iter_mut().zip(gates.iter()) {
            *slot = -value;
        }
        exp_shift_sum(exponentials, 0.0);
        for ((value, &up), &exponential) in gates.iter_mut().zip(ups).zip(exponentials.iter()) {
            *value = *value / (1.0 + exponential) * up;
        }
    }
}

/// A non-gated activation in place.
pub fn activate(x: &mut [f32], activation: Activation) {
    match activation {
        Activation::GeluTanh => {
            // transformers' gelu_new: x/2 · (1 + tanh(√(2/π) · (x + 0.044715 x³))).
            let root = (2.0 / std::f64::consts::PI).sqrt() as f32;
            for value in x.iter_mut() {
                let v = *value;
                *value = 0.5 * v * (1.0 + (root * (v + 0.044715 * v * v * v)).tanh());
            }
        }
        Activation::GeluErf => {
            for value in x.iter_mut() {
                let v = *value as f64;
                *value = (0.5 * v * (1.0 + erf(v / std::f64::consts::SQRT_2))) as f32;
            }
        }
        Activation::Relu => {
            for value in x.iter_mut() {
                *value = value.max(0.0);
            }
        }
        Activation::GatedSilu => unreachable!("the gated activation takes two inputs"),
    }
}

/// The error function to f64 precision (std has none): its Taylor series
/// below 2, the continued fraction of erfc from 2 to 5, ±1 beyond.
fn erf(x: f64) -> f64 {
    if x.abs() > 5.0 {
        return x.signum();
    }
    if x.abs() < 2.0 {
        let mut term = x;
        let mut sum = x;
        let square = x * x;
        let mut n = 0.0;
        while term.abs() > 1e-17 * sum.abs().max(1e-300) {
            n += 1.0;
            term *= -square / n;
            sum += term / (2.0 * n + 1.0);
        }
        return 2.0 / std::f64::consts::PI.sqrt() * sum;
    }
    // erfc by its continued fraction for |x| ≥ 2 (Lentz's method).
    let y = x.abs();
    let mut f = y;
    let mut c = y;
    let mut d = 0.0;
    for k in 1..200 {
        let a = k as f64 / 2.0;
        d = y + a * d;
        d = if d == 0.0 { 1e-300 } else { 1.0 / d };
        c = y + a / c;
        let delta = c * d;
        f *= delta;
        if (delta - 1.0).abs() < 1e-16 {
            break;
        }
    }
    let complement = (-y * y).exp() / f / std::f64::consts::PI.sqrt();
    (1.0 - complement) * x.signum()
}

/// Softmax of `row` in place over its first `visible` entries; the rest
/// become 0.
pub fn softmax_prefix(row: &mut [f32], visible: std::ops::Range<usize>) {
    let maximum = row[visible.clone()]
        .iter()
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    let sum = exp_shift_sum(&mut row[visible.clone()], maximum);
    let inverse = 1.0 / sum;
    for value in &mut row[visible.clone()] {
        *value *= inverse;
    }
    row[..visible.start].fill(0.0);
    let end = visible.end;
    row[end..].fill(0.0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_known_values() {
        for (x, expected) in [
            (0.0, 0.0),
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (2.5, 0.999_593_047_982_555),
            (-1.5, -0.966_105_146_475_310_7),
        ] {
            assert!((erf(x) - expected).abs() < 1e-14, "erf({x}) = {}", erf(x));
        }
    }

    #[test]
    fn norms_against_f64() {
        let mut x: Vec<f32> = (0..12).map(|i| (i as f32 * 0.7).sin() * 3.0).collect();
        let weight: Vec<f32> = (0..6).map(|i| 1.0 + i as f32 * 0.1).collect();
        let original = x.clone();
        rms_norm(&mut x, &weight, 1e-6);
        for row in 0..2 {
            let slice = &original[row * 6..row * 6 + 6];
            let rms = (slice.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / 6.0 + 1e-6).sqrt();
            for i in 0..6 {
                let expected = weight[i] as f64 * slice[i] as f64 / rms;
                assert!((x[row * 6 + i] as f64 - expected).abs() < 1e-5);
            }
        }
        let mut y = original.clone();
        layer_norm(&mut y, &weight, &[0.5; 6], 1e-5);
        let mean: f32 = y[..6]
            .iter()
            .zip(&weight)
            .map(|(v, w)| (v - 0.5) / w)
            .sum::<f32>()
            / 6.0;
        assert!(mean.abs() < 1e-5);
    }

    #[test]
    fn silu_and_softmax() {
        let mut gate = vec![-3.0f32, -0.5, 0.0, 0.5, 3.0];
        let up = vec![2.0f32; 5];
        let expected: Vec<f32> = gate
            .iter()
            .map(|&x| (x as f64 / (1.0 + (-x as f64).exp()) * 2.0) as f32)
            .collect();
        silu_times(&mut gate, &up);
        for (a, b) in gate.iter().zip(&expected) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
        let mut row = vec![1.0f32, 2.0, 3.0, 4.0];
        softmax_prefix(&mut row, 1..3);
        assert_eq!((row[0], row[3]), (0.0, 0.0));
        assert!((row[1] + row[2] - 1.0).abs() < 1e-6 && row[2] > row[1]);
    }
}
