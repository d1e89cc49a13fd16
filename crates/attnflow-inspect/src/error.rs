//! Errors of inspection, each naming the file, token or setting at fault.

use std::path::PathBuf;

use attnflow_base::{Classified, Fault};

/// What went wrong while reading, running or drawing attention.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// The input does not fit the source: no input where one is needed,
    /// tokens the model does not know, a token count that differs from the
    /// maps'.
    #[error("{place}: {message}")]
    Input {
        /// The source or flag at fault.
        place: String,
        /// What is wrong.
        message: String,
    },
    /// A file of maps or tokens is malformed.
    #[error("{location}: {message}")]
    File {
        /// The file, with line (and column) where there is one.
        location: String,
        /// What is wrong.
        message: String,
    },
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The maps do not pass the analysis (not row-stochastic, not finite).
    #[error("{place}: {source}")]
    Analysis {
        /// The source or view at fault.
        place: String,
        /// The analysis' reason.
        source: attnflow_core::analysis::AnalysisError,
    },
    /// A tensor file could not be read.
    #[error(transparent)]
    Tensors(#[from] attnflow_core::file::FileError),
    /// A trained checkpoint or blueprint could not be opened or run.
    #[error(transparent)]
    Train(#[from] attnflow_train::TrainError),
    /// A pretrained model could not be opened or run.
    #[error(transparent)]
    Model(#[from] attnflow_models::ModelError),
    /// A picture or the report could not be drawn.
    #[error(transparent)]
    Report(#[from] attnflow_report::ReportError),
}

impl InspectError {
    pub(crate) fn input(place: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Input {
            place: place.into(),
            message: message.into(),
        }
    }

    pub(crate) fn file(path: &std::path::Path, message: impl Into<String>) -> Self {
        Self::File {
            location: path.display().to_string(),
            message: message.into(),
        }
    }

    /// A fault at `line` (and `column`, when given) of `path`, 1-based.
    pub(crate) fn file_at(
        path: &std::path::Path,
        line: usize,
        column: Option<usize>,
        message: impl Into<String>,
    ) -> Self {
        let location = match column {
            Some(column) => format!("{}:{line}:{column}", path.display()),
            None => format!("{}:{line}", path.display()),
        };
        Self::File {
            location,
            message: message.into(),
        }
    }

    pub(crate) fn analysis(
        place: impl Into<String>,
    ) -> impl FnOnce(attnflow_core::analysis::AnalysisError) -> Self {
        let place = place.into();
        move |source| Self::Analysis { place, source }
    }
}

impl Classified for InspectError {
    fn fault(&self) -> Fault {
        match self {
            Self::Input { .. } | Self::File { .. } => Fault::BadInput,
            Self::Io { .. } => Fault::Failed,
            Self::Analysis { source, .. } => source.fault(),
            Self::Tensors(error) => error.fault(),
            Self::Train(error) => error.fault(),
            Self::Model(error) => error.fault(),
            Self::Report(error) => error.fault(),
        }
    }
}

/// The result type of this crate.
pub type Result<T> = std::result::Result<T, InspectError>;
