//! Rotary position embeddings (Su et al. 2021) in the rotate-half layout
//! Hugging Face uses: the first half of each rotated row pairs with the
//! second, `x₁' = x₁·cos − x₂·sin`, `x₂' = x₂·cos + x₁·sin`, with the
//! frequencies `θ^(−2i/dims)`, optionally rescaled (linear, or Llama 3's
//! smooth band).
//!
//! The tables and the rotation follow transformers' arithmetic in `f32`
//! step by step (the products rounded on their own, no fused multiply-add),
//! so rotated queries and keys match it to the last bit wherever the
//! cosines do.
//!
//! Inference: [`rotary_in_place`] on any [`HeadsLayout`] (a packed QKV
//! product included). Training: [`rotary`], a candle op with a backward
//! (the rotation by `−θ`), whose forward is the same loop.

use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::attention::HeadsLayout;
use crate::simd::{dispatch, each_step, load_from, store_at, Lanes, SimdPath};
use crate::storage::{cpu_slice, fusable, tensor, with_values};

/// How the rotary frequencies are rescaled for long contexts.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub enum RotaryScaling {
    /// `θ^(−2i/dims)` as they are.
    #[default]
    None,
    /// Every frequency divided by `factor` (transformers' `"linear"`).
    Linear {
        /// The divisor.
        factor: f64,
    },
    /// Llama 3's: low frequencies divided by `factor`, high ones kept, a
    /// smooth blend between (transformers' `"llama3"`).
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        /// The context length the model was first trained at.
        original_max_position_embeddings: usize,
    },
}

/// What the rotary tables are made from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RotaryConfig {
    /// Rotated values at the start of each head row (even; usually the
    /// head width).
    pub dims: usize,
    /// The base `θ` (10 000 in the original, 500 000 in Llama 3).
    pub theta: f64,
    pub scaling: RotaryScaling,
}

/// `cos` and `sin` of every position's angles, `(positions, dims / 2)`.
#[derive(Clone, Debug, PartialEq)]
pub struct RotaryTables {
    half: usize,
    positions: usize,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

/// The rotary frequencies, `dims / 2` of them, in `f32` as transformers
/// computes them: `1 / θ^(2i/dims)`, then rescaled.
pub fn inverse_frequencies(config: &RotaryConfig) -> Vec<f32> {
    let dims = config.dims;
    let base = config.theta as f32;
    let raw = (0..dims / 2).map(|i| {
        let exponent = (2 * i) as f32 / dims as f32;
        1.0 / (f64::from(base).powf(f64::from(exponent)) as f32)
    });
    match config.scaling {
        RotaryScaling::None => raw.collect(),
        RotaryScaling::Linear { factor } => raw.map(|f| f / factor as f32).collect(),
        RotaryScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        } => {
            let old_context = original_max_position_embeddings as f64;
            let low_freq_wavelen = (old_context / low_freq_factor) as f32;
            let high_freq_wavelen = (old_context / high_freq_factor) as f32;
            let (factor, low, high) = (
                factor as f32,
                low_freq_factor as f32,
                high_freq_factor as f32,
            );
            raw.map(|frequency| {
                let wavelen = (2.0 * std::f64::consts::PI) as f32 / frequency;
                let scaled = if wavelen > low_freq_wavelen {
                    frequency / factor
                } else {
                    frequency
                };
                // transformers: ~(wavelen < high) * ~(wavelen > low).
                let medium = wavelen >= high_freq_wavelen && wavelen <= low_freq_wavelen;
                if medium {
                    let smooth = (old_context as f32 / wavelen - low) / (high - low);
                    (1.0 - smooth) * scaled / factor + smooth * scaled
                } else {
                    scaled
                }
            })
            .collect()
        }
    }
}

impl RotaryTables {
    /// Tables for positions `0..positions`.
    pub fn new(config: &RotaryConfig, positions: usize) -> Self {
        assert!(
            config.dims >= 2 && config.dims.is_multiple_of(2),
            "rotary: {} dims (needs an even number)",
            config.dims
        );
        Self::from_frequencies(&inverse_frequencies(config), 1.0, positions)
    }

    /// Tables for positions `0..positions` from given inverse frequencies
    /// (`dims / 2` of them, such as [`crate::yarn::yarn_frequencies`]'),
    /// every cosine and sine multiplied by `attention_factor` (YaRN's
    /// `mscale`; 1 elsewhere), as transformers multiplies them.
    pub fn from_frequencies(frequencies: &[f32], attention_factor: f32, positions: usize) -> Self {
        assert!(!frequencies.is_empty(), "rotary: no frequencies");
        let half = frequencies.len();
        let mut cos = Vec::with_capacity(positions * half);
        let mut sin = Vec::with_capacity(positions * half);
        for position in 0..positions {
            for frequency in frequencies {
                // transformers: the angle in f32, its cosine in f32.
                let angle = f64::from(position as f32 * frequency);
                if attention_factor == 1.0 {
                    cos.push(angle.cos() as f32);
                    sin.push(angle.sin() as f32);
                } else {
                    cos.push(angle.cos() as f32 * attention_factor);
                    sin.push(angle.sin() as f32 * attention_factor);
                }
            }
        }
        Self {
            half,
            positions,
            cos,
            sin,
        }
    }

    /// Rotated values per row.
    pub fn dims(&self) -> usize {
        2 * self.half
    }

    /// Positions the tables cover.
    pub fn positions(&self) -> usize {
        self.positions
    }

    /// `cos` of every angle, `(positions, dims / 2)` row-major.
    pub fn cos(&self) -> &[f32] {
        &self.cos
    }

    /// `sin` of every angle, `(positions, dims / 2)` row-major.
    pub fn sin(&self) -> &[f32] {
        &self.sin
    }
}

#[inline(always)]
unsafe fn rotate_body<V: Lanes>(row: *mut f32, cos: &[f32], sin: &[f32], inverse: bool) {
    let half = cos.len();
    let second = row.add(half);
    each_step!(half, |offset, count| {
        let x1 = load_from::<V>(row, offset, count, 0.0);
        let x2 = load_from::<V>(second, offset, count, 0.0);
        let c = load_from::<V>(cos.as_ptr(), offset, count, 0.0);
        let s = load_from::<V>(sin.as_ptr(), offset, count, 0.0);
        let (first_out, second_out) = if inverse {
            (x1.mul(c).add(x2.mul(s)), x2.mul(c).sub(x1.mul(s)))
        } else {
            (x1.mul(c).sub(x2.mul(s)), x2.mul(c).add(x1.mul(s)))
        };
        store_at(first_out, row, offset, count);
        store_at(second_out, second, offset, count);
    });
}

dispatch!(
    /// Rotates the first `2·cos.len()` values at `row` by the angles whose
    /// cosines and sines are given (by their negatives when `inverse`).
    ///
    /// # Safety
    /// `row` readable and writable for `2·cos.len()` values; `sin` as long
    /// as `cos`.
    pub(crate) unsafe fn rotate(row: *mut f32, cos: &[f32], sin: &[f32], inverse: bool) => rotate_body
);

/// The pointer shared by tasks that rotate disjoint rows.
#[derive(Clone, Copy)]
struct Shared(*mut f32);
// SAFETY: each task rotates its own rows.
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl Shared {
    /// The pointer (a method, so closures capture the `Sync` wrapper, not
    /// its field).
    fn pointer(self) -> *mut f32 {
        self.0
    }
}

/// Rotates `(batch, heads, seq)` rows of `values` in `layout` in place,
/// row `i` of every head at position `first_position + i` (inference).
/// Only the first `tables.dims()` values of each row turn.
pub fn rotary_in_place(
    values: &mut [f32],
    layout: HeadsLayout,
    (batch, heads, seq): (usize, usize, usize),
    tables: &RotaryTables,
    first_position: usize,
) {
    rotate_rows(
        values,
        layout,
        (batch, heads, seq),
        tables,
        first_position,
        false,
    )
}

fn rotate_rows(
    values: &mut [f32],
    layout: HeadsLayout,
    (batch, heads, seq): (usize, usize, usize),
    tables: &RotaryTables,
    first_position: usize,
    inverse: bool,
) {
    assert!(
        first_position + seq <= tables.positions,
        "rotary: positions {first_position}..{} past the tables' {}",
        first_position + seq,
        tables.positions
    );
    let width = tables.dims();
    if batch * heads * seq == 0 {
        return;
    }
    let last = layout.offset
        + (batch - 1) * layout.batch_stride
        + (heads - 1) * layout.head_stride
        + (seq - 1) * layout.row_stride
        + width;
    assert!(
        last <= values.len(),
        "rotary: layout {layout:?} reaches past the values"
    );
    let path = SimdPath::detect();
    let target = Shared(values.as_mut_ptr());
    let half = tables.half;
    let task = |index: usize| {
        let (b, h) = (index / heads, index % heads);
        for i in 0..seq {
            let position = first_position + i;
            let row = layout.offset
                + b * layout.batch_stride
                + h * layout.head_stride
                + i * layout.row_stride;
            let angles = position * half..(position + 1) * half;
            // SAFETY: the row lies inside `values` (checked above), and
            // only this task's head touches it.
            unsafe {
                rotate(
                    path,
                    target.pointer().add(row),
                    &tables.cos[angles.clone()],
                    &tables.sin[angles],
                    inverse,
                )
            }
        }
    };
    if crate::threads::parallel(batch * heads * seq * width) {
        (0..batch * heads).into_par_iter().for_each(task);
    } else {
        (0..batch * heads).for_each(task);
    }
}

/// Rotates `x` `(batch, heads, seq, head_dim)` at positions
/// `first_position..`, with a backward (training).
pub fn rotary(x: &Tensor, tables: &RotaryTables, first_position: usize) -> Result<Tensor> {
    let (_, _, seq, head_dim) = x.dims4()?;
    if tables.dims() > head_dim || first_position + seq > tables.positions {
        bail!(
            "rotary: input {:?} at positions {first_position}.. does not fit tables of {} dims and {} positions",
            x.dims(),
            tables.dims(),
            tables.positions
        );
    }
    if !fusable(&[x]) {
        return rotary_reference(x, tables, first_position);
    }
    x.contiguous()?.apply_op1(Rotary {
        tables: tables.clone(),
        first_position,
    })
}

/// The same rotation from candle ops (`x·cos + rotate_half(x)·sin`, as
/// transformers writes it).
pub fn rotary_reference(
    x: &Tensor,
    tables: &RotaryTables,
    first_position: usize,
) -> Result<Tensor> {
    let (_, _, seq, head_dim) = x.dims4()?;
    let half = tables.half;
    let device = x.device();
    let table = |values: &[f32]| -> Result<Tensor> {
        let rows = Tensor::from_slice(
            &values[first_position * half..(first_position + seq) * half],
            (seq, half),
            device,
        )?
        .to_dtype(x.dtype())?;
        Tensor::cat(&[&rows, &rows], 1)
    };
    let (cos, sin) = (table(&tables.cos)?, table(&tables.sin)?);
    let turned = x.narrow(3, 0, 2 * half)?;
    let first = turned.narrow(3, 0, half)?;
    let second = turned.narrow(3, half, half)?;
    let rotated_half = Tensor::cat(&[&second.neg()?, &first], 3)?;
    let rotated = (turned.broadcast_mul(&cos)? + rotated_half.broadcast_mul(&sin)?)?;
    if 2 * half == head_dim {
        Ok(rotated)
    } else {
        Tensor::cat(&[&rotated, &x.narrow(3, 2 * half, head_dim - 2 * half)?], 3)
    }
}

struct Rotary {
    tables: RotaryTables,
    first_position: usize,
}

impl Rotary {
    fn run(&self, values: &mut [f32], shape: &Shape, inverse: bool) -> Result<()> {
        let (batch, heads, seq, head_dim) = shape.dims4()?;
        rotate_rows(
            values,
            HeadsLayout::contiguous(heads, seq, head_dim),
            (batch, heads, seq),
            &self.tables,
            self.first_position,
            inverse,
        );
        Ok(())
    }
}

impl CustomOp1 for Rotary {
    fn name(&self) -> &'static str {
        "attnflow-rotary"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let mut y = cpu_slice(storage, layout)?.to_vec();
        self.run(&mut y, layout.shape(), false)?;
        Ok((CpuStorage::F32(y), layout.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        // The rotation is orthogonal: its gradient is the rotation back.
        let mut dx = with_values(grad_res, <[f32]>::to_vec)?;
        self.run(&mut dx, arg.shape(), true)?;
        Ok(Some(tensor(dx, arg.shape().clone())?))
    }
}
