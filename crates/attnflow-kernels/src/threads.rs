//! The one threading policy of attnflow's compute: every parallel loop runs
//! on one rayon pool of one thread per core, and how work is split depends
//! on the shape only, never on the number of threads (so results are the
//! same bits on any machine and thread count).
//!
//! * Products are split into fixed column blocks (`matmul`), each one
//!   single-threaded `gemm` call.
//! * Row-wise kernels work in blocks of [`BLOCK_ROWS`] rows; sums over rows
//!   (bias, gain and table gradients) add per-block partial sums in block
//!   order.
//! * Small work runs on the calling thread: waking another costs more than
//!   it saves ([`parallel`]).
//! * candle's own element-wise pool is not used by these kernels; a process
//!   that also runs candle ops should keep that pool at one thread
//!   (`attnflow_core::process::one_worker_pool`) so two pools do not fight
//!   for the cores.

use std::sync::OnceLock;

/// Rows per block in row-parallel loops and in the blocked sums over rows:
/// fixed, so the partition (and every rounding) is the same on any machine.
pub const BLOCK_ROWS: usize = 64;

/// Below this many elements a row-wise op runs on the calling thread.
pub const PARALLEL_MIN_ELEMENTS: usize = 64 * 1024;

/// Whether an op over `elements` values is worth spreading over the pool.
/// Changes only who computes a block, never what a block computes.
#[inline]
pub fn parallel(elements: usize) -> bool {
    elements >= PARALLEL_MIN_ELEMENTS && rayon::current_num_threads() > 1
}

/// Runs `work` on the compute pool: rayon workers, one per core (or
/// `RAYON_NUM_THREADS`), with `work` itself on one of them. The parallel
/// loops inside (products, row-wise kernels, attention) then split between
/// the thread already running and the others, instead of a caller thread
/// handing every loop to workers it must wake and then sleeping: one thread
/// per core, not one more. Training steps and inference batches both run
/// inside it.
pub fn install<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    static POOL: OnceLock<Option<rayon::ThreadPool>> = OnceLock::new();
    if rayon::current_thread_index().is_some() {
        // Already on a pool: nest nothing.
        return work();
    }
    let pool = POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(rayon::current_num_threads())
            .thread_name(|index| format!("attnflow-compute-{index}"))
            .build()
            .ok()
    });
    match pool {
        Some(pool) => pool.install(work),
        None => work(),
    }
}
