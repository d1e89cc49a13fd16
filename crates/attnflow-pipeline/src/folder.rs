//! A run folder: the names of what each step leaves there, what every step
//! knows about its run, and the atomic reads and writes of its files.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::spec::PipelineSpec;
use crate::{PipelineError, Result};

/// The names of the files and folders inside a run folder, relative to it.
pub mod files {
    /// Which workflow run and store the folder belongs to.
    pub const RUN: &str = "run.json";
    /// The inputs as given (the default run writes them here).
    pub const INPUTS: &str = "inputs";
    /// Ingested copies of the sources, and the accepted records.
    pub const DATA: &str = "data";
    /// The accepted records as training reads them.
    pub const PAIRS: &str = "data/pairs.jsonl";
    /// The quality check's report (`attnflow_data::run::CheckReport`).
    pub const QUALITY: &str = "quality.json";
    /// The data profile (`attnflow_data::profile::ProfileReport`).
    pub const PROFILE: &str = "profile.json";
    /// The run's processing queue and quarantine (SQLite).
    pub const DATA_STORE: &str = "data.sqlite";
    /// Checkpoints, metrics and gradient norms of training.
    pub const TRAINING_DIR: &str = "training";
    /// The training report (`attnflow_train::TrainReport`).
    pub const TRAINING: &str = "training.json";
    /// The validation verdict ([`super::Validation`]).
    pub const VALIDATION: &str = "validation.json";
    /// The self-contained report.
    pub const REPORT: &str = "report.html";
    /// Every artifact with its size and SHA-256, written last
    /// ([`crate::Manifest`]).
    pub const MANIFEST: &str = "manifest.json";
}

/// The validation verdict written by the Validation step.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Validation {
    /// Exact-sequence accuracy on held-out records.
    pub sequence_accuracy: f64,
    /// Per-token accuracy on held-out records.
    pub token_accuracy: f64,
    /// The threshold from the spec.
    pub threshold: f64,
    /// Whether the threshold was met.
    pub passed: bool,
    /// The checkpoint step that was validated.
    pub step: u64,
}

/// What every task knows: the run folder, its spec and its store.
pub(crate) struct Context {
    pub run_dir: PathBuf,
    pub spec_path: PathBuf,
    pub spec: PipelineSpec,
    pub store: PathBuf,
    pub progress_bar: bool,
}

impl Context {
    /// A path of the spec, resolved against the spec's folder.
    pub fn input(&self, relative: &Path) -> PathBuf {
        match self.spec_path.parent() {
            Some(folder) if relative.is_relative() => folder.join(relative),
            _ => relative.to_path_buf(),
        }
    }

    /// A file of the run folder.
    pub fn file(&self, name: &str) -> PathBuf {
        self.run_dir.join(name)
    }
}

/// Reads a JSON file the run wrote earlier, through its own type.
pub(crate) fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|source| PipelineError::io(path, source))?;
    serde_json::from_str(&text).map_err(|error| PipelineError::RunFolder {
        path: path.to_path_buf(),
        message: format!("is damaged: {error}"),
    })
}

/// Writes a run file as pretty JSON, atomically.
pub(crate) fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    // Run files hold plain numbers and strings: encoding cannot fail.
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    write_atomically(path, text.as_bytes())
}

/// Writes a run file atomically (`attnflow_base::write_atomically`).
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    attnflow_base::write_atomically(path, bytes).map_err(|source| PipelineError::io(path, source))
}
