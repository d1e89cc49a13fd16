//! Errors of the pipeline, each naming the file or step at fault.

use std::path::{Path, PathBuf};

/// What can stop a pipeline before its workflow decides.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The pipeline spec is malformed.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Spec {
        /// The spec file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// A referenced input (schema, blueprint) is malformed.
    #[error("{0}")]
    Input(String),
    /// The run folder is not usable (exists, or is not a run).
    #[error("{}: {message}", path.display())]
    RunFolder {
        /// The folder.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The workflow engine failed (store, lease, ...).
    #[error("workflow: {0}")]
    Workflow(String),
}

impl PipelineError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// Whether the fault is in the user's input (exit 2) rather than the work.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            Self::Spec { .. } | Self::Input(_) | Self::RunFolder { .. }
        )
    }
}

/// The result type of this crate.
pub type Result<T> = std::result::Result<T, PipelineError>;
