//! The data bench without the CLI (builds without candle):
//! `cargo run --release -p attnflow-data --example bench_data -- ROWS [--no-store] [--no-pandera] [--dir DIR]`.
//! Prints the bench report as JSON; `attnflow bench data` prints the same
//! as a table.

use attnflow_data::bench::{run_bench, BenchOptions};

fn main() {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let rows = arguments
        .iter()
        .find_map(|argument| argument.parse::<u64>().ok())
        .unwrap_or(1_000_000);
    let options = BenchOptions {
        rows,
        with_store: !arguments.iter().any(|argument| argument == "--no-store"),
        pandera: !arguments.iter().any(|argument| argument == "--no-pandera"),
        directory: arguments
            .iter()
            .position(|argument| argument == "--dir")
            .and_then(|index| arguments.get(index + 1))
            .map(std::path::PathBuf::from),
        progress: false,
    };
    match run_bench(&options) {
        Ok(report) => println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        ),
        Err(error) => {
            eprintln!("bench failed: {error}");
            std::process::exit(1);
        }
    }
}
