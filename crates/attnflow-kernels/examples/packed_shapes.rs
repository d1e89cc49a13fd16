//! Times the packed products at SmolLM2-135M's shapes as prefill (256
//! rows) and decode (1 row) run them, for profiling:
//!
//!     cargo run --release -p attnflow-kernels --example packed_shapes
//!
//! Prints GFLOP/s (prefill) and GB/s of weights streamed (decode) per
//! shape, each the fastest of many runs (the one least disturbed on a
//! shared machine); the load average is printed first.

use std::time::Instant;

use attnflow_kernels::packed::{PackedMatrix, Packing};

fn random_q4_1(rows: usize, columns: usize) -> PackedMatrix {
    let mut state = 0x1234_5678u32;
    let mut bytes = vec![0u8; rows * Packing::Q4_1.row_bytes(columns)];
    for byte in bytes.iter_mut() {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        *byte = state as u8;
    }
    for block in bytes.chunks_exact_mut(20) {
        block[..2].copy_from_slice(&half::f16::from_f32(0.01).to_bits().to_le_bytes());
        block[2..4].copy_from_slice(&half::f16::from_f32(-0.08).to_bits().to_le_bytes());
    }
    PackedMatrix::from_bytes(rows, columns, Packing::Q4_1, bytes).unwrap()
}

fn main() {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "load average: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    for (m, n, k) in [(256, 1536, 576), (256, 576, 1536)] {
        println!(
            "gemm alone {m}×{n}×{k}: weights (n, k) {:.1} GFLOP/s, weights (k, n) {:.1} GFLOP/s",
            reference(m, n, k, false),
            reference(m, n, k, true)
        );
    }
    let shapes = [
        ("q/o 576×576", 576, 576),
        ("k/v 192×576", 192, 576),
        ("gate/up 1536×576", 1536, 576),
        ("down 576×1536", 576, 1536),
    ];
    for (name, rows, columns) in shapes {
        let matrix = random_q4_1(rows, columns);
        let dense = PackedMatrix::from_f32(rows, columns, matrix.to_f32()).unwrap();
        for (kind, weights) in [("q4_1", &matrix), ("f32", &dense)] {
            let n = 256;
            let x: Vec<f32> = (0..n * columns).map(|i| (i as f32 * 0.001).sin()).collect();
            let mut out = vec![0f32; n * rows];
            weights.matmul(&x, n, &mut out);
            // The fastest of many runs: on a shared machine it is the one
            // least disturbed by other work.
            let seconds = (0..30)
                .map(|_| {
                    let started = Instant::now();
                    weights.matmul(&x, n, &mut out);
                    started.elapsed().as_secs_f64()
                })
                .fold(f64::INFINITY, f64::min);
            let flops = 2.0 * (n * rows * columns) as f64;
            let x1 = &x[..columns];
            let mut y = vec![0f32; rows];
            let decode = (0..400)
                .map(|_| {
                    let started = Instant::now();
                    weights.matvec(x1, &mut y);
                    started.elapsed().as_secs_f64()
                })
                .fold(f64::INFINITY, f64::min);
            println!(
                "{name:18} {kind:5} prefill {:7.1} GFLOP/s ({:6.2} ms)   decode {:6.1} µs ({:5.1} GB/s)",
                flops / seconds / 1e9,
                seconds * 1e3,
                decode * 1e6,
                weights.stored_bytes() as f64 / decode / 1e9
            );
        }
    }
}

/// gemm on its own at `m × n × k`, every thread of rayon's pool, as the
/// ceiling the tiled products compare with; the weights stored `(n, k)` (a
/// row per output, as files store them) or `(k, n)`.
fn reference(m: usize, n: usize, k: usize, input_major: bool) -> f64 {
    let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.001).sin()).collect();
    let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.002).cos()).collect();
    let mut c = vec![0f32; m * n];
    (0..30)
        .map(|_| {
            let started = Instant::now();
            // SAFETY: row-major a (m × k), b (k × n), c (m × n), distinct.
            unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    c.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    a.as_ptr(),
                    1,
                    k as isize,
                    b.as_ptr(),
                    if input_major { 1 } else { k as isize },
                    if input_major { n as isize } else { 1 },
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::Rayon(0),
                );
            }
            2.0 * (m * n * k) as f64 / started.elapsed().as_secs_f64() / 1e9
        })
        .fold(0.0, f64::max)
}
