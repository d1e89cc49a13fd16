//! Pages of runs for listings such as the web app's: only the columns a
//! list shows (never the spec text), filtered, sorted and paged in SQL, so
//! a store of any size answers with one short query per page.

use std::sync::Arc;
use std::time::Duration;

use attnflow_store::{args, Backend, Connection, DbError, Location, Row};
use serde::Serialize;

use super::{schema, RunStatus, Store, StoreError, SystemClock, SQLITE_SETUP};

/// Which runs a listing shows. Every condition given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunFilter {
    /// Only runs with this status.
    pub status: Option<RunStatus>,
    /// Only runs of this workflow.
    pub workflow: Option<String>,
    /// Only runs not of this workflow.
    pub not_workflow: Option<String>,
    /// Only runs whose workflow or current state contains this text
    /// (ASCII letters compared without case).
    pub text: Option<String>,
}

/// The order of a listing; ties are broken by the newest start, then the
/// highest id, so every order is total and pages never overlap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOrder {
    /// By start time (`created_ms`).
    Started,
    /// By how long the run took, or has taken so far when unfinished.
    Duration,
    /// By status name.
    Status,
    /// By workflow name.
    Workflow,
    /// By current state name.
    State,
}

/// What a listing shows of one run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunSummary {
    /// Run id.
    pub id: i64,
    /// Workflow name.
    pub workflow: String,
    /// Lifecycle status.
    pub status: RunStatus,
    /// The state the run is in.
    pub current_state: String,
    /// Executor crashes counted.
    pub crash_count: i64,
    /// When the run was created (ms since the Unix epoch).
    pub created_ms: i64,
    /// When it last changed.
    pub updated_ms: i64,
    /// When it reached a terminal state.
    pub finished_ms: Option<i64>,
}

impl RunSummary {
    /// How long the run took, or has taken until `now_ms` when unfinished.
    pub fn duration_ms(&self, now_ms: i64) -> i64 {
        self.finished_ms.unwrap_or(now_ms) - self.created_ms
    }
}

const SUMMARY_COLUMNS: &str =
    "id, workflow, status, current_state, crash_count, created_ms, updated_ms, finished_ms";

/// Parameters ?1 .. ?4 of [`WHERE`]: status, workflow, not-workflow, pattern.
const WHERE: &str = "(CAST(?1 AS TEXT) IS NULL OR status = ?1) \
     AND (CAST(?2 AS TEXT) IS NULL OR workflow = ?2) \
     AND (CAST(?3 AS TEXT) IS NULL OR workflow <> ?3) \
     AND (CAST(?4 AS TEXT) IS NULL OR LOWER(workflow) LIKE ?4 ESCAPE '!' OR LOWER(current_state) LIKE ?4 ESCAPE '!')";

/// `%text%` for LIKE, with the pattern characters of `text` escaped by `!`.
fn like_pattern(text: &str) -> String {
    let mut pattern = String::from("%");
    for character in text.to_ascii_lowercase().chars() {
        if matches!(character, '%' | '_' | '!') {
            pattern.push('!');
        }
        pattern.push(character);
    }
    pattern.push('%');
    pattern
}

fn summary_from_row(row: &Row) -> Result<RunSummary, DbError> {
    let status = row.text(2)?;
    Ok(RunSummary {
        id: row.i64(0)?,
        workflow: row.text(1)?,
        status: RunStatus::parse(&status).ok_or_else(|| DbError::Value {
            store: String::new(),
            operation: "read a run summary".into(),
            column: 2,
            message: format!("unknown run status `{status}`"),
        })?,
        current_state: row.text(3)?,
        crash_count: row.i64(4)?,
        created_ms: row.i64(5)?,
        updated_ms: row.i64(6)?,
        finished_ms: row.opt_i64(7)?,
    })
}

impl Store {
    /// Opens an existing store for reading (the web app): nothing is
    /// created or migrated, the workflow tables must be at this build's
    /// version, and another process's lock is waited for at most `busy`.
    pub fn open_existing(location: &Location, busy: Duration) -> Result<Store, StoreError> {
        let connection = Connection::open_existing(location, SQLITE_SETUP, busy)?;
        schema::COMPONENT.check_current(&connection)?;
        Ok(Store {
            connection,
            location: Some(location.clone()),
            clock: Arc::new(SystemClock),
        })
    }

    /// How many runs match `filter`.
    pub fn count_runs(&self, filter: &RunFilter) -> Result<u64, StoreError> {
        let pattern = filter.text.as_deref().map(like_pattern);
        let count = self.connection.query_i64(
            "count runs",
            &format!("SELECT COUNT(*) FROM wf_runs WHERE {WHERE}"),
            args![
                filter.status.map(RunStatus::as_str),
                filter.workflow.as_deref(),
                filter.not_workflow.as_deref(),
                pattern.as_deref()
            ],
        )?;
        Ok(count.max(0) as u64)
    }

    /// At most `limit` runs matching `filter`, after skipping `offset`, in
    /// `order` (ascending unless `descending`). Text orders compare bytes
    /// on both backends, as Rust's `str` does, so a caller can merge pages
    /// with rows of its own.
    pub fn run_page(
        &self,
        filter: &RunFilter,
        order: RunOrder,
        descending: bool,
        offset: u64,
        limit: u64,
    ) -> Result<Vec<RunSummary>, StoreError> {
        let bytes = match self.connection.backend() {
            Backend::Sqlite => "",
            Backend::Postgres => " COLLATE \"C\"",
        };
        let direction = if descending { "DESC" } else { "ASC" };
        let key = match order {
            RunOrder::Started => String::new(),
            RunOrder::Duration => format!("duration_ms {direction}, "),
            RunOrder::Status => format!("status{bytes} {direction}, "),
            RunOrder::Workflow => format!("workflow{bytes} {direction}, "),
            RunOrder::State => format!("current_state{bytes} {direction}, "),
        };
        // Ties go newest first, except in the start order itself.
        let tie = match order {
            RunOrder::Started => direction,
            _ => "DESC",
        };
        let pattern = filter.text.as_deref().map(like_pattern);
        // The duration is selected, not only ordered by, so that ?7 (now)
        // is referenced whatever the order.
        let sql = format!(
            "SELECT {SUMMARY_COLUMNS}, COALESCE(finished_ms, ?7) - created_ms AS duration_ms \
             FROM wf_runs WHERE {WHERE} \
             ORDER BY {key}created_ms {tie}, id {tie} LIMIT ?5 OFFSET ?6"
        );
        let mut runs = Vec::new();
        self.connection.for_each(
            "list runs",
            &sql,
            args![
                filter.status.map(RunStatus::as_str),
                filter.workflow.as_deref(),
                filter.not_workflow.as_deref(),
                pattern.as_deref(),
                limit.min(i64::MAX as u64) as i64,
                offset.min(i64::MAX as u64) as i64,
                self.now_ms()
            ],
            |row| {
                runs.push(summary_from_row(row)?);
                Ok::<(), DbError>(())
            },
        )?;
        Ok(runs)
    }

    /// The summaries of the runs with these ids (those that exist), in id
    /// order.
    pub fn run_summaries(&self, ids: &[i64]) -> Result<Vec<RunSummary>, StoreError> {
        // One statement text for any number of ids (prepared once): ids
        // go in fixed-size groups, padded with 0, which no run has.
        const GROUP: usize = 32;
        let placeholders: Vec<String> = (1..=GROUP).map(|index| format!("?{index}")).collect();
        let sql = format!(
            "SELECT {SUMMARY_COLUMNS} FROM wf_runs WHERE id IN ({}) ORDER BY id",
            placeholders.join(", ")
        );
        let mut sorted = ids.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let mut runs = Vec::with_capacity(sorted.len());
        for group in sorted.chunks(GROUP) {
            let mut padded = group.to_vec();
            padded.resize(GROUP, 0);
            let params: Vec<attnflow_store::Value<'_>> =
                padded.iter().map(|&id| id.into()).collect();
            self.connection
                .for_each("read run summaries", &sql, &params, |row| {
                    runs.push(summary_from_row(row)?);
                    Ok::<(), DbError>(())
                })?;
        }
        Ok(runs)
    }

    /// Every workflow name with its number of runs, by name.
    pub fn workflow_counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let rows = self.connection.query(
            "count runs by workflow",
            "SELECT workflow, COUNT(*) FROM wf_runs GROUP BY workflow ORDER BY workflow",
            &[],
        )?;
        Ok(rows
            .iter()
            .map(|row| Ok((row.text(0)?, row.i64(1)?.max(0) as u64)))
            .collect::<Result<Vec<_>, DbError>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Spec;

    fn store_with_runs(count: usize) -> (tempfile::TempDir, Store) {
        let directory = tempfile::tempdir().unwrap();
        let mut store = Store::open(&directory.path().join("runs.sqlite")).unwrap();
        let spec = Spec::default_spec();
        for _ in 0..count {
            store.create_run(&spec).unwrap();
        }
        (directory, store)
    }

    #[test]
    fn pages_are_disjoint_and_cover_every_run_in_order() {
        let (_directory, store) = store_with_runs(23);
        let filter = RunFilter::default();
        assert_eq!(store.count_runs(&filter).unwrap(), 23);
        for order in [
            RunOrder::Started,
            RunOrder::Duration,
            RunOrder::Status,
            RunOrder::Workflow,
            RunOrder::State,
        ] {
            for descending in [false, true] {
                let mut seen = Vec::new();
                for page in 0..5 {
                    seen.extend(
                        store
                            .run_page(&filter, order, descending, page * 5, 5)
                            .unwrap()
                            .into_iter()
                            .map(|run| run.id),
                    );
                }
                let mut sorted = seen.clone();
                sorted.sort_unstable();
                sorted.dedup();
                assert_eq!(sorted.len(), 23, "{order:?} {descending}: {seen:?}");
            }
        }
        let newest = store
            .run_page(&filter, RunOrder::Started, true, 0, 3)
            .unwrap();
        assert_eq!(
            newest.iter().map(|run| run.id).collect::<Vec<_>>(),
            [23, 22, 21]
        );
    }

    #[test]
    fn filters_match_status_workflow_and_escaped_text() {
        let (_directory, store) = store_with_runs(4);
        let running = RunFilter {
            status: Some(RunStatus::Running),
            ..RunFilter::default()
        };
        assert_eq!(store.count_runs(&running).unwrap(), 4);
        let failed = RunFilter {
            status: Some(RunStatus::Failed),
            ..RunFilter::default()
        };
        assert_eq!(store.count_runs(&failed).unwrap(), 0);
        let name = store.run(1).unwrap().workflow;
        let by_text = RunFilter {
            text: Some(name.to_ascii_uppercase()),
            ..RunFilter::default()
        };
        assert_eq!(store.count_runs(&by_text).unwrap(), 4);
        let wildcard = RunFilter {
            text: Some("%".into()),
            ..RunFilter::default()
        };
        assert_eq!(
            store.count_runs(&wildcard).unwrap(),
            0,
            "a % in the text is a character, not a wildcard"
        );
        let other = RunFilter {
            not_workflow: Some(name.clone()),
            ..RunFilter::default()
        };
        assert_eq!(store.count_runs(&other).unwrap(), 0);
        assert_eq!(store.workflow_counts().unwrap(), [(name, 4)]);
        let summaries = store.run_summaries(&[3, 1, 99, 3]).unwrap();
        assert_eq!(
            summaries.iter().map(|run| run.id).collect::<Vec<_>>(),
            [1, 3]
        );
    }
}
