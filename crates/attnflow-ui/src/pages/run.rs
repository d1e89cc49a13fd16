//! A run: what it is and how it went, its report, its training curves, its
//! manifest with every artifact's size and SHA-256 (downloads for exactly
//! those files), its workflow steps and event log, and, while it runs,
//! live progress.

use attnflow_pipeline::{files as run_files, Manifest};
use attnflow_train::trainer::METRICS_FILE;
use attnflow_train::StepMetrics;
use attnflow_workflow::store::{EventRecord, RunRecord, StepRecord};
use maud::{html, Markup};

use crate::app::App;
use crate::catalog::{last_line, read_json, FolderRun, Training};
use crate::curves::{charts, read_curves};
use crate::error::PageResult;
use crate::html::{
    bytes, drawn_svg, duration, file_href, href, number, page, percent, status_badge, when, Frame,
};
use crate::query::Params;
use crate::resolve::{resolve, RunRef};
use crate::stores::workflow_error;

/// Events shown at most; the rest are counted.
const EVENTS_SHOWN: usize = 2000;

struct History {
    run: RunRecord,
    steps: Vec<StepRecord>,
    events: Vec<EventRecord>,
}

fn history(app: &App, run: &RunRef) -> PageResult<Option<History>> {
    let Some((location, id)) = &run.workflow else {
        return Ok(None);
    };
    let store = app.workflow_stores.get(location)?;
    let record = store.run(*id).map_err(|error| workflow_error(&error))?;
    let steps = store.steps(*id).map_err(|error| workflow_error(&error))?;
    let events = store.events(*id).map_err(|error| workflow_error(&error))?;
    Ok(Some(History {
        run: record,
        steps,
        events,
    }))
}

fn summary(run: &RunRef, history: Option<&History>, folder: Option<&FolderRun>) -> Markup {
    let now = attnflow_base::time::now_milliseconds();
    html! {
        dl.facts {
            @if let Some(folder) = folder {
                dt { "folder" } dd { code { (folder.path.display()) } }
                dt { "kind" } dd { (folder.kind.name()) }
                @if let Some(problem) = &folder.problem { dt { "problem" } dd.error { (problem) } }
            }
            @if let Some(history) = history {
                @let record = &history.run;
                dt { "workflow run" } dd { (record.id) " of " code { (record.workflow) } }
                dt { "status" } dd { (status_badge(record.status.as_str())) " in state " code { (record.current_state) } }
                dt { "started" } dd { (when(Some(record.created_ms))) " UTC" }
                dt { "finished" } dd { (when(record.finished_ms)) }
                dt { "duration" } dd { (duration(record.finished_ms.unwrap_or(now) - record.created_ms)) }
                dt { "executor crashes" } dd { (record.crash_count) }
            } @else if let Some(folder) = folder {
                dt { "started" } dd { (when(Some(folder.started_ms))) " UTC" }
                dt { "finished" } dd { (when(folder.finished_ms)) }
            }
            @if let Some(folder) = folder {
                dt { "steps trained" } dd { (folder.results.steps.map_or_else(|| "-".to_owned(), |steps| steps.to_string())) }
                dt { "accuracy" } dd { (percent(folder.results.accuracy)) }
                dt { "loss" } dd { (number(folder.results.loss, 4)) }
            }
            dt { "key" } dd { code { (run.key) } }
        }
    }
}

fn live(run: &RunRef, folder: Option<&FolderRun>) -> Markup {
    let latest: Option<StepMetrics> =
        folder.and_then(|folder| last_line(&folder.training_dir.join(METRICS_FILE)));
    html! {
        section #live data-live={ "/runs/" (run.key) "/live" } {
            h2 { "Live" }
            p {
                "step " span data-field="step" { (latest.as_ref().map_or_else(|| "-".to_owned(), |step| step.step.to_string())) }
                " · loss " span data-field="loss" { (number(latest.as_ref().map(|step| step.loss), 4)) }
                " · tokens/s " span data-field="tokens_per_second" { (number(latest.as_ref().map(|step| step.tokens_per_second), 0)) }
                " · state " span data-field="state" { "-" }
            }
            noscript { p.hint { "Reload the page to see newer numbers (live updates need JavaScript)." } }
        }
    }
}

fn manifest_section(run: &RunRef, folder: &FolderRun, verify: bool) -> Markup {
    let path = folder.path.join(run_files::MANIFEST);
    if !path.is_file() {
        return html! {
            section #manifest {
                h2 { "Manifest" }
                p { "No manifest yet: the Storage step writes it last, and files can be downloaded once it lists them." }
            }
        };
    }
    let manifest: Manifest = match read_json(&path) {
        Ok(manifest) => manifest,
        Err(error) => return html! { section #manifest { h2 { "Manifest" } p.error { (error) } } },
    };
    let problems = if verify {
        manifest.verify(&folder.path)
    } else {
        Vec::new()
    };
    let total: u64 = manifest
        .artifacts
        .iter()
        .map(|artifact| artifact.bytes)
        .sum();
    html! {
        section #manifest {
            h2 { "Manifest" }
            p {
                (manifest.artifacts.len()) " files, " (bytes(total)) ". The data store "
                code { (manifest.data_store.display()) } " stays live (a re-check changes it), so it is named, not hashed. "
                @if verify {
                    @if problems.is_empty() {
                        strong.ok { "Every file matches its size and SHA-256." }
                    } @else {
                        strong.bad { (problems.len()) " files differ from the manifest." }
                    }
                } @else {
                    a href={ "/runs/" (run.key) "?verify=1#manifest" } { "Verify every hash" }
                }
            }
            table.manifest {
                thead { tr { th { "file" } th { "size" } th { "SHA-256" } @if verify { th { "check" } } } }
                tbody {
                    @for artifact in &manifest.artifacts {
                        tr {
                            td { a href=(file_href(&run.key, &artifact.file)) download[!artifact.file.ends_with(".html")] { (artifact.file) } }
                            td.number { (bytes(artifact.bytes)) }
                            td { code.hash { (artifact.sha256) } }
                            @if verify {
                                @match problems.iter().find(|problem| problem.file == artifact.file) {
                                    Some(problem) => td.bad { (problem.problem) },
                                    None => td.ok { "ok" },
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn workflow_section(history: &History) -> Markup {
    html! {
        section #steps {
            h2 { "Steps" }
            table {
                thead { tr { th { "#" } th { "state" } th { "attempts" } th { "outcome" } th { "next" } th { "started" } th { "took" } } }
                tbody {
                    @for step in &history.steps {
                        tr {
                            td.number { (step.seq) }
                            td { (step.state) }
                            td.number { (step.attempt) }
                            td { (step.outcome.as_deref().or(step.last_outcome.as_deref()).unwrap_or("-")) }
                            td { (step.next_state.as_deref().unwrap_or("-")) }
                            td { (when(Some(step.started_ms))) }
                            td.number { (step.finished_ms.map_or_else(|| "-".to_owned(), |end| duration(end - step.started_ms))) }
                        }
                    }
                }
            }
        }
        section #events {
            h2 { "Event log" }
            p { (history.events.len()) " events, append-only, numbered without gaps." }
            table.events {
                thead { tr { th { "#" } th { "at (UTC)" } th { "event" } th { "step" } th { "state" } th { "attempt" } th { "outcome" } th { "to" } th { "detail" } } }
                tbody {
                    @for event in history.events.iter().take(EVENTS_SHOWN) {
                        tr {
                            td.number { (event.seq) }
                            td { (when(Some(event.at_ms))) }
                            td { (event.kind.as_str()) }
                            td.number { (event.step.map_or_else(String::new, |step| step.to_string())) }
                            td { (event.state.as_deref().unwrap_or("")) }
                            td.number { (event.attempt.map_or_else(String::new, |attempt| attempt.to_string())) }
                            td { (event.outcome.as_deref().unwrap_or("")) }
                            td { (event.to_state.as_deref().unwrap_or("")) }
                            td.detail { (event.detail) }
                        }
                    }
                }
            }
            @if history.events.len() > EVENTS_SHOWN {
                p.hint { (history.events.len() - EVENTS_SHOWN) " later events not shown." }
            }
        }
    }
}

/// The page of run `key`.
pub fn render(app: &App, key: &str, params: &Params, frame: &Frame) -> PageResult<Markup> {
    let run = resolve(app, key)?;
    let history = history(app, &run)?;
    let folder = run.folder.as_ref();
    let running = history
        .as_ref()
        .is_some_and(|history| history.run.status.as_str() == "running")
        || folder.is_some_and(|folder| folder.training == Training::Running);
    let title = folder.map_or_else(
        || {
            history.as_ref().map_or_else(
                || key.to_owned(),
                |history| format!("Run {} of {}", history.run.id, history.run.workflow),
            )
        },
        |folder| folder.name.clone(),
    );
    let curves = folder.map(|folder| read_curves(&folder.name, &folder.training_dir));
    let report_listed = folder.is_some_and(|folder| {
        read_json::<Manifest>(&folder.path.join(run_files::MANIFEST)).is_ok_and(|manifest| {
            manifest
                .artifacts
                .iter()
                .any(|artifact| artifact.file == run_files::REPORT)
        })
    });
    let has_quarantine =
        folder.is_some_and(|folder| folder.path.join(run_files::DATA_STORE).is_file());
    let body = html! {
        (summary(&run, history.as_ref(), folder))
        p.actions {
            @if has_quarantine {
                a href=(href("/quarantine", &[("store", &run.key)])) { "Quarantine of this run" }
                " · "
            }
            @if let Some(history) = &history {
                a href=(href("/workflow", &[("name", &history.run.workflow)])) { "Workflow analysis" }
            }
        }
        @if running { (live(&run, folder)) }
        @if report_listed {
            section #report {
                h2 { "Report" }
                p { a href=(file_href(&run.key, run_files::REPORT)) { "Open the report on its own page" } }
                iframe.report src=(file_href(&run.key, run_files::REPORT)) sandbox="allow-scripts" title="the run's report" {}
            }
        }
        @if let Some(curves) = curves.as_ref().filter(|curves| !curves.steps.is_empty()) {
            section #curves {
                h2 { "Training" }
                @if curves.unreadable_lines > 0 {
                    p.hint { (curves.unreadable_lines) " log lines could not be read (a line being written, or damage)." }
                }
                @for chart in charts(std::slice::from_ref(curves)) {
                    figure.chart id=(chart.id) data-series=(chart.chart.series.len()) {
                        figcaption { strong { (chart.chart.title) } " " (chart.chart.caption) }
                        (drawn_svg(chart.chart.svg()))
                    }
                }
            }
        }
        @if let Some(folder) = folder { (manifest_section(&run, folder, params.get("verify") == Some("1"))) }
        @if let Some(history) = &history { (workflow_section(history)) }
    };
    Ok(page(&title, "/", frame, body))
}
