//! `y = f(x·Wᵀ + b)` on the `gemm` crate's packed kernels, the bias and the
//! activation applied to each column block right after its product.
//!
//! Inference: [`linear_into`] writes into a buffer the caller keeps (no
//! graph, nothing saved); a packed weight (`[W_q; W_k; W_v]`, `[W_gate;
//! W_up]`, made by [`concat_rows`]) makes a fused QKV or gate/up
//! projection one product. Training: candle ops with a backward —
//! [`linear`], [`linear_activation`], [`linear_to_heads`],
//! [`linear_from_heads`], [`linear_after_gelu`] — whose forwards call
//! `linear_into`, so both give the same bits.

use std::borrow::Cow;
use std::sync::{Arc, Mutex};

use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor, D};

use crate::activation::{self, Activation};
use crate::matmul::{matmul_raw, product, BlockView, Operand};
use crate::panel::{rows_product_raw, ROWS_PANEL_MIN_TOKENS};
use crate::simd::{dispatch, each_step, load_at, load_from, store_at, Lanes, SimdPath};
use crate::storage::{cpu_slice, fusable, tensor, with_values};

/// Most multiply-adds of one backward product for which dx and dW run side
/// by side rather than one after the other.
const SIDE_BY_SIDE_WORK: usize = 1 << 27;

/// How a weight matrix is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WeightLayout {
    /// `(outputs, inputs)` row-major: PyTorch's `nn.Linear`.
    OutputsByInputs,
    /// `(inputs, outputs)` row-major: GPT-2's `Conv1D`.
    InputsByOutputs,
}

/// The weight `W` of `y = x·Wᵀ + b`, borrowed.
#[derive(Clone, Copy, Debug)]
pub struct Weight<'a> {
    /// The values, `outputs · inputs` of them.
    pub values: &'a [f32],
    /// Output features (rows of `W`).
    pub outputs: usize,
    /// Input features (columns of `W`).
    pub inputs: usize,
    /// How `values` are arranged.
    pub layout: WeightLayout,
}

impl<'a> Weight<'a> {
    /// `(outputs, inputs)` row-major, as `nn.Linear` stores it.
    pub fn new(values: &'a [f32], outputs: usize, inputs: usize) -> Self {
        Self {
            values,
            outputs,
            inputs,
            layout: WeightLayout::OutputsByInputs,
        }
    }

    /// `(inputs, outputs)` row-major, as GPT-2's `Conv1D` stores it.
    pub fn transposed(values: &'a [f32], inputs: usize, outputs: usize) -> Self {
        Self {
            values,
            outputs,
            inputs,
            layout: WeightLayout::InputsByOutputs,
        }
    }

    /// `Wᵀ` as the right operand of `x·Wᵀ`: element `(p, o)` is `W[o, p]`.
    fn transpose_operand(&self) -> Operand<'a> {
        match self.layout {
            WeightLayout::OutputsByInputs => Operand::transposed(self.values, self.inputs),
            WeightLayout::InputsByOutputs => Operand::rows(self.values, self.outputs),
        }
    }
}

/// Rows of several matrices stacked into one, in order: a packed weight
/// `[W_q; W_k; W_v]` (or `[W_gate; W_up]`) in the `(outputs, inputs)`
/// layout, or their biases one after another. Done once when a model
/// loads.
pub fn concat_rows(parts: &[&[f32]]) -> Vec<f32> {
    let mut packed = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
    for part in parts {
        packed.extend_from_slice(part);
    }
    packed
}

#[inline(always)]
unsafe fn bias_activation_body<V: Lanes>(
    row: *mut f32,
    width: usize,
    bias: Option<&[f32]>,
    activation: Activation,
) {
    each_step!(width, |offset, count| {
        let mut x = load_from::<V>(row, offset, count, 0.0);
        if let Some(bias) = bias {
            x = x.add(load_at::<V>(bias, offset, count, 0.0));
        }
        store_at(activation.apply(x), row, offset, count);
    });
}

dispatch!(
    /// `row ← f(row + bias)` over `width` values.
    ///
    /// # Safety
    /// `row` must be valid for reads and writes of `width` values, and
    /// `bias` (if any) hold `width` values.
    pub(crate) unsafe fn bias_activation(
        row: *mut f32,
        width: usize,
        bias: Option<&[f32]>,
        activation: Activation
    ) => bias_activation_body
);

/// `out = f(x·Wᵀ + b)` for `x` row-major `(tokens, inputs)` and `out`
/// `(tokens, outputs)`: the inference variant (no graph, nothing saved,
/// no allocation).
///
/// The product runs in fixed column blocks over the rayon pool
/// ([`crate::matmul()`]); each block adds its bias columns and applies
/// `activation` while it is in cache. The result does not depend on the
/// number of threads.
pub fn linear_into(
    out: &mut [f32],
    x: &[f32],
    weight: Weight<'_>,
    bias: Option<&[f32]>,
    activation: Activation,
) {
    let Weight {
        outputs, inputs, ..
    } = weight;
    check_shapes(out.len(), x.len(), (outputs, inputs), bias);
    assert_eq!(
        weight.values.len(),
        outputs * inputs,
        "linear: weight of {outputs} × {inputs}"
    );
    // SAFETY: `out` is tokens × outputs, borrowed mutably, so it aliases
    // neither operand.
    unsafe { linear_raw(out.as_mut_ptr(), x, weight, bias, activation) }
}

/// Checks the buffers of `out = f(x·Wᵀ + b)` for a weight of `(outputs,
/// inputs)` and returns the number of tokens.
pub(crate) fn check_shapes(
    out: usize,
    x: usize,
    (outputs, inputs): (usize, usize),
    bias: Option<&[f32]>,
) -> usize {
    assert!(
        inputs > 0 && x.is_multiple_of(inputs),
        "linear: {x} input values for {inputs} inputs per token"
    );
    let tokens = x / inputs;
    assert_eq!(
        out,
        tokens * outputs,
        "linear: output buffer for {tokens} tokens × {outputs} outputs"
    );
    if let Some(bias) = bias {
        assert_eq!(bias.len(), outputs, "linear: bias for {outputs} outputs");
    }
    tokens
}

/// [`linear_into`] into a new vector (never zeroed first).
pub(crate) fn linear_new(
    x: &[f32],
    weight: Weight<'_>,
    bias: Option<&[f32]>,
    activation: Activation,
) -> Vec<f32> {
    let tokens = x.len() / weight.inputs.max(1);
    let len = tokens * weight.outputs;
    let mut out = Vec::with_capacity(len);
    // SAFETY: the product (or its zero fill when inputs = 0) writes every
    // element before the epilogue reads it; the buffer aliases nothing.
    unsafe {
        linear_raw(out.as_mut_ptr(), x, weight, bias, activation);
        out.set_len(len);
    }
    out
}

/// # Safety
/// `out` valid for writes of `tokens × outputs` values, aliasing neither
/// `x` nor the weight; sizes as [`linear_into`] checks them.
unsafe fn linear_raw(
    out: *mut f32,
    x: &[f32],
    weight: Weight<'_>,
    bias: Option<&[f32]>,
    activation: Activation,
) {
    let Weight {
        outputs, inputs, ..
    } = weight;
    let tokens = x.len() / inputs.max(1);
    let path = SimdPath::detect();
    if weight.layout == WeightLayout::OutputsByInputs
        && tokens >= ROWS_PANEL_MIN_TOKENS
        && inputs > 0
    {
        // Register tiles over panels beat `gemm`'s packing at training's
        // shapes (the weight is laid out once per call).
        rows_product_raw(
            out,
            x,
            weight.values,
            (outputs, inputs),
            bias,
            activation,
            path,
        );
        return;
    }
    let epilogue = move |block: BlockView| {
        if bias.is_none() && activation == Activation::Identity {
            return;
        }
        let columns = block.first_column..block.first_column + block.width;
        let bias = bias.map(|bias| &bias[columns]);
        for row in 0..block.rows {
            // SAFETY: the row lies inside the block just written, which
            // only this task touches.
            unsafe {
                bias_activation(
                    path,
                    block.start.add(row * block.row),
                    block.width,
                    bias,
                    activation,
                )
            }
        }
    };
    matmul_raw(
        out,
        false,
        (tokens, outputs, inputs),
        Operand::rows(x, inputs),
        weight.transpose_operand(),
        Some(&epilogue),
    );
}

/// `x·Wᵀ + b` over the last axis of any-rank `x`; `weight` is
/// `(outputs, inputs)` as PyTorch's `nn.Linear` (training: records a
/// backward).
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    linear_activation(x, weight, bias, Activation::Identity)
}

/// `f(x·Wᵀ + b)` over the last axis of any-rank `x` as one op with a
/// backward (training); the value of the forward is [`linear_into`]'s.
/// With an activation, the op keeps the pre-activation for its backward.
pub fn linear_activation(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    activation: Activation,
) -> Result<Tensor> {
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
        activation,
        output_shape: Shape::from(dims),
        kept: Arc::default(),
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
    if weight_inputs != inputs || heads == 0 || !outputs.is_multiple_of(heads) {
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
        activation: Activation::Identity,
        output_shape: Shape::from((batch, heads, seq, outputs / heads)),
        kept: Arc::default(),
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
        activation: Activation::Identity,
        output_shape: Shape::from((batch, seq, outputs)),
        kept: Arc::default(),
    };
    op.apply(x, weight, bias)
}

/// `GELU(tanh)(x)·Wᵀ + b` over the last axis: the feed-forward block's
/// activation folded into its second product (training). The activation's
/// output is never a tensor of its own (saving its memory and two graph
/// edges); the backward recomputes it from `x` if needed.
pub fn linear_after_gelu(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    linear_after_activation(x, weight, bias, Activation::GeluTanh)
}

/// `f(x)·Wᵀ + b` over the last axis, `f` folded into the product
/// (training).
pub fn linear_after_activation(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    activation: Activation,
) -> Result<Tensor> {
    let (outputs, inputs) = weight.dims2()?;
    if x.dim(D::Minus1)? != inputs {
        bail!(
            "linear_after_activation: input {:?} does not end in the weight's {inputs} inputs",
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
        input: Arrangement::Activated(activation),
        output: Arrangement::Rows,
        activation: Activation::Identity,
        output_shape: Shape::from(dims),
        kept: Arc::default(),
    };
    op.apply(x, weight, bias)
}

/// How a `(tokens, width)` matrix is laid out in memory.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Arrangement {
    /// Row-major `(tokens, width)`.
    Rows,
    /// Row-major, and the op reads `f` of the values (inputs only).
    Activated(Activation),
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
            Arrangement::Activated(activation) => {
                Cow::Owned(activation::activated(activation, values))
            }
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
            // Gradients for activated inputs go through `Linear::backward`.
            Arrangement::Rows | Arrangement::Activated(_) => rows,
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
    /// Applied to the product (with its bias) before the output is
    /// arranged.
    activation: Activation,
    output_shape: Shape,
    /// What the forward computed that the backward needs (a custom op has
    /// one output, so the rest lives in the op; recomputed if taken
    /// already): `f(x)` for an activated input, the pre-activation
    /// `x·Wᵀ + b` for an activated output.
    kept: Arc<Mutex<Option<Vec<f32>>>>,
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
            Arrangement::Activated(activation) => {
                activation::reference(&x.reshape((self.tokens, self.inputs))?, activation)?
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
        let y = activation::reference(&y, self.activation)?;
        match self.output {
            Arrangement::Rows | Arrangement::Activated(_) => y.reshape(self.output_shape.clone()),
            Arrangement::Heads { batch, heads, seq } => y
                .reshape((batch, seq, heads, self.outputs / heads))?
                .transpose(1, 2)?
                .contiguous(),
        }
    }

    fn keep(&self, values: Vec<f32>) {
        if let Ok(mut kept) = self.kept.lock() {
            *kept = Some(values);
        }
    }

    fn take_kept(&self, len: usize) -> Option<Vec<f32>> {
        self.kept
            .lock()
            .ok()
            .and_then(|mut kept| kept.take())
            .filter(|values| values.len() == len)
    }

    fn forward(&self, x: &[f32], weight: &[f32], bias: Option<&[f32]>) -> Result<Vec<f32>> {
        let (tokens, inputs, outputs) = (self.tokens, self.inputs, self.outputs);
        if x.len() != tokens * inputs || weight.len() != outputs * inputs {
            bail!("linear: operand sizes changed since the op was built");
        }
        let x = self.input.as_rows(x, inputs);
        let weight = Weight::new(weight, outputs, inputs);
        let y = if self.activation == Activation::Identity {
            linear_new(&x, weight, bias, Activation::Identity)
        } else {
            // The same bits as the fused epilogue (the same element-wise
            // steps in the same order), with the pre-activation kept.
            let before = linear_new(&x, weight, bias, Activation::Identity);
            let after = activation::activated(self.activation, &before);
            self.keep(before);
            after
        };
        if let Arrangement::Activated(_) = self.input {
            self.keep(x.into_owned());
        }
        Ok(self.output.arrange_rows(y, outputs))
    }

    /// `(dx, dW, db)` for the incoming gradient `dy`.
    fn backward(
        &self,
        x: &Tensor,
        weight: &Tensor,
        bias: Option<&Tensor>,
        grad: &Tensor,
    ) -> Result<(Tensor, Tensor, Option<Tensor>)> {
        let (tokens, inputs, outputs) = (self.tokens, self.inputs, self.outputs);
        // Only an activated output whose kept pre-activation was taken by an
        // earlier backward needs the bias again.
        let bias_values = match bias {
            Some(bias) if self.activation != Activation::Identity => {
                Some(bias.flatten_all()?.to_vec1::<f32>()?)
            }
            _ => None,
        };
        let (dx, dw, db) = with_values(x, |x_values| {
            with_values(weight, |weight| {
                with_values(grad, |dy| -> Result<_> {
                    let mut dy = self.output.as_rows(dy, outputs);
                    if self.activation != Activation::Identity {
                        // Through the output activation: dz = dy · f'(z).
                        let before = match self.take_kept(tokens * outputs) {
                            Some(before) => before,
                            None => linear_new(
                                &self.input.as_rows(x_values, inputs),
                                Weight::new(weight, outputs, inputs),
                                bias_values.as_deref(),
                                Activation::Identity,
                            ),
                        };
                        dy = Cow::Owned(activation::activation_gradient(
                            self.activation,
                            &before,
                            &dy,
                        ));
                    }
                    let x = match self.input {
                        Arrangement::Activated(_) => match self.take_kept(x_values.len()) {
                            Some(activated) => Cow::Owned(activated),
                            None => self.input.as_rows(x_values, inputs),
                        },
                        _ => self.input.as_rows(x_values, inputs),
                    };
                    // dx = dy·W and dW = dyᵀ·x: the same number of
                    // multiply-adds. Small products go side by side in one
                    // parallel region (one after the other, each was a fork
                    // and a join of its own with the second thread idle in
                    // between); large ones keep one product at a time, each
                    // split over the threads (side by side, `bench train
                    // --size large` fell from 1.14× to 1.07× of PyTorch).
                    let dx = || {
                        product(
                            (tokens, inputs, outputs),
                            Operand::rows(&dy, outputs),
                            Operand::rows(weight, inputs),
                        )
                    };
                    let dw = || {
                        product(
                            (outputs, inputs, tokens),
                            Operand::transposed(&dy, outputs),
                            Operand::rows(&x, inputs),
                        )
                    };
                    let (dx, dw) = if tokens * inputs * outputs < SIDE_BY_SIDE_WORK {
                        rayon::join(dx, dw)
                    } else {
                        (dx(), dw())
                    };
                    let db = bias.is_some().then(|| column_sums(&dy, outputs));
                    let dx = match self.input {
                        // Through the input activation: dx = d(f x) · f'(x).
                        Arrangement::Activated(activation) => {
                            activation::activation_gradient(activation, x_values, &dx)
                        }
                        input => input.arrange_rows(dx, inputs),
                    };
                    Ok((dx, dw, db))
                })
            })
        })????;
        Ok((
            tensor(dx, x.shape().clone())?,
            tensor(dw, weight.shape().clone())?,
            db.map(|db| tensor(db, outputs)).transpose()?,
        ))
    }
}

/// Σ over rows of a row-major `(rows, width)` matrix, row by row in order
/// on one thread (the same bits on any thread count).
fn column_sums(values: &[f32], width: usize) -> Vec<f32> {
    let mut sums = vec![0f32; width];
    for row in values.chunks_exact(width) {
        for (sum, value) in sums.iter_mut().zip(row) {
            *sum += value;
        }
    }
    sums
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
        let (dx, dw, _) = self.backward(x, weight, None, grad)?;
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
        let (dx, dw, db) = self.backward(x, weight, Some(bias), grad)?;
        let db = db.map(|db| db.reshape(bias.shape())).transpose()?;
        Ok((Some(dx), Some(dw), db))
    }
}
