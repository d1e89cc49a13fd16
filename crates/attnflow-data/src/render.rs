//! The data reports as people read them: text tables of a check, a
//! profile, the quarantine and a selection. Machines read the JSON (every
//! report here is `Serialize`).

use std::fmt::Write as _;

use attnflow_base::table::{table, Style};
use serde::Serialize;

use crate::profile::{Bin, ProfileReport};
use crate::run::CheckReport;
use crate::select::{Item, Method, Selection};
use crate::store::{QuarantineEntry, Store};
use crate::DataResult;

/// Every column left-aligned: file names, rules and messages read best so.
fn left_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    table(headers, rows, headers.len(), Style::Text)
}

/// A value on one line of at most 60 characters (control characters become
/// spaces), for table cells.
pub fn one_line(text: &str) -> String {
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

/// A number as a person reads it: whole numbers without decimals, others
/// with four; `-` for none.
pub fn number(value: Option<f64>) -> String {
    match value {
        None => "-".to_owned(),
        Some(value) if value.fract() == 0.0 && value.abs() < 1e15 => format!("{value:.0}"),
        Some(value) => format!("{value:.4}"),
    }
}

impl CheckReport {
    /// Per-file counts, the books (read = accepted + quarantined), the
    /// quarantine by rule and the first `show` quarantined records.
    pub fn to_text(&self, show: usize) -> String {
        let mut out = match (&self.database, self.run_id) {
            (Some(database), Some(run)) => format!(
                "{} run {run} of schema `{}` into {database}\n",
                self.kind, self.schema
            ),
            _ => format!(
                "{} of schema `{}` (dry run: nothing stored)\n",
                self.kind, self.schema
            ),
        };
        let mut rows: Vec<Vec<String>> = self
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
            self.read.to_string(),
            self.accepted.to_string(),
            self.quarantined.to_string(),
        ]);
        out.push_str(&left_table(
            &["file", "format", "read", "accepted", "quarantined"],
            &rows,
        ));
        let _ = writeln!(
            out,
            "read {} = accepted {} + quarantined {} (checked) in {:.2} s, {:.0} records/s",
            self.read,
            self.accepted,
            self.quarantined,
            self.seconds,
            self.records_per_second()
        );
        if !self.by_rule.is_empty() {
            out.push_str("\nquarantined by rule:\n");
            let rows: Vec<Vec<String>> = self
                .by_rule
                .iter()
                .map(|(rule, count)| vec![rule.clone(), count.to_string()])
                .collect();
            out.push_str(&left_table(&["rule", "records"], &rows));
        }
        if show > 0 && !self.samples.is_empty() {
            out.push_str(&self.samples_text(show));
        }
        out
    }

    fn samples_text(&self, show: usize) -> String {
        let rows: Vec<Vec<String>> = self
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
        let mut out = String::from("\nfirst quarantined records:\n");
        out.push_str(&left_table(
            &["file:line", "row", "field", "rule", "value", "reason"],
            &rows,
        ));
        if let Some(database) = &self.database {
            let _ = writeln!(
                out,
                "(all of them: attnflow data quarantine --db {database})"
            );
        }
        out
    }
}

impl ProfileReport {
    /// Per field: counts, range, moments, distinct count; then each
    /// histogram (neighbouring bins merged to at most 12) and the most
    /// frequent values.
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "profile of schema `{}`: {} records ({} malformed, not profiled)\n",
            self.schema, self.records, self.malformed
        );
        let rows: Vec<Vec<String>> = self
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
                    field.measure.clone(),
                ]
            })
            .collect();
        out.push_str(&left_table(
            &[
                "field", "type", "count", "nulls", "invalid", "min", "max", "mean", "std",
                "distinct", "of",
            ],
            &rows,
        ));
        for field in &self.fields {
            if !field.histogram.is_empty() {
                let _ = writeln!(out, "\n{} ({} histogram):", field.name, field.measure);
                out.push_str(&histogram_text(&field.histogram));
            }
            if !field.top.is_empty() {
                let top: Vec<String> = field
                    .top
                    .iter()
                    .take(5)
                    .map(|value| {
                        let sign = if value.error == 0 { "=" } else { "≈" };
                        format!("{}{sign}{}", one_line(&value.value), value.count)
                    })
                    .collect();
                let _ = writeln!(out, "{} most frequent: {}", field.name, top.join(", "));
            }
        }
        out
    }
}

/// A histogram as bars of `#`, neighbouring bins merged until at most 12
/// remain (the JSON keeps every bin).
fn histogram_text(histogram: &[Bin]) -> String {
    let mut bins = histogram.to_vec();
    while bins.len() > 12 {
        bins = bins
            .chunks(2)
            .map(|pair| Bin {
                low: pair[0].low,
                high: pair[pair.len() - 1].high,
                count: pair.iter().map(|bin| bin.count).sum(),
            })
            .collect();
    }
    let largest = bins.iter().map(|bin| bin.count).max().unwrap_or(1).max(1);
    let mut out = String::new();
    for bin in &bins {
        let bar = "#".repeat(((bin.count as f64 / largest as f64) * 40.0).round() as usize);
        let _ = writeln!(
            out,
            "  [{:>12}, {:>12})  {:>9}  {bar}",
            number(Some(bin.low)),
            number(Some(bin.high)),
            bin.count
        );
    }
    out
}

/// Quarantined records with the counts of those still held, by rule.
#[derive(Clone, Debug, Serialize)]
pub struct QuarantineListing {
    /// The store.
    pub database: String,
    /// Records still held, by the rule of their first violation.
    pub pending_by_rule: Vec<RuleCount>,
    /// The records listed.
    pub entries: Vec<QuarantineEntry>,
    /// The most records that were asked for.
    #[serde(skip)]
    pub limit: usize,
}

/// Records held under one rule.
#[derive(Clone, Debug, Serialize)]
pub struct RuleCount {
    /// The rule.
    pub rule: String,
    /// Records.
    pub records: u64,
}

impl QuarantineListing {
    /// Reads at most `limit` records (only those still held unless
    /// `include_released`, only `rule`'s when given) and the counts.
    pub fn read(
        store: &Store,
        database: &str,
        include_released: bool,
        rule: Option<&str>,
        limit: usize,
    ) -> DataResult<Self> {
        Ok(QuarantineListing {
            database: database.to_string(),
            pending_by_rule: store
                .quarantine_counts()?
                .into_iter()
                .map(|(rule, records)| RuleCount { rule, records })
                .collect(),
            entries: store.list_quarantine(include_released, rule, limit)?,
            limit,
        })
    }

    /// The counts by rule and one row per record.
    pub fn to_text(&self) -> String {
        let pending: u64 = self.pending_by_rule.iter().map(|count| count.records).sum();
        let mut out = format!("{pending} records in quarantine in {}\n", self.database);
        if !self.pending_by_rule.is_empty() {
            let rows: Vec<Vec<String>> = self
                .pending_by_rule
                .iter()
                .map(|count| vec![count.rule.clone(), count.records.to_string()])
                .collect();
            out.push_str(&left_table(&["rule", "records"], &rows));
        }
        if self.entries.is_empty() {
            return out;
        }
        let rows: Vec<Vec<String>> = self
            .entries
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
        out.push('\n');
        out.push_str(&left_table(
            &[
                "id",
                "file:line",
                "row",
                "field",
                "rule",
                "value",
                "reason",
                "status",
            ],
            &rows,
        ));
        if self.entries.len() == self.limit {
            let _ = writeln!(
                out,
                "(first {} shown; use --limit or --json for more)",
                self.limit
            );
        }
        out
    }
}

/// The chosen items as CSV: `id,weight,value`, ids quoted where needed.
pub fn selection_csv(items: &[Item], selection: &Selection) -> String {
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
    text
}

/// What a selection answered, and how sure it is.
pub struct SelectionText<'a> {
    /// Every item offered.
    pub items: &'a [Item],
    /// The answer.
    pub selection: &'a Selection,
    /// Whether it covers an amount at least cost (else: most value within
    /// a budget).
    pub cover: bool,
    /// The budget (or the amount to cover).
    pub budget: f64,
    /// The weight column's name.
    pub weight: &'a str,
    /// The value column's name.
    pub value: &'a str,
    /// Chosen items to list.
    pub show: usize,
}

impl SelectionText<'_> {
    /// The goal, the method, whether the answer is proven optimal (or its
    /// proven gap), the totals and the first chosen items.
    pub fn render(&self) -> String {
        let selection = self.selection;
        let (weight_name, value_name, goal) = if self.cover {
            let goal = format!(
                "cover ≥ {} of `{}` at least total `{}`",
                self.budget, self.value, self.weight
            );
            ("cost", "covered", goal)
        } else {
            let goal = format!(
                "maximise `{}` with total `{}` ≤ {}",
                self.value, self.weight, self.budget
            );
            ("weight", "value", goal)
        };
        let mut out = format!("{goal}: {} items\n", self.items.len());
        let method = match selection.method {
            Method::DynamicProgramming => "dynamic programming over integer weights",
            Method::BranchAndBound => "branch and bound",
            Method::Greedy => "greedy by ratio with the LP bound",
        };
        let nodes = selection
            .nodes
            .map_or_else(String::new, |nodes| format!(" ({nodes} nodes)"));
        let _ = writeln!(out, "method: {method}{nodes}");
        let _ = writeln!(out, "answer: {}", self.verdict());
        let _ = writeln!(
            out,
            "chosen {} items, total {weight_name} {}, total {value_name} {}",
            selection.chosen.len(),
            number(Some(selection.total_weight)),
            number(Some(selection.total_value))
        );
        if self.show > 0 && !selection.chosen.is_empty() {
            let rows: Vec<Vec<String>> = selection
                .chosen
                .iter()
                .take(self.show)
                .map(|&index| {
                    let item = &self.items[index];
                    vec![
                        item.id.clone(),
                        number(Some(item.weight)),
                        number(Some(item.value)),
                    ]
                })
                .collect();
            out.push_str(&left_table(&["id", self.weight, self.value], &rows));
            if selection.chosen.len() > self.show {
                let _ = writeln!(
                    out,
                    "({} more; --output FILE writes them all)",
                    selection.chosen.len() - self.show
                );
            }
        }
        out
    }

    fn verdict(&self) -> String {
        let selection = self.selection;
        if selection.exact {
            return "optimal (proven)".to_owned();
        }
        let (what, bound) = if self.cover {
            ("the least cost", "cost ≥ {} for any cover")
        } else {
            ("the best value", "no selection beats {}")
        };
        format!(
            "within {} of {what} ({}, gap ≤ {:.3}%)",
            number(Some(selection.gap)),
            bound.replace("{}", &number(Some(selection.bound))),
            100.0 * selection.relative_gap()
        )
    }
}
