//! The store behind `--db`: an SQLite file or a PostgreSQL database, one
//! connection type over both, versioned migrations and errors classified
//! the way the CLI reports them. The workflow engine and the data queue
//! keep their tables through it; neither knows which backend it has,
//! except where the SQL dialects differ.
//!
//! * [`Location`]: parses `--db` (a path, or `postgres://user@host:port/db`)
//!   and `ATTNFLOW_DB`.
//! * [`Connection`]: statements with `?1` placeholders on both backends,
//!   transactions, COPY, notifications, reconnection after a lost server.
//! * [`Component`] and [`Migration`]: forward migrations, refused when the
//!   store is newer than the build.
//! * [`copy_store`] and [`migrate_store`]: `attnflow store copy|migrate`.
//! * [`DbError`]: bad input (exit 2) vs a lost server vs failed work.

mod connection;
mod copy;
mod error;
mod location;
mod migrate;

pub use connection::{
    postgres_placeholders, reconnect_budget, Backend, Cell, Connection, Listener, Row, Value,
    RECONNECT_BUDGET,
};
pub use copy::{copy_store, migrate_store, Copied, Table, Tables};
pub use error::DbError;
pub use location::{Location, PostgresUrl, DEFAULT_PATH, DEFAULT_VARIABLE};
pub use migrate::{Component, Migration};
