//! `attnflow bench data`: the quality check against pandas + pandera.

use std::path::PathBuf;

use attnflow_bench::data::{run_rounds_of, BenchOptions};
use attnflow_bench::protocol::{Protocol, DEFAULT_ROUNDS};
use clap::Args;
use miette::miette;

use crate::error::{CliError, CliResult};
use crate::output::print_json;

/// Arguments of `attnflow bench data`.
#[derive(Debug, Args)]
pub struct BenchDataArgs {
    /// Rows to generate.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    rows: u64,
    /// Skip the run that writes the SQLite queue.
    #[arg(long)]
    no_store: bool,
    /// Also time a run into this PostgreSQL database (postgres://...); the
    /// bench removes its rows afterwards.
    #[arg(long, value_name = "URL")]
    postgres: Option<String>,
    /// Skip pandera even when installed.
    #[arg(long)]
    no_pandera: bool,
    /// Write the generated CSV (and the store) into DIR and keep them,
    /// instead of a temporary directory.
    #[arg(long, value_name = "DIR")]
    keep: Option<PathBuf>,
    /// Interleaved rounds (attnflow, peer, attnflow, ...); each ratio is
    /// reported as the median over the rounds with its range.
    #[arg(long, default_value_t = DEFAULT_ROUNDS, value_parser = super::rounds)]
    rounds: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Runs `attnflow bench data`.
pub fn run(args: BenchDataArgs) -> CliResult {
    let postgres = args
        .postgres
        .as_deref()
        .map(attnflow_store::Location::parse)
        .transpose()
        .map_err(|error| CliError::bad_input(miette!("--postgres: {error}")))?;
    let options = BenchOptions {
        rows: args.rows,
        with_store: !args.no_store,
        pandera: !args.no_pandera,
        directory: args.keep.clone(),
        postgres,
        progress: !args.json,
    };
    // The peer runs with `python3`; its PyTorch gives the second ceiling.
    let protocol = Protocol {
        rounds: args.rounds,
        ..Protocol::default()
    };
    let report = run_rounds_of(&options, &protocol).map_err(crate::commands::data::data_error)?;
    if args.json {
        return print_json(&report);
    }
    print!("{}", report.to_text());
    Ok(())
}
