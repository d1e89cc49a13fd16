//! The optimiser's element loops (training only): the AdamW update and
//! the squared norm of a gradient.

use crate::simd::{dispatch, each_step, load_at, store_at, Lanes, SimdPath};

/// One AdamW update's scalars.
#[derive(Clone, Copy, Debug)]
pub struct AdamWStep {
    /// Clipping factor applied to the gradient.
    pub scale: f32,
    /// First-moment decay `β₁`.
    pub beta1: f32,
    /// Second-moment decay `β₂`.
    pub beta2: f32,
    /// Added to the denominator.
    pub eps: f32,
    /// `1 − ηλ`: decoupled weight decay.
    pub keep: f32,
    /// `η / (1 − β₁ᵗ)`.
    pub step_size: f32,
    /// `√(1 − β₂ᵗ)`.
    pub correction2_root: f32,
}

/// PyTorch's AdamW arithmetic per element, each operation rounded on its
/// own (no fused multiply-add), in PyTorch's order.
#[inline(always)]
unsafe fn adamw_body<V: Lanes>(
    weights: &[f32],
    gradient: &[f32],
    first: &mut [f32],
    second: &mut [f32],
    out: &mut [f32],
    step: AdamWStep,
) {
    let len = out.len();
    assert!(
        weights.len() == len && gradient.len() == len && first.len() == len && second.len() == len,
        "adamw: lengths"
    );
    let s = |value: f32| V::splat(value);
    let (first_target, second_target, out_target) =
        (first.as_mut_ptr(), second.as_mut_ptr(), out.as_mut_ptr());
    each_step!(len, |offset, count| {
        let g = load_at::<V>(gradient, offset, count, 0.0).mul(s(step.scale));
        let m = s(step.beta1)
            .mul(load_at::<V>(first, offset, count, 0.0))
            .add(s(1.0 - step.beta1).mul(g));
        let v = s(step.beta2)
            .mul(load_at::<V>(second, offset, count, 0.0))
            .add(s(1.0 - step.beta2).mul(g).mul(g));
        store_at(m, first_target, offset, count);
        store_at(v, second_target, offset, count);
        let denominator = v.sqrt().div(s(step.correction2_root)).add(s(step.eps));
        let w = load_at::<V>(weights, offset, count, 0.0).mul(s(step.keep));
        store_at(
            w.sub(s(step.step_size).mul(m).div(denominator)),
            out_target,
            offset,
            count,
        );
    });
}

dispatch!(
    pub(crate) fn adamw_on(
        weights: &[f32],
        gradient: &[f32],
        first: &mut [f32],
        second: &mut [f32],
        out: &mut [f32],
        step: AdamWStep
    ) => adamw_body
);

/// AdamW over one parameter: new weights into `out`, moments updated in
/// place. All slices have one length.
pub fn adamw_update(
    weights: &[f32],
    gradient: &[f32],
    first: &mut [f32],
    second: &mut [f32],
    out: &mut [f32],
    step: AdamWStep,
) {
    adamw_on(
        SimdPath::detect(),
        weights,
        gradient,
        first,
        second,
        out,
        step,
    )
}

/// `Σ x²` in f64 over 8 lanes (f64 so that a million squares lose nothing
/// a norm would show); the lanes are compiled for the path's instruction
/// set.
#[inline(always)]
unsafe fn sum_of_squares_body<V: Lanes>(values: &[f32]) -> f64 {
    let mut lanes = [0f64; 8];
    let whole = values.len() / 8 * 8;
    for start in (0..whole).step_by(8) {
        for (lane, sum) in lanes.iter_mut().enumerate() {
            let value = f64::from(values[start + lane]);
            *sum += value * value;
        }
    }
    let mut total = lanes.iter().sum::<f64>();
    for value in &values[whole..] {
        total += f64::from(*value) * f64::from(*value);
    }
    total
}

dispatch!(
    pub(crate) fn sum_of_squares_on(values: &[f32]) -> f64 => sum_of_squares_body
);

/// `Σ x²` accumulated in f64.
pub fn sum_of_squares(values: &[f32]) -> f64 {
    sum_of_squares_on(SimdPath::detect(), values)
}
