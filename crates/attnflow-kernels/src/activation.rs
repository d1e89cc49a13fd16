//! Element-wise activations: GELU in its tanh and exact erf forms, SiLU,
//! and SwiGLU (`silu(gate)·up`), vectorised through the one SIMD layer.
//!
//! Inference: [`activate`] (in place), [`swiglu_into`]. Training: candle
//! ops with a backward, [`activation`] (and [`gelu_tanh`]) and [`swiglu`],
//! whose forwards run the same loops, so both give the same bits.

use std::mem::MaybeUninit;

use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::simd::{dispatch, each_step, load_at, load_from, math, store_at, Lanes, SimdPath};
use crate::storage::{cpu_slice, fusable, tensor, with_values};
use crate::threads::{parallel, BLOCK_ROWS};

/// One task of a two-input element-wise loop: output chunk and its inputs.
type Pair<'a, T> = (&'a mut [T], (&'a [f32], &'a [f32]));

/// Elements per parallel task of an element-wise loop.
const CHUNK: usize = BLOCK_ROWS * 256;

/// An element-wise function applied after a product or on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Activation {
    /// `x`.
    #[default]
    Identity,
    /// `x·½(1 + tanh(√(2/π)(x + 0.044715x³)))`: PyTorch's
    /// `gelu(approximate="tanh")`, GPT-2's `gelu_new`.
    GeluTanh,
    /// `x·½(1 + erf(x/√2))`: PyTorch's exact `gelu`, BERT's `gelu`.
    GeluErf,
    /// `x·σ(x)`: PyTorch's `silu`.
    Silu,
}

impl Activation {
    /// The function on sixteen lanes.
    #[inline(always)]
    pub(crate) unsafe fn apply<V: Lanes>(self, x: V) -> V {
        match self {
            Self::Identity => x,
            Self::GeluTanh => math::gelu_tanh(x),
            Self::GeluErf => math::gelu_erf(x),
            Self::Silu => math::silu(x),
        }
    }

    /// Its derivative on sixteen lanes.
    #[inline(always)]
    unsafe fn derivative<V: Lanes>(self, x: V) -> V {
        match self {
            Self::Identity => V::splat(1.0),
            Self::GeluTanh => math::gelu_tanh_derivative(x),
            Self::GeluErf => math::gelu_erf_derivative(x),
            Self::Silu => math::silu_derivative(x),
        }
    }
}

/// `target[i] = f(source[i])`; `target` may be `source` (in place).
#[inline(always)]
unsafe fn map_body<V: Lanes>(
    activation: Activation,
    source: *const f32,
    target: *mut f32,
    len: usize,
) {
    each_step!(len, |offset, count| {
        let x = load_from::<V>(source, offset, count, 0.0);
        store_at(activation.apply(x), target, offset, count);
    });
}

dispatch!(
    /// `f` over `len` values from `source` into `target` (which may be
    /// `source`).
    ///
    /// # Safety
    /// `source` must be readable and `target` writable for `len` values.
    unsafe fn map_raw(
        activation: Activation,
        source: *const f32,
        target: *mut f32,
        len: usize
    ) => map_body
);

#[inline(always)]
unsafe fn backward_body<V: Lanes>(activation: Activation, x: &[f32], dy: &[f32], dx: *mut f32) {
    each_step!(x.len(), |offset, count| {
        let value = load_at::<V>(x, offset, count, 0.0);
        let upstream = load_at::<V>(dy, offset, count, 0.0);
        store_at(
            upstream.mul(activation.derivative(value)),
            dx,
            offset,
            count,
        );
    });
}

dispatch!(
    /// `dx = dy · f'(x)`.
    ///
    /// # Safety
    /// `dx` must be writable for `x.len()` values; `dy` as long as `x`.
    unsafe fn backward_raw(activation: Activation, x: &[f32], dy: &[f32], dx: *mut f32) => backward_body
);

/// `f` over `values` in place (in parallel when large): the inference
/// variant, no graph, nothing kept.
pub fn activate(activation: Activation, values: &mut [f32]) {
    if activation == Activation::Identity {
        return;
    }
    let path = SimdPath::detect();
    let run = |chunk: &mut [f32]| {
        let pointer = chunk.as_mut_ptr();
        // SAFETY: in place over the chunk's own values.
        unsafe { map_raw(path, activation, pointer, pointer, chunk.len()) }
    };
    if parallel(values.len()) {
        values.par_chunks_mut(CHUNK).for_each(run);
    } else {
        run(values);
    }
}

#[inline(always)]
unsafe fn add_body<V: Lanes>(target: *mut f32, addend: &[f32]) {
    each_step!(addend.len(), |offset, count| {
        let sum = load_from::<V>(target, offset, count, 0.0)
            .add(load_at::<V>(addend, offset, count, 0.0));
        store_at(sum, target, offset, count);
    });
}

dispatch!(
    /// `target[i] += addend[i]`.
    ///
    /// # Safety
    /// `target` readable and writable for `addend.len()` values, not
    /// overlapping `addend`.
    unsafe fn add_raw(target: *mut f32, addend: &[f32]) => add_body
);

/// `values += addend`, element by element (inference): a residual
/// connection.
pub fn add_in_place(values: &mut [f32], addend: &[f32]) {
    assert_eq!(values.len(), addend.len(), "add_in_place: lengths");
    let path = SimdPath::detect();
    let run = |(values, addend): (&mut [f32], &[f32])| {
        // SAFETY: `values` is as long as `addend` and borrowed mutably.
        unsafe { add_raw(path, values.as_mut_ptr(), addend) }
    };
    if parallel(values.len()) {
        values
            .par_chunks_mut(CHUNK)
            .zip(addend.par_chunks(CHUNK))
            .for_each(run);
    } else {
        run((values, addend));
    }
}

/// `f` over `x` into a new vector (no zeroing first), as [`activate`].
pub(crate) fn activated(activation: Activation, x: &[f32]) -> Vec<f32> {
    let path = SimdPath::detect();
    filled(x.len(), |y| {
        let run = |(y, x): (&mut [MaybeUninit<f32>], &[f32])| {
            // SAFETY: `y` has room for `x.len()` values.
            unsafe { map_raw(path, activation, x.as_ptr(), y.as_mut_ptr().cast(), x.len()) }
        };
        if parallel(x.len()) {
            y.par_chunks_mut(CHUNK)
                .zip(x.par_chunks(CHUNK))
                .for_each(run);
        } else {
            run((y, x));
        }
    })
}

/// `dy · f'(x)` into a new vector.
pub(crate) fn activation_gradient(activation: Activation, x: &[f32], dy: &[f32]) -> Vec<f32> {
    assert_eq!(x.len(), dy.len(), "activation gradient: lengths");
    let path = SimdPath::detect();
    filled(x.len(), |dx| {
        let run = |(dx, (x, dy)): Pair<'_, MaybeUninit<f32>>| {
            // SAFETY: `dx` has room for `x.len()` values.
            unsafe { backward_raw(path, activation, x, dy, dx.as_mut_ptr().cast()) }
        };
        if parallel(x.len()) {
            dx.par_chunks_mut(CHUNK)
                .zip(x.par_chunks(CHUNK).zip(dy.par_chunks(CHUNK)))
                .for_each(run);
        } else {
            run((dx, (x, dy)));
        }
    })
}

/// A vector of `len` values written by `fill`, which must write every
/// element of the slice it is given: no zeroing pass first.
pub(crate) fn filled(len: usize, fill: impl FnOnce(&mut [MaybeUninit<f32>])) -> Vec<f32> {
    let mut values = Vec::with_capacity(len);
    fill(&mut values.spare_capacity_mut()[..len]);
    // SAFETY: `fill` wrote all `len` elements (the contract above).
    unsafe { values.set_len(len) };
    values
}

/// The activation as a candle op with a backward (training). f32 on the
/// CPU runs the fused loop; anything else the candle composition.
pub fn activation(x: &Tensor, activation: Activation) -> Result<Tensor> {
    if activation == Activation::Identity {
        return Ok(x.clone());
    }
    if !fusable(&[x]) {
        return reference(x, activation);
    }
    x.contiguous()?.apply_op1(ActivationOp(activation))
}

/// GELU(tanh) with a backward: `activation(x, Activation::GeluTanh)`.
pub fn gelu_tanh(x: &Tensor) -> Result<Tensor> {
    activation(x, Activation::GeluTanh)
}

/// The same functions from candle ops (the reference the tests compare
/// with, and the path for other dtypes and devices).
pub fn reference(x: &Tensor, activation: Activation) -> Result<Tensor> {
    match activation {
        Activation::Identity => Ok(x.clone()),
        Activation::GeluTanh => {
            // 0.5(1 + tanh z) = σ(2z)
            let inner = x.mul(&x.sqr()?.affine(0.044715, 1.0)?)?;
            let gate =
                ((inner * (-2.0 * (2.0 / std::f64::consts::PI).sqrt()))?.exp()? + 1.0)?.recip()?;
            x.mul(&gate)
        }
        Activation::GeluErf => x.gelu_erf(),
        Activation::Silu => x.mul(&(x.neg()?.exp()? + 1.0)?.recip()?),
    }
}

struct ActivationOp(Activation);

impl CustomOp1 for ActivationOp {
    fn name(&self) -> &'static str {
        match self.0 {
            Activation::Identity => "attnflow-identity",
            Activation::GeluTanh => "attnflow-gelu-tanh",
            Activation::GeluErf => "attnflow-gelu-erf",
            Activation::Silu => "attnflow-silu",
        }
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = cpu_slice(storage, layout)?;
        Ok((
            CpuStorage::F32(activated(self.0, x)),
            layout.shape().clone(),
        ))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let dx = with_values(arg, |x| {
            with_values(grad_res, |dy| activation_gradient(self.0, x, dy))
        })??;
        Ok(Some(tensor(dx, arg.shape().clone())?))
    }
}

#[inline(always)]
unsafe fn swiglu_body<V: Lanes>(gate: &[f32], up: &[f32], out: *mut f32) {
    each_step!(gate.len(), |offset, count| {
        let g = load_at::<V>(gate, offset, count, 0.0);
        let u = load_at::<V>(up, offset, count, 0.0);
        store_at(math::silu(g).mul(u), out, offset, count);
    });
}

dispatch!(
    /// `out = silu(gate) · up`.
    ///
    /// # Safety
    /// `out` writable for `gate.len()` values; `up` as long as `gate`.
    pub(crate) unsafe fn swiglu_raw(gate: &[f32], up: &[f32], out: *mut f32) => swiglu_body
);

#[inline(always)]
unsafe fn swiglu_backward_body<V: Lanes>(
    gate: &[f32],
    up: &[f32],
    dy: &[f32],
    dgate: *mut f32,
    dup: *mut f32,
) {
    each_step!(gate.len(), |offset, count| {
        let g = load_at::<V>(gate, offset, count, 0.0);
        let u = load_at::<V>(up, offset, count, 0.0);
        let upstream = load_at::<V>(dy, offset, count, 0.0);
        store_at(
            upstream.mul(u).mul(math::silu_derivative(g)),
            dgate,
            offset,
            count,
        );
        store_at(upstream.mul(math::silu(g)), dup, offset, count);
    });
}

dispatch!(
    /// `dgate = dy·up·silu'(gate)`, `dup = dy·silu(gate)`.
    ///
    /// # Safety
    /// `dgate`, `dup` writable for `gate.len()` values; `up`, `dy` as long
    /// as `gate`.
    pub(crate) unsafe fn swiglu_backward_raw(
        gate: &[f32],
        up: &[f32],
        dy: &[f32],
        dgate: *mut f32,
        dup: *mut f32
    ) => swiglu_backward_body
);

/// SwiGLU's product `out = silu(gate) · up`, element by element
/// (inference). `gate`, `up`, `out` have one length; `out` may not alias
/// the inputs.
pub fn swiglu_into(out: &mut [f32], gate: &[f32], up: &[f32]) {
    assert!(
        gate.len() == out.len() && up.len() == out.len(),
        "swiglu: gate {}, up {}, out {} values",
        gate.len(),
        up.len(),
        out.len()
    );
    let path = SimdPath::detect();
    let run = |(out, (gate, up)): (&mut [f32], (&[f32], &[f32]))| {
        // SAFETY: `out` has `gate.len()` values.
        unsafe { swiglu_raw(path, gate, up, out.as_mut_ptr()) }
    };
    if parallel(out.len()) {
        out.par_chunks_mut(CHUNK)
            .zip(gate.par_chunks(CHUNK).zip(up.par_chunks(CHUNK)))
            .for_each(run);
    } else {
        run((out, (gate, up)));
    }
}

/// SwiGLU from one product with a packed weight: each row of `packed`
/// holds `[gate | up]`, `width` values each, and `out` gets
/// `silu(gate) · up`, `width` per row (inference). One `gemm` makes both
/// halves (as a fused QKV projection makes three).
pub fn swiglu_packed_into(out: &mut [f32], packed: &[f32], width: usize) {
    assert!(
        width > 0 && packed.len() == 2 * out.len() && out.len().is_multiple_of(width),
        "swiglu_packed: {} packed values for {} outputs of width {width}",
        packed.len(),
        out.len()
    );
    let path = SimdPath::detect();
    let rows_per_task = (CHUNK / width).max(1);
    let run = |(out, packed): (&mut [f32], &[f32])| {
        for (out, row) in out
            .chunks_exact_mut(width)
            .zip(packed.chunks_exact(2 * width))
        {
            let (gate, up) = row.split_at(width);
            // SAFETY: `out` has `width` values.
            unsafe { swiglu_raw(path, gate, up, out.as_mut_ptr()) }
        }
    };
    if parallel(out.len()) {
        out.par_chunks_mut(rows_per_task * width)
            .zip(packed.par_chunks(rows_per_task * 2 * width))
            .for_each(run);
    } else {
        run((out, packed));
    }
}

/// `(dgate, dup)` for the incoming gradient `dy`, in parallel chunks.
fn swiglu_gradients(gate: &[f32], up: &[f32], dy: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let path = SimdPath::detect();
    let mut dgate = vec![0f32; gate.len()];
    let mut dup = vec![0f32; gate.len()];
    let run = |(index, (dgate, dup)): (usize, (&mut [f32], &mut [f32]))| {
        let range = index * CHUNK..index * CHUNK + dgate.len();
        // SAFETY: both outputs hold the chunk's values.
        unsafe {
            swiglu_backward_raw(
                path,
                &gate[range.clone()],
                &up[range.clone()],
                &dy[range],
                dgate.as_mut_ptr(),
                dup.as_mut_ptr(),
            )
        }
    };
    if parallel(gate.len()) {
        dgate
            .par_chunks_mut(CHUNK)
            .zip(dup.par_chunks_mut(CHUNK))
            .enumerate()
            .for_each(run);
    } else {
        dgate
            .chunks_mut(CHUNK)
            .zip(dup.chunks_mut(CHUNK))
            .enumerate()
            .for_each(run);
    }
    (dgate, dup)
}

/// SwiGLU `silu(gate) · up` as a candle op with a backward (training).
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    if gate.dims() != up.dims() {
        bail!(
            "swiglu: gate {:?} and up {:?} differ in shape",
            gate.dims(),
            up.dims()
        );
    }
    if !fusable(&[gate, up]) {
        return swiglu_reference(gate, up);
    }
    gate.contiguous()?.apply_op2(&up.contiguous()?, SwiGlu)
}

/// SwiGLU from candle ops.
pub fn swiglu_reference(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    reference(gate, Activation::Silu)?.mul(up)
}

struct SwiGlu;

impl CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "attnflow-swiglu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (gate, up) = (cpu_slice(s1, l1)?, cpu_slice(s2, l2)?);
        let mut out = vec![0f32; gate.len()];
        swiglu_into(&mut out, gate, up);
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        gate: &Tensor,
        up: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dgate, dup) = with_values(gate, |gate| {
            with_values(up, |up| {
                with_values(grad, |dy| swiglu_gradients(gate, up, dy))
            })
        })???;
        Ok((
            Some(tensor(dgate, gate.shape().clone())?),
            Some(tensor(dup, up.shape().clone())?),
        ))
    }
}

/// `f` over `x` on a chosen path, for the tests.
#[cfg(test)]
pub(crate) fn map_on_path(path: SimdPath, activation: Activation, x: &[f32]) -> Vec<f32> {
    let mut y = vec![0f32; x.len()];
    // SAFETY: `y` has `x.len()` values.
    unsafe { map_raw(path, activation, x.as_ptr(), y.as_mut_ptr(), x.len()) };
    y
}

/// `dy · f'(x)` on a chosen path, for the tests.
#[cfg(test)]
pub(crate) fn gradient_on_path(
    path: SimdPath,
    activation: Activation,
    x: &[f32],
    dy: &[f32],
) -> Vec<f32> {
    let mut dx = vec![0f32; x.len()];
    // SAFETY: `dx` has `x.len()` values.
    unsafe { backward_raw(path, activation, x, dy, dx.as_mut_ptr()) };
    dx
}
