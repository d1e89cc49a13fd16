//! Errors of the data crate, each carrying the place of the fault.
//!
//! Faults inside *records* are not errors: they become quarantine entries
//! (see [`crate::check::Violation`]). Errors here stop a run: an unreadable
//! schema, a file that cannot be opened, a header that does not match the
//! schema, a store that cannot be written.

use std::path::PathBuf;

/// A place in a text file: 1-based line and column, plus the byte span so
/// the CLI can draw a source snippet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextPlace {
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
    /// Byte offset of the fault in the file.
    pub offset: usize,
    /// Length in bytes of the faulty span (at least 1 where possible).
    pub length: usize,
}

impl TextPlace {
    /// Computes line and column of the byte range `start..end` in `text`.
    pub fn from_span(text: &str, start: usize, end: usize) -> Self {
        let start = start.min(text.len());
        let end = end.clamp(start, text.len());
        let before = &text[..floor_char_boundary(text, start)];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |index| index + 1);
        let column = before[line_start..].chars().count() + 1;
        Self {
            line,
            column,
            offset: start,
            length: end - start,
        }
    }
}

fn floor_char_boundary(text: &str, mut index: usize) -> usize {
    while index > 0 && !text.is_char_boundary(index) {
        index -= 1;
    }
    index
}

/// Everything that can stop a data run.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file could not be opened, read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The schema file is invalid; `place` points into `text`.
    #[error("{path}:{}:{}: {message}", place.line, place.column)]
    Schema {
        /// The schema file.
        path: PathBuf,
        /// Its full text, for source snippets.
        text: String,
        /// Where the fault is.
        place: TextPlace,
        /// What is wrong.
        message: String,
    },
    /// A data file cannot be read as a whole (bad header, unreadable Parquet
    /// footer, unknown format). Faults in single records never land here.
    #[error("{path}:{line}: {message}")]
    Source {
        /// The data file.
        path: PathBuf,
        /// 1-based line (or row for Parquet; 0 when the fault has no line).
        line: u64,
        /// What is wrong.
        message: String,
    },
    /// The SQLite store failed.
    #[error("store {path}: {source}")]
    Store {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// The store refused, was unreachable, or is from a newer attnflow.
    #[error(transparent)]
    Db(#[from] attnflow_store::DbError),
    /// Invalid arguments to a library call (for example a negative budget),
    /// naming the argument.
    #[error("{what}: {message}")]
    Invalid {
        /// The argument, field or column at fault.
        what: String,
        /// What is wrong.
        message: String,
    },
    /// A check worker failed unexpectedly (a panic, turned into an error so
    /// the run stops and rolls back instead of hanging). A bug in attnflow.
    #[error("internal error (a bug in attnflow): {message}")]
    Internal {
        /// What failed.
        message: String,
    },
    /// A run's books do not balance (read != accepted + quarantined). This is
    /// a bug in attnflow, never the user's fault; the run is rolled back.
    #[error("accounting failure: read {read} != accepted {accepted} + quarantined {quarantined}")]
    Accounting {
        /// Records read.
        read: u64,
        /// Records accepted.
        accepted: u64,
        /// Records quarantined.
        quarantined: u64,
    },
}

impl attnflow_base::Classified for DataError {
    fn fault(&self) -> attnflow_base::Fault {
        if self.is_bad_input() {
            attnflow_base::Fault::BadInput
        } else {
            attnflow_base::Fault::Failed
        }
    }
}

impl DataError {
    /// True when the fault lies in the user's input (schema, data file,
    /// arguments) rather than in the work (I/O, store); the CLI exits 2 for
    /// these and 1 otherwise.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            DataError::Schema { .. } | DataError::Source { .. } | DataError::Invalid { .. }
        ) || matches!(self, DataError::Db(error) if error.is_bad_input())
            || matches!(self, DataError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }

    /// An I/O failure on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn store(path: impl Into<PathBuf>, source: rusqlite::Error) -> Self {
        DataError::Store {
            path: path.into(),
            source,
        }
    }
}

/// Result type of the data crate.
pub type DataResult<T> = Result<T, DataError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn place_counts_lines_and_columns() {
        let text = "a = 1\nbé = 2\n";
        let place = TextPlace::from_span(text, 10, 11);
        assert_eq!((place.line, place.column), (2, 4));
        let first = TextPlace::from_span(text, 0, 1);
        assert_eq!((first.line, first.column), (1, 1));
    }
}
