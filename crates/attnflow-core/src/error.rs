//! Errors of the attention engine.

/// What went wrong in the attention engine, with the tensor or setting at
/// fault named so callers can point users at it.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// A tensor has the wrong rank or a dimension that does not match its
    /// partner (for example `k` and `v` with different sequence lengths).
    #[error("tensor `{tensor}`: {message}")]
    Shape {
        /// The tensor's name as the user knows it (`q`, `mask`, `query`, ...).
        tensor: String,
        /// What is wrong, with the shapes involved.
        message: String,
    },
    /// A configuration value that cannot work (zero heads, an embedding
    /// width not divisible by the number of heads, ...).
    #[error("configuration `{field}`: {message}")]
    Config {
        /// The configuration field at fault.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// A failure inside candle (allocation, an unsupported dtype, ...).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl CoreError {
    pub(crate) fn shape(tensor: &str, message: impl Into<String>) -> Self {
        Self::Shape {
            tensor: tensor.to_string(),
            message: message.into(),
        }
    }

    pub(crate) fn config(field: &str, message: impl Into<String>) -> Self {
        Self::Config {
            field: field.to_string(),
            message: message.into(),
        }
    }
}

impl attnflow_base::Classified for CoreError {
    fn fault(&self) -> attnflow_base::Fault {
        match self {
            CoreError::Shape { .. } | CoreError::Config { .. } => attnflow_base::Fault::BadInput,
            CoreError::Candle(_) => attnflow_base::Fault::Failed,
        }
    }
}

/// The result type of this crate.
pub type Result<T> = std::result::Result<T, CoreError>;
