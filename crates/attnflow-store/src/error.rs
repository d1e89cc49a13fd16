//! Store errors, classified the way the CLI needs them: the user's fault
//! (exit 2), a lost server (retry, then exit 1 with the run resumable), or
//! the work failed (exit 1).

/// What went wrong talking to a store.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// `--db` is neither a file path nor a usable `postgres://` URL.
    #[error("--db {text}: {reason}")]
    BadLocation {
        /// The value given (password hidden).
        text: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The server refused the login (unknown role, wrong password).
    #[error("{store}: the server refused the login: {reason}")]
    AuthRefused {
        /// The store (password hidden).
        store: String,
        /// The server's words.
        reason: String,
    },
    /// The server has no such database.
    #[error("{store}: database `{database}` does not exist; create it first (for example `createdb {database}`)")]
    MissingDatabase {
        /// The store (password hidden).
        store: String,
        /// The database named in the URL.
        database: String,
    },
    /// No server answered at the URL's host and port.
    #[error("{store}: cannot reach the server: {reason}")]
    Unreachable {
        /// The store (password hidden).
        store: String,
        /// Why.
        reason: String,
    },
    /// The file exists but is not an SQLite database (or cannot be opened).
    #[error("{store}: not a usable SQLite store: {reason}")]
    NotAStore {
        /// The file.
        store: String,
        /// Why.
        reason: String,
    },
    /// The store was written by a newer attnflow.
    #[error("{store}: {component} schema version {found} is newer than this attnflow supports ({supported}); use a newer attnflow")]
    SchemaTooNew {
        /// The store.
        store: String,
        /// Whose tables (`workflow`, `data`).
        component: String,
        /// The store's version.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },
    /// The connection to the server broke mid-work (server restarted or
    /// gone). Work in progress is resumable once it is back.
    #[error("{store}: lost the connection to the server while trying to {operation}: {reason}")]
    Lost {
        /// The store.
        store: String,
        /// What the store was doing.
        operation: String,
        /// Why.
        reason: String,
    },
    /// SQLite refused an operation.
    #[error("{store}: {operation}: {source}")]
    Sqlite {
        /// The file.
        store: String,
        /// What the store was doing.
        operation: String,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// PostgreSQL refused an operation.
    #[error("{store}: {operation}: {message}")]
    Postgres {
        /// The store.
        store: String,
        /// What the store was doing.
        operation: String,
        /// The server's message.
        message: String,
        /// The SQLSTATE code, when the server sent one.
        code: Option<String>,
    },
    /// A value read back has an unexpected type or is missing.
    #[error("{store}: {operation}: column {column}: {message}")]
    Value {
        /// The store.
        store: String,
        /// What the store was doing.
        operation: String,
        /// The column index.
        column: usize,
        /// What was wrong.
        message: String,
    },
}

impl DbError {
    /// Whether the fault is the user's input (a bad URL, a refused login,
    /// a missing database, a schema from a newer attnflow, a file that is
    /// not a store): exit code 2.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            DbError::BadLocation { .. }
                | DbError::AuthRefused { .. }
                | DbError::MissingDatabase { .. }
                | DbError::Unreachable { .. }
                | DbError::NotAStore { .. }
                | DbError::SchemaTooNew { .. }
        )
    }

    /// Whether the server went away mid-work: reconnecting may help.
    pub fn is_lost(&self) -> bool {
        matches!(self, DbError::Lost { .. })
    }

    /// The SQLSTATE of a PostgreSQL error.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            DbError::Postgres { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    /// Whether the statement failed on a unique or primary key (both
    /// backends): two writers raced for the same row.
    pub fn is_conflict(&self) -> bool {
        match self {
            DbError::Postgres { code, .. } => code.as_deref() == Some("23505"),
            DbError::Sqlite { source, .. } => matches!(
                source.sqlite_error_code(),
                Some(rusqlite::ErrorCode::ConstraintViolation)
            ),
            _ => false,
        }
    }

    pub(crate) fn sqlite(store: &str, operation: &str, source: rusqlite::Error) -> DbError {
        let not_a_database = matches!(
            source.sqlite_error_code(),
            Some(rusqlite::ErrorCode::NotADatabase)
        );
        if not_a_database {
            return DbError::NotAStore {
                store: store.to_string(),
                reason: source.to_string(),
            };
        }
        DbError::Sqlite {
            store: store.to_string(),
            operation: operation.to_string(),
            source,
        }
    }

    /// Classifies a PostgreSQL client error met while doing `operation`.
    pub(crate) fn postgres(store: &str, operation: &str, error: postgres::Error) -> DbError {
        if let Some(database) = error.as_db_error() {
            let code = database.code().code();
            let lost = code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03");
            if lost {
                return DbError::Lost {
                    store: store.to_string(),
                    operation: operation.to_string(),
                    reason: database.message().to_string(),
                };
            }
            return DbError::Postgres {
                store: store.to_string(),
                operation: operation.to_string(),
                message: database.message().to_string(),
                code: Some(code.to_string()),
            };
        }
        // No server error: the socket closed, or I/O on it failed.
        let io = std::error::Error::source(&error)
            .is_some_and(|source| source.downcast_ref::<std::io::Error>().is_some());
        if error.is_closed() || io {
            return DbError::Lost {
                store: store.to_string(),
                operation: operation.to_string(),
                reason: error.to_string(),
            };
        }
        DbError::Postgres {
            store: store.to_string(),
            operation: operation.to_string(),
            message: error.to_string(),
            code: None,
        }
    }

    /// Classifies a failure to connect: login refused, no such database,
    /// no server.
    pub(crate) fn connect(store: &str, database: &str, error: postgres::Error) -> DbError {
        if let Some(server) = error.as_db_error() {
            let code = server.code().code();
            if code == "3D000" {
                return DbError::MissingDatabase {
                    store: store.to_string(),
                    database: database.to_string(),
                };
            }
            if code.starts_with("28") {
                return DbError::AuthRefused {
                    store: store.to_string(),
                    reason: server.message().to_string(),
                };
            }
            if matches!(code, "57P03" | "53300") {
                // Starting up, shutting down, or full: worth waiting for.
                return DbError::Lost {
                    store: store.to_string(),
                    operation: "connect".into(),
                    reason: server.message().to_string(),
                };
            }
        }
        let reason = std::error::Error::source(&error)
            .map(|source| source.to_string())
            .unwrap_or_else(|| error.to_string());
        DbError::Unreachable {
            store: store.to_string(),
            reason,
        }
    }
}
