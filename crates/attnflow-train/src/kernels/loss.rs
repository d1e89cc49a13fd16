//! Weighted cross-entropy from logits as one op: log-softmax, the target's
//! log-probability and the weighted mean in one pass; the backward is
//! `(softmax - onehot) · weight / total`.

use candle_core::{bail, CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor, D};

use super::storage::{cpu_slice, fusable, tensor, with_values};

/// `-Σ_t w_t · ln softmax(logits_t)[target_t] / total` with logits
/// `(.., vocab)` and targets (`u32`) and weights (f32) shaped like the
/// logits without their last axis. Returns a scalar.
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
        return reference(logits, targets, weights, total);
    }
    logits.contiguous()?.apply_op3(
        &targets.contiguous()?,
        &weights.contiguous()?,
        CrossEntropy { vocab, total },
    )
}

/// The same loss from candle ops: a stable log-softmax, a gather, a
/// weighted sum.
pub(crate) fn reference(
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
    /// Each row's `(max, ln Σ exp(x - max))`, with the row's exponentials
    /// left in `exps`.
    fn row(&self, logits: &[f32], exps: &mut [f32]) -> (f32, f32) {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        exps.copy_from_slice(logits);
        let sum = attnflow_core::exp_shift_sum(exps, max);
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
        let mut exps = vec![0f32; self.vocab];
        let mut sum = 0f64;
        for ((row, &target), &weight) in logits.chunks_exact(self.vocab).zip(targets).zip(weights) {
            let target = self.target(target)?;
            let (max, total) = self.row(row, &mut exps);
            let log_probability = row[target] - max - total.ln();
            sum += f64::from(weight) * f64::from(log_probability);
        }
        let loss = (-sum / self.total) as f32;
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
                    let (_, total) = self.row(row, out);
                    let scale = (upstream * f64::from(weight) / self.total) as f32;
                    let per_sum = scale / total;
                    for value in out.iter_mut() {
                        *value *= per_sum;
                    }
                    out[target] -= scale;
                }
                Ok(dlogits)
            })
        })???;
        Ok((Some(tensor(dlogits, logits.shape().clone())?), None, None))
    }
}
