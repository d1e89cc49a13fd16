//! A profiling driver for the fused kernel: runs forward+backward (or only
//! the forward) at one size in a loop, for `perf record`.
//!
//! `cargo run --release -p attnflow-core --example fused_profile -- N ITERS [fwd]`

use std::time::Instant;

use attnflow_core::{fused_attention, AttentionMask, FusedOptions};
use candle_core::{Device, Tensor, Var};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).map_or(Ok(1024), |s| s.parse())?;
    let iterations: usize = args.get(2).map_or(Ok(20), |s| s.parse())?;
    let forward_only = args.get(3).is_some_and(|s| s == "fwd");
    // As the `attnflow` binary does (see attnflow_core::process).
    attnflow_core::process::keep_freed_memory();
    let random = || Tensor::randn(0f32, 1f32, (1, 8, n, 64), &Device::Cpu);
    let variable =
        || -> candle_core::Result<Tensor> { Ok(Var::from_tensor(&random()?)?.into_inner()) };
    let (q, k, v, probe) = (variable()?, variable()?, variable()?, random()?);
    let mut best = f64::INFINITY;
    for _ in 0..iterations {
        let start = Instant::now();
        let output =
            fused_attention(&q, &k, &v, &AttentionMask::none(), &FusedOptions::default())?.output;
        if !forward_only {
            (output * &probe)?.sum_all()?.backward()?;
        }
        best = best.min(start.elapsed().as_secs_f64());
    }
    let flops = 4.0 * 8.0 * (n as f64).powi(2) * 64.0 * if forward_only { 1.0 } else { 3.5 };
    println!(
        "n = {n}: best {:.2} ms, {:.1} GFLOP/s",
        best * 1e3,
        flops / best / 1e9
    );
    Ok(())
}
