//! Quarantine: the records a quality check held back, by rule, field or
//! source; one record's raw bytes with every violation marked; and the
//! re-check against an edited schema (a change: POST only, with the CSRF
//! token, refused under `--read-only`), which reports how many records it
//! released and how many are still held.

use std::path::Path;

use attnflow_data::check::Violation;
use attnflow_data::quarantine::{quarantined_record, QuarantinedRecord};
use attnflow_data::run::{recheck, CheckOptions, CheckReport};
use attnflow_data::store::{
    QuarantineEntry, QuarantineFacets, QuarantineFilter, Store as DataStore,
};
use attnflow_data::Schema;
use attnflow_pipeline::files as run_files;
use attnflow_store::Location;
use maud::{html, Markup};

use crate::app::App;
use crate::catalog::FolderKind;
use crate::error::{PageError, PageResult};
use crate::html::{href, page, Frame};
use crate::query::Params;
use crate::resolve::resolve;
use crate::security::csrf_ok;
use crate::stores::{data_error, Pooled, WRITE_WAIT};

/// Records per page.
const PER_PAGE: usize = 50;

/// Which data store a quarantine page reads: `main`, or a run's key.
struct Source {
    key: String,
    label: String,
    location: Location,
}

fn source(app: &App, key: &str) -> PageResult<Source> {
    if key == "main" {
        return Ok(Source {
            key: key.to_owned(),
            label: format!("the main store {}", app.store),
            location: app.store.clone(),
        });
    }
    let run = resolve(app, key)?;
    let folder = run
        .folder
        .filter(|folder| folder.kind == FolderKind::Pipeline)
        .ok_or_else(|| {
            PageError::not_found(format!(
                "run {key} is not a pipeline run, so it has no quarantine"
            ))
        })?;
    Ok(Source {
        key: key.to_owned(),
        label: format!("run {}", folder.name),
        location: Location::Sqlite(folder.path.join(run_files::DATA_STORE)),
    })
}

fn filter_of(params: &Params) -> QuarantineFilter {
    QuarantineFilter {
        include_released: params.get("released") == Some("1"),
        rule: params.get("rule").map(str::to_owned),
        field: params.get("field").map(str::to_owned),
        source: params.get("source").map(str::to_owned),
    }
}

/// Every store with a quarantine: the main store (when it has data
/// tables) and each pipeline run's data store.
fn chooser(app: &App, frame: &Frame) -> Markup {
    let folders = app.catalog.folders();
    let mut stores: Vec<(String, String, Result<u64, PageError>)> = Vec::new();
    let held = |location: &Location| -> Result<u64, PageError> {
        let store = app.data_stores.get(location)?;
        store
            .count_quarantine(&QuarantineFilter::default())
            .map_err(|error| data_error(&error))
    };
    if let Ok(count) = held(&app.store) {
        stores.push((
            "main".into(),
            format!("main store {}", app.store),
            Ok(count),
        ));
    }
    for folder in folders
        .iter()
        .filter(|folder| folder.path.join(run_files::DATA_STORE).is_file())
    {
        let location = Location::Sqlite(folder.path.join(run_files::DATA_STORE));
        stores.push((folder.key.clone(), folder.name.clone(), held(&location)));
    }
    let body = html! {
        @if stores.is_empty() {
            p.notice { "No store with a quarantine: neither the main store nor any run folder has data tables. `attnflow data check` and `attnflow run` make them." }
        } @else {
            table {
                thead { tr { th { "store" } th { "records held" } } }
                tbody {
                    @for (key, label, count) in &stores {
                        tr {
                            td { a href=(href("/quarantine", &[("store", key)])) { (label) } }
                            td.number {
                                @match count {
                                    Ok(count) => (count),
                                    Err(error) => span.error { (error.message) },
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    page("Quarantine", "/quarantine", frame, body)
}

fn facet_list(
    title: &str,
    parameter: &str,
    counts: &[(String, u64)],
    source: &Source,
    filter: &QuarantineFilter,
) -> Markup {
    html! {
        div.facet {
            h3 { (title) }
            ul {
                @for (value, count) in counts {
                    @let current = match parameter {
                        "rule" => filter.rule.as_deref(),
                        "field" => filter.field.as_deref(),
                        _ => filter.source.as_deref(),
                    } == Some(value.as_str());
                    li {
                        @if current {
                            strong { (value) } " (" (count) ") "
                            a href=(href("/quarantine", &[("store", &source.key)])) { "clear" }
                        } @else {
                            a href=(href("/quarantine", &[("store", &source.key), (parameter, value)])) { (value) }
                            " (" (count) ")"
                        }
                    }
                }
            }
        }
    }
}

fn recheck_form(app: &App, source: &Source, schema: Option<&(String, String, String)>) -> Markup {
    html! {
        section #recheck {
            h2 { "Re-check against an edited schema" }
            @if app.read_only {
                p.notice { "This server is read-only (--read-only): re-checks are refused." }
            } @else {
                p { "Edit the schema (loaded from the newest check of this store), then re-check every held record: those that pass move to the processing queue." }
                form method="post" action="/quarantine/recheck" {
                    input type="hidden" name="csrf" value=(app.csrf);
                    input type="hidden" name="store" value=(source.key);
                    textarea name="schema" rows="18" cols="80" spellcheck="false" aria-label="schema" {
                        (schema.map_or("", |(_, _, text)| text.as_str()))
                    }
                    p {
                        @if let Some((name, path, _)) = schema { span.hint { "schema " (name) " from " code { (path) } } " " }
                        button type="submit" { "Re-check" }
                    }
                }
            }
        }
    }
}

fn entries_table(source: &Source, entries: &[QuarantineEntry]) -> Markup {
    html! {
        table.quarantine {
            thead { tr { th { "#" } th { "file:line" } th { "row" } th { "field" } th { "rule" } th { "value" } th { "reason" } th { "violations" } } }
            tbody {
                @for entry in entries {
                    tr {
                        td { a href=(href("/quarantine/record", &[("store", &source.key), ("id", &entry.id.to_string())])) { (entry.id) } }
                        td { (entry.source) ":" (entry.line) }
                        td.number { (entry.row) }
                        td { (entry.field.as_deref().unwrap_or("-")) }
                        td { code { (entry.rule) } }
                        td { code.value { (entry.value.as_deref().unwrap_or("")) } }
                        td { (entry.message) @if entry.released_by_run.is_some() { " " span.badge.ok { "released" } } }
                        td.number { (entry.violations.len()) }
                    }
                }
            }
        }
    }
}

/// The Quarantine page.
pub fn render(app: &App, params: &Params, frame: &Frame) -> PageResult<Markup> {
    let Some(key) = params.get("store") else {
        return Ok(chooser(app, frame));
    };
    let source = source(app, key)?;
    let store = app.data_stores.get(&source.location)?;
    let filter = filter_of(params);
    let page_number = params.number("page", 1usize)?.max(1);
    let offset = (page_number - 1) * PER_PAGE;
    let error = |error: attnflow_data::DataError| data_error(&error);
    let facets: QuarantineFacets = store.quarantine_facets().map_err(error)?;
    let total = store.count_quarantine(&filter).map_err(error)?;
    let entries = store
        .quarantine_page(&filter, offset, PER_PAGE)
        .map_err(error)?;
    let held: u64 = facets.by_rule.iter().map(|(_, count)| count).sum();
    let schema = store.latest_schema().map_err(error)?;
    let more = offset as u64 + (entries.len() as u64) < total;
    let page_link = |number: usize| {
        let number = number.to_string();
        href(
            "/quarantine",
            &[
                ("store", &source.key),
                ("rule", filter.rule.as_deref().unwrap_or("")),
                ("field", filter.field.as_deref().unwrap_or("")),
                ("source", filter.source.as_deref().unwrap_or("")),
                ("released", if filter.include_released { "1" } else { "" }),
                ("page", &number),
            ],
        )
    };
    let body = html! {
        p { strong #held { (held) } " records held in " (source.label) "." }
        div.facets {
            (facet_list("By rule", "rule", &facets.by_rule, &source, &filter))
            (facet_list("By field", "field", &facets.by_field, &source, &filter))
            (facet_list("By source", "source", &facets.by_source, &source, &filter))
        }
        p.count {
            (total) " records match"
            @if !filter.include_released {
                " · " a href=(href("/quarantine", &[("store", &source.key), ("released", "1")])) { "include released ones" }
            }
        }
        (entries_table(&source, &entries))
        nav.pages {
            @if page_number > 1 { a rel="prev" href=(page_link(page_number - 1)) { "← previous" } " " }
            @if more { a rel="next" href=(page_link(page_number + 1)) { "next →" } }
        }
        (recheck_form(app, &source, schema.as_ref()))
    };
    Ok(page("Quarantine", "/quarantine", frame, body))
}

/// Byte ranges of `record`'s raw text where each cell's value was found,
/// searching forward in cell order (CSV columns, JSON keys).
fn cell_ranges(raw: &str, record: &QuarantinedRecord) -> Vec<Option<(usize, usize)>> {
    let mut position = 0;
    record
        .cells
        .iter()
        .map(|cell| {
            if cell.text.is_empty() {
                return None;
            }
            let from = match raw[position..].find(&format!("\"{}\"", cell.name)) {
                // A JSON key: its value follows it.
                Some(at) if raw.trim_start().starts_with('{') => {
                    position + at + cell.name.len() + 2
                }
                _ => position,
            };
            let start = from + raw[from..].find(&cell.text)?;
            let end = start + cell.text.len();
            position = end;
            Some((start, end))
        })
        .collect()
}

/// One quarantined record with every violation marked.
pub fn record(app: &App, params: &Params, frame: &Frame) -> PageResult<Markup> {
    let key = params
        .get("store")
        .ok_or_else(|| PageError::bad_request("parameter `store` is required"))?;
    let id: i64 = params.number("id", 0)?;
    let source = source(app, key)?;
    let store = app.data_stores.get(&source.location)?;
    let record = quarantined_record(&store, id)
        .map_err(|error| data_error(&error))?
        .ok_or_else(|| {
            PageError::not_found(format!("{} holds no quarantined record {id}", source.label))
        })?;
    let entry = &record.entry;
    let raw = String::from_utf8_lossy(&record.raw).into_owned();
    let violated = |name: &str| -> Vec<&Violation> {
        entry
            .violations
            .iter()
            .filter(|violation| violation.field.as_deref() == Some(name))
            .collect()
    };
    let ranges = cell_ranges(&raw, &record);
    let mut marks: Vec<(usize, usize)> = record
        .cells
        .iter()
        .zip(&ranges)
        .filter(|(cell, _)| !violated(&cell.name).is_empty())
        .filter_map(|(_, range)| *range)
        .collect();
    marks.sort_unstable();
    let whole = entry
        .violations
        .iter()
        .any(|violation| violation.field.is_none());
    let mut pieces: Vec<(bool, &str)> = Vec::new();
    let mut at = 0;
    for (start, end) in marks {
        if start < at {
            continue;
        }
        pieces.push((false, &raw[at..start]));
        pieces.push((true, &raw[start..end]));
        at = end;
    }
    pieces.push((false, &raw[at..]));
    let body = html! {
        p {
            a href=(href("/quarantine", &[("store", &source.key)])) { "← " (source.label) }
        }
        dl.facts {
            dt { "source" } dd { code { (entry.source) } ", line " (entry.line) ", record " (entry.row) }
            dt { "checked by run" } dd { (entry.run_id) }
            @if let Some(run) = entry.released_by_run { dt { "released by run" } dd { (run) } }
        }
        h2 { "Violations" }
        ul.violations {
            @for violation in &entry.violations {
                li {
                    code { (violation.rule) } " "
                    @if let Some(field) = &violation.field { "on " strong { (field) } " " }
                    @if let Some(value) = &violation.value { "value " mark { (value) } " " }
                    "— " (violation.message)
                }
            }
        }
        h2 { "Raw record" }
        @if record.raw_cut { p.notice { "The stored bytes were cut at the schema's max_record_bytes." } }
        pre.raw.whole[whole] {
            @for (marked, text) in &pieces {
                @if *marked { mark { (text) } } @else { (text) }
            }
        }
        @if !record.cells.is_empty() {
            table.cells {
                thead { tr { th { "field" } th { "value" } th { "violations" } } }
                tbody {
                    @for cell in &record.cells {
                        @let broken = violated(&cell.name);
                        tr.bad[!broken.is_empty()] {
                            th { (cell.name) }
                            td { @if broken.is_empty() { (cell.text) } @else { mark { (cell.text) } } }
                            td { @for violation in &broken { code { (violation.rule) } " " (violation.message) br; } }
                        }
                    }
                }
            }
        } @else {
            p.hint { "The record did not parse, so its bytes are all there is; the violation above is about the whole record." }
        }
    };
    Ok(page(
        &format!("Quarantined record {id}"),
        "/quarantine",
        frame,
        body,
    ))
}

/// `POST /quarantine/recheck`: the edited schema, then the counts.
pub fn recheck_post(app: &App, body: &[u8], frame: &Frame) -> PageResult<Markup> {
    if app.read_only {
        return Err(PageError::forbidden(
            "this server is read-only (--read-only): re-checks are refused",
        ));
    }
    let params = Params::parse(body);
    if !csrf_ok(app, &params) {
        return Err(PageError::forbidden(
            "the form's CSRF token is missing or not this server's; reload the quarantine page and submit again",
        ));
    }
    let key = params
        .get("store")
        .ok_or_else(|| PageError::bad_request("field `store` is required"))?;
    let text = params.get("schema").ok_or_else(|| {
        PageError::bad_request("field `schema` is required: the schema to re-check against")
    })?;
    let source = source(app, key)?;
    let schema =
        Schema::parse(Path::new("edited schema"), text).map_err(|error| data_error(&error))?;
    let mut store = <DataStore as Pooled>::open(&source.location, WRITE_WAIT)?;
    let report: CheckReport = recheck(&schema, &mut store, &CheckOptions::default())
        .map_err(|error| data_error(&error))?;
    let body = html! {
        p #recheck-result {
            "Re-checked " strong { (report.read) } " held records against schema " code { (report.schema) } ": "
            strong #released { (report.accepted) } " released to the processing queue, "
            strong #still-held { (report.quarantined) } " still held."
        }
        @if !report.by_rule.is_empty() {
            table {
                thead { tr { th { "still held by rule" } th { "records" } } }
                tbody { @for (rule, count) in &report.by_rule { tr { td { code { (rule) } } td.number { (count) } } } }
            }
        }
        p { a href=(href("/quarantine", &[("store", &source.key)])) { "Back to the quarantine" } }
    };
    Ok(page("Re-check", "/quarantine", frame, body))
}
