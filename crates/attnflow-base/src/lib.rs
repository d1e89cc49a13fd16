//! The few helpers every attnflow crate shares, each in one place:
//!
//! * [`write_atomically`]: result files are never half-written;
//! * [`time`]: UTC timestamps without a calendar dependency;
//! * [`table`]: aligned text and Markdown tables;
//! * [`peak_rss_bytes`], [`release_free_memory`]: this process's memory;
//! * [`OpenFile`]: flushing a file the process has open, from any thread;
//! * [`digest`]: SHA-256 of files, for manifests;
//! * [`Fault`] and [`Classified`]: whose fault an error is, which decides
//!   the exit code.
//!
//! Nothing here knows about tensors, stores or the paper.

mod atomic;
pub mod digest;
mod fault;
mod flush;
mod memory;
pub mod table;
pub mod time;

pub use atomic::write_atomically;
pub use fault::{Classified, Fault};
pub use flush::OpenFile;
pub use memory::{peak_rss_bytes, release_free_memory};
