//! `attnflow workflow run|resume|restart`: executing runs in this process.

use attnflow_workflow::runner::Progress;
use attnflow_workflow::{RunError, RunRecord, RunStatus, Runner, Store, StoreError, TaskRegistry};
use miette::miette;

use super::{load_spec, open_existing, run_error, spec_report, store_error, RunArgs, RunIdArgs};
use crate::error::{CliError, CliResult};
use crate::output::print_json;

/// Prints progress lines to stderr as the run moves.
fn progress_printer(quiet: bool) -> impl FnMut(&Progress) {
    move |progress: &Progress| {
        if quiet {
            return;
        }
        match progress {
            Progress::AttemptStarted {
                state,
                attempt,
                key,
                rerun,
            } => {
                let note = if *rerun {
                    " (re-executed after a crash)"
                } else {
                    ""
                };
                eprintln!("  {state}: attempt {attempt} [{key}]{note}");
            }
            Progress::AttemptFinished {
                state,
                attempt,
                output,
            } if output.outcome != attnflow_workflow::Outcome::Ok => {
                let detail: String = output.detail.chars().take(200).collect();
                eprintln!("  {state}: attempt {attempt} {}: {detail}", output.outcome);
            }
            Progress::Backoff { state, delay } => {
                eprintln!("  {state}: retrying in {} ms", delay.as_millis());
            }
            Progress::Transition { from, to, outcome } => {
                eprintln!("{from} --{outcome}--> {to}");
            }
            _ => {}
        }
    }
}

/// Reports a finished run and turns its status into the exit code.
fn finish(run: &RunRecord, json: bool) -> CliResult {
    if json {
        print_json(run)?;
    } else {
        println!(
            "run {}: {} in state `{}` (see `attnflow workflow show {}`)",
            run.id, run.status, run.current_state, run.id
        );
    }
    match run.status {
        RunStatus::Succeeded => Ok(()),
        RunStatus::Failed => Err(CliError::failed(miette!(
            "run {} ended in failure state `{}`; `attnflow workflow restart {}` retries it from the failed step",
            run.id,
            run.current_state,
            run.id
        ))),
        RunStatus::Crashed => Err(CliError::failed(miette!(
            "run {} is marked crashed; `attnflow workflow restart {}` restarts it",
            run.id,
            run.id
        ))),
        RunStatus::Running => Err(CliError::failed(miette!(
            "run {} stopped while still running; `attnflow workflow resume {}` continues it",
            run.id,
            run.id
        ))),
    }
}

pub(super) fn start(args: &RunArgs) -> CliResult {
    let spec = load_spec(args.spec.as_deref())?;
    let registry = TaskRegistry::with_builtins();
    spec.check_tasks(&registry)
        .map_err(|error| CliError::bad_input(spec_report(error)))?;
    let location = args.store.location()?;
    let mut store = Store::connect(&location).map_err(store_error)?;
    let mut runner = Runner::new(&mut store, &registry).with_observer(progress_printer(args.quiet));
    let run_id = runner.create(&spec).map_err(run_error)?;
    if !args.quiet {
        eprintln!(
            "run {run_id} of workflow `{}` in {location} (resume with `attnflow workflow resume {run_id} --db {location}`)",
            spec.name,
        );
    }
    let run = runner.resume(run_id).map_err(run_error)?;
    finish(&run, args.store.json)
}

pub(super) fn continue_run(args: &RunIdArgs, restart: bool) -> CliResult {
    let mut store = open_existing(&args.store)?;
    let registry = TaskRegistry::with_builtins();
    let result = {
        let mut runner =
            Runner::new(&mut store, &registry).with_observer(progress_printer(args.quiet));
        if restart {
            runner.restart(args.run)
        } else {
            runner.resume(args.run)
        }
    };
    let run = match result {
        Ok(run) => run,
        // Resuming a finished run is not an error: it reports the outcome,
        // so a resume after a kill that came too late is harmless.
        Err(RunError::Store(StoreError::Finished { .. })) if !restart => {
            store.run(args.run).map_err(store_error)?
        }
        Err(error) => return Err(run_error(error)),
    };
    finish(&run, args.store.json)
}
