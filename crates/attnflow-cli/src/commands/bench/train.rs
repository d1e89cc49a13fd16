//! `attnflow bench train`: the same small decoder trained in attnflow and
//! PyTorch.

use std::path::PathBuf;

use attnflow_bench::train::{run_bench, BenchOptions};
use clap::Args;

use crate::commands::train::train_error;
use crate::error::CliResult;
use crate::output::print_json;

/// Arguments of `attnflow bench train`.
#[derive(Debug, Args)]
pub struct BenchTrainArgs {
    /// Timed training steps on each side (60 steps take about 1.5 s a
    /// side here: long enough that one busy moment does not decide it).
    #[arg(long, default_value_t = 60)]
    steps: u64,
    /// Untimed steps first.
    #[arg(long, default_value_t = 3)]
    warmup_steps: u64,
    /// Model width.
    #[arg(long, default_value_t = 128)]
    d_model: usize,
    /// Attention heads.
    #[arg(long, default_value_t = 4)]
    heads: usize,
    /// Decoder layers.
    #[arg(long, default_value_t = 2)]
    layers: usize,
    /// Feed-forward width.
    #[arg(long, default_value_t = 512)]
    d_ff: usize,
    /// Sequence length (even).
    #[arg(long, default_value_t = 64)]
    seq: usize,
    /// Sequences per step.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Vocabulary.
    #[arg(long, default_value_t = 64)]
    vocab: usize,
    /// Python interpreter with PyTorch for the peer run (skipped with a
    /// note when `import torch` fails).
    #[arg(long, default_value = "python3")]
    python: PathBuf,
    /// Skip the PyTorch run.
    #[arg(long)]
    no_torch: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Runs `attnflow bench train`.
pub fn run(args: BenchTrainArgs) -> CliResult {
    let options = BenchOptions {
        vocab: args.vocab,
        d_model: args.d_model,
        heads: args.heads,
        layers: args.layers,
        d_ff: args.d_ff,
        seq: args.seq,
        batch: args.batch,
        steps: args.steps,
        warmup_steps: args.warmup_steps,
        python: args.python.clone(),
        skip_torch: args.no_torch,
    };
    let report = run_bench(&options).map_err(train_error)?;
    if args.json {
        return print_json(&report);
    }
    print!("{}", report.to_text(&options));
    Ok(())
}
