//! `attnflow ui`: the local web app over runs, training curves, the
//! quarantine and workflow history. The server lives in `attnflow-ui`.

use std::path::PathBuf;

use attnflow_ui::{Options, Started, Token};
use clap::Args;

use crate::error::CliResult;

/// Arguments of `attnflow ui`.
#[derive(Debug, Args)]
pub struct UiArgs {
    /// The store of workflow runs: an SQLite file or
    /// postgres://USER@HOST:PORT/DB [default: $ATTNFLOW_DB, else
    /// attnflow-runs/attnflow.sqlite, the store `attnflow run` writes]
    #[arg(long)]
    db: Option<String>,
    /// A run folder (`attnflow run --out`, `attnflow train --out`) or a
    /// folder holding them; repeat for more [default: attnflow-runs, when
    /// it exists]
    #[arg(long = "runs", value_name = "DIR")]
    runs: Vec<PathBuf>,
    /// The address to listen on. Anything but loopback needs --token.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// The port (0: any free one; the URL printed says which).
    #[arg(long, default_value_t = 8765)]
    port: u16,
    /// Refuse every change (the quarantine re-check).
    #[arg(long)]
    read_only: bool,
    /// Require this token (at least 16 characters) as
    /// `Authorization: Bearer TOKEN` or the sign-in cookie; without a value
    /// one is generated and printed.
    #[arg(long, num_args = 0..=1, default_missing_value = "", value_name = "TOKEN")]
    token: Option<String>,
    /// Open the app in the desktop's browser.
    #[arg(long)]
    open: bool,
}

/// Serves until Ctrl-C or SIGTERM.
pub fn run(args: UiArgs) -> CliResult {
    let store = attnflow_ui::resolve_store(args.db.as_deref())?;
    let default_runs = PathBuf::from("attnflow-runs");
    let runs = if args.runs.is_empty() && default_runs.is_dir() {
        vec![default_runs]
    } else {
        args.runs
    };
    let token = match args.token {
        None => Token::None,
        Some(token) if token.is_empty() => Token::Generate,
        Some(token) => Token::Given(token),
    };
    let folders = runs.len();
    let options = Options {
        store: store.clone(),
        runs,
        host: args.host.clone(),
        port: args.port,
        read_only: args.read_only,
        token,
    };
    let open = args.open;
    attnflow_ui::serve(options, |started: &Started| {
        println!(
            "attnflow ui: serving {} (store {store}, {folders} run folder{}{})",
            started.url,
            if folders == 1 { "" } else { "s" },
            if args.read_only { "; read-only" } else { "" }
        );
        if let Some(token) = &started.generated_token {
            println!(
                "token: {token} (send `Authorization: Bearer {token}`, or open {}?token={token} once to sign in)",
                started.url
            );
        }
        if started.exposed {
            eprintln!(
                "warning: listening on {}, reachable from other machines; every request needs the token",
                args.host
            );
        }
        if open {
            attnflow_ui::open_in_browser(&started.url);
        }
    })?;
    Ok(())
}
