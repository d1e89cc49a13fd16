//! `attnflow bench data`: the quality check against pandas + pandera.

use std::path::PathBuf;

use attnflow_bench::data::{run_bench, BenchOptions};
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
    let report = run_bench(&BenchOptions {
        rows: args.rows,
        with_store: !args.no_store,
        pandera: !args.no_pandera,
        directory: args.keep.clone(),
        postgres,
        progress: !args.json,
    })
    .map_err(crate::commands::data::data_error)?;
    if args.json {
        return print_json(&report);
    }
    print!("{}", report.to_text());
    Ok(())
}
