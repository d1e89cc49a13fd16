//! The forward's own products: `S = scale·QKᵀ` and `O += PV` on register
//! tiles, instead of a general `gemm` call per tile.
//!
//! Why: a `gemm` call packs both operands every time. Here the keys of a
//! head are packed once ([`pack_keys`]: panels of 16 keys, feature-major,
//! one vector per feature) and every query block of the head reads the
//! same panels; queries, probabilities and values are read where they lie
//! (one broadcast or one row load per step), so nothing else is packed.
//! Head widths 16, 32, 64 and 128 have value tiles of their own (`dv` of
//! 1, 2, 4 or 8 vectors); other widths take the `gemm` path.
//!
//! The tiles are written over [`Lanes`], so every SIMD path runs them and
//! gives the same bits: each score is `Σ_c q_c·k_c` by fused multiply-adds
//! in feature order, times the scale; each output value
//! `o + Σ_j p_j·v_j` in key order.

use crate::simd::{dispatch, Lanes};

/// Keys per packed panel: one vector.
pub(super) const PANEL: usize = 16;

/// Values a value tile covers: widths with tiles of their own.
pub(super) fn has_value_tiles(dv: usize) -> bool {
    matches!(dv, 16 | 32 | 64 | 128)
}

/// Floats [`pack_keys`] writes for `m` keys of width `d`.
pub(super) fn packed_len(m: usize, d: usize) -> usize {
    m.div_ceil(PANEL) * PANEL * d
}

/// Packs keys `0..m` (rows of `d` values, `row` apart, from `keys`) into
/// panels of [`PANEL`] keys: panel `p` holds, feature by feature, the 16
/// values `K[16p + lane, c]`. Keys past `m` are zeros.
///
/// # Safety
/// `keys` readable for `m` rows of `d` values `row` apart.
pub(super) unsafe fn pack_keys(keys: *const f32, row: usize, m: usize, d: usize, out: &mut [f32]) {
    assert_eq!(out.len(), packed_len(m, d), "pack_keys: buffer size");
    for (panel, target) in out.chunks_exact_mut(PANEL * d).enumerate() {
        for lane in 0..PANEL {
            let key = panel * PANEL + lane;
            if key < m {
                let source = std::slice::from_raw_parts(keys.add(key * row), d);
                for (c, value) in source.iter().enumerate() {
                    target[c * PANEL + lane] = *value;
                }
            } else {
                for c in 0..d {
                    target[c * PANEL + lane] = 0.0;
                }
            }
        }
    }
}

/// Rows and panels of a score tile, and value vectors a value tile holds,
/// per path: as many accumulators as the registers allow with room for the
/// operands.
trait TileShape: Lanes {
    /// `(rows, panels)` of a score tile.
    const SCORES: (usize, usize);
    /// Accumulator vectors a value tile may hold.
    const VALUE_ACCUMULATORS: usize;
}

impl TileShape for crate::simd::Portable {
    const SCORES: (usize, usize) = (2, 2);
    const VALUE_ACCUMULATORS: usize = 4;
}

#[cfg(target_arch = "x86_64")]
impl TileShape for crate::simd::Avx512 {
    // 24 accumulators, 4 key vectors and the broadcast query: 29 of 32.
    const SCORES: (usize, usize) = (6, 4);
    const VALUE_ACCUMULATORS: usize = 24;
}

#[cfg(target_arch = "x86_64")]
impl TileShape for crate::simd::Avx2 {
    // Each vector is two of the 16 registers.
    const SCORES: (usize, usize) = (3, 2);
    const VALUE_ACCUMULATORS: usize = 6;
}

/// One score tile: `ROWS` queries against `PANELS` panels of keys.
#[inline(always)]
unsafe fn score_tile<V: Lanes, const ROWS: usize, const PANELS: usize>(
    queries: *const f32,
    query_row: usize,
    panels: *const f32,
    d: usize,
    out: *mut f32,
    out_row: usize,
    scale: f32,
) {
    let mut sums = [[V::splat(0.0); PANELS]; ROWS];
    for c in 0..d {
        let mut keys = [V::splat(0.0); PANELS];
        for (panel, key) in keys.iter_mut().enumerate() {
            *key = V::load(panels.add((panel * d + c) * PANEL));
        }
        for (row, sums) in sums.iter_mut().enumerate() {
            let query = V::splat(*queries.add(row * query_row + c));
            for (sum, key) in sums.iter_mut().zip(&keys) {
                *sum = query.mul_add(*key, *sum);
            }
        }
    }
    let scale = V::splat(scale);
    for (row, sums) in sums.iter().enumerate() {
        for (panel, sum) in sums.iter().enumerate() {
            sum.mul(scale).store(out.add(row * out_row + panel * PANEL));
        }
    }
}

/// Calls `$call::<V, R, ..>` with `R` the runtime `$rows`: one of the
/// listed counts, the last also standing for anything larger.
macro_rules! by_rows {
    ($rows:expr; $($count:literal)* ; $last:literal; $call:ident::<$v:ty, _, $rest:tt> $arguments:tt) => {
        match $rows {
            $($count => $call::<$v, $count, $rest> $arguments,)*
            _ => $call::<$v, $last, $rest> $arguments,
        }
    };
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn scores_body<V: TileShape>(
    queries: *const f32,
    query_row: usize,
    rows: usize,
    panels: *const f32,
    d: usize,
    keys: usize,
    out: *mut f32,
    out_row: usize,
    scale: f32,
) {
    let (tile_rows, tile_panels) = V::SCORES;
    let panel_count = keys.div_ceil(PANEL);
    // Panels outer, rows inner: a group of key panels stays in L1 while
    // every query row of the block passes over it.
    for first_panel in (0..panel_count).step_by(tile_panels) {
        let group = tile_panels.min(panel_count - first_panel);
        let panels = panels.add(first_panel * d * PANEL);
        for first_row in (0..rows).step_by(tile_rows) {
            let count = tile_rows.min(rows - first_row);
            let queries = queries.add(first_row * query_row);
            let out = out.add(first_row * out_row + first_panel * PANEL);
            match group {
                1 => {
                    by_rows!(count; 1 2 3 4 5; 6; score_tile::<V, _, 1>(queries, query_row, panels, d, out, out_row, scale))
                }
                2 => {
                    by_rows!(count; 1 2 3 4 5; 6; score_tile::<V, _, 2>(queries, query_row, panels, d, out, out_row, scale))
                }
                3 => {
                    by_rows!(count; 1 2 3 4 5; 6; score_tile::<V, _, 3>(queries, query_row, panels, d, out, out_row, scale))
                }
                _ => {
                    by_rows!(count; 1 2 3 4 5; 6; score_tile::<V, _, 4>(queries, query_row, panels, d, out, out_row, scale))
                }
            }
        }
    }
}

dispatch!(
    /// `out[r, j] = scale · Σ_c q[r, c]·k[j, c]` for `rows` queries (`d`
    /// values each, `query_row` apart) and `keys` keys packed by
    /// [`pack_keys`]; `out` rows are `out_row` apart and get the keys
    /// rounded up to a whole panel (the padding keys score 0).
    ///
    /// # Safety
    /// `queries` readable for `rows` rows, `panels` for the keys' panels,
    /// `out` writable for `rows` rows of `keys.div_ceil(16)·16` values.
    pub(super) unsafe fn scores(
        queries: *const f32,
        query_row: usize,
        rows: usize,
        panels: *const f32,
        d: usize,
        keys: usize,
        out: *mut f32,
        out_row: usize,
        scale: f32
    ) => scores_body
);

/// One value tile: `ROWS` output rows of `VECTORS` vectors plus `P·V` over
/// `keys` keys.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn value_tile<V: Lanes, const ROWS: usize, const VECTORS: usize>(
    probabilities: *const f32,
    probability_row: usize,
    keys: usize,
    values: *const f32,
    value_row: usize,
    out: *mut f32,
    out_row: usize,
) {
    let mut sums = [[V::splat(0.0); VECTORS]; ROWS];
    for (row, sums) in sums.iter_mut().enumerate() {
        for (vector, sum) in sums.iter_mut().enumerate() {
            *sum = V::load(out.add(row * out_row + vector * PANEL));
        }
    }
    for key in 0..keys {
        let mut value = [V::splat(0.0); VECTORS];
        for (vector, lanes) in value.iter_mut().enumerate() {
            *lanes = V::load(values.add(key * value_row + vector * PANEL));
        }
        for (row, sums) in sums.iter_mut().enumerate() {
            let weight = V::splat(*probabilities.add(row * probability_row + key));
            for (sum, lanes) in sums.iter_mut().zip(&value) {
                *sum = weight.mul_add(*lanes, *sum);
            }
        }
    }
    for (row, sums) in sums.iter().enumerate() {
        for (vector, sum) in sums.iter().enumerate() {
            sum.store(out.add(row * out_row + vector * PANEL));
        }
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn values_body<V: TileShape>(
    probabilities: *const f32,
    probability_row: usize,
    rows: usize,
    keys: usize,
    values: *const f32,
    value_row: usize,
    dv: usize,
    out: *mut f32,
    out_row: usize,
) {
    let vectors = dv / PANEL;
    // At most the largest row count instantiated below for this width.
    let most = match vectors {
        1 | 2 => 12,
        4 => 6,
        _ => 3,
    };
    let tile_rows = (V::VALUE_ACCUMULATORS / vectors).clamp(1, most);
    for first_row in (0..rows).step_by(tile_rows) {
        let count = tile_rows.min(rows - first_row);
        let probabilities = probabilities.add(first_row * probability_row);
        let out = out.add(first_row * out_row);
        let arguments = (
            probabilities,
            probability_row,
            keys,
            values,
            value_row,
            out,
            out_row,
        );
        let (p, pr, k, v, vr, o, or) = arguments;
        match vectors {
            1 => {
                by_rows!(count; 1 2 3 4 5 6 7 8 9 10 11; 12; value_tile::<V, _, 1>(p, pr, k, v, vr, o, or))
            }
            2 => {
                by_rows!(count; 1 2 3 4 5 6 7 8 9 10 11; 12; value_tile::<V, _, 2>(p, pr, k, v, vr, o, or))
            }
            4 => by_rows!(count; 1 2 3 4 5; 6; value_tile::<V, _, 4>(p, pr, k, v, vr, o, or)),
            _ => by_rows!(count; 1 2; 3; value_tile::<V, _, 8>(p, pr, k, v, vr, o, or)),
        }
    }
}

dispatch!(
    /// `out[r, :] += Σ_j p[r, j]·v[j, :]` for `rows` rows of `keys`
    /// probabilities (`probability_row` apart) and `keys` value rows of
    /// `dv` values (`value_row` apart); `dv` is one of 16, 32, 64, 128.
    ///
    /// # Safety
    /// Every pointer readable (and `out` writable) for the rows stated.
    pub(super) unsafe fn accumulate_values(
        probabilities: *const f32,
        probability_row: usize,
        rows: usize,
        keys: usize,
        values: *const f32,
        value_row: usize,
        dv: usize,
        out: *mut f32,
        out_row: usize
    ) => values_body
);
