//! Where a store lives: `--db PATH` is an SQLite file, `--db
//! postgres://user@host:port/db` a PostgreSQL database. `ATTNFLOW_DB` gives
//! the default when the flag is absent.

use std::fmt;
use std::path::PathBuf;

use crate::error::DbError;

/// The environment variable naming the default store.
pub const DEFAULT_VARIABLE: &str = "ATTNFLOW_DB";

/// The store used when neither `--db` nor `ATTNFLOW_DB` names one.
pub const DEFAULT_PATH: &str = "attnflow.db";

/// A parsed `--db` value.
#[derive(Clone, PartialEq, Eq)]
pub enum Location {
    /// An SQLite file (created on first use).
    Sqlite(PathBuf),
    /// A PostgreSQL database.
    Postgres(PostgresUrl),
}

/// A checked `postgres://` URL. Its `Display` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresUrl {
    text: String,
    user: String,
    host: String,
    port: u16,
    database: String,
    has_password: bool,
}

impl PostgresUrl {
    /// The URL as given (with its password): what the client connects with.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The database name.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// The role the URL logs in as.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The same server and role, another database (tests create one each).
    pub fn with_database(&self, database: &str) -> PostgresUrl {
        let (head, _) = self.text.rsplit_once('/').unwrap_or((&self.text, ""));
        let query = self
            .text
            .split_once('?')
            .map(|(_, query)| format!("?{query}"))
            .unwrap_or_default();
        let head = head.split_once('?').map_or(head, |(head, _)| head);
        PostgresUrl {
            text: format!("{head}/{database}{query}"),
            database: database.to_string(),
            ..self.clone()
        }
    }

    fn parse(text: &str) -> Result<PostgresUrl, DbError> {
        let bad = |reason: &str| DbError::BadLocation {
            text: redact(text),
            reason: reason.to_string(),
        };
        let rest = text
            .strip_prefix("postgres://")
            .or_else(|| text.strip_prefix("postgresql://"))
            .ok_or_else(|| bad("a PostgreSQL URL starts with postgres://"))?;
        let (rest, _query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, database) = rest.split_once('/').ok_or_else(|| {
            bad("the URL names no database: write postgres://USER@HOST:PORT/DATABASE")
        })?;
        if database.is_empty() || database.contains('/') {
            return Err(bad(
                "the URL names no database: write postgres://USER@HOST:PORT/DATABASE",
            ));
        }
        let (credentials, server) = match authority.rsplit_once('@') {
            Some((credentials, server)) => (Some(credentials), server),
            None => (None, authority),
        };
        let (user, has_password) = match credentials {
            Some(credentials) => match credentials.split_once(':') {
                Some((user, _)) => (user, true),
                None => (credentials, false),
            },
            None => ("", false),
        };
        if credentials.is_some() && user.is_empty() {
            return Err(bad("the user name before `@` is empty"));
        }
        let (host, port) = match server.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || server.starts_with('[') => {
                let port: u16 = port
                    .parse()
                    .map_err(|_| bad(&format!("port `{port}` is not a number from 1 to 65535")))?;
                if port == 0 {
                    return Err(bad("port 0 is not a port"));
                }
                (host, port)
            }
            _ => (server, 5432),
        };
        if host.is_empty() {
            return Err(bad(
                "the URL names no host: write postgres://USER@HOST:PORT/DATABASE",
            ));
        }
        // The client library parses the rest (query options such as
        // connect_timeout); its refusal is a bad URL too.
        text.parse::<postgres::Config>()
            .map_err(|error| bad(&error.to_string()))?;
        Ok(PostgresUrl {
            text: text.to_string(),
            user: user.to_string(),
            host: host.to_string(),
            port,
            database: database.to_string(),
            has_password,
        })
    }
}

impl fmt::Display for PostgresUrl {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let user = if self.user.is_empty() {
            String::new()
        } else if self.has_password {
            format!("{}:***@", self.user)
        } else {
            format!("{}@", self.user)
        };
        write!(
            formatter,
            "postgres://{user}{}:{}/{}",
            self.host, self.port, self.database
        )
    }
}

impl fmt::Debug for PostgresUrl {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "PostgresUrl({self})")
    }
}

/// A URL with any password replaced, for messages.
fn redact(text: &str) -> String {
    let Some((scheme, rest)) = text.split_once("://") else {
        return text.to_string();
    };
    match rest.split_once('@') {
        Some((credentials, server)) if credentials.contains(':') => {
            let user = credentials.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{server}")
        }
        _ => text.to_string(),
    }
}

impl Location {
    /// Parses a `--db` value: a `postgres://` (or `postgresql://`) URL, or
    /// else a file path. Another scheme is refused rather than taken for a
    /// file name.
    pub fn parse(text: &str) -> Result<Location, DbError> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(DbError::BadLocation {
                text: text.to_string(),
                reason: "empty: give an SQLite file path or postgres://USER@HOST:PORT/DATABASE"
                    .into(),
            });
        }
        if trimmed.starts_with("postgres://") || trimmed.starts_with("postgresql://") {
            return PostgresUrl::parse(trimmed).map(Location::Postgres);
        }
        if let Some((scheme, _)) = trimmed.split_once("://") {
            if !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '+')
            {
                return Err(DbError::BadLocation {
                    text: redact(trimmed),
                    reason: format!(
                        "`{scheme}://` is not a store attnflow knows: give an SQLite file path or postgres://USER@HOST:PORT/DATABASE"
                    ),
                });
            }
        }
        Ok(Location::Sqlite(PathBuf::from(text)))
    }

    /// The store named by `--db`, else by `ATTNFLOW_DB`, else
    /// [`DEFAULT_PATH`].
    pub fn resolve(flag: Option<&str>) -> Result<Location, DbError> {
        match flag {
            Some(text) => Location::parse(text),
            None => match std::env::var(DEFAULT_VARIABLE) {
                Ok(text) if !text.trim().is_empty() => Location::parse(&text),
                _ => Location::parse(DEFAULT_PATH),
            },
        }
    }

    /// Whether this is a PostgreSQL store.
    pub fn is_postgres(&self) -> bool {
        matches!(self, Location::Postgres(_))
    }

    /// The SQLite path, if this is one.
    pub fn sqlite_path(&self) -> Option<&std::path::Path> {
        match self {
            Location::Sqlite(path) => Some(path),
            Location::Postgres(_) => None,
        }
    }

    /// What to pass to `--db` to reach the same store from another process
    /// (a file path made absolute; the URL as given).
    pub fn argument(&self) -> String {
        match self {
            Location::Sqlite(path) => std::fs::canonicalize(path)
                .unwrap_or_else(|_| path.clone())
                .display()
                .to_string(),
            Location::Postgres(url) => url.as_str().to_string(),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Sqlite(path) => write!(formatter, "{}", path.display()),
            Location::Postgres(url) => write!(formatter, "{url}"),
        }
    }
}

impl fmt::Debug for Location {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "Location({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_urls_are_told_apart() {
        assert_eq!(
            Location::parse("runs/attnflow.db").unwrap(),
            Location::Sqlite("runs/attnflow.db".into())
        );
        let Location::Postgres(url) =
            Location::parse("postgres://ann:secret@db.example:6543/runs").unwrap()
        else {
            panic!("a URL is PostgreSQL");
        };
        assert_eq!(url.database(), "runs");
        assert_eq!(url.user(), "ann");
        assert_eq!(url.to_string(), "postgres://ann:***@db.example:6543/runs");
        assert!(Location::parse("postgresql://ann@localhost/runs")
            .unwrap()
            .is_postgres());
    }

    #[test]
    fn bad_urls_say_what_is_wrong_and_hide_the_password() {
        let cases = [
            ("", "empty"),
            ("mysql://ann@host/db", "not a store attnflow knows"),
            ("postgres://ann@host:5432", "names no database"),
            ("postgres://ann@host:5432/", "names no database"),
            ("postgres://ann@host:port/db", "port `port`"),
            ("postgres://ann@host:99999/db", "port `99999`"),
            ("postgres://ann@:5432/db", "names no host"),
            ("postgres://:pw@host/db", "user name"),
        ];
        for (text, expected) in cases {
            let error = Location::parse(text).unwrap_err();
            assert!(error.is_bad_input(), "{text}: {error}");
            assert!(error.to_string().contains(expected), "{text}: {error}");
        }
        let error = Location::parse("postgres://ann:hunter2@host:x/db").unwrap_err();
        assert!(!error.to_string().contains("hunter2"), "{error}");
    }

    #[test]
    fn another_database_on_the_same_server() {
        let Location::Postgres(url) =
            Location::parse("postgres://postgres@127.0.0.1:5432/postgres?connect_timeout=5")
                .unwrap()
        else {
            unreachable!()
        };
        let other = url.with_database("test_1");
        assert_eq!(
            other.as_str(),
            "postgres://postgres@127.0.0.1:5432/test_1?connect_timeout=5"
        );
        assert_eq!(other.database(), "test_1");
    }
}
