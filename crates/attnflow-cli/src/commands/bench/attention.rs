//! `attnflow bench attention`: the fused kernel, the exact path and PyTorch's
//! scaled_dot_product_attention, each case in its own process.

use std::path::PathBuf;

use attnflow_bench::attention::{
    run_bench_rounds, run_case_in_process, run_isolated, BenchConfig, BenchProgress, Case,
};
use attnflow_bench::protocol::{Protocol, DEFAULT_ROUNDS};
use clap::Args;
use miette::miette;

use crate::error::{CliError, CliResult};
use crate::output::{print_json, progress_bar};

/// Arguments of `attnflow bench attention`.
#[derive(Debug, Args)]
pub struct BenchAttentionArgs {
    /// Sequence lengths to time, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "512,1024,2048,4096,8192",
          value_parser = clap::value_parser!(u64).range(1..))]
    sizes: Vec<u64>,
    /// Heads.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..))]
    heads: u64,
    /// Width of each head.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    head_dim: u64,
    /// Batch size.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    batch: u64,
    /// One run per case and no warm-up (a smoke test, not a measurement).
    #[arg(long)]
    quick: bool,
    /// The Python interpreter to try for PyTorch.
    #[arg(long, default_value = "python3")]
    python: PathBuf,
    /// Skip PyTorch even when installed.
    #[arg(long)]
    no_torch: bool,
    /// Skip the exact path where it would need more memory than this, GB.
    #[arg(long, default_value_t = 4.0)]
    exact_limit_gb: f64,
    /// Interleaved rounds (attnflow, peer, attnflow, ...); each ratio is
    /// reported as the median over the rounds with its range.
    #[arg(long, default_value_t = DEFAULT_ROUNDS, value_parser = super::rounds)]
    rounds: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Internal: run one case (given as JSON) in this process and print its
    /// measurement as JSON; the benchmark runs each case this way so that
    /// its peak memory is its own.
    #[arg(long, hide = true)]
    case: Option<String>,
}

/// Runs `attnflow bench attention` (or, with the hidden `--case`, one case).
pub fn run(args: BenchAttentionArgs) -> CliResult {
    if let Some(case) = &args.case {
        let case: Case = serde_json::from_str(case)
            .map_err(|e| CliError::bad_input(miette!("--case: not a benchmark case: {e}")))?;
        let measured = run_case_in_process(&case).map_err(|e| CliError::failed(miette!("{e}")))?;
        return print_json(&measured);
    }
    if !(args.exact_limit_gb.is_finite() && args.exact_limit_gb >= 0.0) {
        return Err(CliError::bad_input(miette!(
            "--exact-limit-gb must be a non-negative number, got {}",
            args.exact_limit_gb
        )));
    }
    let config = BenchConfig {
        sizes: args.sizes.iter().map(|&n| n as usize).collect(),
        batch: args.batch as usize,
        heads: args.heads as usize,
        d: args.head_dim as usize,
        quick: args.quick,
        python: (!args.no_torch).then(|| args.python.clone()),
        exact_memory_limit: (args.exact_limit_gb * 1e9) as u64,
    };
    let executable = std::env::current_exe()
        .map_err(|e| CliError::failed(miette!("cannot find the attnflow executable: {e}")))?;
    let bar = progress_bar(0, "{bar:30} {pos}/{len} {elapsed} {msg}", args.json);
    let mut progress = |event: BenchProgress| match event {
        BenchProgress::Total(total) => bar.set_length(total),
        BenchProgress::Case(label) => {
            if !bar.message().is_empty() {
                bar.inc(1);
            }
            bar.set_message(label);
        }
    };
    let isolated = |case: &Case| run_isolated(&executable, case);
    let protocol = Protocol {
        rounds: args.rounds,
        python: config.python.clone(),
    };
    let report = run_bench_rounds(&config, &protocol, &isolated, &mut progress)
        .map_err(|e| CliError::failed(miette!("{e}")))?;
    bar.finish_and_clear();
    if args.json {
        return print_json(&report);
    }
    print!("{}", report.to_text());
    Ok(())
}
