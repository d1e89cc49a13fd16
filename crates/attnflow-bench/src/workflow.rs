//! `attnflow bench workflow`: durable transitions per second and the
//! claim latency of workers on one store, for several worker counts, and
//! (on PostgreSQL) `pgbench -N` at 16 clients on the same server, the
//! ceiling for small durable transactions.
//!
//! Each round submits `runs_per_worker × workers` runs of a chain of
//! `steps` no-op states, then one worker with that many slots drives them
//! all. A transition is one durable commit (the step's completion, its
//! event, the run's move and the next step's start). The claim latency is
//! measured from when a run became runnable to when a slot claimed it, so
//! it includes time spent queued behind other runs.

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use attnflow_store::{Location, PostgresUrl};
use serde::Serialize;

use attnflow_workflow::worker::{run_worker, WorkerError, WorkerEvent, WorkerOptions};
use attnflow_workflow::{Spec, Store, StoreError, TaskRegistry};

use crate::protocol::{run_rounds, Protocol, Rounds};

/// What to measure.
#[derive(Debug, Clone)]
pub struct WorkflowBenchOptions {
    /// Worker counts, one round each.
    pub workers: Vec<usize>,
    /// States per run (each one transition).
    pub steps: usize,
    /// Runs queued per worker slot.
    pub runs_per_worker: usize,
    /// Seconds of `pgbench -N` (PostgreSQL only; 0 skips it).
    pub pgbench_seconds: u32,
}

impl Default for WorkflowBenchOptions {
    fn default() -> Self {
        WorkflowBenchOptions {
            workers: vec![1, 4, 16],
            steps: 10,
            // Long enough (3,200 transitions at 16 workers) that starting
            // the slots and draining the last runs do not set the figure.
            runs_per_worker: 20,
            pgbench_seconds: 10,
        }
    }
}

/// One round.
#[derive(Debug, Clone, Serialize)]
pub struct WorkflowBenchRow {
    /// Worker slots.
    pub workers: usize,
    /// Durable transitions recorded.
    pub transitions: u64,
    /// From the first claim to the last run's end.
    pub seconds: f64,
    /// Transitions per second.
    pub transitions_per_second: f64,
    /// Median claim latency (ms).
    pub claim_p50_ms: f64,
    /// 99th percentile claim latency (ms).
    pub claim_p99_ms: f64,
}

/// The whole bench.
#[derive(Debug, Clone, Serialize)]
pub struct WorkflowBenchReport {
    /// The store (password hidden).
    pub store: String,
    /// `sqlite` or `postgres`.
    pub backend: String,
    /// One row per worker count.
    pub rows: Vec<WorkflowBenchRow>,
    /// `pgbench -N` transactions per second at 16 clients, when run.
    pub pgbench_tps_16: Option<f64>,
    /// Why pgbench did not run, when it did not.
    pub pgbench_note: Option<String>,
    /// The largest round's transitions/s over pgbench's TPS.
    pub ratio: Option<f64>,
    /// Load average (1 min) before and after.
    pub load_before: Option<f64>,
    /// Load average (1 min) after.
    pub load_after: Option<f64>,
}

fn chain_spec(name: &str, steps: usize) -> Result<Spec, StoreError> {
    let mut text = format!("[workflow]\nname = \"{name}\"\ninitial = \"S0\"\n");
    for index in 0..steps {
        let next = if index + 1 == steps {
            "Done".to_string()
        } else {
            format!("S{}", index + 1)
        };
        text.push_str(&format!(
            "[states.S{index}]\naction = {{ task = \"noop\" }}\non = {{ ok = \"{next}\", failed = \"Done\" }}\n"
        ));
    }
    text.push_str("[states.Done]\nterminal = \"success\"\n");
    Spec::parse("<bench workflow>", &text).map_err(|error| StoreError::Corrupt {
        path: "<bench workflow>".into(),
        detail: error.to_string(),
    })
}

fn percentile(sorted: &[Duration], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() - 1) as f64 * fraction).round() as usize;
    sorted[index].as_secs_f64() * 1000.0
}

/// [`bench_workflow`] under the measurement protocol: `protocol.rounds`
/// interleaved rounds, each driving the workers then running pgbench.
pub fn bench_workflow_rounds(
    location: &Location,
    options: &WorkflowBenchOptions,
    protocol: &Protocol,
) -> Result<Rounds<WorkflowBenchReport>, WorkerError> {
    run_rounds(protocol, |_| bench_workflow(location, options))
}

/// Runs the bench on the store at `location`.
pub fn bench_workflow(
    location: &Location,
    options: &WorkflowBenchOptions,
) -> Result<WorkflowBenchReport, WorkerError> {
    let load_before = crate::protocol::load_average();
    let mut store = Store::connect(location)?;
    let registry = TaskRegistry::with_builtins();
    let mut rows = Vec::new();
    let stamp = store.now_ms();
    for &workers in &options.workers {
        let spec = chain_spec(&format!("bench-{stamp}-{workers}"), options.steps)?;
        let runs = workers * options.runs_per_worker;
        for _ in 0..runs {
            store.create_run(&spec)?;
        }
        let worker_options = WorkerOptions {
            name: Some(format!("bench-{workers}")),
            concurrency: workers,
            poll: Duration::from_millis(20),
            exit_when_idle: Some(Duration::from_millis(300)),
            ..WorkerOptions::default()
        };
        let stop = AtomicBool::new(false);
        let first_claim = std::sync::Mutex::new(None::<Instant>);
        let last_end = std::sync::Mutex::new(None::<Instant>);
        let observer = |event: &WorkerEvent| match event {
            WorkerEvent::Claimed { .. } => {
                if let Ok(mut first) = first_claim.lock() {
                    first.get_or_insert_with(Instant::now);
                }
            }
            WorkerEvent::Released { .. } => {
                if let Ok(mut last) = last_end.lock() {
                    *last = Some(Instant::now());
                }
            }
            _ => {}
        };
        let summary = run_worker(location, &registry, &worker_options, &stop, &observer)?;
        let started = first_claim.into_inner().ok().flatten();
        let ended = last_end.into_inner().ok().flatten();
        let seconds = match (started, ended) {
            (Some(started), Some(ended)) => ended.duration_since(started).as_secs_f64(),
            _ => 0.0,
        };
        let transitions = (runs * options.steps) as u64;
        let mut latencies = summary.latencies;
        latencies.sort();
        rows.push(WorkflowBenchRow {
            workers,
            transitions,
            seconds,
            transitions_per_second: if seconds > 0.0 {
                transitions as f64 / seconds
            } else {
                0.0
            },
            claim_p50_ms: percentile(&latencies, 0.5),
            claim_p99_ms: percentile(&latencies, 0.99),
        });
    }
    let (pgbench_tps_16, pgbench_note) = match location {
        Location::Postgres(url) if options.pgbench_seconds > 0 => {
            match pgbench(url, options.pgbench_seconds) {
                Ok(tps) => (Some(tps), None),
                Err(note) => (None, Some(note)),
            }
        }
        Location::Postgres(_) => (None, Some("skipped (--pgbench-seconds 0)".into())),
        Location::Sqlite(_) => (None, Some("pgbench needs a PostgreSQL store".into())),
    };
    let ratio = match (pgbench_tps_16, rows.last()) {
        (Some(tps), Some(row)) if tps > 0.0 => Some(row.transitions_per_second / tps),
        _ => None,
    };
    Ok(WorkflowBenchReport {
        store: location.to_string(),
        backend: if location.is_postgres() {
            "postgres".into()
        } else {
            "sqlite".into()
        },
        rows,
        pgbench_tps_16,
        pgbench_note,
        ratio,
        load_before,
        load_after: crate::protocol::load_average(),
    })
}

/// The `pgbench` program: on the PATH, else in the newest
/// `/usr/lib/postgresql/*/bin`.
fn pgbench_program() -> Option<std::path::PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|directory| directory.join("pgbench"))
            .find(|path| path.is_file())
    });
    on_path.or_else(|| {
        let mut found: Vec<_> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .flatten()
            .map(|entry| entry.path().join("bin/pgbench"))
            .filter(|path| path.is_file())
            .collect();
        found.sort();
        found.pop()
    })
}

/// `pgbench -N` with 16 clients for `seconds` on its own database
/// (`attnflow_pgbench`, created and initialised at scale 16 if missing).
fn pgbench(url: &PostgresUrl, seconds: u32) -> Result<f64, String> {
    let program = pgbench_program().ok_or("pgbench is not installed")?;
    let database = "attnflow_pgbench";
    let admin = Location::Postgres(url.clone());
    let connection =
        attnflow_store::Connection::open(&admin, "").map_err(|error| error.to_string())?;
    let exists = connection
        .query_i64(
            "find the pgbench database",
            "SELECT COUNT(*) FROM pg_database WHERE datname = ?1",
            &[database.into()],
        )
        .map_err(|error| error.to_string())?;
    let target = url.with_database(database);
    if exists == 0 {
        connection
            .batch(
                "create the pgbench database",
                &format!("CREATE DATABASE {database}"),
            )
            .map_err(|error| error.to_string())?;
        let status = std::process::Command::new(&program)
            .args(["-i", "-q", "-s", "16", target.as_str()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .map_err(|error| format!("cannot run {}: {error}", program.display()))?;
        if !status.success() {
            return Err(format!("pgbench -i failed: {status}"));
        }
    }
    let output = std::process::Command::new(&program)
        .args([
            "-N",
            "-n",
            "-c",
            "16",
            "-j",
            "4",
            "-T",
            &seconds.to_string(),
            target.as_str(),
        ])
        .output()
        .map_err(|error| format!("cannot run {}: {error}", program.display()))?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .find_map(|line| {
            let rest = line.trim().strip_prefix("tps = ")?;
            rest.split_whitespace().next()?.parse::<f64>().ok()
        })
        .ok_or_else(|| {
            format!(
                "pgbench printed no tps: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )
        })
}

impl crate::protocol::Round for WorkflowBenchReport {
    fn ratios(&self) -> Vec<(String, Option<f64>)> {
        vec![(
            "transitions/s at the most workers over pgbench -N TPS".to_string(),
            self.ratio,
        )]
    }

    fn to_text(&self) -> String {
        WorkflowBenchReport::to_text(self)
    }
}

impl WorkflowBenchReport {
    /// The report as people read it.
    pub fn to_text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = format!(
            "attnflow bench workflow: {} ({})\n",
            self.store, self.backend
        );
        let rows: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|row| {
                vec![
                    row.workers.to_string(),
                    row.transitions.to_string(),
                    format!("{:.2}", row.seconds),
                    format!("{:.0}", row.transitions_per_second),
                    format!("{:.1}", row.claim_p50_ms),
                    format!("{:.1}", row.claim_p99_ms),
                ]
            })
            .collect();
        out.push_str(&attnflow_base::table::table(
            &[
                "workers",
                "transitions",
                "seconds",
                "transitions/s",
                "claim p50 ms",
                "claim p99 ms",
            ],
            &rows,
            1,
            attnflow_base::table::Style::Text,
        ));
        let _ = match (self.pgbench_tps_16, &self.pgbench_note) {
            (Some(tps), _) => writeln!(
                out,
                "pgbench -N, 16 clients, same server: {tps:.0} TPS; ratio {}",
                self.ratio
                    .map_or("-".to_string(), |ratio| format!("{ratio:.2}"))
            ),
            (None, Some(note)) => writeln!(out, "pgbench: {note}"),
            (None, None) => Ok(()),
        };
        out
    }
}
