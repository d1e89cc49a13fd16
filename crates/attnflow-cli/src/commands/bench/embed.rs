//! `attnflow bench embed`: sentence embeddings against sentence-transformers.

use std::path::PathBuf;

use attnflow_bench::embed::{bench_embed_rounds, EmbedBenchConfig};
use attnflow_bench::protocol::{Protocol, DEFAULT_ROUNDS};
use clap::Args;

use crate::commands::embed::model_error;
use crate::error::CliResult;
use crate::output::{print_json, spinner};

/// Arguments of `attnflow bench embed`.
#[derive(Debug, Args)]
pub struct BenchEmbedArgs {
    /// The Hugging Face model directory (as for `attnflow embed`).
    #[arg(long)]
    model: PathBuf,
    /// Number of generated texts (4 to 40 words each).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    texts: u64,
    /// Texts per forward pass, for both tools.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..))]
    batch_size: u64,
    /// Seed of the text generator.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The Python interpreter to try for sentence-transformers.
    #[arg(long, default_value = "python3")]
    python: PathBuf,
    /// Skip sentence-transformers even when installed.
    #[arg(long)]
    no_python: bool,
    /// Interleaved rounds (attnflow, peer, attnflow, ...); each ratio is
    /// reported as the median over the rounds with its range.
    #[arg(long, default_value_t = DEFAULT_ROUNDS, value_parser = super::rounds)]
    rounds: usize,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `attnflow bench embed`: the same generated texts through attnflow
/// and sentence-transformers, texts/s for both, their ratio and agreement.
pub fn run(args: BenchEmbedArgs) -> CliResult {
    let config = EmbedBenchConfig {
        texts: args.texts as usize,
        batch_size: args.batch_size as usize,
        python: (!args.no_python).then(|| args.python.clone()),
        seed: args.seed,
    };
    let waiting = spinner(
        format!(
            "embedding {} texts with attnflow, then the peer, {} rounds",
            args.texts, args.rounds
        ),
        args.json,
    );
    let protocol = Protocol {
        rounds: args.rounds,
        python: config.python.clone(),
    };
    let report = bench_embed_rounds(&args.model, &config, &protocol).map_err(model_error)?;
    waiting.finish_and_clear();
    if args.json {
        return print_json(&report);
    }
    print!("{}", report.to_text());
    Ok(())
}
