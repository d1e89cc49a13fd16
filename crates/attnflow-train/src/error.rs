//! Errors of training, each naming the place of the fault: the file, the
//! tensor, the configuration field or the step.

use std::path::PathBuf;

/// What went wrong while building, training, evaluating or checkpointing a
/// model.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The blueprint spec is malformed (carries file, line and column).
    #[error(transparent)]
    Blueprint(#[from] attnflow_blueprint::Error),
    /// A blueprint that checks but cannot be trained as asked (an op on an
    /// input it cannot run on, no logits output for a token task, ...).
    #[error("blueprint `{blueprint}`, node `{node}`: {message}")]
    Model {
        /// The blueprint's name.
        blueprint: String,
        /// The node at fault.
        node: String,
        /// What is wrong.
        message: String,
    },
    /// A configuration value that cannot work.
    #[error("training configuration `{field}`: {message}")]
    Config {
        /// The field (or CLI flag) at fault.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// The task's data cannot be built (unreadable or unusable text file).
    #[error("{path}: {message}")]
    Data {
        /// The data file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A checkpoint that is missing, corrupt or belongs to another model.
    #[error("checkpoint {path}: {message}")]
    Checkpoint {
        /// The checkpoint file at fault.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// Training produced a non-finite loss or gradient; training stopped
    /// before the update, so the last checkpoint still holds good weights.
    #[error("step {step}: {what} is not finite ({value}); training stopped before the update{}", match last_checkpoint { Some((path, step)) => format!(", the last good checkpoint is {} (step {step})", path.display()), None => ", no checkpoint had been written yet".to_string() })]
    NonFinite {
        /// The step whose forward or backward pass failed (0-based).
        step: u64,
        /// What was non-finite: `loss`, `objective` or `gradient of <parameter>`.
        what: String,
        /// The offending value.
        value: f64,
        /// The last good checkpoint directory and its step, if one was written.
        last_checkpoint: Option<(PathBuf, u64)>,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A failure of the attention engine.
    #[error(transparent)]
    Core(#[from] attnflow_core::CoreError),
    /// A failure inside candle (allocation, an unsupported operation).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl TrainError {
    /// A configuration fault on `field`.
    pub fn config(field: &str, message: impl Into<String>) -> Self {
        Self::Config {
            field: field.to_string(),
            message: message.into(),
        }
    }

    /// A checkpoint fault in `path`.
    pub fn checkpoint(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::Checkpoint {
            path: path.into(),
            message: message.into(),
        }
    }

    /// An I/O fault on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    /// Whether the fault lies in the user's input (spec, flags, data or
    /// checkpoint files) rather than in the work; the CLI exits with 2 for
    /// these and 1 for the rest.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            Self::Blueprint(_)
                | Self::Model { .. }
                | Self::Config { .. }
                | Self::Data { .. }
                | Self::Checkpoint { .. }
        )
    }
}

impl attnflow_base::Classified for TrainError {
    fn fault(&self) -> attnflow_base::Fault {
        match self {
            Self::Core(error) => attnflow_base::Classified::fault(error),
            _ if self.is_bad_input() => attnflow_base::Fault::BadInput,
            _ => attnflow_base::Fault::Failed,
        }
    }
}

/// The result type of this crate.
pub type Result<T> = std::result::Result<T, TrainError>;
