//! `attnflow bench train`: the same small decoder trained in attnflow and
//! PyTorch, interleaved over rounds, at one size or all three.

use std::path::PathBuf;

use attnflow_bench::protocol::{Protocol, DEFAULT_ROUNDS};
use attnflow_bench::train::{run_sizes, sizes_named, BenchOptions, Size};
use clap::Args;
use miette::miette;

use crate::commands::train::train_error;
use crate::error::{CliError, CliResult};
use crate::output::print_json;

/// Arguments of `attnflow bench train`.
#[derive(Debug, Args)]
pub struct BenchTrainArgs {
    /// The model and batch: small (2 layers, width 64, 4 heads, 16 tokens,
    /// batch 64), medium (2 layers, width 128, 4 heads, 64 tokens, batch
    /// 16), large (4 layers, width 256, 8 heads, 128 tokens, batch 16) or
    /// all three in turn; the flags below override single dimensions.
    #[arg(long, default_value = "medium")]
    size: String,
    /// Interleaved rounds (attnflow, PyTorch, attnflow, ...); ratios are
    /// reported as the median with the range.
    #[arg(long, default_value_t = DEFAULT_ROUNDS, value_parser = super::rounds)]
    rounds: usize,
    /// Timed training steps on each side in each round.
    #[arg(long, default_value_t = 60)]
    steps: u64,
    /// Untimed steps first.
    #[arg(long, default_value_t = 3)]
    warmup_steps: u64,
    /// Model width.
    #[arg(long)]
    d_model: Option<usize>,
    /// Attention heads.
    #[arg(long)]
    heads: Option<usize>,
    /// Decoder layers.
    #[arg(long)]
    layers: Option<usize>,
    /// Feed-forward width.
    #[arg(long)]
    d_ff: Option<usize>,
    /// Sequence length (even).
    #[arg(long)]
    seq: Option<usize>,
    /// Sequences per step.
    #[arg(long)]
    batch: Option<usize>,
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

impl BenchTrainArgs {
    /// The options of one size with this command's overrides.
    fn options(&self, size: Size) -> BenchOptions {
        let preset = size.options();
        BenchOptions {
            vocab: self.vocab,
            d_model: self.d_model.unwrap_or(preset.d_model),
            heads: self.heads.unwrap_or(preset.heads),
            layers: self.layers.unwrap_or(preset.layers),
            d_ff: self.d_ff.unwrap_or(preset.d_ff),
            seq: self.seq.unwrap_or(preset.seq),
            batch: self.batch.unwrap_or(preset.batch),
            steps: self.steps,
            warmup_steps: self.warmup_steps,
            python: self.python.clone(),
            skip_torch: self.no_torch,
        }
    }
}

/// Runs `attnflow bench train`.
pub fn run(args: BenchTrainArgs) -> CliResult {
    let sizes = sizes_named(&args.size)
        .map_err(|message| CliError::bad_input(miette!("--size: {message}")))?;
    let protocol = Protocol {
        rounds: args.rounds,
        python: (!args.no_torch).then(|| args.python.clone()),
    };
    let options: Vec<(Size, BenchOptions)> = sizes
        .iter()
        .map(|&size| (size, args.options(size)))
        .collect();
    let reports = run_sizes(&options, &protocol).map_err(train_error)?;
    if args.json {
        return print_json(&reports);
    }
    print!("{}", reports.to_text());
    Ok(())
}
