//! Decoders: the Llama family (`llama`, `mistral`, `qwen2`: grouped-query
//! attention, RoPE, RMS norm, SwiGLU) and GPT-2, from Hugging Face
//! directories or GGUF files.
//!
//! [`PretrainedDecoder::open`] takes either; the model then generates
//! ([`generate`]), scores text ([`perplexity`]) and shows every layer's
//! attention per query head ([`PretrainedDecoder::inspect`]).

pub mod blueprint;
pub mod config;
pub mod generate;
pub mod load;
pub mod model;
pub mod perplexity;
pub mod rope;
pub mod tokenizer;

/// Most bytes of `f32` panels a decoder's weights keep between prefills,
/// all matrices together (see `attnflow_kernels::packed`).
pub use attnflow_kernels::packed::set_kept_panel_limit;

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use crate::error::{ModelError, Result};
use crate::gguf::{is_gguf, GgufFile};
use config::DecoderConfig;
use model::{DecoderModel, ForwardOptions, LogitRows};
use tokenizer::{DecoderTokenizer, TokenizedText};

/// The files a decoder directory must hold.
pub const DECODER_FILES: [(&str, &str); 3] = [
    ("config.json", "config.json holds the model's hyper-parameters"),
    ("tokenizer.json", "tokenizer.json holds the vocabulary and merges (save it with the Python tokenizer's `save_pretrained`)"),
    ("model.safetensors", "model.safetensors holds the weights (save them with `save_pretrained(..., safe_serialization=True)`)"),
];

/// A decoder loaded from a Hugging Face directory or a GGUF file.
#[derive(Clone, Debug)]
pub struct PretrainedDecoder {
    /// The directory or file it was loaded from.
    pub path: PathBuf,
    /// Its configuration.
    pub config: DecoderConfig,
    /// The network with its weights.
    pub model: DecoderModel,
    /// Its tokenizer.
    pub tokenizer: DecoderTokenizer,
}

/// One text through the model with every layer's attention kept.
#[derive(Clone, Debug)]
pub struct DecoderInspection {
    /// The tokens (ids and labels).
    pub text: TokenizedText,
    /// Per layer, `(heads, n, n)` causal attention weights, row-major.
    pub attentions: Vec<Vec<f32>>,
    /// Query heads per layer.
    pub heads: usize,
    /// Key/value heads per layer; query head `h` reads key/value head
    /// `h / (heads / kv_heads)`.
    pub kv_heads: usize,
    /// The logits of the last position, `(vocab)`.
    pub last_logits: Vec<f32>,
}

impl DecoderInspection {
    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.text.ids.len()
    }

    /// Whether there are no tokens.
    pub fn is_empty(&self) -> bool {
        self.text.ids.is_empty()
    }

    /// The key/value head query head `head` shares.
    pub fn kv_group(&self, head: usize) -> usize {
        head / (self.heads / self.kv_heads)
    }

    /// Every layer's attention as a `(heads, n, n)` tensor, the input of
    /// attnflow-core's analysis.
    pub fn layer_attentions(&self) -> Result<Vec<Tensor>> {
        let n = self.len();
        self.attentions
            .iter()
            .map(|weights| {
                Ok(Tensor::from_slice(
                    weights,
                    (self.heads, n, n),
                    &Device::Cpu,
                )?)
            })
            .collect()
    }
}

/// Checks that `directory` holds every file of [`DECODER_FILES`].
fn check_directory(directory: &Path) -> Result<()> {
    for (file, what) in DECODER_FILES {
        let path = directory.join(file);
        if !path.is_file() {
            return Err(ModelError::MissingFile {
                path,
                what: what.to_string(),
            });
        }
    }
    Ok(())
}

impl PretrainedDecoder {
    /// Loads a GGUF file, or a Hugging Face directory (`config.json`,
    /// `model.safetensors`, `tokenizer.json`) of model type `llama`,
    /// `mistral`, `qwen2` or `gpt2`.
    pub fn open(path: &Path) -> Result<Self> {
        if is_gguf(path) {
            let gguf = GgufFile::open(path)?;
            let config = DecoderConfig::from_gguf(&gguf)?;
            let tokenizer = DecoderTokenizer::from_gguf(&gguf)?;
            let model = load::from_gguf(&gguf, &config)?;
            return Ok(Self {
                path: path.to_path_buf(),
                config,
                model,
                tokenizer,
            });
        }
        if !path.is_dir() {
            return Err(ModelError::NotADirectory {
                path: path.to_path_buf(),
                reason: if path.exists() {
                    "it is neither a GGUF file nor a directory with config.json".to_string()
                } else {
                    "it does not exist".to_string()
                },
            });
        }
        check_directory(path)?;
        let config = DecoderConfig::from_file(&path.join("config.json"))?;
        let tokenizer = DecoderTokenizer::from_file(&path.join("tokenizer.json"))?;
        let model = load::from_directory(path, &config)?;
        Ok(Self {
            path: path.to_path_buf(),
            config,
            model,
            tokenizer,
        })
    }

    /// Runs `text` through the model keeping every layer's attention.
    pub fn inspect(&self, text: &str) -> Result<DecoderInspection> {
        let tokenized = self.tokenizer.encode(text)?;
        if tokenized.ids.is_empty() {
            return Err(ModelError::input("text", "gives no tokens"));
        }
        self.inspect_tokens(tokenized)
    }

    /// Runs given tokens through the model keeping every layer's attention.
    pub fn inspect_tokens(&self, text: TokenizedText) -> Result<DecoderInspection> {
        let mut cache = self.model.cache(text.ids.len());
        let output = self.model.forward(
            &text.ids,
            &mut cache,
            ForwardOptions {
                logits: LogitRows::Last,
                attentions: true,
                hidden_states: false,
            },
        )?;
        Ok(DecoderInspection {
            text,
            attentions: output.attentions,
            heads: self.config.num_heads,
            kv_heads: self.config.num_kv_heads,
            last_logits: output.logits,
        })
    }

    /// The tokens of `ids` as a [`TokenizedText`] (labels from the
    /// vocabulary).
    pub fn tokens_of(&self, ids: &[u32]) -> TokenizedText {
        TokenizedText {
            ids: ids.to_vec(),
            labels: ids
                .iter()
                .map(|&id| self.tokenizer.token_label(id))
                .collect(),
        }
    }
}
