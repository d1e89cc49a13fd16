//! Softmax over the last axis, and weighted cross-entropy from logits
//! (log-softmax, the target's log-probability and the weighted mean in one
//! pass; its backward is `(softmax − onehot) · weight / total`).
//!
//! Inference: [`softmax_rows_in_place`], [`cross_entropy_value`].
//! Training: candle ops with a backward, [`softmax_last_dim`] and
//! [`cross_entropy`], whose forwards run the same row loops.

use candle_core::{
    bail, CpuStorage, CustomOp1, CustomOp3, DType, Layout, Result, Shape, Tensor, D,
};
use rayon::prelude::*;

use crate::simd::{self, SimdPath};
use crate::storage::{cpu_slice, fusable, tensor, with_values};
use crate::threads::{parallel, BLOCK_ROWS};

/// Replaces every row of `width` values by its softmax (inference): the
/// row maximum subtracted first, so large logits do not overflow; a row of
/// `-inf`s becomes zeros, never NaN.
pub fn softmax_rows_in_place(values: &mut [f32], width: usize) {
    assert!(
        width > 0 && values.len().is_multiple_of(width),
        "softmax: {} values in rows of {width}",
        values.len()
    );
    let path = SimdPath::detect();
    let run = |block: &mut [f32]| {
        for row in block.chunks_exact_mut(width) {
            simd::softmax_in_place(path, row);
        }
    };
    if parallel(values.len()) {
        values.par_chunks_mut(BLOCK_ROWS * width).for_each(run);
    } else {
        run(values);
    }
}

/// Softmax over the last axis with a backward (training); the forward is
/// [`softmax_rows_in_place`]'s.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let width = x.dim(D::Minus1)?;
    if !fusable(&[x]) || width == 0 {
        return softmax_reference(x);
    }
    x.contiguous()?.apply_op1(Softmax { width })
}

/// Softmax from candle ops (the maximum detached).
pub fn softmax_reference(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let exps = x.broadcast_sub(&max)?.exp()?;
    exps.broadcast_div(&exps.sum_keepdim(D::Minus1)?)
}

struct Softmax {
    width: usize,
}

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "attnflow-softmax"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let mut y = cpu_slice(storage, layout)?.to_vec();
        softmax_rows_in_place(&mut y, self.width);
        Ok((CpuStorage::F32(y), layout.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        // dx = y ∘ (dy − Σ dy·y), row by row.
        let path = SimdPath::detect();
        let width = self.width;
        let dx = with_values(res, |y| {
            with_values(grad_res, |dy| {
                let mut dx = dy.to_vec();
                let run = |(dx, y): (&mut [f32], &[f32])| {
                    for (dx, y) in dx.chunks_exact_mut(width).zip(y.chunks_exact(width)) {
                        let delta = simd::dot(path, dx, y);
                        simd::softmax_grad(path, y, dx, delta);
                    }
                };
                if parallel(dx.len()) {
                    dx.par_chunks_mut(BLOCK_ROWS * width)
                        .zip(y.par_chunks(BLOCK_ROWS * width))
                        .for_each(run);
                } else {
                    run((&mut dx, y));
                }
                dx
            })
        })??;
        Ok(Some(tensor(dx, res.shape().clone())?))
    }
}

/// The weighted mean negative log-likelihood `−Σ_t w_t · ln
/// softmax(logits_t)[target_t] / total` over rows of `vocab` logits
/// (inference; the value [`cross_entropy`] computes). A target outside
/// the vocabulary is an error naming it.
pub fn cross_entropy_value(
    logits: &[f32],
    vocab: usize,
    targets: &[u32],
    weights: &[f32],
    total: f64,
) -> Result<f32> {
    let rows = logits.len() / vocab.max(1);
    if vocab == 0 || rows * vocab != logits.len() || targets.len() != rows || weights.len() != rows
    {
        bail!(
            "cross_entropy: {} logits in rows of {vocab}, {} targets, {} weights",
            logits.len(),
            targets.len(),
            weights.len()
        );
    }
    let loss = CrossEntropy { vocab, total };
    let path = SimdPath::detect();
    let mut exps = vec![0f32; vocab];
    let mut sum = 0f64;
    for ((row, &target), &weight) in logits.chunks_exact(vocab).zip(targets).zip(weights) {
        let target = loss.target(target)?;
        let (max, row_total) = loss.row(path, row, &mut exps);
        let log_probability = row[target] - max - row_total.ln();
        sum += f64::from(weight) * f64::from(log_probability);
    }
    Ok((-sum / total) as f32)
}

/// `-Σ_t w_t · ln softmax(logits_t)[target_t] / total` with logits
/// `(.., vocab)` and targets (`u32`) and weights (f32) shaped like the
/// logits without their last axis, as one op with a backward (training).
/// Returns a scalar.
pub fn cross_entropy(
    logits: &Tensor,
    targets: &Tensor,
    weights: &Tensor,
    total: f64,
) -> Result<Tensor> {
    let vocab = logits.dim(D::Minus1)?;
    let rows = logits.elem_count() / vocab.max(1);
    if targets.elem_count() != rows || weights.elem_count() != rows {
        bail!(
            "cross_entropy: logits {:?} but targets {:?} and weights {:?}",
            logits.dims(),
            targets.dims(),
            weights.dims()
        );
    }
    if !fusable(&[logits, weights]) || targets.dtype() != DType::U32 || vocab == 0 {
        return cross_entropy_reference(logits, targets, weights, total);
    }
    logits.contiguous()?.apply_op3(
        &targets.contiguous()?,
        &weights.contiguous()?,
        CrossEntropy { vocab, total },
    )
}

/// The same loss from candle ops: a stable log-softmax, a gather, a
/// weighted sum.
pub fn cross_entropy_reference(
    logits: &Tensor,
    targets: &Tensor,
    weights: &Tensor,
    total: f64,
) -> Result<Tensor> {
    let max = logits.max_keepdim(D::Minus1)?.detach();
    let shifted = logits.broadcast_sub(&max)?;
    let log_sum = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    let log_probabilities = shifted.broadcast_sub(&log_sum)?;
    let picked = log_probabilities
        .gather(&targets.unsqueeze(D::Minus1)?.contiguous()?, D::Minus1)?
        .squeeze(D::Minus1)?;
    picked.mul(weights)?.sum_all()?.neg()? / total
}

#[derive(Clone, Copy, Debug)]
struct CrossEntropy {
    vocab: usize,
    total: f64,
}

impl CrossEntropy {
    /// Each row's `(max, Σ exp(x − max))`, with the row's exponentials
    /// left in `exps`.
    fn row(&self, path: SimdPath, logits: &[f32], exps: &mut [f32]) -> (f32, f32) {
        let max = simd::row_max(path, logits);
        exps.copy_from_slice(logits);
        let sum = simd::exp_shift_sum(path, exps, max);
        (max, sum)
    }

    fn target(&self, target: u32) -> Result<usize> {
        let target = target as usize;
        if target >= self.vocab {
            bail!(
                "cross_entropy: target {target} outside the vocabulary of {}",
                self.vocab
            );
        }
        Ok(target)
    }
}

impl CustomOp3 for CrossEntropy {
    fn name(&self) -> &'static str {
        "attnflow-cross-entropy"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let logits = cpu_slice(s1, l1)?;
        let targets = match l2.contiguous_offsets() {
            Some((start, end)) => &s2.as_slice::<u32>()?[start..end],
            None => bail!("cross_entropy: targets are not contiguous"),
        };
        let weights = cpu_slice(s3, l3)?;
        let loss = cross_entropy_value(logits, self.vocab, targets, weights, self.total)?;
        Ok((CpuStorage::F32(vec![loss]), Shape::from(())))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        targets: &Tensor,
        weights: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let path = SimdPath::detect();
        let upstream = grad.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let upstream = f64::from(upstream.first().copied().unwrap_or(0.0));
        let targets = targets.flatten_all()?.to_vec1::<u32>()?;
        let dlogits = with_values(logits, |logits| {
            with_values(weights, |weights| -> Result<Vec<f32>> {
                let mut dlogits = vec![0f32; logits.len()];
                for (((row, out), &target), &weight) in logits
                    .chunks_exact(self.vocab)
                    .zip(dlogits.chunks_exact_mut(self.vocab))
                    .zip(&targets)
                    .zip(weights)
                {
                    let target = self.target(target)?;
                    let (_, total) = self.row(path, row, out);
                    let scale = (upstream * f64::from(weight) / self.total) as f32;
                    simd::scale(path, out, scale / total);
                    out[target] -= scale;
                }
                Ok(dlogits)
            })
        })???;
        Ok((Some(tensor(dlogits, logits.shape().clone())?), None, None))
    }
}
