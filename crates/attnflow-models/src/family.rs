//! One entry point for every family this crate loads: a path (a Hugging
//! Face directory or a GGUF file) becomes a [`PretrainedModel`], whose
//! attention on a text and whose blueprint come out the same way whatever
//! the family.

use std::path::Path;

use candle_core::Tensor;

use crate::decoder::blueprint::decoder_blueprint_text;
use crate::decoder::config::DecoderConfig;
use crate::decoder::PretrainedDecoder;
use crate::error::{read_json, ModelError, Result};
use crate::gguf::{is_gguf, GgufFile};
use crate::pretrained::PretrainedBert;

/// A loaded model of any family.
#[derive(Clone, Debug)]
pub enum PretrainedModel {
    /// A BERT-family encoder.
    Bert(Box<PretrainedBert>),
    /// A decoder (Llama family or GPT-2).
    Decoder(Box<PretrainedDecoder>),
}

/// Every layer's attention on one text, ready for analysis.
#[derive(Clone, Debug)]
pub struct TextAttention {
    /// A label per token.
    pub tokens: Vec<String>,
    /// Per layer, `(heads, n, n)` weights.
    pub layers: Vec<Tensor>,
    /// Query heads per layer.
    pub heads: usize,
    /// Key/value heads per layer (equal to `heads` without grouping).
    pub kv_heads: usize,
    /// Whether the maps are causal (a decoder's).
    pub causal: bool,
    /// The model in words, for reports.
    pub description: String,
}

impl TextAttention {
    /// The key/value head that query head `head` reads.
    pub fn kv_group(&self, head: usize) -> usize {
        head / (self.heads / self.kv_heads.max(1)).max(1)
    }
}

/// Whether `directory`'s `config.json` declares a decoder this crate runs.
fn directory_is_decoder(directory: &Path) -> Result<bool> {
    let path = directory.join("config.json");
    if !path.is_file() {
        return Ok(false);
    }
    let value = read_json(&path, "config.json holds the model's hyper-parameters")?;
    Ok(DecoderConfig::family_of(&value).is_some())
}

impl PretrainedModel {
    /// Loads a GGUF file or a Hugging Face directory of any family.
    pub fn open(path: &Path) -> Result<Self> {
        if is_gguf(path) || (path.is_dir() && directory_is_decoder(path)?) {
            return Ok(Self::Decoder(Box::new(PretrainedDecoder::open(path)?)));
        }
        Ok(Self::Bert(Box::new(PretrainedBert::open(
            path,
            &candle_core::Device::Cpu,
        )?)))
    }

    /// Runs `text` through the model keeping every layer's attention.
    pub fn attention(&self, text: &str) -> Result<TextAttention> {
        match self {
            Self::Bert(model) => {
                let inspection = model.inspect(text)?;
                let layers = inspection.layer_attentions()?;
                let heads = model.config.num_attention_heads;
                Ok(TextAttention {
                    description: format!(
                        "{} ({} word pieces{})",
                        model.directory.display(),
                        inspection.encoding.tokens.len(),
                        if inspection.encoding.truncated {
                            format!(", text cut at {}", model.tokenizer.max_length())
                        } else {
                            String::new()
                        }
                    ),
                    tokens: inspection.encoding.tokens,
                    layers,
                    heads,
                    kv_heads: heads,
                    causal: false,
                })
            }
            Self::Decoder(model) => decoder_attention(model, &model.inspect(text)?),
        }
    }
}

/// [`TextAttention`] of a decoder's inspection.
pub fn decoder_attention(
    model: &PretrainedDecoder,
    inspection: &crate::decoder::DecoderInspection,
) -> Result<TextAttention> {
    let config = &model.config;
    Ok(TextAttention {
        tokens: inspection.text.labels.clone(),
        layers: inspection.layer_attentions()?,
        heads: config.num_heads,
        kv_heads: config.num_kv_heads,
        causal: true,
        description: format!(
            "{} ({} {}, {} tokens; {} query heads share {} key/value heads)",
            model.path.display(),
            config.family.model_type(),
            if config.source == crate::decoder::config::ConfigSource::Gguf {
                "GGUF"
            } else {
                "checkpoint"
            },
            inspection.len(),
            config.num_heads,
            config.num_kv_heads
        ),
    })
}

/// The blueprint spec of the model at `path` (a Hugging Face directory of
/// any family, or a GGUF file) as `(file, text)`, from its configuration
/// alone: the weights are not read.
pub fn blueprint_spec_of_model(path: &Path) -> Result<(String, String)> {
    if is_gguf(path) {
        let gguf = GgufFile::open(path)?;
        let config = DecoderConfig::from_gguf(&gguf)?;
        let name = gguf
            .optional_string("general.name")?
            .or_else(|| {
                path.file_stem()
                    .map(|stem| stem.to_string_lossy().into_owned())
            })
            .unwrap_or_else(|| "model".to_string());
        let file = format!("{} (derived blueprint)", path.display());
        return Ok((file, decoder_blueprint_text(&config, &name)));
    }
    if path.is_dir() && directory_is_decoder(path)? {
        let config = DecoderConfig::from_file(&path.join("config.json"))?;
        let file = format!("{} (derived blueprint)", path.join("config.json").display());
        return Ok((file, decoder_blueprint_text(&config, &model_name(path))));
    }
    if !path.is_dir() {
        return Err(ModelError::NotADirectory {
            path: path.to_path_buf(),
            reason: "it is neither a GGUF file nor a model directory".to_string(),
        });
    }
    crate::blueprint::blueprint_spec_of_directory(path)
}

/// A model's name from its directory, skipping generic folder names such
/// as a wheel's `model`.
pub(crate) fn model_name(directory: &Path) -> String {
    let canonical = directory
        .canonicalize()
        .unwrap_or_else(|_| directory.to_path_buf());
    canonical
        .ancestors()
        .filter_map(|path| path.file_name())
        .map(|name| name.to_string_lossy().into_owned())
        .find(|name| !matches!(name.as_str(), "model" | "models" | "snapshot"))
        .unwrap_or_else(|| "model".to_string())
}
