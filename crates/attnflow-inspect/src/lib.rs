//! Looking inside attention, from any source, one way.
//!
//! An [`AttentionSource`] (a file of maps, a seeded model, a training
//! checkpoint, a blueprint with seeded weights, a pretrained encoder or
//! decoder, Hugging Face directory or GGUF file) and an
//! [`Input`] resolve through [`inspect`] (or an [`Inspector`], which opens a
//! source once for many inputs) to one [`Inspection`]: the tokens, every
//! layer's and head's `n × n` map, and a description of where they came
//! from. [`Inspection::analyse`] derives the paper's views (§4.2 heatmaps,
//! §8.2 rollout, attention flow, per-head statistics), and [`files`] writes
//! them: pictures, `statistics.json`, `rollout.json` and a self-contained
//! `report.html`.
//!
//! `attnflow attention inspect`, the pipeline's report and the web app all
//! call this crate; none of them reads maps or runs models for attention on
//! its own.

mod analysis;
mod blend;
mod error;
pub mod files;
mod maps;
mod source;

pub use analysis::{Analysis, AnalysisOptions};
pub use blend::{blend_files, Blend, BlendRequest};
pub use error::{InspectError, Result};
pub use maps::{read_map, read_stack, read_tokens, FILE_ROW_TOLERANCE};
pub use source::{
    inspect, inspect_decoder, AttentionSource, Example, Input, Inspection, Inspector,
};
