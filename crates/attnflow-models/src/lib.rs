//! Pretrained model loaders: Hugging Face BERT-family encoders on candle.
//!
//! A model directory (`config.json`, `model.safetensors`, `tokenizer.json`,
//! and optionally the sentence-transformers files) becomes a
//! [`PretrainedBert`]: a checked configuration, an encoder that returns
//! every layer's attention weights per head `(batch, heads, n, n)` (§3.2)
//! when asked and runs the fused kernel otherwise, the word-piece tokenizer (ids
//! identical to Python's), and the sentence-embedding recipe (mean pooling
//! over real tokens, unit length). [`blueprint_of_directory`] derives the
//! model's blueprint from its configuration, so its cost can be accounted
//! without reading the weights.
//!
//! Inference only, on attnflow-kernels (packed QKV products, fused
//! attention with the key-padding mask, erf GELU in the product's
//! epilogue, reusable buffers): nothing records a backward.
//!
//! ```no_run
//! use attnflow_models::PretrainedBert;
//! use candle_core::Device;
//!
//! let model = PretrainedBert::open("all-MiniLM-L6-v2".as_ref(), &Device::Cpu)?;
//! let embedded = model.embed(&["A man is eating food."], 32, |_| {})?;
//! assert_eq!(embedded.embeddings.dims(), &[1, 384]);
//! let inspection = model.inspect("The cat sat on the mat.")?;
//! assert_eq!(inspection.output.attentions.len(), 6);
//! # Ok::<(), attnflow_models::ModelError>(())
//! ```

#![warn(missing_docs)]

mod bert;
mod blueprint;
mod config;
pub mod decoder;
pub mod embedding_file;
mod error;
mod family;
pub mod gguf;
mod pretrained;
mod sentence;
mod tokenizer;
mod weights;

pub use bert::{
    BertModel, BertOutput, ForwardOptions, Observed, PackedTokens, TokenBatch, Workspace,
};
pub use blueprint::{
    blueprint_of_directory, blueprint_of_model, blueprint_spec_of_directory, blueprint_text,
};
pub use config::BertConfig;
pub use decoder::config::{DecoderConfig, Family};
pub use decoder::generate::{generate, GenerateOptions, Generation, StopReason};
pub use decoder::perplexity::{
    perplexity, PerplexityOptions, PerplexityProgress, PerplexityReport,
};
pub use decoder::{DecoderInspection, PretrainedDecoder};
pub use error::{ModelError, Result};
pub use family::{blueprint_spec_of_model, decoder_attention, PretrainedModel, TextAttention};
pub use pretrained::{check_directory, Embeddings, Inspection, PretrainedBert, REQUIRED_FILES};
pub use sentence::{normalize, pool, Pooling, SentenceConfig};
pub use tokenizer::{Batch, BertTokenizer, Encoding};
pub use weights::{tensor_names, Weights};
