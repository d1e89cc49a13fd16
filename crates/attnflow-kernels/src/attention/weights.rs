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
        batch, heads, n, m, ..
    } = *problem;
    assert_eq!(
        weights.len(),
        batch * heads * n * m,
        "attention weights (batch, heads, n, m)"
    );
    // SAFETY: `weights` holds every weight and is borrowed mutably.
    unsafe { weights_forward_raw(problem, q, k, v, out, weights.as_mut_ptr()) }
}

/// [`attention_weights_forward`] into a new `(batch, heads, n, m)` buffer,
/// never zeroed first: every weight is written. (A decoder keeps every
/// layer's maps; zeroing them first was a `memset` of 71 MB per SmolLM2
/// prefill of 256 tokens.)
pub fn attention_weights_forward_new(
    problem: &AttentionProblem<'_>,
    q: (&[f32], HeadsLayout),
    k: (&[f32], HeadsLayout),
    v: (&[f32], HeadsLayout),
    out: (&mut [f32], HeadsLayout),
) -> Vec<f32> {
    let AttentionProblem {
        batch, heads, n, m, ..
    } = *problem;
    let len = batch * heads * n * m;
    let mut weights = Vec::with_capacity(len);
    // SAFETY: the buffer has room for every weight, each of which is
    // written before the length is set; it aliases nothing.
    unsafe {
        weights_forward_raw(problem, q, k, v, out, weights.as_mut_ptr());
        weights.set_len(len);
    }
    weights
}

/// # Safety
/// `weights` valid for writes of `batch · heads · n · m` values, aliasing
/// none of the other buffers; it need not be initialised.
unsafe fn weights_forward_raw(
    problem: &AttentionProblem<'_>,
    q: (&[f32], HeadsLayout),
    k: (&[f32], HeadsLayout),
    v: (&[f32], HeadsLayout),
    out: (&mut [f32], HeadsLayout),
    weights: *mut f32,
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
    if n == 0 || m == 0 || batch * heads == 0 {
        return;
    }
    let output = Shared(out.0.as_mut_ptr());
    let out_layout = out.1;
    let all_weights = Shared(weights);
    // Tasks of (head, block of query rows): a causal block's queries see
    // only the keys before its last one, so its products stop there (256
    // causal queries in blocks of 64 do 5/8 of the full products), and
    // more tasks than heads keep both cores busy to the end.
    let block_rows = if problem.causal.is_some() {
        WEIGHTS_BLOCK_ROWS
    } else {
        n
    };
    let blocks = n.div_ceil(block_rows);
    (0..batch * heads * blocks)
        .into_par_iter()
        .with_max_len(1)
        .for_each(|task| {
            let (head_index, block) = (task / blocks, task % blocks);
            let (b, h) = (head_index / heads, head_index % heads);
            let kv_head = problem.kv_head(h);
            let first_row = block * block_rows;
            let rows = block_rows.min(n - first_row);
            let keys = problem.key_end(first_row, rows);
            let block_weights = all_weights.pointer().add((head_index * n + first_row) * m);
            // SAFETY: the layouts were checked against the buffers; this
            // task alone writes rows first_row..first_row + rows of head h
            // of batch b, of the output and of the weights. The product
            // writes their first `keys` columns (none when d is 0), and
            // the rest are zeroed here, before any slice covers them.
            if d == 0 {
                std::ptr::write_bytes(block_weights, 0, rows * m);
            } else {
                matmul(
                    (rows, keys, d),
                    (block_weights, 1, m as isize),
                    (
                        q.0.as_ptr().add(q.1.at(b, h, first_row)),
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
                for row in 0..rows {
                    std::ptr::write_bytes(block_weights.add(row * m + keys), 0, m - keys);
                }
            }
            let block_weights = std::slice::from_raw_parts_mut(block_weights, rows * m);
            let bias = problem.bias(b, 0, m);
            for (i, row) in block_weights.chunks_exact_mut(m).enumerate() {
                let visible = problem.visible(first_row + i, 0, m);
                let (live, hidden) = row.split_at_mut(visible);
                hidden.fill(0.0);
                if let Some(bias) = bias {
                    simd::add(path, live, &bias[..visible]);
                }
                simd::softmax_in_place(path, live);
            }
            // SAFETY: as above; weights past `keys` are zero, so the
            // product over the first `keys` values is the whole one.
            matmul(
                (rows, dv, keys),
                (
                    output.pointer().add(out_layout.at(b, h, first_row)),
                    1,
                    out_layout.row_stride as isize,
                ),
                (block_weights.as_ptr(), 1, m as isize),
                (
                    v.0.as_ptr().add(v.1.at(b, kv_head, 0)),
                    1,
                    v.1.row_stride as isize,
                ),
                false,
                1.0,
            );
        });
}

/// Query rows per task of a causal [`attention_weights_forward`].
const WEIGHTS_BLOCK_ROWS: usize = 64;
