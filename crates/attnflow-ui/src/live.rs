//! Live progress of a running run as server-sent events: every half
//! second the newest line of its training log and its workflow state are
//! read, and a `progress` event goes out when they changed; a `done` event
//! ends the stream once the run has finished.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use attnflow_train::trainer::METRICS_FILE;
use attnflow_train::StepMetrics;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::app::App;
use crate::catalog::{last_line, Training};
use crate::resolve::{resolve, RunRef};

/// How often the run is looked at.
pub const POLL: Duration = Duration::from_millis(500);

/// How long one stream lasts; the browser reconnects after it ends.
pub const LIFETIME: Duration = Duration::from_secs(600);

/// What one event says.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    /// The newest logged step.
    pub step: Option<u64>,
    /// Its loss.
    pub loss: Option<f64>,
    /// Its throughput.
    pub tokens_per_second: Option<f64>,
    /// The workflow state.
    pub state: Option<String>,
    /// `running`, `succeeded`, `failed`, `crashed`, or `stopped`.
    pub status: String,
    /// Whether nothing more will change.
    pub finished: bool,
}

/// The run as it is now.
pub fn snapshot(app: &App, run: &RunRef) -> Snapshot {
    // Folders are rescanned every two seconds; the run's own key finds
    // its current record.
    let folder = resolve(app, &run.key)
        .ok()
        .and_then(|run| run.folder)
        .or_else(|| run.folder.clone());
    let step: Option<StepMetrics> = folder
        .as_ref()
        .and_then(|folder| last_line(&folder.training_dir.join(METRICS_FILE)));
    let summary = run.workflow.as_ref().and_then(|(location, id)| {
        let store = app.workflow_stores.get(location).ok()?;
        store.run_summaries(&[*id]).ok()?.into_iter().next()
    });
    let (status, state) = match (&summary, &folder) {
        (Some(summary), _) => (
            summary.status.as_str().to_owned(),
            Some(summary.current_state.clone()),
        ),
        (None, Some(folder)) => (
            match folder.training {
                Training::Running => "running",
                Training::Finished => "succeeded",
                _ => "stopped",
            }
            .to_owned(),
            None,
        ),
        (None, None) => ("stopped".to_owned(), None),
    };
    Snapshot {
        step: step.as_ref().map(|step| step.step),
        loss: step.as_ref().map(|step| step.loss),
        tokens_per_second: step.as_ref().map(|step| step.tokens_per_second),
        state,
        finished: status != "running",
        status,
    }
}

struct Watch {
    app: Arc<App>,
    run: RunRef,
    last: Option<Snapshot>,
    started: Instant,
    done: bool,
}

/// The event stream of `run`.
pub fn stream(app: Arc<App>, run: RunRef) -> Response {
    let watch = Watch {
        app,
        run,
        last: None,
        started: Instant::now(),
        done: false,
    };
    let events = futures_util::stream::unfold(watch, |mut watch| async move {
        if watch.done || watch.started.elapsed() > LIFETIME {
            return None;
        }
        loop {
            if watch.last.is_some() {
                tokio::time::sleep(POLL).await;
            }
            let (app, run) = (watch.app.clone(), watch.run.clone());
            let now = tokio::task::spawn_blocking(move || snapshot(&app, &run))
                .await
                .ok()?;
            if watch.last.as_ref() == Some(&now) {
                if watch.started.elapsed() > LIFETIME {
                    return None;
                }
                continue;
            }
            let data = serde_json::to_string(&now).unwrap_or_default();
            let name = if now.finished { "done" } else { "progress" };
            watch.done = now.finished;
            watch.last = Some(now);
            let event = Event::default()
                .event(name)
                .data(data)
                .retry(Duration::from_secs(2));
            return Some((Ok::<Event, Infallible>(event), watch));
        }
    });
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}
