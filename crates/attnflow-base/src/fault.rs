//! Whose fault a failure is: the one fact about an error that decides the
//! exit code (0 success, 1 the work failed, 2 bad input or usage).

/// The class of a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The user's input is wrong: a malformed file, a missing tensor, a bad
    /// flag or URL. Exit code 2.
    BadInput,
    /// The input was fine but the work failed: I/O, a lost server, a
    /// numerical failure. Exit code 1.
    Failed,
}

impl Fault {
    /// The process exit code of this class.
    pub fn exit_code(self) -> u8 {
        match self {
            Fault::BadInput => 2,
            Fault::Failed => 1,
        }
    }
}

/// An error that knows its class. Every library error of attnflow
/// implements it; an error that wraps another (`#[from]`) takes its source's
/// class, so a training I/O failure inside the pipeline is still a failure
/// of the work, not bad input.
pub trait Classified: std::error::Error {
    /// Whose fault this error is.
    fn fault(&self) -> Fault;
}
