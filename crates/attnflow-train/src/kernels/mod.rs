//! Fused CPU kernels for the training path, as candle custom ops with their
//! own backward.
//!
//! Why: candle's autograd pays for every op twice over in the backward pass
//! (a zero tensor per gradient edge plus an addition into it), and a layer
//! norm, GELU or cross-entropy written from elementary ops is a dozen such
//! ops over the whole activation. Each op here is one node in the graph:
//! one pass forward, one pass back.
//!
//! * [`linear`], [`linear_to_heads`], [`linear_from_heads`]: `x·Wᵀ + b` with
//!   the `gemm` crate (packed SIMD kernels chosen at run time, AVX-512 with
//!   the workspace's `x86-v4` feature), optionally reading or writing the
//!   `(batch, heads, seq, head_dim)` layout attention wants, so the head
//!   split and merge are not separate ops.
//! * [`layer_norm`]: forward and backward in one pass over each row.
//! * [`gelu_tanh`]: GELU (tanh approximation) through one vectorised `exp`;
//!   [`linear_after_gelu`] folds it into the product that follows.
//! * [`cross_entropy`]: log-softmax, target pick and weighted mean in one
//!   op; its backward is `softmax - onehot` scaled.
//! * [`add_positions`]: learned position rows added to every sequence.
//!
//! Every op works on f32 tensors on the CPU; other dtypes and devices take
//! the reference composition of candle ops (same maths), which the tests
//! compare against. Reductions over rows (bias, gain and table gradients)
//! sum fixed blocks of rows and then the blocks in order, so results do not
//! depend on the number of threads.

mod activation;
mod linear;
mod loss;
mod norm;
mod positions;
mod simd;
mod storage;

pub use activation::gelu_tanh;
pub use linear::{linear, linear_after_gelu, linear_from_heads, linear_to_heads};
pub use loss::cross_entropy;
pub use norm::layer_norm;
pub use positions::add_positions;
pub(crate) use simd::{adamw_update, sum_of_squares, AdamWStep};
pub(crate) use storage::with_values;

#[cfg(test)]
mod tests;

/// Rows per block in row-parallel loops and in the blocked sums over rows:
/// fixed, so the partition (and every rounding) is the same on any machine.
const BLOCK_ROWS: usize = 64;

/// Below this many elements a row-wise op runs on the calling thread: waking
/// another thread costs more than it saves.
const PARALLEL_MIN_ELEMENTS: usize = 64 * 1024;

/// Whether a row-wise op over `elements` values is worth spreading over the
/// rayon pool.
fn parallel(elements: usize) -> bool {
    elements >= PARALLEL_MIN_ELEMENTS && rayon::current_num_threads() > 1
}
