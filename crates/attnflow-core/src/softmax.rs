//! A numerically stable, differentiable softmax that understands masks.

use candle_core::{DType, Tensor, D};

use crate::Result;

/// Softmax over the last dimension, restricted to the entries where
/// `allowed` is non-zero.
///
/// * Stable: the row maximum (over allowed entries) is subtracted before
///   `exp`, so large scores do not overflow.
/// * A row with no allowed entry (or whose scores are all `-inf`) gives
///   zeros, never NaN: such a query attends to nothing.
/// * Differentiable: built from candle operations that record a backward
///   (`candle_nn::ops::softmax_last_dim` does not; ARCHITECTURE.md, "Known
///   traps in candle").
///
/// `allowed`, when given, must have the shape of `scores` (any integer
/// dtype; non-zero means "may attend").
pub fn masked_softmax_last_dim(scores: &Tensor, allowed: Option<&Tensor>) -> Result<Tensor> {
    let filled = match allowed {
        Some(allowed) => {
            let blocked = Tensor::full(f64::NEG_INFINITY, scores.shape(), scores.device())?
                .to_dtype(scores.dtype())?;
            allowed.ne(0u8)?.where_cond(scores, &blocked)?
        }
        None => scores.clone(),
    };
    // The maximum only shifts the exponent; its gradient cancels exactly, so
    // it is detached. Clamping keeps fully masked rows (max = -inf) finite.
    let row_max = filled
        .max_keepdim(D::Minus1)?
        .detach()
        .maximum(-(f32::MAX as f64))?;
    let exps = filled.broadcast_sub(&row_max)?.exp()?;
    let sums = exps.sum_keepdim(D::Minus1)?;
    // Rows that attend to nothing have a zero sum; divide them by one.
    let empty_rows = sums.eq(0f64)?.to_dtype(sums.dtype())?.detach();
    let safe_sums = (sums + empty_rows)?;
    Ok(exps.broadcast_div(&safe_sums)?)
}

/// Whether a dtype is a floating-point dtype attention can run in.
pub(crate) fn is_float(dtype: DType) -> bool {
    matches!(dtype, DType::F16 | DType::BF16 | DType::F32 | DType::F64)
}
