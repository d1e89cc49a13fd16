//! Weight matrices kept in the number format of their file (f32, f16, bf16,
//! or GGUF's Q8_0, Q4_0 and Q4_1 blocks), read as exact `f32` values by
//! every product.
//!
//! A GGUF weight dequantizes to `f32` values that its blocks determine
//! exactly (`d·q + m` with `d`, `m` half floats and `q` a small integer is
//! one `f32` rounding, the same whichever code computes it). Holding those
//! `f32`s costs 4 bytes a weight; holding the blocks costs 0.56 (Q4_1) to
//! 1.06 (Q8_0). Decoding one token reads every weight once, so it is bound
//! by memory bandwidth: the blocks make it several times faster and the
//! model several times smaller, with results equal to the dequantized
//! model's up to the order of summation.
//!
//! * [`PackedMatrix::matvec`]: one input row (decoding); rows of the matrix
//!   are dequantized into a small buffer and dotted with the input.
//! * [`PackedMatrix::matmul`]: many input rows (prefill); each task
//!   multiplies every input row by a panel of 64 rows ([`crate::panel`]).
//!   A matrix's first such product dequantizes each panel on demand, in
//!   the task that needs it. From its second on (a run of prefills,
//!   perplexity windows, a server's requests) the matrix keeps all its
//!   panels in `f32`, while the panels kept by every matrix stay within a
//!   limit ([`set_kept_panel_limit`], 1 GiB unless set): dequantizing and
//!   transposing the same panels on every call had been 7% of a
//!   SmolLM2-135M prefill. A single prefill (`generate`, an inspection)
//!   keeps nothing.

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use crate::panel::{
    fill_panel_at, panel_product, panel_product_new, panel_products_raw, PanelSource, Panels,
    Product,
};
use crate::simd::SimdPath;
use crate::Activation;
use rayon::prelude::*;

/// Values per GGUF quantisation block.
pub const BLOCK: usize = 32;

/// How a matrix's values are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Packing {
    /// 4-byte floats.
    F32,
    /// IEEE half floats.
    F16,
    /// bfloat16.
    Bf16,
    /// Blocks of 32: an f16 scale and 32 signed bytes (34 bytes).
    Q8_0,
    /// Blocks of 32: an f16 scale and 32 four-bit values minus 8 (18 bytes).
    Q4_0,
    /// Blocks of 32: f16 scale and minimum, 32 four-bit values (20 bytes).
    Q4_1,
}

impl Packing {
    /// Bytes per stored row of `columns` values.
    pub fn row_bytes(self, columns: usize) -> usize {
        match self {
            Packing::F32 => 4 * columns,
            Packing::F16 | Packing::Bf16 => 2 * columns,
            Packing::Q8_0 => columns / BLOCK * 34,
            Packing::Q4_0 => columns / BLOCK * 18,
            Packing::Q4_1 => columns / BLOCK * 20,
        }
    }

    /// Whether values come in blocks of [`BLOCK`] along each row.
    pub fn is_blocked(self) -> bool {
        matches!(self, Packing::Q8_0 | Packing::Q4_0 | Packing::Q4_1)
    }

    /// The name GGUF and safetensors use.
    pub fn name(self) -> &'static str {
        match self {
            Packing::F32 => "F32",
            Packing::F16 => "F16",
            Packing::Bf16 => "BF16",
            Packing::Q8_0 => "Q8_0",
            Packing::Q4_0 => "Q4_0",
            Packing::Q4_1 => "Q4_1",
        }
    }
}

#[derive(Clone)]
enum Storage {
    F32(Vec<f32>),
    Bytes(Vec<u8>),
}

/// A `rows × columns` matrix (row-major, a row is one output of a linear
/// map) in one of the [`Packing`]s.
#[derive(Clone)]
pub struct PackedMatrix {
    rows: usize,
    columns: usize,
    packing: Packing,
    storage: Storage,
    kept: KeptPanels,
}

/// Most bytes of `f32` panels all matrices together keep.
static KEPT_LIMIT: AtomicUsize = AtomicUsize::new(1 << 30);
/// Bytes of `f32` panels kept now.
static KEPT_BYTES: AtomicUsize = AtomicUsize::new(0);

/// Sets the most bytes of `f32` panels that [`PackedMatrix`] products keep,
/// all matrices together (1 GiB unless set; 0 keeps none). Matrices that
/// keep panels already keep them, and one refused by the limit makes its
/// panels on demand from then on; the limit applies to the next ones.
pub fn set_kept_panel_limit(bytes: usize) {
    KEPT_LIMIT.store(bytes, Ordering::Relaxed);
}

/// Bytes of `f32` panels kept now, by every matrix.
pub fn kept_panel_bytes() -> usize {
    KEPT_BYTES.load(Ordering::Relaxed)
}

/// A matrix's `f32` panels, made by its second product with several input
/// rows when the limit allows; a clone makes its own.
#[derive(Default)]
struct KeptPanels {
    panels: OnceLock<Option<Panels>>,
    /// Whether a product has run (and made its panels on demand).
    used: std::sync::atomic::AtomicBool,
}

impl KeptPanels {
    /// The panels: none on the first call; made by `make` on the second
    /// if `bytes` more stay within the limit.
    fn get(&self, bytes: usize, make: impl FnOnce() -> Panels) -> Option<&Panels> {
        if self.panels.get().is_none() && !self.used.swap(true, Ordering::Relaxed) {
            return None;
        }
        self.panels
            .get_or_init(|| {
                let limit = KEPT_LIMIT.load(Ordering::Relaxed);
                KEPT_BYTES
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |kept| {
                        (kept + bytes <= limit).then_some(kept + bytes)
                    })
                    .ok()
                    .map(|_| make())
            })
            .as_ref()
    }
}

impl Clone for KeptPanels {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl Drop for KeptPanels {
    fn drop(&mut self) {
        if let Some(Some(panels)) = self.panels.get() {
            KEPT_BYTES.fetch_sub(panels.bytes(), Ordering::Relaxed);
        }
    }
}

impl std::fmt::Debug for PackedMatrix {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "PackedMatrix({} × {}, {})",
            self.rows,
            self.columns,
            self.packing.name()
        )
    }
}

/// Fewest rows per task of a product with one vector: a task streams at
/// least ten kilobytes of weights.
const MATVEC_ROWS: usize = 32;

thread_local! {
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

impl PackedMatrix {
    /// A matrix of `f32` values.
    pub fn from_f32(rows: usize, columns: usize, values: Vec<f32>) -> Result<Self, String> {
        if values.len() != rows * columns {
            return Err(format!(
                "{} values for a {rows} × {columns} matrix",
                values.len()
            ));
        }
        Ok(Self {
            rows,
            columns,
            packing: Packing::F32,
            storage: Storage::F32(values),
            kept: KeptPanels::default(),
        })
    }

    /// A matrix from its stored bytes (little-endian, GGUF's block layout).
    pub fn from_bytes(
        rows: usize,
        columns: usize,
        packing: Packing,
        bytes: Vec<u8>,
    ) -> Result<Self, String> {
        if packing.is_blocked() && !columns.is_multiple_of(BLOCK) {
            return Err(format!(
                "{} rows of {columns} values do not split into blocks of {BLOCK}",
                packing.name()
            ));
        }
        let expected = rows * packing.row_bytes(columns);
        if bytes.len() != expected {
            return Err(format!(
                "{} bytes for a {rows} × {columns} {} matrix, which takes {expected}",
                bytes.len(),
                packing.name()
            ));
        }
        if packing == Packing::F32 {
            let values = bytes
                .chunks_exact(4)
                .map(|chunk| f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]))
                .collect();
            return Self::from_f32(rows, columns, values);
        }
        Ok(Self {
            rows,
            columns,
            packing,
            storage: Storage::Bytes(bytes),
            kept: KeptPanels::default(),
        })
    }

    /// Output rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input columns.
    pub fn columns(&self) -> usize {
        self.columns
    }

    /// The storage format.
    pub fn packing(&self) -> Packing {
        self.packing
    }

    /// Bytes the values occupy in memory.
    pub fn stored_bytes(&self) -> usize {
        match &self.storage {
            Storage::F32(values) => 4 * values.len(),
            Storage::Bytes(bytes) => bytes.len(),
        }
    }

    fn row_bytes(&self, row: usize) -> &[u8] {
        let Storage::Bytes(bytes) = &self.storage else {
            unreachable!("f32 rows are read as floats")
        };
        let width = self.packing.row_bytes(self.columns);
        &bytes[row * width..(row + 1) * width]
    }

    /// Row `row` as `f32` values into `out` (`columns` long).
    pub fn dequantize_row(&self, row: usize, out: &mut [f32]) {
        self.dequantize_row_with(SimdPath::detect(), row, out);
    }

    /// [`PackedMatrix::dequantize_row`] on a chosen SIMD path (tests check
    /// every path the machine has).
    pub fn dequantize_row_with(&self, path: SimdPath, row: usize, out: &mut [f32]) {
        assert_eq!(out.len(), self.columns, "dequantize_row: output width");
        match &self.storage {
            Storage::F32(values) => {
                out.copy_from_slice(&values[row * self.columns..(row + 1) * self.columns])
            }
            Storage::Bytes(_) => dequantize(path, self.packing, self.row_bytes(row), out),
        }
    }

    /// Every value as `f32`, row-major.
    pub fn to_f32(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.columns];
        if self.columns > 0 {
            for (row, chunk) in out.chunks_exact_mut(self.columns).enumerate() {
                self.dequantize_row(row, chunk);
            }
        }
        out
    }

    /// The matrix with its rows reordered: row `i` of the result is row
    /// `order[i]` of this one. Rows are whole blocks, so this works on
    /// every packing without touching the values.
    pub fn permute_rows(&self, order: &[usize]) -> Self {
        assert_eq!(order.len(), self.rows, "permute_rows: order length");
        let storage = match &self.storage {
            Storage::F32(values) => Storage::F32(
                order
                    .iter()
                    .flat_map(|&row| &values[row * self.columns..(row + 1) * self.columns])
                    .copied()
                    .collect(),
            ),
            Storage::Bytes(_) => Storage::Bytes(
                order
                    .iter()
                    .flat_map(|&row| self.row_bytes(row))
                    .copied()
                    .collect(),
            ),
        };
        Self {
            storage,
            ..self.clone()
        }
    }

    /// Rows `start..start + count` as a matrix of their own.
    pub fn slice_rows(&self, start: usize, count: usize) -> Self {
        let order: Vec<usize> = (start..start + count).collect();
        let mut sliced = Self {
            rows: count,
            ..self.clone()
        };
        sliced.storage = self.permute_rows_storage(&order);
        sliced
    }

    fn permute_rows_storage(&self, order: &[usize]) -> Storage {
        match &self.storage {
            Storage::F32(values) => Storage::F32(
                order
                    .iter()
                    .flat_map(|&row| &values[row * self.columns..(row + 1) * self.columns])
                    .copied()
                    .collect(),
            ),
            Storage::Bytes(_) => Storage::Bytes(
                order
                    .iter()
                    .flat_map(|&row| self.row_bytes(row))
                    .copied()
                    .collect(),
            ),
        }
    }

    /// `out[r] = row_r · x` for every row: the product with one input
    /// vector, rows split over the rayon pool.
    pub fn matvec(&self, x: &[f32], out: &mut [f32]) {
        self.matvec_with(SimdPath::detect(), x, out);
    }

    /// [`PackedMatrix::matvec`] on a chosen SIMD path.
    pub fn matvec_with(&self, path: SimdPath, x: &[f32], out: &mut [f32]) {
        matvec_group_with(path, &mut [(self, out)], x);
    }

    /// `out[i] = row_{first + i} · x`: one task's share of a product with
    /// one input vector.
    fn rows_dot(&self, path: SimdPath, first: usize, x: &[f32], out: &mut [f32]) {
        match &self.storage {
            Storage::F32(values) => {
                for (offset, slot) in out.iter_mut().enumerate() {
                    let row = first + offset;
                    *slot = crate::simd::dot(
                        path,
                        &values[row * self.columns..(row + 1) * self.columns],
                        x,
                    );
                }
            }
            Storage::Bytes(_) if fused_dot(path, self.packing) => {
                for (offset, slot) in out.iter_mut().enumerate() {
                    *slot = packed_dot(path, self.packing, self.row_bytes(first + offset), x);
                }
            }
            Storage::Bytes(_) => SCRATCH.with(|scratch| {
                let mut scratch = scratch.borrow_mut();
                scratch.resize(self.columns, 0.0);
                for (offset, slot) in out.iter_mut().enumerate() {
                    dequantize(
                        path,
                        self.packing,
                        self.row_bytes(first + offset),
                        &mut scratch,
                    );
                    *slot = crate::simd::dot(path, &scratch, x);
                }
            }),
        }
    }

    /// `out (n × rows) = x (n × columns) · thisᵀ`: the product with `n`
    /// input rows. One input row goes through [`PackedMatrix::matvec`].
    pub fn matmul(&self, x: &[f32], n: usize, out: &mut [f32]) {
        assert_eq!(x.len(), n * self.columns, "matmul: input size");
        assert_eq!(out.len(), n * self.rows, "matmul: output size");
        if n == 0 || self.rows == 0 {
            return;
        }
        if n == 1 {
            return self.matvec(x, out);
        }
        if self.columns == 0 {
            out.fill(0.0);
            return;
        }
        let path = SimdPath::detect();
        let shape = (self.rows, self.columns);
        self.with_panels(path, |source| {
            panel_product(out, x, shape, source, None, Activation::Identity, path)
        });
    }

    /// [`PackedMatrix::matmul`] into a new vector, not zeroed first (the
    /// product writes every value; zeroing 150 MB of outputs was 5% of a
    /// SmolLM2 prefill).
    pub fn matmul_new(&self, x: &[f32], n: usize) -> Vec<f32> {
        assert_eq!(x.len(), n * self.columns, "matmul: input size");
        if n <= 1 || self.rows == 0 || self.columns == 0 {
            let mut out = vec![0f32; n * self.rows];
            self.matmul(x, n, &mut out);
            return out;
        }
        let path = SimdPath::detect();
        let shape = (self.rows, self.columns);
        self.with_panels(path, |source| panel_product_new(x, shape, source, path))
    }

    /// Runs `product` with this matrix as panels: the kept ones, else
    /// made per task, each task writing the 64 rows of its panel
    /// (dequantized, or copied when they are floats) and multiplying every
    /// input row by them (`gemm` repacked the dequantized rows on every
    /// call: 17% of a SmolLM2 prefill).
    fn with_panels<R>(&self, path: SimdPath, product: impl FnOnce(PanelSource<'_>) -> R) -> R {
        let fill = self.panel_fill(path);
        product(self.source(&fill))
    }

    /// The kept panels (made now if this is the second product and the
    /// limit allows them), else `fill`.
    fn source<'a>(&'a self, fill: &'a (dyn Fn(usize, &mut [f32]) + Sync)) -> PanelSource<'a> {
        let bytes = Panels::len_of(self.rows, self.columns) * std::mem::size_of::<f32>();
        match self
            .kept
            .get(bytes, || Panels::made(self.rows, self.columns, fill))
        {
            Some(panels) => PanelSource::Packed(panels),
            None => PanelSource::Filled(fill),
        }
    }

    /// Whether this matrix keeps `f32` panels.
    pub fn keeps_panels(&self) -> bool {
        matches!(self.kept.panels.get(), Some(Some(_)))
    }

    /// What makes panel `index` of this matrix on demand.
    fn panel_fill(&self, path: SimdPath) -> impl Fn(usize, &mut [f32]) + Sync + '_ {
        move |index: usize, panel: &mut [f32]| {
            fill_panel_at(index, panel, (self.rows, self.columns), |r, row| {
                self.dequantize_row_with(path, r, row)
            })
        }
    }

    /// [`PackedMatrix::matmul_new`] of several matrices with the same `n`
    /// input rows (a layer's query, key and value maps), in one parallel
    /// region: the threads never wait between the products.
    pub fn matmul_group_new(matrices: &[&PackedMatrix], x: &[f32], n: usize) -> Vec<Vec<f32>> {
        let columns = matrices.first().map_or(0, |matrix| matrix.columns);
        if n <= 1
            || columns == 0
            || matrices
                .iter()
                .any(|matrix| matrix.rows == 0 || matrix.columns != columns)
        {
            return matrices
                .iter()
                .map(|matrix| matrix.matmul_new(x, n))
                .collect();
        }
        assert_eq!(x.len(), n * columns, "matmul: input size");
        let path = SimdPath::detect();
        let fills: Vec<_> = matrices
            .iter()
            .map(|matrix| matrix.panel_fill(path))
            .collect();
        let mut outs: Vec<Vec<f32>> = matrices
            .iter()
            .map(|matrix| Vec::with_capacity(n * matrix.rows))
            .collect();
        let products: Vec<Product<'_>> = matrices
            .iter()
            .zip(&fills)
            .zip(outs.iter_mut())
            .map(|((matrix, fill), out)| Product {
                out: out.as_mut_ptr(),
                shape: (matrix.rows, matrix.columns),
                source: matrix.source(fill),
                bias: None,
                activation: Activation::Identity,
            })
            .collect();
        // SAFETY: each output has room for n × rows values, all of which
        // the products write before the lengths are set; the outputs are
        // distinct and alias neither `x` nor the weights.
        unsafe {
            panel_products_raw(x, &products, path);
            for (out, matrix) in outs.iter_mut().zip(matrices) {
                out.set_len(n * matrix.rows);
            }
        }
        outs
    }
}

/// Products of several matrices with one input vector (a layer's query,
/// key and value maps, say) in one parallel region: the rows of all of
/// them are cut into tasks of similar size, so two threads share the work
/// without a pause between the products.
pub fn matvec_group(products: &mut [(&PackedMatrix, &mut [f32])], x: &[f32]) {
    matvec_group_with(SimdPath::detect(), products, x);
}

fn matvec_group_with(path: SimdPath, products: &mut [(&PackedMatrix, &mut [f32])], x: &[f32]) {
    let total: usize = products.iter().map(|(matrix, _)| matrix.rows).sum();
    let threads = rayon::current_num_threads().max(1);
    // A few tasks per thread balance the load; more only add overhead.
    let chunk = total
        .div_ceil(4 * threads)
        .next_multiple_of(8)
        .max(MATVEC_ROWS);
    let mut tasks: Vec<(&PackedMatrix, usize, &mut [f32])> = Vec::new();
    for (matrix, out) in products.iter_mut() {
        assert_eq!(x.len(), matrix.columns, "matvec: input width");
        assert_eq!(out.len(), matrix.rows, "matvec: output height");
        for (index, piece) in out.chunks_mut(chunk).enumerate() {
            tasks.push((*matrix, index * chunk, piece));
        }
    }
    if tasks.len() > 1 && threads > 1 {
        tasks
            .into_par_iter()
            .with_max_len(1)
            .for_each(|(matrix, first, out)| matrix.rows_dot(path, first, x, out));
    } else {
        for (matrix, first, out) in tasks {
            matrix.rows_dot(path, first, x, out);
        }
    }
}

/// Whether the packed formats may use `path`: the vector paths also need
/// F16C for the half-float scales.
fn usable(path: SimdPath) -> SimdPath {
    #[cfg(target_arch = "x86_64")]
    {
        if path != SimdPath::Portable
            && path.is_available()
            && std::arch::is_x86_feature_detected!("f16c")
        {
            return path;
        }
    }
    let _ = path;
    SimdPath::Portable
}

/// Whether `path` has a kernel that dots a stored row of `packing` with an
/// `f32` vector without writing the row out first.
fn fused_dot(path: SimdPath, packing: Packing) -> bool {
    usable(path) == SimdPath::Avx512
        && matches!(
            packing,
            Packing::Q8_0 | Packing::Q4_0 | Packing::Q4_1 | Packing::F16 | Packing::Bf16
        )
}

/// `row · x` for a stored row, on a path [`fused_dot`] accepts. The
/// weights are the exact values [`dequantize`] writes; only the order of
/// summation differs.
fn packed_dot(path: SimdPath, packing: Packing, bytes: &[u8], x: &[f32]) -> f32 {
    debug_assert!(fused_dot(path, packing));
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `fused_dot` checked the CPU has AVX-512F and F16C.
        unsafe { x86::packed_dot_avx512(packing, bytes, x) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (path, packing, bytes, x);
        unreachable!("fused dots exist on x86-64 only")
    }
}

/// One stored row (`bytes`) of `packing` into `out`.
fn dequantize(path: SimdPath, packing: Packing, bytes: &[u8], out: &mut [f32]) {
    match usable(path) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `usable` checked the CPU has the features.
        SimdPath::Avx512 => unsafe { x86::dequantize_avx512(packing, bytes, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        SimdPath::Avx2 => unsafe { x86::dequantize_avx2(packing, bytes, out) },
        _ => portable::dequantize(packing, bytes, out),
    }
}

fn half(bytes: &[u8], at: usize) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([bytes[at], bytes[at + 1]])).to_f32()
}

mod portable {
    use super::{half, Packing, BLOCK};

    pub(super) fn dequantize(packing: Packing, bytes: &[u8], out: &mut [f32]) {
        match packing {
            Packing::F32 => {
                for (value, chunk) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                    *value = f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
                }
            }
            Packing::F16 => {
                for (index, value) in out.iter_mut().enumerate() {
                    *value = half(bytes, 2 * index);
                }
            }
            Packing::Bf16 => {
                for (value, chunk) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *value =
                        f32::from_bits((u16::from_le_bytes([chunk[0], chunk[1]]) as u32) << 16);
                }
            }
            Packing::Q8_0 => {
                for (block, values) in bytes.chunks_exact(34).zip(out.chunks_exact_mut(BLOCK)) {
                    let scale = half(block, 0);
                    for (value, &q) in values.iter_mut().zip(&block[2..]) {
                        *value = scale * (q as i8) as f32;
                    }
                }
            }
            Packing::Q4_0 => {
                for (block, values) in bytes.chunks_exact(18).zip(out.chunks_exact_mut(BLOCK)) {
                    let scale = half(block, 0);
                    for (j, &q) in block[2..].iter().enumerate() {
                        values[j] = scale * ((q & 0x0F) as i32 - 8) as f32;
                        values[j + 16] = scale * ((q >> 4) as i32 - 8) as f32;
                    }
                }
            }
            Packing::Q4_1 => {
                for (block, values) in bytes.chunks_exact(20).zip(out.chunks_exact_mut(BLOCK)) {
                    let scale = half(block, 0);
                    let minimum = half(block, 2);
                    for (j, &q) in block[4..].iter().enumerate() {
                        // d·q is exact in f32 (11 + 4 bits), so this is the
                        // one rounding of `d·q + m` whichever way it is done.
                        values[j] = scale * (q & 0x0F) as f32 + minimum;
                        values[j + 16] = scale * (q >> 4) as f32 + minimum;
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{Packing, BLOCK};

    #[inline]
    #[target_feature(enable = "sse2,f16c")]
    fn scale_at(bytes: &[u8], at: usize) -> f32 {
        let bits = u16::from_le_bytes([bytes[at], bytes[at + 1]]);
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
    }

    /// The 16 weights of a four-bit level table: `d·q + m` for q = 0..15
    /// (Q4_1) or `d·(q − 8)` (Q4_0), each the exact value the dequantizer
    /// writes (`d·q` is exact in f32, so the fused multiply-add rounds once,
    /// as the separate multiply and add do).
    #[inline]
    #[target_feature(enable = "avx512f,f16c")]
    fn levels(packing: Packing, block: &[u8]) -> __m512 {
        let iota = _mm512_setr_ps(
            0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0,
        );
        let scale = scale_at(block, 0);
        let shift = if packing == Packing::Q4_0 {
            -8.0 * scale
        } else {
            scale_at(block, 2)
        };
        _mm512_fmadd_ps(_mm512_set1_ps(scale), iota, _mm512_set1_ps(shift))
    }

    /// `row · x` straight from the stored blocks. Four-bit values index a
    /// 16-entry table of their block's weights (`vpermps` reads the low
    /// four bits of each lane), so no weight is converted twice and none is
    /// written to memory.
    #[target_feature(enable = "avx512f,f16c")]
    pub(super) unsafe fn packed_dot_avx512(packing: Packing, bytes: &[u8], x: &[f32]) -> f32 {
        let px = x.as_ptr();
        let mut acc0 = _mm512_setzero_ps();
        let mut acc1 = _mm512_setzero_ps();
        match packing {
            Packing::Q4_0 | Packing::Q4_1 => {
                let (stride, offset) = if packing == Packing::Q4_0 {
                    (18, 2)
                } else {
                    (20, 4)
                };
                // Two blocks per step into four sums, so consecutive
                // multiply-adds do not wait on each other.
                let mut acc2 = _mm512_setzero_ps();
                let mut acc3 = _mm512_setzero_ps();
                let mut blocks = bytes.chunks_exact(2 * stride);
                let mut index = 0;
                for pair in blocks.by_ref() {
                    let (first, second) = pair.split_at(stride);
                    let at = px.add(index * BLOCK);
                    let table = levels(packing, first);
                    let lanes = _mm512_cvtepu8_epi32(_mm_loadu_si128(
                        first.as_ptr().add(offset) as *const __m128i
                    ));
                    acc0 = _mm512_fmadd_ps(
                        _mm512_permutexvar_ps(lanes, table),
                        _mm512_loadu_ps(at),
                        acc0,
                    );
                    acc1 = _mm512_fmadd_ps(
                        _mm512_permutexvar_ps(_mm512_srli_epi32::<4>(lanes), table),
                        _mm512_loadu_ps(at.add(16)),
                        acc1,
                    );
                    let table = levels(packing, second);
                    let lanes = _mm512_cvtepu8_epi32(_mm_loadu_si128(
                        second.as_ptr().add(offset) as *const __m128i
                    ));
                    acc2 = _mm512_fmadd_ps(
                        _mm512_permutexvar_ps(lanes, table),
                        _mm512_loadu_ps(at.add(32)),
                        acc2,
                    );
                    acc3 = _mm512_fmadd_ps(
                        _mm512_permutexvar_ps(_mm512_srli_epi32::<4>(lanes), table),
                        _mm512_loadu_ps(at.add(48)),
                        acc3,
                    );
                    index += 2;
                }
                for block in blocks.remainder().chunks_exact(stride) {
                    let at = px.add(index * BLOCK);
                    let table = levels(packing, block);
                    let lanes = _mm512_cvtepu8_epi32(_mm_loadu_si128(
                        block.as_ptr().add(offset) as *const __m128i
                    ));
                    acc0 = _mm512_fmadd_ps(
                        _mm512_permutexvar_ps(lanes, table),
                        _mm512_loadu_ps(at),
                        acc0,
                    );
                    acc1 = _mm512_fmadd_ps(
                        _mm512_permutexvar_ps(_mm512_srli_epi32::<4>(lanes), table),
                        _mm512_loadu_ps(at.add(16)),
                        acc1,
                    );
                }
                acc0 = _mm512_add_ps(acc0, acc2);
                acc1 = _mm512_add_ps(acc1, acc3);
            }
            Packing::Q8_0 => {
                for (index, block) in bytes.chunks_exact(34).enumerate() {
                    let scale = _mm512_set1_ps(scale_at(block, 0));
                    let q = block.as_ptr().add(2);
                    let low = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(
                        q as *const __m128i,
                    )));
                    let high = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(
                        q.add(16) as *const __m128i
                    )));
                    let at = px.add(index * BLOCK);
                    acc0 = _mm512_fmadd_ps(_mm512_mul_ps(scale, low), _mm512_loadu_ps(at), acc0);
                    acc1 = _mm512_fmadd_ps(
                        _mm512_mul_ps(scale, high),
                        _mm512_loadu_ps(at.add(16)),
                        acc1,
                    );
                }
            }
            Packing::F16 | Packing::Bf16 => {
                let n = x.len();
                let mut i = 0;
                while i + 16 <= n {
                    let halves = _mm256_loadu_si256(bytes.as_ptr().add(2 * i) as *const __m256i);
                    let weights = if packing == Packing::F16 {
                        _mm512_cvtph_ps(halves)
                    } else {
                        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(halves)))
                    };
                    acc0 = _mm512_fmadd_ps(weights, _mm512_loadu_ps(px.add(i)), acc0);
                    i += 16;
                }
                let mut tail = 0.0;
                let mut value = [0f32; 1];
                while i < n {
                    super::portable::dequantize(packing, &bytes[2 * i..2 * i + 2], &mut value);
                    tail = value[0].mul_add(x[i], tail);
                    i += 1;
                }
                return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1)) + tail;
            }
            Packing::F32 => unreachable!("f32 rows are dotted as floats"),
        }
        _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1))
    }

    #[target_feature(enable = "avx512f,f16c")]
    pub(super) unsafe fn dequantize_avx512(packing: Packing, bytes: &[u8], out: &mut [f32]) {
        let o = out.as_mut_ptr();
        match packing {
            Packing::F32 => super::portable::dequantize(packing, bytes, out),
            Packing::F16 => {
                let n = out.len();
                let mut i = 0;
                while i + 16 <= n {
                    let halves = _mm256_loadu_si256(bytes.as_ptr().add(2 * i) as *const __m256i);
                    _mm512_storeu_ps(o.add(i), _mm512_cvtph_ps(halves));
                    i += 16;
                }
                super::portable::dequantize(packing, &bytes[2 * i..], &mut out[i..]);
            }
            Packing::Bf16 => {
                let n = out.len();
                let mut i = 0;
                while i + 16 <= n {
                    let halves = _mm256_loadu_si256(bytes.as_ptr().add(2 * i) as *const __m256i);
                    let wide = _mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(halves));
                    _mm512_storeu_ps(o.add(i), _mm512_castsi512_ps(wide));
                    i += 16;
                }
                super::portable::dequantize(packing, &bytes[2 * i..], &mut out[i..]);
            }
            Packing::Q8_0 => {
                for (index, block) in bytes.chunks_exact(34).enumerate() {
                    let scale = _mm512_set1_ps(scale_at(block, 0));
                    let q = block.as_ptr().add(2);
                    let low = _mm512_cvtepi8_epi32(_mm_loadu_si128(q as *const __m128i));
                    let high = _mm512_cvtepi8_epi32(_mm_loadu_si128(q.add(16) as *const __m128i));
                    let target = o.add(index * BLOCK);
                    _mm512_storeu_ps(target, _mm512_mul_ps(scale, _mm512_cvtepi32_ps(low)));
                    _mm512_storeu_ps(
                        target.add(16),
                        _mm512_mul_ps(scale, _mm512_cvtepi32_ps(high)),
                    );
                }
            }
            Packing::Q4_0 | Packing::Q4_1 => {
                let (stride, offset) = if packing == Packing::Q4_0 {
                    (18, 2)
                } else {
                    (20, 4)
                };
                for (index, block) in bytes.chunks_exact(stride).enumerate() {
                    let table = levels(packing, block);
                    let packed = _mm_loadu_si128(block.as_ptr().add(offset) as *const __m128i);
                    let lanes = _mm512_cvtepu8_epi32(packed);
                    let target = o.add(index * BLOCK);
                    _mm512_storeu_ps(target, _mm512_permutexvar_ps(lanes, table));
                    _mm512_storeu_ps(
                        target.add(16),
                        _mm512_permutexvar_ps(_mm512_srli_epi32::<4>(lanes), table),
                    );
                }
            }
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dequantize_avx2(packing: Packing, bytes: &[u8], out: &mut [f32]) {
        let o = out.as_mut_ptr();
        match packing {
            Packing::F32 | Packing::Bf16 => super::portable::dequantize(packing, bytes, out),
            Packing::F16 => {
                let n = out.len();
                let mut i = 0;
                while i + 8 <= n {
                    let halves = _mm_loadu_si128(bytes.as_ptr().add(2 * i) as *const __m128i);
                    _mm256_storeu_ps(o.add(i), _mm256_cvtph_ps(halves));
                    i += 8;
                }
                super::portable::dequantize(packing, &bytes[2 * i..], &mut out[i..]);
            }
            Packing::Q8_0 => {
                for (index, block) in bytes.chunks_exact(34).enumerate() {
                    let scale = _mm256_set1_ps(scale_at(block, 0));
                    let target = o.add(index * BLOCK);
                    for part in 0..4 {
                        let q = _mm_loadl_epi64(block.as_ptr().add(2 + 8 * part) as *const __m128i);
                        let values = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
                        _mm256_storeu_ps(target.add(8 * part), _mm256_mul_ps(scale, values));
                    }
                }
            }
            Packing::Q4_0 | Packing::Q4_1 => {
                let (stride, offset) = if packing == Packing::Q4_0 {
                    (18, 2)
                } else {
                    (20, 4)
                };
                let nibble = _mm_set1_epi8(0x0F);
                for (index, block) in bytes.chunks_exact(stride).enumerate() {
                    let scale = _mm256_set1_ps(scale_at(block, 0));
                    let shift = if packing == Packing::Q4_0 {
                        _mm256_set1_ps(-8.0 * scale_at(block, 0))
                    } else {
                        _mm256_set1_ps(scale_at(block, 2))
                    };
                    let packed = _mm_loadu_si128(block.as_ptr().add(offset) as *const __m128i);
                    let low = _mm_and_si128(packed, nibble);
                    let high = _mm_and_si128(_mm_srli_epi16::<4>(packed), nibble);
                    let target = o.add(index * BLOCK);
                    for (part, values) in [(0, low), (16, high)] {
                        let first = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(values));
                        let second =
                            _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128::<8>(values)));
                        _mm256_storeu_ps(target.add(part), _mm256_fmadd_ps(scale, first, shift));
                        _mm256_storeu_ps(
                            target.add(part + 8),
                            _mm256_fmadd_ps(scale, second, shift),
                        );
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic bytes for `blocks` blocks of `packing`, scales kept in
    /// a sane half-float range.
    fn random_blocks(packing: Packing, columns: usize, rows: usize, seed: u32) -> Vec<u8> {
        let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state
        };
        let width = packing.row_bytes(columns);
        let mut bytes = vec![0u8; rows * width];
        for byte in bytes.iter_mut() {
            *byte = next() as u8;
        }
        let scale = |value: f32| half::f16::from_f32(value).to_bits().to_le_bytes();
        let (stride, scales) = match packing {
            Packing::Q8_0 => (34, 1),
            Packing::Q4_0 => (18, 1),
            Packing::Q4_1 => (20, 2),
            Packing::F16 => {
                for chunk in bytes.chunks_exact_mut(2) {
                    let value = (next() % 2000) as f32 / 1000.0 - 1.0;
                    chunk.copy_from_slice(&scale(value));
                }
                return bytes;
            }
            Packing::Bf16 => {
                for chunk in bytes.chunks_exact_mut(2) {
                    let value = (next() % 2000) as f32 / 1000.0 - 1.0;
                    chunk.copy_from_slice(&((value.to_bits() >> 16) as u16).to_le_bytes());
                }
                return bytes;
            }
            Packing::F32 => return bytes,
        };
        for block in bytes.chunks_exact_mut(stride) {
            for index in 0..scales {
                let value = (next() % 1000) as f32 / 7000.0 - 0.05;
                block[2 * index..2 * index + 2].copy_from_slice(&scale(value));
            }
        }
        bytes
    }

    fn reference_dequantize(packing: Packing, bytes: &[u8], columns: usize) -> Vec<f32> {
        let mut out = vec![0f32; bytes.len() / packing.row_bytes(columns) * columns];
        for (row, values) in bytes
            .chunks_exact(packing.row_bytes(columns))
            .zip(out.chunks_exact_mut(columns))
        {
            portable::dequantize(packing, row, values);
        }
        out
    }

    #[test]
    fn every_simd_path_dequantizes_to_the_same_values() {
        for packing in [
            Packing::F16,
            Packing::Bf16,
            Packing::Q8_0,
            Packing::Q4_0,
            Packing::Q4_1,
        ] {
            let columns = 96;
            let bytes = random_blocks(packing, columns, 3, 7);
            let matrix = PackedMatrix::from_bytes(3, columns, packing, bytes.clone()).unwrap();
            let expected = reference_dequantize(packing, &bytes, columns);
            for path in SimdPath::ALL {
                if !path.is_available() {
                    continue;
                }
                let mut row = vec![0f32; columns];
                for index in 0..3 {
                    matrix.dequantize_row_with(path, index, &mut row);
                    let want = &expected[index * columns..(index + 1) * columns];
                    // Equal values; a zero's sign may differ (d·(q − 8)
                    // with q = 8 is −0 for a negative d, d·q − 8d is +0).
                    assert!(
                        row.iter().zip(want).all(|(a, b)| a == b),
                        "{packing:?} on {path}: row {index} differs"
                    );
                }
            }
        }
    }

    #[test]
    fn candle_dequantizes_the_same_values() {
        use candle_core::quantized::{GgmlDType, QTensor};
        for (packing, dtype) in [
            (Packing::Q8_0, GgmlDType::Q8_0),
            (Packing::Q4_0, GgmlDType::Q4_0),
            (Packing::Q4_1, GgmlDType::Q4_1),
            (Packing::F16, GgmlDType::F16),
        ] {
            let (rows, columns) = (4, 64);
            let bytes = random_blocks(packing, columns, rows, 11);
            let ours = PackedMatrix::from_bytes(rows, columns, packing, bytes.clone())
                .unwrap()
                .to_f32();
            let storage = candle_core::quantized::QStorage::from_data(
                std::borrow::Cow::Borrowed(&bytes),
                &candle_core::Device::Cpu,
                dtype,
            )
            .unwrap();
            let tensor = QTensor::new(storage, (rows, columns)).unwrap();
            let theirs: Vec<f32> = tensor
                .dequantize(&candle_core::Device::Cpu)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            assert_eq!(ours, theirs, "{packing:?}");
        }
    }

    #[test]
    fn products_agree_with_f64_on_every_path() {
        for packing in [
            Packing::F32,
            Packing::F16,
            Packing::Q8_0,
            Packing::Q4_1,
            Packing::Q4_0,
        ] {
            let (rows, columns) = (150, 64);
            let bytes = if packing == Packing::F32 {
                (0..rows * columns)
                    .flat_map(|i| ((i as f32 * 0.37).sin() * 0.2).to_le_bytes())
                    .collect()
            } else {
                random_blocks(packing, columns, rows, 3)
            };
            let matrix = PackedMatrix::from_bytes(rows, columns, packing, bytes).unwrap();
            let weights = matrix.to_f32();
            for n in [1, 2, 5] {
                let x: Vec<f32> = (0..n * columns).map(|i| (i as f32 * 0.11).cos()).collect();
                let mut out = vec![0f32; n * rows];
                matrix.matmul(&x, n, &mut out);
                let fresh = matrix.matmul_new(&x, n);
                assert_eq!(
                    fresh.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    out.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    "matmul_new differs from matmul"
                );
                for i in 0..n {
                    for r in 0..rows {
                        let exact: f64 = (0..columns)
                            .map(|c| weights[r * columns + c] as f64 * x[i * columns + c] as f64)
                            .sum();
                        let got = out[i * rows + r] as f64;
                        assert!(
                            (got - exact).abs() <= 1e-5 * (1.0 + exact.abs()),
                            "{packing:?} n={n}: {got} vs {exact}"
                        );
                    }
                }
            }
            let x: Vec<f32> = (0..columns).map(|i| (i as f32 * 0.11).cos()).collect();
            let mut reference = vec![0f32; rows];
            matrix.matvec_with(SimdPath::Portable, &x, &mut reference);
            for path in SimdPath::ALL.into_iter().filter(|p| p.is_available()) {
                let mut out = vec![0f32; rows];
                matrix.matvec_with(path, &x, &mut out);
                for (a, b) in out.iter().zip(&reference) {
                    assert!(
                        (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                        "{packing:?} {path}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_group_of_products_gives_each_product_bits() {
        // Three maps of one input (as a layer's query, key and value), of
        // different packings and heights (a partial panel, one panel, many).
        let columns = 96;
        let matrices: Vec<PackedMatrix> = [
            (Packing::Q4_1, 200),
            (Packing::Q8_0, 64),
            (Packing::F16, 37),
        ]
        .into_iter()
        .enumerate()
        .map(|(seed, (packing, rows))| {
            let bytes = random_blocks(packing, columns, rows, seed as u32 + 5);
            PackedMatrix::from_bytes(rows, columns, packing, bytes).unwrap()
        })
        .collect();
        let group: Vec<&PackedMatrix> = matrices.iter().collect();
        for n in [0, 1, 7, 300] {
            let x: Vec<f32> = (0..n * columns).map(|i| (i as f32 * 0.23).sin()).collect();
            let together = PackedMatrix::matmul_group_new(&group, &x, n);
            assert_eq!(together.len(), 3);
            for (matrix, out) in matrices.iter().zip(&together) {
                let alone = matrix.matmul_new(&x, n);
                assert_eq!(
                    out.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    alone.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    "{:?} n={n}",
                    matrix.packing
                );
            }
        }
    }

    #[test]
    fn permuting_rows_moves_whole_rows() {
        let bytes = random_blocks(Packing::Q4_1, 32, 4, 5);
        let matrix = PackedMatrix::from_bytes(4, 32, Packing::Q4_1, bytes).unwrap();
        let values = matrix.to_f32();
        let permuted = matrix.permute_rows(&[2, 0, 3, 1]).to_f32();
        assert_eq!(&permuted[..32], &values[64..96]);
        assert_eq!(&permuted[96..], &values[32..64]);
        let sliced = matrix.slice_rows(1, 2).to_f32();
        assert_eq!(sliced, values[32..96]);
    }

    #[test]
    fn refuses_wrong_sizes() {
        assert!(PackedMatrix::from_bytes(2, 48, Packing::Q8_0, vec![0; 68]).is_err());
        assert!(PackedMatrix::from_bytes(2, 32, Packing::Q8_0, vec![0; 67]).is_err());
        assert!(PackedMatrix::from_f32(2, 2, vec![0.0; 3]).is_err());
    }
}
