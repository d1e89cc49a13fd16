//! Times `f(x·Wᵀ + b)` through `gemm` (packing both operands per call) and
//! through weights laid out once in panels, at MiniLM's, SmolLM2's and the
//! training bench's shapes:
//!
//!     cargo run --release -p attnflow-kernels --example panel_shapes
//!
//! Each figure is the fastest of 100 runs (the one least disturbed on a
//! shared machine); the load average is printed first.

use attnflow_kernels::{linear_into, linear_panels_into, Activation, Panels, Weight};
use std::time::Instant;

fn main() {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "load average: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    for (m, n, k) in [
        (800, 384, 384),
        (800, 1536, 384),
        (800, 384, 1536),
        (256, 576, 576),
        (256, 1536, 576),
        (256, 576, 1536),
        (256, 192, 576),
        (1024, 384, 128),
        (1024, 128, 512),
        (32, 384, 384),
    ] {
        let x: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
        let w: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
        let panels = Panels::pack(Weight::new(&w, n, k));
        let mut c = vec![0f32; m * n];
        let (mut g, mut p) = (f64::MAX, f64::MAX);
        attnflow_kernels::threads::install(|| {
            for _ in 0..100 {
                let t = Instant::now();
                linear_into(
                    &mut c,
                    &x,
                    Weight::new(&w, n, k),
                    None,
                    Activation::Identity,
                );
                g = g.min(t.elapsed().as_secs_f64());
                let t = Instant::now();
                linear_panels_into(&mut c, &x, &panels, None, Activation::Identity);
                p = p.min(t.elapsed().as_secs_f64());
            }
        });
        let f = 2.0 * (m * n * k) as f64 / 1e9;
        println!(
            "{m}x{n}x{k}: gemm {:.0} GFLOP/s, panels {:.0} GFLOP/s",
            f / g,
            f / p
        );
    }
}
