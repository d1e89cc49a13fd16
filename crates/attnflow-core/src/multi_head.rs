//! §2.2: multi-head attention with learned projections.

use attnflow_kernels::{linear_from_heads, linear_to_heads};
use candle_core::Tensor;
use candle_nn::{linear_b, Linear, VarBuilder};

use crate::{attend, scaled_dot_product_attention, AttentionMask, CoreError, Result, SdpaOptions};

/// The shape of a [`MultiHeadAttention`] block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MultiHeadAttentionConfig {
    /// Width of the query input and of the output (`E`).
    pub embed_dim: usize,
    /// Number of heads `h`; each head works in `E / h` dimensions.
    pub num_heads: usize,
    /// Width of the key input, when it differs from `E` (cross attention).
    pub key_dim: Option<usize>,
    /// Width of the value input, when it differs from `E` (cross attention).
    pub value_dim: Option<usize>,
    /// Whether the four projections have biases.
    pub bias: bool,
}

impl MultiHeadAttentionConfig {
    /// Self-attention of width `embed_dim` with `num_heads` heads and biases.
    pub fn new(embed_dim: usize, num_heads: usize) -> Self {
        Self {
            embed_dim,
            num_heads,
            key_dim: None,
            value_dim: None,
            bias: true,
        }
    }

    /// The width of each head, `E / h`, after checking the configuration.
    pub fn head_dim(&self) -> Result<usize> {
        if self.num_heads == 0 {
            return Err(CoreError::config("num_heads", "must be at least 1"));
        }
        if self.embed_dim == 0 {
            return Err(CoreError::config("embed_dim", "must be at least 1"));
        }
        if !self.embed_dim.is_multiple_of(self.num_heads) {
            return Err(CoreError::config(
                "embed_dim",
                format!(
                    "{} is not divisible by num_heads = {}",
                    self.embed_dim, self.num_heads
                ),
            ));
        }
        Ok(self.embed_dim / self.num_heads)
    }
}

/// §2.2: `MultiHead(Q, K, V) = Concat(head_1, …, head_h) W^O` with
/// `head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V)`.
///
/// Same semantics as PyTorch's `nn.MultiheadAttention(batch_first=True)`
/// with `average_attn_weights=False`. Its weights live under `q_proj`,
/// `k_proj`, `v_proj` and `out_proj` (each `weight` of shape
/// `(out, in)` and, with bias, `bias`).
#[derive(Clone, Debug)]
pub struct MultiHeadAttention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    num_heads: usize,
    embed_dim: usize,
    key_dim: usize,
    value_dim: usize,
}

impl MultiHeadAttention {
    /// Builds the block, creating or loading its projections from `vb`.
    pub fn new(config: &MultiHeadAttentionConfig, vb: VarBuilder) -> Result<Self> {
        config.head_dim()?;
        let embed_dim = config.embed_dim;
        let key_dim = config.key_dim.unwrap_or(embed_dim);
        let value_dim = config.value_dim.unwrap_or(embed_dim);
        for (field, width) in [("key_dim", key_dim), ("value_dim", value_dim)] {
            if width == 0 {
                return Err(CoreError::config(field, "must be at least 1"));
            }
        }
        Ok(Self {
            q_proj: linear_b(embed_dim, embed_dim, config.bias, vb.pp("q_proj"))?,
            k_proj: linear_b(key_dim, embed_dim, config.bias, vb.pp("k_proj"))?,
            v_proj: linear_b(value_dim, embed_dim, config.bias, vb.pp("v_proj"))?,
            out_proj: linear_b(embed_dim, embed_dim, config.bias, vb.pp("out_proj"))?,
            num_heads: config.num_heads,
            embed_dim,
            key_dim,
            value_dim,
        })
    }

    /// The number of heads.
    pub fn num_heads(&self) -> usize {
        self.num_heads
    }

    /// Attends from `query` `(batch, n, E)` to `key` `(batch, m, key_dim)`
    /// and `value` `(batch, m, value_dim)`; unbatched `(n, E)` inputs work
    /// too. Returns the output, shaped like `query`, and, when
    /// `need_weights`, the per-head weights `(batch, heads, n, m)`
    /// (`(heads, n, m)` for unbatched input).
    pub fn forward(
        &self,
        query: &Tensor,
        key: &Tensor,
        value: &Tensor,
        mask: &AttentionMask,
        need_weights: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let unbatched = query.rank() == 2;
        let batched = |name: &str, t: &Tensor, width: usize| -> Result<Tensor> {
            let t = match (t.rank(), unbatched) {
                (2, true) => t.unsqueeze(0)?,
                (3, false) => t.clone(),
                _ => {
                    return Err(CoreError::shape(
                        name,
                        format!(
                            "expected (batch, length, {width}) or, unbatched, (length, {width}) like the query; got shape {:?}",
                            t.dims()
                        ),
                    ))
                }
            };
            if t.dim(2)? != width {
                return Err(CoreError::shape(
                    name,
                    format!(
                        "last dimension is {} but the block expects {width}",
                        t.dim(2)?
                    ),
                ));
            }
            Ok(t)
        };
        let query = batched("query", query, self.embed_dim)?;
        let key = batched("key", key, self.key_dim)?;
        let value = batched("value", value, self.value_dim)?;
        if key.dim(1)? != value.dim(1)? {
            return Err(CoreError::shape(
                "value",
                format!(
                    "has {} positions but key has {}",
                    value.dim(1)?,
                    key.dim(1)?
                ),
            ));
        }
        if key.dim(0)? != query.dim(0)? || value.dim(0)? != query.dim(0)? {
            return Err(CoreError::shape(
                "key",
                format!(
                    "batch sizes differ: query {}, key {}, value {}",
                    query.dim(0)?,
                    key.dim(0)?,
                    value.dim(0)?
                ),
            ));
        }

        // The projections write the (batch, heads, n, head_dim) layout
        // attention reads, and the output projection reads it back: one
        // kernel each (attnflow-kernels), with a backward.
        let to_heads = |projection: &Linear, x: &Tensor| {
            linear_to_heads(x, projection.weight(), projection.bias(), self.num_heads)
        };
        let q = to_heads(&self.q_proj, &query)?;
        let k = to_heads(&self.k_proj, &key)?;
        let v = to_heads(&self.v_proj, &value)?;
        // Without weights to return, the fused kernel can run (when the
        // input and mask allow); it never materialises the n × m weights.
        let (attended, weights) = if need_weights {
            let exact = scaled_dot_product_attention(&q, &k, &v, mask, &SdpaOptions::default())?;
            (exact.output, Some(exact.weights))
        } else {
            (attend(&q, &k, &v, mask, &SdpaOptions::default())?, None)
        };
        let output = linear_from_heads(&attended, self.out_proj.weight(), self.out_proj.bias())?;

        if unbatched {
            Ok((
                output.squeeze(0)?,
                weights.map(|w| w.squeeze(0)).transpose()?,
            ))
        } else {
            Ok((output, weights))
        }
    }
}
