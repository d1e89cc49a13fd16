//! One pool of worker threads for training, not two: with candle's own
//! pool disabled (`attnflow_core::process::one_worker_pool`), every
//! parallel loop of a step runs on one rayon pool of one thread per core.

use std::sync::OnceLock;

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
