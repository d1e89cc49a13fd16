//! One connection type over both backends. SQL is written once with `?1`
//! placeholders (SQLite's form); PostgreSQL receives `$1`. Where the two
//! dialects differ, the caller picks the text by [`Backend`].

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::error::DbError;
use crate::location::{Location, PostgresUrl};

/// Which database engine a connection talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// An SQLite file.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

/// A statement parameter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    /// SQL NULL.
    Null,
    /// A 64-bit integer (BIGINT; 0/1 for flags).
    Int(i64),
    /// A float (DOUBLE PRECISION).
    Float(f64),
    /// Text.
    Text(&'a str),
    /// Bytes (BLOB / BYTEA).
    Bytes(&'a [u8]),
}

impl From<i64> for Value<'_> {
    fn from(value: i64) -> Self {
        Value::Int(value)
    }
}

impl From<bool> for Value<'_> {
    fn from(value: bool) -> Self {
        Value::Int(i64::from(value))
    }
}

impl From<f64> for Value<'_> {
    fn from(value: f64) -> Self {
        Value::Float(value)
    }
}

impl<'a> From<&'a str> for Value<'a> {
    fn from(value: &'a str) -> Self {
        Value::Text(value)
    }
}

impl<'a> From<&'a String> for Value<'a> {
    fn from(value: &'a String) -> Self {
        Value::Text(value)
    }
}

impl<'a> From<&'a [u8]> for Value<'a> {
    fn from(value: &'a [u8]) -> Self {
        Value::Bytes(value)
    }
}

impl<'a> From<&'a Vec<u8>> for Value<'a> {
    fn from(value: &'a Vec<u8>) -> Self {
        Value::Bytes(value)
    }
}

impl<'a, T: Into<Value<'a>>> From<Option<T>> for Value<'a> {
    fn from(value: Option<T>) -> Self {
        value.map_or(Value::Null, Into::into)
    }
}

/// Builds a parameter slice: `args![run_id, state, None::<i64>]`.
#[macro_export]
macro_rules! args {
    ($($value:expr),* $(,)?) => {
        &[$($crate::Value::from($value)),*][..]
    };
}

impl rusqlite::ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => ValueRef::Null,
            Value::Int(value) => ValueRef::Integer(*value),
            Value::Float(value) => ValueRef::Real(*value),
            Value::Text(text) => ValueRef::Text(text.as_bytes()),
            Value::Bytes(bytes) => ValueRef::Blob(bytes),
        }))
    }
}

impl postgres::types::ToSql for Value<'_> {
    fn to_sql(
        &self,
        ty: &postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        use postgres::types::Type;
        match self {
            Value::Null => Ok(postgres::types::IsNull::Yes),
            Value::Int(value) => match *ty {
                Type::INT4 => i32::try_from(*value)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*value)?.to_sql(ty, out),
                Type::BOOL => (*value != 0).to_sql(ty, out),
                Type::FLOAT8 => (*value as f64).to_sql(ty, out),
                _ => value.to_sql(ty, out),
            },
            Value::Float(value) => value.to_sql(ty, out),
            Value::Text(text) => text.to_sql(ty, out),
            Value::Bytes(bytes) => bytes.to_sql(ty, out),
        }
    }

    fn accepts(_ty: &postgres::types::Type) -> bool {
        // Checked per value in `to_sql`; a mismatch is the server's error.
        true
    }

    postgres::types::to_sql_checked!();
}

/// A value read back.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// SQL NULL.
    Null,
    /// An integer (or a boolean as 0/1).
    Int(i64),
    /// A float.
    Float(f64),
    /// Text.
    Text(String),
    /// Bytes.
    Bytes(Vec<u8>),
}

/// One row read back, columns in select order.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The row's values.
    pub cells: Vec<Cell>,
}

fn value_error(column: usize, message: String) -> DbError {
    DbError::Value {
        store: String::new(),
        operation: "read a row".into(),
        column,
        message,
    }
}

impl Row {
    fn cell(&self, column: usize) -> Result<&Cell, DbError> {
        self.cells
            .get(column)
            .ok_or_else(|| value_error(column, "no such column".into()))
    }

    /// An integer column that may be NULL.
    pub fn opt_i64(&self, column: usize) -> Result<Option<i64>, DbError> {
        match self.cell(column)? {
            Cell::Null => Ok(None),
            Cell::Int(value) => Ok(Some(*value)),
            other => Err(value_error(
                column,
                format!("expected an integer, found {other:?}"),
            )),
        }
    }

    /// An integer column.
    pub fn i64(&self, column: usize) -> Result<i64, DbError> {
        self.opt_i64(column)?
            .ok_or_else(|| value_error(column, "expected an integer, found NULL".into()))
    }

    /// A float column (integers are widened).
    pub fn opt_f64(&self, column: usize) -> Result<Option<f64>, DbError> {
        match self.cell(column)? {
            Cell::Null => Ok(None),
            Cell::Int(value) => Ok(Some(*value as f64)),
            Cell::Float(value) => Ok(Some(*value)),
            other => Err(value_error(
                column,
                format!("expected a number, found {other:?}"),
            )),
        }
    }

    /// A text column that may be NULL.
    pub fn opt_text(&self, column: usize) -> Result<Option<String>, DbError> {
        match self.cell(column)? {
            Cell::Null => Ok(None),
            Cell::Text(text) => Ok(Some(text.clone())),
            other => Err(value_error(
                column,
                format!("expected text, found {other:?}"),
            )),
        }
    }

    /// A text column.
    pub fn text(&self, column: usize) -> Result<String, DbError> {
        self.opt_text(column)?
            .ok_or_else(|| value_error(column, "expected text, found NULL".into()))
    }

    /// A bytes column (text is taken as its UTF-8 bytes).
    pub fn bytes(&self, column: usize) -> Result<Vec<u8>, DbError> {
        match self.cell(column)? {
            Cell::Bytes(bytes) => Ok(bytes.clone()),
            Cell::Text(text) => Ok(text.clone().into_bytes()),
            other => Err(value_error(
                column,
                format!("expected bytes, found {other:?}"),
            )),
        }
    }

    /// A 0/1 flag column.
    pub fn flag(&self, column: usize) -> Result<bool, DbError> {
        Ok(self.i64(column)? != 0)
    }
}

fn sqlite_row(row: &rusqlite::Row<'_>, columns: usize) -> rusqlite::Result<Row> {
    use rusqlite::types::ValueRef;
    let mut cells = Vec::with_capacity(columns);
    for index in 0..columns {
        cells.push(match row.get_ref(index)? {
            ValueRef::Null => Cell::Null,
            ValueRef::Integer(value) => Cell::Int(value),
            ValueRef::Real(value) => Cell::Float(value),
            ValueRef::Text(text) => Cell::Text(String::from_utf8_lossy(text).into_owned()),
            ValueRef::Blob(bytes) => Cell::Bytes(bytes.to_vec()),
        });
    }
    Ok(Row { cells })
}

fn postgres_row(row: &postgres::Row) -> Result<Row, postgres::Error> {
    use postgres::types::Type;
    let mut cells = Vec::with_capacity(row.len());
    for (index, column) in row.columns().iter().enumerate() {
        let cell = match *column.type_() {
            Type::INT8 => row.try_get::<_, Option<i64>>(index)?.map(Cell::Int),
            Type::INT4 => row
                .try_get::<_, Option<i32>>(index)?
                .map(|value| Cell::Int(value.into())),
            Type::INT2 => row
                .try_get::<_, Option<i16>>(index)?
                .map(|value| Cell::Int(value.into())),
            Type::BOOL => row
                .try_get::<_, Option<bool>>(index)?
                .map(|value| Cell::Int(value.into())),
            Type::FLOAT8 => row.try_get::<_, Option<f64>>(index)?.map(Cell::Float),
            Type::FLOAT4 => row
                .try_get::<_, Option<f32>>(index)?
                .map(|value| Cell::Float(value.into())),
            Type::BYTEA => row.try_get::<_, Option<Vec<u8>>>(index)?.map(Cell::Bytes),
            Type::VOID => None,
            _ => row.try_get::<_, Option<String>>(index)?.map(Cell::Text),
        };
        cells.push(cell.unwrap_or(Cell::Null));
    }
    Ok(Row { cells })
}

/// `?12` -> `$12`, outside string literals.
pub fn postgres_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quoted = false;
    let mut characters = sql.chars().peekable();
    while let Some(character) = characters.next() {
        if character == '\'' {
            quoted = !quoted;
        }
        if character == '?' && !quoted && characters.peek().is_some_and(char::is_ascii_digit) {
            out.push('$');
        } else {
            out.push(character);
        }
    }
    out
}

struct Postgres {
    client: Option<postgres::Client>,
    config: postgres::Config,
    url: PostgresUrl,
    statements: HashMap<String, postgres::Statement>,
}

impl Postgres {
    fn client(&mut self, label: &str, operation: &str) -> Result<&mut postgres::Client, DbError> {
        match self.client.as_mut() {
            Some(client) if !client.is_closed() => Ok(client),
            _ => Err(DbError::Lost {
                store: label.to_string(),
                operation: operation.to_string(),
                reason: "the connection is closed".into(),
            }),
        }
    }

    fn statement(
        &mut self,
        label: &str,
        operation: &str,
        sql: &str,
    ) -> Result<postgres::Statement, DbError> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let translated = postgres_placeholders(sql);
        let statement = self
            .client(label, operation)?
            .prepare(&translated)
            .map_err(|error| DbError::postgres(label, operation, error))?;
        self.statements.insert(sql.to_string(), statement.clone());
        Ok(statement)
    }
}

enum Inner {
    Sqlite(rusqlite::Connection),
    Postgres(Box<RefCell<Postgres>>),
}

/// An open store connection: SQLite or PostgreSQL.
pub struct Connection {
    label: String,
    inner: Inner,
    /// How long an SQLite statement waits for another process's lock.
    busy: Duration,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Connection")
            .field("store", &self.label)
            .finish()
    }
}

/// How long to keep trying to reach a PostgreSQL server that went away.
pub const RECONNECT_BUDGET: Duration = Duration::from_secs(30);

/// The reconnect budget in force: `ATTNFLOW_DB_RETRY_SECONDS` when set (a
/// number of seconds), else [`RECONNECT_BUDGET`].
pub fn reconnect_budget() -> Duration {
    std::env::var("ATTNFLOW_DB_RETRY_SECONDS")
        .ok()
        .and_then(|text| text.trim().parse::<f64>().ok())
        .filter(|seconds| seconds.is_finite() && *seconds >= 0.0)
        .map_or(RECONNECT_BUDGET, Duration::from_secs_f64)
}

fn postgres_config(url: &PostgresUrl, label: &str) -> Result<postgres::Config, DbError> {
    let mut config: postgres::Config =
        url.as_str()
            .parse()
            .map_err(|error: postgres::Error| DbError::BadLocation {
                text: label.to_string(),
                reason: error.to_string(),
            })?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    if config.get_application_name().is_none() {
        config.application_name("attnflow");
    }
    Ok(config)
}

fn connect_postgres(
    config: &postgres::Config,
    url: &PostgresUrl,
    label: &str,
) -> Result<postgres::Client, DbError> {
    let mut client = config
        .connect(postgres::NoTls)
        .map_err(|error| DbError::connect(label, url.database(), error))?;
    // Warnings (such as "relation already exists, skipping") are for
    // people typing SQL, not for attnflow's output.
    client
        .batch_execute("SET client_min_messages = warning")
        .map_err(|error| DbError::postgres(label, "configure the session", error))?;
    Ok(client)
}

impl Connection {
    /// Opens the store at `location`. For SQLite, `sqlite_setup` (PRAGMAs)
    /// runs first; a file that is not a database is [`DbError::NotAStore`].
    pub fn open(location: &Location, sqlite_setup: &str) -> Result<Connection, DbError> {
        let label = location.to_string();
        match location {
            Location::Sqlite(path) => {
                let connection =
                    rusqlite::Connection::open(path).map_err(|source| DbError::NotAStore {
                        store: label.clone(),
                        reason: source.to_string(),
                    })?;
                Connection::from_sqlite(connection, label, sqlite_setup)
            }
            Location::Postgres(url) => {
                let config = postgres_config(url, &label)?;
                let client = connect_postgres(&config, url, &label)?;
                Ok(Connection {
                    label,
                    busy: Duration::ZERO,
                    inner: Inner::Postgres(Box::new(RefCell::new(Postgres {
                        client: Some(client),
                        config,
                        url: url.clone(),
                        statements: HashMap::new(),
                    }))),
                })
            }
        }
    }

    /// Opens a store that must already exist, for readers: an SQLite file
    /// is never created (a missing one is [`DbError::NotAStore`] saying so),
    /// and another process's lock is waited for at most `busy` instead of
    /// 30 s, so a reader can say "locked" while the writer keeps working.
    pub fn open_existing(
        location: &Location,
        sqlite_setup: &str,
        busy: Duration,
    ) -> Result<Connection, DbError> {
        let Location::Sqlite(path) = location else {
            return Connection::open(location, sqlite_setup);
        };
        let label = location.to_string();
        if !path.is_file() {
            return Err(DbError::NotAStore {
                store: label,
                reason: "no such file".into(),
            });
        }
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
            | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX
            | rusqlite::OpenFlags::SQLITE_OPEN_URI;
        let connection = rusqlite::Connection::open_with_flags(path, flags).map_err(|source| {
            DbError::NotAStore {
                store: label.clone(),
                reason: source.to_string(),
            }
        })?;
        Connection::wrap_sqlite(connection, label, sqlite_setup, busy)
    }

    /// Wraps an open SQLite connection (another crate's file, say) and runs
    /// `sqlite_setup` on it.
    pub fn from_sqlite(
        connection: rusqlite::Connection,
        label: String,
        sqlite_setup: &str,
    ) -> Result<Connection, DbError> {
        Connection::wrap_sqlite(connection, label, sqlite_setup, Duration::from_secs(30))
    }

    fn wrap_sqlite(
        connection: rusqlite::Connection,
        label: String,
        sqlite_setup: &str,
        busy: Duration,
    ) -> Result<Connection, DbError> {
        connection
            .busy_timeout(busy)
            .and_then(|()| connection.execute_batch(sqlite_setup))
            .map_err(|source| {
                let busy = matches!(
                    source.sqlite_error_code(),
                    Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
                );
                if busy {
                    // Another process holds the file: not a fault of the file.
                    DbError::sqlite(&label, "configure the store", source)
                } else {
                    DbError::NotAStore {
                        store: label.clone(),
                        reason: source.to_string(),
                    }
                }
            })?;
        Ok(Connection {
            label,
            inner: Inner::Sqlite(connection),
            busy,
        })
    }

    /// SQLite: sets the file's `journal_mode` to `mode`, waiting at most
    /// `wait` for other connections to let go (not the connection's own
    /// busy timeout, which is restored after). Whether the file is now in
    /// `mode`; always false on PostgreSQL.
    pub fn try_journal_mode(&self, mode: &str, wait: Duration) -> bool {
        let Inner::Sqlite(sqlite) = &self.inner else {
            return false;
        };
        if sqlite.busy_timeout(wait).is_err() {
            return false;
        }
        let switched = sqlite
            .query_row(&format!("PRAGMA journal_mode = {mode}"), [], |row| {
                row.get::<_, String>(0)
            })
            .is_ok_and(|now| now.eq_ignore_ascii_case(mode));
        // A failure here leaves the shorter wait, which only makes later
        // statements give up sooner; nothing is lost.
        let _ = sqlite.busy_timeout(self.busy);
        switched
    }

    /// The engine behind this connection.
    pub fn backend(&self) -> Backend {
        match self.inner {
            Inner::Sqlite(_) => Backend::Sqlite,
            Inner::Postgres(_) => Backend::Postgres,
        }
    }

    /// The store's name for messages (password hidden).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The SQLite connection, for what only SQLite does (PRAGMAs, say).
    pub fn sqlite(&self) -> Option<&rusqlite::Connection> {
        match &self.inner {
            Inner::Sqlite(connection) => Some(connection),
            Inner::Postgres(_) => None,
        }
    }

    /// Runs `sql` (one statement) and returns the rows it changed.
    pub fn execute(
        &self,
        operation: &str,
        sql: &str,
        params: &[Value<'_>],
    ) -> Result<u64, DbError> {
        match &self.inner {
            Inner::Sqlite(connection) => connection
                .prepare_cached(sql)
                .and_then(|mut statement| statement.execute(rusqlite::params_from_iter(params)))
                .map(|changed| changed as u64)
                .map_err(|source| DbError::sqlite(&self.label, operation, source)),
            Inner::Postgres(cell) => {
                let mut postgres = cell.borrow_mut();
                let statement = postgres.statement(&self.label, operation, sql)?;
                let references: Vec<&(dyn postgres::types::ToSql + Sync)> = params
                    .iter()
                    .map(|value| value as &(dyn postgres::types::ToSql + Sync))
                    .collect();
                postgres
                    .client(&self.label, operation)?
                    .execute(&statement, &references)
                    .map_err(|error| DbError::postgres(&self.label, operation, error))
            }
        }
    }

    /// Runs a query and calls `visit` with each row as it arrives (rows are
    /// not all held at once).
    pub fn for_each<E: From<DbError>>(
        &self,
        operation: &str,
        sql: &str,
        params: &[Value<'_>],
        mut visit: impl FnMut(&Row) -> Result<(), E>,
    ) -> Result<(), E> {
        match &self.inner {
            Inner::Sqlite(connection) => {
                let fail = |source| DbError::sqlite(&self.label, operation, source);
                let mut statement = connection.prepare_cached(sql).map_err(fail)?;
                let columns = statement.column_count();
                let mut rows = statement
                    .query(rusqlite::params_from_iter(params))
                    .map_err(fail)?;
                while let Some(row) = rows.next().map_err(fail)? {
                    visit(&sqlite_row(row, columns).map_err(fail)?)?;
                }
                Ok(())
            }
            Inner::Postgres(cell) => {
                let mut postgres = cell.borrow_mut();
                let statement = postgres.statement(&self.label, operation, sql)?;
                let fail = |error| DbError::postgres(&self.label, operation, error);
                let client = postgres.client(&self.label, operation)?;
                let mut rows = client.query_raw(&statement, params.iter()).map_err(fail)?;
                while let Some(row) = fallible_next(&mut rows).map_err(fail)? {
                    visit(&postgres_row(&row).map_err(fail)?)?;
                }
                Ok(())
            }
        }
    }

    /// All rows of a query.
    pub fn query(
        &self,
        operation: &str,
        sql: &str,
        params: &[Value<'_>],
    ) -> Result<Vec<Row>, DbError> {
        let mut rows = Vec::new();
        self.for_each(operation, sql, params, |row| {
            rows.push(row.clone());
            Ok::<(), DbError>(())
        })?;
        Ok(rows)
    }

    /// The first row of a query, if any.
    pub fn query_opt(
        &self,
        operation: &str,
        sql: &str,
        params: &[Value<'_>],
    ) -> Result<Option<Row>, DbError> {
        Ok(self.query(operation, sql, params)?.into_iter().next())
    }

    /// The one row a query must return.
    pub fn query_one(
        &self,
        operation: &str,
        sql: &str,
        params: &[Value<'_>],
    ) -> Result<Row, DbError> {
        self.query_opt(operation, sql, params)?
            .ok_or_else(|| DbError::Value {
                store: self.label.clone(),
                operation: operation.to_string(),
                column: 0,
                message: "the query returned no row".into(),
            })
    }

    /// One integer: `SELECT COUNT(*) ...` and the like.
    pub fn query_i64(
        &self,
        operation: &str,
        sql: &str,
        params: &[Value<'_>],
    ) -> Result<i64, DbError> {
        self.query_one(operation, sql, params)?.i64(0)
    }

    /// Runs several statements without parameters (schema changes).
    pub fn batch(&self, operation: &str, sql: &str) -> Result<(), DbError> {
        match &self.inner {
            Inner::Sqlite(connection) => connection
                .execute_batch(sql)
                .map_err(|source| DbError::sqlite(&self.label, operation, source)),
            Inner::Postgres(cell) => cell
                .borrow_mut()
                .client(&self.label, operation)?
                .batch_execute(sql)
                .map_err(|error| DbError::postgres(&self.label, operation, error)),
        }
    }

    /// Begins a write transaction. SQLite takes the write lock now (`BEGIN
    /// IMMEDIATE`), so reads inside see the latest commit; PostgreSQL
    /// writers lock the rows they touch (`FOR UPDATE`, `UPDATE`).
    pub fn begin(&self, operation: &str) -> Result<(), DbError> {
        match self.backend() {
            Backend::Sqlite => self.batch(operation, "BEGIN IMMEDIATE"),
            Backend::Postgres => self.batch(operation, "BEGIN"),
        }
    }

    /// Commits the open transaction.
    pub fn commit(&self, operation: &str) -> Result<(), DbError> {
        self.batch(operation, "COMMIT")
    }

    /// Rolls back the open transaction, if any (errors ignored: a broken
    /// connection has nothing left to roll back).
    pub fn rollback(&self) {
        match &self.inner {
            Inner::Sqlite(connection) => {
                if !connection.is_autocommit() {
                    let _ = connection.execute_batch("ROLLBACK");
                }
            }
            Inner::Postgres(cell) => {
                if let Some(client) = cell.borrow_mut().client.as_mut() {
                    if !client.is_closed() {
                        let _ = client.batch_execute("ROLLBACK");
                    }
                }
            }
        }
    }

    /// Runs `work` in one write transaction: committed when it returns
    /// `Ok`, rolled back otherwise.
    pub fn transaction<T, E: From<DbError>>(
        &self,
        operation: &str,
        work: impl FnOnce(&Connection) -> Result<T, E>,
    ) -> Result<T, E> {
        self.begin(operation)?;
        match work(self) {
            Ok(value) => match self.commit(operation) {
                Ok(()) => Ok(value),
                Err(error) => {
                    self.rollback();
                    Err(error.into())
                }
            },
            Err(error) => {
                self.rollback();
                Err(error)
            }
        }
    }

    /// Streams `data` (in the format `sql` names) into PostgreSQL with `sql` (a
    /// `COPY ... FROM STDIN`). Returns the rows written.
    pub fn copy_in(&self, operation: &str, sql: &str, data: &[u8]) -> Result<u64, DbError> {
        use std::io::Write as _;
        let Inner::Postgres(cell) = &self.inner else {
            return Err(DbError::Value {
                store: self.label.clone(),
                operation: operation.to_string(),
                column: 0,
                message: "COPY is PostgreSQL's; SQLite stores insert rows".into(),
            });
        };
        let mut postgres = cell.borrow_mut();
        let fail = |error| DbError::postgres(&self.label, operation, error);
        let client = postgres.client(&self.label, operation)?;
        let mut writer = client.copy_in(sql).map_err(fail)?;
        if let Err(error) = writer.write_all(data) {
            return Err(DbError::Lost {
                store: self.label.clone(),
                operation: operation.to_string(),
                reason: error.to_string(),
            });
        }
        writer.finish().map_err(fail)
    }

    /// Sends a notification (PostgreSQL; delivered when the transaction
    /// commits). SQLite has none: its listeners poll.
    pub fn notify(&self, channel: &str, payload: &str) -> Result<(), DbError> {
        match self.backend() {
            Backend::Sqlite => Ok(()),
            Backend::Postgres => self
                .execute(
                    "notify workers",
                    "SELECT pg_notify(?1, ?2)",
                    &[channel.into(), payload.into()],
                )
                .map(|_| ()),
        }
    }

    /// After [`DbError::Lost`]: connects again, trying for up to `budget`
    /// with growing pauses. Anything the server had not committed is gone;
    /// the caller re-reads its state. SQLite never needs it.
    pub fn reconnect(&self, budget: Duration) -> Result<(), DbError> {
        let Inner::Postgres(cell) = &self.inner else {
            return Ok(());
        };
        let mut postgres = cell.borrow_mut();
        postgres.client = None;
        postgres.statements.clear();
        let deadline = Instant::now() + budget;
        let mut pause = Duration::from_millis(50);
        loop {
            match connect_postgres(&postgres.config, &postgres.url, &self.label) {
                Ok(client) => {
                    postgres.client = Some(client);
                    return Ok(());
                }
                Err(error) if Instant::now() + pause < deadline && !is_permanent(&error) => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                Err(error) => {
                    return Err(match error {
                        DbError::Unreachable { reason, .. } | DbError::Lost { reason, .. } => {
                            DbError::Lost {
                                store: self.label.clone(),
                                operation: format!(
                                    "reconnect (gave up after {} s)",
                                    budget.as_secs()
                                ),
                                reason,
                            }
                        }
                        other => other,
                    })
                }
            }
        }
    }

    /// A second connection that waits for notifications on `channel`.
    pub fn listener(&self, channel: &str) -> Result<Listener, DbError> {
        match &self.inner {
            Inner::Sqlite(_) => Ok(Listener {
                postgres: None,
                channel: channel.to_string(),
                label: self.label.clone(),
            }),
            Inner::Postgres(cell) => {
                let postgres = cell.borrow();
                let mut listener = Listener {
                    postgres: Some((postgres.config.clone(), postgres.url.clone(), None)),
                    channel: channel.to_string(),
                    label: self.label.clone(),
                };
                listener.connect()?;
                Ok(listener)
            }
        }
    }
}

/// A refusal that waiting will not cure.
fn is_permanent(error: &DbError) -> bool {
    matches!(
        error,
        DbError::AuthRefused { .. } | DbError::MissingDatabase { .. } | DbError::BadLocation { .. }
    )
}

fn fallible_next(
    rows: &mut postgres::RowIter<'_>,
) -> Result<Option<postgres::Row>, postgres::Error> {
    use postgres::fallible_iterator::FallibleIterator as _;
    rows.next()
}

/// Waits for notifications (PostgreSQL `LISTEN`); on SQLite it only
/// sleeps, and callers poll.
pub struct Listener {
    postgres: Option<(postgres::Config, PostgresUrl, Option<postgres::Client>)>,
    channel: String,
    label: String,
}

impl Listener {
    fn connect(&mut self) -> Result<(), DbError> {
        let Some((config, url, client)) = self.postgres.as_mut() else {
            return Ok(());
        };
        let mut fresh = connect_postgres(config, url, &self.label)?;
        let quoted = self.channel.replace('"', "\"\"");
        fresh
            .batch_execute(&format!("LISTEN \"{quoted}\""))
            .map_err(|error| DbError::postgres(&self.label, "listen", error))?;
        *client = Some(fresh);
        Ok(())
    }

    /// Waits up to `timeout`; true when a notification arrived. A broken
    /// listening connection is replaced quietly (callers poll anyway).
    pub fn wait(&mut self, timeout: Duration) -> bool {
        let Some((_, _, client)) = self.postgres.as_mut() else {
            std::thread::sleep(timeout);
            return false;
        };
        let Some(active) = client.as_mut().filter(|client| !client.is_closed()) else {
            std::thread::sleep(timeout);
            let _ = self.connect();
            return false;
        };
        use postgres::fallible_iterator::FallibleIterator as _;
        let received = {
            let mut notifications = active.notifications();
            let first = notifications.timeout_iter(timeout).next();
            if matches!(first, Ok(Some(_))) {
                // Drain what else arrived: one wake-up is enough.
                while let Ok(Some(_)) = notifications.iter().next() {}
            }
            first
        };
        match received {
            Ok(Some(_)) => true,
            Ok(None) => false,
            Err(_) => {
                *client = None;
                false
            }
        }
    }
}
