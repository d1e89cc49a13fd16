//! `attnflow run`: the main job, the paper's figure 3 pipeline end to end.

use std::path::PathBuf;
use std::time::Instant;

use attnflow_pipeline::{RunOptions, StepEvent};
use clap::Args;
use miette::miette;

use crate::error::{CliError, CliResult};
use crate::output::print_json;

/// Arguments of `attnflow run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// A pipeline spec (TOML). Without one, runs the embedded default: a
    /// built-in blueprint on a generated dataset with a few broken records.
    spec: Option<PathBuf>,
    /// The run folder (default: attnflow-runs/run-YYYYMMDD-HHMMSS).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The store of workflow history, shared by runs so the workflow
    /// analysis sees them all: an SQLite file or postgres://USER@HOST:PORT/DB
    /// (each run's data queue and quarantine are in its folder's
    /// data.sqlite) [default: attnflow-runs/attnflow.sqlite; with --resume,
    /// the store the run folder records].
    #[arg(long)]
    db: Option<PathBuf>,
    /// Continue the run in this folder from its last recorded state.
    #[arg(long, conflicts_with_all = ["spec", "out"])]
    resume: Option<PathBuf>,
    /// Rows of valid records in the default dataset.
    #[arg(long, default_value_t = attnflow_pipeline::DEFAULT_ROWS)]
    rows: usize,
    /// Write the embedded default pipeline (spec, schema, blueprint, data)
    /// into this folder to edit, and stop.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["spec", "resume"])]
    write_default: Option<PathBuf>,
    /// Put the run on the store's workers (`attnflow worker --db ...`)
    /// instead of running it here; the run folder must be reachable at the
    /// same path from the workers' machines.
    #[arg(long, conflicts_with = "resume")]
    submit: bool,
    /// Print the outcome as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs the pipeline and prints where the report is.
pub fn run(args: RunArgs) -> CliResult {
    let started = Instant::now();
    if let Some(directory) = &args.write_default {
        let spec = attnflow_pipeline::write_default_inputs(directory, args.rows)?;
        println!(
            "wrote the default pipeline to {}; run it with `attnflow run {}`",
            directory.display(),
            spec.display()
        );
        return Ok(());
    }
    let quiet = args.json;
    let options = |run_dir: PathBuf| RunOptions {
        run_dir,
        store: args.db.clone(),
        observer: Box::new(move |event: &StepEvent| {
            if !quiet {
                print_event(event)
            }
        }),
        progress_bar: !quiet,
    };
    let outcome = match &args.resume {
        Some(run_dir) => attnflow_pipeline::resume(run_dir, options(run_dir.clone()))?,
        None => {
            let run_dir = args.out.clone().unwrap_or_else(default_run_dir);
            let spec = match &args.spec {
                Some(spec) => spec.clone(),
                None => {
                    if !quiet {
                        eprintln!(
                            "attnflow run: the embedded default pipeline ({} records + a few broken ones) in {}",
                            args.rows,
                            run_dir.display()
                        );
                    }
                    attnflow_pipeline::write_default_inputs(&run_dir.join("inputs"), args.rows)?
                }
            };
            if args.submit {
                return print_submitted(
                    attnflow_pipeline::submit(&spec, options(run_dir))?,
                    args.json,
                );
            }
            attnflow_pipeline::start(&spec, options(run_dir))?
        }
    };
    if args.json {
        print_json(&outcome)?;
    } else {
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "run {} ended in {} after {seconds:.0} s",
            outcome.workflow_run, outcome.state
        );
        println!("  run folder: {}", outcome.run_dir.display());
        match &outcome.report {
            Some(report) => println!("  report:     {}", report.display()),
            None => println!("  no report (the run did not reach output generation)"),
        }
    }
    if outcome.succeeded {
        return Ok(());
    }
    Err(CliError::failed(miette!(
        "the pipeline ended in {}; `attnflow workflow show {} --db {}` shows every step",
        outcome.state,
        outcome.workflow_run,
        outcome.store.display()
    )))
}

/// Says where the submitted run is and which workers it needs.
fn print_submitted(submitted: attnflow_pipeline::Submitted, json: bool) -> CliResult {
    if json {
        return print_json(&submitted);
    }
    let store = submitted.store.display();
    let queues: Vec<String> = submitted
        .queues
        .iter()
        .map(|queue| format!("--queue {queue}"))
        .collect();
    println!(
        "run {} submitted to {store}; its workers: `attnflow worker --db {store} {}`",
        submitted.workflow_run,
        queues.join(" ")
    );
    println!("  run folder: {}", submitted.run_dir.display());
    println!(
        "  watch it:   attnflow workflow show {} --db {store}",
        submitted.workflow_run
    );
    Ok(())
}

/// One line on standard error per step, re-run, result and back-off.
fn print_event(event: &StepEvent) {
    match event {
        StepEvent::StepStarted { state, .. } => eprintln!("▶ {state}"),
        StepEvent::AttemptStarted {
            attempt,
            rerun: true,
            state,
            ..
        } => eprintln!("  re-running {state} (attempt {attempt}) after an interruption"),
        StepEvent::AttemptFinished { output, .. } if !output.detail.is_empty() => {
            eprintln!("  {}: {}", output.outcome.as_str(), output.detail)
        }
        StepEvent::Backoff { state, delay } => {
            eprintln!("  {state} failed; retrying in {} ms", delay.as_millis())
        }
        _ => {}
    }
}

/// `attnflow-runs/run-YYYYMMDD-HHMMSS` in UTC.
fn default_run_dir() -> PathBuf {
    PathBuf::from(format!(
        "attnflow-runs/run-{}",
        attnflow_base::time::Utc::now().compact()
    ))
}
