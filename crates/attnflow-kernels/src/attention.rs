//! Fused attention on plain `f32` data (FlashAttention-2, Dao 2023,
//! Algorithms 1 and 2, adapted to a CPU): `softmax(scale·QKᵀ + mask)V` in
//! `O(n·d)` extra memory instead of `O(n·m)` per head.
//!
//! Forward ([`attention_forward`], the inference variant and the forward of
//! attnflow-core's candle op): each task owns a block of query rows of one
//! (batch, head) and walks the key tiles, keeping per row a running maximum
//! `mᵢ` and sum `ℓᵢ` of `exp(sᵢⱼ − mᵢ)`; the output is rescaled by
//! `exp(m_old − m_new)` whenever the maximum grows and divided by `ℓᵢ` once
//! at the end. The score tile `S = scale·QKᵀ` and the update `O += PV` are
//! matrix products on one thread (the tasks are the parallelism); the
//! softmax between them is the SIMD layer's. Only the tiles and the per-row
//! log-sum-exp `Lᵢ = mᵢ + ln ℓᵢ` are kept.
//!
//! Operands are read through [`HeadsLayout`] strides, so attention reads Q,
//! K and V straight out of one packed QKV product and writes its output in
//! token rows, ready for the output projection: no head split or merge.
//!
//! Backward ([`attention_backward`], training): `P` recomputed as
//! `exp(S − L)`, `Dᵢ = Σⱼ dOᵢⱼ Oᵢⱼ`, `dS = P ∘ (dP − D)`; each task owns a
//! range of key tiles of one head, so it owns its rows of `dK` and `dV`;
//! `dQ` contributions of several key ranges of one head are summed at the
//! end, in range order.
//!
//! Masks: causal (query `i` sees keys `j ≤ i + offset`) bounds each row's
//! key range, so tiles past the diagonal are never computed; a key bias
//! (0 or `-inf` per batch and key) masks padding, and key tiles that are
//! all padding are skipped. A query that sees no key gets output 0 and
//! `L = -inf`.

use rayon::prelude::*;

use crate::simd::{self, SimdPath};

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
    /// d = 64 head stay in a core's L2 cache, and each `K`/`V` tile serves
    /// 128 query rows. On the 2-core AVX-512 machine this was tuned on,
    /// CPU-time throughput at n = 4096 was 146 (32 × 256), 156 (64 × 256),
    /// 164 (128 × 256) and 172 GFLOP/s (128 × 512).
    fn default() -> Self {
        Self {
            query_block: 128,
            key_block: 512,
        }
    }
}

/// Where an operand's rows live in its buffer: element `c` of row `i` of
/// head `h` of batch `b` is at
/// `offset + b·batch_stride + h·head_stride + i·row_stride + c`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadsLayout {
    /// Index of element 0 of row 0 of head 0 of batch 0.
    pub offset: usize,
    /// Step between batches.
    pub batch_stride: usize,
    /// Step between heads.
    pub head_stride: usize,
    /// Step between rows (positions).
    pub row_stride: usize,
}

impl HeadsLayout {
    /// `(batch, heads, rows, width)` contiguous.
    pub fn contiguous(heads: usize, rows: usize, width: usize) -> Self {
        Self {
            offset: 0,
            batch_stride: heads * rows * width,
            head_stride: rows * width,
            row_stride: width,
        }
    }

    /// Token rows `(batch, rows, row_width)` holding the heads side by side
    /// (`width` columns each) from column `first_column`: one part of a
    /// packed QKV product (`first_column` 0, `d`, `2d` for Q, K, V), or
    /// attention's output in the layout the output projection reads.
    pub fn token_rows(rows: usize, row_width: usize, width: usize, first_column: usize) -> Self {
        Self {
            offset: first_column,
            batch_stride: rows * row_width,
            head_stride: width,
            row_stride: row_width,
        }
    }

    /// Index of element 0 of `row` of `head` in `batch`.
    #[inline]
    fn at(&self, batch: usize, head: usize, row: usize) -> usize {
        self.offset + batch * self.batch_stride + head * self.head_stride + row * self.row_stride
    }

    /// One past the last index of a `(batch, heads, rows, width)` view.
    fn end(&self, batch: usize, heads: usize, rows: usize, width: usize) -> usize {
        if batch == 0 || heads == 0 || rows == 0 || width == 0 {
            return 0;
        }
        self.at(batch - 1, heads - 1, rows - 1) + width
    }
}

/// One attention problem. `q` is `(batch, heads, n, d)`, `k` is
/// `(batch, kv_heads, m, d)`, `v` is `(batch, kv_heads, m, dv)`, the
/// output `(batch, heads, n, dv)`, each in its [`HeadsLayout`]; query head
/// `h` reads key/value head `h / (heads / kv_heads)` (grouped-query
/// attention).
#[derive(Clone, Copy, Debug)]
pub struct AttentionProblem<'a> {
    pub batch: usize,
    pub heads: usize,
    /// Key/value heads; divides `heads`.
    pub kv_heads: usize,
    /// Queries per head.
    pub n: usize,
    /// Keys per head.
    pub m: usize,
    /// Query and key width.
    pub d: usize,
    /// Value (and output) width.
    pub dv: usize,
    /// Multiplies the scores (usually `1/√d`).
    pub scale: f32,
    /// Causal masking: `Some(offset)` lets query `i` see keys
    /// `j ≤ i + offset` (0: PyTorch's top-left alignment; `m − n`: the
    /// bottom-right alignment of decoding with a key/value cache).
    pub causal: Option<usize>,
    /// `(batch, m)`: 0 for a visible key, `-inf` for padding.
    pub key_bias: Option<&'a [f32]>,
    pub tiling: Tiling,
    pub path: SimdPath,
}

impl<'a> AttentionProblem<'a> {
    /// Self-attention of `heads` heads of width `d` over `n` positions, no
    /// mask, scale `1/√d`, default tiling, the machine's widest SIMD path.
    pub fn new(batch: usize, heads: usize, n: usize, d: usize) -> Self {
        Self {
            batch,
            heads,
            kv_heads: heads,
            n,
            m: n,
            d,
            dv: d,
            scale: 1.0 / (d as f32).sqrt(),
            causal: None,
            key_bias: None,
            tiling: Tiling::default(),
            path: SimdPath::detect(),
        }
    }

    /// Checks the sizes and that every index the layouts name lies inside
    /// the buffers' lengths (`q`, `k`, `v`, `out`).
    fn check(&self, lengths: [(usize, HeadsLayout); 4]) {
        assert!(
            self.kv_heads > 0 && self.heads.is_multiple_of(self.kv_heads),
            "attention: {} key/value heads for {} heads",
            self.kv_heads,
            self.heads
        );
        assert!(
            self.tiling.query_block > 0 && self.tiling.key_block > 0,
            "attention: empty tiles {:?}",
            self.tiling
        );
        if let Some(bias) = self.key_bias {
            assert_eq!(
                bias.len(),
                self.batch * self.m,
                "attention: key bias (batch, m)"
            );
        }
        let shapes = [
            (self.heads, self.n, self.d, "q"),
            (self.kv_heads, self.m, self.d, "k"),
            (self.kv_heads, self.m, self.dv, "v"),
            (self.heads, self.n, self.dv, "out"),
        ];
        for ((len, layout), (heads, rows, width, name)) in lengths.into_iter().zip(shapes) {
            assert!(
                layout.end(self.batch, heads, rows, width) <= len,
                "attention: `{name}` layout {layout:?} reaches past its {len} values"
            );
        }
    }

    /// The key/value head query head `head` reads.
    #[inline]
    fn kv_head(&self, head: usize) -> usize {
        head / (self.heads / self.kv_heads)
    }

    /// How many keys query `row` may see among the `count` keys starting
    /// at `start` (a prefix of them, by causality).
    #[inline]
    fn visible(&self, row: usize, start: usize, count: usize) -> usize {
        match self.causal {
            Some(offset) => (row + offset + 1).saturating_sub(start).min(count),
            None => count,
        }
    }

    /// Keys this block of queries may see at all: `0..end`.
    fn key_end(&self, first_row: usize, rows: usize) -> usize {
        match self.causal {
            Some(offset) => (first_row + rows + offset).min(self.m),
            None => self.m,
        }
    }

    /// The first query that sees key `key` (causal), else 0.
    fn first_query(&self, key: usize) -> usize {
        match self.causal {
            Some(offset) => key.saturating_sub(offset),
            None => 0,
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

/// The key bias of right-padded sequences: `(batch, m)`, 0 for the first
/// `lengths[b]` keys of batch `b` and `-inf` after. Written into `bias` (so
/// a caller reusing its buffer allocates nothing).
pub fn key_bias_from_lengths(bias: &mut Vec<f32>, lengths: &[usize], m: usize) {
    bias.clear();
    for &length in lengths {
        let length = length.min(m);
        bias.extend(std::iter::repeat_n(0.0, length));
        bias.extend(std::iter::repeat_n(f32::NEG_INFINITY, m - length));
    }
}

/// `dst (rows × cols) = [dst +] beta · lhs (rows × inner) · rhs (inner × cols)`
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

/// The output pointer shared by the forward's tasks; each writes only the
/// rows of its own (batch, head, query block).
#[derive(Clone, Copy)]
struct Shared(*mut f32);
// SAFETY: tasks write disjoint rows (see `attention_forward`).
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl Shared {
    /// The pointer (a method, so closures capture the `Sync` wrapper, not
    /// its field).
    fn pointer(self) -> *mut f32 {
        self.0
    }
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
                forward_block(
                    problem,
                    b,
                    h,
                    first_row,
                    rows,
                    q,
                    k,
                    v,
                    (output.pointer(), out_layout),
                    lse_target.map(|l| l.pointer().add(head_index * n + first_row)),
                );
            }
        });
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
    k: (&[f32], HeadsLayout),
    v: (&[f32], HeadsLayout),
    out: (*mut f32, HeadsLayout),
    lse: Option<*mut f32>,
) {
    let AttentionProblem { d, dv, path, .. } = *problem;
    let key_block = problem.tiling.key_block;
    let kv_head = problem.kv_head(head);
    let q_block = q.0.as_ptr().add(q.1.at(batch, head, first_row));
    let k_head = k.0.as_ptr().add(k.1.at(batch, kv_head, 0));
    let v_head = v.0.as_ptr().add(v.1.at(batch, kv_head, 0));
    let out_block = out.0.add(out.1.at(batch, head, first_row));
    let (q_row, k_row, v_row, out_row) = (
        q.1.row_stride as isize,
        k.1.row_stride as isize,
        v.1.row_stride as isize,
        out.1.row_stride,
    );
    ROW_STATE.with_borrow_mut(|state| {
        state.clear();
        state.resize(rows, f32::NEG_INFINITY);
        state.resize(2 * rows, 0.0);
        let (row_max, row_sum) = state.split_at_mut(rows);
        for r in 0..rows {
            std::ptr::write_bytes(out_block.add(r * out_row), 0, dv);
        }
        SCORE_TILE.with_borrow_mut(|scores| {
            if scores.len() < rows * key_block {
                scores.resize(rows * key_block, 0.0);
            }
            let key_end = problem.key_end(first_row, rows);
            for key_start in (0..key_end).step_by(key_block) {
                let count = key_block.min(key_end - key_start);
                if problem.all_padding(batch, key_start, count) {
                    continue;
                }
                let tile = &mut scores[..rows * count];
                // S = scale · Q Kᵀ. SAFETY: Q rows first_row.. (rows × d),
                // K rows key_start.. read as the transposed d × count, the
                // tile rows × count; all inside their buffers, disjoint.
                matmul(
                    (rows, count, d),
                    (tile.as_mut_ptr(), 1, count as isize),
                    (q_block, 1, q_row),
                    (k_head.offset(key_start as isize * k_row), k_row, 1),
                    false,
                    problem.scale,
                );
                let bias = problem.bias(batch, key_start, count);
                for (r, row) in tile.chunks_exact_mut(count).enumerate() {
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
                // O += P V. SAFETY: tile rows × count, V rows key_start..
                // count × dv, the output block rows × dv; disjoint.
                matmul(
                    (rows, dv, count),
                    (out_block, 1, out_row as isize),
                    (tile.as_ptr(), 1, count as isize),
                    (v_head.offset(key_start as isize * v_row), 1, v_row),
                    true,
                    1.0,
                );
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
    let mut probabilities = vec![0f32; query_block * key_block];
    let mut grad_scores = vec![0f32; query_block * key_block];
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
