//! The Runs page's rows: workflow runs of the main store (filtered,
//! sorted and paged in SQL, so 10,000 runs cost one short query) merged
//! with the run folders that are not in it (few, held in memory). A
//! pipeline folder whose run is in the main store is one row, the store's,
//! with the folder's loss and accuracy.

use std::cmp::Ordering;
use std::sync::Arc;

use attnflow_store::Location;
use attnflow_workflow::store::{RunFilter, RunOrder, RunSummary};
use attnflow_workflow::RunStatus;

use crate::app::App;
use crate::catalog::{FolderKind, FolderRun, Results, Training};
use crate::error::{PageError, PageResult};
use crate::query::Params;

/// Which rows by origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Everything.
    All,
    /// `attnflow run` runs (folders, and store runs of its workflow).
    Pipeline,
    /// Other workflow runs.
    Workflow,
    /// `attnflow train` folders.
    Training,
}

/// The column rows are sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sort {
    /// Start time.
    Started,
    /// Duration (so far, when running).
    Duration,
    /// Status name.
    Status,
    /// Workflow name.
    Workflow,
    /// Final accuracy (runs that trained only).
    Accuracy,
    /// Final loss (runs that trained only).
    Loss,
}

/// Statuses a row can have: the store's, and those of training folders.
pub const STATUSES: [&str; 5] = ["running", "succeeded", "failed", "crashed", "stopped"];

/// The Runs page's question.
#[derive(Debug, Clone, PartialEq)]
pub struct RunsQuery {
    /// Rows by origin.
    pub kind: Kind,
    /// Only this status.
    pub status: Option<String>,
    /// Only this workflow.
    pub workflow: Option<String>,
    /// Only rows whose names contain this.
    pub text: Option<String>,
    /// The order.
    pub sort: Sort,
    /// Largest first.
    pub descending: bool,
    /// 1-based page.
    pub page: u64,
    /// Rows per page.
    pub per_page: u64,
}

impl RunsQuery {
    /// Reads the query string; an unknown value is a 400 page.
    pub fn parse(params: &Params) -> PageResult<RunsQuery> {
        let kind =
            match params.choice("kind", &["all", "pipeline", "workflow", "training"], "all")? {
                "pipeline" => Kind::Pipeline,
                "workflow" => Kind::Workflow,
                "training" => Kind::Training,
                _ => Kind::All,
            };
        let sort = match params.choice(
            "sort",
            &[
                "started", "duration", "status", "workflow", "accuracy", "loss",
            ],
            "started",
        )? {
            "duration" => Sort::Duration,
            "status" => Sort::Status,
            "workflow" => Sort::Workflow,
            "accuracy" => Sort::Accuracy,
            "loss" => Sort::Loss,
            _ => Sort::Started,
        };
        let default_order = match sort {
            Sort::Started | Sort::Duration | Sort::Accuracy => "desc",
            _ => "asc",
        };
        let descending = params.choice("order", &["asc", "desc"], default_order)? == "desc";
        let status = params
            .get("status")
            .map(|status| {
                STATUSES
                    .iter()
                    .find(|known| **known == status)
                    .map(|known| known.to_string())
                    .ok_or_else(|| {
                        PageError::bad_request(format!(
                            "parameter `status`: `{status}` is not one of {}",
                            STATUSES.join(", ")
                        ))
                    })
            })
            .transpose()?;
        let page = params.number("page", 1u64)?;
        let per_page = params.number("per", 50u64)?;
        if page == 0 || !(1..=500).contains(&per_page) {
            return Err(PageError::bad_request(
                "parameter `page` counts from 1 and `per` must be 1 to 500",
            ));
        }
        Ok(RunsQuery {
            kind,
            status,
            workflow: params.get("workflow").map(str::to_owned),
            text: params.get("q").map(str::to_owned),
            sort,
            descending,
            page,
            per_page,
        })
    }
}

/// One row of the Runs page.
#[derive(Debug, Clone)]
pub struct Row {
    /// The run's key in URLs.
    pub key: String,
    /// `pipeline`, `workflow` or `training`.
    pub kind: &'static str,
    /// The folder's name, else the workflow's.
    pub name: String,
    /// The workflow (none for training folders).
    pub workflow: Option<String>,
    /// Its workflow run in the main store.
    pub run_id: Option<i64>,
    /// Status: the store's, or the training folder's.
    pub status: String,
    /// The workflow state it is in.
    pub state: Option<String>,
    /// Start (ms since the epoch).
    pub started_ms: i64,
    /// How long it took, or has taken so far.
    pub duration_ms: i64,
    /// Loss and accuracy, when it trained.
    pub results: Results,
    /// Whether it came from the store (the merge's tie-break).
    from_store: bool,
}

/// A page of rows.
pub struct RunsPage {
    /// The rows shown.
    pub rows: Vec<Row>,
    /// Rows matching the filters, on every page.
    pub total: u64,
    /// Why the main store could not be read, when it could not (the
    /// folders are still listed).
    pub notice: Option<String>,
    /// Workflow names in the store with their run counts (the filter's
    /// choices).
    pub workflows: Vec<(String, u64)>,
}

fn training_status(training: Training) -> &'static str {
    match training {
        Training::Running => "running",
        Training::Finished => "succeeded",
        Training::Stopped | Training::NotStarted => "stopped",
    }
}

fn store_row(summary: &RunSummary, folder: Option<&FolderRun>, app: &App, now_ms: i64) -> Row {
    let pipeline = folder.is_some() || summary.workflow == app.pipeline_workflow;
    Row {
        key: format!("run-{}", summary.id),
        kind: if pipeline { "pipeline" } else { "workflow" },
        name: folder.map_or_else(|| summary.workflow.clone(), |folder| folder.name.clone()),
        workflow: Some(summary.workflow.clone()),
        run_id: Some(summary.id),
        status: summary.status.as_str().to_owned(),
        state: Some(summary.current_state.clone()),
        started_ms: summary.created_ms,
        duration_ms: summary.duration_ms(now_ms),
        results: folder.map(|folder| folder.results).unwrap_or_default(),
        from_store: true,
    }
}

/// A folder's row; `summary` is its workflow run, wherever that is.
fn folder_row(folder: &FolderRun, summary: Option<&RunSummary>, now_ms: i64) -> Row {
    let started_ms = summary.map_or(folder.started_ms, |run| run.created_ms);
    let status = match (folder.kind, summary) {
        (_, Some(run)) => run.status.as_str(),
        (FolderKind::Training, None) => training_status(folder.training),
        (FolderKind::Pipeline, None) => "stopped",
    };
    Row {
        key: folder.key.clone(),
        kind: folder.kind.name(),
        name: folder.name.clone(),
        workflow: summary.map(|run| run.workflow.clone()),
        run_id: folder.linked,
        status: status.to_owned(),
        state: summary.map(|run| run.current_state.clone()),
        started_ms,
        duration_ms: summary.map_or_else(
            || folder.finished_ms.unwrap_or(now_ms) - started_ms,
            |run| run.duration_ms(now_ms),
        ),
        results: folder.results,
        from_store: false,
    }
}

/// The workflow run of a folder whose store is not the main one.
fn other_store_summary(app: &App, folder: &FolderRun) -> Option<RunSummary> {
    let store: &Location = folder.store.as_ref()?;
    let id = folder.run_file.as_ref()?.workflow_run;
    let store = app.workflow_stores.get(store).ok()?;
    store.run_summaries(&[id]).ok()?.into_iter().next()
}

fn contains(haystack: &str, needle: &str) -> bool {
    haystack
        .to_ascii_lowercase()
        .contains(&needle.to_ascii_lowercase())
}

fn matches(row: &Row, query: &RunsQuery) -> bool {
    let kind = match query.kind {
        Kind::All => true,
        Kind::Pipeline => row.kind == "pipeline",
        Kind::Workflow => row.kind == "workflow",
        Kind::Training => row.kind == "training",
    };
    kind && query
        .status
        .as_ref()
        .is_none_or(|status| row.status == *status)
        && query
            .workflow
            .as_ref()
            .is_none_or(|workflow| row.workflow.as_ref() == Some(workflow))
        && query.text.as_ref().is_none_or(|text| {
            contains(&row.name, text)
                || row
                    .workflow
                    .as_deref()
                    .is_some_and(|workflow| contains(workflow, text))
                || row
                    .state
                    .as_deref()
                    .is_some_and(|state| contains(state, text))
        })
}

/// The order of the merged list; for store rows it is exactly the SQL
/// order of `Store::run_page`, so the two sources merge without gaps.
fn compare(a: &Row, b: &Row, sort: Sort, descending: bool) -> Ordering {
    let direct = |ordering: Ordering| {
        if descending {
            ordering.reverse()
        } else {
            ordering
        }
    };
    let primary = match sort {
        Sort::Started => Ordering::Equal,
        Sort::Duration => direct(a.duration_ms.cmp(&b.duration_ms)),
        Sort::Status => direct(a.status.as_bytes().cmp(b.status.as_bytes())),
        Sort::Workflow => direct(
            a.workflow
                .as_deref()
                .unwrap_or("")
                .as_bytes()
                .cmp(b.workflow.as_deref().unwrap_or("").as_bytes()),
        ),
        Sort::Accuracy | Sort::Loss => {
            let value = |row: &Row| match sort {
                Sort::Accuracy => row.results.accuracy,
                _ => row.results.loss,
            };
            match (value(a), value(b)) {
                (Some(x), Some(y)) => direct(x.total_cmp(&y)),
                // Runs without the number go last, whatever the direction.
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (None, None) => Ordering::Equal,
            }
        }
    };
    let newest_first = |ordering: Ordering| match sort {
        Sort::Started => direct(ordering),
        _ => ordering.reverse(),
    };
    primary
        .then_with(|| newest_first(a.started_ms.cmp(&b.started_ms)))
        .then_with(|| b.from_store.cmp(&a.from_store))
        .then_with(|| newest_first(a.run_id.cmp(&b.run_id)))
        .then_with(|| a.key.cmp(&b.key))
}

/// The rows of one page.
pub fn runs_page(app: &App, query: &RunsQuery) -> PageResult<RunsPage> {
    let now_ms = attnflow_base::time::now_milliseconds();
    let folders: Arc<Vec<FolderRun>> = app.catalog.folders();
    let mut notice = None;
    let store = match app.workflow_stores.get(&app.store) {
        Ok(store) => Some(store),
        // A store that does not exist yet leaves the folders to list;
        // a locked or broken one is an error page.
        Err(error) if error.message.contains("does not exist") => {
            notice = Some(error.message);
            None
        }
        Err(error) => return Err(error),
    };
    let workflow_error =
        |error: attnflow_workflow::StoreError| crate::stores::workflow_error(&error);
    let workflows = match &store {
        Some(store) => store.workflow_counts().map_err(workflow_error)?,
        None => Vec::new(),
    };
    let trained_only = matches!(query.sort, Sort::Accuracy | Sort::Loss);
    // Rows held in memory: the folders outside the main store, or, to
    // sort by a training number, every folder.
    let linked_ids: Vec<i64> = folders.iter().filter_map(|folder| folder.linked).collect();
    let linked = match (&store, trained_only) {
        (Some(store), true) => store.run_summaries(&linked_ids).map_err(workflow_error)?,
        _ => Vec::new(),
    };
    let mut memory: Vec<Row> = folders
        .iter()
        .filter(|folder| trained_only || folder.linked.is_none() || store.is_none())
        .filter(|folder| !trained_only || folder.results != Results::default())
        .map(|folder| {
            let summary = match folder.linked {
                Some(id) => linked.iter().find(|run| run.id == id).cloned(),
                None => other_store_summary(app, folder),
            };
            folder_row(folder, summary.as_ref(), now_ms)
        })
        .filter(|row| matches(row, query))
        .collect();
    memory.sort_by(|a, b| compare(a, b, query.sort, query.descending));

    let filter = store_filter(app, query);
    let offset = (query.page - 1).saturating_mul(query.per_page);
    let (store_total, rows) = match (&store, &filter) {
        (Some(store), Some(filter)) if !trained_only => {
            let total = store.count_runs(filter).map_err(workflow_error)?;
            let order = match query.sort {
                Sort::Duration => RunOrder::Duration,
                Sort::Status => RunOrder::Status,
                Sort::Workflow => RunOrder::Workflow,
                _ => RunOrder::Started,
            };
            // Store rows at merged positions [offset, offset + per) lie at
            // store positions [offset - memory, offset + per).
            let start = offset.saturating_sub(memory.len() as u64);
            let page = store
                .run_page(
                    filter,
                    order,
                    query.descending,
                    start,
                    offset + query.per_page - start,
                )
                .map_err(workflow_error)?;
            let rows: Vec<Row> = page
                .iter()
                .map(|summary| {
                    let folder = folders
                        .iter()
                        .find(|folder| folder.linked == Some(summary.id));
                    store_row(summary, folder, app, now_ms)
                })
                .collect();
            (total, merge(rows, start, &memory, offset, query))
        }
        _ => (0, merge(Vec::new(), 0, &memory, offset, query)),
    };
    Ok(RunsPage {
        rows,
        total: store_total + memory.len() as u64,
        notice,
        workflows,
    })
}

/// The store's part of the filters; `None` when no store row can match.
fn store_filter(app: &App, query: &RunsQuery) -> Option<RunFilter> {
    let status = match query.status.as_deref() {
        None => None,
        Some(status) => Some(
            [
                RunStatus::Running,
                RunStatus::Succeeded,
                RunStatus::Failed,
                RunStatus::Crashed,
            ]
            .into_iter()
            .find(|known| known.as_str() == status)?,
        ),
    };
    let pipeline = Some(app.pipeline_workflow.clone());
    let (workflow, not_workflow) = match query.kind {
        Kind::All => (None, None),
        Kind::Pipeline => (pipeline, None),
        Kind::Workflow => (None, pipeline),
        Kind::Training => return None,
    };
    let workflow = match (workflow, &query.workflow) {
        (Some(kind), Some(asked)) if kind != *asked => return None,
        (kind, asked) => asked.clone().or(kind),
    };
    Some(RunFilter {
        status,
        workflow,
        not_workflow,
        text: query.text.clone(),
    })
}

/// Merges store rows (store positions from `start`) with the sorted
/// in-memory rows and keeps merged positions `[offset, offset + per)`.
fn merge(
    store_rows: Vec<Row>,
    start: u64,
    memory: &[Row],
    offset: u64,
    query: &RunsQuery,
) -> Vec<Row> {
    let end = offset + query.per_page;
    // Where the walk begins: at the first fetched store row, with the
    // memory rows that sort before it already counted.
    let (mut memory_index, mut position) = match store_rows.first() {
        Some(first) if start > 0 => {
            let before = memory
                .iter()
                .take_while(|row| {
                    compare(row, first, query.sort, query.descending) == Ordering::Less
                })
                .count();
            (before, start + before as u64)
        }
        _ => (0, 0),
    };
    let mut store_rows = store_rows.into_iter().peekable();
    let mut page = Vec::new();
    while position < end {
        let take_memory = match (store_rows.peek(), memory.get(memory_index)) {
            (None, None) => break,
            (None, Some(_)) => true,
            (Some(_), None) => false,
            (Some(stored), Some(held)) => {
                compare(held, stored, query.sort, query.descending) == Ordering::Less
            }
        };
        let row = if take_memory {
            memory_index += 1;
            memory[memory_index - 1].clone()
        } else {
            store_rows.next().expect("peeked")
        };
        if position >= offset {
            page.push(row);
        }
        position += 1;
    }
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(from_store: bool, id: i64, started_ms: i64, loss: Option<f64>) -> Row {
        Row {
            key: if from_store {
                format!("run-{id}")
            } else {
                format!("dir-{id:012}")
            },
            kind: if from_store { "workflow" } else { "training" },
            name: format!("r{id}"),
            workflow: from_store.then(|| "w".to_string()),
            run_id: from_store.then_some(id),
            status: "succeeded".into(),
            state: None,
            started_ms,
            duration_ms: id * 7 % 13,
            results: Results {
                loss,
                accuracy: None,
                steps: None,
            },
            from_store,
        }
    }

    fn query(sort: Sort, descending: bool, page: u64, per_page: u64) -> RunsQuery {
        RunsQuery {
            kind: Kind::All,
            status: None,
            workflow: None,
            text: None,
            sort,
            descending,
            page,
            per_page,
        }
    }

    /// Every page of the merge equals the same page of the whole list
    /// sorted at once, for every order, page size and page.
    #[test]
    fn merged_pages_equal_pages_of_the_fully_sorted_list() {
        let stored: Vec<Row> = (1..=37)
            .map(|id| row(true, id, 1000 + id * 10 % 170, None))
            .collect();
        let held: Vec<Row> = (1..=9)
            .map(|id| row(false, id, 1000 + id * 37 % 200, None))
            .collect();
        for sort in [Sort::Started, Sort::Duration, Sort::Status, Sort::Workflow] {
            for descending in [false, true] {
                let mut all: Vec<Row> = stored.iter().chain(&held).cloned().collect();
                all.sort_by(|a, b| compare(a, b, sort, descending));
                let mut sorted_store = stored.clone();
                sorted_store.sort_by(|a, b| compare(a, b, sort, descending));
                let mut memory = held.clone();
                memory.sort_by(|a, b| compare(a, b, sort, descending));
                for per_page in [1u64, 4, 10, 50] {
                    for page in 1..=(all.len() as u64 / per_page + 2) {
                        let query = query(sort, descending, page, per_page);
                        let offset = (page - 1) * per_page;
                        let start = offset.saturating_sub(memory.len() as u64);
                        let fetched: Vec<Row> = sorted_store
                            .iter()
                            .skip(start as usize)
                            .take((offset + per_page - start) as usize)
                            .cloned()
                            .collect();
                        let merged = merge(fetched, start, &memory, offset, &query);
                        let expected: Vec<&str> = all
                            .iter()
                            .skip(offset as usize)
                            .take(per_page as usize)
                            .map(|row| row.key.as_str())
                            .collect();
                        let got: Vec<&str> = merged.iter().map(|row| row.key.as_str()).collect();
                        assert_eq!(
                            got, expected,
                            "{sort:?} desc={descending} per={per_page} page={page}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn runs_without_a_loss_sort_last_in_both_directions() {
        let rows = [
            row(false, 1, 5, Some(0.5)),
            row(false, 2, 6, None),
            row(false, 3, 7, Some(0.1)),
        ];
        for descending in [false, true] {
            let mut sorted = rows.to_vec();
            sorted.sort_by(|a, b| compare(a, b, Sort::Loss, descending));
            assert_eq!(sorted[2].key, rows[1].key);
        }
    }

    #[test]
    fn unknown_filter_values_are_refused_by_name() {
        let error = RunsQuery::parse(&Params::parse(b"status=<b>")).unwrap_err();
        assert_eq!(error.status, axum::http::StatusCode::BAD_REQUEST);
        assert!(error.message.contains("status"));
        assert!(RunsQuery::parse(&Params::parse(b"per=0")).is_err());
        assert!(RunsQuery::parse(&Params::parse(b"page=-1")).is_err());
        let query = RunsQuery::parse(&Params::parse(b"sort=loss&kind=training")).unwrap();
        assert_eq!(
            (query.sort, query.kind, query.descending),
            (Sort::Loss, Kind::Training, false)
        );
    }
}
