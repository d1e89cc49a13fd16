//! `attnflow workflow runs|show|analyze`: what a store's history holds.

use attnflow_workflow::report::{self, AnalysisError};
use miette::miette;

use super::{open_existing, store_error, AnalyzeArgs, RunIdArgs, StoreArgs};
use crate::error::{CliError, CliResult};
use crate::output::print_json;

pub(super) fn list(args: &StoreArgs) -> CliResult {
    let store = open_existing(args)?;
    let runs = store.runs().map_err(store_error)?;
    if args.json {
        print_json(&runs)?;
    } else if runs.is_empty() {
        println!("{}: no runs yet", store.path());
    } else {
        print!("{}", report::render_runs(&runs));
    }
    Ok(())
}

pub(super) fn show(args: &RunIdArgs) -> CliResult {
    let store = open_existing(&args.store)?;
    let run = store.run(args.run).map_err(store_error)?;
    let steps = store.steps(args.run).map_err(store_error)?;
    let events = store.events(args.run).map_err(store_error)?;
    let superseded = store.superseded(Some(args.run)).map_err(store_error)?;
    if args.store.json {
        let value = serde_json::json!({
            "run": run, "steps": steps, "events": events, "superseded": superseded
        });
        print_json(&value)?;
    } else {
        print!("{}", report::render_run(&run, &steps, &events));
        for attempt in &superseded {
            println!(
                "superseded: {} by {} (token {}): {}",
                attempt.idempotency_key, attempt.owner, attempt.lease_token, attempt.detail
            );
        }
    }
    Ok(())
}

pub(super) fn analyze(args: &AnalyzeArgs) -> CliResult {
    let store = open_existing(&args.store)?;
    let options = report::AnalysisOptions {
        collapse: args.collapse,
        ..report::AnalysisOptions::default()
    };
    let analyses =
        report::analyze_with(&store, args.workflow.as_deref(), &options).map_err(|error| {
            match error {
                AnalysisError::Empty(message) => CliError::bad_input(miette!("{message}")),
                other => CliError::failed(miette!("{other}")),
            }
        })?;
    if args.store.json {
        print_json(&analyses)?;
    } else if args.mermaid {
        for analysis in &analyses {
            print!("{}", report::analysis_mermaid(analysis));
        }
    } else {
        let texts: Vec<String> = analyses.iter().map(report::render_analysis).collect();
        print!("{}", texts.join("\n"));
    }
    Ok(())
}
