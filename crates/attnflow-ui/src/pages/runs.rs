//! Runs: pipeline, training and workflow runs in one table, filtered,
//! sorted and paged by plain GET links and forms (no script needed), with
//! a selection to compare.

use maud::{html, Markup};

use crate::app::App;
use crate::error::PageResult;
use crate::html::{duration, href, number, page, percent, status_badge, when, Frame};
use crate::listing::{runs_page, Kind, RunsQuery, Sort, STATUSES};
use crate::query::Params;

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::All => "all",
        Kind::Pipeline => "pipeline",
        Kind::Workflow => "workflow",
        Kind::Training => "training",
    }
}

fn sort_name(sort: Sort) -> &'static str {
    match sort {
        Sort::Started => "started",
        Sort::Duration => "duration",
        Sort::Status => "status",
        Sort::Workflow => "workflow",
        Sort::Accuracy => "accuracy",
        Sort::Loss => "loss",
    }
}

/// The query string of `query` at page `page` (links keep every filter).
fn link(query: &RunsQuery, page: u64) -> String {
    let page = page.to_string();
    let per = query.per_page.to_string();
    href(
        "/",
        &[
            (
                "kind",
                if query.kind == Kind::All {
                    ""
                } else {
                    kind_name(query.kind)
                },
            ),
            ("status", query.status.as_deref().unwrap_or("")),
            ("workflow", query.workflow.as_deref().unwrap_or("")),
            ("q", query.text.as_deref().unwrap_or("")),
            ("sort", sort_name(query.sort)),
            ("order", if query.descending { "desc" } else { "asc" }),
            ("per", if query.per_page == 50 { "" } else { &per }),
            ("page", if page == "1" { "" } else { &page }),
        ],
    )
}

fn select(name: &str, label: &str, choices: &[(String, String)], chosen: &str) -> Markup {
    html! {
        label {
            (label) " "
            select name=(name) {
                @for (value, text) in choices {
                    option value=(value) selected[value == chosen] { (text) }
                }
            }
        }
    }
}

fn pairs(values: &[&str]) -> Vec<(String, String)> {
    values
        .iter()
        .map(|value| (value.to_string(), value.to_string()))
        .collect()
}

fn filters(query: &RunsQuery, workflows: &[(String, u64)]) -> Markup {
    let mut statuses = vec![(String::new(), "any".to_owned())];
    statuses.extend(pairs(&STATUSES));
    let mut workflow_choices = vec![(String::new(), "any".to_owned())];
    workflow_choices.extend(
        workflows
            .iter()
            .map(|(name, count)| (name.clone(), format!("{name} ({count})"))),
    );
    html! {
        form.filters method="get" action="/" {
            (select("kind", "Kind", &pairs(&["all", "pipeline", "workflow", "training"]), kind_name(query.kind)))
            (select("status", "Status", &statuses, query.status.as_deref().unwrap_or("")))
            (select("workflow", "Workflow", &workflow_choices, query.workflow.as_deref().unwrap_or("")))
            label { "Name or state " input type="search" name="q" value=(query.text.as_deref().unwrap_or("")); }
            (select("sort", "Sort by", &pairs(&["started", "duration", "status", "workflow", "accuracy", "loss"]), sort_name(query.sort)))
            (select("order", "Order", &pairs(&["desc", "asc"]), if query.descending { "desc" } else { "asc" }))
            button type="submit" { "Apply" }
        }
    }
}

/// The Runs page.
pub fn render(app: &App, params: &Params, frame: &Frame) -> PageResult<Markup> {
    let query = RunsQuery::parse(params)?;
    let listing = runs_page(app, &query)?;
    let first = (query.page - 1) * query.per_page;
    let pages = listing.total.div_ceil(query.per_page).max(1);
    let body = html! {
        @if let Some(notice) = &listing.notice {
            p.notice role="status" { (notice) }
        }
        (filters(&query, &listing.workflows))
        @if matches!(query.sort, Sort::Accuracy | Sort::Loss) {
            p.hint { "Sorted by a training number: only runs that trained are listed." }
        }
        form #compare method="get" action="/compare" {
            button type="submit" { "Compare selected" }
            " "
            span.hint { "Tick two or more runs that trained." }
        }
        p.count {
            @if listing.rows.is_empty() {
                "No runs match."
            } @else {
                "Runs " (first + 1) "–" (first + listing.rows.len() as u64) " of " (listing.total)
            }
        }
        table.runs {
            thead {
                tr {
                    th { span.visually-hidden { "select" } }
                    th { "run" } th { "kind" } th { "workflow" } th { "status" } th { "state" }
                    th { "started (UTC)" } th { "duration" } th { "accuracy" } th { "loss" }
                }
            }
            tbody {
                @for row in &listing.rows {
                    tr {
                        td {
                            @if row.kind != "workflow" {
                                input type="checkbox" name="run" value=(row.key) form="compare" aria-label={ "compare " (row.name) };
                            }
                        }
                        td { a href={ "/runs/" (row.key) } { (row.name) } }
                        td { (row.kind) }
                        td { (row.workflow.as_deref().unwrap_or("-")) }
                        td { (status_badge(&row.status)) }
                        td { (row.state.as_deref().unwrap_or("-")) }
                        td { (when(Some(row.started_ms))) }
                        td.number { (duration(row.duration_ms)) }
                        td.number { (percent(row.results.accuracy)) }
                        td.number { (number(row.results.loss, 4)) }
                    }
                }
            }
        }
        nav.pages aria-label="pages" {
            @if query.page > 1 {
                a rel="prev" href=(link(&query, query.page - 1)) { "← previous" }
            }
            " page " (query.page) " of " (pages) " "
            @if query.page < pages {
                a rel="next" href=(link(&query, query.page + 1)) { "next →" }
            }
        }
    };
    Ok(page("Runs", "/", frame, body))
}
