//! Errors of the analysis tools, naming the map, row and column at fault.

/// What went wrong while analysing attention maps. Every variant names the
/// map (as the caller called it: `A_v`, `layer 3 head 1`, ...) and, where
/// there is one, the cell, so users can find the bad value in their file.
#[derive(Debug, thiserror::Error)]
pub enum AnalysisError {
    /// A value is NaN or infinite where a finite number is required.
    #[error("{map}: value at row {row}, column {column} is {value}, not a finite number")]
    NotFinite {
        /// The map holding the value.
        map: String,
        /// Zero-based row of the value.
        row: usize,
        /// Zero-based column of the value.
        column: usize,
        /// The offending value.
        value: f64,
    },
    /// A row of a map that must be row-stochastic has a negative entry or
    /// does not sum to one within the tolerance.
    #[error(
        "{map}: row {row} is not a probability distribution ({message}; tolerance {tolerance:e})"
    )]
    NotRowStochastic {
        /// The map holding the row.
        map: String,
        /// Zero-based index of the row.
        row: usize,
        /// What is wrong with the row (its sum, or the negative entry).
        message: String,
        /// The tolerance the row was checked with.
        tolerance: f64,
    },
    /// Shapes that do not fit: a non-square map where one is needed, two
    /// maps of different shapes, a value count that is not rows × columns.
    #[error("{map}: {message}")]
    Shape {
        /// The map (or tensor) at fault.
        map: String,
        /// What is wrong, with the shapes involved.
        message: String,
    },
    /// A setting outside its range (α outside [0, 1], a start layer past
    /// the last layer, a target token past the end, ...).
    #[error("`{name}`: {message}")]
    Parameter {
        /// The setting's name as the user knows it.
        name: String,
        /// What is wrong with it.
        message: String,
    },
    /// A failure inside candle while reading tensors or running a model.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// A failure of the attention engine while running a seeded model.
    #[error(transparent)]
    Core(#[from] crate::CoreError),
}

impl AnalysisError {
    pub(crate) fn shape(map: &str, message: impl Into<String>) -> Self {
        Self::Shape {
            map: map.to_string(),
            message: message.into(),
        }
    }

    pub(crate) fn parameter(name: &str, message: impl Into<String>) -> Self {
        Self::Parameter {
            name: name.to_string(),
            message: message.into(),
        }
    }
}

impl attnflow_base::Classified for AnalysisError {
    fn fault(&self) -> attnflow_base::Fault {
        match self {
            AnalysisError::Candle(_) => attnflow_base::Fault::Failed,
            AnalysisError::Core(error) => attnflow_base::Classified::fault(error),
            _ => attnflow_base::Fault::BadInput,
        }
    }
}

/// The result type of the analysis tools.
pub type AnalysisResult<T> = std::result::Result<T, AnalysisError>;
