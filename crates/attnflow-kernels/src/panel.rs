//! `y = f(x·Wᵀ + b)` with `W` laid out once in panels: the inference
//! products of a loaded model.
//!
//! `gemm` packs both operands into its own layout on every call. For a
//! model's weights that work repeats on every batch: `perf` put it at 6%
//! of embedding with MiniLM and 17% of a SmolLM2 prefill. [`Panels`] holds
//! `W` in the layout the multiply reads, made once when the model loads
//! (or, for weights kept in GGUF blocks, one panel at a time as the
//! product needs it), and the input rows are read where they lie: their
//! values are broadcast one at a time, so they need no packing.
//!
//! A panel is [`PANEL`] consecutive output features by every input
//! feature, stored input-major: `panel[p·64 + j] = W[first + j, p]`
//! (zeros past the last output). The micro-kernel keeps a tile of up to
//! 6 tokens × 64 outputs in 24 AVX-512 registers (6 × 16 on AVX2 and the
//! portable path, whose registers are narrower or fewer) and adds one
//! input feature per step: four panel loads, six broadcasts, 24 fused
//! multiply-adds. Each output is summed over the inputs in order, one
//! rounding per step, whatever the tile, the thread or the SIMD path:
//! the result is the same bits on any number of threads and every path.

use std::cell::RefCell;

use rayon::prelude::*;

use crate::activation::Activation;
use crate::linear::{check_shapes, Weight, WeightLayout};
use crate::simd::{dispatch, Lanes, SimdPath};

/// Output features per panel.
pub const PANEL: usize = 64;
/// Tokens per register tile.
const TILE_ROWS: usize = 6;
/// Most tokens one task multiplies by one panel: the panel stays in the
/// core's L2 cache while the rows stream past it.
const MAX_BLOCK_ROWS: usize = 192;
/// Fewest multiply-adds worth a task of their own.
const TASK_WORK: usize = 1 << 18;

/// A weight `W` (`outputs × inputs`) in panels of [`PANEL`] outputs.
#[derive(Clone, Debug, PartialEq)]
pub struct Panels {
    values: Vec<f32>,
    outputs: usize,
    inputs: usize,
}

impl Panels {
    /// Lays `weight` out in panels (once, when a model loads).
    pub fn pack(weight: Weight<'_>) -> Self {
        let Weight {
            values,
            outputs,
            inputs,
            layout,
        } = weight;
        assert_eq!(
            values.len(),
            outputs * inputs,
            "panels: weight of {outputs} × {inputs}"
        );
        let mut packed = vec![0f32; Self::len_of(outputs, inputs)];
        for (index, panel) in packed.chunks_exact_mut(PANEL * inputs).enumerate() {
            let first = index * PANEL;
            let width = PANEL.min(outputs - first);
            match layout {
                WeightLayout::OutputsByInputs => {
                    let mut row = Vec::new();
                    fill_panel(
                        panel,
                        width,
                        inputs,
                        |j, out| {
                            out.copy_from_slice(
                                &values[(first + j) * inputs..(first + j + 1) * inputs],
                            )
                        },
                        &mut row,
                    );
                }
                WeightLayout::InputsByOutputs => {
                    for p in 0..inputs {
                        let row = &values[p * outputs + first..p * outputs + first + width];
                        panel[p * PANEL..p * PANEL + width].copy_from_slice(row);
                    }
                }
            }
        }
        Self {
            values: packed,
            outputs,
            inputs,
        }
    }

    /// Panels made by `fill(index, panel)`, which writes the weights of
    /// panel `index` (as [`PanelSource::Filled`]'s), the panels in
    /// parallel.
    pub(crate) fn made(
        outputs: usize,
        inputs: usize,
        fill: &(dyn Fn(usize, &mut [f32]) + Sync),
    ) -> Self {
        let mut values = vec![0f32; Self::len_of(outputs, inputs)];
        if inputs > 0 {
            values
                .par_chunks_mut(PANEL * inputs)
                .enumerate()
                .for_each(|(index, panel)| fill(index, panel));
        }
        Self {
            values,
            outputs,
            inputs,
        }
    }

    /// Values the panels of an `outputs × inputs` weight hold (whole
    /// panels: the last one padded to [`PANEL`] outputs).
    pub(crate) fn len_of(outputs: usize, inputs: usize) -> usize {
        outputs.div_ceil(PANEL) * PANEL * inputs
    }

    /// Bytes the panels hold.
    pub fn bytes(&self) -> usize {
        self.values.len() * std::mem::size_of::<f32>()
    }

    /// Output features.
    pub fn outputs(&self) -> usize {
        self.outputs
    }

    /// Input features.
    pub fn inputs(&self) -> usize {
        self.inputs
    }

    fn panel(&self, index: usize) -> &[f32] {
        &self.values[index * PANEL * self.inputs..(index + 1) * PANEL * self.inputs]
    }
}

/// Rows of the weight written into a panel together.
const FILL_ROWS: usize = 16;

/// Writes one panel from `width` weight rows, `row(j, out)` writing row
/// `j` (its `inputs` values) into `out`; `buffer` is the caller's, reused.
/// Columns past `width` keep what the panel held (zeros when it is fresh).
///
/// Rows are gathered 16 at a time and transposed in 16 × 16 blocks, so
/// each write fills 64 contiguous bytes of the panel (one row at a time,
/// every value went to a different cache line: `perf` put that at 16% of
/// a SmolLM2 prefill).
fn fill_panel(
    panel: &mut [f32],
    width: usize,
    inputs: usize,
    mut row: impl FnMut(usize, &mut [f32]),
    buffer: &mut Vec<f32>,
) {
    assert!(
        width <= PANEL && panel.len() >= PANEL * inputs,
        "panel: {width} rows of {inputs}"
    );
    buffer.resize(FILL_ROWS * inputs, 0.0);
    let wide = SimdPath::detect() == SimdPath::Avx512;
    for group in (0..width).step_by(FILL_ROWS) {
        let rows = FILL_ROWS.min(width - group);
        for r in 0..rows {
            row(group + r, &mut buffer[r * inputs..(r + 1) * inputs]);
        }
        let mut p = 0;
        if wide && rows == FILL_ROWS {
            while p + 16 <= inputs {
                // SAFETY: the machine has AVX-512; the 16 buffer rows hold
                // `inputs` values each from column p on (p + 16 ≤ inputs),
                // and panel rows p..p + 16 have columns group..group + 16
                // (group + 16 ≤ width ≤ PANEL).
                unsafe {
                    #[cfg(target_arch = "x86_64")]
                    transpose16(
                        buffer.as_ptr().add(p),
                        inputs,
                        panel.as_mut_ptr().add(p * PANEL + group),
                        PANEL,
                    );
                }
                p += 16;
            }
        }
        for p in p..inputs {
            let target = &mut panel[p * PANEL + group..p * PANEL + group + rows];
            for (r, value) in target.iter_mut().enumerate() {
                *value = buffer[r * inputs + p];
            }
        }
    }
}

/// `target[j·target_step + i] = source[i·source_step + j]` for `i, j` in
/// `0..16`: a 16 × 16 transpose in registers (pairs of floats, then
/// pairs of pairs, then the four 128-bit quarters).
///
/// # Safety
/// AVX-512F; `source` valid for 16 rows of 16 values at `source_step`,
/// `target` for writes of 16 rows of 16 at `target_step`, not overlapping.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn transpose16(
    source: *const f32,
    source_step: usize,
    target: *mut f32,
    target_step: usize,
) {
    use std::arch::x86_64::*;
    let mut rows = [_mm512_setzero_ps(); 16];
    for (i, row) in rows.iter_mut().enumerate() {
        *row = _mm512_loadu_ps(source.add(i * source_step));
    }
    // Per 128-bit quarter q, `quads[g][c]` holds column 4q + c of rows
    // 4g..4g + 4.
    let mut quads = [[_mm512_setzero_ps(); 4]; 4];
    for (g, quad) in quads.iter_mut().enumerate() {
        let [a, b, c, d] = [
            rows[4 * g],
            rows[4 * g + 1],
            rows[4 * g + 2],
            rows[4 * g + 3],
        ];
        let (ab_low, ab_high) = (_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
        let (cd_low, cd_high) = (_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
        quad[0] = _mm512_shuffle_ps::<0x44>(ab_low, cd_low);
        quad[1] = _mm512_shuffle_ps::<0xEE>(ab_low, cd_low);
        quad[2] = _mm512_shuffle_ps::<0x44>(ab_high, cd_high);
        quad[3] = _mm512_shuffle_ps::<0xEE>(ab_high, cd_high);
    }
    #[allow(clippy::needless_range_loop)] // c indexes the inner arrays of quads
    for c in 0..4 {
        let [v0, v1, v2, v3] = [quads[0][c], quads[1][c], quads[2][c], quads[3][c]];
        let low01 = _mm512_shuffle_f32x4::<0x44>(v0, v1);
        let high01 = _mm512_shuffle_f32x4::<0xEE>(v0, v1);
        let low23 = _mm512_shuffle_f32x4::<0x44>(v2, v3);
        let high23 = _mm512_shuffle_f32x4::<0xEE>(v2, v3);
        let columns = [
            _mm512_shuffle_f32x4::<0x88>(low01, low23),
            _mm512_shuffle_f32x4::<0xDD>(low01, low23),
            _mm512_shuffle_f32x4::<0x88>(high01, high23),
            _mm512_shuffle_f32x4::<0xDD>(high01, high23),
        ];
        for (quarter, column) in columns.into_iter().enumerate() {
            _mm512_storeu_ps(target.add((4 * quarter + c) * target_step), column);
        }
    }
}

/// Where a product's panels come from.
pub(crate) enum PanelSource<'a> {
    /// Laid out already.
    Packed(&'a Panels),
    /// Made on demand: `fill(index, panel)` writes the weights of panel
    /// `index` into `PANEL × inputs` values (past the last output, what
    /// it leaves there is never stored).
    Filled(&'a (dyn Fn(usize, &mut [f32]) + Sync)),
}

/// `out = f(x·Wᵀ + b)` for `x` row-major `(tokens, inputs)` and `out`
/// `(tokens, outputs)`, `W` in panels: the inference variant (no graph,
/// nothing saved, nothing allocated in steady state).
pub fn linear_panels_into(
    out: &mut [f32],
    x: &[f32],
    weight: &Panels,
    bias: Option<&[f32]>,
    activation: Activation,
) {
    panel_product(
        out,
        x,
        (weight.outputs, weight.inputs),
        PanelSource::Packed(weight),
        bias,
        activation,
        SimdPath::detect(),
    );
}

/// The tokens and panels one task covers.
#[derive(Clone, Copy)]
struct Task {
    panel: usize,
    first_row: usize,
    rows: usize,
}

/// The tasks of a `tokens × outputs × inputs` product: each panel's rows
/// cut into equal blocks, enough blocks that every thread gets the same
/// number of tasks when the product is worth splitting. Panels made on
/// demand are made once per task, so their rows are cut only for that
/// balance. How the work is cut never changes what an output is.
fn tasks(tokens: usize, outputs: usize, inputs: usize, made: bool) -> (usize, usize) {
    let panels = outputs.div_ceil(PANEL);
    let threads = rayon::current_num_threads().max(1);
    let mut blocks = if made {
        1
    } else {
        tokens.div_ceil(MAX_BLOCK_ROWS).max(1)
    };
    if threads > 1 && tokens * outputs * inputs >= TASK_WORK * threads {
        while !(panels * blocks).is_multiple_of(threads) && blocks < tokens {
            blocks += 1;
        }
    }
    // Whole register tiles per block, so only the last block has a short one.
    let rows = tokens.div_ceil(blocks).div_ceil(TILE_ROWS) * TILE_ROWS;
    (panels, rows.max(TILE_ROWS))
}

thread_local! {
    /// A panel made on demand, and which one it is: `(product, panel)`.
    static PANEL_SCRATCH: RefCell<(Vec<f32>, (u64, usize))> =
        const { RefCell::new((Vec::new(), (0, usize::MAX))) };
}

/// Numbers each product whose panels are made on demand, so a thread can
/// tell that the panel in its scratch is the one its next task needs.
static PRODUCTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// The destination shared by the tasks of one product; each task writes
/// only its own rows of its own panel's columns.
struct Destination(*mut f32);
// SAFETY: tasks write disjoint parts of the destination (see `panel_product`).
unsafe impl Sync for Destination {}

impl Destination {
    fn at(&self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

/// The product on `path` (tests pin the path; callers detect it).
pub(crate) fn panel_product(
    out: &mut [f32],
    x: &[f32],
    shape: (usize, usize),
    source: PanelSource<'_>,
    bias: Option<&[f32]>,
    activation: Activation,
    path: SimdPath,
) {
    check_shapes(out.len(), x.len(), shape, bias);
    // SAFETY: `out` holds tokens × outputs values (just checked), borrowed
    // mutably, so it aliases nothing the product reads.
    unsafe { panel_product_raw(out.as_mut_ptr(), x, shape, source, bias, activation, path) }
}

/// [`panel_product`] into a new vector, never zeroed first (every value is
/// written by the product).
pub(crate) fn panel_product_new(
    x: &[f32],
    shape: (usize, usize),
    source: PanelSource<'_>,
    path: SimdPath,
) -> Vec<f32> {
    let tokens = x.len() / shape.1.max(1);
    check_shapes(tokens * shape.0, x.len(), shape, None);
    let len = tokens * shape.0;
    let mut out = Vec::with_capacity(len);
    // SAFETY: the product writes all tokens × outputs values of the
    // buffer (every row of every panel's columns) before the length is
    // set, and the buffer aliases nothing.
    unsafe {
        panel_product_raw(
            out.as_mut_ptr(),
            x,
            shape,
            source,
            None,
            Activation::Identity,
            path,
        );
        out.set_len(len);
    }
    out
}

/// Tokens from which a product with an `(outputs, inputs)` f32 weight
/// lays it out in panels per call ([`rows_product_raw`]): laying out costs
/// a copy of the weight, under 1/32 of the multiply-adds from here on.
pub(crate) const ROWS_PANEL_MIN_TOKENS: usize = 32;

thread_local! {
    static FILL_SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Writes panel `index` of a weight of `outputs` rows of `inputs` values,
/// `row(r, out)` writing weight row `r`: [`fill_panel`] with this thread's
/// buffer. What every [`PanelSource::Filled`] source does per task.
pub(crate) fn fill_panel_at(
    index: usize,
    panel: &mut [f32],
    (outputs, inputs): (usize, usize),
    mut row: impl FnMut(usize, &mut [f32]),
) {
    FILL_SCRATCH.with(|scratch| {
        let first = index * PANEL;
        fill_panel(
            panel,
            PANEL.min(outputs - first),
            inputs,
            |j, out| row(first + j, out),
            &mut scratch.borrow_mut(),
        );
    })
}

/// `out = f(x·Wᵀ + b)` with `W` row-major `(outputs, inputs)` f32 values
/// laid out in panels as each task needs them: training's weights change
/// every step, so they are laid out per call.
///
/// # Safety
/// As [`panel_product_raw`]; `values` holds `outputs × inputs` values.
pub(crate) unsafe fn rows_product_raw(
    out: *mut f32,
    x: &[f32],
    values: &[f32],
    (outputs, inputs): (usize, usize),
    bias: Option<&[f32]>,
    activation: Activation,
    path: SimdPath,
) {
    let fill = |index: usize, panel: &mut [f32]| {
        fill_panel_at(index, panel, (outputs, inputs), |r, row| {
            row.copy_from_slice(&values[r * inputs..(r + 1) * inputs]);
        })
    };
    panel_product_raw(
        out,
        x,
        (outputs, inputs),
        PanelSource::Filled(&fill),
        bias,
        activation,
        path,
    );
}

/// # Safety
/// `out` valid for writes of `tokens × outputs` values (sizes as
/// [`check_shapes`] checks them), aliasing neither `x` nor the panels.
unsafe fn panel_product_raw(
    out: *mut f32,
    x: &[f32],
    (outputs, inputs): (usize, usize),
    source: PanelSource<'_>,
    bias: Option<&[f32]>,
    activation: Activation,
    path: SimdPath,
) {
    let product = Product {
        out,
        shape: (outputs, inputs),
        source,
        bias,
        activation,
    };
    panel_products_raw(x, std::slice::from_ref(&product), path);
}

/// One product of a group sharing its input rows.
pub(crate) struct Product<'a> {
    /// Where its `tokens × outputs` values go.
    pub(crate) out: *mut f32,
    /// `(outputs, inputs)`.
    pub(crate) shape: (usize, usize),
    /// Its weight's panels.
    pub(crate) source: PanelSource<'a>,
    /// Added to each output, if any.
    pub(crate) bias: Option<&'a [f32]>,
    /// Applied after the bias.
    pub(crate) activation: Activation,
}

// SAFETY: the tasks of a group write disjoint parts of the outputs (see
// `panel_products_raw`); everything else in a product is shared reading.
unsafe impl Sync for Product<'_> {}

/// Several products of the same input rows `x` in one parallel region
/// (a layer's query, key and value maps): the threads never wait between
/// them, and one product's last tasks share the cores with the next one's.
///
/// # Safety
/// Each `out` valid for writes of `tokens × outputs` values (tokens =
/// `x.len() / inputs`, the same for every product), aliasing neither `x`,
/// the panels nor another product's output.
pub(crate) unsafe fn panel_products_raw(x: &[f32], products: &[Product<'_>], path: SimdPath) {
    let Some(first_product) = products.first() else {
        return;
    };
    let tokens = x.len() / first_product.shape.1.max(1);
    // Ids for the panels this call makes on demand (see PANEL_SCRATCH).
    let ids = PRODUCTS.fetch_add(products.len() as u64, std::sync::atomic::Ordering::Relaxed);
    let plan = |product: &Product<'_>| {
        let (outputs, inputs) = product.shape;
        if tokens == 0 || outputs == 0 {
            return (0, 0, 1);
        }
        let made = matches!(product.source, PanelSource::Filled(_));
        let (panels, block_rows) = tasks(tokens, outputs, inputs, made);
        (panels, block_rows, tokens.div_ceil(block_rows))
    };
    let run = |mut index: usize| {
        let mut which = 0;
        let (panels, block_rows, blocks) = loop {
            let (panels, block_rows, blocks) = plan(&products[which]);
            if index < panels * blocks {
                break (panels, block_rows, blocks);
            }
            index -= panels * blocks;
            which += 1;
        };
        debug_assert!(index < panels * blocks);
        let Product {
            out,
            shape: (outputs, inputs),
            ref source,
            bias,
            activation,
        } = products[which];
        let destination = Destination(out);
        let task = Task {
            panel: index / blocks,
            first_row: (index % blocks) * block_rows,
            rows: block_rows.min(tokens - (index % blocks) * block_rows),
        };
        let first = task.panel * PANEL;
        let width = PANEL.min(outputs - first);
        let bias = bias.map(|bias| &bias[first..first + width]);
        let multiply = |panel: &[f32]| {
            // SAFETY: `panel` holds PANEL × inputs values; rows
            // first_row..first_row + rows of `x` (tokens × inputs) exist;
            // the destination rows and columns first..first + width lie
            // inside the tokens × outputs `out`, and no other task writes
            // them (tasks differ in product, panel or rows).
            unsafe {
                panel_rows(
                    path,
                    destination.at(task.first_row * outputs + first),
                    outputs,
                    x.as_ptr().add(task.first_row * inputs),
                    inputs,
                    task.rows,
                    panel.as_ptr(),
                    inputs,
                    width,
                    bias,
                    activation,
                )
            }
        };
        match source {
            PanelSource::Packed(weight) => multiply(weight.panel(task.panel)),
            PanelSource::Filled(fill) => PANEL_SCRATCH.with(|scratch| {
                // Not zeroed: columns past `width` may hold an earlier
                // panel's values, which the kernel multiplies (each lane
                // on its own) but never stores.
                let (panel, made_for) = &mut *scratch.borrow_mut();
                // Tasks of one panel are neighbours, and a thread mostly
                // runs neighbours in turn: the panel it made for the rows
                // before serves these too (a third of a SmolLM2 prefill's
                // panels had been made twice).
                let id = (ids + which as u64, task.panel);
                if *made_for != id || panel.len() < PANEL * inputs {
                    panel.resize(PANEL * inputs, 0.0);
                    fill(task.panel, &mut panel[..PANEL * inputs]);
                    *made_for = id;
                }
                multiply(&panel[..PANEL * inputs]);
            }),
        }
    };
    let (mut count, mut work) = (0, 0);
    for product in products {
        let (panels, _, blocks) = plan(product);
        count += panels * blocks;
        work += tokens * product.shape.0 * product.shape.1;
    }
    if count > 1 && rayon::current_num_threads() > 1 && work >= TASK_WORK {
        (0..count).into_par_iter().with_max_len(1).for_each(run);
    } else {
        (0..count).for_each(run);
    }
}

/// Whether a path's tile spans the whole panel (4 × 16 lanes by 6 rows in
/// 24 of AVX-512's 32 registers) or a quarter of it at a time (16 lanes
/// are two of AVX2's 16 registers).
fn wide_tiles(path: SimdPath) -> bool {
    path == SimdPath::Avx512
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn panel_rows_body<V: Lanes>(
    out: *mut f32,
    out_step: usize,
    x: *const f32,
    x_step: usize,
    rows: usize,
    panel: *const f32,
    inputs: usize,
    width: usize,
    bias: Option<&[f32]>,
    activation: Activation,
    wide: bool,
) {
    let mut row = 0;
    while row < rows {
        let count = TILE_ROWS.min(rows - row);
        let (out, x) = (out.add(row * out_step), x.add(row * x_step));
        let tile = Tile {
            out,
            out_step,
            x,
            x_step,
            panel,
            inputs,
            bias,
            activation,
        };
        if wide {
            tile.run_rows::<V, 4>(count, 0, width);
        } else {
            let mut column = 0;
            while column < width {
                tile.run_rows::<V, 1>(count, column, (width - column).min(16));
                column += 16;
            }
        }
        row += TILE_ROWS;
    }
}

dispatch!(
    /// `rows` tokens of `x` times one panel into `out` (row step
    /// `out_step`), `width` valid columns, then bias and activation.
    ///
    /// # Safety
    /// `x` valid for `rows` rows of `inputs` values at step `x_step`;
    /// `panel` for `PANEL × inputs` values; `out` for writes of `rows`
    /// rows of `width` values at step `out_step`, aliasing neither.
    unsafe fn panel_rows_dispatch(
        out: *mut f32,
        out_step: usize,
        x: *const f32,
        x_step: usize,
        rows: usize,
        panel: *const f32,
        inputs: usize,
        width: usize,
        bias: Option<&[f32]>,
        activation: Activation,
        wide: bool
    ) => panel_rows_body
);

/// See [`panel_rows_dispatch`]; one thread, no tasks (attention's maps run
/// it inside their own tasks).
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn panel_rows(
    path: SimdPath,
    out: *mut f32,
    out_step: usize,
    x: *const f32,
    x_step: usize,
    rows: usize,
    panel: *const f32,
    inputs: usize,
    width: usize,
    bias: Option<&[f32]>,
    activation: Activation,
) {
    let wide = wide_tiles(path.usable());
    panel_rows_dispatch(
        path, out, out_step, x, x_step, rows, panel, inputs, width, bias, activation, wide,
    )
}

/// One register tile's operands.
struct Tile<'a> {
    out: *mut f32,
    out_step: usize,
    x: *const f32,
    x_step: usize,
    panel: *const f32,
    inputs: usize,
    bias: Option<&'a [f32]>,
    activation: Activation,
}

impl Tile<'_> {
    /// A tile of `count` (1 to 6) rows: the row count a compile-time
    /// constant, so the accumulators stay in registers.
    #[inline(always)]
    unsafe fn run_rows<V: Lanes, const LANES: usize>(
        &self,
        count: usize,
        column: usize,
        width: usize,
    ) {
        match count {
            6 => self.run::<V, 6, LANES>(column, width),
            5 => self.run::<V, 5, LANES>(column, width),
            4 => self.run::<V, 4, LANES>(column, width),
            3 => self.run::<V, 3, LANES>(column, width),
            2 => self.run::<V, 2, LANES>(column, width),
            _ => self.run::<V, 1, LANES>(column, width),
        }
    }

    /// `ROWS` tokens × `16·LANES` outputs from panel column `column`, of
    /// which `width` are stored.
    #[inline(always)]
    unsafe fn run<V: Lanes, const ROWS: usize, const LANES: usize>(
        &self,
        column: usize,
        width: usize,
    ) {
        let mut sums = [[V::splat(0.0); LANES]; ROWS];
        let mut weights = self.panel.add(column);
        let mut x = self.x;
        for _ in 0..self.inputs {
            let mut w = [V::splat(0.0); LANES];
            for (lane, value) in w.iter_mut().enumerate() {
                *value = V::load(weights.add(16 * lane));
            }
            for (row, sums) in sums.iter_mut().enumerate() {
                let value = V::splat(*x.add(row * self.x_step));
                for (sum, w) in sums.iter_mut().zip(w) {
                    *sum = w.mul_add(value, *sum);
                }
            }
            weights = weights.add(PANEL);
            x = x.add(1);
        }
        for (row, sums) in sums.iter().enumerate() {
            let target = self.out.add(row * self.out_step + column);
            for (lane, &sum) in sums.iter().enumerate() {
                let offset = 16 * lane;
                if offset >= width {
                    break;
                }
                let count = (width - offset).min(16);
                let mut value = sum;
                if let Some(bias) = self.bias {
                    let bias = bias.as_ptr().add(column + offset);
                    value = value.add(if count == 16 {
                        V::load(bias)
                    } else {
                        V::load_partial(bias, count, 0.0)
                    });
                }
                value = self.activation.apply(value);
                if count == 16 {
                    value.store(target.add(offset));
                } else {
                    value.store_partial(target.add(offset), count);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{bits, Seeded};

    fn values(len: usize, seed: u64) -> Vec<f32> {
        Seeded(seed).values(len, 1.0)
    }

    fn reference(
        x: &[f32],
        w: &[f32],
        bias: Option<&[f32]>,
        outputs: usize,
        inputs: usize,
    ) -> Vec<f64> {
        let tokens = x.len() / inputs;
        let mut out = vec![0f64; tokens * outputs];
        for t in 0..tokens {
            for o in 0..outputs {
                let mut sum = bias.map_or(0.0, |b| b[o] as f64);
                for p in 0..inputs {
                    sum += x[t * inputs + p] as f64 * w[o * inputs + p] as f64;
                }
                out[t * outputs + o] = sum;
            }
        }
        out
    }

    fn run(
        x: &[f32],
        panels: &Panels,
        bias: Option<&[f32]>,
        activation: Activation,
        path: SimdPath,
    ) -> Vec<f32> {
        let tokens = x.len() / panels.inputs;
        let mut out = vec![f32::NAN; tokens * panels.outputs];
        let source = PanelSource::Packed(panels);
        let shape = (panels.outputs, panels.inputs);
        panel_product(&mut out, x, shape, source, bias, activation, path);
        out
    }

    #[test]
    fn products_match_an_f64_reference_at_ragged_shapes_on_every_path() {
        for (tokens, outputs, inputs) in [
            (1, 1, 1),
            (5, 63, 7),
            (7, 64, 33),
            (13, 65, 16),
            (37, 130, 70),
            (200, 200, 96),
        ] {
            let x = values(tokens * inputs, 1);
            let w = values(outputs * inputs, 2);
            let b = values(outputs, 3);
            let want = reference(&x, &w, Some(&b), outputs, inputs);
            let panels = Panels::pack(Weight::new(&w, outputs, inputs));
            let first = run(
                &x,
                &panels,
                Some(&b),
                Activation::Identity,
                SimdPath::available()[0],
            );
            for (index, (&got, &want)) in first.iter().zip(&want).enumerate() {
                let tolerance = 1e-6 * (inputs as f64).sqrt() * 4.0;
                assert!(
                    (got as f64 - want).abs() <= tolerance,
                    "{tokens}×{outputs}×{inputs} element {index}: {got} against {want}"
                );
            }
            for path in SimdPath::available() {
                let got = run(&x, &panels, Some(&b), Activation::Identity, path);
                assert_eq!(
                    bits(&got),
                    bits(&first),
                    "{path} differs at {tokens}×{outputs}×{inputs}"
                );
            }
        }
    }

    #[test]
    fn the_epilogue_is_the_activation_of_the_biased_product() {
        let (tokens, outputs, inputs) = (9, 100, 48);
        let x = values(tokens * inputs, 4);
        let w = values(outputs * inputs, 5);
        let b = values(outputs, 6);
        let panels = Panels::pack(Weight::new(&w, outputs, inputs));
        let path = SimdPath::detect();
        let plain = run(&x, &panels, Some(&b), Activation::Identity, path);
        for activation in [Activation::GeluTanh, Activation::GeluErf, Activation::Silu] {
            let mut want = plain.clone();
            crate::activation::activate(activation, &mut want);
            let got = run(&x, &panels, Some(&b), activation, path);
            assert_eq!(bits(&got), bits(&want), "{activation:?}");
        }
    }

    #[test]
    fn both_weight_layouts_and_panels_made_on_demand_give_the_same_bits() {
        let (tokens, outputs, inputs) = (23, 150, 40);
        let x = values(tokens * inputs, 7);
        let w = values(outputs * inputs, 8);
        let mut wt = vec![0f32; w.len()];
        for o in 0..outputs {
            for p in 0..inputs {
                wt[p * outputs + o] = w[o * inputs + p];
            }
        }
        let path = SimdPath::detect();
        let panels = Panels::pack(Weight::new(&w, outputs, inputs));
        let want = run(&x, &panels, None, Activation::Identity, path);
        let transposed = Panels::pack(Weight::transposed(&wt, inputs, outputs));
        assert_eq!(transposed, panels);
        let fill = |index: usize, panel: &mut [f32]| panel.copy_from_slice(panels.panel(index));
        let mut got = vec![f32::NAN; tokens * outputs];
        let source = PanelSource::Filled(&fill);
        panel_product(
            &mut got,
            &x,
            (outputs, inputs),
            source,
            None,
            Activation::Identity,
            path,
        );
        assert_eq!(bits(&got), bits(&want));
    }

    #[test]
    fn panels_hold_each_weight_where_the_kernel_reads_it() {
        for (outputs, inputs) in [(1, 1), (15, 17), (64, 16), (70, 40), (130, 33)] {
            let w = values(outputs * inputs, 11);
            let panels = Panels::pack(Weight::new(&w, outputs, inputs));
            for o in 0..outputs.div_ceil(PANEL) * PANEL {
                for p in 0..inputs {
                    let want = if o < outputs { w[o * inputs + p] } else { 0.0 };
                    let got = panels.panel(o / PANEL)[p * PANEL + o % PANEL];
                    assert_eq!(
                        got.to_bits(),
                        want.to_bits(),
                        "{outputs}×{inputs}: output {o}, input {p}"
                    );
                }
            }
        }
    }

    #[test]
    fn products_do_not_depend_on_the_number_of_threads() {
        let (tokens, outputs, inputs) = (301, 576, 192);
        let x = values(tokens * inputs, 9);
        let w = values(outputs * inputs, 10);
        let panels = Panels::pack(Weight::new(&w, outputs, inputs));
        let path = SimdPath::detect();
        let mut results = Vec::new();
        for threads in [1, 2, 3, 4] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let out = pool.install(|| run(&x, &panels, None, Activation::Identity, path));
            results.push(bits(&out));
        }
        assert!(results.windows(2).all(|pair| pair[0] == pair[1]));
    }
}
