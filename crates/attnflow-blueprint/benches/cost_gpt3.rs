//! Checking and costing a GPT-3-sized spec (96 layers, 12288 wide): the
//! issue asks for well under 100 ms for both together.

use std::path::PathBuf;

use attnflow_blueprint::{account, CostOptions, Spec};
use criterion::{criterion_group, criterion_main, Criterion};

fn check_and_cost(criterion: &mut Criterion) {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/blueprints/gpt3-175b.toml");
    let text = std::fs::read_to_string(&path).expect("the GPT-3 example blueprint exists");
    criterion.bench_function("parse, check and cost gpt3-175b (96 layers)", |bencher| {
        bencher.iter(|| {
            let spec = Spec::parse("gpt3-175b.toml", &text).expect("valid spec");
            let blueprint = spec.check(&[]).expect("checks");
            account(&blueprint, CostOptions::default())
        })
    });
}

criterion_group!(benches, check_and_cost);
criterion_main!(benches);
