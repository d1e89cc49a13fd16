//! The elementary functions, once each, on sixteen lanes.
//!
//! `exp` is Cephes' `expf`, the scheme of every fast math library:
//! `x = n·ln 2 + r` with `|r| ≤ ln 2 / 2` (`ln 2` in two parts so the
//! reduction is exact), a degree-6 polynomial for `exp(r)`, and `2ⁿ` put
//! into the exponent bits. Relative error below 2e-7 (a few units in the
//! last place) where the result is a normal `f32`; 0 below `EXP_LOW` (so
//! `exp(-inf) = 0`); inputs above `EXP_HIGH` give `exp(EXP_HIGH)`, finite;
//! NaN stays NaN.
//!
//! `erf` is the rational approximation Eigen uses for `f32`
//! (`x·P(x²)/Q(x²)` on `[-4, 4]`; the approximation is within 1e-7,
//! its evaluation in `f32` within 4e-7 of the true value), and exactly
//! ±1 from `|x| = 3.92` on, where the true value rounds to ±1 in `f32`.

use super::lanes::Lanes;

/// Below this `exp` is 0 (the result would be subnormal).
pub(crate) const EXP_LOW: f32 = -87.336_55;
/// Above this `exp` saturates: `n` stays within 127, so `2ⁿ` is finite.
pub(crate) const EXP_HIGH: f32 = 88.0;
const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HIGH: f32 = 0.693_359_4;
const LN2_LOW: f32 = -2.121_944_4e-4;
const EXP_POLYNOMIAL: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    0.5,
];

/// `exp(x)` per lane.
#[inline(always)]
pub(crate) unsafe fn exp<V: Lanes>(x: V) -> V {
    // NaN passes both clamps (`min`/`max` return their second operand
    // when one is NaN) and the zeroing (a NaN is not below anything).
    let clamped = V::splat(EXP_HIGH).min(V::splat(EXP_LOW).max(x));
    let n = clamped.mul(V::splat(LOG2E)).round();
    let r = n.neg_mul_add(V::splat(LN2_HIGH), clamped);
    let r = n.neg_mul_add(V::splat(LN2_LOW), r);
    let mut p = V::splat(EXP_POLYNOMIAL[0]);
    for c in &EXP_POLYNOMIAL[1..] {
        p = p.mul_add(r, V::splat(*c));
    }
    let y = p.mul_add(r.mul(r), r.add(V::splat(1.0)));
    let y = y.mul(n.exp2_integer());
    V::select(x.less(V::splat(EXP_LOW)), V::splat(0.0), y)
}

/// `1 / (1 + exp(-x))` per lane.
#[inline(always)]
pub(crate) unsafe fn sigmoid<V: Lanes>(x: V) -> V {
    let one = V::splat(1.0);
    one.div(one.add(exp(V::splat(0.0).sub(x))))
}

// Eigen's `generic_fast_erf_float` coefficients.
const ERF_CLAMP: f32 = 4.0;
/// From here on `erf` is ±1 in `f32` (erf(3.92) = 1 − 2.9e-8 rounds to 1).
const ERF_ONE: f32 = 3.92;
const ERF_NUMERATOR: [f32; 7] = [
    -2.726_142_3e-10,
    2.770_681_4e-8,
    -2.101_024e-6,
    -5.692_506_4e-5,
    -7.349_906_3e-4,
    -2.954_600_1e-3,
    -1.609_603_3e-2,
];
const ERF_DENOMINATOR: [f32; 5] = [
    -1.456_607_2e-5,
    -2.133_740_6e-4,
    -1.682_827e-3,
    -7.373_329_2e-3,
    -1.426_474_e-2,
];

/// `erf(x)` per lane.
#[inline(always)]
pub(crate) unsafe fn erf<V: Lanes>(x: V) -> V {
    let x = V::splat(ERF_CLAMP).min(V::splat(-ERF_CLAMP).max(x));
    let x2 = x.mul(x);
    let mut numerator = V::splat(ERF_NUMERATOR[0]);
    for c in &ERF_NUMERATOR[1..] {
        numerator = numerator.mul_add(x2, V::splat(*c));
    }
    let mut denominator = V::splat(ERF_DENOMINATOR[0]);
    for c in &ERF_DENOMINATOR[1..] {
        denominator = denominator.mul_add(x2, V::splat(*c));
    }
    let value = x.mul(numerator).div(denominator);
    let one = V::splat(1.0);
    let value = V::select(V::splat(ERF_ONE).less(x), one, value);
    V::select(x.less(V::splat(-ERF_ONE)), V::splat(-1.0), value)
}

/// `√(2/π)`, GELU(tanh)'s constant.
pub(crate) const GELU_TANH_SCALE: f32 = 0.797_884_6;
/// GELU(tanh)'s cubic coefficient.
pub(crate) const GELU_TANH_CUBIC: f32 = 0.044_715;
/// `1/√2`.
const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// `1/√(2π)`.
const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

/// GELU(tanh)'s gate `½(1 + tanh z) = σ(2z)`, `z = √(2/π)(x + 0.044715x³)`.
#[inline(always)]
pub(crate) unsafe fn gelu_tanh_gate<V: Lanes>(x: V) -> V {
    let cubic = x.mul(x).mul(V::splat(GELU_TANH_CUBIC)).mul_add(x, x);
    sigmoid(cubic.mul(V::splat(2.0 * GELU_TANH_SCALE)))
}

/// `GELU(tanh)(x) = x · σ(2z)`.
#[inline(always)]
pub(crate) unsafe fn gelu_tanh<V: Lanes>(x: V) -> V {
    x.mul(gelu_tanh_gate(x))
}

/// `d/dx GELU(tanh)(x) = s + x·s(1 − s)·2z'` with `s = σ(2z)`.
#[inline(always)]
pub(crate) unsafe fn gelu_tanh_derivative<V: Lanes>(x: V) -> V {
    let gate = gelu_tanh_gate(x);
    let slope = x
        .mul(x)
        .mul_add(V::splat(3.0 * GELU_TANH_CUBIC), V::splat(1.0))
        .mul(V::splat(2.0 * GELU_TANH_SCALE));
    let spread = gate.mul(V::splat(1.0).sub(gate));
    x.mul(spread).mul_add(slope, gate)
}

/// `GELU(x) = x · Φ(x) = ½x(1 + erf(x/√2))`, the exact form (BERT's).
#[inline(always)]
pub(crate) unsafe fn gelu_erf<V: Lanes>(x: V) -> V {
    let half = V::splat(0.5);
    let cdf = erf(x.mul(V::splat(FRAC_1_SQRT_2))).mul_add(half, half);
    x.mul(cdf)
}

/// `d/dx GELU(x) = Φ(x) + x·φ(x)`, `φ` the standard normal density.
#[inline(always)]
pub(crate) unsafe fn gelu_erf_derivative<V: Lanes>(x: V) -> V {
    let half = V::splat(0.5);
    let cdf = erf(x.mul(V::splat(FRAC_1_SQRT_2))).mul_add(half, half);
    let density = exp(x.mul(x).mul(V::splat(-0.5))).mul(V::splat(FRAC_1_SQRT_2PI));
    x.mul_add(density, cdf)
}

/// `SiLU(x) = x · σ(x)`.
#[inline(always)]
pub(crate) unsafe fn silu<V: Lanes>(x: V) -> V {
    x.mul(sigmoid(x))
}

/// `d/dx SiLU(x) = σ(x)(1 + x(1 − σ(x)))`.
#[inline(always)]
pub(crate) unsafe fn silu_derivative<V: Lanes>(x: V) -> V {
    let s = sigmoid(x);
    let one = V::splat(1.0);
    s.mul(x.mul_add(one.sub(s), one))
}
