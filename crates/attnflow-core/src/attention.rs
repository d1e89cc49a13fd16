//! The attention matrix (§2.1) and scaled dot-product attention (§3.2).

use candle_core::Tensor;

use crate::mask::ResolvedMask;
use crate::softmax::{is_float, masked_softmax_last_dim};
use crate::{AttentionMask, CoreError, Result};

/// §2.1: the attention matrix `A = softmax(Wᵀ X)`, softmax taken over each
/// row, so every row of `A` sums to one.
///
/// `w` is `d × n` and `x` is `d × m`; the result is `n × m`.
pub fn attention_matrix(w: &Tensor, x: &Tensor) -> Result<Tensor> {
    let (w_rows, _) = w.dims2().map_err(|_| {
        CoreError::shape(
            "W",
            format!("expected a d × n matrix, got shape {:?}", w.dims()),
        )
    })?;
    let (x_rows, _) = x.dims2().map_err(|_| {
        CoreError::shape(
            "X",
            format!("expected a d × m matrix, got shape {:?}", x.dims()),
        )
    })?;
    if w_rows != x_rows {
        return Err(CoreError::shape(
            "X",
            format!("W is {w_rows} × _ but X is {x_rows} × _; both need the same d"),
        ));
    }
    let scores = w.t()?.matmul(x)?;
    masked_softmax_last_dim(&scores, None)
}

/// Settings of one scaled dot-product attention call.
#[derive(Clone, Debug, Default)]
pub struct SdpaOptions {
    /// Multiplies the scores before the softmax; `None` means the usual
    /// `1 / sqrt(d_k)`.
    pub scale: Option<f64>,
}

/// What attention returns (§3.2): the attended values and the normalised
/// weights that produced them.
#[derive(Clone, Debug)]
pub struct AttentionOutput {
    /// `softmax(scale · Q Kᵀ + mask) V`, shaped like the query with the
    /// value's feature width.
    pub output: Tensor,
    /// The weights, `(…, n, m)` in the same leading layout as the query;
    /// unmasked rows sum to one, fully masked rows are zero.
    pub weights: Tensor,
}

/// §3.2: scaled dot-product attention, `softmax(scale · Q Kᵀ + mask) V`.
///
/// Shapes, all three of the same rank:
/// * `(n, d)`, `(m, d)`, `(m, d_v)`: a single head;
/// * `(batch, n, d)`, `(batch, m, d)`, `(batch, m, d_v)`;
/// * `(batch, heads, n, d)`, `(batch, heads_kv, m, d)`, `(batch, heads_kv, m, d_v)`,
///   where `heads_kv` may divide `heads` (grouped key/value heads: query head
///   `i` uses key/value head `i / (heads / heads_kv)`, as PyTorch's
///   `enable_gqa=True`).
///
/// The softmax subtracts each row's maximum; a query whose keys are all
/// masked yields zero weights and zero output.
pub fn scaled_dot_product_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &AttentionMask,
    options: &SdpaOptions,
) -> Result<AttentionOutput> {
    let prepared = prepare(q, k, v, options)?;
    let Prepared {
        q4, k4, v4, scale, ..
    } = &prepared;
    let (batch, heads, n, _) = q4.dims4()?;
    let m = k4.dim(2)?;
    let mut scores = (q4.matmul(&k4.t()?)? * *scale)?;
    let ResolvedMask { allowed, additive } =
        mask.resolve((batch, heads, n, m), q.dtype(), q.device())?;
    if let Some(additive) = additive {
        scores = (scores + additive)?;
    }
    let weights = masked_softmax_last_dim(&scores, allowed.as_ref())?;
    let output = weights.matmul(&v4.contiguous()?)?;
    Ok(AttentionOutput {
        output: prepared.restore_rank(output)?,
        weights: prepared.restore_rank(weights)?,
    })
}

/// The inputs of one attention call, checked and brought to the common
/// `(batch, heads, n, d)` layout, with grouped key/value heads repeated.
pub(crate) struct Prepared {
    /// `(batch, heads, n, d)`.
    pub q4: Tensor,
    /// `(batch, heads, m, d)`.
    pub k4: Tensor,
    /// `(batch, heads, m, d_v)`.
    pub v4: Tensor,
    /// The score scale, `1 / sqrt(d)` unless the options say otherwise.
    pub scale: f64,
    /// The rank of the caller's tensors (2, 3 or 4).
    pub rank: usize,
}

impl Prepared {
    /// Brings a `(batch, heads, ...)` result back to the caller's rank.
    pub fn restore_rank(&self, t: Tensor) -> Result<Tensor> {
        Ok(match self.rank {
            2 => t.squeeze(0)?.squeeze(0)?,
            3 => t.squeeze(1)?,
            _ => t,
        })
    }
}

/// Checks `q`, `k`, `v` (ranks, dtypes, matching dimensions) and brings them
/// to rank 4, naming the tensor at fault on error.
pub(crate) fn prepare(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    options: &SdpaOptions,
) -> Result<Prepared> {
    let rank = q.rank();
    for (name, tensor) in [("k", k), ("v", v)] {
        if tensor.rank() != rank {
            return Err(CoreError::shape(
                name,
                format!(
                    "has rank {} but q has rank {rank}; q, k and v need the same rank",
                    tensor.rank()
                ),
            ));
        }
    }
    for (name, tensor) in [("q", q), ("k", k), ("v", v)] {
        if !is_float(tensor.dtype()) {
            return Err(CoreError::shape(
                name,
                format!("must be a float tensor, got {:?}", tensor.dtype()),
            ));
        }
        if tensor.dtype() != q.dtype() {
            return Err(CoreError::shape(
                name,
                format!("has dtype {:?} but q has {:?}", tensor.dtype(), q.dtype()),
            ));
        }
    }
    let as_four = |t: &Tensor| -> Result<Tensor> {
        Ok(match rank {
            2 => t.unsqueeze(0)?.unsqueeze(0)?,
            3 => t.unsqueeze(1)?,
            4 => t.clone(),
            _ => {
                return Err(CoreError::shape(
                    "q",
                    format!(
                        "expected (n, d), (batch, n, d) or (batch, heads, n, d), got shape {:?}",
                        q.dims()
                    ),
                ))
            }
        })
    };
    let (q4, k4, v4) = (as_four(q)?, as_four(k)?, as_four(v)?);
    let (batch, heads, _, d_k) = q4.dims4()?;
    let (k_batch, k_heads, m, k_d) = k4.dims4()?;
    let (v_batch, v_heads, v_m, _d_v) = v4.dims4()?;
    if k_batch != batch || v_batch != batch {
        return Err(CoreError::shape(
            if k_batch != batch { "k" } else { "v" },
            format!("batch sizes differ: q {batch}, k {k_batch}, v {v_batch}"),
        ));
    }
    if k_d != d_k {
        return Err(CoreError::shape(
            "k",
            format!("feature width {k_d} differs from q's {d_k}"),
        ));
    }
    if v_m != m {
        return Err(CoreError::shape(
            "v",
            format!("has {v_m} positions but k has {m}"),
        ));
    }
    if k_heads != v_heads || k_heads == 0 || heads % k_heads != 0 {
        return Err(CoreError::shape(
            "k",
            format!(
                "key/value heads ({k_heads} in k, {v_heads} in v) must be equal and divide q's {heads} heads"
            ),
        ));
    }
    let (k4, v4) = if k_heads == heads {
        (k4, v4)
    } else {
        let group = heads / k_heads;
        (repeat_heads(&k4, group)?, repeat_heads(&v4, group)?)
    };

    let scale = options.scale.unwrap_or(1.0 / (d_k as f64).sqrt());
    Ok(Prepared {
        q4,
        k4,
        v4,
        scale,
        rank,
    })
}

/// Repeats each head `group` times along the head axis:
/// `(b, h, m, d)` -> `(b, h·group, m, d)` with copies of a head adjacent.
fn repeat_heads(t: &Tensor, group: usize) -> Result<Tensor> {
    let (batch, heads, m, d) = t.dims4()?;
    Ok(t.unsqueeze(2)?
        .broadcast_as((batch, heads, group, m, d))?
        .reshape((batch, heads * group, m, d))?)
}
