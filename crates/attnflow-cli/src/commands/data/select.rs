//! `attnflow data select`: choosing items under a budget (§6.2).

use std::path::PathBuf;

use attnflow_data::render::{selection_csv, SelectionText};
use attnflow_data::select::{
    load_items, select_cover, select_within_budget, Item, MethodChoice, SelectOptions,
};
use clap::{Args, ValueEnum};
use miette::miette;

use super::data_error;
use crate::error::{CliError, CliResult};
use crate::output::print_json;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum MethodArg {
    /// Exact where feasible, greedy with a proven gap beyond.
    Auto,
    /// Exact only (may be slow on large inputs).
    Exact,
    /// Greedy with the LP bound.
    Greedy,
}

/// Arguments of `attnflow data select`.
#[derive(Debug, Args)]
pub struct SelectArgs {
    /// Items file (.csv with header, .jsonl, .parquet).
    file: PathBuf,
    /// Column holding each item's weight (its cost with --cover).
    #[arg(long)]
    weight: String,
    /// Column holding each item's value (the amount it covers with --cover).
    #[arg(long)]
    value: String,
    /// Weight budget; with --cover, the value to reach.
    #[arg(long, allow_negative_numbers = true)]
    budget: f64,
    /// Cover --budget of value at least total weight instead.
    #[arg(long)]
    cover: bool,
    /// Column naming the items (default: the record number).
    #[arg(long)]
    id: Option<String>,
    /// Solution method.
    #[arg(long, value_enum, default_value_t = MethodArg::Auto)]
    method: MethodArg,
    /// Write the chosen items as CSV (id,weight,value) to this file.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Chosen items to list in the table.
    #[arg(long, default_value_t = 20)]
    show: usize,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
}

pub(super) fn select(args: SelectArgs) -> CliResult {
    let items = load_items(&args.file, &args.weight, &args.value, args.id.as_deref())
        .map_err(data_error)?;
    let options = SelectOptions {
        method: match args.method {
            MethodArg::Auto => MethodChoice::Auto,
            MethodArg::Exact => MethodChoice::Exact,
            MethodArg::Greedy => MethodChoice::Greedy,
        },
        ..SelectOptions::default()
    };
    let selection = if args.cover {
        select_cover(&items, args.budget, &options)
    } else {
        select_within_budget(&items, args.budget, &options)
    }
    .map_err(data_error)?;
    if let Some(path) = &args.output {
        attnflow_base::write_atomically(path, selection_csv(&items, &selection).as_bytes())
            .map_err(|error| CliError::failed(miette!("{}: {error}", path.display())))?;
    }
    if args.json {
        let chosen: Vec<&Item> = selection
            .chosen
            .iter()
            .map(|&index| &items[index])
            .collect();
        return print_json(
            &serde_json::json!({ "items": items.len(), "selection": selection, "chosen_items": chosen }),
        );
    }
    let text = SelectionText {
        items: &items,
        selection: &selection,
        cover: args.cover,
        budget: args.budget,
        weight: &args.weight,
        value: &args.value,
        show: args.show,
    };
    print!("{}", text.render());
    if let Some(path) = &args.output {
        println!("wrote {}", path.display());
    }
    Ok(())
}
