//! `--db` as a user meets it: bad locations exit 2 with the reason, a
//! server lost mid-run exits 1 and the run resumes, `store copy` moves a
//! history between SQLite and PostgreSQL both ways, and `data check`
//! queues into PostgreSQL.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_attnflow")
}

fn attnflow(arguments: &[&str]) -> Output {
    Command::new(binary()).args(arguments).output().unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn examples(path: &str) -> String {
    format!("{}/../../examples/{path}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn bad_store_locations_exit_2_with_the_reason() {
    let Some(server) = attnflow_testkit::postgres_url() else {
        return;
    };
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let newer = attnflow_testkit::postgres_database().unwrap();
    assert!(attnflow(&["store", "migrate", "--db", &newer])
        .status
        .success());
    let mut client = postgres::Client::connect(&newer, postgres::NoTls).unwrap();
    client
        .batch_execute(
            "UPDATE wf_schema_version SET version = 99; \
             UPDATE data_schema_version SET version = 99",
        )
        .unwrap();
    let cases = [
        (
            "mysql://ann@localhost/runs".to_string(),
            "not a store attnflow knows",
        ),
        (
            "postgres://ann@localhost:5432".to_string(),
            "names no database",
        ),
        (
            attnflow_testkit::with_database(&server, "no_such_database"),
            "does not exist",
        ),
        (
            server.replacen("://postgres@", "://no_such_role@", 1),
            "refused the login",
        ),
        (
            format!("postgres://postgres@127.0.0.1:{closed_port}/postgres"),
            "cannot reach",
        ),
        (newer.clone(), "newer than this attnflow supports"),
    ];
    let runs = tempfile::tempdir().unwrap();
    for (index, (db, expected)) in cases.iter().enumerate() {
        // Every command that opens a store says the same, with exit 2:
        // the main job (here or on workers) and the workers themselves.
        let run_dir = runs.path().join(format!("run-{index}"));
        let run_dir = run_dir.to_str().unwrap();
        for arguments in [
            vec!["workflow", "runs", "--db", db],
            vec!["workflow", "run", "--default", "--quiet", "--db", db],
            vec!["workflow", "submit", "--db", db],
            vec!["worker", "--exit-when-idle", "0", "--quiet", "--db", db],
            vec![
                "run", "--rows", "50", "--json", "--out", run_dir, "--db", db,
            ],
            vec![
                "run", "--rows", "50", "--submit", "--out", run_dir, "--db", db,
            ],
        ] {
            let output = attnflow(&arguments);
            assert_eq!(
                output.status.code(),
                Some(2),
                "{arguments:?}: {}",
                stderr(&output)
            );
            assert!(
                stderr(&output).contains(expected),
                "{arguments:?}: {}",
                stderr(&output)
            );
        }
    }
    let schema = examples("data/orders.toml");
    let data = examples("data/orders.csv");
    for (db, expected) in &cases {
        let output = attnflow(&["data", "check", &schema, &data, "--db", db]);
        assert_eq!(output.status.code(), Some(2), "{db}: {}", stderr(&output));
        assert!(
            stderr(&output).contains(expected),
            "{db}: {}",
            stderr(&output)
        );
    }
}

#[test]
fn a_server_lost_mid_run_exits_1_and_the_run_resumes() {
    let Some(database) = attnflow_testkit::postgres_database() else {
        return;
    };
    let name = database.rsplit('/').next().unwrap().to_string();
    let admin_url = attnflow_testkit::postgres_url().unwrap();
    let directory = tempfile::tempdir().unwrap();
    let spec = directory.path().join("slow.toml");
    std::fs::write(
        &spec,
        "[workflow]\nname = \"slow\"\ninitial = \"Wait\"\nlease_ms = 600\n\
         [states.Wait]\naction = { task = \"sleep\", args = { ms = 1500 } }\n\
         on = { ok = \"Done\", failed = \"Done\" }\n[states.Done]\nterminal = \"success\"\n",
    )
    .unwrap();
    let child = Command::new(binary())
        .args([
            "workflow",
            "run",
            spec.to_str().unwrap(),
            "--quiet",
            "--db",
            &database,
        ])
        .env("ATTNFLOW_DB_RETRY_SECONDS", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut admin = postgres::Client::connect(&admin_url, postgres::NoTls).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let started: i64 = postgres::Client::connect(&database, postgres::NoTls)
            .and_then(|mut client| {
                client.query_one(
                    "SELECT COUNT(*) FROM wf_events WHERE kind = 'attempt_started'",
                    &[],
                )
            })
            .map(|row| row.get(0))
            .unwrap_or(0);
        if started > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the attempt never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The server goes away for this database: connections cut, new ones refused.
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {name} ALLOW_CONNECTIONS false; \
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
        ))
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(
        message.contains("lost the connection") && message.contains("resumable"),
        "{message}"
    );
    admin
        .batch_execute(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"))
        .unwrap();
    let resumed = attnflow(&["workflow", "resume", "1", "--quiet", "--db", &database]);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    let shown = attnflow(&["workflow", "show", "1", "--json", "--db", &database]);
    let value: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(value["run"]["status"], "succeeded");
    let reruns = value["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|event| event["kind"] == "attempt_started")
        .count();
    assert_eq!(reruns, 2, "the interrupted attempt ran again with its key");
}

fn counts(output: &Output) -> Vec<(String, u64)> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let table = words.next()?.to_string();
            let rows = words.next()?.parse().ok()?;
            (words.next() == Some("rows")).then_some((table, rows))
        })
        .collect()
}

#[test]
fn store_copy_moves_a_history_both_ways_and_data_check_queues_into_postgres() {
    let Some(postgres) = attnflow_testkit::postgres_database() else {
        return;
    };
    let directory = tempfile::tempdir().unwrap();
    let sqlite = directory.path().join("history.db");
    let sqlite = sqlite.to_str().unwrap();
    let (schema, data) = (examples("data/orders.toml"), examples("data/orders.csv"));
    assert!(
        attnflow(&["workflow", "run", "--default", "--quiet", "--db", sqlite])
            .status
            .success()
    );
    let checked = attnflow(&["data", "check", &schema, &data, "--db", sqlite, "--json"]);
    assert!(
        checked.status.code().is_some_and(|code| code <= 1),
        "{}",
        stderr(&checked)
    );

    let forward = attnflow(&["store", "copy", "--from", sqlite, "--to", &postgres]);
    assert!(forward.status.success(), "{}", stderr(&forward));
    let copied = counts(&forward);
    assert!(
        copied
            .iter()
            .any(|(table, rows)| table == "wf_events" && *rows > 5),
        "{copied:?}"
    );
    assert!(
        copied
            .iter()
            .any(|(table, rows)| table == "data_queue" && *rows > 0),
        "{copied:?}"
    );
    // The same history reads the same from both.
    let show = |db: &str| {
        let output = attnflow(&["workflow", "show", "1", "--json", "--db", db]);
        let value: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        (value["run"].clone(), value["events"].clone())
    };
    assert_eq!(show(sqlite), show(&postgres));
    // New runs continue after the copied ids.
    let more = attnflow(&[
        "workflow",
        "run",
        "--default",
        "--json",
        "--quiet",
        "--db",
        &postgres,
    ]);
    let value: serde_json::Value = serde_json::from_slice(&more.stdout).unwrap();
    assert_eq!(value["id"], 2);
    // A copy never merges histories.
    let again = attnflow(&["store", "copy", "--from", sqlite, "--to", &postgres]);
    assert_eq!(again.status.code(), Some(2), "{}", stderr(&again));

    // The copied queue keeps `unique` across runs: the same ids again are
    // all duplicates now.
    let twice = attnflow(&["data", "check", &schema, &data, "--db", &postgres, "--json"]);
    let twice: serde_json::Value = serde_json::from_slice(&twice.stdout).unwrap();
    assert_eq!(twice["accepted"], 0, "{twice:#}");

    // data check into a fresh PostgreSQL database (COPY) routes exactly as
    // into a fresh SQLite file.
    let fresh = attnflow_testkit::postgres_database().unwrap();
    let into_postgres = attnflow(&["data", "check", &schema, &data, "--db", &fresh, "--json"]);
    let on_postgres: serde_json::Value = serde_json::from_slice(&into_postgres.stdout).unwrap();
    let on_sqlite: serde_json::Value = serde_json::from_slice(&checked.stdout).unwrap();
    for field in ["read", "accepted", "quarantined", "by_rule"] {
        assert_eq!(on_postgres[field], on_sqlite[field], "{field}");
    }

    let back = directory.path().join("back.db");
    let back = back.to_str().unwrap();
    let backward = attnflow(&["store", "copy", "--from", &postgres, "--to", back]);
    assert!(backward.status.success(), "{}", stderr(&backward));
    let returned = counts(&backward);
    let runs = |list: &[(String, u64)]| {
        list.iter()
            .find(|(table, _)| table == "wf_runs")
            .map(|(_, rows)| *rows)
    };
    assert_eq!(runs(&returned), Some(2));
    assert_eq!(show(back), show(&postgres));
}
