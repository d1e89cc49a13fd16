//! Times the fused linear op forward and backward at the benchmark model's
//! shapes and prints GFLOP/s: `cargo run --release -p attnflow-train
//! --example kernel_shapes`.

use std::time::Instant;

use attnflow_train::kernels::linear;
use candle_core::{Device, Tensor, Var};

fn main() {
    let device = Device::Cpu;
    let tokens = 1024;
    for (inputs, outputs) in [(128, 128), (128, 512), (512, 128), (128, 64)] {
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (tokens, inputs), &device).unwrap())
            .unwrap();
        let w = Var::from_tensor(&Tensor::randn(0f32, 0.1, (outputs, inputs), &device).unwrap())
            .unwrap();
        let b =
            Var::from_tensor(&Tensor::zeros(outputs, candle_core::DType::F32, &device).unwrap())
                .unwrap();
        let repeats = 200;
        let flops = 2.0 * (tokens * inputs * outputs) as f64;
        let started = Instant::now();
        for _ in 0..repeats {
            let _ = linear(&x, &w, Some(&b)).unwrap();
        }
        let forward = started.elapsed().as_secs_f64() / repeats as f64;
        let y = linear(&x, &w, Some(&b)).unwrap();
        let started = Instant::now();
        for _ in 0..repeats {
            let _ = y.sum_all().unwrap().backward().unwrap();
        }
        let backward = started.elapsed().as_secs_f64() / repeats as f64;
        println!(
            "{tokens}x{inputs} -> {outputs}: forward {:.0} us ({:.0} GFLOP/s), backward {:.0} us ({:.0} GFLOP/s)",
            forward * 1e6,
            flops / forward / 1e9,
            backward * 1e6,
            2.0 * flops / backward / 1e9
        );
    }
}
