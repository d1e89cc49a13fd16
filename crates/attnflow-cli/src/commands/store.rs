//! `attnflow store migrate|copy`: a store's tables brought to this build's
//! version, and a history moved between SQLite and PostgreSQL with its row
//! counts verified. The logic lives in `attnflow-store`.

use attnflow_store::{copy_store, migrate_store, DbError, Location, Tables};
use clap::{Args, Subcommand};
use miette::miette;

use crate::error::{CliError, CliResult};

/// Subcommands of `attnflow store`.
#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Apply the migrations to a store (workflow and data tables).
    Migrate(MigrateArgs),
    /// Copy a store's workflow and data history into an empty store:
    /// SQLite into PostgreSQL or back. Row counts are verified.
    Copy(CopyArgs),
}

/// Arguments of `attnflow store migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The store: an SQLite file or postgres://USER@HOST:PORT/DATABASE
    /// [default: $ATTNFLOW_DB, else attnflow.db]
    #[arg(long)]
    db: Option<String>,
}

/// Arguments of `attnflow store copy`.
#[derive(Debug, Args)]
pub struct CopyArgs {
    /// The store to copy from.
    #[arg(long)]
    from: String,
    /// The store to copy into (its tables must be empty).
    #[arg(long)]
    to: String,
}

const COMPONENTS: [Tables; 2] = [
    attnflow_workflow::store::schema::TABLES,
    attnflow_data::store::TABLES,
];

fn db_error(error: DbError) -> CliError {
    if error.is_bad_input() {
        CliError::bad_input(miette!("{error}"))
    } else {
        CliError::failed(miette!("{error}"))
    }
}

fn location(text: &str) -> Result<Location, CliError> {
    Location::parse(text).map_err(db_error)
}

/// Runs an `attnflow store` subcommand.
pub fn run(command: StoreCommand) -> CliResult {
    match command {
        StoreCommand::Migrate(args) => {
            let location = Location::resolve(args.db.as_deref()).map_err(db_error)?;
            for (name, before, after) in migrate_store(&location, &COMPONENTS).map_err(db_error)? {
                if before == after {
                    println!("{location}: {name} tables at version {after} (nothing to do)");
                } else {
                    println!("{location}: {name} tables migrated from version {before} to {after}");
                }
            }
            Ok(())
        }
        StoreCommand::Copy(args) => {
            let (from, to) = (location(&args.from)?, location(&args.to)?);
            let copied = copy_store(&from, &to, &COMPONENTS).map_err(db_error)?;
            let total: u64 = copied.iter().map(|table| table.rows).sum();
            for table in &copied {
                println!("{:<16} {:>10} rows", table.table, table.rows);
            }
            println!("copied {total} rows from {from} to {to}; every table's count verified");
            Ok(())
        }
    }
}
