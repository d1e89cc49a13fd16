//! Data management for attnflow (paper §6): streaming ingestion of CSV,
//! JSON Lines and Parquet; schema-driven quality checks `I(d) ∈ {0,1}` that
//! send every record either to the processing queue or, with its reason, to
//! quarantine; per-field profiles; and budgeted selection of items.
//!
//! The invariant every run asserts: records read = accepted + quarantined.

mod bytes;
pub mod check;
pub mod error;
mod fast;
pub mod pattern;
pub mod profile;
pub mod render;
pub mod rule;
pub mod run;
pub mod schema;
pub mod select;
pub mod source;
pub mod store;
pub mod unique;
pub mod value;

pub use error::{DataError, DataResult};
pub use schema::Schema;
