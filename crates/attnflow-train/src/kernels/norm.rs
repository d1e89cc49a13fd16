//! Layer norm over the last axis as one op: forward one pass per row,
//! backward one pass per row (mean and 1/σ recomputed, cheaper than keeping
//! them) with the gain and shift gradients summed by fixed row blocks.

use std::mem::MaybeUninit;

use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

use super::storage::{cpu_slice, fusable, tensor, with_values};
use super::{parallel, simd, BLOCK_ROWS};

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

impl LayerNorm {
    fn forward(&self, x: &[f32], gain: &[f32], shift: Option<&[f32]>) -> Vec<f32> {
        let eps = self.eps as f32;
        simd::filled(x.len(), |y| {
            if parallel(x.len()) {
                let chunk = BLOCK_ROWS * self.width;
                y.par_chunks_mut(chunk)
                    .zip(x.par_chunks(chunk))
                    .for_each(|(y, x)| simd::layer_norm_forward(x, gain, shift, eps, y));
            } else {
                simd::layer_norm_forward(x, gain, shift, eps, y);
            }
        })
    }

    /// `(dx, dgain, dshift)`.
    fn backward(&self, x: &[f32], gain: &[f32], dy: &[f32]) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let width = self.width;
        let eps = self.eps as f32;
        let chunk = BLOCK_ROWS * width;
        let blocks = x.len().div_ceil(chunk).max(1);
        // Per block of rows: Σ dy·x̂ then Σ dy, summed in block order below.
        let mut partials = vec![0f32; blocks * 2 * width];
        let block = |x: &[f32], dy: &[f32], dx: &mut [MaybeUninit<f32>], partial: &mut [f32]| {
            let (dgain, dshift) = partial.split_at_mut(width);
            simd::layer_norm_backward(x, gain, dy, eps, dx, dgain, dshift);
        };
        let dx = simd::filled(x.len(), |dx| {
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
        });
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
