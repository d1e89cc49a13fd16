//! The one CPU kernel layer of attnflow, shared by inference and training.
//!
//! Every kernel comes in up to two variants that compute the same bits:
//!
//! * an **inference** variant on plain `f32` slices, writing into buffers
//!   the caller owns and reuses: it records no autograd graph, keeps
//!   nothing for a backward and allocates nothing ([`linear_into`],
//!   [`layer_norm_into`], [`attention_forward`], …);
//! * a **training** variant, a candle custom op with its own backward, one
//!   graph node per kernel ([`linear`], [`layer_norm`], [`cross_entropy`],
//!   …), whose forward calls the inference variant. candle's autograd pays
//!   for every op twice over in the backward (a zero tensor per gradient
//!   edge plus an addition into it); one op per kernel is one pass forward
//!   and one back.
//!
//! | kernel | inference | training |
//! |---|---|---|
//! | `f(x·Wᵀ + b)` on `gemm`, `f` ∈ GELU(tanh), GELU(erf), SiLU; packed QKV or gate/up weights | [`linear_into`], [`concat_rows`] | [`linear`], [`linear_activation`], [`linear_to_heads`], [`linear_from_heads`], [`linear_after_gelu`] |
//! | `f(x·Wᵀ + b)` with `W` laid out once in 64-output panels (a loaded model's weights; GGUF blocks dequantized a panel at a time) | [`linear_panels_into`], [`Panels`] | |
//! | activations, residual sums | [`activate`], [`swiglu_into`], [`swiglu_packed_into`], [`add_in_place`] | [`activation()`], [`gelu_tanh`], [`swiglu`] |
//! | layer norm, RMS norm | [`layer_norm_into`], [`add_layer_norm_in_place`], [`rms_norm_into`] | [`layer_norm`], [`rms_norm`] |
//! | softmax, cross-entropy | [`softmax_rows_in_place`], [`cross_entropy_value`] | [`softmax_last_dim`], [`cross_entropy`] |
//! | rotary embeddings (θ, linear, Llama 3 and YaRN scaling, rotate-half) | [`rotary_in_place`], [`RotaryTables::from_frequencies`], [`yarn::yarn_frequencies`] | [`rotary()`] |
//! | embeddings, learned positions | [`embed_into`], [`add_positions_in_place`] | [`add_positions`] |
//! | fused attention (FlashAttention-2), strided Q/K/V, causal with offset, key padding, grouped heads | [`attention_forward`], [`attention_forward_packed`] (sequences back to back, no padding), [`attention_weights_forward`] (or `_new`, into a buffer never zeroed) | [`attention_backward`] (attnflow-core wraps it as a candle op) |
//! | products with weights kept in their file's format (f16, bf16, GGUF Q8_0/Q4_0/Q4_1 blocks), read as exact `f32` | [`packed::PackedMatrix`], [`packed::matvec_group`] | |
//! | AdamW, gradient norms | | [`adamw_update`], [`sum_of_squares`] |
//!
//! Underneath: one SIMD layer ([`simd`]: [`SimdPath`] chosen at run time,
//! one `exp`, one `erf`, every path the same bits), one threading policy
//! ([`threads`]: one rayon pool, work split by shape only, so results do
//! not depend on the number of threads), and products on `gemm` in fixed
//! column blocks ([`matmul()`]).
//!
//! Training variants take f32 tensors on the CPU; other dtypes and devices
//! take the candle composition of the same maths (the `*_reference`
//! functions), which the tests compare against.

pub mod activation;
pub mod attention;
pub mod linear;
pub mod matmul;
pub mod norm;
pub mod optim;
pub mod packed;
pub mod panel;
pub mod positions;
pub mod rotary;
pub mod simd;
pub mod softmax;
mod storage;
pub mod threads;
pub mod yarn;

#[cfg(test)]
mod tests;

pub use activation::{
    activate, activation, add_in_place, gelu_tanh, swiglu, swiglu_into, swiglu_packed_into,
    Activation,
};
pub use attention::{
    attention_backward, attention_forward, attention_forward_packed, attention_weights_forward,
    attention_weights_forward_new, key_bias_from_lengths, AttentionGradients, AttentionProblem,
    HeadsLayout, Tiling,
};
pub use linear::{
    concat_rows, linear, linear_activation, linear_after_activation, linear_after_gelu,
    linear_from_heads, linear_into, linear_to_heads, Weight, WeightLayout,
};
pub use matmul::{matmul, product, Operand};
pub use norm::{add_layer_norm_in_place, layer_norm, layer_norm_into, rms_norm, rms_norm_into};
pub use optim::{adamw_update, sum_of_squares, AdamWStep};
pub use panel::{linear_panels_into, Panels};
pub use positions::{add_positions, add_positions_in_place, embed_into};
pub use rotary::{
    inverse_frequencies, rotary, rotary_in_place, RotaryConfig, RotaryScaling, RotaryTables,
};
pub use simd::SimdPath;
pub use softmax::{cross_entropy, cross_entropy_value, softmax_last_dim, softmax_rows_in_place};
pub use storage::with_values;

/// `buffer` grown to at least `len` values (never shrunk), its first `len`
/// as a slice: a model keeps one such buffer per intermediate and
/// allocates nothing once the largest batch has been seen.
pub fn scratch(buffer: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buffer.len() < len {
        buffer.resize(len, 0.0);
    }
    &mut buffer[..len]
}
