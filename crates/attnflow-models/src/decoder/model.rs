//! The decoder forward pass: token embedding, pre-norm layers of causal
//! grouped-query attention (§2.2, §3.2) and a feed-forward network, a final
//! norm and the output head, with a key/value cache for decoding.
//!
//! The Llama family rotates queries and keys (RoPE), normalises with RMS
//! norm and gates its feed-forward with SiLU; GPT-2 adds learned positions
//! and uses LayerNorm and GELU. Both are one [`DecoderModel`], built by
//! [`crate::decoder::load`].
//!
//! Activations are plain row-major `f32` rows; the weights are
//! [`PackedMatrix`]es; every product, norm, activation, rotation and
//! softmax is an attnflow-kernels kernel. Attention runs through the
//! kernels' fused attention (queries read in place from the projection,
//! keys and values from the cache), or, when every layer's weights are
//! kept, through their weights kernel; layers with a sliding window take
//! [`attend_windowed`], since the kernels' masks are causal or padding
//! only.

use std::ops::Range;

use attnflow_kernels::packed::PackedMatrix;
use attnflow_kernels::{
    activate, add_in_place, attention_forward, attention_weights_forward_new, layer_norm_into,
    rms_norm_into, softmax_rows_in_place, swiglu_into, AttentionProblem, HeadsLayout,
};
use gemm::Parallelism;
use rayon::prelude::*;

use crate::decoder::config::{Activation, DecoderConfig};
use crate::decoder::rope::Rotary;
use crate::error::{ModelError, Result};

/// A linear map `x Wᵀ + b`.
#[derive(Clone, Debug)]
pub struct Linear {
    pub(crate) weight: PackedMatrix,
    pub(crate) bias: Option<Vec<f32>>,
}

impl Linear {
    /// `(n, inputs)` -> `(n, outputs)`.
    fn forward(&self, x: &[f32], n: usize) -> Vec<f32> {
        let mut out = self.weight.matmul_new(x, n);
        if let Some(bias) = &self.bias {
            add_bias(&mut out, bias);
        }
        out
    }

    fn parameter_count(&self) -> usize {
        self.weight.rows() * self.weight.columns() + self.bias.as_ref().map_or(0, Vec::len)
    }
}

/// Adds `bias` to every row of `x`.
fn add_bias(x: &mut [f32], bias: &[f32]) {
    for row in x.chunks_exact_mut(bias.len()) {
        add_in_place(row, bias);
    }
}

/// Several linear maps of the same input, in one parallel region (a
/// layer's query, key and value maps; its gate and up maps), so the
/// threads never wait between maps.
fn forward_all<const N: usize>(linears: [&Linear; N], x: &[f32], n: usize) -> [Vec<f32>; N] {
    if n != 1 {
        // Several rows: one parallel region for all the products too.
        let weights = linears.map(|linear| &linear.weight);
        let mut outputs = PackedMatrix::matmul_group_new(&weights, x, n).into_iter();
        return linears.map(|linear| {
            let mut out = outputs.next().expect("one output per map");
            if let Some(bias) = &linear.bias {
                add_bias(&mut out, bias);
            }
            out
        });
    }
    let mut outputs = linears.map(|linear| vec![0f32; linear.weight.rows()]);
    {
        let mut products: Vec<(&PackedMatrix, &mut [f32])> = linears
            .iter()
            .zip(outputs.iter_mut())
            .map(|(linear, out)| (&linear.weight, out.as_mut_slice()))
            .collect();
        attnflow_kernels::packed::matvec_group(&mut products, x);
    }
    for (linear, out) in linears.iter().zip(outputs.iter_mut()) {
        if let Some(bias) = &linear.bias {
            add_bias(out, bias);
        }
    }
    outputs
}

/// A norm over the last axis.
#[derive(Clone, Debug)]
pub enum Norm {
    /// RMS norm with a learned scale.
    Rms {
        /// The scale.
        weight: Vec<f32>,
        /// Added to the mean square.
        eps: f32,
    },
    /// LayerNorm with learned scale and shift.
    Layer {
        /// The scale.
        weight: Vec<f32>,
        /// The shift.
        bias: Vec<f32>,
        /// Added to the variance.
        eps: f32,
    },
}

impl Norm {
    /// The norm of every row of `x`, into a new buffer.
    fn apply(&self, x: &[f32]) -> Vec<f32> {
        let mut out = Vec::new();
        self.apply_into(x, &mut out);
        out
    }

    /// The norm of every row of `x` into `out`, which a forward pass
    /// reuses from layer to layer (zeroing a new buffer per norm was a
    /// `memset` of 35 MB per SmolLM2 prefill of 256 tokens).
    fn apply_into(&self, x: &[f32], out: &mut Vec<f32>) {
        out.resize(x.len(), 0.0);
        match self {
            Norm::Rms { weight, eps } => rms_norm_into(out, x, weight, *eps),
            Norm::Layer { weight, bias, eps } => layer_norm_into(out, x, weight, Some(bias), *eps),
        }
    }

    fn parameter_count(&self) -> usize {
        match self {
            Norm::Rms { weight, .. } => weight.len(),
            Norm::Layer { weight, bias, .. } => weight.len() + bias.len(),
        }
    }
}

/// A feed-forward network.
#[derive(Clone, Debug)]
pub enum FeedForward {
    /// `down(silu(gate(x)) ⊙ up(x))` (SwiGLU).
    Gated {
        /// The gate map.
        gate: Linear,
        /// The up map.
        up: Linear,
        /// The down map.
        down: Linear,
    },
    /// `down(act(up(x)))`.
    Plain {
        /// The up map.
        up: Linear,
        /// The down map.
        down: Linear,
        /// The activation between.
        activation: Activation,
    },
}

impl FeedForward {
    /// `(n, d)` -> `(n, d)`; `scratch` holds the gated product between
    /// calls.
    fn forward(&self, x: &[f32], n: usize, scratch: &mut Vec<f32>) -> Vec<f32> {
        match self {
            FeedForward::Gated { gate, up, down } => {
                let [gated, upped] = forward_all([gate, up], x, n);
                scratch.resize(gated.len(), 0.0);
                swiglu_into(scratch, &gated, &upped);
                down.forward(scratch, n)
            }
            FeedForward::Plain {
                up,
                down,
                activation,
            } => {
                let mut hidden = up.forward(x, n);
                let function = match activation {
                    Activation::GeluErf => attnflow_kernels::Activation::GeluErf,
                    _ => attnflow_kernels::Activation::GeluTanh,
                };
                activate(function, &mut hidden);
                down.forward(&hidden, n)
            }
        }
    }

    fn parameter_count(&self) -> usize {
        match self {
            FeedForward::Gated { gate, up, down } => {
                gate.parameter_count() + up.parameter_count() + down.parameter_count()
            }
            FeedForward::Plain { up, down, .. } => up.parameter_count() + down.parameter_count(),
        }
    }
}

/// One pre-norm decoder layer.
#[derive(Clone, Debug)]
pub struct Layer {
    pub(crate) attention_norm: Norm,
    pub(crate) query: Linear,
    pub(crate) key: Linear,
    pub(crate) value: Linear,
    pub(crate) output: Linear,
    pub(crate) feed_forward_norm: Norm,
    pub(crate) feed_forward: FeedForward,
    /// Most recent keys a query sees, itself included (`None`: all).
    pub(crate) window: Option<usize>,
}

impl Layer {
    fn parameter_count(&self) -> usize {
        self.attention_norm.parameter_count()
            + self.query.parameter_count()
            + self.key.parameter_count()
            + self.value.parameter_count()
            + self.output.parameter_count()
            + self.feed_forward_norm.parameter_count()
            + self.feed_forward.parameter_count()
    }
}

/// Keys and values of the positions seen so far, per layer, laid out
/// `(kv_heads, capacity, head_dim)` so each head's keys are contiguous.
#[derive(Clone, Debug)]
pub struct KvCache {
    layers: Vec<LayerCache>,
    length: usize,
    capacity: usize,
    kv_heads: usize,
    head_dim: usize,
}

#[derive(Clone, Debug)]
struct LayerCache {
    keys: Vec<f32>,
    values: Vec<f32>,
}

impl KvCache {
    /// An empty cache for `config`'s model with room for `capacity`
    /// positions (it grows when more come).
    pub fn new(config: &DecoderConfig, capacity: usize) -> Self {
        let size = config.num_kv_heads * capacity * config.head_dim;
        Self {
            layers: (0..config.num_layers)
                .map(|_| LayerCache {
                    keys: vec![0f32; size],
                    values: vec![0f32; size],
                })
                .collect(),
            length: 0,
            capacity,
            kv_heads: config.num_kv_heads,
            head_dim: config.head_dim,
        }
    }

    /// Positions held.
    pub fn len(&self) -> usize {
        self.length
    }

    /// Whether no position is held.
    pub fn is_empty(&self) -> bool {
        self.length == 0
    }

    /// Forgets every position, keeping the memory.
    pub fn clear(&mut self) {
        self.length = 0;
    }

    /// Bytes the cache holds.
    pub fn bytes(&self) -> usize {
        self.layers.len() * 2 * self.kv_heads * self.capacity * self.head_dim * 4
    }

    fn reserve(&mut self, needed: usize) {
        if needed <= self.capacity {
            return;
        }
        let capacity = needed.max(2 * self.capacity);
        let (heads, width) = (self.kv_heads, self.head_dim);
        let keep = self.length * width;
        for layer in &mut self.layers {
            for buffer in [&mut layer.keys, &mut layer.values] {
                let mut grown = vec![0f32; heads * capacity * width];
                for head in 0..heads {
                    let from = head * self.capacity * width;
                    let to = head * capacity * width;
                    grown[to..to + keep].copy_from_slice(&buffer[from..from + keep]);
                }
                *buffer = grown;
            }
        }
        self.capacity = capacity;
    }

    /// Writes `(n, kv_heads · head_dim)` keys and values at positions
    /// `length..length + n` of `layer`.
    fn write(&mut self, layer: usize, keys: &[f32], values: &[f32], n: usize) {
        let (heads, width, capacity, first) =
            (self.kv_heads, self.head_dim, self.capacity, self.length);
        let cache = &mut self.layers[layer];
        for position in 0..n {
            for head in 0..heads {
                let from = (position * heads + head) * width;
                let to = (head * capacity + first + position) * width;
                cache.keys[to..to + width].copy_from_slice(&keys[from..from + width]);
                cache.values[to..to + width].copy_from_slice(&values[from..from + width]);
            }
        }
    }

    /// Every key (or value) buffer of `layer` with its layout: heads apart
    /// by the capacity, positions by the head width.
    fn heads(&self, layer: usize, values: bool) -> (&[f32], HeadsLayout) {
        let buffer = if values {
            &self.layers[layer].values
        } else {
            &self.layers[layer].keys
        };
        let layout = HeadsLayout {
            offset: 0,
            batch_stride: buffer.len(),
            head_stride: self.capacity * self.head_dim,
            row_stride: self.head_dim,
        };
        (buffer, layout)
    }

    /// Keys (or values) of one head: `(positions, head_dim)` contiguous.
    fn head(&self, layer: usize, head: usize, values: bool, positions: usize) -> &[f32] {
        let buffer = if values {
            &self.layers[layer].values
        } else {
            &self.layers[layer].keys
        };
        let start = head * self.capacity * self.head_dim;
        &buffer[start..start + positions * self.head_dim]
    }
}

/// Which output rows get logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogitRows {
    /// None (hidden states or attention only).
    None,
    /// The last input position only (what decoding needs).
    Last,
    /// Every input position (golden tests).
    All,
    /// The last `count` input positions (perplexity over a window's new
    /// tokens).
    Tail(usize),
}

/// What a forward pass keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ForwardOptions {
    /// Which rows get logits.
    pub logits: LogitRows,
    /// Keep every layer's attention weights, per query head.
    pub attentions: bool,
    /// Keep the hidden states: the embeddings' output, every layer's but
    /// the last, and the final norm's (as transformers'
    /// `output_hidden_states=True`).
    pub hidden_states: bool,
}

impl Default for ForwardOptions {
    fn default() -> Self {
        Self {
            logits: LogitRows::Last,
            attentions: false,
            hidden_states: false,
        }
    }
}

/// The result of a forward pass over `n` new positions.
#[derive(Clone, Debug)]
pub struct DecoderOutput {
    /// `(rows, vocab)` logits for the rows asked for.
    pub logits: Vec<f32>,
    /// The input positions (0-based within this call) the logit rows belong to.
    pub logit_positions: Range<usize>,
    /// `layers + 1` tensors of `(n, d)` when asked for.
    pub hidden_states: Vec<Vec<f32>>,
    /// Per layer, `(heads, n, keys)` weights when asked for: row `i` is the
    /// distribution of query `i` over every cached key (zero where masked).
    pub attentions: Vec<Vec<f32>>,
    /// Keys each query could attend over: cached positions plus `n`.
    pub keys: usize,
}

/// A decoder with its weights.
#[derive(Clone, Debug)]
pub struct DecoderModel {
    pub(crate) config: DecoderConfig,
    pub(crate) embedding: PackedMatrix,
    pub(crate) positions: Option<Vec<f32>>,
    pub(crate) layers: Vec<Layer>,
    pub(crate) final_norm: Norm,
    /// The output head, `None` when tied to the embedding.
    pub(crate) head: Option<Linear>,
    pub(crate) rotary: Option<Rotary>,
}

impl DecoderModel {
    /// The configuration.
    pub fn config(&self) -> &DecoderConfig {
        &self.config
    }

    /// Scalars in the weights (a tied head counted once).
    pub fn parameter_count(&self) -> usize {
        self.embedding.rows() * self.embedding.columns()
            + self.positions.as_ref().map_or(0, Vec::len)
            + self
                .layers
                .iter()
                .map(Layer::parameter_count)
                .sum::<usize>()
            + self.final_norm.parameter_count()
            + self.head.as_ref().map_or(0, Linear::parameter_count)
    }

    /// Bytes the weights occupy in memory.
    pub fn weight_bytes(&self) -> usize {
        let linear = |linear: &Linear| {
            linear.weight.stored_bytes() + 4 * linear.bias.as_ref().map_or(0, Vec::len)
        };
        let feed_forward = |network: &FeedForward| match network {
            FeedForward::Gated { gate, up, down } => linear(gate) + linear(up) + linear(down),
            FeedForward::Plain { up, down, .. } => linear(up) + linear(down),
        };
        self.embedding.stored_bytes()
            + 4 * self.positions.as_ref().map_or(0, Vec::len)
            + self
                .layers
                .iter()
                .map(|layer| {
                    linear(&layer.query)
                        + linear(&layer.key)
                        + linear(&layer.value)
                        + linear(&layer.output)
                        + feed_forward(&layer.feed_forward)
                        + 4 * (layer.attention_norm.parameter_count()
                            + layer.feed_forward_norm.parameter_count())
                })
                .sum::<usize>()
            + self.head.as_ref().map_or(0, linear)
    }

    /// An empty cache sized for `capacity` positions.
    pub fn cache(&self, capacity: usize) -> KvCache {
        KvCache::new(&self.config, capacity)
    }

    /// Runs `ids` as the next positions after what `cache` holds, appending
    /// their keys and values to it.
    pub fn forward(
        &self,
        ids: &[u32],
        cache: &mut KvCache,
        options: ForwardOptions,
    ) -> Result<DecoderOutput> {
        let config = &self.config;
        let n = ids.len();
        let first = cache.len();
        if n == 0 {
            return Err(ModelError::input("input_ids", "is empty"));
        }
        if first + n > config.max_positions {
            return Err(ModelError::input(
                "input_ids",
                format!(
                    "{} positions, but the model takes at most {} ({} in {})",
                    first + n,
                    config.max_positions,
                    match config.source {
                        crate::decoder::config::ConfigSource::ConfigJson =>
                            "max_position_embeddings",
                        crate::decoder::config::ConfigSource::Gguf => "the context length",
                    },
                    config.path.display()
                ),
            ));
        }
        if let Some((index, id)) = ids
            .iter()
            .enumerate()
            .find(|(_, id)| **id as usize >= config.vocab_size)
        {
            return Err(ModelError::input(
                format!("token {index}"),
                format!("id {id} is outside the vocabulary of {}", config.vocab_size),
            ));
        }
        cache.reserve(first + n);
        let d = config.hidden_size;
        let mut hidden = vec![0f32; n * d];
        for (row, &id) in hidden.chunks_exact_mut(d).zip(ids) {
            self.embedding.dequantize_row(id as usize, row);
        }
        if let Some(positions) = &self.positions {
            add_in_place(&mut hidden, &positions[first * d..(first + n) * d]);
        }
        let logit_positions = match options.logits {
            LogitRows::None => n..n,
            LogitRows::Last => n - 1..n,
            LogitRows::All => 0..n,
            LogitRows::Tail(count) => n - count.min(n)..n,
        };
        // The rows the final norm reads: every row's hidden state, or the
        // logit rows only.
        let normed_rows = if options.hidden_states {
            0..n
        } else {
            logit_positions.clone()
        };
        let mut hidden_states = Vec::new();
        let mut attentions = Vec::new();
        // Buffers every layer reuses.
        let (mut normed, mut attended, mut gated) = (Vec::new(), Vec::new(), Vec::new());
        let width = config.num_heads * config.head_dim;
        for (index, layer) in self.layers.iter().enumerate() {
            if options.hidden_states {
                hidden_states.push(hidden.clone());
            }
            layer.attention_norm.apply_into(&hidden, &mut normed);
            let [mut queries, mut keys, values] =
                forward_all([&layer.query, &layer.key, &layer.value], &normed, n);
            if let Some(rotary) = &self.rotary {
                rotary.rotate(&mut queries, config.num_heads, first, n);
                rotary.rotate(&mut keys, config.num_kv_heads, first, n);
            }
            cache.write(index, &keys, &values, n);
            // Past the last layer's attention only the rows the final norm
            // reads matter (as llama.cpp skips the rest): a prefill for
            // the next token carries one row on instead of all of them.
            // Every row's keys and values are cached above, and captured
            // maps still cover every query.
            let rows = if index + 1 == self.layers.len() {
                normed_rows.clone()
            } else {
                0..n
            };
            let every_row = rows.len() == n;
            if every_row || options.attentions {
                let weights = self.attention(
                    index,
                    &queries,
                    cache,
                    (first, n),
                    layer.window,
                    options.attentions,
                    &mut attended,
                )?;
                attentions.extend(weights);
                if !every_row {
                    attended.copy_within(rows.start * width..rows.end * width, 0);
                    attended.truncate(rows.len() * width);
                }
            } else if !rows.is_empty() {
                self.attention(
                    index,
                    &queries[rows.start * width..rows.end * width],
                    cache,
                    (first + rows.start, rows.len()),
                    layer.window,
                    false,
                    &mut attended,
                )?;
            }
            if !every_row {
                hidden.copy_within(rows.start * d..rows.end * d, 0);
                hidden.truncate(rows.len() * d);
            }
            if rows.is_empty() {
                break;
            }
            let count = rows.len();
            add_in_place(&mut hidden, &layer.output.forward(&attended, count));
            layer.feed_forward_norm.apply_into(&hidden, &mut normed);
            add_in_place(
                &mut hidden,
                &layer.feed_forward.forward(&normed, count, &mut gated),
            );
        }
        cache.length = first + n;

        let normed = self.final_norm.apply(&hidden);
        let rows = logit_positions.len();
        let offset = (logit_positions.start - normed_rows.start) * d;
        let selected = &normed[offset..offset + rows * d];
        let logits = match &self.head {
            Some(head) => head.forward(selected, rows),
            None => {
                let mut out = vec![0f32; rows * config.vocab_size];
                self.embedding.matmul(selected, rows, &mut out);
                out
            }
        };
        if options.hidden_states {
            hidden_states.push(normed);
        }
        Ok(DecoderOutput {
            logits,
            logit_positions,
            hidden_states,
            attentions,
            keys: first + n,
        })
    }

    /// Attention of `n` queries at positions `first..` over the cached keys
    /// `0..first + n`: the `(n, heads · head_dim)` output into `output`
    /// and, when `capture`, the `(heads, n, first + n)` weights.
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        layer: usize,
        queries: &[f32],
        cache: &KvCache,
        (first, n): (usize, usize),
        window: Option<usize>,
        capture: bool,
        output: &mut Vec<f32>,
    ) -> Result<Option<Vec<f32>>> {
        let config = &self.config;
        let (heads, width) = (config.num_heads, config.head_dim);
        let keys_seen = first + n;
        if window.is_some_and(|size| size < keys_seen) {
            let problem = WindowedProblem {
                heads,
                kv_heads: config.num_kv_heads,
                head_dim: width,
                first,
                n,
                window,
                scale: 1.0 / (width as f32).sqrt(),
            };
            let (attended, weights) = attend_windowed(
                &problem,
                queries,
                |head| cache.head(layer, head, false, keys_seen),
                |head| cache.head(layer, head, true, keys_seen),
                capture,
            );
            *output = attended;
            return Ok(weights);
        }
        let mut problem = AttentionProblem::new(1, heads, n, width);
        problem.kv_heads = config.num_kv_heads;
        problem.m = keys_seen;
        // Query i sits at position first + i: it sees keys 0..=first + i.
        problem.causal = Some(first);
        let rows = HeadsLayout::token_rows(n, heads * width, width, 0);
        output.resize(n * heads * width, 0.0);
        if capture {
            let weights = attention_weights_forward_new(
                &problem,
                (queries, rows),
                cache.heads(layer, false),
                cache.heads(layer, true),
                (output, rows),
            );
            return Ok(Some(weights));
        }
        attention_forward(
            &problem,
            (queries, rows),
            cache.heads(layer, false),
            cache.heads(layer, true),
            (output, rows),
            None,
        );
        Ok(None)
    }
}

/// The sizes of one causal attention call with a sliding window.
#[derive(Clone, Copy, Debug)]
pub struct WindowedProblem {
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (each shared by `heads / kv_heads` query heads).
    pub kv_heads: usize,
    /// Width of a head.
    pub head_dim: usize,
    /// Position of the first query; keys start at position 0.
    pub first: usize,
    /// Number of queries.
    pub n: usize,
    /// Most recent keys a query sees (itself included), if limited.
    pub window: Option<usize>,
    /// Score multiplier, `1/√head_dim`.
    pub scale: f32,
}

/// Queries per task of [`attend_windowed`]: a block of rows of one head.
const QUERY_BLOCK: usize = 64;

/// Causal grouped-query attention with a sliding window, computed exactly
/// head by head (§3.2): `softmax(scale · q Kᵀ + mask) V` with query `i` at
/// position `p = first + i` seeing keys `max(0, p − window + 1)..=p`. `queries` is
/// `(n, heads · head_dim)`; `keys(g)` and `values(g)` give key/value head
/// `g`'s `(first + n, head_dim)` rows. Returns the `(n, heads · head_dim)`
/// output and, when `capture`, the `(heads, n, first + n)` weights.
///
/// Work is split into (head, block of 64 queries) tasks over the rayon
/// pool; each computes its scores and products with single-threaded `gemm`
/// over only the keys its queries can see.
pub fn attend_windowed<'a>(
    problem: &WindowedProblem,
    queries: &[f32],
    keys: impl Fn(usize) -> &'a [f32] + Sync,
    values: impl Fn(usize) -> &'a [f32] + Sync,
    capture: bool,
) -> (Vec<f32>, Option<Vec<f32>>) {
    let WindowedProblem {
        heads,
        kv_heads,
        head_dim: width,
        first,
        n,
        window,
        scale,
    } = *problem;
    let total = first + n;
    let group = heads / kv_heads;
    let blocks = n.div_ceil(QUERY_BLOCK);
    let visible = |query: usize| -> Range<usize> {
        let position = first + query;
        let start = window.map_or(0, |width| (position + 1).saturating_sub(width));
        start..position + 1
    };
    let task = |task: usize| {
        let (head, block) = (task / blocks, task % blocks);
        let rows = block * QUERY_BLOCK..((block + 1) * QUERY_BLOCK).min(n);
        let count = rows.len();
        let key_range = visible(rows.start).start..visible(rows.end - 1).end;
        let columns = key_range.len();
        let mut q = vec![0f32; count * width];
        for (offset, row) in rows.clone().enumerate() {
            let from = (row * heads + head) * width;
            q[offset * width..(offset + 1) * width].copy_from_slice(&queries[from..from + width]);
        }
        let kv = head / group;
        let k = &keys(kv)[key_range.start * width..key_range.end * width];
        let v = &values(kv)[key_range.start * width..key_range.end * width];
        let mut scores = vec![0f32; count * columns];
        // SAFETY: q is count × width, k columns × width, scores count ×
        // columns, all row-major and distinct allocations.
        unsafe {
            gemm::gemm(
                count,
                columns,
                width,
                scores.as_mut_ptr(),
                1,
                columns as isize,
                false,
                q.as_ptr(),
                1,
                width as isize,
                k.as_ptr(),
                width as isize,
                1,
                0.0,
                scale,
                false,
                false,
                false,
                Parallelism::None,
            );
        }
        for (offset, row) in scores.chunks_exact_mut(columns).enumerate() {
            let seen = visible(rows.start + offset);
            let (start, end) = (seen.start - key_range.start, seen.end - key_range.start);
            softmax_rows_in_place(&mut row[start..end], end - start);
            row[..start].fill(0.0);
            row[end..].fill(0.0);
        }
        let mut out = vec![0f32; count * width];
        // SAFETY: scores is count × columns, v columns × width, out count ×
        // width, distinct allocations.
        unsafe {
            gemm::gemm(
                count,
                width,
                columns,
                out.as_mut_ptr(),
                1,
                width as isize,
                false,
                scores.as_ptr(),
                1,
                columns as isize,
                v.as_ptr(),
                1,
                width as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                Parallelism::None,
            );
        }
        (
            head,
            rows,
            key_range,
            out,
            if capture { Some(scores) } else { None },
        )
    };
    let results: Vec<_> = if heads * blocks > 1 && rayon::current_num_threads() > 1 {
        (0..heads * blocks).into_par_iter().map(task).collect()
    } else {
        (0..heads * blocks).map(task).collect()
    };
    let mut output = vec![0f32; n * heads * width];
    let mut weights = capture.then(|| vec![0f32; heads * n * total]);
    for (head, rows, key_range, out, scores) in results {
        for (offset, row) in rows.clone().enumerate() {
            let to = (row * heads + head) * width;
            output[to..to + width].copy_from_slice(&out[offset * width..(offset + 1) * width]);
        }
        if let (Some(weights), Some(scores)) = (weights.as_mut(), scores) {
            let columns = key_range.len();
            for (offset, row) in rows.enumerate() {
                let to = (head * n + row) * total + key_range.start;
                weights[to..to + columns]
                    .copy_from_slice(&scores[offset * columns..(offset + 1) * columns]);
            }
        }
    }
    (output, weights)
}
