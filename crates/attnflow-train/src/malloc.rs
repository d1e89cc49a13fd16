//! Keeping freed tensor memory in the process.
//!
//! candle allocates a fresh buffer for every op result. glibc's malloc
//! serves buffers above its mmap threshold (128 KiB at first) with `mmap`
//! and returns them with `munmap`, so every step of training pays page
//! faults and zeroing for its activations again: about a third of the time
//! of a small model's step (measured with `perf` on `attnflow bench train`).
//! Raising the mmap threshold and the trim threshold keeps freed buffers in
//! the heap for reuse; measured: 1.5x tokens/s on the benchmark model.

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
