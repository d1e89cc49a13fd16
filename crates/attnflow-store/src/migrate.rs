//! Versioned, forward-only migrations, the same steps on both backends.
//!
//! Each component (the workflow engine, the data queue) keeps its version
//! in its own one-row table (`wf_schema_version`, `data_schema_version`),
//! so components sharing a store migrate independently. Migration `v`
//! turns a version `v - 1` store into a version `v` store; all pending
//! steps run in one transaction, so a store is never left half-migrated.

use crate::connection::{Backend, Connection};
use crate::error::DbError;

/// One forward step, written for each backend.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// The version this step produces.
    pub version: i64,
    /// The SQL for SQLite.
    pub sqlite: &'static str,
    /// The SQL for PostgreSQL.
    pub postgres: &'static str,
}

/// A component's tables: its name for messages, its version table and its
/// steps in order.
#[derive(Debug, Clone, Copy)]
pub struct Component {
    /// `workflow`, `data`.
    pub name: &'static str,
    /// The one-row table holding the version.
    pub version_table: &'static str,
    /// Every step, in version order starting at 1.
    pub migrations: &'static [Migration],
}

impl Component {
    /// The newest version this build knows.
    pub fn latest(&self) -> i64 {
        self.migrations
            .last()
            .map_or(0, |migration| migration.version)
    }

    /// The store's version of this component (0 when its tables are absent).
    pub fn version(&self, connection: &Connection) -> Result<i64, DbError> {
        let exists = match connection.backend() {
            Backend::Sqlite => connection.query_i64(
                "read schema version",
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
                &[self.version_table.into()],
            )?,
            Backend::Postgres => connection.query_i64(
                "read schema version",
                "SELECT COUNT(*) FROM information_schema.tables \
                 WHERE table_schema = current_schema() AND table_name = ?1",
                &[self.version_table.into()],
            )?,
        };
        if exists == 0 {
            return Ok(0);
        }
        let row = connection.query_opt(
            "read schema version",
            &format!("SELECT version FROM {}", self.version_table),
            &[],
        )?;
        row.map_or(Ok(0), |row| row.i64(0))
    }

    /// Brings the store to [`Component::latest`]; refuses a store written
    /// by a newer attnflow. Returns `(before, after)`.
    pub fn migrate(&self, connection: &Connection) -> Result<(i64, i64), DbError> {
        connection.transaction("migrate schema", |connection| {
            if connection.backend() == Backend::Postgres {
                // Workers starting together must not migrate twice.
                connection.execute(
                    "lock for migration",
                    "SELECT pg_advisory_xact_lock(hashtext(?1))",
                    &[self.version_table.into()],
                )?;
            }
            connection.batch(
                "create schema version table",
                &format!(
                    "CREATE TABLE IF NOT EXISTS {} (version BIGINT NOT NULL)",
                    self.version_table
                ),
            )?;
            let found = connection
                .query_opt(
                    "read schema version",
                    &format!("SELECT version FROM {}", self.version_table),
                    &[],
                )?
                .map(|row| row.i64(0))
                .transpose()?;
            let found = match found {
                Some(version) => version,
                None => {
                    connection.execute(
                        "initialise schema version",
                        &format!("INSERT INTO {} (version) VALUES (0)", self.version_table),
                        &[],
                    )?;
                    0
                }
            };
            if found > self.latest() {
                return Err(DbError::SchemaTooNew {
                    store: connection.label().to_string(),
                    component: self.name.to_string(),
                    found,
                    supported: self.latest(),
                });
            }
            for migration in self.migrations.iter().filter(|step| step.version > found) {
                let sql = match connection.backend() {
                    Backend::Sqlite => migration.sqlite,
                    Backend::Postgres => migration.postgres,
                };
                connection.batch(
                    &format!("migrate {} to version {}", self.name, migration.version),
                    sql,
                )?;
                connection.execute(
                    "record schema version",
                    &format!("UPDATE {} SET version = ?1", self.version_table),
                    &[migration.version.into()],
                )?;
            }
            Ok((found, self.latest().max(found)))
        })
    }
}
