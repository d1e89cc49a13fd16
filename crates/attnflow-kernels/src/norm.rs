//! Layer norm and RMS norm over the last axis: one pass per row forward,
//! one pass per row back (the row's moments recomputed, cheaper than
//! keeping them), gain and shift gradients summed by fixed row blocks.
//!
//! Inference: [`layer_norm_into`], [`add_layer_norm_in_place`] (BERT's
//! post-norm `LN(x + residual)`), [`rms_norm_into`]. Training: candle ops
//! with a backward, [`layer_norm`] and [`rms_norm`], whose forwards run the
//! same row loops, so both give the same bits.

use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

use crate::activation::filled;
use crate::simd::{dispatch, each_step, load_at, load_from, store_at, Lanes, SimdPath};
use crate::storage::{cpu_slice, fusable, tensor, with_values};
use crate::threads::{parallel, BLOCK_ROWS};

/// Which normalisation.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    /// `(x − mean)/√(var + eps)·gain + shift` (biased variance, PyTorch's
    /// `nn.LayerNorm`).
    Layer,
    /// `x/√(mean(x²) + eps)·gain` (Llama's `RMSNorm`).
    Rms,
}

/// `(mean, 1/σ)` of the `width` values at `row` for `kind` (mean 0 for
/// RMS norm).
#[inline(always)]
unsafe fn moments<V: Lanes>(kind: Kind, row: *const f32, width: usize, eps: f32) -> (f32, f32) {
    let mean = match kind {
        Kind::Layer => {
            let mut sum = V::splat(0.0);
            each_step!(width, |offset, count| {
                sum = sum.add(load_from::<V>(row, offset, count, 0.0));
            });
            sum.sum() / width as f32
        }
        Kind::Rms => 0.0,
    };
    let centre = V::splat(mean);
    let mut squares = V::splat(0.0);
    each_step!(width, |offset, count| {
        // The short step's fill is the mean: it adds (mean − mean)² = 0.
        let centred = load_from::<V>(row, offset, count, mean).sub(centre);
        squares = centred.mul_add(centred, squares);
    });
    let variance = squares.sum() / width as f32;
    (mean, 1.0 / (variance + eps).sqrt())
}

/// Normalises `rows` rows of `gain.len()` values from `x` (plus
/// `residual`) into `y`. Reads and writes go through pointers, so `y` may
/// be `x`: each row is read whole (for its moments) before it is written.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn forward_body<V: Lanes>(
    kind: Kind,
    x: *const f32,
    residual: Option<*const f32>,
    rows: usize,
    gain: &[f32],
    shift: Option<&[f32]>,
    eps: f32,
    y: *mut f32,
) {
    let width = gain.len();
    for index in 0..rows {
        let mut row = x.add(index * width);
        let out = y.add(index * width);
        if let Some(residual) = residual {
            // LN(x + residual): the sum is formed in the output row first.
            let other = residual.add(index * width);
            each_step!(width, |offset, count| {
                let a = load_from::<V>(row, offset, count, 0.0);
                let b = load_from::<V>(other, offset, count, 0.0);
                store_at(a.add(b), out, offset, count);
            });
            row = out;
        }
        let (mean, inverse) = moments::<V>(kind, row, width, eps);
        let (centre, inverse) = (V::splat(mean), V::splat(inverse));
        each_step!(width, |offset, count| {
            let normed = load_from::<V>(row, offset, count, 0.0)
                .sub(centre)
                .mul(inverse);
            let g = load_at::<V>(gain, offset, count, 0.0);
            let value = match shift {
                Some(shift) => normed.mul_add(g, load_at::<V>(shift, offset, count, 0.0)),
                None => normed.mul(g),
            };
            store_at(value, out, offset, count);
        });
    }
}

dispatch!(
    /// Normalises `rows` rows of `gain.len()` values of `x` (plus
    /// `residual`, when given) into `y`.
    ///
    /// # Safety
    /// `x`, `residual` readable and `y` writable for `rows · gain.len()`
    /// values; `y` may be `x`, not `residual`.
    unsafe fn normalise(
        kind: Kind,
        x: *const f32,
        residual: Option<*const f32>,
        rows: usize,
        gain: &[f32],
        shift: Option<&[f32]>,
        eps: f32,
        y: *mut f32
    ) => forward_body
);

/// The backward over whole rows: writes `dx` and adds the rows' `Σ dy·x̂`
/// and `Σ dy` into `dgain` and `dshift` (`dshift` untouched for RMS norm).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn backward_body<V: Lanes>(
    kind: Kind,
    x: &[f32],
    gain: &[f32],
    dy: &[f32],
    eps: f32,
    dx: *mut f32,
    dgain: &mut [f32],
    dshift: &mut [f32],
) {
    let width = gain.len();
    let (dgain_target, dshift_target) = (dgain.as_mut_ptr(), dshift.as_mut_ptr());
    for (index, (row, upstream)) in x
        .chunks_exact(width)
        .zip(dy.chunks_exact(width))
        .enumerate()
    {
        let (mean, inverse) = moments::<V>(kind, row.as_ptr(), width, eps);
        let (centre, inverse_lanes) = (V::splat(mean), V::splat(inverse));
        // Σ dy·g (layer norm only) and Σ dy·g·x̂ in one pass.
        let (mut a, mut c) = (V::splat(0.0), V::splat(0.0));
        each_step!(width, |offset, count| {
            let normed = load_at::<V>(row, offset, count, mean)
                .sub(centre)
                .mul(inverse_lanes);
            let scaled = load_at::<V>(upstream, offset, count, 0.0)
                .mul(load_at::<V>(gain, offset, count, 0.0));
            a = a.add(scaled);
            c = scaled.mul_add(normed, c);
        });
        let a = match kind {
            Kind::Layer => V::splat(a.sum() / width as f32),
            Kind::Rms => V::splat(0.0),
        };
        let c = V::splat(c.sum() / width as f32);
        let out = dx.add(index * width);
        each_step!(width, |offset, count| {
            let normed = load_at::<V>(row, offset, count, mean)
                .sub(centre)
                .mul(inverse_lanes);
            let d = load_at::<V>(upstream, offset, count, 0.0);
            let scaled = d.mul(load_at::<V>(gain, offset, count, 0.0));
            let value = inverse_lanes.mul(normed.neg_mul_add(c, scaled.sub(a)));
            store_at(value, out, offset, count);
            let g = load_at::<V>(dgain, offset, count, 0.0);
            store_at(d.mul_add(normed, g), dgain_target, offset, count);
            if kind == Kind::Layer {
                let s = load_at::<V>(dshift, offset, count, 0.0);
                store_at(s.add(d), dshift_target, offset, count);
            }
        });
    }
}

dispatch!(
    /// The backward over rows of `gain.len()` values.
    ///
    /// # Safety
    /// `dx` writable for `x.len()` values, aliasing nothing else.
    unsafe fn normalise_backward(
        kind: Kind,
        x: &[f32],
        gain: &[f32],
        dy: &[f32],
        eps: f32,
        dx: *mut f32,
        dgain: &mut [f32],
        dshift: &mut [f32]
    ) => backward_body
);

/// A raw pointer shared by tasks that write disjoint rows.
#[derive(Clone, Copy)]
struct Rows(*mut f32);
// SAFETY: each task writes only its own block of rows.
unsafe impl Send for Rows {}
unsafe impl Sync for Rows {}

impl Rows {
    /// The pointer (a method, so closures capture the `Sync` wrapper, not
    /// its field).
    fn pointer(self) -> *mut f32 {
        self.0
    }
}

/// The forward over `len` values in rows of `gain.len()`, blocks of
/// [`BLOCK_ROWS`] rows in parallel when large.
///
/// # Safety
/// `x`, `residual` readable and `y` writable for `len` values; `y` may be
/// `x`, not `residual`.
#[allow(clippy::too_many_arguments)]
unsafe fn forward_rows(
    kind: Kind,
    x: *const f32,
    residual: Option<*const f32>,
    len: usize,
    gain: &[f32],
    shift: Option<&[f32]>,
    eps: f32,
    y: *mut f32,
) {
    let path = SimdPath::detect();
    let width = gain.len();
    let chunk = BLOCK_ROWS * width;
    let (source, other, target) = (
        Rows(x.cast_mut()),
        residual.map(|r| Rows(r.cast_mut())),
        Rows(y),
    );
    let block = |index: usize| {
        let start = index * chunk;
        let rows = (chunk.min(len - start)) / width;
        // SAFETY: rows of this block only, inside the `len` values the
        // caller vouches for.
        unsafe {
            normalise(
                path,
                kind,
                source.pointer().add(start),
                other.map(|o| o.pointer().add(start).cast_const()),
                rows,
                gain,
                shift,
                eps,
                target.pointer().add(start),
            )
        }
    };
    let blocks = len.div_ceil(chunk.max(1));
    if parallel(len) {
        (0..blocks).into_par_iter().for_each(block);
    } else {
        (0..blocks).for_each(block);
    }
}

fn check_sizes(what: &str, x: usize, width: usize, out: usize) {
    assert!(
        width > 0 && x.is_multiple_of(width) && out == x,
        "{what}: {x} values in rows of {width} into {out}"
    );
}

/// `out = (x − mean)/√(var + eps)·gain + shift` per row of `gain.len()`
/// values (inference).
pub fn layer_norm_into(out: &mut [f32], x: &[f32], gain: &[f32], shift: Option<&[f32]>, eps: f32) {
    check_sizes("layer_norm", x.len(), gain.len(), out.len());
    assert!(
        shift.is_none_or(|s| s.len() == gain.len()),
        "layer_norm: shift width"
    );
    // SAFETY: `out` has `x.len()` values and is borrowed mutably.
    unsafe {
        forward_rows(
            Kind::Layer,
            x.as_ptr(),
            None,
            x.len(),
            gain,
            shift,
            eps,
            out.as_mut_ptr(),
        )
    }
}

/// `x ← LN(x + residual)` per row (inference): BERT's post-norm residual
/// block in one pass.
pub fn add_layer_norm_in_place(
    x: &mut [f32],
    residual: &[f32],
    gain: &[f32],
    shift: Option<&[f32]>,
    eps: f32,
) {
    check_sizes("add_layer_norm", x.len(), gain.len(), residual.len());
    assert!(
        shift.is_none_or(|s| s.len() == gain.len()),
        "add_layer_norm: shift width"
    );
    let target = x.as_mut_ptr();
    // SAFETY: in place through one pointer; `residual` is a separate
    // borrow.
    unsafe {
        forward_rows(
            Kind::Layer,
            target,
            Some(residual.as_ptr()),
            x.len(),
            gain,
            shift,
            eps,
            target,
        )
    }
}

/// `out = x/√(mean(x²) + eps)·gain` per row of `gain.len()` values
/// (inference).
pub fn rms_norm_into(out: &mut [f32], x: &[f32], gain: &[f32], eps: f32) {
    check_sizes("rms_norm", x.len(), gain.len(), out.len());
    // SAFETY: `out` has `x.len()` values and is borrowed mutably.
    unsafe {
        forward_rows(
            Kind::Rms,
            x.as_ptr(),
            None,
            x.len(),
            gain,
            None,
            eps,
            out.as_mut_ptr(),
        )
    }
}

/// `(x − mean)/√(var + eps)·gain + shift` over the last axis (biased
/// variance, as PyTorch's `nn.LayerNorm`), with a backward (training).
pub fn layer_norm(x: &Tensor, gain: &Tensor, shift: Option<&Tensor>, eps: f64) -> Result<Tensor> {
    normalisation(Kind::Layer, x, gain, shift, eps)
}

/// `x/√(mean(x²) + eps)·gain` over the last axis (Llama's `RMSNorm`),
/// with a backward (training).
pub fn rms_norm(x: &Tensor, gain: &Tensor, eps: f64) -> Result<Tensor> {
    normalisation(Kind::Rms, x, gain, None, eps)
}

fn normalisation(
    kind: Kind,
    x: &Tensor,
    gain: &Tensor,
    shift: Option<&Tensor>,
    eps: f64,
) -> Result<Tensor> {
    let width = x.dim(D::Minus1)?;
    if gain.elem_count() != width || shift.is_some_and(|shift| shift.elem_count() != width) {
        bail!(
            "norm: gain {:?} / shift {:?} do not fit input {:?}",
            gain.dims(),
            shift.map(Tensor::dims),
            x.dims()
        );
    }
    let mut tensors = vec![x, gain];
    tensors.extend(shift);
    if !fusable(&tensors) || width == 0 {
        return match kind {
            Kind::Layer => layer_norm_reference(x, gain, shift, eps),
            Kind::Rms => rms_norm_reference(x, gain, eps),
        };
    }
    let op = Norm { kind, width, eps };
    let x = x.contiguous()?;
    match shift {
        Some(shift) => x.apply_op3(&gain.contiguous()?, &shift.contiguous()?, op),
        None => x.apply_op2(&gain.contiguous()?, op),
    }
}

/// Layer norm from candle ops (mean and variance written out).
pub fn layer_norm_reference(
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

/// RMS norm from candle ops.
pub fn rms_norm_reference(x: &Tensor, gain: &Tensor, eps: f64) -> Result<Tensor> {
    let mean_square = x.sqr()?.mean_keepdim(D::Minus1)?;
    x.broadcast_div(&(mean_square + eps)?.sqrt()?)?
        .broadcast_mul(gain)
}

#[derive(Clone, Copy, Debug)]
struct Norm {
    kind: Kind,
    width: usize,
    eps: f64,
}

impl Norm {
    fn forward(&self, x: &[f32], gain: &[f32], shift: Option<&[f32]>) -> Vec<f32> {
        filled(x.len(), |y| {
            // SAFETY: `y` has room for `x.len()` values; every one is
            // written.
            unsafe {
                forward_rows(
                    self.kind,
                    x.as_ptr(),
                    None,
                    x.len(),
                    gain,
                    shift,
                    self.eps as f32,
                    y.as_mut_ptr().cast(),
                )
            }
        })
    }

    /// `(dx, dgain, dshift)`.
    fn backward(&self, x: &[f32], gain: &[f32], dy: &[f32]) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let path = SimdPath::detect();
        let width = self.width;
        let eps = self.eps as f32;
        let chunk = BLOCK_ROWS * width;
        let blocks = x.len().div_ceil(chunk).max(1);
        // Per block of rows: Σ dy·x̂ then Σ dy, summed in block order below.
        let mut partials = vec![0f32; blocks * 2 * width];
        let kind = self.kind;
        let dx = filled(x.len(), |dx| {
            let target = Rows(dx.as_mut_ptr().cast());
            let block = |(index, partial): (usize, &mut [f32])| {
                let start = index * chunk;
                let end = (start + chunk).min(x.len());
                let (dgain, dshift) = partial.split_at_mut(width);
                // SAFETY: rows start..end of dx, written by this block only.
                unsafe {
                    normalise_backward(
                        path,
                        kind,
                        &x[start..end],
                        gain,
                        &dy[start..end],
                        eps,
                        target.pointer().add(start),
                        dgain,
                        dshift,
                    )
                }
            };
            if parallel(x.len()) {
                partials
                    .par_chunks_mut(2 * width)
                    .enumerate()
                    .for_each(block);
            } else {
                partials.chunks_mut(2 * width).enumerate().for_each(block);
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

    fn name(&self) -> &'static str {
        match self.kind {
            Kind::Layer => "attnflow-layer-norm",
            Kind::Rms => "attnflow-rms-norm",
        }
    }
}

impl CustomOp2 for Norm {
    fn name(&self) -> &'static str {
        Norm::name(self)
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

impl CustomOp3 for Norm {
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

/// The row loops on a chosen path, for the tests: `(y, dx, dgain, dshift)`.
#[cfg(test)]
pub(crate) fn rows_on_path(
    path: SimdPath,
    rms: bool,
    x: &[f32],
    gain: &[f32],
    shift: Option<&[f32]>,
    dy: &[f32],
    eps: f32,
) -> [Vec<f32>; 4] {
    let kind = if rms { Kind::Rms } else { Kind::Layer };
    let width = gain.len();
    let mut y = vec![0f32; x.len()];
    let mut dx = vec![0f32; x.len()];
    let (mut dgain, mut dshift) = (vec![0f32; width], vec![0f32; width]);
    // SAFETY: the outputs have `x.len()` values.
    unsafe {
        normalise(
            path,
            kind,
            x.as_ptr(),
            None,
            x.len() / width,
            gain,
            shift,
            eps,
            y.as_mut_ptr(),
        );
        normalise_backward(
            path,
            kind,
            x,
            gain,
            dy,
            eps,
            dx.as_mut_ptr(),
            &mut dgain,
            &mut dshift,
        );
    }
    [y, dx, dgain, dshift]
}
