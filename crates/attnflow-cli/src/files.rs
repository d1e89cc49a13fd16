//! Writing result files so that a crash never leaves a half-written one.

use std::path::Path;

/// Writes `bytes` to `path` atomically (temporary file in the same
/// directory, fsync, rename, mode 0644) with the one writer the project
/// has, attnflow-train's, which checkpoints and run folders use too. Returns
/// the operating system's error so callers name the file in their message.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    attnflow_train::checkpoint::write_atomically(path, bytes).map_err(|error| match error {
        attnflow_train::TrainError::Io { source, .. } => source,
        other => std::io::Error::other(other.to_string()),
    })
}
