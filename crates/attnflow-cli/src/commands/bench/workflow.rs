//! `attnflow bench workflow`: durable transitions per second and claim
//! latency for 1, 4 and 16 workers, beside `pgbench -N` on PostgreSQL.
//! The logic lives in `attnflow_bench::workflow`.

use attnflow_bench::workflow::{bench_workflow, WorkflowBenchOptions};
use clap::Args;
use miette::miette;

use crate::error::{CliError, CliResult};

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
    #[arg(long, default_value_t = 4)]
    runs_per_worker: usize,
    /// Seconds of `pgbench -N -c 16` (PostgreSQL; 0 skips it).
    #[arg(long, default_value_t = 10)]
    pgbench_seconds: u32,
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
    let report = bench_workflow(&location, &options).map_err(|error| {
        if error.is_bad_input() {
            CliError::bad_input(miette!("{error}"))
        } else {
            CliError::failed(miette!("{error}"))
        }
    })?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report)
                .map_err(|error| CliError::failed(miette!("{error}")))?
        );
        return Ok(());
    }
    let load = |value: Option<f64>| value.map_or("?".to_string(), |load| format!("{load:.2}"));
    println!(
        "attnflow bench workflow: {} ({}), load average {} before, {} after",
        report.store,
        report.backend,
        load(report.load_before),
        load(report.load_after)
    );
    println!(
        "{:>8} {:>12} {:>10} {:>14} {:>12} {:>12}",
        "workers", "transitions", "seconds", "transitions/s", "claim p50 ms", "claim p99 ms"
    );
    for row in &report.rows {
        println!(
            "{:>8} {:>12} {:>10.2} {:>14.0} {:>12.1} {:>12.1}",
            row.workers,
            row.transitions,
            row.seconds,
            row.transitions_per_second,
            row.claim_p50_ms,
            row.claim_p99_ms
        );
    }
    match (report.pgbench_tps_16, &report.pgbench_note) {
        (Some(tps), _) => println!(
            "pgbench -N, 16 clients, same server: {tps:.0} TPS; ratio {:.2}",
            report.ratio.unwrap_or(0.0)
        ),
        (None, Some(note)) => println!("pgbench: {note}"),
        (None, None) => {}
    }
    if report.load_before.is_some_and(|load| load > 0.5) {
        println!("\x1b[1mwarning: the machine is busy (load average above 0.25 per core); figures are not comparable\x1b[0m");
    }
    Ok(())
}
