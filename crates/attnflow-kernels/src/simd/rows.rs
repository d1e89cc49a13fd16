//! Loops over one row of scores: the softmax's pieces (maximum, `exp(x − c)`
//! with its sum, scaling, a key bias) and its backward `P ∘ (dP − D)`.

use super::math::exp;
use super::{dispatch, each_step, load_at, store_at, Lanes};

#[inline(always)]
unsafe fn row_max_body<V: Lanes>(row: &[f32]) -> f32 {
    let mut best = V::splat(f32::NEG_INFINITY);
    each_step!(row.len(), |offset, count| {
        best = best.max(load_at::<V>(row, offset, count, f32::NEG_INFINITY));
    });
    best.max_lane()
}

dispatch!(
    /// The largest entry of `row` (`-inf` for an empty row or one of
    /// `-inf`s).
    pub fn row_max(row: &[f32]) -> f32 => row_max_body
);

#[inline(always)]
unsafe fn exp_shift_sum_body<V: Lanes>(row: &mut [f32], shift: f32) -> f32 {
    let shift = V::splat(shift);
    let mut sum = V::splat(0.0);
    let target = row.as_mut_ptr();
    each_step!(row.len(), |offset, count| {
        // The short step's fill gives exp(-inf) = 0, adding nothing.
        let x = load_at::<V>(row, offset, count, f32::NEG_INFINITY);
        let e = exp(x.sub(shift));
        sum = sum.add(e);
        store_at(e, target, offset, count);
    });
    sum.sum()
}

dispatch!(
    /// Replaces each entry of `row` by `exp(entry − shift)` and returns
    /// their sum (in sixteen lane sums added in a fixed order):
    /// the softmax's middle step. `exp(-inf) = 0`.
    pub fn exp_shift_sum(row: &mut [f32], shift: f32) -> f32 => exp_shift_sum_body
);

#[inline(always)]
unsafe fn scale_body<V: Lanes>(row: &mut [f32], factor: f32) {
    let factor = V::splat(factor);
    let target = row.as_mut_ptr();
    each_step!(row.len(), |offset, count| {
        let x = load_at::<V>(row, offset, count, 0.0);
        store_at(x.mul(factor), target, offset, count);
    });
}

dispatch!(
    /// Multiplies every entry of `row` by `factor`.
    pub fn scale(row: &mut [f32], factor: f32) => scale_body
);

#[inline(always)]
unsafe fn add_body<V: Lanes>(row: &mut [f32], bias: &[f32]) {
    assert_eq!(row.len(), bias.len(), "add: lengths");
    let target = row.as_mut_ptr();
    each_step!(row.len(), |offset, count| {
        let x = load_at::<V>(row, offset, count, 0.0);
        let b = load_at::<V>(bias, offset, count, 0.0);
        store_at(x.add(b), target, offset, count);
    });
}

dispatch!(
    /// Adds `bias` to `row` entry by entry (a key mask of 0 and `-inf`).
    pub(crate) fn add(row: &mut [f32], bias: &[f32]) => add_body
);

#[inline(always)]
unsafe fn softmax_grad_body<V: Lanes>(p: &[f32], dp: &mut [f32], delta: f32) {
    assert_eq!(p.len(), dp.len(), "softmax_grad: lengths");
    let delta = V::splat(delta);
    let target = dp.as_mut_ptr();
    each_step!(p.len(), |offset, count| {
        let weight = load_at::<V>(p, offset, count, 0.0);
        let gradient = load_at::<V>(dp, offset, count, 0.0);
        store_at(weight.mul(gradient.sub(delta)), target, offset, count);
    });
}

dispatch!(
    /// The softmax backward on one row: `dp ← p ∘ (dp − delta)`.
    pub(crate) fn softmax_grad(p: &[f32], dp: &mut [f32], delta: f32) => softmax_grad_body
);

#[inline(always)]
unsafe fn online_softmax_body<V: Lanes>(
    row: &mut [f32],
    bias: Option<&[f32]>,
    running_max: f32,
) -> (f32, f32, f32) {
    let target = row.as_mut_ptr();
    let mut best = V::splat(f32::NEG_INFINITY);
    each_step!(row.len(), |offset, count| {
        let mut x = load_at::<V>(row, offset, count, f32::NEG_INFINITY);
        if let Some(bias) = bias {
            x = x.add(load_at::<V>(bias, offset, count, 0.0));
            store_at(x, target, offset, count);
        }
        best = best.max(x);
    });
    let tile_max = best.max_lane();
    let new_max = if running_max > tile_max {
        running_max
    } else {
        tile_max
    };
    if new_max == f32::NEG_INFINITY {
        row.fill(0.0);
        return (new_max, 0.0, 1.0);
    }
    let sum = exp_shift_sum_body::<V>(row, new_max);
    let correction = exp(V::splat(running_max - new_max)).to_array()[0];
    (new_max, sum, correction)
}

dispatch!(
    /// One step of the online softmax on a row of scores: adds `bias` (if
    /// any), replaces each entry by `exp(entry − new_max)` with `new_max`
    /// the larger of `running_max` and the row's maximum, and returns
    /// `(new_max, Σ exp, exp(running_max − new_max))`. A row with nothing
    /// visible so far (`new_max = -inf`) becomes zeros and returns
    /// `(-inf, 0, 1)`.
    pub(crate) fn online_softmax(row: &mut [f32], bias: Option<&[f32]>, running_max: f32) -> (f32, f32, f32) => online_softmax_body
);

#[inline(always)]
unsafe fn dot_body<V: Lanes>(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot: lengths");
    let mut sum = V::splat(0.0);
    each_step!(a.len(), |offset, count| {
        let x = load_at::<V>(a, offset, count, 0.0);
        sum = x.mul_add(load_at::<V>(b, offset, count, 0.0), sum);
    });
    sum.sum()
}

dispatch!(
    /// `Σ a·b` in sixteen lane sums added in a fixed order.
    pub fn dot(a: &[f32], b: &[f32]) -> f32 => dot_body
);

/// `row ← softmax(row)`, stable (the row maximum subtracted first); a row
/// of `-inf`s becomes zeros, never NaN. Returns `(max, Σ exp(x − max))`,
/// from which `ln Σ exp(x) = max + ln sum`.
pub fn softmax_in_place(path: super::SimdPath, row: &mut [f32]) -> (f32, f32) {
    let max = row_max(path, row);
    if max == f32::NEG_INFINITY {
        row.fill(0.0);
        return (max, 0.0);
    }
    let sum = exp_shift_sum(path, row, max);
    scale(path, row, 1.0 / sum);
    (max, sum)
}
