//! Fused kernel against the exact path: forward and forward+backward over a
//! range of sequence lengths (8 heads, d = 64, f32), and the small sizes
//! that set `FUSED_MIN_SCORES`, where `attend` switches paths.
//!
//! `cargo bench -p attnflow-core --bench fused`. For the comparison with
//! PyTorch and the memory figures use `attnflow bench attention`.

use attnflow_core::{
    fused_attention, scaled_dot_product_attention, AttentionMask, FusedOptions, SdpaOptions,
};
use candle_core::{Device, Tensor, Var};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn inputs(n: usize) -> (Tensor, Tensor, Tensor, Tensor) {
    let make = || {
        Var::from_tensor(&Tensor::randn(0f32, 1f32, (1, 8, n, 64), &Device::Cpu).unwrap())
            .unwrap()
            .into_inner()
    };
    (make(), make(), make(), make())
}

fn forward(fused: bool, q: &Tensor, k: &Tensor, v: &Tensor, mask: &AttentionMask) -> Tensor {
    if fused {
        fused_attention(q, k, v, mask, &FusedOptions::default())
            .unwrap()
            .output
    } else {
        scaled_dot_product_attention(q, k, v, mask, &SdpaOptions::default())
            .unwrap()
            .output
    }
}

fn bench_forward(c: &mut Criterion) {
    let mut group = c.benchmark_group("attention forward (8 heads, d=64)");
    group
        .sample_size(10)
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    for n in [16usize, 32, 64, 128, 256, 1024, 2048] {
        let (q, k, v, _) = inputs(n);
        group.throughput(Throughput::Elements((4 * 8 * n * n * 64) as u64));
        for (name, fused) in [("fused", true), ("exact", false)] {
            for (mask_name, mask) in [
                ("none", AttentionMask::none()),
                ("causal", AttentionMask::causal()),
            ] {
                group.bench_with_input(
                    BenchmarkId::new(format!("{name}/{mask_name}"), n),
                    &n,
                    |b, _| b.iter(|| forward(fused, &q, &k, &v, &mask)),
                );
            }
        }
    }
    group.finish();
}

fn bench_forward_backward(c: &mut Criterion) {
    let mut group = c.benchmark_group("attention forward+backward (8 heads, d=64)");
    group
        .sample_size(10)
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    for n in [64usize, 256, 1024] {
        let (q, k, v, probe) = inputs(n);
        group.throughput(Throughput::Elements((14 * 8 * n * n * 64) as u64));
        for (name, fused) in [("fused", true), ("exact", false)] {
            group.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
                b.iter(|| {
                    let output = forward(fused, &q, &k, &v, &AttentionMask::none());
                    (output * &probe)
                        .unwrap()
                        .sum_all()
                        .unwrap()
                        .backward()
                        .unwrap()
                })
            });
        }
    }
    group.finish();
}

/// One head of a few positions: where the fixed costs of either path
/// dominate, which decides `FUSED_MIN_SCORES`.
fn bench_tiny(c: &mut Criterion) {
    let mut group = c.benchmark_group("attention tiny forward+backward (1 head, d=16)");
    group
        .sample_size(20)
        .warm_up_time(std::time::Duration::from_millis(300))
        .measurement_time(std::time::Duration::from_secs(1));
    for n in [4usize, 16, 64] {
        let make = || {
            Var::from_tensor(&Tensor::randn(0f32, 1f32, (1, 1, n, 16), &Device::Cpu).unwrap())
                .unwrap()
                .into_inner()
        };
        let (q, k, v) = (make(), make(), make());
        for (name, fused) in [("fused", true), ("exact", false)] {
            group.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
                b.iter(|| {
                    forward(fused, &q, &k, &v, &AttentionMask::causal())
                        .sum_all()
                        .unwrap()
                        .backward()
                        .unwrap()
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_forward, bench_forward_backward, bench_tiny);
criterion_main!(benches);
