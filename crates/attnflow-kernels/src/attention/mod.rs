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

mod backward;
mod forward;
mod tiles;
mod weights;

pub use backward::{attention_backward, AttentionGradients};
pub use forward::{attention_forward, attention_forward_packed};
pub use weights::{attention_weights_forward, attention_weights_forward_new};

use crate::simd::SimdPath;

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
    pub(super) fn at(&self, batch: usize, head: usize, row: usize) -> usize {
        self.offset + batch * self.batch_stride + head * self.head_stride + row * self.row_stride
    }

    /// One past the last index of a `(batch, heads, rows, width)` view.
    pub(super) fn end(&self, batch: usize, heads: usize, rows: usize, width: usize) -> usize {
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
    pub(super) fn check(&self, lengths: [(usize, HeadsLayout); 4]) {
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
    pub(super) fn kv_head(&self, head: usize) -> usize {
        head / (self.heads / self.kv_heads)
    }

    /// How many keys query `row` may see among the `count` keys starting
    /// at `start` (a prefix of them, by causality).
    #[inline]
    pub(super) fn visible(&self, row: usize, start: usize, count: usize) -> usize {
        match self.causal {
            Some(offset) => (row + offset + 1).saturating_sub(start).min(count),
            None => count,
        }
    }

    /// Keys this block of queries may see at all: `0..end`.
    pub(super) fn key_end(&self, first_row: usize, rows: usize) -> usize {
        match self.causal {
            Some(offset) => (first_row + rows + offset).min(self.m),
            None => self.m,
        }
    }

    /// The first query that sees key `key` (causal), else 0.
    pub(super) fn first_query(&self, key: usize) -> usize {
        match self.causal {
            Some(offset) => key.saturating_sub(offset),
            None => 0,
        }
    }

    /// Whether every key of `start..start + count` is padding in `batch`.
    pub(super) fn all_padding(&self, batch: usize, start: usize, count: usize) -> bool {
        self.key_bias.is_some_and(|bias| {
            bias[batch * self.m + start..batch * self.m + start + count]
                .iter()
                .all(|b| *b == f32::NEG_INFINITY)
        })
    }

    pub(super) fn bias(&self, batch: usize, start: usize, count: usize) -> Option<&[f32]> {
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
pub(super) unsafe fn matmul(
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
pub(super) struct Shared(pub(super) *mut f32);
// SAFETY: tasks write disjoint rows (see `attention_forward`).
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl Shared {
    /// The pointer (a method, so closures capture the `Sync` wrapper, not
    /// its field).
    pub(super) fn pointer(self) -> *mut f32 {
        self.0
    }
}
