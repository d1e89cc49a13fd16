//! The one SIMD layer: which instruction set runs ([`SimdPath`]), the
//! sixteen-lane vector every kernel is written in (`Lanes`), the elementary
//! functions on it (`exp`, `erf`, sigmoid, GELU, SiLU), and `dispatch!`,
//! which compiles a kernel body once per path and picks one at run time.
//!
//! Every path computes the same IEEE operations in the same order, so the
//! paths agree bit for bit (tested); a path is a matter of speed only.

mod lanes;
pub(crate) mod math;
mod rows;

use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};

#[cfg(target_arch = "x86_64")]
pub(crate) use lanes::{Avx2, Avx512};
pub(crate) use lanes::{Lanes, Portable};
pub(crate) use rows::{add, online_softmax, softmax_grad};
pub use rows::{dot, exp_shift_sum, row_max, scale, softmax_in_place};

/// Which instruction set the kernels' loops use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SimdPath {
    /// 16 lanes of `f32` in one register (x86-64 with AVX-512F, AVX2, FMA).
    Avx512,
    /// 16 lanes in two registers with fused multiply-add (x86-64 with AVX2
    /// and FMA).
    Avx2,
    /// Plain Rust that runs on any machine.
    Portable,
}

/// `detect`'s answer, once: 0 not yet known, else 1 + the path's index.
static DETECTED: AtomicU8 = AtomicU8::new(0);

impl SimdPath {
    /// Every path, widest first.
    pub const ALL: [SimdPath; 3] = [Self::Avx512, Self::Avx2, Self::Portable];

    /// The widest path this machine supports (asked of the CPU once).
    pub fn detect() -> Self {
        match DETECTED.load(Ordering::Relaxed) {
            1 => Self::Avx512,
            2 => Self::Avx2,
            3 => Self::Portable,
            _ => {
                let path = Self::ask_cpu();
                let index = Self::ALL.iter().position(|p| *p == path).unwrap_or(2);
                DETECTED.store(index as u8 + 1, Ordering::Relaxed);
                path
            }
        }
    }

    fn ask_cpu() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma");
            if avx2 && std::arch::is_x86_feature_detected!("avx512f") {
                return Self::Avx512;
            }
            if avx2 {
                return Self::Avx2;
            }
        }
        Self::Portable
    }

    /// Whether this machine can run the path (the portable one always can).
    pub fn is_available(self) -> bool {
        match self {
            Self::Portable => true,
            Self::Avx2 => Self::detect() != Self::Portable,
            Self::Avx512 => Self::detect() == Self::Avx512,
        }
    }

    /// The paths this machine can run, widest first.
    pub fn available() -> Vec<SimdPath> {
        Self::ALL.into_iter().filter(|p| p.is_available()).collect()
    }

    /// This path if the machine has it, else the portable one (every path
    /// gives the same bits, so this changes speed only).
    #[inline]
    pub(crate) fn usable(self) -> Self {
        if self.is_available() {
            self
        } else {
            Self::Portable
        }
    }
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

/// Defines `fn name(path: SimdPath, args..) -> ret` running
/// `body::<V>(args..)` with `V` the lanes of `path`, the body compiled with
/// that path's instruction set enabled. `body` is an `unsafe fn` generic
/// over `V: Lanes`, marked `#[inline(always)]` so it is compiled into each
/// path's function.
macro_rules! dispatch {
    ($(#[$meta:meta])* $vis:vis unsafe fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? => $body:ident) => {
        $crate::simd::dispatch!(@define [$(#[$meta])*] [$vis] [unsafe] $name [$($arg: $ty),*] [$($ret)?] $body);
    };
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? => $body:ident) => {
        $crate::simd::dispatch!(@define [$(#[$meta])*] [$vis] [] $name [$($arg: $ty),*] [$($ret)?] $body);
    };
    (@define [$($meta:tt)*] [$vis:vis] [$($unsafety:tt)?] $name:ident [$($arg:ident: $ty:ty),*] [$($ret:ty)?] $body:ident) => {
        $($meta)*
        #[allow(clippy::too_many_arguments)]
        $vis $($unsafety)? fn $name(path: $crate::simd::SimdPath, $($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx512($($arg: $ty),*) $(-> $ret)? {
                    // SAFETY: compiled for AVX-512 and called only where
                    // the CPU has it; the body's own contract is the
                    // caller's.
                    unsafe { $body::<$crate::simd::Avx512>($($arg),*) }
                }
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    // SAFETY: as above, for AVX2 and FMA.
                    unsafe { $body::<$crate::simd::Avx2>($($arg),*) }
                }
                match path.usable() {
                    // SAFETY: `usable` returns only paths this CPU has.
                    $crate::simd::SimdPath::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: as above.
                    $crate::simd::SimdPath::Avx2 => return unsafe { avx2($($arg),*) },
                    $crate::simd::SimdPath::Portable => {}
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            let _ = path;
            // SAFETY: the portable lanes run on any machine.
            #[allow(unused_unsafe)]
            unsafe { $body::<$crate::simd::Portable>($($arg),*) }
        }
    };
}
pub(crate) use dispatch;

/// Runs `$body` with `offset`, `count` over `$len` elements in steps of
/// 16: first every whole step (`count` the constant 16, so `load_at` and
/// `store_at` compile to plain vector moves), then one shorter step if
/// anything is left, through the same vector operations on a padded copy.
/// A macro, not a closure: the body must compile inside the path's
/// `#[target_feature]` function, which a closure (a function of its own,
/// without those features) would not be.
macro_rules! each_step {
    ($len:expr, |$offset:ident, $count:ident| $body:block) => {{
        let len: usize = $len;
        let whole = len - len % 16;
        let mut $offset = 0usize;
        while $offset < whole {
            let $count = 16usize;
            $body
            $offset += 16;
        }
        if whole < len {
            let $offset = whole;
            let $count = len - whole;
            $body
        }
    }};
}
pub(crate) use each_step;

/// Sixteen lanes from `values[offset..]`: a whole step, or a short one
/// filled with `fill`.
#[inline(always)]
pub(crate) unsafe fn load_at<V: Lanes>(
    values: &[f32],
    offset: usize,
    count: usize,
    fill: f32,
) -> V {
    debug_assert!(offset + count <= values.len());
    if count == 16 {
        V::load(values.as_ptr().add(offset))
    } else {
        V::load_partial(values.as_ptr().add(offset), count, fill)
    }
}

/// Sixteen lanes from `source.add(offset)`: a whole step, or a short one
/// filled with `fill` (for memory that is also written through a pointer,
/// where no slice may be held).
#[inline(always)]
pub(crate) unsafe fn load_from<V: Lanes>(
    source: *const f32,
    offset: usize,
    count: usize,
    fill: f32,
) -> V {
    if count == 16 {
        V::load(source.add(offset))
    } else {
        V::load_partial(source.add(offset), count, fill)
    }
}

/// The first `count` lanes of `lanes` to `target[offset..]`.
#[inline(always)]
pub(crate) unsafe fn store_at<V: Lanes>(lanes: V, target: *mut f32, offset: usize, count: usize) {
    if count == 16 {
        lanes.store(target.add(offset))
    } else {
        lanes.store_partial(target.add(offset), count)
    }
}
