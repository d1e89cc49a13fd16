//! `attnflow bench workflow`: durable transitions per second and claim
//! latency for 1, 4 and 16 workers, beside `pgbench -N` on PostgreSQL.
//! The logic lives in `attnflow_bench::workflow`.

use attnflow_bench::protocol::{Protocol, DEFAULT_ROUNDS};
use attnflow_bench::workflow::{bench_workflow_rounds, WorkflowBenchOptions};
use clap::Args;
use miette::miette;

use crate::error::{CliError, CliResult};
use crate::output::print_json;

/// Arguments of `attnflow bench workflow`.
#[derive(Debug, Args)]
pub struct BenchWorkflowArgs {
    /// The store: an SQLite file or postgres://USER@HOST:PORT/DATABASE
    /// [default: $ATTNFLOW_DB, else attnflow.db]
    #[arg(long)]
    db: Option<String>,
    /// Worker counts to measure (repeat or comma-separate).
    #[arg(long, value_delimiter = ',', default_values_t = [1, 4, 16])]
    workers: Vec<usize>,
    /// States per run.
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Runs queued per worker.
    #[arg(long, default_value_t = 20)]
    runs_per_worker: usize,
    /// Seconds of `pgbench -N -c 16` (PostgreSQL; 0 skips it).
    #[arg(long, default_value_t = 10)]
    pgbench_seconds: u32,
    /// Interleaved rounds (attnflow, peer, attnflow, ...); each ratio is
    /// reported as the median over the rounds with its range.
    #[arg(long, default_value_t = DEFAULT_ROUNDS, value_parser = super::rounds)]
    rounds: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Runs `attnflow bench workflow`.
pub fn run(args: BenchWorkflowArgs) -> CliResult {
    let location = attnflow_workflow::Location::resolve(args.db.as_deref())
        .map_err(|error| CliError::bad_input(miette!("{error}")))?;
    if args.workers.iter().any(|count| *count == 0 || *count > 256) || args.steps == 0 {
        return Err(CliError::bad_input(miette!(
            "--workers takes counts from 1 to 256 and --steps at least 1"
        )));
    }
    let options = WorkflowBenchOptions {
        workers: args.workers,
        steps: args.steps,
        runs_per_worker: args.runs_per_worker.max(1),
        pgbench_seconds: args.pgbench_seconds,
    };
    // pgbench is the peer here; PyTorch (if `python3` has it) still gives
    // the second matrix product ceiling of the machine report.
    let protocol = Protocol {
        rounds: args.rounds,
        ..Protocol::default()
    };
    let report = bench_workflow_rounds(&location, &options, &protocol).map_err(|error| {
        if error.is_bad_input() {
            CliError::bad_input(miette!("{error}"))
        } else {
            CliError::failed(miette!("{error}"))
        }
    })?;
    if args.json {
        return print_json(&report);
    }
    print!("{}", report.to_text());
    Ok(())
}
