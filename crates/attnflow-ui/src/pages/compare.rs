//! Compare: two or more training runs with their loss, J, R and accuracy
//! curves overlaid (one series per run, SVG drawn on the server), and what
//! differs between their training configurations and blueprints.

use std::collections::BTreeMap;

use attnflow_pipeline::files as run_files;
use attnflow_train::checkpoint::{CheckpointMeta, META_FILE, SPEC_FILE};
use attnflow_train::trainer::REPORT_FILE;
use attnflow_train::TrainReport;
use maud::{html, Markup};
use similar::{ChangeTag, TextDiff};

use crate::app::App;
use crate::catalog::{read_json, FolderKind, FolderRun};
use crate::curves::{charts, read_curves, Curves};
use crate::error::{PageError, PageResult};
use crate::html::{drawn_svg, number, page, percent, Frame};
use crate::query::Params;
use crate::resolve::resolve;

/// The most runs one comparison draws.
pub const MAX_RUNS: usize = 12;

/// A run's configuration as `path.to.field = value` lines.
fn flatten(prefix: &str, value: &serde_json::Value, out: &mut BTreeMap<String, String>) {
    match value {
        serde_json::Value::Object(object) => {
            for (key, value) in object {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(&path, value, out);
            }
        }
        serde_json::Value::String(text) => {
            out.insert(prefix.to_owned(), text.clone());
        }
        other => {
            out.insert(prefix.to_owned(), other.to_string());
        }
    }
}

struct Compared {
    folder: FolderRun,
    curves: Curves,
    config: Option<BTreeMap<String, String>>,
    blueprint: Option<String>,
    report: Option<TrainReport>,
}

fn load(folder: FolderRun) -> Compared {
    let curves = read_curves(&folder.name, &folder.training_dir);
    let config = read_json::<CheckpointMeta>(&folder.training_dir.join(META_FILE))
        .ok()
        .and_then(|meta| serde_json::to_value(&meta.config).ok())
        .map(|value| {
            let mut lines = BTreeMap::new();
            flatten("", &value, &mut lines);
            lines
        });
    let blueprint = std::fs::read_to_string(folder.training_dir.join(SPEC_FILE)).ok();
    let report_path = match folder.kind {
        FolderKind::Pipeline => folder.path.join(run_files::TRAINING),
        FolderKind::Training => folder.path.join(REPORT_FILE),
    };
    let report = read_json::<TrainReport>(&report_path).ok();
    Compared {
        folder,
        curves,
        config,
        blueprint,
        report,
    }
}

fn picker(app: &App, frame: &Frame, chosen: &[&str]) -> Markup {
    let folders = app.catalog.folders();
    let trained: Vec<&FolderRun> = folders
        .iter()
        .filter(|folder| folder.results.steps.is_some())
        .collect();
    let body = html! {
        p { "Choose two or more runs that trained (or tick them on the " a href="/" { "Runs" } " page)." }
        @if trained.is_empty() {
            p.notice { "No run folder with training logs was found under --runs." }
        } @else {
            form method="get" action="/compare" {
                ul.choices {
                    @for folder in &trained {
                        li {
                            label {
                                input type="checkbox" name="run" value=(folder.key) checked[chosen.contains(&folder.key.as_str())];
                                " " (folder.name) " "
                                span.hint { (folder.kind.name()) ", " (folder.results.steps.unwrap_or(0)) " steps, loss " (number(folder.results.loss, 4)) }
                            }
                        }
                    }
                }
                button type="submit" { "Compare" }
            }
        }
    };
    page("Compare", "/compare", frame, body)
}

fn config_diff(runs: &[Compared]) -> Markup {
    let mut keys: Vec<&String> = runs
        .iter()
        .filter_map(|run| run.config.as_ref())
        .flat_map(|config| config.keys())
        .collect();
    keys.sort();
    keys.dedup();
    let value = |run: &Compared, key: &String| -> String {
        match &run.config {
            None => "(no checkpoint)".to_owned(),
            Some(config) => config.get(key).cloned().unwrap_or_else(|| "-".to_owned()),
        }
    };
    let (differing, same): (Vec<&String>, Vec<&String>) = keys.into_iter().partition(|key| {
        let first = value(&runs[0], key);
        runs.iter().any(|run| value(run, key) != first)
    });
    let table = |rows: &[&String], class: &str| {
        html! {
            table class=(class) {
                thead { tr { th { "setting" } @for run in runs { th { (run.folder.name) } } } }
                tbody {
                    @for key in rows {
                        tr { th { code { (key) } } @for run in runs { td { (value(run, key)) } } }
                    }
                }
            }
        }
    };
    html! {
        section #config {
            h2 { "Training configuration" }
            @if differing.is_empty() {
                p { "Every setting is the same in all runs." }
            } @else {
                p { (differing.len()) " settings differ." }
                (table(&differing, "diff"))
            }
            @if !same.is_empty() {
                details {
                    summary { (same.len()) " settings are the same in all runs" }
                    (table(&same, "same"))
                }
            }
        }
    }
}

fn blueprint_diff(runs: &[Compared]) -> Markup {
    let base = &runs[0];
    html! {
        section #blueprints {
            h2 { "Blueprints" }
            @match &base.blueprint {
                None => p { "The first run has no blueprint file (" code { (SPEC_FILE) } ")." },
                Some(base_text) => {
                    @for run in &runs[1..] {
                        @match &run.blueprint {
                            None => p { (run.folder.name) ": no blueprint file." },
                            Some(text) if text == base_text => p { (run.folder.name) ": the same blueprint as " (base.folder.name) "." },
                            Some(text) => {
                                h3 { (base.folder.name) " → " (run.folder.name) }
                                pre.diff {
                                    @for change in TextDiff::from_lines(base_text.as_str(), text.as_str()).iter_all_changes() {
                                        @match change.tag() {
                                            ChangeTag::Delete => del { "- " (change.value()) },
                                            ChangeTag::Insert => ins { "+ " (change.value()) },
                                            ChangeTag::Equal => span { "  " (change.value()) },
                                        }
                                    }
                                }
                            }
                        }
                    }
                    details {
                        summary { "Blueprint of " (base.folder.name) }
                        pre { (base_text) }
                    }
                }
            }
        }
    }
}

/// The Compare page: a picker without two runs, else the comparison.
pub fn render(app: &App, params: &Params, frame: &Frame) -> PageResult<Markup> {
    let mut keys = params.all("run");
    keys.dedup();
    if keys.len() < 2 {
        return Ok(picker(app, frame, &keys));
    }
    if keys.len() > MAX_RUNS {
        return Err(PageError::bad_request(format!(
            "{} runs asked for; one comparison draws at most {MAX_RUNS}",
            keys.len()
        )));
    }
    let mut runs = Vec::with_capacity(keys.len());
    for key in &keys {
        let folder = resolve(app, key)?.folder.ok_or_else(|| {
            PageError::bad_request(format!(
                "run {key} has no run folder, so no training logs to compare"
            ))
        })?;
        runs.push(load(folder));
    }
    let body = html! {
        table.summary {
            thead { tr { th { "run" } th { "blueprint" } th { "task" } th { "parameters" } th { "steps" } th { "final loss" } th { "accuracy" } th { "tokens/s" } } }
            tbody {
                @for run in &runs {
                    tr {
                        td { a href={ "/runs/" (run.folder.key) } { (run.folder.name) } }
                        td { (run.report.as_ref().map_or("-", |report| report.blueprint.as_str())) }
                        td { (run.report.as_ref().map_or("-", |report| report.task.as_str())) }
                        td.number { (run.report.as_ref().map_or_else(|| "-".to_owned(), |report| report.parameters.to_string())) }
                        td.number { (run.curves.steps.len()) }
                        td.number { (number(run.folder.results.loss, 4)) }
                        td.number { (percent(run.folder.results.accuracy)) }
                        td.number { (number(run.report.as_ref().map(|report| report.tokens_per_second), 0)) }
                    }
                }
            }
        }
        section #curves {
            h2 { "Curves" }
            @for chart in charts(&runs.iter().map(|run| run.curves.clone()).collect::<Vec<_>>()) {
                figure.chart id=(chart.id) data-series=(chart.chart.series.len()) {
                    figcaption { strong { (chart.chart.title) } " " (chart.chart.caption) }
                    (drawn_svg(chart.chart.svg()))
                }
            }
        }
        (config_diff(&runs))
        (blueprint_diff(&runs))
    };
    Ok(page("Compare", "/compare", frame, body))
}
