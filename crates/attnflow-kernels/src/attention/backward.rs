//! The fused backward (training): `P` recomputed from the log-sum-exp,
//! tasks over (head, key range) owning their `dK`, `dV` rows.

use rayon::prelude::*;

use super::{matmul, AttentionProblem, HeadsLayout, Tiling};
use crate::simd;

/// The gradients of one fused attention call, each contiguous in the
/// shape of its input.
pub struct AttentionGradients {
    pub q: Vec<f32>,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
}

/// Fused backward (training) from the forward's `out` and `lse` and the
/// output gradient `grad_out`, all contiguous `(batch, heads, rows,
/// width)`, with `kv_heads == heads` (grouped heads are expanded by the
/// caller, so each task owns its `dK`, `dV` rows).
pub fn attention_backward(
    problem: &AttentionProblem<'_>,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &[f32],
    lse: &[f32],
    grad_out: &[f32],
) -> AttentionGradients {
    let AttentionProblem {
        batch,
        heads,
        n,
        m,
        d,
        dv,
        ..
    } = *problem;
    assert_eq!(
        problem.kv_heads, heads,
        "attention backward: expand grouped key/value heads first"
    );
    problem.check([
        (q.len(), HeadsLayout::contiguous(heads, n, d)),
        (k.len(), HeadsLayout::contiguous(heads, m, d)),
        (v.len(), HeadsLayout::contiguous(heads, m, dv)),
        (out.len(), HeadsLayout::contiguous(heads, n, dv)),
    ]);
    assert!(
        lse.len() == batch * heads * n && grad_out.len() == out.len(),
        "attention backward: lse and grad_out sizes"
    );
    let key_block = problem.tiling.key_block;
    let mut grads = AttentionGradients {
        q: vec![0f32; batch * heads * n * d],
        k: vec![0f32; batch * heads * m * d],
        v: vec![0f32; batch * heads * m * dv],
    };
    if n == 0 || m == 0 || d == 0 || dv == 0 {
        return grads;
    }
    // Dᵢ = rowsum(dO ∘ O): one number per query row.
    let path = problem.path;
    let delta: Vec<f32> = grad_out
        .par_chunks(dv)
        .zip(out.par_chunks(dv))
        .map(|(g, o)| simd::dot(path, g, o))
        .collect();
    // Enough key ranges per head for BACKWARD_TASKS tasks in all, each at
    // least one key tile long. The split depends on the shape only, so
    // the dQ partials (added in range order) are the same bits on any
    // thread count.
    let key_blocks = m.div_ceil(key_block);
    let wanted = BACKWARD_TASKS.div_ceil(batch * heads);
    let ranges = wanted.clamp(1, key_blocks);
    let blocks_per_range = key_blocks.div_ceil(ranges);
    let range_keys = blocks_per_range * key_block;

    grads
        .q
        .par_chunks_mut(n * d)
        .zip(grads.k.par_chunks_mut(m * d))
        .zip(grads.v.par_chunks_mut(m * dv))
        .enumerate()
        .for_each(|(head_index, ((dq_head, dk_head), dv_head))| {
            let head = HeadData {
                batch: head_index / heads,
                q: &q[head_index * n * d..(head_index + 1) * n * d],
                k: &k[head_index * m * d..(head_index + 1) * m * d],
                v: &v[head_index * m * dv..(head_index + 1) * m * dv],
                lse: &lse[head_index * n..(head_index + 1) * n],
                delta: &delta[head_index * n..(head_index + 1) * n],
                grad_out: &grad_out[head_index * n * dv..(head_index + 1) * n * dv],
            };
            if ranges == 1 {
                backward_keys(problem, &head, 0, dq_head, dk_head, dv_head);
                return;
            }
            let partial_dq: Vec<Vec<f32>> = dk_head
                .par_chunks_mut(range_keys * d)
                .zip(dv_head.par_chunks_mut(range_keys * dv))
                .enumerate()
                .map(|(range, (dk_range, dv_range))| {
                    let mut dq = vec![0f32; n * d];
                    backward_keys(
                        problem,
                        &head,
                        range * range_keys,
                        &mut dq,
                        dk_range,
                        dv_range,
                    );
                    dq
                })
                .collect();
            for part in partial_dq {
                for (total, value) in dq_head.iter_mut().zip(part) {
                    *total += value;
                }
            }
        });
    grads
}

/// Tasks the backward aims for (more than any core count it runs on, so
/// every core gets work; fixed, so the split is the same everywhere).
const BACKWARD_TASKS: usize = 16;

/// The inputs of one (batch, head) for the backward.
struct HeadData<'a> {
    batch: usize,
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    lse: &'a [f32],
    delta: &'a [f32],
    grad_out: &'a [f32],
}

/// Backward over the keys `first_key..first_key + dk_range.len() / d`:
/// writes their `dK`, `dV` rows and adds their contribution to `dq`.
fn backward_keys(
    problem: &AttentionProblem<'_>,
    head: &HeadData,
    first_key: usize,
    dq: &mut [f32],
    dk_range: &mut [f32],
    dv_range: &mut [f32],
) {
    let AttentionProblem { n, d, dv, path, .. } = *problem;
    let Tiling {
        query_block,
        key_block,
    } = problem.tiling;
    let key_count_total = dk_range.len() / d;
    // Tiles as large as this head needs: a short sequence's is a sliver of
    // the full 128 × 512, and zeroing 512 KB per head and key range was a
    // sixth of a small model's training step.
    let tile = query_block.min(n) * key_block.min(key_count_total);
    let mut probabilities = vec![0f32; tile];
    let mut grad_scores = vec![0f32; tile];
    for local_start in (0..key_count_total).step_by(key_block) {
        let key_start = first_key + local_start;
        let count = key_block.min(key_count_total - local_start);
        if problem.all_padding(head.batch, key_start, count) {
            continue;
        }
        let bias = problem.bias(head.batch, key_start, count);
        // Causal: queries before the first that sees key_start see none of
        // these keys.
        let first_query = problem.first_query(key_start) / query_block * query_block;
        let dk_tile = dk_range[local_start * d..(local_start + count) * d].as_mut_ptr();
        let dv_tile = dv_range[local_start * dv..(local_start + count) * dv].as_mut_ptr();
        for query_start in (first_query..n).step_by(query_block) {
            let rows = query_block.min(n - query_start);
            let p_tile = &mut probabilities[..rows * count];
            let ds_tile = &mut grad_scores[..rows * count];
            let q_rows = &head.q[query_start * d..(query_start + rows) * d];
            let grad_out_rows = &head.grad_out[query_start * dv..(query_start + rows) * dv];
            // SAFETY (all matmuls below): every pointer addresses the tile
            // named beside it with the stated strides; destinations are
            // buffers of this task, disjoint from the sources.
            unsafe {
                // S = scale · Q Kᵀ
                matmul(
                    (rows, count, d),
                    (p_tile.as_mut_ptr(), 1, count as isize),
                    (q_rows.as_ptr(), 1, d as isize),
                    (head.k.as_ptr().add(key_start * d), d as isize, 1),
                    false,
                    problem.scale,
                );
            }
            let mut any_visible = false;
            for (r, row) in p_tile.chunks_exact_mut(count).enumerate() {
                let query = query_start + r;
                let visible = problem.visible(query, key_start, count);
                let (live, hidden) = row.split_at_mut(visible);
                hidden.fill(0.0);
                let lse = head.lse[query];
                if visible == 0 || lse == f32::NEG_INFINITY {
                    live.fill(0.0);
                    continue;
                }
                any_visible = true;
                if let Some(bias) = bias {
                    simd::add(path, live, &bias[..visible]);
                }
                // P = exp(S − L), the forward's normalised weights.
                simd::exp_shift_sum(path, live, lse);
            }
            if !any_visible {
                continue;
            }
            unsafe {
                // dV += Pᵀ dO
                matmul(
                    (count, dv, rows),
                    (dv_tile, 1, dv as isize),
                    (p_tile.as_ptr(), count as isize, 1),
                    (grad_out_rows.as_ptr(), 1, dv as isize),
                    true,
                    1.0,
                );
                // dP = dO Vᵀ
                matmul(
                    (rows, count, dv),
                    (ds_tile.as_mut_ptr(), 1, count as isize),
                    (grad_out_rows.as_ptr(), 1, dv as isize),
                    (head.v.as_ptr().add(key_start * dv), dv as isize, 1),
                    false,
                    1.0,
                );
            }
            for (r, (p_row, ds_row)) in p_tile
                .chunks_exact(count)
                .zip(ds_tile.chunks_exact_mut(count))
                .enumerate()
            {
                // dS = P ∘ (dP − D)
                simd::softmax_grad(path, p_row, ds_row, head.delta[query_start + r]);
            }
            unsafe {
                // dQ += scale · dS K
                matmul(
                    (rows, d, count),
                    (dq.as_mut_ptr().add(query_start * d), 1, d as isize),
                    (ds_tile.as_ptr(), 1, count as isize),
                    (head.k.as_ptr().add(key_start * d), 1, d as isize),
                    true,
                    problem.scale,
                );
                // dK += scale · dSᵀ Q
                matmul(
                    (count, d, rows),
                    (dk_tile, 1, d as isize),
                    (ds_tile.as_ptr(), count as isize, 1),
                    (q_rows.as_ptr(), 1, d as isize),
                    true,
                    problem.scale,
                );
            }
        }
    }
}
