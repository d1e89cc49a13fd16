//! Embedding lookups and learned position rows.
//!
//! Inference: [`embed_into`] (rows of a table by id), [`add_positions_in_place`].
//! Training: [`add_positions`], a candle op with a backward whose forward
//! is the same additions.

use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor, D};

use crate::storage::{cpu_slice, fusable, tensor, with_values};

/// `out[t] = table[ids[t]]` for a `(rows, width)` table (inference). An id
/// past the table is an error naming it and its place.
pub fn embed_into(out: &mut [f32], table: &[f32], width: usize, ids: &[u32]) -> Result<()> {
    let rows = table.len() / width.max(1);
    if width == 0 || out.len() != ids.len() * width || rows * width != table.len() {
        bail!(
            "embed: {} ids into {} values from a table of {} values in rows of {width}",
            ids.len(),
            out.len(),
            table.len()
        );
    }
    for (index, (&id, out)) in ids.iter().zip(out.chunks_exact_mut(width)).enumerate() {
        let id = id as usize;
        if id >= rows {
            bail!("embed: id {id} at position {index} is past the table's {rows} rows");
        }
        out.copy_from_slice(&table[id * width..(id + 1) * width]);
    }
    Ok(())
}

/// Adds position rows `first..first + length` of `table` (`width` values
/// each) to every sequence of `length` rows in `x` (inference).
pub fn add_positions_in_place(
    x: &mut [f32],
    table: &[f32],
    width: usize,
    length: usize,
    first: usize,
) {
    let used = length * width;
    assert!(
        used > 0 && x.len().is_multiple_of(used) && (first + length) * width <= table.len(),
        "add_positions: {} values in sequences of {length} × {width}, positions {first}.. of a table of {}",
        x.len(),
        table.len()
    );
    let rows = &table[first * width..first * width + used];
    for sequence in x.chunks_exact_mut(used) {
        for (value, position) in sequence.iter_mut().zip(rows) {
            *value += position;
        }
    }
}

/// `x + table[..length]` for `x` `(.., length, width)` and a position table
/// `(max_len, width)`, every sequence getting the same rows, with a
/// backward (training).
pub fn add_positions(x: &Tensor, table: &Tensor) -> Result<Tensor> {
    let (max_len, width) = table.dims2()?;
    let length = x.dim(D::Minus2)?;
    if x.dim(D::Minus1)? != width || length > max_len {
        bail!(
            "add_positions: input {:?} does not fit the table {:?}",
            x.dims(),
            table.dims()
        );
    }
    if !fusable(&[x, table]) || length * width == 0 {
        return add_positions_reference(x, table);
    }
    x.contiguous()?
        .apply_op2(&table.contiguous()?, AddPositions { length, width })
}

/// The same sum from candle ops.
pub fn add_positions_reference(x: &Tensor, table: &Tensor) -> Result<Tensor> {
    x.broadcast_add(&table.narrow(0, 0, x.dim(D::Minus2)?)?)
}

#[derive(Clone, Copy, Debug)]
struct AddPositions {
    length: usize,
    width: usize,
}

impl CustomOp2 for AddPositions {
    fn name(&self) -> &'static str {
        "attnflow-add-positions"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let mut y = cpu_slice(s1, l1)?.to_vec();
        add_positions_in_place(&mut y, cpu_slice(s2, l2)?, self.width, self.length, 0);
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        table: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let dtable = with_values(&grad, |dy| {
            let mut dtable = vec![0f32; table.elem_count()];
            let used = self.length * self.width;
            for sequence in dy.chunks_exact(used.max(1)) {
                for (sum, value) in dtable[..used].iter_mut().zip(sequence) {
                    *sum += value;
                }
            }
            dtable
        })?;
        Ok((Some(grad), Some(tensor(dtable, table.shape().clone())?)))
    }
}
