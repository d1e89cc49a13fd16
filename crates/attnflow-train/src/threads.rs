//! One pool of worker threads for training, not two.
//!
//! candle 0.11 runs its element-wise ops over 64 Ki elements on a "barrier
//! pool" of its own, whose threads (and the caller, while it waits) spin
//! between ops; the fused kernels ([`crate::kernels`]) and attnflow-core's
//! attention split their work over rayon's pool. With both pools on the
//! same cores, a spinning thread of one takes the core a thread of the
//! other needs: `perf` on `attnflow bench train` showed the caller spinning
//! in candle's `BarrierGuard::drop` for 45% of the samples, and the
//! benchmark ran at about 0.75 of the speed it reaches with candle's pool
//! disabled. What candle still does element-wise in training (residual
//! sums, adding gradients into its store) is memory-bound and cheap on one
//! thread.

use std::sync::{Once, OnceLock};

/// The variable candle reads, once, when its barrier pool first starts.
const CANDLE_THREADS: &str = "CANDLE_NUM_THREADS";

/// Runs candle's element-wise ops on the calling thread (sets
/// `CANDLE_NUM_THREADS=1`) unless the user chose a value; once per process,
/// and only effective before candle first starts its pool. Matrix products
/// left to candle still use rayon (candle reads `RAYON_NUM_THREADS` for
/// those).
pub fn one_worker_pool() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os(CANDLE_THREADS).is_none() {
            // Called while building a trainer, before any training op and
            // before candle reads the variable.
            std::env::set_var(CANDLE_THREADS, "1");
        }
    });
}

/// Runs `work` on the training pool: rayon workers, one per core (or
/// `RAYON_NUM_THREADS`), with `work` itself on one of them. The parallel
/// loops inside (products, row-wise kernels, attention) then split between
/// the thread already running and the others, instead of a caller thread
/// handing every loop to workers it must wake and then sleeping: one thread
/// per core, not one more.
pub fn install<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    static POOL: OnceLock<Option<rayon::ThreadPool>> = OnceLock::new();
    let pool = POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(rayon::current_num_threads())
            .thread_name(|index| format!("attnflow-train-{index}"))
            .build()
            .ok()
    });
    match pool {
        Some(pool) => pool.install(work),
        None => work(),
    }
}
