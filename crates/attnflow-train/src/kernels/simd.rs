//! Element loops written so the compiler vectorises them, compiled once per
//! instruction set (AVX-512, AVX2+FMA, portable) and chosen at run time.
//!
//! The exponential is Cephes' `expf` (range reduction by `ln 2` in two
//! parts, a degree-5 polynomial, the exponent put in by bit arithmetic),
//! relative error below 2e-7 over the clamped range; libm's `expf` is a
//! call per element that the compiler cannot vectorise.

use std::mem::MaybeUninit;

/// A vector of `len` values written by `fill`, which must write every
/// element of the slice it is given (the loops here write each output
/// element once): no zeroing pass first.
pub(super) fn filled(len: usize, fill: impl FnOnce(&mut [MaybeUninit<f32>])) -> Vec<f32> {
    let mut values = Vec::with_capacity(len);
    fill(&mut values.spare_capacity_mut()[..len]);
    // SAFETY: `fill` wrote all `len` elements (the contract above).
    unsafe { values.set_len(len) };
    values
}

/// Initialised values viewed as writable slots (for tests, which hold
/// their buffers already).
#[cfg(test)]
pub(super) fn as_uninit(values: &mut [f32]) -> &mut [MaybeUninit<f32>] {
    // SAFETY: MaybeUninit<f32> has f32's layout, and the slots are only
    // ever written with initialised f32 values.
    unsafe { &mut *(values as *mut [f32] as *mut [MaybeUninit<f32>]) }
}

/// `√(2/π)`, the GELU(tanh) constant.
const GELU_C: f32 = 0.797_884_6;
const GELU_CUBIC: f32 = 0.044_715;

#[inline(always)]
fn exp_approx(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.3, 88.3);
    let n = (x * LOG2E + 0.5).floor();
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p.mul_add(r, 1.398_199_9e-3);
    p = p.mul_add(r, 8.333_452e-3);
    p = p.mul_add(r, 4.166_579_6e-2);
    p = p.mul_add(r, 1.666_666_5e-1);
    p = p.mul_add(r, 5e-1);
    let p = p.mul_add(r * r, r) + 1.0;
    // 2ⁿ by bit arithmetic: adding 2²³ leaves the integer n + 127 (within
    // 1..=254 after the clamp) in the low mantissa bits. A float-to-int
    // cast would do the same, but Rust's saturating cast does not vectorise.
    let biased = (n + (127.0 + 8_388_608.0)).to_bits();
    p * f32::from_bits(biased << 23)
}

/// σ(2z) with z = √(2/π)(x + 0.044715x³): GELU(tanh)'s gate,
/// 0.5(1 + tanh z).
#[inline(always)]
fn gelu_gate(x: f32) -> f32 {
    let z = GELU_C * (x + GELU_CUBIC * x * x * x);
    1.0 / (1.0 + exp_approx(-2.0 * z))
}

#[inline(always)]
fn gelu_forward_body(x: &[f32], y: &mut [MaybeUninit<f32>]) {
    for (y, &x) in y.iter_mut().zip(x) {
        y.write(x * gelu_gate(x));
    }
}

#[inline(always)]
fn gelu_backward_body(x: &[f32], dy: &[f32], dx: &mut [MaybeUninit<f32>]) {
    for ((dx, &x), &dy) in dx.iter_mut().zip(x).zip(dy) {
        let s = gelu_gate(x);
        let dz = GELU_C * (1.0 + 3.0 * GELU_CUBIC * x * x);
        dx.write(dy * (s + x * s * (1.0 - s) * 2.0 * dz));
    }
}

/// Σ values in 16 lanes (a plain `sum` of floats is a serial chain the
/// compiler may not reorder, so it would not vectorise).
#[inline(always)]
fn lane_sum(values: &[f32], f: impl Fn(usize) -> f32) -> f32 {
    let mut lanes = [0f32; 16];
    let whole = values.len() / 16 * 16;
    for start in (0..whole).step_by(16) {
        for (lane, sum) in lanes.iter_mut().enumerate() {
            *sum += f(start + lane);
        }
    }
    let mut total = lanes.iter().sum::<f32>();
    for index in whole..values.len() {
        total += f(index);
    }
    total
}

/// `(mean, 1/σ)` of one row (biased variance).
#[inline(always)]
fn moments(row: &[f32], eps: f32) -> (f32, f32) {
    let width = row.len() as f32;
    let mean = lane_sum(row, |j| row[j]) / width;
    let variance = lane_sum(row, |j| (row[j] - mean) * (row[j] - mean)) / width;
    (mean, 1.0 / (variance + eps).sqrt())
}

#[inline(always)]
fn layer_norm_forward_body(
    x: &[f32],
    gain: &[f32],
    shift: Option<&[f32]>,
    eps: f32,
    y: &mut [MaybeUninit<f32>],
) {
    let width = gain.len();
    for (x, y) in x.chunks_exact(width).zip(y.chunks_exact_mut(width)) {
        let (mean, inverse) = moments(x, eps);
        match shift {
            Some(shift) => {
                for j in 0..width {
                    y[j].write((x[j] - mean) * inverse * gain[j] + shift[j]);
                }
            }
            None => {
                for j in 0..width {
                    y[j].write((x[j] - mean) * inverse * gain[j]);
                }
            }
        }
    }
}

/// Layer norm's backward over whole rows: writes `dx` and adds the rows'
/// `Σ dy·x̂` and `Σ dy` into `dgain` and `dshift`.
#[inline(always)]
fn layer_norm_backward_body(
    x: &[f32],
    gain: &[f32],
    dy: &[f32],
    eps: f32,
    dx: &mut [MaybeUninit<f32>],
    dgain: &mut [f32],
    dshift: &mut [f32],
) {
    let width = gain.len();
    for ((x, dy), dx) in x
        .chunks_exact(width)
        .zip(dy.chunks_exact(width))
        .zip(dx.chunks_exact_mut(width))
    {
        let (mean, inverse) = moments(x, eps);
        // Σ dy·g and Σ dy·g·x̂ in one pass, 16 lanes each.
        let (mut a_lanes, mut c_lanes) = ([0f32; 16], [0f32; 16]);
        let whole = width / 16 * 16;
        for start in (0..whole).step_by(16) {
            for lane in 0..16 {
                let j = start + lane;
                let scaled = dy[j] * gain[j];
                a_lanes[lane] += scaled;
                c_lanes[lane] += scaled * (x[j] - mean) * inverse;
            }
        }
        let (mut a, mut c) = (a_lanes.iter().sum::<f32>(), c_lanes.iter().sum::<f32>());
        for j in whole..width {
            let scaled = dy[j] * gain[j];
            a += scaled;
            c += scaled * (x[j] - mean) * inverse;
        }
        let (a, c) = (a / width as f32, c / width as f32);
        for j in 0..width {
            let normed = (x[j] - mean) * inverse;
            dx[j].write(inverse * (dy[j] * gain[j] - a - normed * c));
            dgain[j] += dy[j] * normed;
            dshift[j] += dy[j];
        }
    }
}

/// One AdamW update's scalars (see [`crate::optim::AdamW::step`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct AdamWStep {
    /// Clipping factor applied to the gradient.
    pub scale: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// `1 - ηλ`: decoupled weight decay.
    pub keep: f32,
    /// `η / (1 - β₁ᵗ)`.
    pub step_size: f32,
    /// `√(1 - β₂ᵗ)`.
    pub correction2_root: f32,
}

/// PyTorch's AdamW arithmetic per element, in the same order of
/// operations as the scalar loop it replaces (so the same bits).
#[inline(always)]
fn adamw_body(
    weights: &[f32],
    gradient: &[f32],
    first: &mut [f32],
    second: &mut [f32],
    out: &mut [f32],
    step: AdamWStep,
) {
    let AdamWStep {
        scale,
        beta1,
        beta2,
        eps,
        keep,
        step_size,
        correction2_root,
    } = step;
    for position in 0..out.len() {
        let g = gradient[position] * scale;
        let m = beta1 * first[position] + (1.0 - beta1) * g;
        let v = beta2 * second[position] + (1.0 - beta2) * g * g;
        first[position] = m;
        second[position] = v;
        let denominator = v.sqrt() / correction2_root + eps;
        out[position] = weights[position] * keep - step_size * m / denominator;
    }
}

/// `Σ x²` in f64 over 8 lanes (f64 so that a million squares lose nothing
/// a norm would show).
#[inline(always)]
fn sum_of_squares_body(values: &[f32]) -> f64 {
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

macro_rules! dispatch {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)? => $body:ident) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                unsafe fn avx512($($arg: $ty),*) $(-> $ret)? { $body($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? { $body($($arg),*) }
                if std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU has the features the function is compiled for.
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: as above.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}

dispatch!(
    /// `y = x · σ(2√(2/π)(x + 0.044715x³))`.
    pub(super) fn gelu_forward(x: &[f32], y: &mut [MaybeUninit<f32>]) => gelu_forward_body
);

dispatch!(
    /// `dx = dy · d/dx GELU(x)`.
    pub(super) fn gelu_backward(x: &[f32], dy: &[f32], dx: &mut [MaybeUninit<f32>]) => gelu_backward_body
);

dispatch!(
    /// Layer norm over rows of `gain.len()` values.
    pub(super) fn layer_norm_forward(
        x: &[f32],
        gain: &[f32],
        shift: Option<&[f32]>,
        eps: f32,
        y: &mut [MaybeUninit<f32>]
    ) => layer_norm_forward_body
);

dispatch!(
    /// Layer norm's backward over rows of `gain.len()` values.
    pub(super) fn layer_norm_backward(
        x: &[f32],
        gain: &[f32],
        dy: &[f32],
        eps: f32,
        dx: &mut [MaybeUninit<f32>],
        dgain: &mut [f32],
        dshift: &mut [f32]
    ) => layer_norm_backward_body
);

dispatch!(
    /// AdamW over one parameter: new weights into `out`, moments updated.
    pub(crate) fn adamw_update(
        weights: &[f32],
        gradient: &[f32],
        first: &mut [f32],
        second: &mut [f32],
        out: &mut [f32],
        step: AdamWStep
    ) => adamw_body
);

dispatch!(
    /// `Σ x²` accumulated in f64.
    pub(crate) fn sum_of_squares(values: &[f32]) -> f64 => sum_of_squares_body
);

/// The portable loops, for tests that check every path against libm.
#[cfg(test)]
pub(super) mod portable {
    pub fn exp(x: f32) -> f32 {
        super::exp_approx(x)
    }
    pub fn gelu_forward(x: &[f32], y: &mut [f32]) {
        super::gelu_forward_body(x, super::as_uninit(y))
    }
    pub fn gelu_backward(x: &[f32], dy: &[f32], dx: &mut [f32]) {
        super::gelu_backward_body(x, dy, super::as_uninit(dx))
    }
    pub fn layer_norm_forward(
        x: &[f32],
        gain: &[f32],
        shift: Option<&[f32]>,
        eps: f32,
        y: &mut [f32],
    ) {
        super::layer_norm_forward_body(x, gain, shift, eps, super::as_uninit(y))
    }
    pub fn layer_norm_backward(
        x: &[f32],
        gain: &[f32],
        dy: &[f32],
        eps: f32,
        dx: &mut [f32],
        dgain: &mut [f32],
        dshift: &mut [f32],
    ) {
        super::layer_norm_backward_body(x, gain, dy, eps, super::as_uninit(dx), dgain, dshift)
    }
}
