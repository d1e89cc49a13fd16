//! The main job of attnflow: the paper's figure 3 pipeline, end to end.
//!
//! Data ingestion -> quality check -> (valid) processing queue -> model
//! training -> validation -> output generation -> storage, with invalid
//! records sent to quarantine (error handling). The steps run as a durable
//! workflow of `attnflow-workflow` (figure 2's retry loop included), so every
//! transition is recorded in the SQLite store and a killed run resumes from
//! its last recorded state and last training checkpoint.
//!
//! A run lives in one folder:
//!
//! ```text
//! RUN/
//!   inputs/          the spec, schema, blueprint and data as given (the default run writes them)
//!   run.json         which workflow run and store this folder belongs to
//!   data/            ingested copies of the sources; pairs.jsonl, the accepted records
//!   data.sqlite      the run's processing queue and quarantine (attnflow-data)
//!   quality.json     the quality check: read = accepted + quarantined, reasons
//!   training/        checkpoints, metrics, gradient norms (attnflow-train)
//!   training.json    the training report
//!   validation.json  the validation verdict
//!   report.html      everything above in one self-contained page
//!   manifest.json    the artifacts, written last
//! ```

pub mod default_data;
mod error;
mod folder;
mod manifest;
mod report;
pub mod spec;
mod steps;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use error::{PipelineError, Result};
pub use folder::{files, Validation};
pub use manifest::{Artifact, Manifest, Mismatch};
pub use spec::PipelineSpec;
pub use steps::{register_tasks, StepEvent};

/// The workflow store runs share unless told otherwise.
pub const DEFAULT_STORE: &str = "attnflow-runs/attnflow.sqlite";

/// Rows of valid records in the default dataset.
pub const DEFAULT_ROWS: usize = 6000;

/// Where a run folder records what it belongs to.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunFile {
    /// The workflow run id in the store.
    pub workflow_run: i64,
    /// The SQLite store holding the run's history, queue and quarantine.
    pub store: PathBuf,
    /// The pipeline spec the run uses.
    pub spec: PathBuf,
}

/// How a pipeline run ended.
#[derive(Clone, Debug, Serialize)]
pub struct RunOutcome {
    /// The run folder.
    pub run_dir: PathBuf,
    /// The workflow run id.
    pub workflow_run: i64,
    /// The workflow store that records the run.
    pub store: PathBuf,
    /// The final workflow state (`Completed`, `Rejected`, `Abandoned`, ...).
    pub state: String,
    /// Whether the run ended in a success state.
    pub succeeded: bool,
    /// The report, when one was written.
    pub report: Option<PathBuf>,
}

/// A run left for the workers (`attnflow run --submit`).
#[derive(Clone, Debug, Serialize)]
pub struct Submitted {
    /// The run folder the workers write to.
    pub run_dir: PathBuf,
    /// The workflow run id.
    pub workflow_run: i64,
    /// The workflow store the workers claim from (password hidden).
    pub store: PathBuf,
    /// The queues whose workers the run needs.
    pub queues: Vec<String>,
}

/// Where to put a run and how to show progress.
pub struct RunOptions<'a> {
    /// The run folder (must not exist or be empty).
    pub run_dir: PathBuf,
    /// The SQLite store of workflow history (shared by runs, so the Markov
    /// analysis sees them all; [`DEFAULT_STORE`] when `None`). Each run's
    /// data queue and quarantine live in its own folder (`data.sqlite`). On
    /// resume, `None` keeps the store the run folder records.
    pub store: Option<PathBuf>,
    /// Called for every transition and attempt, and for training progress.
    pub observer: Box<dyn FnMut(&StepEvent) + Send + 'a>,
    /// Show a training progress bar.
    pub progress_bar: bool,
}

/// Writes the embedded default pipeline (spec, schema, blueprint and a
/// generated dataset with a few broken records) into `directory` and
/// returns the spec's path.
pub fn write_default_inputs(directory: &Path, rows: usize) -> Result<PathBuf> {
    std::fs::create_dir_all(directory).map_err(|source| PipelineError::io(directory, source))?;
    let files = [
        ("pipeline.toml", spec::embedded::PIPELINE.to_string()),
        ("schema.toml", spec::embedded::SCHEMA.to_string()),
        ("blueprint.toml", spec::embedded::BLUEPRINT.to_string()),
        ("reverse.csv", default_data::reverse_csv(rows, 7)),
    ];
    for (name, text) in files {
        folder::write_atomically(&directory.join(name), text.as_bytes())?;
    }
    Ok(directory.join("pipeline.toml"))
}

/// Starts a new run of the pipeline in `spec_path` and drives it to a
/// terminal state.
pub fn start(spec_path: &Path, options: RunOptions<'_>) -> Result<RunOutcome> {
    steps::start(spec_path, options)
}

/// Creates a run of the pipeline in `spec_path` without executing it: the
/// workers of its store (`attnflow worker`) claim and drive it; Training
/// goes to the spec's `train.queue`.
pub fn submit(spec_path: &Path, options: RunOptions<'_>) -> Result<Submitted> {
    steps::submit(spec_path, options)
}

/// Continues the run in `run_dir` (after a crash or a kill) from its last
/// recorded state; training continues from its last checkpoint.
pub fn resume(run_dir: &Path, options: RunOptions<'_>) -> Result<RunOutcome> {
    steps::resume(run_dir, options)
}
