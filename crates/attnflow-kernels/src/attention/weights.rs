//! Attention with its weights written out, for inspection.

use std::cell::RefCell;

use rayon::prelude::*;

use super::{AttentionProblem, HeadsLayout, Shared};
use crate::activation::Activation;
use crate::panel::{fill_panel_at, panel_rows, PANEL};
use crate::simd;

thread_local! {
    /// A panel of keys or values for one task's products.
    static MAP_PANEL: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

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
                // Scores on the register tiles of the linear maps: keys,
                // 64 at a time, laid out as a panel (scaled, so the
                // product is the score), the queries read in place. The
                // `gemm` crate packed both sides for every one of these
                // small products: half its speed on a SmolLM2 prefill.
                let q_rows = q.0.as_ptr().add(q.1.at(b, h, first_row));
                let key_row = |key: usize| {
                    std::slice::from_raw_parts(k.0.as_ptr().add(k.1.at(b, kv_head, key)), d)
                };
                MAP_PANEL.with_borrow_mut(|panel| {
                    panel.resize(PANEL * d, 0.0);
                    for index in 0..keys.div_ceil(PANEL) {
                        fill_panel_at(index, panel, (keys, d), |key, out| {
                            for (out, &value) in out.iter_mut().zip(key_row(key)) {
                                *out = value * problem.scale;
                            }
                        });
                        panel_rows(
                            path,
                            block_weights.add(index * PANEL),
                            m,
                            q_rows,
                            q.1.row_stride,
                            rows,
                            panel.as_ptr(),
                            d,
                            PANEL.min(keys - index * PANEL),
                            None,
                            Activation::Identity,
                        );
                    }
                });
                for row in 0..rows {
                    std::ptr::write_bytes(block_weights.add(row * m + keys), 0, m - keys);
                }
            }
            let block_weights = std::slice::from_raw_parts_mut(block_weights, rows * m);
            let bias = problem.bias(b, 0, m);
            for (i, row) in block_weights.chunks_exact_mut(m).enumerate() {
                // Columns past `keys` are zero already; a row sees a prefix
                // of the block's keys.
                let visible = problem.visible(first_row + i, 0, m);
                let (live, hidden) = row[..keys].split_at_mut(visible);
                hidden.fill(0.0);
                if let Some(bias) = bias {
                    simd::add(path, live, &bias[..visible]);
                }
                simd::softmax_in_place(path, live);
            }
            // SAFETY: as above; weights past `keys` are zero, so the
            // product over the first `keys` values is the whole one. The
            // values are a panel as they lie when a head's rows are 64
            // contiguous values (the layout `p·64 + j` is `V[p][j]`).
            let v_rows = v.0.as_ptr().add(v.1.at(b, kv_head, 0));
            let out_rows = output.pointer().add(out_layout.at(b, h, first_row));
            let contiguous = dv == PANEL && v.1.row_stride == PANEL;
            MAP_PANEL.with_borrow_mut(|panel| {
                for index in 0..dv.div_ceil(PANEL) {
                    let first = index * PANEL;
                    let width = PANEL.min(dv - first);
                    let values = if contiguous {
                        v_rows
                    } else {
                        panel.resize(PANEL * keys, 0.0);
                        for key in 0..keys {
                            std::ptr::copy_nonoverlapping(
                                v_rows.add(key * v.1.row_stride + first),
                                panel.as_mut_ptr().add(key * PANEL),
                                width,
                            );
                        }
                        panel.as_ptr()
                    };
                    panel_rows(
                        path,
                        out_rows.add(first),
                        out_layout.row_stride,
                        block_weights.as_ptr(),
                        m,
                        rows,
                        values,
                        keys,
                        width,
                        None,
                        Activation::Identity,
                    );
                }
            });
        });
}

/// Query rows per task of a causal [`attention_weights_forward`].
const WEIGHTS_BLOCK_ROWS: usize = 64;
