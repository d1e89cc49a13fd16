//! Attention with its weights written out, for inspection.

use rayon::prelude::*;

use super::{matmul, AttentionProblem, HeadsLayout, Shared};
use crate::simd;

/// The attention weights `softmax(scale·QKᵀ + mask)` of every head,
/// materialised into `weights` `(batch, heads, n, m)` contiguous, and the
/// output `weights·V` into `out` (inference, for inspection: the fused
/// forward never forms the weights). Rows that see no key are zeros.
pub fn attention_weights_forward(
    problem: &AttentionProblem<'_>,
    q: (&[f32], HeadsLayout),
    k: (&[f32], HeadsLayout),
    v: (&[f32], HeadsLayout),
    out: (&mut [f32], HeadsLayout),
    weights: &mut [f32],
) {
    let AttentionProblem {
        batch,
        heads,
        n,
        m,
        d,
        dv,
        path,
        ..
    } = *problem;
    problem.check([
        (q.0.len(), q.1),
        (k.0.len(), k.1),
        (v.0.len(), v.1),
        (out.0.len(), out.1),
    ]);
    assert_eq!(
        weights.len(),
        batch * heads * n * m,
        "attention weights (batch, heads, n, m)"
    );
    if n == 0 || m == 0 || batch * heads == 0 {
        return;
    }
    let output = Shared(out.0.as_mut_ptr());
    let out_layout = out.1;
    weights
        .par_chunks_mut(n * m)
        .enumerate()
        .for_each(|(head_index, head_weights)| {
            let (b, h) = (head_index / heads, head_index % heads);
            let kv_head = problem.kv_head(h);
            // SAFETY: the layouts were checked against the buffers; this
            // task alone writes head h of batch b of the output.
            unsafe {
                matmul(
                    (n, m, d),
                    (head_weights.as_mut_ptr(), 1, m as isize),
                    (
                        q.0.as_ptr().add(q.1.at(b, h, 0)),
                        1,
                        q.1.row_stride as isize,
                    ),
                    (
                        k.0.as_ptr().add(k.1.at(b, kv_head, 0)),
                        k.1.row_stride as isize,
                        1,
                    ),
                    false,
                    problem.scale,
                );
            }
            let bias = problem.bias(b, 0, m);
            for (i, row) in head_weights.chunks_exact_mut(m).enumerate() {
                let visible = problem.visible(i, 0, m);
                let (live, hidden) = row.split_at_mut(visible);
                hidden.fill(0.0);
                if let Some(bias) = bias {
                    simd::add(path, live, &bias[..visible]);
                }
                simd::softmax_in_place(path, live);
            }
            // SAFETY: as above.
            unsafe {
                matmul(
                    (n, dv, m),
                    (
                        output.pointer().add(out_layout.at(b, h, 0)),
                        1,
                        out_layout.row_stride as isize,
                    ),
                    (head_weights.as_ptr(), 1, m as isize),
                    (
                        v.0.as_ptr().add(v.1.at(b, kv_head, 0)),
                        1,
                        v.1.row_stride as isize,
                    ),
                    false,
                    1.0,
                );
            }
        });
}
