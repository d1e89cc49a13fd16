//! The connection, migrations and error classes on both backends: the same
//! test body runs against an SQLite file and a fresh PostgreSQL database.

use attnflow_store::{args, Backend, Component, Connection, DbError, Location, Migration};

fn sqlite(directory: &tempfile::TempDir) -> Connection {
    let location = Location::parse(directory.path().join("s.db").to_str().unwrap()).unwrap();
    Connection::open(&location, "PRAGMA journal_mode = WAL;").unwrap()
}

fn postgres() -> Option<Connection> {
    let url = attnflow_testkit::postgres_database()?;
    Some(Connection::open(&Location::parse(&url).unwrap(), "").unwrap())
}

fn both(test: impl Fn(&Connection)) {
    let directory = tempfile::tempdir().unwrap();
    test(&sqlite(&directory));
    if let Some(connection) = postgres() {
        assert_eq!(connection.backend(), Backend::Postgres);
        test(&connection);
    }
}

const STEPS: &[Migration] = &[
    Migration {
        version: 1,
        sqlite: "CREATE TABLE t_items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, size BIGINT, raw BLOB)",
        postgres: "CREATE TABLE t_items (id BIGSERIAL PRIMARY KEY, name TEXT NOT NULL, size BIGINT, raw BYTEA)",
    },
    Migration {
        version: 2,
        sqlite: "ALTER TABLE t_items ADD COLUMN score DOUBLE PRECISION",
        postgres: "ALTER TABLE t_items ADD COLUMN score DOUBLE PRECISION",
    },
];

const COMPONENT: Component = Component {
    name: "test",
    version_table: "t_schema_version",
    migrations: STEPS,
};

#[test]
fn statements_values_and_transactions_agree() {
    both(|connection| {
        assert_eq!(COMPONENT.version(connection).unwrap(), 0);
        assert_eq!(COMPONENT.migrate(connection).unwrap(), (0, 2));
        assert_eq!(COMPONENT.migrate(connection).unwrap(), (2, 2));
        let raw: &[u8] = &[0, 159, 146, 150];
        let id = connection
            .query_i64(
                "insert",
                "INSERT INTO t_items (name, size, raw, score) VALUES (?1, ?2, ?3, ?4) RETURNING id",
                args!["a'b", Some(7_i64), raw, 0.5],
            )
            .unwrap();
        connection
            .execute(
                "insert",
                "INSERT INTO t_items (name) VALUES (?1)",
                args!["second"],
            )
            .unwrap();
        let row = connection
            .query_one(
                "read",
                "SELECT name, size, raw, score FROM t_items WHERE id = ?1",
                args![id],
            )
            .unwrap();
        assert_eq!(row.text(0).unwrap(), "a'b");
        assert_eq!(row.opt_i64(1).unwrap(), Some(7));
        assert_eq!(row.bytes(2).unwrap(), raw);
        assert_eq!(row.opt_f64(3).unwrap(), Some(0.5));
        // The same parameter twice, once only to test for NULL.
        let named = connection
            .query_i64(
                "count",
                "SELECT COUNT(*) FROM t_items WHERE (CAST(?1 AS TEXT) IS NULL OR name = ?1)",
                args![None::<&str>],
            )
            .unwrap();
        assert_eq!(named, 2);
        // A failed transaction leaves nothing behind.
        let failed: Result<(), DbError> = connection.transaction("fail", |connection| {
            connection.execute(
                "insert",
                "INSERT INTO t_items (name) VALUES (?1)",
                args!["gone"],
            )?;
            connection.execute("insert", "INSERT INTO t_items (name) VALUES (NULL)", &[])?;
            Ok(())
        });
        assert!(failed.is_err());
        let count = connection
            .query_i64("count", "SELECT COUNT(*) FROM t_items", &[])
            .unwrap();
        assert_eq!(count, 2);
        let mut names = Vec::new();
        connection
            .for_each("list", "SELECT name FROM t_items ORDER BY id", &[], |row| {
                names.push(row.text(0)?);
                Ok::<(), DbError>(())
            })
            .unwrap();
        assert_eq!(names, ["a'b", "second"]);
        // A store from a newer attnflow is refused, as bad input.
        connection
            .execute("bump", "UPDATE t_schema_version SET version = 9", &[])
            .unwrap();
        let error = COMPONENT.migrate(connection).unwrap_err();
        assert!(
            matches!(
                error,
                DbError::SchemaTooNew {
                    found: 9,
                    supported: 2,
                    ..
                }
            ),
            "{error}"
        );
        assert!(error.is_bad_input());
    });
}

#[test]
fn a_file_that_is_not_a_database_is_bad_input() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("notes.db");
    std::fs::write(
        &path,
        "these are notes, not a database, and long enough to have a header",
    )
    .unwrap();
    let connection = Connection::open(&Location::Sqlite(path), "PRAGMA journal_mode = WAL;");
    let error = connection
        .and_then(|connection| COMPONENT.migrate(&connection).map(|_| ()))
        .unwrap_err();
    assert!(error.is_bad_input(), "{error}");
}

#[test]
fn connection_failures_are_classified() {
    let Some(server) = attnflow_testkit::postgres_url() else {
        return;
    };
    let open = |url: &str| Connection::open(&Location::parse(url).unwrap(), "").unwrap_err();
    let missing = open(&attnflow_testkit::with_database(
        &server,
        "no_such_database_here",
    ));
    assert!(
        matches!(missing, DbError::MissingDatabase { .. }),
        "{missing}"
    );
    let refused = open(&server.replacen("://postgres@", "://no_such_role@", 1));
    assert!(matches!(refused, DbError::AuthRefused { .. }), "{refused}");
    // A port nothing listens on (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let unreachable = open(&format!("postgres://postgres@127.0.0.1:{port}/postgres"));
    assert!(
        matches!(unreachable, DbError::Unreachable { .. }),
        "{unreachable}"
    );
    for error in [missing, refused, unreachable] {
        assert!(error.is_bad_input(), "{error}");
    }
}

#[test]
fn a_lost_connection_is_reported_and_reconnects() {
    let Some(connection) = postgres() else {
        return;
    };
    let Some(server) = attnflow_testkit::postgres_url() else {
        return;
    };
    let pid = connection
        .query_i64("pid", "SELECT pg_backend_pid()", &[])
        .unwrap();
    let mut admin = postgres::Client::connect(&server, postgres::NoTls).unwrap();
    admin
        .execute("SELECT pg_terminate_backend($1)", &[&(pid as i32)])
        .unwrap();
    let error = connection.query_i64("after", "SELECT 1", &[]).unwrap_err();
    assert!(error.is_lost(), "{error}");
    assert!(!error.is_bad_input());
    connection
        .reconnect(std::time::Duration::from_secs(10))
        .unwrap();
    assert_eq!(connection.query_i64("after", "SELECT 1", &[]).unwrap(), 1);
}

#[test]
fn notifications_wake_a_listener() {
    let Some(connection) = postgres() else {
        return;
    };
    let mut listener = connection.listener("attnflow_test").unwrap();
    assert!(!listener.wait(std::time::Duration::from_millis(20)));
    connection
        .transaction("notify", |connection| {
            connection.notify("attnflow_test", "q")
        })
        .unwrap();
    assert!(listener.wait(std::time::Duration::from_secs(5)));
}
