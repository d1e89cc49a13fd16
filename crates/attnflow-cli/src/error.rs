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

/// The result type of every command.
pub type CliResult = Result<(), CliError>;
