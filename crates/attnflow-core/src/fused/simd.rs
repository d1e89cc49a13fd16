//! The vector inner loops of the fused kernel: row maximum, `exp(x - c)`
//! with its sum, scaling, and the backward's `dS = P ∘ (dP − D)`.
//!
//! Three paths compute the same thing: AVX-512, AVX2 with FMA, and a
//! portable one. The path is chosen once per call at run time, so one binary
//! runs everywhere and uses the widest registers the machine has; tests pick
//! each path explicitly.
//!
//! The exponential is the Cephes `expf` scheme used by every fast math
//! library: `x = n·ln 2 + r` with `|r| ≤ ln 2 / 2`, a degree-6 polynomial for
//! `exp(r)`, and `2ⁿ` put into the exponent bits. Its relative error is a
//! few units in the last place of an `f32` (about 2e-7), well inside the
//! 1e-5 the fused path promises against the exact one.

use std::fmt;

/// Which instruction set the fused kernel's inner loops use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SimdPath {
    /// 16 lanes of `f32` (x86-64 with AVX-512F).
    Avx512,
    /// 8 lanes of `f32` with fused multiply-add (x86-64 with AVX2 and FMA).
    Avx2,
    /// Plain Rust that runs on any machine (the compiler may still
    /// vectorise parts of it with the baseline instruction set).
    Portable,
}

impl SimdPath {
    /// The widest path this machine supports.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Self::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Self::Avx2;
            }
        }
        Self::Portable
    }

    /// Whether this machine can run the path (the portable one always can).
    pub fn is_available(self) -> bool {
        match self {
            Self::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Self::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "x86_64")]
            Self::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// Every path, widest first.
    pub const ALL: [SimdPath; 3] = [Self::Avx512, Self::Avx2, Self::Portable];
}

impl fmt::Display for SimdPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Avx512 => "avx512",
            Self::Avx2 => "avx2",
            Self::Portable => "portable",
        })
    }
}

// Cephes expf constants.
// Above this 2ⁿ would need n = 128 and overflow; clamping keeps exp finite.
const EXP_HIGH: f32 = 88.376_26;
const EXP_LOW: f32 = -87.336_55;
const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HIGH: f32 = 0.693_359_4;
const LN2_LOW: f32 = -2.121_944_4e-4;
const POLY: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    0.5,
];

/// `exp(x)` by the same scheme as the vector paths; 0 below `EXP_LOW`
/// (where `f32` would go subnormal), so `exp(-inf) = 0`.
#[inline(always)]
pub(crate) fn exp_portable(x: f32) -> f32 {
    if x < EXP_LOW {
        return 0.0;
    }
    let x = x.min(EXP_HIGH);
    let n = (x * LOG2E).round();
    let r = x - n * LN2_HIGH - n * LN2_LOW;
    let mut p = POLY[0];
    for c in &POLY[1..] {
        p = p * r + c;
    }
    let y = p * r * r + r + 1.0;
    y * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// Maximum of a non-empty row (`-inf` if all entries are `-inf`).
pub(crate) fn row_max(path: SimdPath, row: &[f32]) -> f32 {
    match path {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the caller chose a path this machine supports (checked by
        // `resolve_path` before any kernel runs).
        SimdPath::Avx512 => unsafe { x86::row_max_avx512(row) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        SimdPath::Avx2 => unsafe { x86::row_max_avx2(row) },
        _ => row.iter().copied().fold(f32::NEG_INFINITY, f32::max),
    }
}

/// Replaces each entry by `exp(entry - shift)` and returns their sum.
pub(crate) fn exp_shift_sum(path: SimdPath, row: &mut [f32], shift: f32) -> f32 {
    match path {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: see `row_max`.
        SimdPath::Avx512 => unsafe { x86::exp_shift_sum_avx512(row, shift) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: see `row_max`.
        SimdPath::Avx2 => unsafe { x86::exp_shift_sum_avx2(row, shift) },
        _ => exp_shift_sum_portable(row, shift),
    }
}

fn exp_shift_sum_portable(row: &mut [f32], shift: f32) -> f32 {
    let mut sum = 0.0;
    for value in row {
        *value = exp_portable(*value - shift);
        sum += *value;
    }
    sum
}

/// Multiplies every entry by `factor`.
pub(crate) fn scale(path: SimdPath, row: &mut [f32], factor: f32) {
    match path {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: see `row_max`.
        SimdPath::Avx512 => unsafe { x86::scale_avx512(row, factor) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: see `row_max`.
        SimdPath::Avx2 => unsafe { x86::scale_avx2(row, factor) },
        _ => scale_generic(row, factor),
    }
}

#[inline(always)]
fn scale_generic(row: &mut [f32], factor: f32) {
    for value in row {
        *value *= factor;
    }
}

/// Adds `bias` (0 or `-inf` per key) to the row, entry by entry.
pub(crate) fn add(path: SimdPath, row: &mut [f32], bias: &[f32]) {
    match path {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: see `row_max`.
        SimdPath::Avx512 => unsafe { x86::add_avx512(row, bias) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: see `row_max`.
        SimdPath::Avx2 => unsafe { x86::add_avx2(row, bias) },
        _ => add_generic(row, bias),
    }
}

#[inline(always)]
fn add_generic(row: &mut [f32], bias: &[f32]) {
    for (value, b) in row.iter_mut().zip(bias) {
        *value += b;
    }
}

/// The softmax backward on one row: `dp ← p ∘ (dp − delta)`.
pub(crate) fn softmax_grad(path: SimdPath, p: &[f32], dp: &mut [f32], delta: f32) {
    match path {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: see `row_max`.
        SimdPath::Avx512 => unsafe { x86::softmax_grad_avx512(p, dp, delta) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: see `row_max`.
        SimdPath::Avx2 => unsafe { x86::softmax_grad_avx2(p, dp, delta) },
        _ => softmax_grad_generic(p, dp, delta),
    }
}

#[inline(always)]
fn softmax_grad_generic(p: &[f32], dp: &mut [f32], delta: f32) {
    for (g, &weight) in dp.iter_mut().zip(p) {
        *g = weight * (*g - delta);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The x86-64 paths. Simple element-wise loops are the generic Rust
    //! loops compiled with the wider instruction set enabled (the compiler
    //! vectorises them); reductions and `exp` use intrinsics, because the
    //! compiler will not reorder a float reduction on its own.

    use std::arch::x86_64::*;

    use super::{
        add_generic, exp_portable, scale_generic, softmax_grad_generic, EXP_HIGH, EXP_LOW,
        LN2_HIGH, LN2_LOW, LOG2E, POLY,
    };

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn scale_avx512(row: &mut [f32], factor: f32) {
        scale_generic(row, factor)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn scale_avx2(row: &mut [f32], factor: f32) {
        scale_generic(row, factor)
    }

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn add_avx512(row: &mut [f32], bias: &[f32]) {
        add_generic(row, bias)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn add_avx2(row: &mut [f32], bias: &[f32]) {
        add_generic(row, bias)
    }

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn softmax_grad_avx512(p: &[f32], dp: &mut [f32], delta: f32) {
        softmax_grad_generic(p, dp, delta)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn softmax_grad_avx2(p: &[f32], dp: &mut [f32], delta: f32) {
        softmax_grad_generic(p, dp, delta)
    }

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn row_max_avx512(row: &[f32]) -> f32 {
        let chunks = row.chunks_exact(16);
        let tail = chunks.remainder();
        let mut best = _mm512_set1_ps(f32::NEG_INFINITY);
        for chunk in chunks {
            best = _mm512_max_ps(best, _mm512_loadu_ps(chunk.as_ptr()));
        }
        tail.iter()
            .copied()
            .fold(_mm512_reduce_max_ps(best), f32::max)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn row_max_avx2(row: &[f32]) -> f32 {
        let chunks = row.chunks_exact(8);
        let tail = chunks.remainder();
        let mut best = _mm256_set1_ps(f32::NEG_INFINITY);
        for chunk in chunks {
            best = _mm256_max_ps(best, _mm256_loadu_ps(chunk.as_ptr()));
        }
        let mut lanes = [0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), best);
        lanes
            .iter()
            .chain(tail)
            .copied()
            .fold(f32::NEG_INFINITY, f32::max)
    }

    /// 16 exponentials; inputs below `EXP_LOW` give 0.
    #[target_feature(enable = "avx512f")]
    unsafe fn exp_avx512(x: __m512) -> __m512 {
        // `scalef` computes y · 2ⁿ with correct underflow to 0, so only the
        // reduction needs a finite input; -104 is far enough below EXP_LOW
        // that the result is 0 anyway.
        let x = _mm512_min_ps(
            _mm512_max_ps(x, _mm512_set1_ps(-104.0)),
            _mm512_set1_ps(EXP_HIGH),
        );
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT }>(_mm512_mul_ps(
            x,
            _mm512_set1_ps(LOG2E),
        ));
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HIGH), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LOW), r);
        let mut p = _mm512_set1_ps(POLY[0]);
        for c in &POLY[1..] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(*c));
        }
        let y = _mm512_fmadd_ps(
            p,
            _mm512_mul_ps(r, r),
            _mm512_add_ps(r, _mm512_set1_ps(1.0)),
        );
        let y = _mm512_scalef_ps(y, n);
        // Match the portable path exactly at the cut-off: below EXP_LOW is 0.
        let keep = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(x, _mm512_set1_ps(EXP_LOW));
        _mm512_maskz_mov_ps(keep, y)
    }

    /// 8 exponentials; inputs below `EXP_LOW` give 0.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn exp_avx2(x: __m256) -> __m256 {
        let keep = _mm256_cmp_ps::<_CMP_GE_OQ>(x, _mm256_set1_ps(EXP_LOW));
        let x = _mm256_min_ps(
            _mm256_max_ps(x, _mm256_set1_ps(EXP_LOW)),
            _mm256_set1_ps(EXP_HIGH),
        );
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(x, _mm256_set1_ps(LOG2E)),
        );
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HIGH), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LOW), r);
        let mut p = _mm256_set1_ps(POLY[0]);
        for c in &POLY[1..] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(*c));
        }
        let y = _mm256_fmadd_ps(
            p,
            _mm256_mul_ps(r, r),
            _mm256_add_ps(r, _mm256_set1_ps(1.0)),
        );
        let exponent = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
        let power = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(exponent));
        _mm256_and_ps(_mm256_mul_ps(y, power), keep)
    }

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn exp_shift_sum_avx512(row: &mut [f32], shift: f32) -> f32 {
        let shift_v = _mm512_set1_ps(shift);
        let mut sum = _mm512_setzero_ps();
        let mut chunks = row.chunks_exact_mut(16);
        for chunk in &mut chunks {
            let e = exp_avx512(_mm512_sub_ps(_mm512_loadu_ps(chunk.as_ptr()), shift_v));
            _mm512_storeu_ps(chunk.as_mut_ptr(), e);
            sum = _mm512_add_ps(sum, e);
        }
        let mut total = _mm512_reduce_add_ps(sum);
        for value in chunks.into_remainder() {
            *value = exp_portable(*value - shift);
            total += *value;
        }
        total
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn exp_shift_sum_avx2(row: &mut [f32], shift: f32) -> f32 {
        let shift_v = _mm256_set1_ps(shift);
        let mut sum = _mm256_setzero_ps();
        let mut chunks = row.chunks_exact_mut(8);
        for chunk in &mut chunks {
            let e = exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(chunk.as_ptr()), shift_v));
            _mm256_storeu_ps(chunk.as_mut_ptr(), e);
            sum = _mm256_add_ps(sum, e);
        }
        let mut lanes = [0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), sum);
        let mut total: f32 = lanes.iter().sum();
        for value in chunks.into_remainder() {
            *value = exp_portable(*value - shift);
            total += *value;
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn available() -> Vec<SimdPath> {
        SimdPath::ALL
            .into_iter()
            .filter(|p| p.is_available())
            .collect()
    }

    #[test]
    fn exp_matches_std_on_a_wide_range() {
        let inputs: Vec<f32> = (0..4001)
            .map(|i| -90.0 + i as f32 * 0.0275)
            .chain([0.0, -0.0, 1e-8, -1e-8, EXP_LOW, EXP_LOW - 1e-3])
            .collect();
        for path in available() {
            let mut row = inputs.clone();
            let sum = exp_shift_sum(path, &mut row, 0.0);
            let mut expected_sum = 0.0f64;
            for (x, got) in inputs.iter().zip(&row) {
                let expected = (*x as f64).exp();
                expected_sum += if *x < EXP_LOW { 0.0 } else { expected };
                if *x < EXP_LOW {
                    assert_eq!(*got, 0.0, "{path}: exp({x})");
                } else {
                    let error = (*got as f64 - expected).abs() / expected;
                    assert!(error < 5e-7, "{path}: exp({x}) = {got}, want {expected}");
                }
            }
            assert!(((sum as f64) - expected_sum).abs() / expected_sum < 1e-5);
        }
    }

    #[test]
    fn exp_of_minus_infinity_is_zero_and_large_inputs_stay_finite() {
        for path in available() {
            let mut row = vec![f32::NEG_INFINITY; 37];
            row[3] = 200.0;
            let sum = exp_shift_sum(path, &mut row, 0.0);
            assert!(sum.is_finite(), "{path}");
            assert_eq!(row[0], 0.0, "{path}");
            assert!(row[3].is_finite() && row[3] > 1e38, "{path}");
        }
    }

    #[test]
    fn reductions_and_element_wise_loops_agree_across_paths() {
        let row: Vec<f32> = (0..53).map(|i| ((i * 37) % 23) as f32 - 11.5).collect();
        for path in available() {
            assert_eq!(row_max(path, &row), 10.5, "{path}");
            assert_eq!(
                row_max(path, &row[..5]),
                row[..5].iter().copied().fold(f32::MIN, f32::max)
            );
            let mut scaled = row.clone();
            scale(path, &mut scaled, 0.5);
            assert!(scaled.iter().zip(&row).all(|(a, b)| *a == b * 0.5));
            let mut biased = row.clone();
            let bias: Vec<f32> = (0..53)
                .map(|i| if i % 3 == 0 { f32::NEG_INFINITY } else { 0.0 })
                .collect();
            add(path, &mut biased, &bias);
            assert!(biased
                .iter()
                .enumerate()
                .all(|(i, v)| (i % 3 == 0) == (*v == f32::NEG_INFINITY)));
            let mut dp = row.clone();
            softmax_grad(path, &row, &mut dp, 2.0);
            assert!(dp.iter().zip(&row).all(|(g, p)| *g == p * (p - 2.0)));
        }
    }
}
