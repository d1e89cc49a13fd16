//! `y = x·Wᵀ + b` as one op, on the `gemm` crate's packed kernels, with the
//! attention head split or merge folded in.

use std::borrow::Cow;
use std::sync::{Arc, Mutex};

use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor, D};
use gemm::Parallelism;
use rayon::prelude::*;

use super::storage::{cpu_slice, fusable, tensor, with_values};
use super::{activation, simd};

/// `x·Wᵀ + b` over the last axis of any-rank `x`; `weight` is
/// `(outputs, inputs)` as PyTorch's `nn.Linear`.
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let (outputs, inputs) = weight.dims2()?;
    let tokens = x.elem_count() / inputs.max(1);
    if x.dim(D::Minus1)? != inputs {
        bail!(
            "linear: input {:?} does not end in the weight's {inputs} inputs",
            x.dims()
        );
    }
    let mut dims = x.dims().to_vec();
    if let Some(last) = dims.last_mut() {
        *last = outputs;
    }
    let op = Linear {
        tokens,
        inputs,
        outputs,
        input: Arrangement::Rows,
        output: Arrangement::Rows,
        output_shape: Shape::from(dims),
        activated: Arc::default(),
    };
    op.apply(x, weight, bias)
}

/// `x·Wᵀ + b` for `x` `(batch, seq, inputs)`, returned split into heads:
/// `(batch, heads, seq, outputs / heads)`, the layout attention reads.
pub fn linear_to_heads(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    heads: usize,
) -> Result<Tensor> {
    let (batch, seq, inputs) = x.dims3()?;
    let (outputs, weight_inputs) = weight.dims2()?;
    if weight_inputs != inputs || heads == 0 || outputs % heads != 0 {
        bail!(
            "linear_to_heads: weight {:?} does not fit input {:?} and {heads} heads",
            weight.dims(),
            x.dims()
        );
    }
    let op = Linear {
        tokens: batch * seq,
        inputs,
        outputs,
        input: Arrangement::Rows,
        output: Arrangement::Heads { batch, heads, seq },
        output_shape: Shape::from((batch, heads, seq, outputs / heads)),
        activated: Arc::default(),
    };
    op.apply(x, weight, bias)
}

/// `x·Wᵀ + b` for `x` in heads `(batch, heads, seq, head_dim)`, the heads
/// merged first: returns `(batch, seq, outputs)`.
pub fn linear_from_heads(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let (batch, heads, seq, head_dim) = x.dims4()?;
    let (outputs, inputs) = weight.dims2()?;
    if inputs != heads * head_dim {
        bail!(
            "linear_from_heads: weight {:?} does not fit heads {:?}",
            weight.dims(),
            x.dims()
        );
    }
    let op = Linear {
        tokens: batch * seq,
        inputs,
        outputs,
        input: Arrangement::Heads { batch, heads, seq },
        output: Arrangement::Rows,
        output_shape: Shape::from((batch, seq, outputs)),
        activated: Arc::default(),
    };
    op.apply(x, weight, bias)
}

/// `GELU(x)·Wᵀ + b` over the last axis: the feed-forward block's
/// activation folded into its second product. The activation's output is
/// never a tensor of its own (saving its memory and two graph edges); the
/// backward recomputes it from `x`, which costs an `exp` per element.
pub fn linear_after_gelu(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let (outputs, inputs) = weight.dims2()?;
    if x.dim(D::Minus1)? != inputs {
        bail!(
            "linear_after_gelu: input {:?} does not end in the weight's {inputs} inputs",
            x.dims()
        );
    }
    let mut dims = x.dims().to_vec();
    if let Some(last) = dims.last_mut() {
        *last = outputs;
    }
    let op = Linear {
        tokens: x.elem_count() / inputs.max(1),
        inputs,
        outputs,
        input: Arrangement::GeluRows,
        output: Arrangement::Rows,
        output_shape: Shape::from(dims),
        activated: Arc::default(),
    };
    op.apply(x, weight, bias)
}

/// How a `(tokens, width)` matrix is laid out in memory.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Arrangement {
    /// Row-major `(tokens, width)`.
    Rows,
    /// Row-major, and the op reads GELU(tanh) of the values (inputs only).
    GeluRows,
    /// `(batch, heads, seq, width / heads)` with tokens = batch·seq.
    Heads {
        batch: usize,
        heads: usize,
        seq: usize,
    },
}

impl Arrangement {
    /// `values` as row-major `(tokens, width)`, permuted if needed.
    fn as_rows<'a>(&self, values: &'a [f32], width: usize) -> Cow<'a, [f32]> {
        match *self {
            Arrangement::Rows => Cow::Borrowed(values),
            Arrangement::GeluRows => Cow::Owned(activation::map(values, simd::gelu_forward)),
            Arrangement::Heads { batch, heads, seq } => {
                // Written in destination order: no zeroing first.
                let head_dim = width / heads;
                let mut rows = Vec::with_capacity(values.len());
                for b in 0..batch {
                    for s in 0..seq {
                        for h in 0..heads {
                            let from = ((b * heads + h) * seq + s) * head_dim;
                            rows.extend_from_slice(&values[from..from + head_dim]);
                        }
                    }
                }
                Cow::Owned(rows)
            }
        }
    }

    /// Row-major `(tokens, width)` values in this arrangement.
    fn arrange_rows(&self, rows: Vec<f32>, width: usize) -> Vec<f32> {
        match *self {
            // Gradients for GELU inputs go through `Linear::input_gradient`.
            Arrangement::Rows | Arrangement::GeluRows => rows,
            Arrangement::Heads { batch, heads, seq } => {
                let head_dim = width / heads;
                let mut values = Vec::with_capacity(rows.len());
                for b in 0..batch {
                    for h in 0..heads {
                        for s in 0..seq {
                            let from = (b * seq + s) * width + h * head_dim;
                            values.extend_from_slice(&rows[from..from + head_dim]);
                        }
                    }
                }
                values
            }
        }
    }
}

#[derive(Clone, Debug)]
struct Linear {
    tokens: usize,
    inputs: usize,
    outputs: usize,
    input: Arrangement,
    output: Arrangement,
    output_shape: Shape,
    /// GELU(x) as the forward computed it, for the backward's `dW` (a
    /// custom op has one output, so what else the backward needs is kept in
    /// the op; recomputed if taken already).
    activated: Arc<Mutex<Option<Vec<f32>>>>,
}

/// A row-major matrix operand: element `(i, p)` at `values[i·row + p·column]`.
pub(super) struct Operand<'a> {
    values: &'a [f32],
    row: usize,
    column: usize,
}

/// Fewest multiply-adds per block worth a task of its own.
const BLOCK_WORK: usize = 1 << 20;
/// Most blocks one product is split into.
const MAX_BLOCKS: usize = 4;
/// Block widths are multiples of this many columns: gemm's widest AVX-512
/// micro-kernel covers 64 (narrower blocks fall back to its 32-wide one,
/// which `perf` showed taking most of the product time).
const BLOCK_COLUMNS: usize = 64;

/// The destination pointer shared by the blocks of one product; each block
/// writes only its own columns.
struct Destination(*mut f32);
// SAFETY: blocks write disjoint columns of the destination (see `matmul`).
unsafe impl Sync for Destination {}

impl Destination {
    fn at(&self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

/// `dst (m×n, row-major) = [dst +] lhs·rhs` with `lhs` `m×k`, `rhs` `k×n`.
///
/// Large products are split into up to four blocks of output columns, each
/// a single-threaded `gemm` call, spread over the rayon pool. Measured on
/// the benchmark's shapes on two cores: about twice the throughput of
/// `gemm`'s own rayon split (which synchronises per depth chunk); splitting
/// rows into eight blocks instead lost up to half of it to packing the
/// shared operand once per block. The blocks depend on the shape only,
/// never on the number of threads, so the result is the same bits on any
/// machine.
pub(super) fn matmul(
    dst: &mut [f32],
    accumulate: bool,
    shape: (usize, usize, usize),
    lhs: Operand<'_>,
    rhs: Operand<'_>,
) {
    assert_eq!(dst.len(), shape.0 * shape.1, "matmul: destination size");
    if shape.2 == 0 {
        if !accumulate {
            dst.fill(0.0);
        }
        return;
    }
    // SAFETY: dst is m×n initialised values.
    unsafe { matmul_raw(dst.as_mut_ptr(), accumulate, shape, lhs, rhs) }
}

/// `lhs·rhs` into a new `m×n` row-major vector, never zeroed first.
pub(super) fn product(
    shape: (usize, usize, usize),
    lhs: Operand<'_>,
    rhs: Operand<'_>,
) -> Vec<f32> {
    let (m, n, k) = shape;
    if k == 0 {
        return vec![0f32; m * n];
    }
    let mut dst = Vec::<f32>::with_capacity(m * n);
    // SAFETY: gemm without `read_dst` writes every one of the m×n elements
    // and reads none, so they are initialised when the length is set.
    unsafe {
        matmul_raw(dst.as_mut_ptr(), false, shape, lhs, rhs);
        dst.set_len(m * n);
    }
    dst
}

/// # Safety
/// `dst` must be valid for writes of `m×n` elements (and for reads when
/// `accumulate`), not aliasing `lhs` or `rhs`; `k > 0`.
unsafe fn matmul_raw(
    dst: *mut f32,
    accumulate: bool,
    (m, n, k): (usize, usize, usize),
    lhs: Operand<'_>,
    rhs: Operand<'_>,
) {
    if m == 0 || n == 0 {
        return;
    }
    let last = |operand: &Operand<'_>, rows: usize, columns: usize| {
        (rows - 1) * operand.row + (columns - 1) * operand.column
    };
    assert!(last(&lhs, m, k) < lhs.values.len(), "matmul: lhs bounds");
    assert!(last(&rhs, k, n) < rhs.values.len(), "matmul: rhs bounds");
    let wanted = (m * n * k / BLOCK_WORK).clamp(1, MAX_BLOCKS);
    let columns = n.div_ceil(wanted).div_ceil(BLOCK_COLUMNS) * BLOCK_COLUMNS;
    let blocks = n.div_ceil(columns);
    let destination = Destination(dst);
    let block = |index: usize| {
        let first = index * columns;
        let width = columns.min(n - first);
        // SAFETY: the asserts above keep every element gemm reads inside
        // lhs and rhs (this block's columns are a sub-range of rhs's), and
        // every element it writes inside dst: rows 0..m, columns
        // first..first + width of the m×n destination, which no other block
        // writes and which (the caller guarantees) aliases neither operand.
        unsafe {
            gemm::gemm(
                m,
                width,
                k,
                destination.at(first),
                1,
                n as isize,
                accumulate,
                lhs.values.as_ptr(),
                lhs.column as isize,
                lhs.row as isize,
                rhs.values.as_ptr().add(first * rhs.column),
                rhs.column as isize,
                rhs.row as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                Parallelism::None,
            );
        }
    };
    if blocks > 1 && rayon::current_num_threads() > 1 {
        (0..blocks).into_par_iter().with_max_len(1).for_each(block);
    } else {
        (0..blocks).for_each(block);
    }
}

impl Linear {
    fn apply(&self, x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        if let Some(bias) = bias {
            if bias.elem_count() != self.outputs {
                bail!(
                    "linear: bias {:?} for {} outputs",
                    bias.dims(),
                    self.outputs
                );
            }
        }
        let mut tensors = vec![x, weight];
        tensors.extend(bias);
        if !fusable(&tensors) {
            return self.reference(x, weight, bias);
        }
        let x = x.contiguous()?;
        let weight = weight.contiguous()?;
        match bias {
            Some(bias) => x.apply_op3(&weight, &bias.contiguous()?, self.clone()),
            None => x.apply_op2(&weight, self.clone()),
        }
    }

    /// The same map from candle ops.
    fn reference(&self, x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        let rows = match self.input {
            Arrangement::Rows => x.reshape((self.tokens, self.inputs))?,
            Arrangement::GeluRows => {
                activation::reference(&x.reshape((self.tokens, self.inputs))?)?
            }
            Arrangement::Heads { .. } => x
                .transpose(1, 2)?
                .contiguous()?
                .reshape((self.tokens, self.inputs))?,
        };
        let mut y = rows.matmul(&weight.t()?)?;
        if let Some(bias) = bias {
            y = y.broadcast_add(bias)?;
        }
        match self.output {
            Arrangement::Rows | Arrangement::GeluRows => y.reshape(self.output_shape.clone()),
            Arrangement::Heads { batch, heads, seq } => y
                .reshape((batch, seq, heads, self.outputs / heads))?
                .transpose(1, 2)?
                .contiguous(),
        }
    }

    fn forward(&self, x: &[f32], weight: &[f32], bias: Option<&[f32]>) -> Result<Vec<f32>> {
        let (tokens, inputs, outputs) = (self.tokens, self.inputs, self.outputs);
        if x.len() != tokens * inputs || weight.len() != outputs * inputs {
            bail!("linear: operand sizes changed since the op was built");
        }
        let x = self.input.as_rows(x, inputs);
        let shape = (tokens, outputs, inputs);
        let lhs = Operand {
            values: &x,
            row: inputs,
            column: 1,
        };
        // Wᵀ: element (p, o) is W[o, p].
        let rhs = Operand {
            values: weight,
            row: 1,
            column: inputs,
        };
        let y = match bias {
            Some(bias) => {
                let mut y = Vec::with_capacity(tokens * outputs);
                for _ in 0..tokens {
                    y.extend_from_slice(bias);
                }
                matmul(&mut y, true, shape, lhs, rhs);
                y
            }
            None => product(shape, lhs, rhs),
        };
        if self.input == Arrangement::GeluRows {
            if let Ok(mut kept) = self.activated.lock() {
                *kept = Some(x.into_owned());
            }
        }
        Ok(self.output.arrange_rows(y, outputs))
    }

    /// `(dx, dW, db)` for the incoming gradient `dy`.
    fn backward(
        &self,
        x: &Tensor,
        weight: &Tensor,
        grad: &Tensor,
        bias: bool,
    ) -> Result<(Tensor, Tensor, Option<Tensor>)> {
        let (tokens, inputs, outputs) = (self.tokens, self.inputs, self.outputs);
        let (dx, dw, db) = with_values(x, |x_values| {
            with_values(weight, |weight| {
                with_values(grad, |dy| {
                    let dy = self.output.as_rows(dy, outputs);
                    let kept = match self.input {
                        Arrangement::GeluRows => {
                            self.activated.lock().ok().and_then(|mut kept| kept.take())
                        }
                        _ => None,
                    };
                    let x = match kept {
                        Some(activated) if activated.len() == x_values.len() => {
                            Cow::Owned(activated)
                        }
                        _ => self.input.as_rows(x_values, inputs),
                    };
                    // dx = dy·W
                    let dx = product(
                        (tokens, inputs, outputs),
                        Operand {
                            values: &dy,
                            row: outputs,
                            column: 1,
                        },
                        Operand {
                            values: weight,
                            row: inputs,
                            column: 1,
                        },
                    );
                    // dW = dyᵀ·x
                    let dw = product(
                        (outputs, inputs, tokens),
                        Operand {
                            values: &dy,
                            row: 1,
                            column: outputs,
                        },
                        Operand {
                            values: &x,
                            row: inputs,
                            column: 1,
                        },
                    );
                    let db = bias.then(|| {
                        let mut db = vec![0f32; outputs];
                        for row in dy.chunks_exact(outputs) {
                            for (sum, value) in db.iter_mut().zip(row) {
                                *sum += value;
                            }
                        }
                        db
                    });
                    let dx = match self.input {
                        // Through the activation: dx = d(GELU x) · GELU'(x).
                        Arrangement::GeluRows => {
                            activation::zip_map(x_values, &dx, simd::gelu_backward)
                        }
                        input => input.arrange_rows(dx, inputs),
                    };
                    (dx, dw, db)
                })
            })
        })???;
        Ok((
            tensor(dx, x.shape().clone())?,
            tensor(dw, weight.shape().clone())?,
            db.map(|db| tensor(db, outputs)).transpose()?,
        ))
    }
}

impl CustomOp2 for Linear {
    fn name(&self) -> &'static str {
        "attnflow-linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let y = self.forward(cpu_slice(s1, l1)?, cpu_slice(s2, l2)?, None)?;
        Ok((CpuStorage::F32(y), self.output_shape.clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = self.backward(x, weight, grad, false)?;
        Ok((Some(dx), Some(dw)))
    }
}

impl CustomOp3 for Linear {
    fn name(&self) -> &'static str {
        "attnflow-linear-bias"
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
        )?;
        Ok((CpuStorage::F32(y), self.output_shape.clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, db) = self.backward(x, weight, grad, true)?;
        let db = db.map(|db| db.reshape(bias.shape())).transpose()?;
        Ok((Some(dx), Some(dw), db))
    }
}
