//! How the CLI turns library errors into messages and exit codes.

use std::process::ExitCode;

/// A failed command: the diagnostic to print and whether the fault was the
/// user's input (exit 2) or the work itself (exit 1).
pub struct CliError {
    kind: ErrorKind,
    report: miette::Report,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad input or usage: a malformed file, a missing tensor, a bad flag.
    BadInput,
    /// The input was fine but the work failed (I/O, numerical failure).
    Failed,
}

impl CliError {
    /// Bad input or usage; exits with 2.
    pub fn bad_input(report: impl Into<miette::Report>) -> Self {
        Self {
            kind: ErrorKind::BadInput,
            report: report.into(),
        }
    }

    /// The work failed; exits with 1.
    pub fn failed(report: impl Into<miette::Report>) -> Self {
        Self {
            kind: ErrorKind::Failed,
            report: report.into(),
        }
    }

    /// Prints the diagnostic (with source snippet where the error has one)
    /// to stderr and returns the exit code.
    pub fn report_and_exit_code(self) -> ExitCode {
        eprintln!("{:?}", self.report);
        match self.kind {
            ErrorKind::BadInput => ExitCode::from(2),
            ErrorKind::Failed => ExitCode::from(1),
        }
    }
}

/// Every library error knows whose fault it is (`attnflow_base::Classified`),
/// which decides the exit code; its message names the file, line, field or
/// tensor at fault.
impl<E: attnflow_base::Classified + Send + Sync + 'static> From<E> for CliError {
    fn from(error: E) -> Self {
        let kind = match error.fault() {
            attnflow_base::Fault::BadInput => ErrorKind::BadInput,
            attnflow_base::Fault::Failed => ErrorKind::Failed,
        };
        Self {
            kind,
            report: miette::miette!("{error}"),
        }
    }
}

/// A fault inside a text file as a diagnostic: `message` (which names
/// file:line:column) with the offending span of `text` underlined and
/// labelled. Spans past the end are clamped; an empty span marks one
/// character.
pub fn spanned(
    origin: &str,
    text: &str,
    span: std::ops::Range<usize>,
    label: &str,
    message: &str,
) -> miette::Report {
    if text.is_empty() {
        return miette::miette!("{message}");
    }
    let start = span.start.min(text.len());
    let end = span.end.min(text.len());
    let length = end
        .saturating_sub(start)
        .max(usize::from(start < text.len()));
    miette::miette!(
        labels = vec![miette::LabeledSpan::at(
            start..start + length,
            label.to_string()
        )],
        "{message}"
    )
    .with_source_code(miette::NamedSource::new(origin, text.to_string()))
}

/// The result type of every command.
pub type CliResult = Result<(), CliError>;
