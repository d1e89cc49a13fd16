//! Fused, memory-efficient attention on the CPU (FlashAttention-2, Dao 2023).
//!
//! §9 of the paper puts attention at `O(n²d)` time and `O(n²)` space. The
//! space is not a law: this kernel tiles the scores, keeps a running softmax
//! per query row, and never holds more than a tile of the `n × m` weights, so
//! it needs `O(n·d)` extra memory and runs near the machine's matrix-multiply
//! speed. It computes exactly `softmax(scale · Q Kᵀ + mask) V`, agreeing with
//! the exact path ([`crate::scaled_dot_product_attention`]) to within `f32`
//! rounding, and it has a backward, so autograd and training go through it.
//!
//! * [`attend`] is what callers use: it runs the fused kernel when it can
//!   (f32 on the CPU, no mask or a causal and/or key-padding mask) and the
//!   exact path otherwise.
//! * [`fused_attention`] always runs the fused kernel (or says why it
//!   cannot) and also returns the per-row log-sum-exp.
//! * [`fused_attention_weights`] recomputes the weights of chosen heads and
//!   rows from that log-sum-exp, for visualisation, without materialising
//!   the rest.

use std::ops::Range;
use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp3, DType, Device, Layout, Shape, Tensor};

use crate::attention::{prepare, Prepared};
use crate::{scaled_dot_product_attention, AttentionMask, CoreError, Result, SdpaOptions};

use attnflow_kernels::attention::{
    attention_backward, attention_forward, AttentionProblem, HeadsLayout,
};
pub use attnflow_kernels::{SimdPath, Tiling};

/// Below this many scores per head (`n · m`) [`attend`] takes the exact
/// path. It is 1 because the fused kernel was measured faster at every size
/// (`cargo bench -p attnflow-core --bench fused`, release, 2 cores): forward
/// of 8 heads × 16 positions in 58 µs against the exact path's 163 µs, and
/// forward+backward of one causal head of 4 positions in 48 µs against
/// 310 µs. The exact path's several small candle ops cost more than the
/// fused op's one call, even where there is nothing to tile.
pub const FUSED_MIN_SCORES: usize = 1;

/// Settings of a fused attention call.
#[derive(Clone, Debug, Default)]
pub struct FusedOptions {
    /// Multiplies the scores before the softmax; `None` means `1 / sqrt(d)`.
    pub scale: Option<f64>,
    /// The SIMD path of the inner loops; `None` picks the widest this
    /// machine has. Tests set it to check every path.
    pub path: Option<SimdPath>,
    /// Tile sizes; the default suits d ≤ 128. Tests use small tiles to
    /// exercise many tiles on small inputs.
    pub tiling: Option<Tiling>,
}

impl FusedOptions {
    /// Options with only a score scale set.
    pub fn with_scale(scale: Option<f64>) -> Self {
        Self {
            scale,
            ..Self::default()
        }
    }
}

/// The result of a fused attention call.
#[derive(Clone, Debug)]
pub struct FusedOutput {
    /// `softmax(scale · Q Kᵀ + mask) V`, shaped like the query with the
    /// value's feature width.
    pub output: Tensor,
    /// Per query row, `ln Σⱼ exp(sᵢⱼ)` over the visible keys: shaped like
    /// the query without its last dimension; `-inf` for a query that sees
    /// no key. With it any weight is `exp(sᵢⱼ − Lᵢ)`
    /// (see [`fused_attention_weights`]).
    pub log_sum_exp: Tensor,
}

/// Why the fused kernel cannot run a call, or `None` when it can.
///
/// The fused kernel takes `f32` tensors on the CPU with non-empty
/// dimensions, and masks made only of `causal` and `key_padding`.
pub fn fused_unsupported_reason(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &AttentionMask,
) -> Option<String> {
    if q.dtype() != DType::F32 {
        return Some(format!("the fused kernel runs in f32, got {:?}", q.dtype()));
    }
    if !matches!(q.device(), Device::Cpu) {
        return Some("the fused kernel runs on the CPU".to_string());
    }
    if mask.has_dense_parts() {
        return Some(
            "the fused kernel supports causal and key-padding masks; boolean and additive masks go through the exact path"
                .to_string(),
        );
    }
    for (name, t) in [("q", q), ("k", k), ("v", v)] {
        if t.dims().contains(&0) {
            return Some(format!("tensor `{name}` has an empty dimension"));
        }
    }
    None
}

/// Scaled dot-product attention's output, by the fastest path that applies.
///
/// Same inputs, masks and result as
/// [`scaled_dot_product_attention`]`(..).output`; the fused kernel runs when
/// [`fused_unsupported_reason`] finds nothing against it and the problem has
/// at least [`FUSED_MIN_SCORES`] scores per head. Gradients flow through
/// either path. Use [`scaled_dot_product_attention`] when you need the
/// weights themselves.
pub fn attend(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &AttentionMask,
    options: &SdpaOptions,
) -> Result<Tensor> {
    let large = q.rank() >= 2
        && k.rank() >= 2
        && q.dim(q.rank() - 2)? * k.dim(k.rank() - 2)? >= FUSED_MIN_SCORES;
    if large && fused_unsupported_reason(q, k, v, mask).is_none() {
        let fused = fused_attention(q, k, v, mask, &FusedOptions::with_scale(options.scale))?;
        return Ok(fused.output);
    }
    Ok(scaled_dot_product_attention(q, k, v, mask, options)?.output)
}

/// Fused scaled dot-product attention with its log-sum-exp.
///
/// Shapes and masks as [`scaled_dot_product_attention`] (grouped key/value
/// heads included), restricted to what [`fused_unsupported_reason`] accepts;
/// anything else is an error naming the reason. Records a backward, so
/// `output` can be trained through.
pub fn fused_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &AttentionMask,
    options: &FusedOptions,
) -> Result<FusedOutput> {
    let prepared = prepare(
        q,
        k,
        v,
        &SdpaOptions {
            scale: options.scale,
        },
    )?;
    if let Some(reason) = fused_unsupported_reason(q, k, v, mask) {
        return Err(CoreError::config("fused attention", reason));
    }
    let path = resolve_path(options.path)?;
    let tiling = options.tiling.unwrap_or_default();
    if tiling.query_block == 0 || tiling.key_block == 0 {
        return Err(CoreError::config(
            "tiling",
            format!("tile sizes must be at least 1, got {tiling:?}"),
        ));
    }
    let Prepared { q4, k4, v4, .. } = &prepared;
    let (batch, heads, n, d) = q4.dims4()?;
    let (_, _, m, dv) = v4.dims4()?;
    let key_bias = key_bias(mask, batch, m)?;
    let log_sum_exp = Arc::new(Mutex::new(None));
    let op = FusedAttentionOp {
        shape: OpShape {
            batch,
            heads,
            n,
            m,
            d,
            dv,
        },
        scale: prepared.scale as f32,
        causal: mask.is_causal(),
        key_bias: key_bias.map(Arc::new),
        tiling,
        path,
        log_sum_exp: Arc::clone(&log_sum_exp),
    };
    let output = q4
        .contiguous()?
        .apply_op3(&k4.contiguous()?, &v4.contiguous()?, op)?;
    let lse = log_sum_exp
        .lock()
        .map_err(|_| CoreError::config("fused attention", "a kernel thread panicked"))?
        .clone()
        .ok_or_else(|| CoreError::config("fused attention", "the forward did not run"))?;
    let lse = Tensor::from_vec(lse, (batch, heads, n), &Device::Cpu)?;
    let lse = match prepared.rank {
        2 => lse.squeeze(0)?.squeeze(0)?,
        3 => lse.squeeze(1)?,
        _ => lse,
    };
    Ok(FusedOutput {
        output: prepared.restore_rank(output)?,
        log_sum_exp: lse,
    })
}

/// The attention weights of chosen heads and query rows, recomputed from a
/// fused call's log-sum-exp as `exp(scale · qᵢ·kⱼ − Lᵢ)` (masked keys 0).
///
/// `q`, `k` are `(batch, heads, n, d)` and `(batch, heads_kv, m, d)` and
/// `log_sum_exp` is `(batch, heads, n)` — the inputs and result of
/// [`fused_attention`] with the same `mask` and `scale`. Returns
/// `(batch, heads.len(), rows.len(), m)`: only those rows of those heads are
/// ever computed, so a few rows of an `n = 100 000` call cost little.
pub fn fused_attention_weights(
    q: &Tensor,
    k: &Tensor,
    log_sum_exp: &Tensor,
    mask: &AttentionMask,
    scale: Option<f64>,
    heads: &[usize],
    rows: Range<usize>,
) -> Result<Tensor> {
    let (batch, q_heads, n, d) = q.dims4().map_err(|_| {
        CoreError::shape(
            "q",
            format!("expected (batch, heads, n, d), got shape {:?}", q.dims()),
        )
    })?;
    let (k_batch, k_heads, m, k_d) = k.dims4().map_err(|_| {
        CoreError::shape(
            "k",
            format!("expected (batch, heads_kv, m, d), got shape {:?}", k.dims()),
        )
    })?;
    if k_batch != batch || k_d != d || k_heads == 0 || q_heads % k_heads != 0 {
        return Err(CoreError::shape(
            "k",
            format!(
                "shape {:?} does not match q's {:?} (same batch and d; its heads must divide q's)",
                k.dims(),
                q.dims()
            ),
        ));
    }
    if log_sum_exp.dims() != [batch, q_heads, n] {
        return Err(CoreError::shape(
            "log_sum_exp",
            format!(
                "expected (batch, heads, n) = ({batch}, {q_heads}, {n}), got {:?}",
                log_sum_exp.dims()
            ),
        ));
    }
    if let Some(head) = heads.iter().find(|h| **h >= q_heads) {
        return Err(CoreError::config(
            "heads",
            format!("head {head} does not exist; q has {q_heads} heads"),
        ));
    }
    if rows.start > rows.end || rows.end > n {
        return Err(CoreError::config(
            "rows",
            format!("rows {rows:?} are not within the {n} query rows"),
        ));
    }
    if mask.has_dense_parts() {
        return Err(CoreError::config(
            "mask",
            "weights on demand support causal and key-padding masks, as the fused kernel",
        ));
    }
    let scale = scale.unwrap_or(1.0 / (d as f64).sqrt());
    let device = q.device();
    let group = q_heads / k_heads;
    let head_index = Tensor::from_vec(
        heads.iter().map(|h| *h as u32).collect::<Vec<_>>(),
        heads.len(),
        device,
    )?;
    let kv_index = Tensor::from_vec(
        heads
            .iter()
            .map(|h| (*h / group) as u32)
            .collect::<Vec<_>>(),
        heads.len(),
        device,
    )?;
    let row_count = rows.end - rows.start;
    let q_rows = q
        .index_select(&head_index, 1)?
        .narrow(2, rows.start, row_count)?;
    let k_heads_chosen = k.index_select(&kv_index, 1)?;
    let scores = (q_rows.matmul(&k_heads_chosen.t()?)? * scale)?;
    // Rows that see no key have L = -inf; subtracting +inf instead makes
    // their weights exp(-inf) = 0.
    let lse = log_sum_exp
        .index_select(&head_index, 1)?
        .narrow(2, rows.start, row_count)?
        .to_dtype(DType::F64)?;
    let lse_values: Vec<f64> = lse
        .flatten_all()?
        .to_vec1::<f64>()?
        .into_iter()
        .map(|l| {
            if l == f64::NEG_INFINITY {
                f64::INFINITY
            } else {
                l
            }
        })
        .collect();
    let lse = Tensor::from_vec(lse_values, (batch, heads.len(), row_count, 1), device)?
        .to_dtype(q.dtype())?;
    let padding = key_bias(mask, batch, m)?;
    let mut bias = vec![0f32; batch * row_count * m];
    for b in 0..batch {
        for (r, row) in rows.clone().enumerate() {
            let out = &mut bias[(b * row_count + r) * m..(b * row_count + r + 1) * m];
            for (j, value) in out.iter_mut().enumerate() {
                let hidden = (mask.is_causal() && j > row)
                    || padding.as_ref().is_some_and(|p| p[b * m + j] != 0.0);
                if hidden {
                    *value = f32::NEG_INFINITY;
                }
            }
        }
    }
    let bias = Tensor::from_vec(bias, (batch, 1, row_count, m), device)?.to_dtype(q.dtype())?;
    Ok(scores.broadcast_add(&bias)?.broadcast_sub(&lse)?.exp()?)
}

/// The SIMD path to use: the one asked for if this machine has it, else the
/// widest available.
fn resolve_path(requested: Option<SimdPath>) -> Result<SimdPath> {
    match requested {
        None => Ok(SimdPath::detect()),
        Some(path) if path.is_available() => Ok(path),
        Some(path) => Err(CoreError::config(
            "path",
            format!("this machine cannot run the {path} SIMD path"),
        )),
    }
}

/// The key-padding mask as a per-key bias, `(batch, m)`: 0 for a visible
/// key, `-inf` for padding.
fn key_bias(mask: &AttentionMask, batch: usize, m: usize) -> Result<Option<Vec<f32>>> {
    let Some(padding) = mask.key_padding() else {
        return Ok(None);
    };
    if padding.dims() != [batch, m] {
        return Err(CoreError::shape(
            "key_padding",
            format!(
                "expected shape (batch, m) = ({batch}, {m}), got {:?}",
                padding.dims()
            ),
        ));
    }
    let padded = padding
        .ne(0f64)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    Ok(Some(
        padded
            .into_iter()
            .map(|p| if p != 0.0 { f32::NEG_INFINITY } else { 0.0 })
            .collect(),
    ))
}

#[derive(Clone, Copy, Debug)]
struct OpShape {
    batch: usize,
    heads: usize,
    n: usize,
    m: usize,
    d: usize,
    dv: usize,
}

/// The fused attention as a candle op of `(q, k, v)`. A custom op has one
/// output, so the log-sum-exp the backward needs lives in the op value
/// (ARCHITECTURE.md, "Known traps in candle").
struct FusedAttentionOp {
    shape: OpShape,
    scale: f32,
    causal: bool,
    key_bias: Option<Arc<Vec<f32>>>,
    tiling: Tiling,
    path: SimdPath,
    log_sum_exp: Arc<Mutex<Option<Vec<f32>>>>,
}

impl FusedAttentionOp {
    /// The kernel's problem: grouped key/value heads arrive expanded
    /// (`prepare`), and causal masks are top-left aligned (SDPA's).
    fn problem(&self) -> AttentionProblem<'_> {
        let OpShape {
            batch,
            heads,
            n,
            m,
            d,
            dv,
        } = self.shape;
        AttentionProblem {
            batch,
            heads,
            kv_heads: heads,
            n,
            m,
            d,
            dv,
            scale: self.scale,
            causal: self.causal.then_some(0),
            key_bias: self.key_bias.as_deref().map(Vec::as_slice),
            tiling: self.tiling,
            path: self.path,
        }
    }
}

/// The `f32` data of a contiguous operand.
fn contiguous_f32<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    name: &str,
) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("fused attention: `{name}` must be f32");
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("fused attention: `{name}` must be contiguous"),
    }
}

/// All values of a tensor as a contiguous `f32` vector.
fn to_f32_vec(t: &Tensor) -> candle_core::Result<Vec<f32>> {
    t.contiguous()?.flatten_all()?.to_vec1::<f32>()
}

impl CustomOp3 for FusedAttentionOp {
    fn name(&self) -> &'static str {
        "fused-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let q = contiguous_f32(s1, l1, "q")?;
        let k = contiguous_f32(s2, l2, "k")?;
        let v = contiguous_f32(s3, l3, "v")?;
        let OpShape {
            batch,
            heads,
            n,
            m,
            d,
            dv,
        } = self.shape;
        let mut out = vec![0f32; batch * heads * n * dv];
        let mut lse = vec![0f32; batch * heads * n];
        attention_forward(
            &self.problem(),
            (q, HeadsLayout::contiguous(heads, n, d)),
            (k, HeadsLayout::contiguous(heads, m, d)),
            (v, HeadsLayout::contiguous(heads, m, dv)),
            (&mut out, HeadsLayout::contiguous(heads, n, dv)),
            Some(&mut lse),
        );
        *self
            .log_sum_exp
            .lock()
            .map_err(|_| candle_core::Error::Msg("fused attention: poisoned lock".into()))? =
            Some(lse);
        Ok((CpuStorage::F32(out), Shape::from((batch, heads, n, dv))))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        out: &Tensor,
        grad_out: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let lse = self
            .log_sum_exp
            .lock()
            .map_err(|_| candle_core::Error::Msg("fused attention: poisoned lock".into()))?
            .clone()
            .ok_or_else(|| candle_core::Error::Msg("fused attention: no forward ran".into()))?;
        // The incoming gradient may be a stride-0 broadcast (for example of
        // a `sum_all`); `to_f32_vec` makes it contiguous.
        let grads = attention_backward(
            &self.problem(),
            &to_f32_vec(q)?,
            &to_f32_vec(k)?,
            &to_f32_vec(v)?,
            &to_f32_vec(out)?,
            &lse,
            &to_f32_vec(grad_out)?,
        );
        let device = q.device();
        Ok((
            Some(Tensor::from_vec(grads.q, q.shape(), device)?),
            Some(Tensor::from_vec(grads.k, k.shape(), device)?),
            Some(Tensor::from_vec(grads.v, v.shape(), device)?),
        ))
    }
}
