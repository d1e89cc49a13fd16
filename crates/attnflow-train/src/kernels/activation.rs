//! GELU (tanh approximation) as one op.

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::storage::{cpu_slice, fusable, tensor, with_values};
use super::{parallel, simd, BLOCK_ROWS};

/// Elements per parallel task.
const CHUNK: usize = BLOCK_ROWS * 256;

/// `x · ½(1 + tanh(√(2/π)(x + 0.044715x³)))`, PyTorch's
/// `gelu(approximate="tanh")`, element-wise, with a backward.
pub fn gelu_tanh(x: &Tensor) -> Result<Tensor> {
    if !fusable(&[x]) {
        return reference(x);
    }
    x.contiguous()?.apply_op1(GeluTanh)
}

/// The same function from candle ops: 0.5(1 + tanh z) = σ(2z).
pub(crate) fn reference(x: &Tensor) -> Result<Tensor> {
    let inner = x.mul(&x.sqr()?.affine(0.044715, 1.0)?)?;
    let gate = ((inner * (-2.0 * (2.0 / std::f64::consts::PI).sqrt()))?.exp()? + 1.0)?.recip()?;
    x.mul(&gate)
}

struct GeluTanh;

/// `f` over `x` in chunks, in parallel when large.
pub(super) fn map(x: &[f32], f: impl Fn(&[f32], &mut [MaybeUninit<f32>]) + Sync) -> Vec<f32> {
    simd::filled(x.len(), |y| {
        if parallel(x.len()) {
            y.par_chunks_mut(CHUNK)
                .zip(x.par_chunks(CHUNK))
                .for_each(|(y, x)| f(x, y));
        } else {
            f(x, y);
        }
    })
}

/// `f` over `x` and `dy` together in chunks, in parallel when large.
pub(super) fn zip_map(
    x: &[f32],
    dy: &[f32],
    f: impl Fn(&[f32], &[f32], &mut [MaybeUninit<f32>]) + Sync,
) -> Vec<f32> {
    simd::filled(x.len(), |dx| {
        if parallel(x.len()) {
            dx.par_chunks_mut(CHUNK)
                .zip(x.par_chunks(CHUNK).zip(dy.par_chunks(CHUNK)))
                .for_each(|(dx, (x, dy))| f(x, dy, dx));
        } else {
            f(x, dy, dx);
        }
    })
}

impl CustomOp1 for GeluTanh {
    fn name(&self) -> &'static str {
        "attnflow-gelu-tanh"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = cpu_slice(storage, layout)?;
        let y = map(x, simd::gelu_forward);
        Ok((CpuStorage::F32(y), layout.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let dx = with_values(arg, |x| {
            with_values(grad_res, |dy| zip_map(x, dy, simd::gelu_backward))
        })??;
        Ok(Some(tensor(dx, arg.shape().clone())?))
    }
}
