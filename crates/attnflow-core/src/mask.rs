//! Attention masks: which keys each query may attend to.

use candle_core::{DType, Device, Tensor};

use crate::{CoreError, Result};

/// Which keys each query may attend to, as any combination of the usual
/// kinds of mask. All parts present are applied together.
///
/// Conventions follow PyTorch so that masks carry over unchanged:
/// * `causal`: query `i` sees keys `j <= i` (top-left aligned when the
///   number of keys differs from the number of queries, as
///   `F.scaled_dot_product_attention(is_causal=True)` does).
/// * `key_padding`: shape `(batch, m)`; **non-zero marks padding** to be
///   ignored, as `nn.MultiheadAttention`'s `key_padding_mask`.
/// * `allowed`: broadcastable to `(batch, heads, n, m)`; **non-zero means
///   may attend**, as a boolean `attn_mask` of
///   `F.scaled_dot_product_attention`.
/// * `additive`: a float tensor broadcastable to `(batch, heads, n, m)`
///   added to the scaled scores (`-inf` blocks a key).
///
/// A query whose keys are all blocked gets zero weights and zero output.
#[derive(Clone, Debug, Default)]
pub struct AttentionMask {
    causal: bool,
    key_padding: Option<Tensor>,
    allowed: Option<Tensor>,
    additive: Option<Tensor>,
}

/// A mask resolved for one attention call, broadcast to the score shape
/// `(batch, heads, n, m)`.
pub(crate) struct ResolvedMask {
    /// Non-zero where a query may attend to a key; `None` when all may.
    pub allowed: Option<Tensor>,
    /// Added to the scaled scores; `None` when there is nothing to add.
    pub additive: Option<Tensor>,
}

impl AttentionMask {
    /// No masking: every query attends to every key.
    pub fn none() -> Self {
        Self::default()
    }

    /// A causal mask alone.
    pub fn causal() -> Self {
        Self::default().with_causal(true)
    }

    /// Turns the causal mask on or off.
    pub fn with_causal(mut self, causal: bool) -> Self {
        self.causal = causal;
        self
    }

    /// Adds a key-padding mask of shape `(batch, m)`; non-zero marks padding.
    pub fn with_key_padding(mut self, key_padding: Tensor) -> Self {
        self.key_padding = Some(key_padding);
        self
    }

    /// Adds a boolean mask broadcastable to `(batch, heads, n, m)`; non-zero
    /// means the query may attend to the key.
    pub fn with_allowed(mut self, allowed: Tensor) -> Self {
        self.allowed = Some(allowed);
        self
    }

    /// Adds a float mask broadcastable to `(batch, heads, n, m)`, added to
    /// the scaled scores.
    pub fn with_additive(mut self, additive: Tensor) -> Self {
        self.additive = Some(additive);
        self
    }

    /// Whether the mask is causal.
    pub fn is_causal(&self) -> bool {
        self.causal
    }

    /// The key-padding part, if any.
    pub fn key_padding(&self) -> Option<&Tensor> {
        self.key_padding.as_ref()
    }

    /// Whether no part of the mask is set.
    pub fn is_empty(&self) -> bool {
        !self.causal
            && self.key_padding.is_none()
            && self.allowed.is_none()
            && self.additive.is_none()
    }

    /// Whether the mask has a boolean or additive part, which only the exact
    /// path applies (the fused kernel handles causal and key padding).
    pub(crate) fn has_dense_parts(&self) -> bool {
        self.allowed.is_some() || self.additive.is_some()
    }

    /// Resolves every part against the score shape `(batch, heads, n, m)`,
    /// checking shapes and naming the part at fault.
    pub(crate) fn resolve(
        &self,
        (batch, heads, n, m): (usize, usize, usize, usize),
        dtype: DType,
        device: &Device,
    ) -> Result<ResolvedMask> {
        let score_shape = (batch, heads, n, m);
        let mut allowed: Option<Tensor> = None;
        let mut and = |part: Tensor| -> Result<()> {
            allowed = Some(match allowed.take() {
                Some(previous) => previous.mul(&part)?,
                None => part,
            });
            Ok(())
        };
        if self.causal {
            let rows = Tensor::arange(0u32, n as u32, device)?.reshape((n, 1))?;
            let cols = Tensor::arange(0u32, m as u32, device)?.reshape((1, m))?;
            let causal = cols.broadcast_le(&rows)?;
            and(causal.broadcast_as(score_shape)?.contiguous()?)?;
        }
        if let Some(padding) = &self.key_padding {
            if padding.dims() != [batch, m] {
                return Err(CoreError::shape(
                    "key_padding",
                    format!(
                        "expected shape (batch, m) = ({batch}, {m}), got {:?}",
                        padding.dims()
                    ),
                ));
            }
            let keep = padding.eq(0f64)?.reshape((batch, 1, 1, m))?;
            and(keep.broadcast_as(score_shape)?.contiguous()?)?;
        }
        if let Some(mask) = &self.allowed {
            let keep = mask
                .ne(0f64)?
                .broadcast_as(score_shape)
                .map_err(|_| {
                    CoreError::shape(
                        "mask",
                        format!(
                            "boolean mask of shape {:?} does not broadcast to the scores' (batch, heads, n, m) = {score_shape:?}",
                            mask.dims()
                        ),
                    )
                })?
                .contiguous()?;
            and(keep)?;
        }
        let additive = match &self.additive {
            Some(mask) => {
                if !crate::softmax::is_float(mask.dtype()) {
                    return Err(CoreError::shape(
                        "mask",
                        format!(
                            "an additive mask must be a float tensor, got {:?}",
                            mask.dtype()
                        ),
                    ));
                }
                Some(
                    mask.to_dtype(dtype)?
                        .broadcast_as(score_shape)
                        .map_err(|_| {
                            CoreError::shape(
                                "mask",
                                format!(
                                    "additive mask of shape {:?} does not broadcast to the scores' (batch, heads, n, m) = {score_shape:?}",
                                    mask.dims()
                                ),
                            )
                        })?,
                )
            }
            None => None,
        };
        Ok(ResolvedMask { allowed, additive })
    }
}
