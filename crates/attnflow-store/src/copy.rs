//! `attnflow store migrate` and `attnflow store copy`: bring a store's
//! tables to this build's version, and move a history between backends
//! (SQLite into PostgreSQL and back), verifying the row counts.

use crate::connection::{Backend, Cell, Connection, Value};
use crate::error::DbError;
use crate::location::Location;
use crate::migrate::Component;

/// A table to copy: its columns in order, parents before children.
#[derive(Debug, Clone, Copy)]
pub struct Table {
    /// The table's name.
    pub name: &'static str,
    /// Its columns.
    pub columns: &'static [&'static str],
    /// Whether `id` comes from a sequence (PostgreSQL's must be moved past
    /// the copied ids).
    pub serial_id: bool,
}

/// A component's tables and migrations.
#[derive(Debug, Clone, Copy)]
pub struct Tables {
    /// Its migrations.
    pub component: Component,
    /// Its tables, parents first.
    pub tables: &'static [Table],
}

/// One table copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    /// The table.
    pub table: String,
    /// Rows in the source, and (verified equal) in the target.
    pub rows: u64,
}

/// Migrates every component of the store at `location`; returns each
/// component's `(name, before, after)` versions.
pub fn migrate_store(
    location: &Location,
    components: &[Tables],
) -> Result<Vec<(&'static str, i64, i64)>, DbError> {
    let connection = Connection::open(location, "PRAGMA journal_mode = WAL;")?;
    components
        .iter()
        .map(|tables| {
            let (before, after) = tables.component.migrate(&connection)?;
            Ok((tables.component.name, before, after))
        })
        .collect()
}

/// Rows per INSERT while copying.
const ROWS_PER_INSERT: usize = 200;

/// Copies every table of `components` from the store at `from` into the
/// store at `to`, in one transaction on the target, then checks that each
/// table holds as many rows as its source. Both stores are migrated first;
/// the target's tables must be empty (a copy never merges histories).
pub fn copy_store(
    from: &Location,
    to: &Location,
    components: &[Tables],
) -> Result<Vec<Copied>, DbError> {
    if from == to {
        return Err(DbError::BadLocation {
            text: to.to_string(),
            reason: "--from and --to name the same store".into(),
        });
    }
    let source = Connection::open(from, "PRAGMA journal_mode = WAL;")?;
    let target = Connection::open(to, "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;")?;
    for tables in components {
        tables.component.migrate(&source)?;
        tables.component.migrate(&target)?;
    }
    let all: Vec<&Table> = components.iter().flat_map(|tables| tables.tables).collect();
    for table in &all {
        let count = count(&target, table.name)?;
        if count > 0 {
            return Err(DbError::BadLocation {
                text: to.to_string(),
                reason: format!(
                    "table {} already holds {count} rows; copy into an empty store",
                    table.name
                ),
            });
        }
    }
    target.transaction("copy store", |target| {
        let mut copied = Vec::new();
        for table in &all {
            let rows = copy_table(&source, target, table)?;
            let written = count(target, table.name)?;
            if written != rows {
                return Err(DbError::Value {
                    store: target.label().to_string(),
                    operation: format!("verify {}", table.name),
                    column: 0,
                    message: format!("copied {rows} rows but the target holds {written}"),
                });
            }
            if table.serial_id && target.backend() == Backend::Postgres {
                target.execute(
                    "move the id sequence",
                    &format!(
                        "SELECT setval(pg_get_serial_sequence('{0}', 'id'), COALESCE((SELECT MAX(id) FROM {0}), 0) + 1, false)",
                        table.name
                    ),
                    &[],
                )?;
            }
            copied.push(Copied {
                table: table.name.to_string(),
                rows,
            });
        }
        Ok(copied)
    })
}

fn count(connection: &Connection, table: &str) -> Result<u64, DbError> {
    Ok(connection.query_i64("count rows", &format!("SELECT COUNT(*) FROM {table}"), &[])? as u64)
}

fn copy_table(source: &Connection, target: &Connection, table: &Table) -> Result<u64, DbError> {
    let columns = table.columns.join(", ");
    let select = format!("SELECT {columns} FROM {} ORDER BY 1", table.name);
    let width = table.columns.len();
    let mut pending: Vec<Vec<Cell>> = Vec::with_capacity(ROWS_PER_INSERT);
    let mut rows = 0;
    let flush = |pending: &mut Vec<Vec<Cell>>| -> Result<(), DbError> {
        if pending.is_empty() {
            return Ok(());
        }
        let mut sql = format!("INSERT INTO {} ({columns}) VALUES ", table.name);
        let mut values: Vec<Value<'_>> = Vec::with_capacity(pending.len() * width);
        for (index, row) in pending.iter().enumerate() {
            if index > 0 {
                sql.push_str(", ");
            }
            let placeholders: Vec<String> = (1..=width)
                .map(|column| format!("?{}", index * width + column))
                .collect();
            sql.push_str(&format!("({})", placeholders.join(", ")));
            values.extend(row.iter().map(|cell| match cell {
                Cell::Null => Value::Null,
                Cell::Int(value) => Value::Int(*value),
                Cell::Float(value) => Value::Float(*value),
                Cell::Text(text) => Value::Text(text),
                Cell::Bytes(bytes) => Value::Bytes(bytes),
            }));
        }
        target.execute("copy rows", &sql, &values)?;
        pending.clear();
        Ok(())
    };
    source.for_each("read rows", &select, &[], |row| {
        pending.push(row.cells.clone());
        rows += 1;
        if pending.len() >= ROWS_PER_INSERT {
            flush(&mut pending)?;
        }
        Ok::<(), DbError>(())
    })?;
    flush(&mut pending)?;
    Ok(rows)
}
