//! Looking inside attention: the paper's §4.2 heatmap, §8.1 blends, §8.2
//! layer products, attention rollout and flow (Abnar & Zuidema 2020), and
//! per-head statistics.
//!
//! Everything here works on [`AttentionMap`]s of `f64` — the weights a model
//! returned, copied off the device — so results agree with an `f64`
//! reference whatever dtype the model ran in. [`AttentionStack`] reads the
//! `(layers, batch, heads, n, n)` tensors models export; [`SeededModel`]
//! makes such a stack from text before any model is trained.

mod blend;
mod error;
mod flow;
mod heatmap;
mod map;
pub mod random;
mod rollout;
mod seeded;
mod statistics;

pub use blend::{blend, layer_product};
pub use error::{AnalysisError, AnalysisResult};
pub use flow::{attention_flow, MAX_FLOW_TOKENS};
pub use heatmap::heatmap;
pub use map::{AttentionMap, AttentionStack, ROW_SUM_TOLERANCE};
pub use rollout::{
    discard_lowest, fuse_heads, rollout, rollout_layers, target_row, HeadFusion, RolloutOptions,
};
pub use seeded::{character_tokens, SeededModel, SeededModelConfig};
pub use statistics::{head_statistics, stack_statistics, HeadStatistics};
