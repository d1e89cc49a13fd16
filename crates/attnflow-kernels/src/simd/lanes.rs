//! Sixteen `f32` lanes, three ways: one AVX-512 register, two AVX2
//! registers, or a plain array. Every kernel of this crate is written once,
//! generic over [`Lanes`], and compiled for each path by `dispatch!`.
//!
//! Each operation is the same IEEE operation on every path (fused
//! multiply-add included: the portable path uses `f32::mul_add`, which is
//! exact), and horizontal sums and maxima run in one fixed order, so every
//! path gives the same bits. Tests compare paths bit for bit.

/// Sixteen `f32` lanes.
///
/// # Safety
/// The methods use instructions of their path: call them only from code
/// compiled for that path (a `dispatch!` body) on a machine that has it.
pub(crate) unsafe trait Lanes: Copy {
    /// A per-lane condition.
    type Mask: Copy;

    unsafe fn splat(value: f32) -> Self;
    /// Sixteen values from `source`.
    unsafe fn load(source: *const f32) -> Self;
    /// Sixteen values to `target`.
    unsafe fn store(self, target: *mut f32);
    unsafe fn add(self, other: Self) -> Self;
    unsafe fn sub(self, other: Self) -> Self;
    unsafe fn mul(self, other: Self) -> Self;
    unsafe fn div(self, other: Self) -> Self;
    /// `self · factor + addend`, rounded once.
    unsafe fn mul_add(self, factor: Self, addend: Self) -> Self;
    /// `addend − self · factor`, rounded once.
    unsafe fn neg_mul_add(self, factor: Self, addend: Self) -> Self;
    /// `if self < other { self } else { other }` per lane (x86's `minps`:
    /// a NaN in `self` gives `other`).
    unsafe fn min(self, other: Self) -> Self;
    /// `if self > other { self } else { other }` per lane (x86's `maxps`).
    unsafe fn max(self, other: Self) -> Self;
    unsafe fn sqrt(self) -> Self;
    /// Round to the nearest integer, ties to even.
    unsafe fn round(self) -> Self;
    /// `2ⁿ` for integral `n` in `-126..=127`, by putting `n + 127` into the
    /// exponent bits (a float-to-int conversion would do the same, but this
    /// is the same two operations on every path).
    unsafe fn exp2_integer(self) -> Self;
    /// `self < other` per lane (false where either is NaN).
    unsafe fn less(self, other: Self) -> Self::Mask;
    /// Lanes of `if_true` where `mask` holds, of `if_false` elsewhere.
    unsafe fn select(mask: Self::Mask, if_true: Self, if_false: Self) -> Self;

    /// The lanes as an array.
    #[inline(always)]
    unsafe fn to_array(self) -> [f32; 16] {
        let mut lanes = [0f32; 16];
        self.store(lanes.as_mut_ptr());
        lanes
    }

    /// Σ lanes in a fixed tree order: lane `i` plus lane `i + 8`, then
    /// `i + 4`, `i + 2`, `i + 1`.
    #[inline(always)]
    unsafe fn sum(self) -> f32 {
        tree(self.to_array(), |a, b| a + b)
    }

    /// The largest lane (`maxps` semantics, in the same tree order).
    #[inline(always)]
    unsafe fn max_lane(self) -> f32 {
        tree(self.to_array(), |a, b| if a > b { a } else { b })
    }

    /// Up to sixteen values from `source`, the rest of the lanes `fill`.
    #[inline(always)]
    unsafe fn load_partial(source: *const f32, count: usize, fill: f32) -> Self {
        let mut lanes = [fill; 16];
        std::ptr::copy_nonoverlapping(source, lanes.as_mut_ptr(), count.min(16));
        Self::load(lanes.as_ptr())
    }

    /// The first `count` lanes to `target`.
    #[inline(always)]
    unsafe fn store_partial(self, target: *mut f32, count: usize) {
        let lanes = self.to_array();
        std::ptr::copy_nonoverlapping(lanes.as_ptr(), target, count.min(16));
    }
}

/// Folds sixteen lanes pairwise in a fixed order: `i` with `i + 8`, then
/// `i + 4`, `i + 2`, `i + 1` (plain scalar code, so the same bits on every
/// path).
#[inline(always)]
fn tree(lanes: [f32; 16], f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut eight = [0f32; 8];
    for i in 0..8 {
        eight[i] = f(lanes[i], lanes[i + 8]);
    }
    let mut four = [0f32; 4];
    for i in 0..4 {
        four[i] = f(eight[i], eight[i + 4]);
    }
    let two = [f(four[0], four[2]), f(four[1], four[3])];
    f(two[0], two[1])
}

/// Sixteen lanes as a plain array: any machine.
#[derive(Clone, Copy)]
pub(crate) struct Portable([f32; 16]);

impl Portable {
    #[inline(always)]
    fn map(self, f: impl Fn(f32) -> f32) -> Self {
        let mut out = self.0;
        for value in &mut out {
            *value = f(*value);
        }
        Self(out)
    }

    #[inline(always)]
    fn zip(self, other: Self, f: impl Fn(f32, f32) -> f32) -> Self {
        let mut out = self.0;
        for (value, other) in out.iter_mut().zip(other.0) {
            *value = f(*value, other);
        }
        Self(out)
    }

    #[inline(always)]
    fn zip3(self, b: Self, c: Self, f: impl Fn(f32, f32, f32) -> f32) -> Self {
        let mut out = self.0;
        for ((value, b), c) in out.iter_mut().zip(b.0).zip(c.0) {
            *value = f(*value, b, c);
        }
        Self(out)
    }
}

// SAFETY: plain Rust, valid on every machine.
unsafe impl Lanes for Portable {
    type Mask = [bool; 16];

    #[inline(always)]
    unsafe fn splat(value: f32) -> Self {
        Self([value; 16])
    }
    #[inline(always)]
    unsafe fn load(source: *const f32) -> Self {
        Self(std::ptr::read_unaligned(source as *const [f32; 16]))
    }
    #[inline(always)]
    unsafe fn store(self, target: *mut f32) {
        std::ptr::write_unaligned(target as *mut [f32; 16], self.0)
    }
    #[inline(always)]
    unsafe fn add(self, other: Self) -> Self {
        self.zip(other, |a, b| a + b)
    }
    #[inline(always)]
    unsafe fn sub(self, other: Self) -> Self {
        self.zip(other, |a, b| a - b)
    }
    #[inline(always)]
    unsafe fn mul(self, other: Self) -> Self {
        self.zip(other, |a, b| a * b)
    }
    #[inline(always)]
    unsafe fn div(self, other: Self) -> Self {
        self.zip(other, |a, b| a / b)
    }
    #[inline(always)]
    unsafe fn mul_add(self, factor: Self, addend: Self) -> Self {
        self.zip3(factor, addend, |a, b, c| a.mul_add(b, c))
    }
    #[inline(always)]
    unsafe fn neg_mul_add(self, factor: Self, addend: Self) -> Self {
        self.zip3(factor, addend, |a, b, c| (-a).mul_add(b, c))
    }
    #[inline(always)]
    unsafe fn min(self, other: Self) -> Self {
        self.zip(other, |a, b| if a < b { a } else { b })
    }
    #[inline(always)]
    unsafe fn max(self, other: Self) -> Self {
        self.zip(other, |a, b| if a > b { a } else { b })
    }
    #[inline(always)]
    unsafe fn sqrt(self) -> Self {
        self.map(f32::sqrt)
    }
    #[inline(always)]
    unsafe fn round(self) -> Self {
        self.map(f32::round_ties_even)
    }
    #[inline(always)]
    unsafe fn exp2_integer(self) -> Self {
        self.map(|n| f32::from_bits((n + EXPONENT_SHIFT).to_bits() << 23))
    }
    #[inline(always)]
    unsafe fn less(self, other: Self) -> [bool; 16] {
        let mut mask = [false; 16];
        for ((holds, a), b) in mask.iter_mut().zip(self.0).zip(other.0) {
            *holds = a < b;
        }
        mask
    }
    #[inline(always)]
    unsafe fn select(mask: [bool; 16], if_true: Self, if_false: Self) -> Self {
        let mut out = if_false.0;
        for lane in 0..16 {
            if mask[lane] {
                out[lane] = if_true.0[lane];
            }
        }
        Self(out)
    }
}

/// `127 + 2²³`: added to an integral `n` in `-126..=127`, it leaves
/// `n + 127` in the low mantissa bits, which a shift by 23 moves into the
/// exponent field.
const EXPONENT_SHIFT: f32 = 127.0 + 8_388_608.0;

#[cfg(target_arch = "x86_64")]
pub(crate) use x86::{Avx2, Avx512};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{Lanes, EXPONENT_SHIFT};

    /// One AVX-512 register.
    #[derive(Clone, Copy)]
    pub(crate) struct Avx512(__m512);

    // SAFETY: used only from code compiled with `avx512f` (see `dispatch!`).
    unsafe impl Lanes for Avx512 {
        type Mask = __mmask16;

        #[inline(always)]
        unsafe fn splat(value: f32) -> Self {
            Self(_mm512_set1_ps(value))
        }
        #[inline(always)]
        unsafe fn load(source: *const f32) -> Self {
            Self(_mm512_loadu_ps(source))
        }
        #[inline(always)]
        unsafe fn store(self, target: *mut f32) {
            _mm512_storeu_ps(target, self.0)
        }
        #[inline(always)]
        unsafe fn add(self, other: Self) -> Self {
            Self(_mm512_add_ps(self.0, other.0))
        }
        #[inline(always)]
        unsafe fn sub(self, other: Self) -> Self {
            Self(_mm512_sub_ps(self.0, other.0))
        }
        #[inline(always)]
        unsafe fn mul(self, other: Self) -> Self {
            Self(_mm512_mul_ps(self.0, other.0))
        }
        #[inline(always)]
        unsafe fn div(self, other: Self) -> Self {
            Self(_mm512_div_ps(self.0, other.0))
        }
        #[inline(always)]
        unsafe fn mul_add(self, factor: Self, addend: Self) -> Self {
            Self(_mm512_fmadd_ps(self.0, factor.0, addend.0))
        }
        #[inline(always)]
        unsafe fn neg_mul_add(self, factor: Self, addend: Self) -> Self {
            Self(_mm512_fnmadd_ps(self.0, factor.0, addend.0))
        }
        #[inline(always)]
        unsafe fn min(self, other: Self) -> Self {
            Self(_mm512_min_ps(self.0, other.0))
        }
        #[inline(always)]
        unsafe fn max(self, other: Self) -> Self {
            Self(_mm512_max_ps(self.0, other.0))
        }
        #[inline(always)]
        unsafe fn sqrt(self) -> Self {
            Self(_mm512_sqrt_ps(self.0))
        }
        #[inline(always)]
        unsafe fn round(self) -> Self {
            Self(_mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT }>(
                self.0,
            ))
        }
        #[inline(always)]
        unsafe fn exp2_integer(self) -> Self {
            let biased = _mm512_add_ps(self.0, _mm512_set1_ps(EXPONENT_SHIFT));
            Self(_mm512_castsi512_ps(_mm512_slli_epi32::<23>(
                _mm512_castps_si512(biased),
            )))
        }
        #[inline(always)]
        unsafe fn less(self, other: Self) -> __mmask16 {
            _mm512_cmp_ps_mask::<_CMP_LT_OQ>(self.0, other.0)
        }
        #[inline(always)]
        unsafe fn select(mask: __mmask16, if_true: Self, if_false: Self) -> Self {
            Self(_mm512_mask_blend_ps(mask, if_false.0, if_true.0))
        }
    }

    /// Two AVX2 registers, low lanes first.
    #[derive(Clone, Copy)]
    pub(crate) struct Avx2(__m256, __m256);

    // SAFETY: used only from code compiled with `avx2,fma` (see `dispatch!`).
    unsafe impl Lanes for Avx2 {
        type Mask = (__m256, __m256);

        #[inline(always)]
        unsafe fn splat(value: f32) -> Self {
            Self(_mm256_set1_ps(value), _mm256_set1_ps(value))
        }
        #[inline(always)]
        unsafe fn load(source: *const f32) -> Self {
            Self(_mm256_loadu_ps(source), _mm256_loadu_ps(source.add(8)))
        }
        #[inline(always)]
        unsafe fn store(self, target: *mut f32) {
            _mm256_storeu_ps(target, self.0);
            _mm256_storeu_ps(target.add(8), self.1);
        }
        #[inline(always)]
        unsafe fn add(self, other: Self) -> Self {
            Self(
                _mm256_add_ps(self.0, other.0),
                _mm256_add_ps(self.1, other.1),
            )
        }
        #[inline(always)]
        unsafe fn sub(self, other: Self) -> Self {
            Self(
                _mm256_sub_ps(self.0, other.0),
                _mm256_sub_ps(self.1, other.1),
            )
        }
        #[inline(always)]
        unsafe fn mul(self, other: Self) -> Self {
            Self(
                _mm256_mul_ps(self.0, other.0),
                _mm256_mul_ps(self.1, other.1),
            )
        }
        #[inline(always)]
        unsafe fn div(self, other: Self) -> Self {
            Self(
                _mm256_div_ps(self.0, other.0),
                _mm256_div_ps(self.1, other.1),
            )
        }
        #[inline(always)]
        unsafe fn mul_add(self, factor: Self, addend: Self) -> Self {
            Self(
                _mm256_fmadd_ps(self.0, factor.0, addend.0),
                _mm256_fmadd_ps(self.1, factor.1, addend.1),
            )
        }
        #[inline(always)]
        unsafe fn neg_mul_add(self, factor: Self, addend: Self) -> Self {
            Self(
                _mm256_fnmadd_ps(self.0, factor.0, addend.0),
                _mm256_fnmadd_ps(self.1, factor.1, addend.1),
            )
        }
        #[inline(always)]
        unsafe fn min(self, other: Self) -> Self {
            Self(
                _mm256_min_ps(self.0, other.0),
                _mm256_min_ps(self.1, other.1),
            )
        }
        #[inline(always)]
        unsafe fn max(self, other: Self) -> Self {
            Self(
                _mm256_max_ps(self.0, other.0),
                _mm256_max_ps(self.1, other.1),
            )
        }
        #[inline(always)]
        unsafe fn sqrt(self) -> Self {
            Self(_mm256_sqrt_ps(self.0), _mm256_sqrt_ps(self.1))
        }
        #[inline(always)]
        unsafe fn round(self) -> Self {
            const NEAREST: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
            Self(
                _mm256_round_ps::<NEAREST>(self.0),
                _mm256_round_ps::<NEAREST>(self.1),
            )
        }
        #[inline(always)]
        unsafe fn exp2_integer(self) -> Self {
            let shift = _mm256_set1_ps(EXPONENT_SHIFT);
            let low = _mm256_castps_si256(_mm256_add_ps(self.0, shift));
            let high = _mm256_castps_si256(_mm256_add_ps(self.1, shift));
            Self(
                _mm256_castsi256_ps(_mm256_slli_epi32::<23>(low)),
                _mm256_castsi256_ps(_mm256_slli_epi32::<23>(high)),
            )
        }
        #[inline(always)]
        unsafe fn less(self, other: Self) -> (__m256, __m256) {
            (
                _mm256_cmp_ps::<_CMP_LT_OQ>(self.0, other.0),
                _mm256_cmp_ps::<_CMP_LT_OQ>(self.1, other.1),
            )
        }
        #[inline(always)]
        unsafe fn select(mask: (__m256, __m256), if_true: Self, if_false: Self) -> Self {
            Self(
                _mm256_blendv_ps(if_false.0, if_true.0, mask.0),
                _mm256_blendv_ps(if_false.1, if_true.1, mask.1),
            )
        }
    }
}
