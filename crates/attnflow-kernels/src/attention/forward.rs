//! The fused forward: tasks over (batch, head, query block), each walking
//! its key tiles with an online softmax.
//!
//! Products: the register tiles of `tiles.rs` (keys packed once per head,
//! read by every query block) when the value width has tiles of its own
//! and key tiles are whole panels; `gemm` calls otherwise.

use rayon::prelude::*;

use super::tiles::{self, PANEL};
use super::{matmul, AttentionProblem, HeadsLayout, Shared};
use crate::simd;

/// The keys of every (batch, key/value head), packed for the score tiles.
struct PackedKeys<'a> {
    values: &'a [f32],
    /// Floats per head.
    per_head: usize,
}

/// Packs the keys of every (batch, key/value head) into `buffer`, in
/// parallel.
fn pack_all_keys<'a>(
    problem: &AttentionProblem<'_>,
    k: (&[f32], HeadsLayout),
    buffer: &'a mut Vec<f32>,
) -> PackedKeys<'a> {
    let AttentionProblem {
        batch,
        kv_heads,
        m,
        d,
        ..
    } = *problem;
    let per_head = tiles::packed_len(m, d);
    buffer.resize(batch * kv_heads * per_head, 0.0);
    buffer
        .par_chunks_mut(per_head.max(1))
        .enumerate()
        .for_each(|(index, packed)| {
            let (b, h) = (index / kv_heads, index % kv_heads);
            // SAFETY: `check` keeps the head's m rows of d values inside k.
            unsafe {
                tiles::pack_keys(
                    k.0.as_ptr().add(k.1.at(b, h, 0)),
                    k.1.row_stride,
                    m,
                    d,
                    packed,
                )
            };
        });
    PackedKeys {
        values: buffer,
        per_head,
    }
}

thread_local! {
    /// Packed keys, kept by the thread that calls the forward (taken out
    /// while the tasks read it, so nothing stays borrowed across them).
    static PACKED_KEYS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Fused forward: `out = softmax(scale·QKᵀ + mask)V`, and when asked the
/// per-row log-sum-exp into `lse` (`(batch, heads, n)` contiguous). Runs
/// on the rayon pool; the result does not depend on the number of
/// threads. `out` must not overlap `q`, `k` or `v`.
pub fn attention_forward(
    problem: &AttentionProblem<'_>,
    q: (&[f32], HeadsLayout),
    k: (&[f32], HeadsLayout),
    v: (&[f32], HeadsLayout),
    out: (&mut [f32], HeadsLayout),
    lse: Option<&mut [f32]>,
) {
    let AttentionProblem {
        batch, heads, n, ..
    } = *problem;
    problem.check([
        (q.0.len(), q.1),
        (k.0.len(), k.1),
        (v.0.len(), v.1),
        (out.0.len(), out.1),
    ]);
    if let Some(lse) = &lse {
        assert_eq!(
            lse.len(),
            batch * heads * n,
            "attention: lse (batch, heads, n)"
        );
    }
    if n == 0 || problem.dv == 0 || batch * heads == 0 {
        return;
    }
    let block = problem.tiling.query_block;
    let blocks = n.div_ceil(block);
    let output = Shared(out.0.as_mut_ptr());
    let out_layout = out.1;
    let lse_target = lse.map(|lse| Shared(lse.as_mut_ptr()));
    let use_tiles =
        tiles::has_value_tiles(problem.dv) && problem.tiling.key_block.is_multiple_of(PANEL);
    let mut buffer = PACKED_KEYS.take();
    let packed = use_tiles.then(|| pack_all_keys(problem, k, &mut buffer));
    let packed = packed.as_ref();
    (0..batch * heads * blocks)
        .into_par_iter()
        .with_max_len(1)
        .for_each(|task| {
            let (head_index, block_index) = (task / blocks, task % blocks);
            let (b, h) = (head_index / heads, head_index % heads);
            let first_row = block_index * block;
            let rows = block.min(n - first_row);
            // SAFETY: this task alone writes rows first_row.. of head h of
            // batch b of the output and of the log-sum-exp; `check` keeps
            // every index inside the buffers.
            unsafe {
                let kv_index = b * problem.kv_heads + problem.kv_head(h);
                let keys = match packed {
                    Some(packed) => Keys::Packed(
                        &packed.values[kv_index * packed.per_head..][..packed.per_head],
                    ),
                    None => Keys::Rows(k),
                };
                forward_block(
                    problem,
                    b,
                    h,
                    first_row,
                    rows,
                    q,
                    keys,
                    v,
                    (output.pointer(), out_layout),
                    lse_target.map(|l| l.pointer().add(head_index * n + first_row)),
                );
            }
        });
    PACKED_KEYS.set(buffer);
}

/// Fused forward over sequences of different lengths packed back to back,
/// with no padding rows: sequence `s` is the `lengths[s]` rows after the
/// sequences before it, in `q`, `k`, `v` and `out` alike (self-attention,
/// so queries and keys share rows; each layout's batch stride is not
/// read). Each sequence attends to its own keys only, as
/// [`attention_forward`] with `batch = 1` and `n = m = lengths[s]` would,
/// and gives those bits; all sequences' tasks share one parallel region.
/// `problem` gives the heads, widths, scale, causality, tiling and path;
/// its `batch`, `n` and `m` are not read, and it has no key bias (there is
/// no padding to mask).
pub fn attention_forward_packed(
    problem: &AttentionProblem<'_>,
    lengths: &[usize],
    q: (&[f32], HeadsLayout),
    k: (&[f32], HeadsLayout),
    v: (&[f32], HeadsLayout),
    out: (&mut [f32], HeadsLayout),
) {
    assert!(
        problem.key_bias.is_none(),
        "attention: packed sequences have no padding to mask"
    );
    let AttentionProblem {
        heads, kv_heads, d, ..
    } = *problem;
    let block = problem.tiling.query_block.max(1);
    let use_tiles =
        tiles::has_value_tiles(problem.dv) && problem.tiling.key_block.is_multiple_of(PANEL);
    let packed_head = |length: usize| {
        if use_tiles {
            tiles::packed_len(length, d)
        } else {
            0
        }
    };
    // Sequence s as a problem of its own: its rows found by shifting each
    // layout's offset to its first row, its packed keys after those of the
    // sequences before it. Walking the lengths finds the sequence of a
    // task (a batch has tens of them), so nothing is allocated.
    let sequence = |s: usize| AttentionProblem {
        batch: 1,
        n: lengths[s],
        m: lengths[s],
        ..*problem
    };
    let shift = |layout: HeadsLayout, start: usize| HeadsLayout {
        offset: layout.offset + start * layout.row_stride,
        ..layout
    };
    // (sequence, its first row, where its packed keys start, index within
    // it) of item `index` when each sequence has `per(length)` items.
    let locate = |mut index: usize, per: &dyn Fn(usize) -> usize| {
        let (mut start, mut keys) = (0, 0);
        for (s, &length) in lengths.iter().enumerate() {
            let items = per(length);
            if index < items {
                return (s, start, keys, index);
            }
            index -= items;
            start += length;
            keys += kv_heads * packed_head(length);
        }
        unreachable!("attention: item past the last sequence")
    };
    let mut start = 0;
    for (s, &length) in lengths.iter().enumerate() {
        sequence(s).check([
            (q.0.len(), shift(q.1, start)),
            (k.0.len(), shift(k.1, start)),
            (v.0.len(), shift(v.1, start)),
            (out.0.len(), shift(out.1, start)),
        ]);
        start += length;
    }
    if problem.dv == 0 || heads == 0 {
        return;
    }
    let mut buffer = PACKED_KEYS.take();
    if use_tiles {
        let total = lengths.iter().map(|&l| kv_heads * packed_head(l)).sum();
        buffer.resize(total, 0.0);
        let target = Shared(buffer.as_mut_ptr());
        (0..lengths.len() * kv_heads)
            .into_par_iter()
            .for_each(|index| {
                let (s, start, keys, h) = locate(index, &|_| kv_heads);
                let length = lengths[s];
                // SAFETY: `check` keeps the head's rows inside k; each
                // (sequence, head) packs into its own part of the buffer,
                // which holds them all.
                unsafe {
                    let packed = std::slice::from_raw_parts_mut(
                        target.pointer().add(keys + h * packed_head(length)),
                        packed_head(length),
                    );
                    tiles::pack_keys(
                        k.0.as_ptr().add(shift(k.1, start).at(0, h, 0)),
                        k.1.row_stride,
                        length,
                        d,
                        packed,
                    )
                };
            });
    }
    let tasks_of = |length: usize| heads * length.div_ceil(block);
    let count: usize = lengths.iter().map(|&l| tasks_of(l)).sum();
    let output = Shared(out.0.as_mut_ptr());
    let packed_keys = &buffer;
    (0..count).into_par_iter().with_max_len(1).for_each(|task| {
        let (s, start, keys, index) = locate(task, &tasks_of);
        let sequence = sequence(s);
        let blocks = sequence.n.div_ceil(block);
        let (h, first) = (index / blocks, (index % blocks) * block);
        let keys = if use_tiles {
            let per_head = packed_head(sequence.m);
            let at = keys + problem.kv_head(h) * per_head;
            Keys::Packed(&packed_keys[at..at + per_head])
        } else {
            Keys::Rows((k.0, shift(k.1, start)))
        };
        // SAFETY: this task alone writes rows first.. of head h of
        // sequence s of the output; `check` keeps every index inside
        // the buffers.
        unsafe {
            forward_block(
                &sequence,
                0,
                h,
                first,
                block.min(sequence.n - first),
                (q.0, shift(q.1, start)),
                keys,
                (v.0, shift(v.1, start)),
                (output.pointer(), shift(out.1, start)),
                None,
            );
        }
    });
    PACKED_KEYS.set(buffer);
}

/// Where a task reads its keys from.
#[derive(Clone, Copy)]
enum Keys<'a> {
    /// This head's keys packed in panels (`tiles::pack_keys`).
    Packed(&'a [f32]),
    /// The keys where they lie (products by `gemm`).
    Rows((&'a [f32], HeadsLayout)),
}

thread_local! {
    /// One score tile per thread, reused across tasks: a fresh 256 KB
    /// allocation per task is a fresh mmap, paid again in page faults.
    static SCORE_TILE: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    /// The running maximum and sum of a task's rows.
    static ROW_STATE: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// One block of query rows against all its visible keys.
///
/// # Safety
/// `out` (and `lse`, for `rows` values) must be writable at the rows of
/// this block, which no other task writes.
#[allow(clippy::too_many_arguments)]
unsafe fn forward_block(
    problem: &AttentionProblem<'_>,
    batch: usize,
    head: usize,
    first_row: usize,
    rows: usize,
    q: (&[f32], HeadsLayout),
    keys: Keys<'_>,
    v: (&[f32], HeadsLayout),
    out: (*mut f32, HeadsLayout),
    lse: Option<*mut f32>,
) {
    let AttentionProblem { d, dv, path, .. } = *problem;
    let key_block = problem.tiling.key_block;
    let kv_head = problem.kv_head(head);
    let q_block = q.0.as_ptr().add(q.1.at(batch, head, first_row));
    let v_head = v.0.as_ptr().add(v.1.at(batch, kv_head, 0));
    let out_block = out.0.add(out.1.at(batch, head, first_row));
    let (q_row, v_row, out_row) = (
        q.1.row_stride as isize,
        v.1.row_stride as isize,
        out.1.row_stride,
    );
    // Score rows are whole panels wide for the tiles.
    let tile_width = match keys {
        Keys::Packed(_) => key_block.div_ceil(PANEL) * PANEL,
        Keys::Rows(_) => key_block,
    };
    ROW_STATE.with_borrow_mut(|state| {
        state.clear();
        state.resize(rows, f32::NEG_INFINITY);
        state.resize(2 * rows, 0.0);
        let (row_max, row_sum) = state.split_at_mut(rows);
        for r in 0..rows {
            std::ptr::write_bytes(out_block.add(r * out_row), 0, dv);
        }
        SCORE_TILE.with_borrow_mut(|scores| {
            if scores.len() < rows * tile_width {
                scores.resize(rows * tile_width, 0.0);
            }
            let key_end = problem.key_end(first_row, rows);
            for key_start in (0..key_end).step_by(key_block) {
                let count = key_block.min(key_end - key_start);
                if problem.all_padding(batch, key_start, count) {
                    continue;
                }
                // Score rows `stride` apart: the count rounded up to whole
                // panels for the tiles.
                let stride = match keys {
                    Keys::Packed(_) => count.div_ceil(PANEL) * PANEL,
                    Keys::Rows(_) => count,
                };
                let tile = &mut scores[..rows * stride];
                // S = scale · Q Kᵀ. SAFETY: Q rows first_row.. (rows × d),
                // the keys key_start.. (packed panels, or rows read as the
                // transposed d × count), the tile rows × stride; all inside
                // their buffers, disjoint.
                match keys {
                    Keys::Packed(panels) => tiles::scores(
                        path,
                        q_block,
                        q_row as usize,
                        rows,
                        panels.as_ptr().add(key_start * d),
                        d,
                        count,
                        tile.as_mut_ptr(),
                        stride,
                        problem.scale,
                    ),
                    Keys::Rows(k) => {
                        let k_head = k.0.as_ptr().add(k.1.at(batch, kv_head, 0));
                        let k_row = k.1.row_stride as isize;
                        matmul(
                            (rows, count, d),
                            (tile.as_mut_ptr(), 1, count as isize),
                            (q_block, 1, q_row),
                            (k_head.offset(key_start as isize * k_row), k_row, 1),
                            false,
                            problem.scale,
                        )
                    }
                }
                let bias = problem.bias(batch, key_start, count);
                for (r, row) in tile.chunks_exact_mut(stride).enumerate() {
                    let row = &mut row[..count];
                    let visible = problem.visible(first_row + r, key_start, count);
                    let (live, hidden) = row.split_at_mut(visible);
                    hidden.fill(0.0);
                    if visible == 0 {
                        continue;
                    }
                    let (new_max, sum, correction) = simd::online_softmax(
                        path,
                        live,
                        bias.map(|bias| &bias[..visible]),
                        row_max[r],
                    );
                    if new_max == f32::NEG_INFINITY {
                        // Every key so far is padding: nothing to add.
                        continue;
                    }
                    if correction != 1.0 {
                        let row_out =
                            std::slice::from_raw_parts_mut(out_block.add(r * out_row), dv);
                        simd::scale(path, row_out, correction);
                    }
                    row_sum[r] = row_sum[r] * correction + sum;
                    row_max[r] = new_max;
                }
                // O += P V. SAFETY: tile rows × stride, V rows key_start..
                // count × dv, the output block rows × dv; disjoint.
                let v_tile = v_head.offset(key_start as isize * v_row);
                match keys {
                    Keys::Packed(_) => tiles::accumulate_values(
                        path,
                        tile.as_ptr(),
                        stride,
                        rows,
                        count,
                        v_tile,
                        v_row as usize,
                        dv,
                        out_block,
                        out_row,
                    ),
                    Keys::Rows(_) => matmul(
                        (rows, dv, count),
                        (out_block, 1, out_row as isize),
                        (tile.as_ptr(), 1, count as isize),
                        (v_tile, 1, v_row),
                        true,
                        1.0,
                    ),
                }
            }
        });
        for r in 0..rows {
            let row_out = std::slice::from_raw_parts_mut(out_block.add(r * out_row), dv);
            let log_sum_exp = if row_sum[r] > 0.0 {
                simd::scale(path, row_out, 1.0 / row_sum[r]);
                row_max[r] + row_sum[r].ln()
            } else {
                row_out.fill(0.0);
                f32::NEG_INFINITY
            };
            if let Some(lse) = lse {
                *lse.add(r) = log_sum_exp;
            }
        }
    });
}
