//! Matrix products on the `gemm` crate's packed SIMD kernels (AVX-512 with
//! the workspace's `x86-v4` feature), split into fixed column blocks over
//! the rayon pool.

use gemm::Parallelism;
use rayon::prelude::*;

/// A matrix operand: element `(i, p)` at `values[i·row + p·column]`.
#[derive(Clone, Copy, Debug)]
pub struct Operand<'a> {
    /// The values; every element the product reads must lie inside.
    pub values: &'a [f32],
    /// Step between rows.
    pub row: usize,
    /// Step between columns.
    pub column: usize,
}

impl<'a> Operand<'a> {
    /// Row-major `rows × columns` values.
    pub fn rows(values: &'a [f32], columns: usize) -> Self {
        Self {
            values,
            row: columns,
            column: 1,
        }
    }

    /// The transpose of row-major values with `columns` per row: element
    /// `(i, p)` is `values[p·columns + i]`.
    pub fn transposed(values: &'a [f32], columns: usize) -> Self {
        Self {
            values,
            row: 1,
            column: columns,
        }
    }

    /// Index of the last element of a `rows × columns` view.
    fn last(&self, rows: usize, columns: usize) -> usize {
        (rows - 1) * self.row + (columns - 1) * self.column
    }
}

/// Fewest multiply-adds per block worth a task of its own.
const BLOCK_WORK: usize = 1 << 20;
/// Most blocks a product of fewer than [`THREADED_MIN_ROWS`] rows is split
/// into.
const MAX_BLOCKS: usize = 4;
/// Block widths are multiples of this many columns: gemm's widest AVX-512
/// micro-kernel covers 64 (narrower blocks fall back to its 32-wide one,
/// which `perf` showed taking most of the product time).
const BLOCK_COLUMNS: usize = 64;

/// Rows from which a product is split into one block per thread. Below,
/// `gemm` takes paths whose arithmetic depends on the width it is given,
/// so the split must depend on the shape only; from 8 rows on each output
/// element is the same bits whatever the column blocks (as long as they
/// are at least 8 wide), which `tests/inference.rs` checks on 1 to 4
/// threads.
const THREADED_MIN_ROWS: usize = 16;

/// The column blocks of an `m × n × k` product, as `(first column,
/// width)`: multiples of 64 columns, the last one taking the `n mod 64`
/// rest. With at least [`THREADED_MIN_ROWS`] rows, one block per pool
/// thread (as many as there is work for), so two cores get two equal
/// halves; with fewer, up to [`MAX_BLOCKS`] set by the shape alone.
fn column_blocks(m: usize, n: usize, k: usize) -> ColumnBlocks {
    let units = (n / BLOCK_COLUMNS).max(1);
    let worth = (m * n * k / BLOCK_WORK).max(1);
    let count = if m >= THREADED_MIN_ROWS {
        rayon::current_num_threads().min(worth)
    } else {
        worth.min(MAX_BLOCKS)
    }
    .clamp(1, units);
    ColumnBlocks {
        n,
        count,
        base: units / count,
        extra: units % count,
    }
}

/// `count` blocks of `base` (the first `extra` of them `base + 1`) units of
/// 64 columns, the last block running to column `n`.
#[derive(Clone, Copy)]
struct ColumnBlocks {
    n: usize,
    count: usize,
    base: usize,
    extra: usize,
}

impl ColumnBlocks {
    /// `(first column, width)` of block `index`.
    fn block(&self, index: usize) -> (usize, usize) {
        let first = (index * self.base + index.min(self.extra)) * BLOCK_COLUMNS;
        let width = if index + 1 == self.count {
            self.n - first
        } else {
            (self.base + usize::from(index < self.extra)) * BLOCK_COLUMNS
        };
        (first, width)
    }
}

/// What runs on each column block of the destination right after its
/// product, while the block is still in cache: `(first_column, width)`,
/// with the destination block at `rows × width`, row step `n`.
pub(crate) type Epilogue<'a> = &'a (dyn Fn(BlockView) + Sync);

/// One column block of a product's destination, for an epilogue.
pub(crate) struct BlockView {
    /// First element of the block.
    pub start: *mut f32,
    pub rows: usize,
    /// Step between rows (the destination's width).
    pub row: usize,
    pub first_column: usize,
    pub width: usize,
}

/// The destination pointer shared by the blocks of one product; each block
/// writes only its own columns.
struct Destination(*mut f32);
// SAFETY: blocks write disjoint columns of the destination (see `matmul_raw`).
unsafe impl Sync for Destination {}

impl Destination {
    fn at(&self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

/// `dst (m×n, row-major) = [dst +] lhs·rhs` with `lhs` `m×k`, `rhs` `k×n`.
///
/// Large products are split into blocks of output columns, each a
/// single-threaded `gemm` call, spread over the rayon pool. Measured on the
/// training benchmark's shapes on two cores: about twice the throughput of
/// `gemm`'s own rayon split (which synchronises per depth chunk); splitting
/// rows into eight blocks instead lost up to half of it to packing the
/// shared operand once per block. The result is the same bits on any
/// number of threads (see [`column_blocks`]).
pub fn matmul(
    dst: &mut [f32],
    accumulate: bool,
    shape: (usize, usize, usize),
    lhs: Operand<'_>,
    rhs: Operand<'_>,
) {
    matmul_then(dst, accumulate, shape, lhs, rhs, None)
}

/// [`matmul`], then `epilogue` on each column block.
pub(crate) fn matmul_then(
    dst: &mut [f32],
    accumulate: bool,
    shape: (usize, usize, usize),
    lhs: Operand<'_>,
    rhs: Operand<'_>,
    epilogue: Option<Epilogue<'_>>,
) {
    assert_eq!(dst.len(), shape.0 * shape.1, "matmul: destination size");
    // SAFETY: dst is m×n initialised values, borrowed mutably here.
    unsafe { matmul_raw(dst.as_mut_ptr(), accumulate, shape, lhs, rhs, epilogue) }
}

/// `lhs·rhs` into a new `m×n` row-major vector, never zeroed first.
pub fn product(shape: (usize, usize, usize), lhs: Operand<'_>, rhs: Operand<'_>) -> Vec<f32> {
    let (m, n, _) = shape;
    let mut dst = Vec::<f32>::with_capacity(m * n);
    // SAFETY: without `accumulate` every one of the m×n elements is written
    // (by gemm, or zero-filled when k = 0) and none is read, so they are
    // initialised when the length is set.
    unsafe {
        matmul_raw(dst.as_mut_ptr(), false, shape, lhs, rhs, None);
        dst.set_len(m * n);
    }
    dst
}

/// # Safety
/// `dst` must be valid for writes of `m×n` elements (and for reads when
/// `accumulate`), not aliasing `lhs` or `rhs`.
pub(crate) unsafe fn matmul_raw(
    dst: *mut f32,
    accumulate: bool,
    (m, n, k): (usize, usize, usize),
    lhs: Operand<'_>,
    rhs: Operand<'_>,
    epilogue: Option<Epilogue<'_>>,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k > 0 {
        assert!(lhs.last(m, k) < lhs.values.len(), "matmul: lhs bounds");
        assert!(rhs.last(k, n) < rhs.values.len(), "matmul: rhs bounds");
    }
    let blocks = column_blocks(m, n, k);
    let destination = Destination(dst);
    let block = |index: usize| {
        let (first, width) = blocks.block(index);
        if k == 0 {
            if !accumulate {
                for row in 0..m {
                    // SAFETY: row `row`, columns first..first + width of
                    // the m×n destination, written by this block only.
                    unsafe { std::ptr::write_bytes(destination.at(row * n + first), 0, width) };
                }
            }
        } else {
            // SAFETY: the asserts above keep every element gemm reads
            // inside lhs and rhs (this block's columns are a sub-range of
            // rhs's), and every element it writes inside dst: rows 0..m,
            // columns first..first + width of the m×n destination, which no
            // other block writes and which (the caller guarantees) aliases
            // neither operand.
            unsafe {
                gemm::gemm(
                    m,
                    width,
                    k,
                    destination.at(first),
                    1,
                    n as isize,
                    accumulate,
                    lhs.values.as_ptr(),
                    lhs.column as isize,
                    lhs.row as isize,
                    rhs.values.as_ptr().add(first * rhs.column),
                    rhs.column as isize,
                    rhs.row as isize,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    Parallelism::None,
                );
            }
        }
        if let Some(epilogue) = epilogue {
            epilogue(BlockView {
                start: destination.at(first),
                rows: m,
                row: n,
                first_column: first,
                width,
            });
        }
    };
    if blocks.count > 1 && rayon::current_num_threads() > 1 {
        (0..blocks.count)
            .into_par_iter()
            .with_max_len(1)
            .for_each(block);
    } else {
        (0..blocks.count).for_each(block);
    }
}
