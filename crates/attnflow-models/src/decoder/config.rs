//! The hyper-parameters of a decoder, from a Hugging Face `config.json`
//! (`llama`, `mistral`, `qwen2`, `gpt2`) or from GGUF metadata, checked once
//! so that a loaded configuration always describes a model this crate runs.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use crate::config::Fields;
use crate::error::{read_json, ModelError, Result};
use crate::gguf::GgufFile;

/// The decoder families this crate runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// Llama: RMS norm, rotary positions, SwiGLU, grouped key/value heads.
    Llama,
    /// Mistral: Llama's layout, optionally with a sliding attention window.
    Mistral,
    /// Qwen2: Llama's layout with biases on the query, key and value maps.
    Qwen2,
    /// GPT-2: learned positions, LayerNorm, GELU, fused Conv1D projections.
    Gpt2,
}

impl Family {
    /// The `model_type` of `config.json`.
    pub fn model_type(self) -> &'static str {
        match self {
            Family::Llama => "llama",
            Family::Mistral => "mistral",
            Family::Qwen2 => "qwen2",
            Family::Gpt2 => "gpt2",
        }
    }

    /// Whether the family normalises with RMS norm and gates its
    /// feed-forward with SiLU (the Llama layout) rather than GPT-2's.
    pub fn is_llama_like(self) -> bool {
        !matches!(self, Family::Gpt2)
    }
}

/// The feed-forward activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// `silu(gate(x)) · up(x)` (SwiGLU, the Llama family).
    GatedSilu,
    /// GELU with the tanh approximation (GPT-2's `gelu_new`).
    GeluTanh,
    /// The exact GELU, `x/2 · (1 + erf(x/√2))`.
    GeluErf,
}

/// How rotary frequencies are scaled beyond the trained context.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RopeScaling {
    /// `θ_i = base^(−2i/d)`.
    None,
    /// Frequencies divided by `factor` (positions interpolated).
    Linear {
        /// The divisor.
        factor: f64,
    },
    /// Llama 3.1's: low frequencies divided by `factor`, high ones kept,
    /// a smooth blend between.
    Llama3 {
        /// Divisor of the low frequencies.
        factor: f64,
        /// Wavelengths above `original / low_freq_factor` are scaled.
        low_freq_factor: f64,
        /// Wavelengths below `original / high_freq_factor` are kept.
        high_freq_factor: f64,
        /// The context the model was trained on.
        original_max_position_embeddings: f64,
    },
    /// YaRN (Peng et al. 2023): interpolation blended with extrapolation by
    /// a linear ramp, and cos/sin multiplied by an attention factor.
    Yarn {
        /// The context extension factor.
        factor: f64,
        /// The context the model was trained on.
        original_max_position_embeddings: f64,
        /// Rotations where extrapolation ends.
        beta_fast: f64,
        /// Rotations where interpolation begins.
        beta_slow: f64,
        /// Multiplies cos and sin.
        attention_factor: f64,
        /// Whether the correction range is rounded outwards to whole dims.
        truncate: bool,
    },
    /// Dynamic NTK: the base grows only beyond `max_position_embeddings`,
    /// which this crate does not run past, so frequencies are the plain
    /// ones.
    Dynamic {
        /// The growth factor.
        factor: f64,
    },
}

/// Rotary position embedding settings (§ RoFormer, Su et al. 2021).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RopeConfig {
    /// The base of the frequencies (`rope_theta`).
    pub theta: f64,
    /// Scaling of the frequencies.
    pub scaling: RopeScaling,
}

/// Where a configuration came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfigSource {
    /// A Hugging Face `config.json`.
    ConfigJson,
    /// GGUF metadata.
    Gguf,
}

/// The hyper-parameters of a decoder.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DecoderConfig {
    /// The file it was read from (`config.json` or the `.gguf`), for messages.
    pub path: PathBuf,
    /// Whether `path` is a `config.json` or a GGUF file.
    pub source: ConfigSource,
    /// The family, which fixes the layer layout.
    pub family: Family,
    /// The architectures the file declares, for reports.
    pub architectures: Vec<String>,
    /// Rows of the token embedding.
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Number of decoder layers.
    pub num_layers: usize,
    /// Query heads per layer.
    pub num_heads: usize,
    /// Key/value heads per layer; divides `num_heads` (grouped-query
    /// attention shares each among `num_heads / num_kv_heads` query heads).
    pub num_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Width of the feed-forward layer.
    pub intermediate_size: usize,
    /// The longest input the model takes.
    pub max_positions: usize,
    /// Epsilon of every norm.
    pub norm_eps: f64,
    /// Rotary embedding (the Llama family); `None` for learned positions.
    pub rope: Option<RopeConfig>,
    /// Whether the output head reuses the token embedding.
    pub tie_embeddings: bool,
    /// Biases on the query, key and value maps.
    pub qkv_bias: bool,
    /// Bias on the attention output map.
    pub output_bias: bool,
    /// Biases in the feed-forward maps.
    pub mlp_bias: bool,
    /// Per layer, the number of most recent keys a query may see (itself
    /// included), or `None` for the whole causal prefix.
    pub sliding_windows: Vec<Option<usize>>,
    /// The feed-forward activation.
    pub activation: Activation,
    /// The beginning-of-sequence token, when the model declares one.
    pub bos_token_id: Option<u32>,
    /// Tokens that end generation.
    pub eos_token_ids: Vec<u32>,
}

impl DecoderConfig {
    /// Query heads per key/value head.
    pub fn group_size(&self) -> usize {
        self.num_heads / self.num_kv_heads
    }

    /// The key/value head query head `head` reads.
    pub fn kv_head_of(&self, head: usize) -> usize {
        head / self.group_size()
    }

    /// Reads and checks a `config.json` of a decoder.
    pub fn from_file(path: &Path) -> Result<Self> {
        let value = read_json(
            path,
            "config.json holds the model's hyper-parameters (a Hugging Face model directory has one)",
        )?;
        Self::from_value(path, &value)
    }

    /// The family a parsed `config.json` declares, `None` for a model type
    /// this module does not run.
    pub fn family_of(value: &Value) -> Option<Family> {
        match value.get("model_type").and_then(Value::as_str)? {
            "llama" => Some(Family::Llama),
            "mistral" => Some(Family::Mistral),
            "qwen2" => Some(Family::Qwen2),
            "gpt2" => Some(Family::Gpt2),
            _ => None,
        }
    }

    /// Checks an already parsed `config.json`; `path` names it in messages.
    pub fn from_value(path: &Path, value: &Value) -> Result<Self> {
        let object = value
            .as_object()
            .ok_or_else(|| ModelError::config(path, "(top level)", "expected a JSON object"))?;
        let fields = Fields { path, object };
        let architectures = fields.architectures()?;
        let Some(family) = Self::family_of(value) else {
            let found = match fields.optional_str("model_type")? {
                Some(kind) => format!("model_type \"{kind}\""),
                None => "with no model_type".to_string(),
            };
            return Err(ModelError::UnknownArchitecture {
                path: path.to_path_buf(),
                found,
            });
        };
        let config = match family {
            Family::Gpt2 => gpt2_config(&fields, architectures)?,
            _ => llama_config(&fields, family, architectures)?,
        };
        config.check(|field, message| ModelError::config(path, field, message))?;
        Ok(config)
    }

    /// Checks the relations between fields; `fault` names the field (or
    /// GGUF key) at fault.
    pub(crate) fn check(&self, fault: impl Fn(&str, String) -> ModelError) -> Result<()> {
        if self.num_heads % self.num_kv_heads != 0 {
            return Err(fault(
                "num_key_value_heads",
                format!(
                    "{} key/value heads do not divide {} query heads",
                    self.num_kv_heads, self.num_heads
                ),
            ));
        }
        if self.rope.is_some() && self.head_dim % 2 != 0 {
            return Err(fault(
                "head_dim",
                format!(
                    "rotary embeddings need an even head width, got {}",
                    self.head_dim
                ),
            ));
        }
        if !(self.norm_eps > 0.0 && self.norm_eps.is_finite()) {
            return Err(fault(
                "rms_norm_eps",
                format!("must be a positive number, got {}", self.norm_eps),
            ));
        }
        if let Some(rope) = &self.rope {
            if !(rope.theta > 1.0 && rope.theta.is_finite()) {
                return Err(fault(
                    "rope_theta",
                    format!("must be a number above 1, got {}", rope.theta),
                ));
            }
        }
        for (name, id) in self
            .bos_token_id
            .iter()
            .map(|id| ("bos_token_id", *id))
            .chain(self.eos_token_ids.iter().map(|id| ("eos_token_id", *id)))
        {
            if id as usize >= self.vocab_size {
                return Err(fault(
                    name,
                    format!(
                        "{id} is outside the vocabulary of {} tokens",
                        self.vocab_size
                    ),
                ));
            }
        }
        if self.sliding_windows.len() != self.num_layers {
            return Err(fault(
                "layer_types",
                format!(
                    "{} entries for {} layers",
                    self.sliding_windows.len(),
                    self.num_layers
                ),
            ));
        }
        Ok(())
    }

    /// Number of scalars in the weights this configuration implies: the
    /// exact parameter count of the model.
    pub fn parameter_count(&self) -> usize {
        let d = self.hidden_size;
        let q = self.num_heads * self.head_dim;
        let kv = self.num_kv_heads * self.head_dim;
        let ff = self.intermediate_size;
        let bias = |present: bool, width: usize| if present { width } else { 0 };
        let attention = d * q
            + 2 * d * kv
            + q * d
            + bias(self.qkv_bias, q + 2 * kv)
            + bias(self.output_bias, d);
        let (feed_forward, norms) = match self.family {
            Family::Gpt2 => (2 * d * ff + bias(self.mlp_bias, ff + d), 4 * d),
            _ => (3 * d * ff + bias(self.mlp_bias, 2 * ff + d), 2 * d),
        };
        let layers = self.num_layers * (attention + feed_forward + norms);
        let embeddings = self.vocab_size * d
            + match self.family {
                Family::Gpt2 => self.max_positions * d,
                _ => 0,
            };
        let final_norm = match self.family {
            Family::Gpt2 => 2 * d,
            _ => d,
        };
        let head = if self.tie_embeddings {
            0
        } else {
            self.vocab_size * d
        };
        embeddings + layers + final_norm + head
    }
}

impl DecoderConfig {
    /// The configuration a GGUF file's metadata states (architectures
    /// `llama`, which llama.cpp also uses for Mistral, and `qwen2`).
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self> {
        let architecture = gguf.string("general.architecture")?;
        let family = match architecture.as_str() {
            "llama" => Family::Llama,
            "qwen2" => Family::Qwen2,
            other => {
                return Err(gguf.key_fault(
                    "general.architecture",
                    format!(
                        "architecture \"{other}\" is not supported; attnflow reads GGUF files of the llama and qwen2 architectures"
                    ),
                ))
            }
        };
        let key = |name: &str| format!("{architecture}.{name}");
        let hidden_size = gguf.positive(&key("embedding_length"))?;
        let num_heads = gguf.positive(&key("attention.head_count"))?;
        let num_kv_heads = match gguf.optional_u64(&key("attention.head_count_kv"))? {
            None => num_heads,
            Some(_) => gguf.positive(&key("attention.head_count_kv"))?,
        };
        let head_dim = match gguf.optional_u64(&key("attention.key_length"))? {
            Some(_) => gguf.positive(&key("attention.key_length"))?,
            None => {
                if hidden_size % num_heads != 0 {
                    return Err(gguf.key_fault(
                        &key("attention.head_count"),
                        format!("{num_heads} heads do not divide the width {hidden_size}"),
                    ));
                }
                hidden_size / num_heads
            }
        };
        if let Some(rotary) = gguf.optional_u64(&key("rope.dimension_count"))? {
            if rotary as usize != head_dim {
                return Err(gguf.key_fault(
                    &key("rope.dimension_count"),
                    format!("rotating {rotary} of {head_dim} head dims is not supported"),
                ));
            }
        }
        let num_layers = gguf.positive(&key("block_count"))?;
        let max_positions = gguf.positive(&key("context_length"))?;
        let scaling = match gguf.optional_string(&key("rope.scaling.type"))?.as_deref() {
            None | Some("none") => RopeScaling::None,
            Some("linear") => {
                let factor = gguf
                    .optional_f64(&key("rope.scaling.factor"))?
                    .ok_or_else(|| {
                        gguf.key_fault(&key("rope.scaling.factor"), "required, but absent")
                    })?;
                if !(factor > 0.0 && factor.is_finite()) {
                    return Err(gguf.key_fault(
                        &key("rope.scaling.factor"),
                        format!("must be a positive number, got {factor}"),
                    ));
                }
                RopeScaling::Linear { factor }
            }
            Some(other) => {
                return Err(gguf.key_fault(
                    &key("rope.scaling.type"),
                    format!("rope scaling \"{other}\" is not supported; expected none or linear"),
                ))
            }
        };
        let tokens = gguf
            .strings("tokenizer.ggml.tokens")?
            .ok_or_else(|| gguf.key_fault("tokenizer.ggml.tokens", "required, but absent"))?;
        let vocab_size = match gguf.optional_u64(&key("vocab_size"))? {
            Some(_) => gguf.positive(&key("vocab_size"))?,
            None => tokens.len(),
        };
        let token = |name: &str| -> Result<Option<u32>> {
            match gguf.optional_u64(name)? {
                None => Ok(None),
                Some(id) => u32::try_from(id)
                    .map(Some)
                    .map_err(|_| gguf.key_fault(name, format!("{id} is too large for a token id"))),
            }
        };
        let config = Self {
            path: gguf.path().to_path_buf(),
            source: ConfigSource::Gguf,
            family,
            architectures: vec![architecture.clone()],
            vocab_size,
            hidden_size,
            num_layers,
            num_heads,
            num_kv_heads,
            head_dim,
            intermediate_size: gguf.positive(&key("feed_forward_length"))?,
            max_positions,
            norm_eps: gguf
                .optional_f64(&key("attention.layer_norm_rms_epsilon"))?
                .unwrap_or(1e-5),
            rope: Some(RopeConfig {
                theta: gguf
                    .optional_f64(&key("rope.freq_base"))?
                    .unwrap_or(10_000.0),
                scaling,
            }),
            tie_embeddings: !gguf.has_tensor("output.weight"),
            qkv_bias: gguf.has_tensor("blk.0.attn_q.bias"),
            output_bias: gguf.has_tensor("blk.0.attn_output.bias"),
            mlp_bias: false,
            sliding_windows: vec![None; num_layers],
            activation: Activation::GatedSilu,
            bos_token_id: token("tokenizer.ggml.bos_token_id")?,
            eos_token_ids: token("tokenizer.ggml.eos_token_id")?.into_iter().collect(),
        };
        let gguf_key = |field: &str| -> String {
            match field {
                "num_key_value_heads" => key("attention.head_count_kv"),
                "head_dim" => key("rope.dimension_count"),
                "rms_norm_eps" => key("attention.layer_norm_rms_epsilon"),
                "rope_theta" => key("rope.freq_base"),
                "bos_token_id" => "tokenizer.ggml.bos_token_id".to_string(),
                "eos_token_id" => "tokenizer.ggml.eos_token_id".to_string(),
                other => other.to_string(),
            }
        };
        config.check(|field, message| gguf.key_fault(&gguf_key(field), message))?;
        Ok(config)
    }
}

/// `llama`, `mistral` and `qwen2` configs.
fn llama_config(
    fields: &Fields<'_>,
    family: Family,
    architectures: Vec<String>,
) -> Result<DecoderConfig> {
    match fields.optional_str("hidden_act")?.as_deref() {
        Some("silu") | None => {}
        Some(other) => {
            return Err(fields.fault(
                "hidden_act",
                format!("activation \"{other}\" is not supported; expected \"silu\""),
            ))
        }
    }
    if let Some(tp) = fields.optional_u64("pretraining_tp")? {
        if tp > 1 {
            return Err(fields.fault(
                "pretraining_tp",
                format!("{tp} (sliced projections) is not supported; expected 1"),
            ));
        }
    }
    let hidden_size = fields.positive("hidden_size")?;
    let num_heads = fields.positive("num_attention_heads")?;
    let num_kv_heads = fields
        .optional_positive("num_key_value_heads")?
        .unwrap_or(num_heads);
    let head_dim = match fields.optional_positive("head_dim")? {
        Some(width) => width,
        None => {
            if hidden_size % num_heads != 0 {
                return Err(fields.fault(
                    "num_attention_heads",
                    format!("{num_heads} heads do not divide hidden_size {hidden_size}"),
                ));
            }
            hidden_size / num_heads
        }
    };
    let num_layers = fields.positive("num_hidden_layers")?;
    let max_positions = fields.positive("max_position_embeddings")?;
    let attention_bias = fields.optional_bool("attention_bias")?.unwrap_or(false);
    let (qkv_bias, output_bias) = match family {
        // Qwen2 always biases q, k and v, never the output map.
        Family::Qwen2 => (true, false),
        _ => (attention_bias, attention_bias),
    };
    let sliding_windows = sliding_windows(fields, family, num_layers)?;
    Ok(DecoderConfig {
        path: fields.path.to_path_buf(),
        source: ConfigSource::ConfigJson,
        family,
        architectures,
        vocab_size: fields.positive("vocab_size")?,
        hidden_size,
        num_layers,
        num_heads,
        num_kv_heads,
        head_dim,
        intermediate_size: fields.positive("intermediate_size")?,
        max_positions,
        norm_eps: fields.optional_f64("rms_norm_eps")?.unwrap_or(1e-6),
        rope: Some(rope_config(fields, max_positions)?),
        tie_embeddings: fields
            .optional_bool("tie_word_embeddings")?
            .unwrap_or(false),
        qkv_bias,
        output_bias,
        mlp_bias: fields.optional_bool("mlp_bias")?.unwrap_or(false),
        sliding_windows,
        activation: Activation::GatedSilu,
        bos_token_id: fields.optional_u32("bos_token_id")?,
        eos_token_ids: token_ids(fields, "eos_token_id")?,
    })
}

/// Per-layer windows: Mistral's `sliding_window` applies to every layer;
/// Qwen2 windows only the layers `layer_types` marks (when
/// `use_sliding_window`); Llama has none.
fn sliding_windows(
    fields: &Fields<'_>,
    family: Family,
    layers: usize,
) -> Result<Vec<Option<usize>>> {
    let window = fields.optional_positive("sliding_window")?;
    match family {
        Family::Mistral => Ok(vec![window; layers]),
        Family::Qwen2 => {
            let used = fields.optional_bool("use_sliding_window")?.unwrap_or(false);
            let types = match fields.get("layer_types") {
                None => vec!["full_attention".to_string(); layers],
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|item| {
                        item.as_str().map(str::to_string).ok_or_else(|| {
                            fields.fault("layer_types", format!("expected names, found {item}"))
                        })
                    })
                    .collect::<Result<Vec<_>>>()?,
                Some(other) => {
                    return Err(fields.fault("layer_types", format!("expected a list, got {other}")))
                }
            };
            types
                .iter()
                .map(|kind| match kind.as_str() {
                    "full_attention" => Ok(None),
                    "sliding_attention" if used => Ok(window),
                    "sliding_attention" => Ok(None),
                    other => Err(fields.fault(
                        "layer_types",
                        format!("layer type \"{other}\" is not supported"),
                    )),
                })
                .collect()
        }
        _ => Ok(vec![None; layers]),
    }
}

/// `rope_parameters` (transformers 5) or `rope_theta` + `rope_scaling`
/// (earlier files).
fn rope_config(fields: &Fields<'_>, max_positions: usize) -> Result<RopeConfig> {
    let (field, parameters) = match (fields.get("rope_parameters"), fields.get("rope_scaling")) {
        (Some(parameters), _) => ("rope_parameters", Some(parameters)),
        (None, Some(scaling)) => ("rope_scaling", Some(scaling)),
        (None, None) => ("rope_scaling", None),
    };
    let parameters = match parameters {
        None => serde_json::Map::new(),
        Some(Value::Object(map)) => map.clone(),
        Some(other) => return Err(fields.fault(field, format!("expected an object, got {other}"))),
    };
    let number = |key: &str| -> Result<Option<f64>> {
        match parameters.get(key).filter(|value| !value.is_null()) {
            None => Ok(None),
            Some(value) => value.as_f64().map(Some).ok_or_else(|| {
                fields.fault(
                    &format!("{field}.{key}"),
                    format!("expected a number, got {value}"),
                )
            }),
        }
    };
    let required = |key: &str| -> Result<f64> {
        number(key)?.ok_or_else(|| fields.fault(&format!("{field}.{key}"), "required, but absent"))
    };
    let theta = match number("rope_theta")? {
        Some(theta) => theta,
        None => fields.optional_f64("rope_theta")?.unwrap_or(10_000.0),
    };
    if let Some(partial) =
        number("partial_rotary_factor")?.or(fields.optional_f64("partial_rotary_factor")?)
    {
        if partial != 1.0 {
            return Err(fields.fault(
                "partial_rotary_factor",
                format!("{partial} (rotating part of each head) is not supported; expected 1"),
            ));
        }
    }
    let kind = parameters
        .get("rope_type")
        .or_else(|| parameters.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default")
        .to_string();
    let original = |parameters_key: &str| -> Result<f64> {
        Ok(number(parameters_key)?
            .or(fields.optional_f64(parameters_key)?)
            .unwrap_or(max_positions as f64))
    };
    let scaling = match kind.as_str() {
        "default" => RopeScaling::None,
        "linear" => RopeScaling::Linear {
            factor: positive_factor(fields, field, required("factor")?)?,
        },
        "dynamic" => RopeScaling::Dynamic {
            factor: positive_factor(fields, field, required("factor")?)?,
        },
        "llama3" => RopeScaling::Llama3 {
            factor: positive_factor(fields, field, required("factor")?)?,
            low_freq_factor: required("low_freq_factor")?,
            high_freq_factor: required("high_freq_factor")?,
            original_max_position_embeddings: original("original_max_position_embeddings")?,
        },
        "yarn" => {
            let original_max = original("original_max_position_embeddings")?;
            let factor = match number("factor")? {
                Some(factor) => factor,
                None => max_positions as f64 / original_max,
            };
            let factor = positive_factor(fields, field, factor)?;
            let attention_factor = attnflow_kernels::yarn::yarn_attention_factor(
                factor,
                number("attention_factor")?,
                number("mscale")?,
                number("mscale_all_dim")?,
            );
            RopeScaling::Yarn {
                factor,
                original_max_position_embeddings: original_max,
                beta_fast: number("beta_fast")?.filter(|v| *v != 0.0).unwrap_or(32.0),
                beta_slow: number("beta_slow")?.filter(|v| *v != 0.0).unwrap_or(1.0),
                attention_factor,
                truncate: parameters
                    .get("truncate")
                    .and_then(Value::as_bool)
                    .unwrap_or(true),
            }
        }
        other => {
            return Err(fields.fault(
                &format!("{field}.rope_type"),
                format!(
                "\"{other}\" is not supported; expected default, linear, dynamic, llama3 or yarn"
            ),
            ))
        }
    };
    Ok(RopeConfig { theta, scaling })
}

fn positive_factor(fields: &Fields<'_>, field: &str, factor: f64) -> Result<f64> {
    if factor > 0.0 && factor.is_finite() {
        Ok(factor)
    } else {
        Err(fields.fault(
            &format!("{field}.factor"),
            format!("must be a positive number, got {factor}"),
        ))
    }
}

/// A token id field that may hold one id or a list.
fn token_ids(fields: &Fields<'_>, field: &str) -> Result<Vec<u32>> {
    match fields.get(field) {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_u64()
                    .and_then(|id| u32::try_from(id).ok())
                    .ok_or_else(|| fields.fault(field, format!("expected token ids, found {item}")))
            })
            .collect(),
        Some(_) => Ok(fields.optional_u32(field)?.into_iter().collect()),
    }
}

/// `gpt2` configs (`n_embd`, `n_layer`, `n_head`, `n_positions`).
fn gpt2_config(fields: &Fields<'_>, architectures: Vec<String>) -> Result<DecoderConfig> {
    let hidden_size = fields.positive("n_embd")?;
    let num_heads = fields.positive("n_head")?;
    if hidden_size % num_heads != 0 {
        return Err(fields.fault(
            "n_head",
            format!("{num_heads} heads do not divide n_embd {hidden_size}"),
        ));
    }
    let activation = match fields.optional_str("activation_function")?.as_deref() {
        Some("gelu_new") | Some("gelu_pytorch_tanh") | Some("gelu_fast") | None => {
            Activation::GeluTanh
        }
        Some("gelu") => Activation::GeluErf,
        Some(other) => {
            return Err(fields.fault(
                "activation_function",
                format!("\"{other}\" is not supported; expected gelu_new or gelu"),
            ))
        }
    };
    for (field, unsupported) in [
        (
            "scale_attn_by_inverse_layer_idx",
            "scaling attention by the inverse layer index",
        ),
        ("add_cross_attention", "cross-attention"),
    ] {
        if fields.optional_bool(field)? == Some(true) {
            return Err(fields.fault(field, format!("{unsupported} is not supported")));
        }
    }
    if fields.optional_bool("scale_attn_weights")? == Some(false) {
        return Err(fields.fault(
            "scale_attn_weights",
            "unscaled attention scores are not supported",
        ));
    }
    let num_layers = fields.positive("n_layer")?;
    Ok(DecoderConfig {
        path: fields.path.to_path_buf(),
        source: ConfigSource::ConfigJson,
        family: Family::Gpt2,
        architectures,
        vocab_size: fields.positive("vocab_size")?,
        hidden_size,
        num_layers,
        num_heads,
        num_kv_heads: num_heads,
        head_dim: hidden_size / num_heads,
        intermediate_size: fields
            .optional_positive("n_inner")?
            .unwrap_or(4 * hidden_size),
        max_positions: fields.positive("n_positions")?,
        norm_eps: fields.optional_f64("layer_norm_epsilon")?.unwrap_or(1e-5),
        rope: None,
        tie_embeddings: fields.optional_bool("tie_word_embeddings")?.unwrap_or(true),
        qkv_bias: true,
        output_bias: true,
        mlp_bias: true,
        sliding_windows: vec![None; num_layers],
        activation,
        bos_token_id: fields.optional_u32("bos_token_id")?,
        eos_token_ids: token_ids(fields, "eos_token_id")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn llama() -> Value {
        serde_json::json!({
            "model_type": "llama",
            "architectures": ["LlamaForCausalLM"],
            "hidden_size": 576,
            "intermediate_size": 1536,
            "num_hidden_layers": 30,
            "num_attention_heads": 9,
            "num_key_value_heads": 3,
            "max_position_embeddings": 8192,
            "rms_norm_eps": 1e-5,
            "rope_theta": 100000.0,
            "tie_word_embeddings": true,
            "vocab_size": 49152,
            "bos_token_id": 1,
            "eos_token_id": 2
        })
    }

    fn check(value: Value) -> Result<DecoderConfig> {
        DecoderConfig::from_value(Path::new("m/config.json"), &value)
    }

    fn field_of(error: ModelError) -> String {
        match error {
            ModelError::Config { field, .. } => field,
            other => panic!("expected a config error, got {other}"),
        }
    }

    #[test]
    fn smollm2_sizes_and_parameter_count() {
        let config = check(llama()).unwrap();
        assert_eq!((config.head_dim, config.group_size()), (64, 3));
        assert_eq!(config.kv_head_of(5), 1);
        // SmolLM2-135M's published count.
        assert_eq!(config.parameter_count(), 134_515_008);
        assert_eq!(config.rope.as_ref().unwrap().theta, 100_000.0);
    }

    #[test]
    fn gpt2_small_parameter_count() {
        let value = serde_json::json!({
            "model_type": "gpt2", "n_embd": 768, "n_head": 12, "n_layer": 12,
            "n_positions": 1024, "vocab_size": 50257
        });
        let config = check(value).unwrap();
        assert_eq!(config.parameter_count(), 124_439_808);
        assert_eq!(config.activation, Activation::GeluTanh);
    }

    #[test]
    fn reads_rope_scaling_both_ways() {
        let mut value = llama();
        value["rope_scaling"] = serde_json::json!({"rope_type": "linear", "factor": 2.0});
        let config = check(value).unwrap();
        assert_eq!(
            config.rope.unwrap().scaling,
            RopeScaling::Linear { factor: 2.0 }
        );
        let mut value = llama();
        value["rope_parameters"] = serde_json::json!({"rope_type": "yarn", "factor": 4.0,
            "rope_theta": 500.0, "original_max_position_embeddings": 32});
        let rope = check(value).unwrap().rope.unwrap();
        assert_eq!(rope.theta, 500.0);
        match rope.scaling {
            RopeScaling::Yarn {
                attention_factor, ..
            } => assert!((attention_factor - (0.1 * 4f64.ln() + 1.0)).abs() < 1e-12),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn names_the_field_at_fault() {
        let cases: [(&str, Value); 6] = [
            ("hidden_act", "gelu".into()),
            ("num_key_value_heads", 4.into()),
            ("hidden_size", Value::Null),
            ("eos_token_id", 60000.into()),
            (
                "rope_scaling.rope_type",
                serde_json::json!({"rope_type": "longrope"}),
            ),
            ("partial_rotary_factor", 0.5.into()),
        ];
        for (field, replacement) in cases {
            let mut value = llama();
            let key = field.split('.').next().unwrap();
            value[key] = replacement;
            assert_eq!(field_of(check(value).unwrap_err()), field, "{field}");
        }
    }

    #[test]
    fn sliding_windows_per_family() {
        let mut value = llama();
        value["model_type"] = "mistral".into();
        value["sliding_window"] = 4096.into();
        assert_eq!(check(value).unwrap().sliding_windows[0], Some(4096));
        let mut value = llama();
        value["model_type"] = "qwen2".into();
        value["num_hidden_layers"] = 2.into();
        value["sliding_window"] = 8.into();
        value["use_sliding_window"] = true.into();
        value["layer_types"] = serde_json::json!(["full_attention", "sliding_attention"]);
        let config = check(value).unwrap();
        assert_eq!(config.sliding_windows, vec![None, Some(8)]);
        assert!(config.qkv_bias && !config.output_bias);
    }
}
