//! `attnflow data ...`: quality checks with quarantine (§6.1), profiles and
//! budgeted selection (§6.2). The logic lives in `attnflow-data`; this
//! module parses arguments and prints tables or JSON.

use std::path::{Path, PathBuf};

use attnflow_data::profile::profile_files;
use attnflow_data::render::QuarantineListing;
use attnflow_data::run::{check_files, recheck, CheckOptions};
use attnflow_data::store::Store;
use attnflow_data::{DataError, Schema};
use clap::{Args, Subcommand};
use miette::miette;

use crate::error::{CliError, CliResult};
use crate::output::print_json;

mod select;

use select::{select, SelectArgs};

/// Subcommands of `attnflow data`.
#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Check files against a schema: valid records go to the processing
    /// queue, invalid ones to quarantine with their reasons (§6.1).
    ///
    /// Exits 0 when every record was routed (quarantined records are a
    /// normal outcome; use --strict to exit 1 when any was quarantined), 2
    /// for a bad schema or unreadable file.
    Check(CheckArgs),
    /// Re-check quarantined records against a (fixed) schema; records that
    /// now pass move to the queue.
    Recheck(RecheckArgs),
    /// Profile each schema field: counts, nulls, min/max/mean/std,
    /// approximate distinct count, histogram.
    Profile(ProfileArgs),
    /// List quarantined records with their file, line, field, rule and value.
    Quarantine(QuarantineArgs),
    /// Choose items under a budget (§6.2): maximise total value with total
    /// weight ≤ --budget, or with --cover reach total value ≥ --budget at
    /// least total weight.
    Select(SelectArgs),
}

/// Arguments of `attnflow data check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The schema (TOML).
    schema: PathBuf,
    /// Data files (.csv, .jsonl, .parquet).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// The store receiving the queue and the quarantine: an SQLite file or
    /// postgres://USER@HOST:PORT/DATABASE (rows go in with COPY).
    #[arg(long, default_value = "attnflow.db")]
    db: PathBuf,
    /// Check and report only; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Exit 1 when any record was quarantined.
    #[arg(long)]
    strict: bool,
    /// Quarantined records to list in the report.
    #[arg(long, default_value_t = 10)]
    show: usize,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
}

/// Arguments of `attnflow data recheck`.
#[derive(Debug, Args)]
pub struct RecheckArgs {
    /// The (fixed) schema.
    schema: PathBuf,
    /// The store: an SQLite file or postgres://USER@HOST:PORT/DATABASE.
    #[arg(long, default_value = "attnflow.db")]
    db: PathBuf,
    /// Quarantined records to list in the report.
    #[arg(long, default_value_t = 10)]
    show: usize,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
}

/// Arguments of `attnflow data profile`.
#[derive(Debug, Args)]
pub struct ProfileArgs {
    /// The schema naming the fields and their types.
    schema: PathBuf,
    /// Data files.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
}

/// Arguments of `attnflow data quarantine`.
#[derive(Debug, Args)]
pub struct QuarantineArgs {
    /// The store: an SQLite file or postgres://USER@HOST:PORT/DATABASE.
    #[arg(long, default_value = "attnflow.db")]
    db: PathBuf,
    /// Include records already released by a re-check.
    #[arg(long)]
    all: bool,
    /// Only records whose first violation is this rule (e.g. `max`, `bad_quoting`).
    #[arg(long)]
    rule: Option<String>,
    /// Most records to list.
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
}

/// Selection methods.
/// Runs a `data` subcommand.
pub fn run(command: DataCommand) -> CliResult {
    match command {
        DataCommand::Check(args) => check(args),
        DataCommand::Recheck(args) => recheck_command(args),
        DataCommand::Profile(args) => profile(args),
        DataCommand::Quarantine(args) => quarantine(args),
        DataCommand::Select(args) => select(args),
    }
}

/// Opens the data store `--db` names: an SQLite file or a PostgreSQL URL.
fn open_store(db: &std::path::Path) -> Result<Store, CliError> {
    let location = attnflow_store::Location::parse(&db.to_string_lossy())
        .map_err(|error| data_error(error.into()))?;
    Store::connect(&location).map_err(data_error)
}

/// Whether `--db` names an SQLite file that does not exist.
fn missing_file(db: &std::path::Path) -> bool {
    matches!(
        attnflow_store::Location::parse(&db.to_string_lossy()),
        Ok(attnflow_store::Location::Sqlite(path)) if !path.exists()
    )
}

/// Turns a library error into a diagnostic (with a source snippet for
/// schema errors) and the right exit code.
pub fn data_error(error: DataError) -> CliError {
    let bad_input = error.is_bad_input();
    let report = match error {
        DataError::Schema {
            path,
            text,
            place,
            message,
        } => {
            let origin = path.display().to_string();
            let message = format!("{origin}:{}:{}: {message}", place.line, place.column);
            crate::error::spanned(
                &origin,
                &text,
                place.offset..place.offset + place.length,
                "here",
                &message,
            )
        }
        other => miette!("{other}"),
    };
    if bad_input {
        CliError::bad_input(report)
    } else {
        CliError::failed(report)
    }
}

fn load_schema(path: &Path) -> Result<Schema, CliError> {
    Schema::load(path).map_err(data_error)
}

/// A store that must already exist (reading or re-checking a quarantine).
fn existing_store(path: &Path) -> Result<Store, CliError> {
    if missing_file(path) {
        return Err(CliError::bad_input(miette!(
            "{}: no such store (run `attnflow data check` first)",
            path.display()
        )));
    }
    open_store(path)
}

fn check(args: CheckArgs) -> CliResult {
    let schema = load_schema(&args.schema)?;
    let options = CheckOptions {
        progress: !args.json,
        sample_limit: args.show.max(1),
    };
    let mut store = if args.dry_run {
        None
    } else {
        Some(open_store(&args.db)?)
    };
    let report = check_files(&schema, &args.files, store.as_mut(), &options).map_err(data_error)?;
    if args.json {
        print_json(&report)?;
    } else {
        print!("{}", report.to_text(args.show));
    }
    if args.strict && report.quarantined > 0 {
        return Err(CliError::failed(miette!(
            "{} of {} records were quarantined (--strict)",
            report.quarantined,
            report.read
        )));
    }
    Ok(())
}

fn recheck_command(args: RecheckArgs) -> CliResult {
    let schema = load_schema(&args.schema)?;
    let mut store = existing_store(&args.db)?;
    let options = CheckOptions {
        progress: !args.json,
        sample_limit: args.show.max(1),
    };
    let report = recheck(&schema, &mut store, &options).map_err(data_error)?;
    if args.json {
        return print_json(&report);
    }
    print!("{}", report.to_text(args.show));
    Ok(())
}

fn profile(args: ProfileArgs) -> CliResult {
    let schema = load_schema(&args.schema)?;
    let report = profile_files(&schema, &args.files).map_err(data_error)?;
    if args.json {
        return print_json(&report);
    }
    print!("{}", report.to_text());
    Ok(())
}

fn quarantine(args: QuarantineArgs) -> CliResult {
    let store = existing_store(&args.db)?;
    let database = args.db.display().to_string();
    let listing = QuarantineListing::read(
        &store,
        &database,
        args.all,
        args.rule.as_deref(),
        args.limit,
    )
    .map_err(data_error)?;
    if args.json {
        return print_json(&listing);
    }
    print!("{}", listing.to_text());
    Ok(())
}
