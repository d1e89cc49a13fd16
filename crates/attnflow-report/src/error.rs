//! Errors of the report crate.

/// What went wrong while drawing a figure or building a report, naming the
/// figure, panel or section at fault.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The data handed to a figure or section does not fit together (values
    /// that do not fill `rows × columns`, label counts that differ from the
    /// matrix, ragged layers).
    #[error("{place}: {message}")]
    Data {
        /// The figure, panel or section at fault.
        place: String,
        /// What does not fit.
        message: String,
    },
    /// A value that cannot be drawn (NaN or infinite).
    #[error("{place}: value at row {row}, column {column} is {value}, which cannot be drawn")]
    NotFinite {
        /// The panel holding the value.
        place: String,
        /// Zero-based row.
        row: usize,
        /// Zero-based column.
        column: usize,
        /// The value.
        value: f64,
    },
    /// A finished file could not be delivered (the caller's writer failed).
    #[error("{file}: {message}")]
    Output {
        /// The file's name.
        file: String,
        /// What went wrong.
        message: String,
    },
    /// The drawing library failed (should not happen with in-memory
    /// backends; reported rather than unwrapped).
    #[error("drawing {figure}: {message}")]
    Drawing {
        /// The figure being drawn.
        figure: String,
        /// The backend's message.
        message: String,
    },
}

impl ReportError {
    pub(crate) fn data(place: &str, message: impl Into<String>) -> Self {
        Self::Data {
            place: place.to_string(),
            message: message.into(),
        }
    }
}

impl attnflow_base::Classified for ReportError {
    fn fault(&self) -> attnflow_base::Fault {
        match self {
            // Values that do not fit or cannot be drawn come from the
            // user's maps; a failed delivery or drawing is the work's.
            ReportError::Data { .. } | ReportError::NotFinite { .. } => {
                attnflow_base::Fault::BadInput
            }
            _ => attnflow_base::Fault::Failed,
        }
    }
}

/// The result type of this crate.
pub type ReportResult<T> = std::result::Result<T, ReportError>;
