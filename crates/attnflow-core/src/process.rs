//! Process-wide settings for numeric work on the CPU, applied once.
//!
//! [`keep_freed_memory`]: candle allocates a fresh buffer for every op
//! result, and the fused kernel's gradients and tiles are fresh buffers too.
//! glibc's malloc serves buffers above its mmap threshold (128 KiB at first)
//! with `mmap` and returns them with `munmap`, so every training step or
//! attention backward pays page faults, zeroing and TLB shootdowns for its
//! buffers again. Measured with `perf`: about a third of a small model's
//! training step, and 17% of a fused forward+backward at n = 1024 (8 heads,
//! d = 64), whose time fell from 70 to 44 ms with this setting.
//!
//! [`one_worker_pool`]: candle 0.11 runs its element-wise ops over 64 Ki
//! elements on a "barrier pool" of its own, whose threads (and the caller,
//! while it waits) spin between ops, while the fused kernels split their
//! work over rayon's pool. With both pools on the same cores, a spinning
//! thread of one takes the core a thread of the other needs: `perf` on
//! `attnflow bench train` showed the caller spinning in candle's
//! `BarrierGuard::drop` for 45% of the samples, and the benchmark ran at
//! about 0.75 of the speed it reaches with candle's pool disabled.
//!
//! The `attnflow` binary applies [`keep_freed_memory`] at start, and
//! attnflow-train's `Trainer` applies both; library users who train or run
//! attention in a loop should call them once too.

use std::sync::Once;

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod glibc {
    use std::os::raw::c_int;

    // <malloc.h>
    pub const M_TRIM_THRESHOLD: c_int = -1;
    pub const M_MMAP_THRESHOLD: c_int = -3;

    extern "C" {
        pub fn mallopt(param: c_int, value: c_int) -> c_int;
    }
}

/// Raises glibc's mmap threshold to its maximum (32 MiB) and its trim
/// threshold to 1 GiB, once per process; does nothing on other platforms.
/// Only allocation strategy changes: memory the process frees is kept for
/// its next allocations instead of being handed back to the kernel at once.
pub fn keep_freed_memory() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: mallopt only adjusts allocator parameters; both values are
        // within glibc's documented ranges, and a rejected value (return 0)
        // leaves the defaults in place.
        unsafe {
            glibc::mallopt(glibc::M_MMAP_THRESHOLD, 32 * 1024 * 1024);
            glibc::mallopt(glibc::M_TRIM_THRESHOLD, 1024 * 1024 * 1024);
        }
    });
}

/// The variable candle reads, once, when its barrier pool first starts.
const CANDLE_THREADS: &str = "CANDLE_NUM_THREADS";

/// Runs candle's element-wise ops on the calling thread (sets
/// `CANDLE_NUM_THREADS=1`) unless the user chose a value; once per process,
/// and only effective before candle first starts its pool. Matrix products
/// left to candle still use rayon (candle reads `RAYON_NUM_THREADS` for
/// those). What candle then does element-wise in training (residual sums,
/// adding gradients into its store) is memory-bound and cheap on one
/// thread.
pub fn one_worker_pool() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os(CANDLE_THREADS).is_none() {
            // Meant to be called before any candle op, so before candle
            // reads the variable.
            std::env::set_var(CANDLE_THREADS, "1");
        }
    });
}
