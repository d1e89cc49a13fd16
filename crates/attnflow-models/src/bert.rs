//! The BERT encoder (Devlin et al. 2019) on candle tensors, built on
//! attnflow-core's exact attention so that every layer hands back its
//! attention weights per head.
//!
//! Inference only: the LayerNorms use candle-nn's fused kernel, which
//! records no backward (ARCHITECTURE.md, "Known traps in candle"). A path that
//! trains through this encoder must swap in a differentiable norm first.

use attnflow_core::{scaled_dot_product_attention, AttentionMask, SdpaOptions};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::Linear;

use crate::config::BertConfig;
use crate::error::{ModelError, Result};
use crate::weights::Weights;

/// The tensor every BERT checkpoint has; its location picks the prefix.
pub(crate) const PROBE_TENSOR: &str = "embeddings.word_embeddings.weight";

/// A LayerNorm over the last axis with learned scale and shift.
#[derive(Clone, Debug)]
struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
}

impl LayerNorm {
    fn load(weights: &Weights, module: &str, width: usize, eps: f64) -> Result<Self> {
        let (weight, bias) = weights.get_norm(module, &[width])?;
        Ok(Self {
            weight,
            bias,
            eps: eps as f32,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // Fused kernel, no backward: this encoder is for inference only.
        Ok(candle_nn::ops::layer_norm(
            &x.contiguous()?,
            &self.weight,
            &self.bias,
            self.eps,
        )?)
    }
}

/// A dense layer `x Wᵀ + b` read from `{module}.weight` `(out, in)` and
/// `{module}.bias` `(out)`.
fn load_linear(weights: &Weights, module: &str, input: usize, output: usize) -> Result<Linear> {
    let weight = weights.get(&format!("{module}.weight"), &[output, input])?;
    let bias = weights.get(&format!("{module}.bias"), &[output])?;
    Ok(Linear::new(weight, Some(bias)))
}

/// Word, position and segment embeddings, summed and normalised.
#[derive(Clone, Debug)]
struct Embeddings {
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    norm: LayerNorm,
}

impl Embeddings {
    fn load(weights: &Weights, config: &BertConfig) -> Result<Self> {
        let d = config.hidden_size;
        Ok(Self {
            word: weights.get(PROBE_TENSOR, &[config.vocab_size, d])?,
            position: weights.get(
                "embeddings.position_embeddings.weight",
                &[config.max_position_embeddings, d],
            )?,
            token_type: weights.get(
                "embeddings.token_type_embeddings.weight",
                &[config.type_vocab_size, d],
            )?,
            norm: LayerNorm::load(weights, "embeddings.LayerNorm", d, config.layer_norm_eps)?,
        })
    }

    /// `(batch, n)` ids -> `(batch, n, d)`: `LN(E_word[id] + E_pos[i] + E_type[t])`.
    fn forward(&self, input_ids: &Tensor, token_type_ids: &Tensor) -> Result<Tensor> {
        let (batch, n) = input_ids.dims2()?;
        let d = self.word.dim(1)?;
        let lookup = |table: &Tensor, ids: &Tensor| -> Result<Tensor> {
            Ok(table
                .index_select(&ids.flatten_all()?, 0)?
                .reshape((batch, n, d))?)
        };
        let words = lookup(&self.word, input_ids)?;
        let types = lookup(&self.token_type, token_type_ids)?;
        let positions = self.position.narrow(0, 0, n)?.unsqueeze(0)?;
        let sum = (words + types)?.broadcast_add(&positions)?;
        self.norm.forward(&sum)
    }
}

/// One encoder layer: self-attention and a GELU feed-forward network, each
/// followed by a residual sum and a LayerNorm (post-norm, as BERT).
#[derive(Clone, Debug)]
struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attention_output: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
    heads: usize,
}

impl Layer {
    fn load(weights: &Weights, config: &BertConfig, index: usize) -> Result<Self> {
        let d = config.hidden_size;
        let ff = config.intermediate_size;
        let eps = config.layer_norm_eps;
        let name = |local: &str| format!("encoder.layer.{index}.{local}");
        Ok(Self {
            query: load_linear(weights, &name("attention.self.query"), d, d)?,
            key: load_linear(weights, &name("attention.self.key"), d, d)?,
            value: load_linear(weights, &name("attention.self.value"), d, d)?,
            attention_output: load_linear(weights, &name("attention.output.dense"), d, d)?,
            attention_norm: LayerNorm::load(weights, &name("attention.output.LayerNorm"), d, eps)?,
            intermediate: load_linear(weights, &name("intermediate.dense"), d, ff)?,
            output: load_linear(weights, &name("output.dense"), ff, d)?,
            output_norm: LayerNorm::load(weights, &name("output.LayerNorm"), d, eps)?,
            heads: config.num_attention_heads,
        })
    }

    /// `(batch, n, d)` -> `((batch, n, d), weights (batch, heads, n, n))`.
    fn forward(&self, x: &Tensor, mask: &AttentionMask) -> Result<(Tensor, Tensor)> {
        let (batch, n, d) = x.dims3()?;
        let head_dim = d / self.heads;
        let split = |t: Tensor| -> Result<Tensor> {
            Ok(t.reshape((batch, n, self.heads, head_dim))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let q = split(self.query.forward(x)?)?;
        let k = split(self.key.forward(x)?)?;
        let v = split(self.value.forward(x)?)?;
        // §3.2: softmax(QKᵀ/√d_k) V per head, padding keys masked out.
        let attended = scaled_dot_product_attention(&q, &k, &v, mask, &SdpaOptions::default())?;
        let merged = attended
            .output
            .transpose(1, 2)?
            .contiguous()?
            .reshape((batch, n, d))?;
        let attention = self
            .attention_norm
            .forward(&(self.attention_output.forward(&merged)? + x)?)?;
        // HF's "gelu" is the exact form x/2 · (1 + erf(x/√2)), not the tanh
        // approximation.
        let hidden = self.intermediate.forward(&attention)?.gelu_erf()?;
        let output = self
            .output_norm
            .forward(&(self.output.forward(&hidden)? + &attention)?)?;
        Ok((output, attended.weights))
    }
}

/// What to keep from a forward pass. Keeping every layer's attention costs
/// `layers · batch · heads · n² · 4` bytes, so embedding runs leave it off.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ForwardOptions {
    /// Keep the hidden states of every layer (the embeddings' output first).
    pub hidden_states: bool,
    /// Keep the attention weights of every layer and head.
    pub attentions: bool,
}

impl ForwardOptions {
    /// Keep everything, for inspection.
    pub fn everything() -> Self {
        Self {
            hidden_states: true,
            attentions: true,
        }
    }
}

/// The result of a forward pass.
#[derive(Clone, Debug)]
pub struct BertOutput {
    /// The last layer's hidden states, `(batch, n, d)`.
    pub last_hidden_state: Tensor,
    /// `layers + 1` tensors `(batch, n, d)`: the embeddings' output, then
    /// every layer's (as transformers' `output_hidden_states=True`); empty
    /// unless asked for.
    pub hidden_states: Vec<Tensor>,
    /// `layers` tensors `(batch, heads, n, n)`, each row a distribution over
    /// the keys with padding keys at zero (as transformers'
    /// `output_attentions=True`); empty unless asked for.
    pub attentions: Vec<Tensor>,
    /// `tanh(W h_[CLS] + b)`, `(batch, d)`, when the checkpoint has a pooler.
    pub pooled: Option<Tensor>,
}

/// A BERT encoder with its weights.
#[derive(Clone, Debug)]
pub struct BertModel {
    config: BertConfig,
    embeddings: Embeddings,
    layers: Vec<Layer>,
    pooler: Option<Linear>,
    parameter_count: usize,
    device: Device,
}

impl BertModel {
    /// Builds the encoder from checkpoint tensors, checking every shape
    /// against `config`. The pooler is optional (some exports drop it).
    pub fn load(config: &BertConfig, weights: &Weights, device: &Device) -> Result<Self> {
        let embeddings = Embeddings::load(weights, config)?;
        let layers = (0..config.num_hidden_layers)
            .map(|index| Layer::load(weights, config, index))
            .collect::<Result<Vec<_>>>()?;
        let d = config.hidden_size;
        let pooler = match weights.find("pooler.dense.weight", &[d, d])? {
            Some(weight) => {
                let bias = weights.get("pooler.dense.bias", &[d])?;
                Some(Linear::new(weight, Some(bias)))
            }
            None => None,
        };
        Ok(Self {
            config: config.clone(),
            embeddings,
            layers,
            pooler,
            parameter_count: weights.used_parameter_count(),
            device: device.clone(),
        })
    }

    /// The configuration the model was built from.
    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Number of scalars in the weights the model uses (pooler included
    /// when present).
    pub fn parameter_count(&self) -> usize {
        self.parameter_count
    }

    /// Whether the checkpoint had a pooler.
    pub fn has_pooler(&self) -> bool {
        self.pooler.is_some()
    }

    /// Runs the encoder.
    ///
    /// * `input_ids`: `(batch, n)` u32 token ids, each below `vocab_size`.
    /// * `token_type_ids`: `(batch, n)` u32 segment ids, each below
    ///   `type_vocab_size`.
    /// * `attention_mask`: `(batch, n)`, non-zero for real tokens and zero
    ///   for padding (transformers' convention); padding keys receive zero
    ///   attention.
    ///
    /// `n` may not exceed `max_position_embeddings`.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        token_type_ids: &Tensor,
        attention_mask: &Tensor,
        options: ForwardOptions,
    ) -> Result<BertOutput> {
        let (batch, n) = input_ids.dims2().map_err(|_| {
            ModelError::input(
                "input_ids",
                format!("expected shape (batch, n), got {:?}", input_ids.dims()),
            )
        })?;
        for (name, tensor) in [
            ("token_type_ids", token_type_ids),
            ("attention_mask", attention_mask),
        ] {
            if tensor.dims() != [batch, n] {
                return Err(ModelError::input(
                    name,
                    format!(
                        "has shape {:?} but input_ids has ({batch}, {n})",
                        tensor.dims()
                    ),
                ));
            }
        }
        if n == 0 || batch == 0 {
            return Err(ModelError::input("input_ids", "is empty"));
        }
        if n > self.config.max_position_embeddings {
            return Err(ModelError::input(
                "input_ids",
                format!(
                    "{n} positions, but the model has {} position embeddings",
                    self.config.max_position_embeddings
                ),
            ));
        }
        let input_ids = input_ids.to_dtype(DType::U32)?;
        let token_type_ids = token_type_ids.to_dtype(DType::U32)?;
        check_below(
            &input_ids,
            self.config.vocab_size,
            "input_ids",
            "vocab_size",
        )?;
        check_below(
            &token_type_ids,
            self.config.type_vocab_size,
            "token_type_ids",
            "type_vocab_size",
        )?;
        let padding = attention_mask.eq(0f64)?.to_dtype(DType::U8)?;
        let mask = AttentionMask::none().with_key_padding(padding);

        let mut hidden = self.embeddings.forward(&input_ids, &token_type_ids)?;
        let mut hidden_states = Vec::new();
        let mut attentions = Vec::new();
        for layer in &self.layers {
            if options.hidden_states {
                hidden_states.push(hidden.clone());
            }
            let (next, weights) = layer.forward(&hidden, &mask)?;
            if options.attentions {
                attentions.push(weights);
            }
            hidden = next;
        }
        if options.hidden_states {
            hidden_states.push(hidden.clone());
        }
        let pooled = match &self.pooler {
            Some(pooler) => Some(
                pooler
                    .forward(&hidden.narrow(1, 0, 1)?.squeeze(1)?)?
                    .tanh()?,
            ),
            None => None,
        };
        Ok(BertOutput {
            last_hidden_state: hidden,
            hidden_states,
            attentions,
            pooled,
        })
    }
}

/// Refuses ids at or above `limit` (an embedding lookup would fail on them
/// with no hint of which input was at fault).
fn check_below(ids: &Tensor, limit: usize, input: &str, field: &str) -> Result<()> {
    let largest = ids.flatten_all()?.max(0)?.to_scalar::<u32>()?;
    if largest as usize >= limit {
        return Err(ModelError::input(
            input,
            format!("holds id {largest}, but config.json's {field} is {limit}"),
        ));
    }
    Ok(())
}
