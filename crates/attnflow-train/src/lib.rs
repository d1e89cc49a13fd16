//! Blueprints become models that learn.
//!
//! * [`Model`]: a candle model built from a checked blueprint, every op
//!   differentiable, attention weights of chosen nodes and heads captured on
//!   request.
//! * [`tasks`]: seeded synthetic tasks (copy, reverse, sort, associative
//!   recall) and next-token prediction on a text file.
//! * [`Trainer`]: AdamW with warm-up and cosine decay, global-norm clipping,
//!   evaluation every K steps, the objective `J = L + λR` of the paper's §7.1,
//!   the gradient-flow report of §2.3, atomic checkpoints with bit-identical
//!   resume.

pub mod checkpoint;
mod config;
mod error;
pub mod gradflow;
pub mod model;
pub mod objective;
pub mod optim;
pub mod reach;
mod render;
pub mod rng;
mod setup;
pub mod store;
pub mod tasks;
mod trained;
pub mod trainer;
pub mod vocabulary;

pub use error::{Result, TrainError};
pub use model::{Capture, CapturedAttention, ForwardOutput, Mode, Model};
pub use objective::Regulariser;
pub use store::ParameterStore;
pub use trained::{attention_maps, TrainedModel};
pub use trainer::{
    evaluate_checkpoint, BlueprintSource, Evaluation, Progress, StepMetrics, StepOutcome,
    StopReason, TrainConfig, TrainReport, Trainer,
};
pub use vocabulary::Vocabulary;
