//! `attnflow workflow ...`: run, resume and inspect durable workflows, and
//! analyse their history as a Markov chain (§5). The logic lives in
//! `attnflow-workflow`; this module parses arguments and prints.

use std::path::{Path, PathBuf};

use attnflow_workflow::Location;

use attnflow_workflow::report;
use attnflow_workflow::{RunError, Spec, SpecError, Store, StoreError, TaskRegistry};
use clap::{Args, Subcommand};
use miette::miette;

use crate::error::{CliError, CliResult};

mod history;
mod runs;

use history::{analyze, list, show};
use runs::{continue_run, start};

/// Subcommands of `attnflow workflow`.
#[derive(Debug, Subcommand)]
pub enum WorkflowCommand {
    /// Start a run of a workflow spec and drive it to a terminal state.
    ///
    /// Without SPEC (or with --default) runs the embedded default, the
    /// paper's figure 2. Exits 0 when the run ends in a success state, 1
    /// when it ends in a failure state.
    Run(RunArgs),
    /// Continue a run from its last recorded state (after a crash or kill).
    Resume(RunIdArgs),
    /// Restart a failed or crashed run from its failed step.
    Restart(RunIdArgs),
    /// List the runs in a store.
    Runs(StoreArgs),
    /// Show one run: its steps and its event log.
    Show(RunIdArgs),
    /// Estimate the transition matrix from recorded runs (§5.2) and analyse
    /// absorption (§5.3), with 95% intervals for every estimate and the
    /// runs needed to narrow them. A spec that caps visits (`max_visits`)
    /// is analysed on its exact (state, visits) chain.
    Analyze(AnalyzeArgs),
    /// Print a spec's state diagram (Mermaid); the default spec is figure 2.
    Diagram(SpecArgs),
    /// Check a spec without running it.
    Check(SpecArgs),
    /// Put a run of a spec on the workers' queues without executing it
    /// here; `attnflow worker` processes run it.
    Submit(super::worker::SubmitArgs),
    /// List the workers of a store: their queues, leases and last heartbeat.
    Workers(StoreArgs),
}

/// The store option shared by every subcommand.
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// The store: an SQLite file (created by `run` when missing) or
    /// postgres://USER@HOST:PORT/DATABASE [default: $ATTNFLOW_DB, else attnflow.db]
    #[arg(long)]
    pub db: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

impl StoreArgs {
    /// The `--db` location (or `ATTNFLOW_DB`'s, or the default).
    pub fn location(&self) -> Result<Location, CliError> {
        Location::resolve(self.db.as_deref())
            .map_err(|error| CliError::bad_input(miette!("{error}")))
    }
}

/// Arguments of `attnflow workflow run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The workflow spec (TOML); omit it to run the embedded default.
    spec: Option<PathBuf>,
    /// Run the embedded default spec (figure 2).
    #[arg(long, conflicts_with = "spec")]
    default: bool,
    #[command(flatten)]
    store: StoreArgs,
    /// Print nothing while the run proceeds.
    #[arg(long)]
    quiet: bool,
}

/// Arguments naming one run.
#[derive(Debug, Args)]
pub struct RunIdArgs {
    /// The run id (see `attnflow workflow runs`).
    run: i64,
    #[command(flatten)]
    store: StoreArgs,
    /// Print nothing while the run proceeds.
    #[arg(long)]
    quiet: bool,
}

/// Arguments of `attnflow workflow analyze`.
#[derive(Debug, Args)]
pub struct AnalyzeArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Analyse only this workflow (by its `[workflow] name`).
    #[arg(long)]
    workflow: Option<String>,
    /// Print the Mermaid state diagram with estimated probabilities instead
    /// of tables.
    #[arg(long, conflicts_with = "json")]
    mermaid: bool,
    /// Analyse the plain chain over bare state names even when the spec
    /// caps visits (an approximation: capped states are not Markov).
    #[arg(long)]
    collapse: bool,
}

/// Arguments naming a spec.
#[derive(Debug, Args)]
pub struct SpecArgs {
    /// The workflow spec (TOML); omit it for the embedded default.
    spec: Option<PathBuf>,
    /// Use the embedded default spec (figure 2).
    #[arg(long, conflicts_with = "spec")]
    default: bool,
}

/// Runs an `attnflow workflow` subcommand.
pub fn run(command: WorkflowCommand) -> CliResult {
    match command {
        WorkflowCommand::Run(args) => start(&args),
        WorkflowCommand::Resume(args) => continue_run(&args, false),
        WorkflowCommand::Restart(args) => continue_run(&args, true),
        WorkflowCommand::Runs(args) => list(&args),
        WorkflowCommand::Show(args) => show(&args),
        WorkflowCommand::Analyze(args) => analyze(&args),
        WorkflowCommand::Diagram(args) => {
            let spec = load_spec(args.spec.as_deref())?;
            print!("{}", report::spec_mermaid(&spec));
            Ok(())
        }
        WorkflowCommand::Submit(args) => super::worker::submit(&args),
        WorkflowCommand::Workers(args) => super::worker::list_workers(&args),
        WorkflowCommand::Check(args) => {
            let spec = load_spec(args.spec.as_deref())?;
            spec.check_tasks(&TaskRegistry::with_builtins())
                .map_err(|error| CliError::bad_input(spec_report(error)))?;
            println!(
                "{}: workflow `{}` is valid: {} states, initial `{}`",
                spec.origin(),
                spec.name,
                spec.states.len(),
                spec.initial
            );
            Ok(())
        }
    }
}

/// A spec error as a diagnostic with the offending span labelled.
pub(super) fn spec_report(error: SpecError) -> miette::Report {
    let message = format!(
        "{}:{}:{}: {}",
        error.origin, error.line, error.column, error.message
    );
    crate::error::spanned(
        &error.origin,
        &error.source_text,
        error.span.clone(),
        "here",
        &message,
    )
}

pub(crate) fn load_spec(path: Option<&Path>) -> Result<Spec, CliError> {
    match path {
        Some(path) => {
            Spec::from_file(path).map_err(|error| CliError::bad_input(spec_report(error)))
        }
        None => Ok(Spec::default_spec()),
    }
}

pub(crate) fn store_error(error: StoreError) -> CliError {
    // A bad URL, a refused login, a missing database, a file that is not a
    // store, a newer schema or an unknown run is bad input; a server lost
    // mid-run, after the retries, is failed work that can be resumed.
    if error.is_bad_input() {
        CliError::bad_input(miette!("{error}"))
    } else if error.is_lost() {
        CliError::failed(miette!(
            "{error}\nthe run is resumable: `attnflow workflow resume RUN --db ...` once the server is back"
        ))
    } else {
        CliError::failed(miette!("{error}"))
    }
}

pub(super) fn run_error(error: RunError) -> CliError {
    match error {
        RunError::Spec(error) => CliError::bad_input(spec_report(*error)),
        RunError::Store(error) => store_error(error),
        other => CliError::failed(miette!("{other}")),
    }
}

/// Opens an existing store; reading commands never create an SQLite file.
pub(crate) fn open_existing(args: &StoreArgs) -> Result<Store, CliError> {
    let location = args.location()?;
    if let Some(path) = location.sqlite_path() {
        if !path.exists() {
            return Err(CliError::bad_input(miette!(
                "{}: no workflow store here (start one with `attnflow workflow run --db {}`)",
                path.display(),
                path.display()
            )));
        }
    }
    Store::connect(&location).map_err(store_error)
}
