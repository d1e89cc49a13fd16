//! `config.json` of a Hugging Face BERT checkpoint.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::{read_json, ModelError, Result};

/// The hyper-parameters of a BERT encoder, as `config.json` states them.
///
/// Only what the forward pass and the blueprint need is kept; every field is
/// checked when the file is read, so a loaded config always describes a
/// model this crate can run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BertConfig {
    /// The file it was read from (for messages).
    pub path: PathBuf,
    /// Word-piece vocabulary size (rows of the word embedding).
    pub vocab_size: usize,
    /// Width of every hidden state (`d_model`).
    pub hidden_size: usize,
    /// Number of encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer; divides `hidden_size`.
    pub num_attention_heads: usize,
    /// Width of the feed-forward layer.
    pub intermediate_size: usize,
    /// Rows of the learned position embedding: the longest input.
    pub max_position_embeddings: usize,
    /// Rows of the segment (token type) embedding.
    pub type_vocab_size: usize,
    /// The epsilon of every LayerNorm.
    pub layer_norm_eps: f64,
    /// The token id used for padding.
    pub pad_token_id: u32,
    /// Dropout after embeddings and sublayers (training only; recorded for
    /// the blueprint).
    pub hidden_dropout_prob: f64,
    /// The architectures the file declares (`BertModel`, ...), for reports.
    pub architectures: Vec<String>,
}

impl BertConfig {
    /// Reads and checks `config.json`.
    ///
    /// Refuses anything but a BERT encoder with absolute positions and the
    /// erf GELU (`hidden_act = "gelu"`), naming the field at fault.
    pub fn from_file(path: &Path) -> Result<Self> {
        let value = read_json(
            path,
            "config.json holds the model's hyper-parameters (a Hugging Face model directory has one)",
        )?;
        Self::from_value(path, &value)
    }

    /// Checks an already parsed `config.json`; `path` names it in messages.
    pub fn from_value(path: &Path, value: &Value) -> Result<Self> {
        let object = value
            .as_object()
            .ok_or_else(|| ModelError::config(path, "(top level)", "expected a JSON object"))?;
        let fields = Fields { path, object };

        let model_type = fields.optional_str("model_type")?;
        let architectures = fields.architectures()?;
        if model_type.as_deref() != Some("bert") {
            let found = match &model_type {
                Some(kind) => format!("model_type \"{kind}\""),
                None => "with no model_type".to_string(),
            };
            let listed = if architectures.is_empty() {
                String::new()
            } else {
                format!(" (architectures: {})", architectures.join(", "))
            };
            return Err(ModelError::UnknownArchitecture {
                path: path.to_path_buf(),
                found: format!("{found}{listed}"),
            });
        }
        if fields.optional_bool("is_decoder")? == Some(true) {
            return Err(ModelError::config(
                path,
                "is_decoder",
                "a decoder (causal) BERT is not supported; attnflow loads bidirectional encoders",
            ));
        }
        let hidden_act = fields.optional_str("hidden_act")?;
        match hidden_act.as_deref() {
            // HF's "gelu" is the exact erf form: x/2 · (1 + erf(x/√2)).
            Some("gelu") | None => {}
            Some(other) => {
                return Err(ModelError::config(
                    path,
                    "hidden_act",
                    format!("activation \"{other}\" is not supported; expected \"gelu\""),
                ))
            }
        }
        match fields.optional_str("position_embedding_type")?.as_deref() {
            Some("absolute") | None => {}
            Some(other) => {
                return Err(ModelError::config(
                    path,
                    "position_embedding_type",
                    format!("\"{other}\" positions are not supported; expected \"absolute\""),
                ))
            }
        }

        let config = Self {
            path: path.to_path_buf(),
            vocab_size: fields.positive("vocab_size")?,
            hidden_size: fields.positive("hidden_size")?,
            num_hidden_layers: fields.positive("num_hidden_layers")?,
            num_attention_heads: fields.positive("num_attention_heads")?,
            intermediate_size: fields.positive("intermediate_size")?,
            max_position_embeddings: fields.positive("max_position_embeddings")?,
            type_vocab_size: fields.optional_positive("type_vocab_size")?.unwrap_or(2),
            layer_norm_eps: fields.optional_f64("layer_norm_eps")?.unwrap_or(1e-12),
            pad_token_id: fields.optional_u32("pad_token_id")?.unwrap_or(0),
            hidden_dropout_prob: fields.optional_f64("hidden_dropout_prob")?.unwrap_or(0.1),
            architectures,
        };
        if config.hidden_size % config.num_attention_heads != 0 {
            return Err(ModelError::config(
                path,
                "num_attention_heads",
                format!(
                    "{} heads do not divide hidden_size {}",
                    config.num_attention_heads, config.hidden_size
                ),
            ));
        }
        if !(config.layer_norm_eps > 0.0 && config.layer_norm_eps.is_finite()) {
            return Err(ModelError::config(
                path,
                "layer_norm_eps",
                format!("must be a positive number, got {}", config.layer_norm_eps),
            ));
        }
        if !(0.0..1.0).contains(&config.hidden_dropout_prob) {
            return Err(ModelError::config(
                path,
                "hidden_dropout_prob",
                format!("must lie in [0, 1), got {}", config.hidden_dropout_prob),
            ));
        }
        if config.pad_token_id as usize >= config.vocab_size {
            return Err(ModelError::config(
                path,
                "pad_token_id",
                format!(
                    "{} is outside the vocabulary of {} tokens",
                    config.pad_token_id, config.vocab_size
                ),
            ));
        }
        Ok(config)
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

/// Typed access to the fields of one JSON object, naming the field on error.
pub(crate) struct Fields<'a> {
    pub(crate) path: &'a Path,
    pub(crate) object: &'a Map<String, Value>,
}

impl Fields<'_> {
    pub(crate) fn get(&self, field: &str) -> Option<&Value> {
        self.object.get(field).filter(|value| !value.is_null())
    }

    pub(crate) fn fault(&self, field: &str, message: impl Into<String>) -> ModelError {
        ModelError::config(self.path, field, message)
    }

    pub(crate) fn optional_u64(&self, field: &str) -> Result<Option<u64>> {
        match self.get(field) {
            None => Ok(None),
            Some(value) => value
                .as_u64()
                .map(Some)
                .ok_or_else(|| self.fault(field, format!("expected a whole number, got {value}"))),
        }
    }

    pub(crate) fn optional_positive(&self, field: &str) -> Result<Option<usize>> {
        match self.optional_u64(field)? {
            None => Ok(None),
            Some(0) => Err(self.fault(field, "must be at least 1, got 0")),
            Some(value) => usize::try_from(value)
                .map(Some)
                .map_err(|_| self.fault(field, format!("{value} is too large"))),
        }
    }

    pub(crate) fn positive(&self, field: &str) -> Result<usize> {
        self.optional_positive(field)?
            .ok_or_else(|| self.fault(field, "required, but absent"))
    }

    pub(crate) fn optional_u32(&self, field: &str) -> Result<Option<u32>> {
        match self.optional_u64(field)? {
            None => Ok(None),
            Some(value) => u32::try_from(value)
                .map(Some)
                .map_err(|_| self.fault(field, format!("{value} is too large for a token id"))),
        }
    }

    pub(crate) fn optional_f64(&self, field: &str) -> Result<Option<f64>> {
        match self.get(field) {
            None => Ok(None),
            Some(value) => value
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.fault(field, format!("expected a number, got {value}"))),
        }
    }

    pub(crate) fn optional_bool(&self, field: &str) -> Result<Option<bool>> {
        match self.get(field) {
            None => Ok(None),
            Some(value) => value
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.fault(field, format!("expected true or false, got {value}"))),
        }
    }

    pub(crate) fn optional_str(&self, field: &str) -> Result<Option<String>> {
        match self.get(field) {
            None => Ok(None),
            Some(value) => value
                .as_str()
                .map(|text| Some(text.to_string()))
                .ok_or_else(|| self.fault(field, format!("expected a string, got {value}"))),
        }
    }

    pub(crate) fn architectures(&self) -> Result<Vec<String>> {
        let field = "architectures";
        match self.get(field) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| {
                    item.as_str().map(str::to_string).ok_or_else(|| {
                        self.fault(field, format!("expected a list of names, found {item}"))
                    })
                })
                .collect(),
            Some(other) => Err(self.fault(field, format!("expected a list of names, got {other}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minilm() -> Value {
        serde_json::json!({
            "architectures": ["BertModel"],
            "hidden_act": "gelu",
            "hidden_size": 384,
            "intermediate_size": 1536,
            "layer_norm_eps": 1e-12,
            "max_position_embeddings": 512,
            "model_type": "bert",
            "num_attention_heads": 12,
            "num_hidden_layers": 6,
            "pad_token_id": 0,
            "position_embedding_type": "absolute",
            "type_vocab_size": 2,
            "vocab_size": 30522
        })
    }

    fn check(value: Value) -> Result<BertConfig> {
        BertConfig::from_value(Path::new("model/config.json"), &value)
    }

    fn field_of(error: ModelError) -> String {
        match error {
            ModelError::Config { field, .. } => field,
            other => panic!("expected a config error, got {other}"),
        }
    }

    #[test]
    fn reads_minilm() {
        let config = check(minilm()).unwrap();
        assert_eq!(config.hidden_size, 384);
        assert_eq!(config.head_dim(), 32);
        assert_eq!(config.architectures, ["BertModel"]);
        assert_eq!(config.hidden_dropout_prob, 0.1);
    }

    #[test]
    fn refuses_other_architectures() {
        let mut value = minilm();
        value["model_type"] = "gpt2".into();
        value["architectures"] = serde_json::json!(["GPT2LMHeadModel"]);
        let message = check(value).unwrap_err().to_string();
        assert!(message.contains("model/config.json"), "{message}");
        assert!(
            message.contains("gpt2") && message.contains("GPT2LMHeadModel"),
            "{message}"
        );
    }

    #[test]
    fn names_the_field_at_fault() {
        let cases: [(&str, Value); 6] = [
            ("hidden_size", Value::Null),
            ("hidden_size", "384".into()),
            ("num_attention_heads", 7.into()),
            ("hidden_act", "relu".into()),
            ("position_embedding_type", "relative_key".into()),
            ("vocab_size", 0.into()),
        ];
        for (field, replacement) in cases {
            let mut value = minilm();
            value[field] = replacement;
            assert_eq!(field_of(check(value).unwrap_err()), field);
        }
        let mut value = minilm();
        value["is_decoder"] = true.into();
        assert_eq!(field_of(check(value).unwrap_err()), "is_decoder");
    }
}
