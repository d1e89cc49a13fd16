//! Attention maths on candle tensors.
//!
//! This crate holds the attention engine of attnflow: the attention matrix of
//! the paper's §2.1, scaled dot-product attention (§3.2) with every common
//! mask, and the multi-head module (§2.2). Everything is built from
//! differentiable candle operations, so gradients flow through all of it
//! (§2.3); it works in `f32` and `f64`.
//!
//! The exact path here is the reference every faster kernel is checked
//! against: it materialises the full `(batch, heads, n, m)` weight tensor.

pub mod analysis;
mod attention;
mod error;
pub mod file;
mod fused;
mod mask;
mod multi_head;
pub mod process;
mod softmax;

pub use attention::{attention_matrix, scaled_dot_product_attention, AttentionOutput, SdpaOptions};
pub use error::{CoreError, Result};
pub use fused::{
    attend, fused_attention, fused_attention_weights, fused_unsupported_reason, FusedOptions,
    FusedOutput, SimdPath, Tiling, FUSED_MIN_SCORES,
};
pub use mask::AttentionMask;
pub use multi_head::{MultiHeadAttention, MultiHeadAttentionConfig};
pub use softmax::masked_softmax_last_dim;
