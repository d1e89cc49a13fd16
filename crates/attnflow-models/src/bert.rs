//! The BERT encoder (Devlin et al. 2019) on attnflow-kernels: one packed
//! QKV product per layer, fused attention reading Q, K and V straight out
//! of it with the key-padding mask, the output projection, `LN(x + h)`,
//! the feed-forward product with its exact (erf) GELU in the product's
//! epilogue, and `LN(x + h)` again. Every intermediate lives in a
//! [`Workspace`] the caller keeps, so a run of batches allocates nothing
//! per layer once the largest batch has been seen.
//!
//! Asked for attention weights, a layer materialises them (the same
//! softmax, written out) instead of running the fused kernel. Inference
//! only: nothing records a backward.

use attnflow_kernels::{
    add_in_place, add_layer_norm_in_place, attention_forward, attention_forward_packed,
    attention_weights_forward, concat_rows, embed_into, layer_norm_into, linear_panels_into,
    scratch, threads, Activation, AttentionProblem, HeadsLayout, Panels, Weight,
};
use candle_core::{DType, Device, Tensor};

use crate::config::BertConfig;
use crate::error::{ModelError, Result};
use crate::weights::Weights;

/// The tensor every BERT checkpoint has; its location picks the prefix.
pub(crate) const PROBE_TENSOR: &str = "embeddings.word_embeddings.weight";

/// A tensor's values, shown by size only (a weight has millions).
#[derive(Clone)]
struct Values(Vec<f32>);

impl std::fmt::Debug for Values {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "[{} f32]", self.0.len())
    }
}

fn values_of(tensor: &Tensor) -> Result<Values> {
    Ok(Values(tensor.flatten_all()?.to_vec1::<f32>()?))
}

/// A LayerNorm's learned scale and shift.
#[derive(Clone, Debug)]
struct Norm {
    gain: Values,
    shift: Values,
    eps: f32,
}

impl Norm {
    fn load(weights: &Weights, module: &str, width: usize, eps: f64) -> Result<Self> {
        let (gain, shift) = weights.get_norm(module, &[width])?;
        Ok(Self {
            gain: values_of(&gain)?,
            shift: values_of(&shift)?,
            eps: eps as f32,
        })
    }

    /// `x ← LN(x + residual)`.
    fn add_in_place(&self, x: &mut [f32], residual: &[f32]) {
        add_layer_norm_in_place(x, residual, &self.gain.0, Some(&self.shift.0), self.eps);
    }
}

/// A dense layer `x Wᵀ + b`, `W` `(outputs, inputs)` laid out in panels
/// once at load (so no batch repacks it).
#[derive(Clone, Debug)]
struct Dense {
    weight: Panels,
    bias: Values,
}

impl Dense {
    fn new(weight: &[f32], bias: Values, outputs: usize, inputs: usize) -> Self {
        Self {
            weight: Panels::pack(Weight::new(weight, outputs, inputs)),
            bias,
        }
    }

    /// `{module}.weight` `(output, input)` and `{module}.bias` `(output)`.
    fn values(
        weights: &Weights,
        module: &str,
        input: usize,
        output: usize,
    ) -> Result<(Values, Values)> {
        Ok((
            values_of(&weights.get(&format!("{module}.weight"), &[output, input])?)?,
            values_of(&weights.get(&format!("{module}.bias"), &[output])?)?,
        ))
    }

    fn load(weights: &Weights, module: &str, input: usize, output: usize) -> Result<Self> {
        let (weight, bias) = Self::values(weights, module, input, output)?;
        Ok(Self::new(&weight.0, bias, output, input))
    }

    /// Several `(input, output)` layers over the same input as one, their
    /// outputs side by side (a fused QKV projection).
    fn packed(weights: &Weights, modules: &[String], input: usize, output: usize) -> Result<Self> {
        let parts = modules
            .iter()
            .map(|module| Self::values(weights, module, input, output))
            .collect::<Result<Vec<_>>>()?;
        let weight: Vec<&[f32]> = parts.iter().map(|(w, _)| w.0.as_slice()).collect();
        let bias: Vec<&[f32]> = parts.iter().map(|(_, b)| b.0.as_slice()).collect();
        let bias = Values(concat_rows(&bias));
        Ok(Self::new(
            &concat_rows(&weight),
            bias,
            output * modules.len(),
            input,
        ))
    }

    /// `out = f(x Wᵀ + b)` for `x` `(tokens, inputs)`.
    fn forward_into(&self, out: &mut [f32], x: &[f32], activation: Activation) {
        linear_panels_into(out, x, &self.weight, Some(&self.bias.0), activation);
    }
}

/// Word, position and segment embeddings, summed and normalised.
#[derive(Clone, Debug)]
struct Embeddings {
    word: Values,
    position: Values,
    token_type: Values,
    norm: Norm,
    width: usize,
}

impl Embeddings {
    fn load(weights: &Weights, config: &BertConfig) -> Result<Self> {
        let d = config.hidden_size;
        Ok(Self {
            word: values_of(&weights.get(PROBE_TENSOR, &[config.vocab_size, d])?)?,
            position: values_of(&weights.get(
                "embeddings.position_embeddings.weight",
                &[config.max_position_embeddings, d],
            )?)?,
            token_type: values_of(&weights.get(
                "embeddings.token_type_embeddings.weight",
                &[config.type_vocab_size, d],
            )?)?,
            norm: Norm::load(weights, "embeddings.LayerNorm", d, config.layer_norm_eps)?,
            width: d,
        })
    }

    /// `out = LN(E_word[id] + E_type[t] + E_pos[i])` for the ids of the
    /// sequences `rows` lays out (position `i` counted from each one's
    /// start), summed in transformers' order; `spare` is scratch of the
    /// same size.
    fn forward_into(
        &self,
        out: &mut [f32],
        spare: &mut [f32],
        ids: &[u32],
        type_ids: &[u32],
        rows: &Rows<'_>,
    ) -> Result<()> {
        let d = self.width;
        embed_into(spare, &self.word.0, d, ids)?;
        embed_into(out, &self.token_type.0, d, type_ids)?;
        add_in_place(spare, out);
        let mut rest = &mut spare[..];
        for length in rows.lengths() {
            let (sequence, after) = rest.split_at_mut(length * d);
            add_in_place(sequence, &self.position.0[..length * d]);
            rest = after;
        }
        layer_norm_into(
            out,
            spare,
            &self.norm.gain.0,
            Some(&self.norm.shift.0),
            self.norm.eps,
        );
        Ok(())
    }
}

/// One encoder layer: self-attention and a GELU feed-forward network, each
/// followed by a residual sum and a LayerNorm (post-norm, as BERT).
#[derive(Clone, Debug)]
struct Layer {
    /// `[W_q; W_k; W_v]`: one product makes the three projections.
    qkv: Dense,
    attention_output: Dense,
    attention_norm: Norm,
    intermediate: Dense,
    output: Dense,
    output_norm: Norm,
}

impl Layer {
    fn load(weights: &Weights, config: &BertConfig, index: usize) -> Result<Self> {
        let d = config.hidden_size;
        let ff = config.intermediate_size;
        let eps = config.layer_norm_eps;
        let name = |local: &str| format!("encoder.layer.{index}.{local}");
        let projections =
            ["query", "key", "value"].map(|part| name(&format!("attention.self.{part}")));
        Ok(Self {
            qkv: Dense::packed(weights, &projections, d, d)?,
            attention_output: Dense::load(weights, &name("attention.output.dense"), d, d)?,
            attention_norm: Norm::load(weights, &name("attention.output.LayerNorm"), d, eps)?,
            intermediate: Dense::load(weights, &name("intermediate.dense"), d, ff)?,
            output: Dense::load(weights, &name("output.dense"), ff, d)?,
            output_norm: Norm::load(weights, &name("output.LayerNorm"), d, eps)?,
        })
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

/// The buffers of a forward pass, kept between batches: each grows to the
/// largest batch seen and is never shrunk, so a steady stream of batches
/// allocates nothing per layer.
#[derive(Default)]
pub struct Workspace {
    hidden: Vec<f32>,
    spare: Vec<f32>,
    qkv: Vec<f32>,
    context: Vec<f32>,
    intermediate: Vec<f32>,
    weights: Vec<f32>,
}

impl Workspace {
    /// Bytes the buffers hold: constant once the largest batch has been
    /// seen.
    pub fn reserved_bytes(&self) -> usize {
        [
            &self.hidden,
            &self.spare,
            &self.qkv,
            &self.context,
            &self.intermediate,
            &self.weights,
        ]
        .iter()
        .map(|buffer| buffer.capacity() * std::mem::size_of::<f32>())
        .sum()
    }
}

/// A padded batch of token ids, row-major `(batch, n)`.
#[derive(Clone, Copy, Debug)]
pub struct TokenBatch<'a> {
    /// Token ids.
    pub ids: &'a [u32],
    /// Segment ids.
    pub type_ids: &'a [u32],
    /// 0 for a real key, `-inf` for padding (for right-padded rows,
    /// `attnflow_kernels::key_bias_from_lengths` makes it).
    pub key_bias: &'a [f32],
    /// Rows.
    pub batch: usize,
    /// Positions per row.
    pub n: usize,
}

/// Sequences of different lengths back to back, with no padding: `ids`
/// and `type_ids` hold `lengths[0]` tokens of the first sequence, then the
/// second's, and so on.
#[derive(Clone, Copy, Debug)]
pub struct PackedTokens<'a> {
    /// Token ids.
    pub ids: &'a [u32],
    /// Segment ids.
    pub type_ids: &'a [u32],
    /// Tokens per sequence.
    pub lengths: &'a [usize],
}

/// How a pass's sequences lie in its token rows.
enum Rows<'a> {
    /// `batch` sequences of `n` rows each, padding masked by a key bias.
    Padded {
        batch: usize,
        n: usize,
        key_bias: &'a [f32],
    },
    /// Sequences back to back: every row is a real token.
    Packed { lengths: &'a [usize] },
}

impl Rows<'_> {
    fn count(&self) -> usize {
        match *self {
            Rows::Padded { batch, n, .. } => batch * n,
            Rows::Packed { lengths } => lengths.iter().sum(),
        }
    }

    /// Rows per sequence, in order.
    fn lengths(&self) -> impl Iterator<Item = usize> + '_ {
        let (padded, packed): (_, &[usize]) = match *self {
            Rows::Padded { batch, n, .. } => (Some(std::iter::repeat_n(n, batch)), &[]),
            Rows::Packed { lengths } => (None, lengths),
        };
        padded.into_iter().flatten().chain(packed.iter().copied())
    }
}

/// What a forward pass reports as it goes, when asked.
pub enum Observed<'a> {
    /// A hidden state `(batch, n, d)`: the embeddings', then each layer's.
    Hidden(&'a [f32]),
    /// A layer's attention weights `(batch, heads, n, n)`.
    Attention(&'a [f32]),
}

/// A BERT encoder with its weights.
#[derive(Clone, Debug)]
pub struct BertModel {
    config: BertConfig,
    embeddings: Embeddings,
    layers: Vec<Layer>,
    pooler: Option<Dense>,
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
            Some(weight) => Some(Dense::new(
                &values_of(&weight)?.0,
                values_of(&weights.get("pooler.dense.bias", &[d])?)?,
                d,
                d,
            )),
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

    /// The device the outputs are put on.
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
        let flat = |tensor: &Tensor| -> Result<Vec<u32>> {
            Ok(tensor
                .to_dtype(DType::U32)?
                .flatten_all()?
                .to_vec1::<u32>()?)
        };
        let ids = flat(input_ids)?;
        let type_ids = flat(token_type_ids)?;
        let key_bias: Vec<f32> = attention_mask
            .ne(0f64)?
            .to_dtype(DType::U8)?
            .flatten_all()?
            .to_vec1::<u8>()?
            .into_iter()
            .map(|real| if real != 0 { 0.0 } else { f32::NEG_INFINITY })
            .collect();
        let tokens = TokenBatch {
            ids: &ids,
            type_ids: &type_ids,
            key_bias: &key_bias,
            batch,
            n,
        };
        let d = self.config.hidden_size;
        let heads = self.config.num_attention_heads;
        let to_tensor = |values: &[f32], shape: &[usize]| -> Result<Tensor> {
            Ok(Tensor::from_slice(values, shape, &Device::Cpu)?.to_device(&self.device)?)
        };
        let mut hidden_states = Vec::new();
        let mut attentions = Vec::new();
        let mut failure = None;
        let mut workspace = Workspace::default();
        let last = self.encode(&tokens, &mut workspace, options, &mut |observed| {
            let kept = match observed {
                Observed::Hidden(values) => {
                    to_tensor(values, &[batch, n, d]).map(|t| hidden_states.push(t))
                }
                Observed::Attention(values) => {
                    to_tensor(values, &[batch, heads, n, n]).map(|t| attentions.push(t))
                }
            };
            if let Err(error) = kept {
                failure.get_or_insert(error);
            }
        })?;
        if let Some(error) = failure {
            return Err(error);
        }
        let last_hidden_state = to_tensor(last, &[batch, n, d])?;
        let pooled = match &self.pooler {
            Some(pooler) => {
                let mut first = vec![0f32; batch * d];
                for (row, sequence) in first.chunks_exact_mut(d).zip(last.chunks_exact(n * d)) {
                    row.copy_from_slice(&sequence[..d]);
                }
                let mut pooled = vec![0f32; batch * d];
                pooler.forward_into(&mut pooled, &first, Activation::Identity);
                for value in &mut pooled {
                    *value = value.tanh();
                }
                Some(to_tensor(&pooled, &[batch, d])?)
            }
            None => None,
        };
        Ok(BertOutput {
            last_hidden_state,
            hidden_states,
            attentions,
            pooled,
        })
    }

    /// Runs the encoder on a padded batch in `workspace` and returns the
    /// last hidden state `(batch, n, d)`, a view into the workspace.
    /// `observe` sees the hidden states and attention weights `options`
    /// asks for, as they are made.
    pub fn encode<'w>(
        &self,
        tokens: &TokenBatch<'_>,
        workspace: &'w mut Workspace,
        options: ForwardOptions,
        observe: &mut (dyn FnMut(Observed<'_>) + Send),
    ) -> Result<&'w [f32]> {
        self.check(tokens)?;
        let rows = Rows::Padded {
            batch: tokens.batch,
            n: tokens.n,
            key_bias: tokens.key_bias,
        };
        self.encode_rows(
            tokens.ids,
            tokens.type_ids,
            &rows,
            workspace,
            options,
            observe,
        )
    }

    /// Runs the encoder on sequences packed back to back in `workspace`
    /// and returns their last hidden states `(Σ lengths, d)`, in the same
    /// order: each sequence's as [`Self::encode`] gives it on its own, with
    /// no padding rows to compute (a padded batch of mixed lengths spends
    /// the products of every layer on its padding too).
    pub fn encode_packed<'w>(
        &self,
        tokens: &PackedTokens<'_>,
        workspace: &'w mut Workspace,
    ) -> Result<&'w [f32]> {
        let rows = Rows::Packed {
            lengths: tokens.lengths,
        };
        let count = rows.count();
        if count == 0 {
            return Err(ModelError::input("input_ids", "is empty"));
        }
        if let Some(&longest) = tokens.lengths.iter().max() {
            self.check_length(longest)?;
        }
        self.check_ids(tokens.ids, tokens.type_ids, count, || {
            format!("{:?} sequence lengths", tokens.lengths)
        })?;
        self.encode_rows(
            tokens.ids,
            tokens.type_ids,
            &rows,
            workspace,
            ForwardOptions::default(),
            &mut |_| {},
        )
    }

    /// The layers over `rows` on attnflow's pool; the last hidden state,
    /// a view into `workspace`.
    fn encode_rows<'w>(
        &self,
        ids: &[u32],
        type_ids: &[u32],
        rows: &Rows<'_>,
        workspace: &'w mut Workspace,
        options: ForwardOptions,
        observe: &mut (dyn FnMut(Observed<'_>) + Send),
    ) -> Result<&'w [f32]> {
        threads::install(|| self.encode_on_pool(ids, type_ids, rows, workspace, options, observe))?;
        Ok(&workspace.hidden[..rows.count() * self.config.hidden_size])
    }

    fn check(&self, tokens: &TokenBatch<'_>) -> Result<()> {
        let TokenBatch { batch, n, .. } = *tokens;
        if n == 0 || batch == 0 {
            return Err(ModelError::input("input_ids", "is empty"));
        }
        self.check_length(n)?;
        if tokens.key_bias.len() != batch * n {
            return Err(ModelError::input(
                "attention_mask",
                format!("{} entries for ({batch}, {n})", tokens.key_bias.len()),
            ));
        }
        self.check_ids(tokens.ids, tokens.type_ids, batch * n, || {
            format!("({batch}, {n})")
        })
    }

    /// Refuses a sequence longer than the position embeddings.
    fn check_length(&self, n: usize) -> Result<()> {
        if n > self.config.max_position_embeddings {
            return Err(ModelError::input(
                "input_ids",
                format!(
                    "{n} positions, but the model has {} position embeddings",
                    self.config.max_position_embeddings
                ),
            ));
        }
        Ok(())
    }

    /// Refuses ids and segment ids that are not `count` each, or that lie
    /// outside the vocabularies; `shape` names the expected shape.
    fn check_ids(
        &self,
        ids: &[u32],
        type_ids: &[u32],
        count: usize,
        shape: impl Fn() -> String,
    ) -> Result<()> {
        if ids.len() != count || type_ids.len() != count {
            return Err(ModelError::input(
                "input_ids",
                format!(
                    "{} ids and {} segment ids for {}",
                    ids.len(),
                    type_ids.len(),
                    shape()
                ),
            ));
        }
        check_below(ids, self.config.vocab_size, "input_ids", "vocab_size")?;
        check_below(
            type_ids,
            self.config.type_vocab_size,
            "token_type_ids",
            "type_vocab_size",
        )
    }

    /// The layers over `rows`; captures (`options`) need padded rows, the
    /// layout they are reported in.
    fn encode_on_pool(
        &self,
        ids: &[u32],
        type_ids: &[u32],
        layout: &Rows<'_>,
        workspace: &mut Workspace,
        options: ForwardOptions,
        observe: &mut (dyn FnMut(Observed<'_>) + Send),
    ) -> Result<()> {
        let d = self.config.hidden_size;
        let heads = self.config.num_attention_heads;
        let head_dim = d / heads;
        let rows = layout.count();
        let Workspace {
            hidden,
            spare,
            qkv,
            context,
            intermediate,
            weights,
        } = workspace;
        let mut hidden = scratch(hidden, rows * d);
        let mut spare = scratch(spare, rows * d);
        self.embeddings
            .forward_into(hidden, spare, ids, type_ids, layout)?;
        if options.hidden_states {
            observe(Observed::Hidden(hidden));
        }
        let qkv = scratch(qkv, rows * 3 * d);
        let context = scratch(context, rows * d);
        let intermediate = scratch(intermediate, rows * self.config.intermediate_size);
        let (batch, n) = match *layout {
            Rows::Padded { batch, n, .. } => (batch, n),
            Rows::Packed { .. } => (1, rows),
        };
        let mut problem = AttentionProblem::new(batch, heads, n, head_dim);
        if let Rows::Padded { key_bias, .. } = *layout {
            problem.key_bias = Some(key_bias);
        }
        let q = HeadsLayout::token_rows(n, 3 * d, head_dim, 0);
        let k = HeadsLayout::token_rows(n, 3 * d, head_dim, d);
        let v = HeadsLayout::token_rows(n, 3 * d, head_dim, 2 * d);
        let out = HeadsLayout::token_rows(n, d, head_dim, 0);
        for layer in &self.layers {
            layer.qkv.forward_into(qkv, hidden, Activation::Identity);
            if let Rows::Packed { lengths } = *layout {
                // §3.2 per sequence, every row a real token.
                attention_forward_packed(
                    &problem,
                    lengths,
                    (qkv, q),
                    (qkv, k),
                    (qkv, v),
                    (context, out),
                );
            } else if options.attentions {
                // §3.2 with the weights written out, for inspection.
                let weights = scratch(weights, batch * heads * n * n);
                attention_weights_forward(
                    &problem,
                    (qkv, q),
                    (qkv, k),
                    (qkv, v),
                    (context, out),
                    weights,
                );
                observe(Observed::Attention(weights));
            } else {
                // §3.2: softmax(QKᵀ/√d_k) V per head, padding keys masked,
                // never forming the weights.
                attention_forward(&problem, (qkv, q), (qkv, k), (qkv, v), (context, out), None);
            }
            layer
                .attention_output
                .forward_into(spare, context, Activation::Identity);
            layer.attention_norm.add_in_place(spare, hidden);
            std::mem::swap(&mut hidden, &mut spare);
            // HF's "gelu" is the exact form x/2 · (1 + erf(x/√2)), not the
            // tanh approximation; it runs in the product's epilogue.
            layer
                .intermediate
                .forward_into(intermediate, hidden, Activation::GeluErf);
            layer
                .output
                .forward_into(spare, intermediate, Activation::Identity);
            layer.output_norm.add_in_place(spare, hidden);
            std::mem::swap(&mut hidden, &mut spare);
            if options.hidden_states {
                observe(Observed::Hidden(hidden));
            }
        }
        // Two swaps a layer: the last state is back in `workspace.hidden`,
        // where `encode` returns it from.
        Ok(())
    }
}

/// Refuses ids at or above `limit` (an embedding lookup would fail on them
/// with no hint of which input was at fault).
fn check_below(ids: &[u32], limit: usize, input: &str, field: &str) -> Result<()> {
    match ids.iter().max() {
        Some(&largest) if largest as usize >= limit => Err(ModelError::input(
            input,
            format!("holds id {largest}, but config.json's {field} is {limit}"),
        )),
        _ => Ok(()),
    }
}
