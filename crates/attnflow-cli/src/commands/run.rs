//! `attnflow run`: the main job, the paper's figure 3 pipeline end to end.

use std::path::PathBuf;
use std::time::Instant;

use attnflow_pipeline::{PipelineError, RunOptions, StepEvent};
use clap::Args;
use miette::miette;

use crate::error::{CliError, CliResult};

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
    /// (each run's data queue and quarantine are in its folder's data.sqlite).
    #[arg(long, default_value = "attnflow-runs/attnflow.sqlite")]
    db: PathBuf,
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
    /// Print the outcome as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs the pipeline and prints where the report is.
pub fn run(args: RunArgs) -> CliResult {
    let started = Instant::now();
    let quiet = args.json;
    let observer = move |event: &StepEvent| {
        if quiet {
            return;
        }
        match event {
            StepEvent::StepStarted { state, .. } => eprintln!("▶ {state}"),
            StepEvent::AttemptStarted {
                attempt,
                rerun: true,
                state,
                ..
            } => {
                eprintln!("  re-running {state} (attempt {attempt}) after an interruption")
            }
            StepEvent::AttemptFinished { output, .. } if !output.detail.is_empty() => {
                eprintln!("  {}: {}", output.outcome.as_str(), output.detail)
            }
            StepEvent::Backoff { state, delay } => {
                eprintln!("  {state} failed; retrying in {} ms", delay.as_millis())
            }
            _ => {}
        }
    };
    let fail = |error: PipelineError| {
        if error.is_bad_input() {
            CliError::bad_input(miette!("{error}"))
        } else {
            CliError::failed(miette!("{error}"))
        }
    };
    if let Some(directory) = &args.write_default {
        let spec = attnflow_pipeline::write_default_inputs(directory, args.rows).map_err(fail)?;
        println!(
            "wrote the default pipeline to {}; run it with `attnflow run {}`",
            directory.display(),
            spec.display()
        );
        return Ok(());
    }
    let outcome = match &args.resume {
        Some(run_dir) => attnflow_pipeline::resume(
            run_dir,
            RunOptions {
                run_dir: run_dir.clone(),
                store: args.db.clone(),
                observer: Box::new(observer),
                progress_bar: !quiet,
            },
        ),
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
                    attnflow_pipeline::write_default_inputs(&run_dir.join("inputs"), args.rows)
                        .map_err(fail)?
                }
            };
            attnflow_pipeline::start(
                &spec,
                RunOptions {
                    run_dir,
                    store: args.db.clone(),
                    observer: Box::new(observer),
                    progress_bar: !quiet,
                },
            )
        }
    }
    .map_err(fail)?;

    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&outcome).unwrap_or_default()
        );
    } else {
        println!(
            "run {} ended in {} after {:.0} s",
            outcome.workflow_run,
            outcome.state,
            started.elapsed().as_secs_f64()
        );
        println!("  run folder: {}", outcome.run_dir.display());
        match &outcome.report {
            Some(report) => println!("  report:     {}", report.display()),
            None => println!("  no report (the run did not reach output generation)"),
        }
    }
    if outcome.succeeded {
        Ok(())
    } else {
        Err(CliError::failed(miette!(
            "the pipeline ended in {}; `attnflow workflow show {} --db {}` shows every step",
            outcome.state,
            outcome.workflow_run,
            args.db.display()
        )))
    }
}

/// `attnflow-runs/run-YYYYMMDD-HHMMSS` in UTC.
fn default_run_dir() -> PathBuf {
    PathBuf::from(format!(
        "attnflow-runs/run-{}",
        attnflow_base::time::Utc::now().compact()
    ))
}
