//! `attnflow data ...`: quality checks with quarantine (§6.1), profiles and
//! budgeted selection (§6.2). The logic lives in `attnflow-data`; this
//! module parses arguments and prints tables or JSON.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use attnflow_data::profile::{profile_files, ProfileReport};
use attnflow_data::run::{check_files, recheck, CheckOptions, CheckReport};
use attnflow_data::select::{
    load_items, select_cover, select_within_budget, Item, MethodChoice, SelectOptions, Selection,
};
use attnflow_data::store::Store;
use attnflow_data::{DataError, Schema};
use clap::{Args, Subcommand, ValueEnum};
use miette::{miette, LabeledSpan, NamedSource};

use crate::error::{CliError, CliResult};

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

/// Turns a library error into a diagnostic (with a source snippet for
/// schema errors) and the right exit code.
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

pub fn data_error(error: DataError) -> CliError {
    let bad_input = error.is_bad_input();
    let report = match error {
        DataError::Schema {
            path,
            text,
            place,
            message,
        } => {
            let start = place.offset.min(text.len());
            let length = place
                .length
                .max(1)
                .min(text.len().saturating_sub(start).max(1));
            let origin = path.display().to_string();
            miette!(
                labels = vec![LabeledSpan::at(start..start + length, "here")],
                "{origin}:{}:{}: {message}",
                place.line,
                place.column
            )
            .with_source_code(NamedSource::new(origin, text))
        }
        other => miette!("{other}"),
    };
    if bad_input {
        CliError::bad_input(report)
    } else {
        CliError::failed(report)
    }
}

fn to_json(value: &impl serde::Serialize) -> Result<String, CliError> {
    serde_json::to_string_pretty(value).map_err(|error| CliError::failed(miette!("{error}")))
}

fn load_schema(path: &Path) -> Result<Schema, CliError> {
    Schema::load(path).map_err(data_error)
}

/// Formats rows as an aligned text table, every column left-aligned.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    attnflow_base::table::table(
        header,
        rows,
        header.len(),
        attnflow_base::table::Style::Text,
    )
}

fn one_line(text: &str) -> String {
    let flat: String = text
        .chars()
        .map(|character| {
            if character.is_control() {
                ' '
            } else {
                character
            }
        })
        .collect();
    if flat.chars().count() > 60 {
        format!("{}…", flat.chars().take(59).collect::<String>())
    } else {
        flat
    }
}

fn print_check_report(report: &CheckReport, show: usize) {
    match (&report.database, report.run_id) {
        (Some(database), Some(run)) => println!(
            "{} run {run} of schema `{}` into {database}",
            report.kind, report.schema
        ),
        _ => println!(
            "{} of schema `{}` (dry run: nothing stored)",
            report.kind, report.schema
        ),
    }
    let mut rows: Vec<Vec<String>> = report
        .files
        .iter()
        .map(|file| {
            vec![
                file.path.clone(),
                file.format.name().to_owned(),
                file.read.to_string(),
                file.accepted.to_string(),
                file.quarantined.to_string(),
            ]
        })
        .collect();
    rows.push(vec![
        "total".into(),
        String::new(),
        report.read.to_string(),
        report.accepted.to_string(),
        report.quarantined.to_string(),
    ]);
    print!(
        "{}",
        table(
            &["file", "format", "read", "accepted", "quarantined"],
            &rows
        )
    );
    println!(
        "read {} = accepted {} + quarantined {} (checked) in {:.2} s, {:.0} records/s",
        report.read,
        report.accepted,
        report.quarantined,
        report.seconds,
        report.records_per_second()
    );
    if !report.by_rule.is_empty() {
        println!("\nquarantined by rule:");
        let rows: Vec<Vec<String>> = report
            .by_rule
            .iter()
            .map(|(rule, count)| vec![rule.clone(), count.to_string()])
            .collect();
        print!("{}", table(&["rule", "records"], &rows));
    }
    if show > 0 && !report.samples.is_empty() {
        println!("\nfirst quarantined records:");
        let rows: Vec<Vec<String>> = report
            .samples
            .iter()
            .take(show)
            .map(|sample| {
                let first = &sample.violations[0];
                vec![
                    format!("{}:{}", sample.source, sample.line),
                    sample.row.to_string(),
                    first.field.clone().unwrap_or_default(),
                    first.rule.clone(),
                    one_line(first.value.as_deref().unwrap_or("")),
                    one_line(&first.message),
                ]
            })
            .collect();
        print!(
            "{}",
            table(
                &["file:line", "row", "field", "rule", "value", "reason"],
                &rows
            )
        );
        if report.database.is_some() {
            println!(
                "(all of them: attnflow data quarantine --db {})",
                report.database.as_deref().unwrap_or("attnflow.db")
            );
        }
    }
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
        println!("{}", to_json(&report)?);
    } else {
        print_check_report(&report, args.show);
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
    if missing_file(&args.db) {
        return Err(CliError::bad_input(miette!(
            "{}: no such store (run `attnflow data check` first)",
            args.db.display()
        )));
    }
    let mut store = open_store(&args.db)?;
    let options = CheckOptions {
        progress: !args.json,
        sample_limit: args.show.max(1),
    };
    let report = recheck(&schema, &mut store, &options).map_err(data_error)?;
    if args.json {
        println!("{}", to_json(&report)?);
    } else {
        print_check_report(&report, args.show);
    }
    Ok(())
}

fn number(value: Option<f64>) -> String {
    match value {
        None => "-".to_owned(),
        Some(value) if value.fract() == 0.0 && value.abs() < 1e15 => format!("{value:.0}"),
        Some(value) => format!("{value:.4}"),
    }
}

fn print_profile(report: &ProfileReport) {
    println!(
        "profile of schema `{}`: {} records ({} malformed, not profiled)",
        report.schema, report.records, report.malformed
    );
    let rows: Vec<Vec<String>> = report
        .fields
        .iter()
        .map(|field| {
            vec![
                field.name.clone(),
                field.field_type.name().to_owned(),
                field.count.to_string(),
                field.nulls.to_string(),
                field.invalid.to_string(),
                number(field.min),
                number(field.max),
                number(field.mean),
                number(field.std),
                format!("~{}", field.distinct),
                field.measure.to_owned(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "field", "type", "count", "nulls", "invalid", "min", "max", "mean", "std",
                "distinct", "of"
            ],
            &rows
        )
    );
    for field in &report.fields {
        if !field.histogram.is_empty() {
            println!("\n{} ({} histogram):", field.name, field.measure);
            // Merge neighbours for the terminal; --json keeps every bin.
            let mut bins = field.histogram.clone();
            while bins.len() > 12 {
                bins = bins
                    .chunks(2)
                    .map(|pair| attnflow_data::profile::Bin {
                        low: pair[0].low,
                        high: pair[pair.len() - 1].high,
                        count: pair.iter().map(|bin| bin.count).sum(),
                    })
                    .collect();
            }
            let largest = bins.iter().map(|bin| bin.count).max().unwrap_or(1).max(1);
            for bin in &bins {
                let bar = "#".repeat(((bin.count as f64 / largest as f64) * 40.0).round() as usize);
                println!(
                    "  [{:>12}, {:>12})  {:>9}  {bar}",
                    number(Some(bin.low)),
                    number(Some(bin.high)),
                    bin.count
                );
            }
        }
        if !field.top.is_empty() {
            let top: Vec<String> = field
                .top
                .iter()
                .take(5)
                .map(|value| {
                    if value.error == 0 {
                        format!("{}={}", one_line(&value.value), value.count)
                    } else {
                        format!("{}≈{}", one_line(&value.value), value.count)
                    }
                })
                .collect();
            println!("{} most frequent: {}", field.name, top.join(", "));
        }
    }
}

fn profile(args: ProfileArgs) -> CliResult {
    let schema = load_schema(&args.schema)?;
    let report = profile_files(&schema, &args.files).map_err(data_error)?;
    if args.json {
        println!("{}", to_json(&report)?);
    } else {
        print_profile(&report);
    }
    Ok(())
}

fn quarantine(args: QuarantineArgs) -> CliResult {
    if missing_file(&args.db) {
        return Err(CliError::bad_input(miette!(
            "{}: no such store (run `attnflow data check` first)",
            args.db.display()
        )));
    }
    let store = open_store(&args.db)?;
    let entries = store
        .list_quarantine(args.all, args.rule.as_deref(), args.limit)
        .map_err(data_error)?;
    let counts = store.quarantine_counts().map_err(data_error)?;
    if args.json {
        let value = serde_json::json!({
            "database": args.db.display().to_string(),
            "pending_by_rule": counts.iter().map(|(rule, count)| serde_json::json!({"rule": rule, "records": count})).collect::<Vec<_>>(),
            "entries": entries,
        });
        println!("{}", to_json(&value)?);
        return Ok(());
    }
    let pending: u64 = counts.iter().map(|(_, count)| count).sum();
    println!("{pending} records in quarantine in {}", args.db.display());
    if !counts.is_empty() {
        let rows: Vec<Vec<String>> = counts
            .iter()
            .map(|(rule, count)| vec![rule.clone(), count.to_string()])
            .collect();
        print!("{}", table(&["rule", "records"], &rows));
    }
    if !entries.is_empty() {
        println!();
        let rows: Vec<Vec<String>> = entries
            .iter()
            .map(|entry| {
                vec![
                    entry.id.to_string(),
                    format!("{}:{}", entry.source, entry.line),
                    entry.row.to_string(),
                    entry.field.clone().unwrap_or_default(),
                    entry.rule.clone(),
                    one_line(entry.value.as_deref().unwrap_or("")),
                    one_line(&entry.message),
                    entry
                        .released_by_run
                        .map_or_else(String::new, |run| format!("released by run {run}")),
                ]
            })
            .collect();
        print!(
            "{}",
            table(
                &[
                    "id",
                    "file:line",
                    "row",
                    "field",
                    "rule",
                    "value",
                    "reason",
                    "status"
                ],
                &rows
            )
        );
        if entries.len() == args.limit {
            println!(
                "(first {} shown; use --limit or --json for more)",
                args.limit
            );
        }
    }
    Ok(())
}

fn write_selection(path: &Path, items: &[Item], selection: &Selection) -> CliResult {
    let mut text = String::from("id,weight,value\n");
    for &index in &selection.chosen {
        let item = &items[index];
        let id = if item.id.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", item.id.replace('"', "\"\""))
        } else {
            item.id.clone()
        };
        let _ = writeln!(text, "{id},{},{}", item.weight, item.value);
    }
    attnflow_base::write_atomically(path, text.as_bytes())
        .map_err(|error| CliError::failed(miette!("{}: {error}", path.display())))
}

fn select(args: SelectArgs) -> CliResult {
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
        write_selection(path, &items, &selection)?;
    }
    if args.json {
        let chosen: Vec<&Item> = selection
            .chosen
            .iter()
            .map(|&index| &items[index])
            .collect();
        let value = serde_json::json!({ "items": items.len(), "selection": selection, "chosen_items": chosen });
        println!("{}", to_json(&value)?);
        return Ok(());
    }
    let (weight_name, value_name, goal) = if args.cover {
        (
            "cost",
            "covered",
            format!(
                "cover ≥ {} of `{}` at least total `{}`",
                args.budget, args.value, args.weight
            ),
        )
    } else {
        (
            "weight",
            "value",
            format!(
                "maximise `{}` with total `{}` ≤ {}",
                args.value, args.weight, args.budget
            ),
        )
    };
    println!("{goal}: {} items", items.len());
    let method = match selection.method {
        attnflow_data::select::Method::DynamicProgramming => {
            "dynamic programming over integer weights"
        }
        attnflow_data::select::Method::BranchAndBound => "branch and bound",
        attnflow_data::select::Method::Greedy => "greedy by ratio with the LP bound",
    };
    let verdict = if selection.exact {
        "optimal (proven)".to_owned()
    } else if args.cover {
        format!(
            "within {} of the least cost (cost ≥ {} for any cover, gap ≤ {:.3}%)",
            number(Some(selection.gap)),
            number(Some(selection.bound)),
            100.0 * selection.relative_gap()
        )
    } else {
        format!(
            "within {} of the best value (no selection beats {}, gap ≤ {:.3}%)",
            number(Some(selection.gap)),
            number(Some(selection.bound)),
            100.0 * selection.relative_gap()
        )
    };
    println!(
        "method: {method}{}",
        selection
            .nodes
            .map_or_else(String::new, |nodes| format!(" ({nodes} nodes)"))
    );
    println!("answer: {verdict}");
    println!(
        "chosen {} items, total {weight_name} {}, total {value_name} {}",
        selection.chosen.len(),
        number(Some(selection.total_weight)),
        number(Some(selection.total_value))
    );
    if args.show > 0 && !selection.chosen.is_empty() {
        let rows: Vec<Vec<String>> = selection
            .chosen
            .iter()
            .take(args.show)
            .map(|&index| {
                vec![
                    items[index].id.clone(),
                    number(Some(items[index].weight)),
                    number(Some(items[index].value)),
                ]
            })
            .collect();
        print!(
            "{}",
            table(&["id", args.weight.as_str(), args.value.as_str()], &rows)
        );
        if selection.chosen.len() > args.show {
            println!(
                "({} more; --output FILE writes them all)",
                selection.chosen.len() - args.show
            );
        }
    }
    if let Some(path) = &args.output {
        println!("wrote {}", path.display());
    }
    Ok(())
}
