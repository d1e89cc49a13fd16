//! Learned position rows added to every sequence as one op.

use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor, D};

use super::storage::{cpu_slice, fusable, tensor, with_values};

/// `x + table[..length]` for `x` `(.., length, width)` and a position table
/// `(max_len, width)`, every sequence getting the same rows.
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
    if !fusable(&[x, table]) {
        return reference(x, table);
    }
    x.contiguous()?
        .apply_op2(&table.contiguous()?, AddPositions { length, width })
}

/// The same sum from candle ops.
pub(crate) fn reference(x: &Tensor, table: &Tensor) -> Result<Tensor> {
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
        let x = cpu_slice(s1, l1)?;
        let table = &cpu_slice(s2, l2)?[..self.length * self.width];
        let mut y = x.to_vec();
        for sequence in y.chunks_exact_mut(table.len().max(1)) {
            for (y, t) in sequence.iter_mut().zip(table) {
                *y += t;
            }
        }
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
