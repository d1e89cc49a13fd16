//! The fused attention kernels on plain `f32` slices (FlashAttention-2, Dao
//! 2023, Algorithms 1 and 2, adapted to a CPU).
//!
//! Forward: each task owns a block of query rows of one (batch, head) and
//! walks the key blocks, keeping per row a running maximum `mᵢ` and sum `ℓᵢ`
//! of `exp(sᵢⱼ − mᵢ)`; the output accumulator is rescaled by
//! `exp(m_old − m_new)` whenever the maximum grows and divided by `ℓᵢ` once at
//! the end. The score tile `S = scale · Q Kᵀ` and the update `O += P V` are
//! matrix products done by `gemm` on one thread (the tasks are the
//! parallelism); the softmax between them is the SIMD code of `simd.rs`.
//! Only the tiles and the per-row log-sum-exp `Lᵢ = mᵢ + ln ℓᵢ` are kept:
//! `O(n·d)` memory instead of the exact path's `O(n·m)` per head.
//!
//! Backward: the attention tile is recomputed as `P = exp(S − L)`, and with
//! `Dᵢ = Σⱼ dOᵢⱼ Oᵢⱼ` (which equals `Σⱼ Pᵢⱼ dPᵢⱼ`) the softmax backward is
//! `dS = P ∘ (dP − D)`. Each task owns a range of key blocks of one head and
//! so owns its rows of `dK` and `dV`; `dQ` contributions from several key
//! ranges of one head are summed at the end.
//!
//! Masks: causal (top-left aligned, query `i` sees keys `j ≤ i`) bounds each
//! row's key range, so tiles above the diagonal are never computed; key
//! padding adds `-inf` to padded keys and skips key blocks that are all
//! padding. A query with no visible key gets output 0 and `L = -inf`.

use rayon::prelude::*;

use super::simd::{self, SimdPath};

/// Tile sizes of the fused kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tiling {
    /// Query rows per tile (and per forward task).
    pub query_block: usize,
    /// Keys per tile.
    pub key_block: usize,
}

impl Default for Tiling {
    /// 128 × 512 tiles: the score tile (256 KB) and the `K`, `V` tiles of a
    /// d = 64 head stay in a core's L2 cache, and each `K`/`V` tile packed
    /// by `gemm` serves 128 query rows. On the 2-core AVX-512 machine this
    /// was tuned on, CPU-time throughput at n = 4096 was 146 (32 × 256),
    /// 156 (64 × 256), 164 (128 × 256) and 172 GFLOP/s (128 × 512).
    fn default() -> Self {
        Self {
            query_block: 128,
            key_block: 512,
        }
    }
}

/// One attention problem on contiguous row-major data: `q` is
/// `(batch, heads, n, d)`, `k` is `(batch, heads, m, d)`, `v` is
/// `(batch, heads, m, dv)`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Problem<'a> {
    pub batch: usize,
    pub heads: usize,
    pub n: usize,
    pub m: usize,
    pub d: usize,
    pub dv: usize,
    pub scale: f32,
    pub causal: bool,
    /// `(batch, m)`: 0 for a visible key, `-inf` for padding.
    pub key_bias: Option<&'a [f32]>,
    pub tiling: Tiling,
    pub path: SimdPath,
}

impl Problem<'_> {
    /// How many keys query `row` may see among the `count` keys starting
    /// at `start` (a prefix of them, by causality).
    #[inline]
    fn visible(&self, row: usize, start: usize, count: usize) -> usize {
        if self.causal {
            (row + 1).saturating_sub(start).min(count)
        } else {
            count
        }
    }

    /// Keys this block of queries may see at all: `0..end`.
    fn key_end(&self, first_row: usize, rows: usize) -> usize {
        if self.causal {
            (first_row + rows).min(self.m)
        } else {
            self.m
        }
    }

    /// Whether every key of `start..start + count` is padding in `batch`.
    fn all_padding(&self, batch: usize, start: usize, count: usize) -> bool {
        self.key_bias.is_some_and(|bias| {
            bias[batch * self.m + start..batch * self.m + start + count]
                .iter()
                .all(|b| *b == f32::NEG_INFINITY)
        })
    }

    fn bias(&self, batch: usize, start: usize, count: usize) -> Option<&[f32]> {
        self.key_bias
            .map(|bias| &bias[batch * self.m + start..batch * self.m + start + count])
    }
}

/// `dst (rows × cols) = alpha · dst + beta · lhs (rows × inner) · rhs (inner × cols)`
/// on one thread, all matrices given by pointer and (column, row) strides.
///
/// # Safety
/// Every pointer must address a matrix of the stated size and strides, and
/// `dst` must not overlap `lhs` or `rhs`.
#[allow(clippy::too_many_arguments)]
#[inline]
unsafe fn matmul(
    (rows, cols, inner): (usize, usize, usize),
    dst: (*mut f32, isize, isize),
    lhs: (*const f32, isize, isize),
    rhs: (*const f32, isize, isize),
    accumulate: bool,
    beta: f32,
) {
    gemm::gemm(
        rows,
        cols,
        inner,
        dst.0,
        dst.1,
        dst.2,
        accumulate,
        lhs.0,
        lhs.1,
        lhs.2,
        rhs.0,
        rhs.1,
        rhs.2,
        1.0,
        beta,
        false,
        false,
        false,
        gemm::Parallelism::None,
    )
}

/// Fused forward: fills `out` `(batch, heads, n, dv)` and `lse`
/// `(batch, heads, n)`.
pub(crate) fn forward(
    problem: &Problem,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &mut [f32],
    lse: &mut [f32],
) {
    let Problem { n, m, d, dv, .. } = *problem;
    let block = problem.tiling.query_block;
    if n == 0 || dv == 0 {
        return;
    }
    out.par_chunks_mut(n * dv)
        .zip(lse.par_chunks_mut(n))
        .enumerate()
        .for_each(|(head_index, (out_head, lse_head))| {
            let batch = head_index / problem.heads;
            let q_head = &q[head_index * n * d..(head_index + 1) * n * d];
            let k_head = &k[head_index * m * d..(head_index + 1) * m * d];
            let v_head = &v[head_index * m * dv..(head_index + 1) * m * dv];
            out_head
                .par_chunks_mut(block * dv)
                .zip(lse_head.par_chunks_mut(block))
                .enumerate()
                .for_each(|(block_index, (out_block, lse_block))| {
                    let first_row = block_index * block;
                    forward_block(
                        problem,
                        batch,
                        first_row,
                        &q_head[first_row * d..(first_row + lse_block.len()) * d],
                        k_head,
                        v_head,
                        out_block,
                        lse_block,
                    );
                });
        });
}

/// One block of query rows against all its visible keys.
#[allow(clippy::too_many_arguments)]
fn forward_block(
    problem: &Problem,
    batch: usize,
    first_row: usize,
    q_block: &[f32],
    k_head: &[f32],
    v_head: &[f32],
    out_block: &mut [f32],
    lse_block: &mut [f32],
) {
    let Problem { dv, path, .. } = *problem;
    let rows = lse_block.len();
    let key_block = problem.tiling.key_block;
    let mut row_max = vec![f32::NEG_INFINITY; rows];
    let mut row_sum = vec![0f32; rows];
    // One score tile per thread, reused across tasks: a fresh 256 KB
    // allocation per task is a fresh mmap, paid again in page faults.
    SCORE_TILE.with_borrow_mut(|scores| {
        if scores.len() < rows * key_block {
            scores.resize(rows * key_block, 0.0);
        }
        forward_tiles(
            problem,
            batch,
            first_row,
            q_block,
            k_head,
            v_head,
            out_block,
            scores,
            &mut row_max,
            &mut row_sum,
        );
    });
    for r in 0..rows {
        let out_row = &mut out_block[r * dv..(r + 1) * dv];
        if row_sum[r] > 0.0 {
            simd::scale(path, out_row, 1.0 / row_sum[r]);
            lse_block[r] = row_max[r] + row_sum[r].ln();
        } else {
            out_row.fill(0.0);
            lse_block[r] = f32::NEG_INFINITY;
        }
    }
}

thread_local! {
    static SCORE_TILE: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The key-tile loop of [`forward_block`]: accumulates the unnormalised
/// output and each row's running maximum and sum.
#[allow(clippy::too_many_arguments)]
fn forward_tiles(
    problem: &Problem,
    batch: usize,
    first_row: usize,
    q_block: &[f32],
    k_head: &[f32],
    v_head: &[f32],
    out_block: &mut [f32],
    scores: &mut [f32],
    row_max: &mut [f32],
    row_sum: &mut [f32],
) {
    let Problem { d, dv, path, .. } = *problem;
    let rows = row_max.len();
    let key_block = problem.tiling.key_block;
    out_block.fill(0.0);

    let key_end = problem.key_end(first_row, rows);
    for key_start in (0..key_end).step_by(key_block) {
        let count = key_block.min(key_end - key_start);
        if problem.all_padding(batch, key_start, count) {
            continue;
        }
        let tile = &mut scores[..rows * count];
        // SAFETY: q_block is rows × d, k rows key_start.. are count × d read
        // as the transposed d × count, tile is rows × count; all disjoint.
        unsafe {
            matmul(
                (rows, count, d),
                (tile.as_mut_ptr(), 1, count as isize),
                (q_block.as_ptr(), 1, d as isize),
                (k_head.as_ptr().add(key_start * d), d as isize, 1),
                false,
                problem.scale,
            );
        }
        let bias = problem.bias(batch, key_start, count);
        for (r, row) in tile.chunks_exact_mut(count).enumerate() {
            let visible = problem.visible(first_row + r, key_start, count);
            let (live, hidden) = row.split_at_mut(visible);
            hidden.fill(0.0);
            if visible == 0 {
                continue;
            }
            if let Some(bias) = bias {
                simd::add(path, live, &bias[..visible]);
            }
            let new_max = row_max[r].max(simd::row_max(path, live));
            if new_max == f32::NEG_INFINITY {
                // Every key so far is padding: nothing to add.
                live.fill(0.0);
                continue;
            }
            let sum = simd::exp_shift_sum(path, live, new_max);
            // exp(-inf) = 0 the first time a row sees a key.
            let correction = simd::exp_portable(row_max[r] - new_max);
            if correction != 1.0 {
                simd::scale(path, &mut out_block[r * dv..(r + 1) * dv], correction);
            }
            row_sum[r] = row_sum[r] * correction + sum;
            row_max[r] = new_max;
        }
        // SAFETY: tile is rows × count, v rows key_start.. are count × dv,
        // out_block is rows × dv; all disjoint.
        unsafe {
            matmul(
                (rows, dv, count),
                (out_block.as_mut_ptr(), 1, dv as isize),
                (tile.as_ptr(), 1, count as isize),
                (v_head.as_ptr().add(key_start * dv), 1, dv as isize),
                true,
                1.0,
            );
        }
    }
}

/// The gradients of one fused attention call.
pub(crate) struct Gradients {
    pub q: Vec<f32>,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
}

/// Fused backward from the forward's `out` and `lse` and the output
/// gradient `grad_out` `(batch, heads, n, dv)`.
pub(crate) fn backward(
    problem: &Problem,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &[f32],
    lse: &[f32],
    grad_out: &[f32],
) -> Gradients {
    let Problem {
        batch,
        heads,
        n,
        m,
        d,
        dv,
        ..
    } = *problem;
    let key_block = problem.tiling.key_block;
    let mut grads = Gradients {
        q: vec![0f32; batch * heads * n * d],
        k: vec![0f32; batch * heads * m * d],
        v: vec![0f32; batch * heads * m * dv],
    };
    if n == 0 || m == 0 {
        return grads;
    }
    // Dᵢ = rowsum(dO ∘ O): one number per query row.
    let delta: Vec<f32> = grad_out
        .par_chunks(dv.max(1))
        .zip(out.par_chunks(dv.max(1)))
        .map(|(g, o)| g.iter().zip(o).map(|(a, b)| a * b).sum())
        .collect();
    // Enough key ranges per head to keep every thread busy, each at least
    // one key block long.
    let key_blocks = m.div_ceil(key_block);
    let wanted = (2 * rayon::current_num_threads()).div_ceil(batch * heads);
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
    problem: &Problem,
    head: &HeadData,
    first_key: usize,
    dq: &mut [f32],
    dk_range: &mut [f32],
    dv_range: &mut [f32],
) {
    let Problem { n, d, dv, path, .. } = *problem;
    let Tiling {
        query_block,
        key_block,
    } = problem.tiling;
    // d and dv are at least 1: the public entry points refuse empty
    // dimensions before any kernel runs.
    let key_count_total = dk_range.len() / d;
    let mut probabilities = vec![0f32; query_block * key_block];
    let mut grad_scores = vec![0f32; query_block * key_block];
    for local_start in (0..key_count_total).step_by(key_block) {
        let key_start = first_key + local_start;
        let count = key_block.min(key_count_total - local_start);
        if problem.all_padding(head.batch, key_start, count) {
            continue;
        }
        let bias = problem.bias(head.batch, key_start, count);
        // Causal: queries before key_start see none of these keys.
        let first_query = if problem.causal {
            key_start / query_block * query_block
        } else {
            0
        };
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
