//! Errors of the pipeline. Each library's error is kept whole (`#[from]`),
//! so its class decides the exit code: a training I/O failure is a failure
//! of the work, a malformed schema is bad input.

use std::path::{Path, PathBuf};

use attnflow_base::{Classified, Fault};

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
    /// The run folder is not usable (exists, or is not a run, or a file
    /// in it is damaged).
    #[error("{}: {message}", path.display())]
    RunFolder {
        /// The folder or file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The data's schema accepts records training cannot read.
    #[error("{}: {message}", schema.display())]
    Schema {
        /// The schema file.
        schema: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The blueprint is malformed.
    #[error(transparent)]
    Blueprint(Box<attnflow_blueprint::Error>),
    /// The data check failed (a malformed schema, an unreadable store).
    #[error(transparent)]
    Data(Box<attnflow_data::DataError>),
    /// Training or evaluation failed.
    #[error(transparent)]
    Train(Box<attnflow_train::TrainError>),
    /// The attention section could not be built.
    #[error(transparent)]
    Inspect(Box<attnflow_inspect::InspectError>),
    /// A figure or the report could not be drawn.
    #[error(transparent)]
    Report(Box<attnflow_report::ReportError>),
    /// The workflow engine failed (lease, spec, ...).
    #[error("workflow: {0}")]
    Workflow(String),
    /// The workflow store is unusable (a wrong `--db`, refused login, a
    /// newer schema: bad input) or was lost (the run is resumable).
    #[error(transparent)]
    Store(Box<attnflow_workflow::StoreError>),
}

/// Library errors are boxed: they carry file text and places, and a large
/// error would make every `Result` of the pipeline large.
macro_rules! boxed_from {
    ($($variant:ident: $error:ty),* $(,)?) => {
        $(impl From<$error> for PipelineError {
            fn from(error: $error) -> Self {
                Self::$variant(Box::new(error))
            }
        })*
    };
}

boxed_from! {
    Blueprint: attnflow_blueprint::Error,
    Data: attnflow_data::DataError,
    Train: attnflow_train::TrainError,
    Inspect: attnflow_inspect::InspectError,
    Report: attnflow_report::ReportError,
    Store: attnflow_workflow::StoreError,
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
        self.fault() == Fault::BadInput
    }
}

impl Classified for PipelineError {
    fn fault(&self) -> Fault {
        match self {
            Self::Spec { .. } | Self::RunFolder { .. } | Self::Schema { .. } => Fault::BadInput,
            Self::Io { .. } | Self::Workflow(_) => Fault::Failed,
            Self::Blueprint(error) => error.as_ref().fault(),
            Self::Data(error) => error.as_ref().fault(),
            Self::Train(error) => error.as_ref().fault(),
            Self::Inspect(error) => error.as_ref().fault(),
            Self::Report(error) => error.as_ref().fault(),
            Self::Store(error) if error.is_bad_input() => Fault::BadInput,
            Self::Store(_) => Fault::Failed,
        }
    }
}

/// The result type of this crate.
pub type Result<T> = std::result::Result<T, PipelineError>;
