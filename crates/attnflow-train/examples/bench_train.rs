//! The `attnflow bench train` measurement without the CLI:
//! `cargo run --release -p attnflow-train --example bench_train [PYTHON]`
//! (PyTorch runs when PYTHON can import torch).

use attnflow_train::bench::{run_bench, BenchOptions};

fn main() {
    let mut options = BenchOptions::default();
    match std::env::args().nth(1) {
        Some(python) => options.python = python.into(),
        None => options.skip_torch = true,
    }
    match run_bench(&options) {
        Ok(report) => println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        ),
        Err(error) => {
            eprintln!("{error}");
            std::process::exit(1);
        }
    }
}
