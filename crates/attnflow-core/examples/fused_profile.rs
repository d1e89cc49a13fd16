//! A profiling driver for the fused kernel: runs forward+backward (or only
//! the forward) at one size in a loop, for `perf record`, and between the
//! rounds a 2048³ product through candle (the `gemm` ceiling `attnflow bench
//! attention` reports), so the best of each gives the share of the ceiling
//! even on a machine whose load comes and goes.
//!
//! `cargo run --release -p attnflow-core --example fused_profile -- N ITERS [fwd|both] [QUERY_BLOCK KEY_BLOCK]`
//! (a key block that is not a multiple of 16 takes the `gemm` products
//! instead of the register tiles).

use std::time::Instant;

use attnflow_core::{fused_attention, AttentionMask, FusedOptions, Tiling};
use candle_core::{Device, Tensor, Var};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).map_or(Ok(1024), |s| s.parse())?;
    let iterations: usize = args.get(2).map_or(Ok(20), |s| s.parse())?;
    let forward_only = args.get(3).is_some_and(|s| s == "fwd");
    let tiling = match (args.get(4), args.get(5)) {
        (Some(query), Some(key)) => Some(Tiling {
            query_block: query.parse()?,
            key_block: key.parse()?,
        }),
        _ => None,
    };
    let options = FusedOptions {
        tiling,
        ..FusedOptions::default()
    };
    // As the `attnflow` binary does (see attnflow_core::process).
    attnflow_core::process::keep_freed_memory();
    let random = || Tensor::randn(0f32, 1f32, (1, 8, n, 64), &Device::Cpu);
    let variable =
        || -> candle_core::Result<Tensor> { Ok(Var::from_tensor(&random()?)?.into_inner()) };
    let (q, k, v, probe) = (variable()?, variable()?, variable()?, random()?);
    let a = Tensor::randn(0f32, 1f32, (2048, 2048), &Device::Cpu)?;
    let b = Tensor::randn(0f32, 1f32, (2048, 2048), &Device::Cpu)?;
    let mut best_product = f64::INFINITY;
    let mut best = f64::INFINITY;
    let (mut product_cpu, mut attention_cpu) = (0f64, 0f64);
    for _ in 0..iterations {
        let start = Instant::now();
        let cpu = cpu_seconds();
        a.matmul(&b)?;
        product_cpu += cpu_seconds() - cpu;
        best_product = best_product.min(start.elapsed().as_secs_f64());
        let cpu = cpu_seconds();
        let start = Instant::now();
        let output = fused_attention(&q, &k, &v, &AttentionMask::none(), &options)?.output;
        if !forward_only {
            (output * &probe)?.sum_all()?.backward()?;
        }
        best = best.min(start.elapsed().as_secs_f64());
        attention_cpu += cpu_seconds() - cpu;
    }
    let flops = 4.0 * 8.0 * (n as f64).powi(2) * 64.0 * if forward_only { 1.0 } else { 3.5 };
    // Per CPU-second of every thread: what a loaded machine changes least.
    let per_cpu = flops * iterations as f64 / attention_cpu / 1e9;
    let product_per_cpu = 2.0 * 2048f64.powi(3) * iterations as f64 / product_cpu / 1e9;
    println!(
        "n = {n}: {per_cpu:.1} GFLOP per CPU-second; the 2048³ product {product_per_cpu:.1}; {:.0}% of it",
        100.0 * per_cpu / product_per_cpu
    );
    let ceiling = 2.0 * 2048f64.powi(3) / best_product / 1e9;
    println!(
        "n = {n}: best {:.2} ms, {:.1} GFLOP/s; gemm ceiling {ceiling:.1} GFLOP/s; {:.0}% of it",
        best * 1e3,
        flops / best / 1e9,
        100.0 * flops / best / 1e9 / ceiling
    );
    Ok(())
}

/// CPU time of every thread of this process so far (Linux
/// `/proc/self/task/*/schedstat`), in seconds.
fn cpu_seconds() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|line| line.split_whitespace().next()?.parse::<f64>().ok())
        .sum::<f64>()
        / 1e9
}
