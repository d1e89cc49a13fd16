//! Times the fused linear op, forward and backward (through candle's
//! autograd, as training runs it), at the benchmark model's shapes, and
//! prints GFLOP/s: `cargo run --release -p attnflow-train --example
//! kernel_shapes`. Compare with the machine's ceiling for `gemm` alone.

use std::time::Instant;

use attnflow_kernels::{linear, threads};
use candle_core::{DType, Device, Tensor, Var};

fn main() {
    // As `Trainer::new` does.
    attnflow_core::process::keep_freed_memory();
    attnflow_core::process::one_worker_pool();
    let device = Device::Cpu;
    let tokens = 1024;
    for (inputs, outputs) in [(128, 128), (128, 512), (512, 128), (128, 64)] {
        let var = |tensor: Tensor| Var::from_tensor(&tensor).unwrap();
        let x = var(Tensor::randn(0f32, 1.0, (tokens, inputs), &device).unwrap());
        let w = var(Tensor::randn(0f32, 0.1, (outputs, inputs), &device).unwrap());
        let b = var(Tensor::zeros(outputs, DType::F32, &device).unwrap());
        let upstream = Tensor::randn(0f32, 1.0, (tokens, outputs), &device).unwrap();
        let repeats = 200;
        let flops = 2.0 * (tokens * inputs * outputs) as f64;
        let (forward, backward) = threads::install(|| {
            let started = Instant::now();
            for _ in 0..repeats {
                linear(&x, &w, Some(&b)).unwrap();
            }
            let forward = started.elapsed().as_secs_f64() / repeats as f64;
            // Σ y ∘ upstream: its gradient reaches the op as `upstream`.
            let loss = linear(&x, &w, Some(&b))
                .unwrap()
                .mul(&upstream)
                .unwrap()
                .sum_all()
                .unwrap();
            let started = Instant::now();
            for _ in 0..repeats {
                loss.backward().unwrap();
            }
            (forward, started.elapsed().as_secs_f64() / repeats as f64)
        });
        println!(
            "{tokens}x{inputs} -> {outputs}: forward {:.0} us ({:.0} GFLOP/s), backward incl. autograd {:.0} us ({:.0} GFLOP/s)",
            forward * 1e6,
            flops / forward / 1e9,
            backward * 1e6,
            2.0 * flops / backward / 1e9
        );
    }
}
