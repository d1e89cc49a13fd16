//! Layer norm over the last axis as one op: forward one pass per row,
//! backward one pass per row (mean and 1/σ recomputed, cheaper than keeping
//! them) with the gain and shift gradients summed by fixed row blocks.

use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

use super::storage::{cpu_slice, fusable, tensor, with_values};
use super::{parallel, BLOCK_ROWS};

/// `(x - mean) / √(var + eps) · gain + shift` over the last axis (biased
/// variance, as PyTorch's `nn.LayerNorm`), with a backward.
pub fn layer_norm(x: &Tensor, gain: &Tensor, shift: Option<&Tensor>, eps: f64) -> Result<Tensor> {
    let width = x.dim(D::Minus1)?;
    if gain.elem_count() != width || shift.is_some_and(|shift| shift.elem_count() != width) {
        bail!(
            "layer_norm: gain {:?} / shift {:?} do not fit input {:?}",
            gain.dims(),
            shift.map(Tensor::dims),
            x.dims()
        );
    }
    let mut tensors = vec![x, gain];
    tensors.extend(shift);
    if !fusable(&tensors) {
        return reference(x, gain, shift, eps);
    }
    let op = LayerNorm { width, eps };
    let x = x.contiguous()?;
    match shift {
        Some(shift) => x.apply_op3(&gain.contiguous()?, &shift.contiguous()?, op),
        None => x.apply_op2(&gain.contiguous()?, op),
    }
}

/// The same function from candle ops (mean and variance written out).
pub(crate) fn reference(
    x: &Tensor,
    gain: &Tensor,
    shift: Option<&Tensor>,
    eps: f64,
) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let centred = x.broadcast_sub(&mean)?;
    let variance = centred.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = centred.broadcast_div(&(variance + eps)?.sqrt()?)?;
    let y = normed.broadcast_mul(gain)?;
    match shift {
        Some(shift) => y.broadcast_add(shift),
        None => Ok(y),
    }
}

#[derive(Clone, Copy, Debug)]
struct LayerNorm {
    width: usize,
    eps: f64,
}

/// `(mean, 1/σ)` of one row.
#[inline]
fn moments(row: &[f32], eps: f64) -> (f32, f32) {
    let width = row.len() as f32;
    let mean = row.iter().sum::<f32>() / width;
    let variance = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / width;
    (mean, 1.0 / (variance + eps as f32).sqrt())
}

impl LayerNorm {
    fn forward(&self, x: &[f32], gain: &[f32], shift: Option<&[f32]>) -> Vec<f32> {
        let width = self.width;
        let mut y = vec![0f32; x.len()];
        let rows = |x: &[f32], y: &mut [f32]| {
            for (x, y) in x.chunks_exact(width).zip(y.chunks_exact_mut(width)) {
                let (mean, inverse) = moments(x, self.eps);
                match shift {
                    Some(shift) => {
                        for (((y, x), g), b) in y.iter_mut().zip(x).zip(gain).zip(shift) {
                            *y = (x - mean) * inverse * g + b;
                        }
                    }
                    None => {
                        for ((y, x), g) in y.iter_mut().zip(x).zip(gain) {
                            *y = (x - mean) * inverse * g;
                        }
                    }
                }
            }
        };
        if parallel(x.len()) {
            let chunk = BLOCK_ROWS * width;
            y.par_chunks_mut(chunk)
                .zip(x.par_chunks(chunk))
                .for_each(|(y, x)| rows(x, y));
        } else {
            rows(x, &mut y);
        }
        y
    }

    /// `(dx, dgain, dshift)`.
    fn backward(&self, x: &[f32], gain: &[f32], dy: &[f32]) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let width = self.width;
        let eps = self.eps;
        let mut dx = vec![0f32; x.len()];
        let blocks = x.len().div_ceil(BLOCK_ROWS * width).max(1);
        // Per block: Σ dy·x̂ then Σ dy over its rows.
        let mut partials = vec![0f32; blocks * 2 * width];
        let block = |x: &[f32], dy: &[f32], dx: &mut [f32], partial: &mut [f32]| {
            let (dgain, dshift) = partial.split_at_mut(width);
            let mut scaled = vec![0f32; width];
            for ((x, dy), dx) in x
                .chunks_exact(width)
                .zip(dy.chunks_exact(width))
                .zip(dx.chunks_exact_mut(width))
            {
                let (mean, inverse) = moments(x, eps);
                let mut sum_scaled = 0f32;
                let mut sum_scaled_normed = 0f32;
                for j in 0..width {
                    let normed = (x[j] - mean) * inverse;
                    let g = dy[j] * gain[j];
                    scaled[j] = g;
                    sum_scaled += g;
                    sum_scaled_normed += g * normed;
                    dgain[j] += dy[j] * normed;
                    dshift[j] += dy[j];
                }
                let a = sum_scaled / width as f32;
                let c = sum_scaled_normed / width as f32;
                for j in 0..width {
                    let normed = (x[j] - mean) * inverse;
                    dx[j] = inverse * (scaled[j] - a - normed * c);
                }
            }
        };
        let chunk = BLOCK_ROWS * width;
        if parallel(x.len()) {
            dx.par_chunks_mut(chunk)
                .zip(x.par_chunks(chunk).zip(dy.par_chunks(chunk)))
                .zip(partials.par_chunks_mut(2 * width))
                .for_each(|((dx, (x, dy)), partial)| block(x, dy, dx, partial));
        } else {
            for (((dx, x), dy), partial) in dx
                .chunks_mut(chunk)
                .zip(x.chunks(chunk))
                .zip(dy.chunks(chunk))
                .zip(partials.chunks_mut(2 * width))
            {
                block(x, dy, dx, partial);
            }
        }
        let mut dgain = vec![0f32; width];
        let mut dshift = vec![0f32; width];
        for partial in partials.chunks_exact(2 * width) {
            for j in 0..width {
                dgain[j] += partial[j];
                dshift[j] += partial[width + j];
            }
        }
        (dx, dgain, dshift)
    }

    fn gradients(
        &self,
        x: &Tensor,
        gain: &Tensor,
        grad: &Tensor,
    ) -> Result<(Tensor, Tensor, Vec<f32>)> {
        let (dx, dgain, dshift) = with_values(x, |x| {
            with_values(gain, |gain| {
                with_values(grad, |dy| self.backward(x, gain, dy))
            })
        })???;
        Ok((
            tensor(dx, x.shape().clone())?,
            tensor(dgain, gain.shape().clone())?,
            dshift,
        ))
    }
}

impl CustomOp2 for LayerNorm {
    fn name(&self) -> &'static str {
        "attnflow-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let y = self.forward(cpu_slice(s1, l1)?, cpu_slice(s2, l2)?, None);
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gain: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dgain, _) = self.gradients(x, gain, grad)?;
        Ok((Some(dx), Some(dgain)))
    }
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "attnflow-layer-norm-shift"
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
        let y = self.forward(
            cpu_slice(s1, l1)?,
            cpu_slice(s2, l2)?,
            Some(cpu_slice(s3, l3)?),
        );
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gain: &Tensor,
        shift: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dgain, dshift) = self.gradients(x, gain, grad)?;
        Ok((
            Some(dx),
            Some(dgain),
            Some(tensor(dshift, shift.shape().clone())?),
        ))
    }
}
