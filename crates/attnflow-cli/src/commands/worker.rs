//! `attnflow worker`, `attnflow workflow submit` and `attnflow workflow
//! workers`: runs shared through a store by workers on many machines. The
//! logic lives in `attnflow_workflow::worker`; this module parses and
//! prints.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use attnflow_workflow::worker::{run_worker, WorkerEvent, WorkerOptions};
use attnflow_workflow::{Runner, Store, TaskRegistry};
use clap::Args;
use miette::miette;

use super::workflow::{load_spec, open_existing, store_error, StoreArgs};
use crate::error::{CliError, CliResult};

/// Arguments of `attnflow worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// The shared store: postgres://USER@HOST:PORT/DATABASE (or an SQLite
    /// file, for workers on one machine) [default: $ATTNFLOW_DB, else attnflow.db]
    #[arg(long)]
    db: Option<String>,
    /// A queue to serve (repeat for several) [default: default].
    #[arg(long = "queue", value_name = "NAME")]
    queues: Vec<String>,
    /// Runs driven at once.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    concurrency: u16,
    /// This worker's name in `attnflow workflow workers` [default: host:pid].
    #[arg(long)]
    name: Option<String>,
    /// How often idle slots look for work when no notification comes (ms).
    #[arg(long, default_value_t = 1000)]
    poll_ms: u64,
    /// Exit after finding no work for this many seconds.
    #[arg(long, value_name = "SECONDS")]
    exit_when_idle: Option<f64>,
    /// Print nothing but errors.
    #[arg(long)]
    quiet: bool,
}

/// Arguments of `attnflow workflow submit`.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// The workflow spec (TOML); omit it for the embedded default.
    spec: Option<PathBuf>,
    #[command(flatten)]
    store: StoreArgs,
}

/// Set by SIGTERM and SIGINT: drain and exit.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn request_stop(_signal: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn describe(event: &WorkerEvent) -> String {
    match event {
        WorkerEvent::Started { name } => format!("worker {name} started"),
        WorkerEvent::Claimed {
            owner,
            run,
            state,
            latency,
        } => format!(
            "{owner}: claimed run {run} in `{state}` ({} ms after it became runnable)",
            latency.as_millis()
        ),
        WorkerEvent::Released {
            owner,
            run,
            status,
            state,
        } => format!("{owner}: run {run} {status} in `{state}`"),
        WorkerEvent::Superseded { run, reason } => {
            format!("run {run}: superseded: {reason}")
        }
        WorkerEvent::Failed { run, reason } => format!("run {run}: {reason}"),
        WorkerEvent::Reconnected { owner } => format!("{owner}: reconnected to the store"),
        WorkerEvent::Draining => {
            "draining: finishing running attempts, handing runs back".to_string()
        }
    }
}

/// Runs `attnflow worker`.
pub fn run(args: WorkerArgs) -> CliResult {
    let location = attnflow_workflow::Location::resolve(args.db.as_deref())
        .map_err(|error| CliError::bad_input(miette!("{error}")))?;
    // SAFETY: the handler only stores to an atomic, which is
    // async-signal-safe; installed before any slot thread starts.
    unsafe {
        libc::signal(
            libc::SIGTERM,
            request_stop as *const () as libc::sighandler_t,
        );
        libc::signal(
            libc::SIGINT,
            request_stop as *const () as libc::sighandler_t,
        );
    }
    let options = WorkerOptions {
        name: args.name,
        queues: if args.queues.is_empty() {
            WorkerOptions::default().queues
        } else {
            args.queues
        },
        concurrency: usize::from(args.concurrency),
        poll: Duration::from_millis(args.poll_ms.max(1)),
        exit_when_idle: args
            .exit_when_idle
            .filter(|seconds| seconds.is_finite() && *seconds >= 0.0)
            .map(Duration::from_secs_f64),
        ..WorkerOptions::default()
    };
    let quiet = args.quiet;
    let observer = move |event: &WorkerEvent| {
        if !quiet || matches!(event, WorkerEvent::Failed { .. }) {
            eprintln!("{}", describe(event));
        }
    };
    let mut registry = TaskRegistry::with_builtins();
    // Pipelines submitted with `attnflow run --submit` run here too.
    attnflow_pipeline::register_tasks(&mut registry);
    let summary =
        run_worker(&location, &registry, &options, &STOP, &observer).map_err(|error| {
            if error.is_bad_input() {
                CliError::bad_input(miette!("{error}"))
            } else {
                CliError::failed(miette!("{error}"))
            }
        })?;
    if !quiet {
        eprintln!("worker stopped after {} claims", summary.claims);
    }
    Ok(())
}

/// Runs `attnflow workflow submit`.
pub fn submit(args: &SubmitArgs) -> CliResult {
    let spec = load_spec(args.spec.as_deref())?;
    let registry = TaskRegistry::with_builtins();
    let location = args.store.location()?;
    let mut store = Store::connect(&location).map_err(store_error)?;
    let run_id = Runner::new(&mut store, &registry)
        .create(&spec)
        .map_err(|error| match error {
            attnflow_workflow::RunError::Store(error) => store_error(error),
            other => CliError::bad_input(miette!("{other}")),
        })?;
    if args.store.json {
        println!(
            "{}",
            serde_json::json!({ "run": run_id, "queue": spec.queue_of(&spec.initial) })
        );
    } else {
        println!(
            "run {run_id} of workflow `{}` submitted to queue `{}` in {location} (watch it with `attnflow workflow show {run_id} --db ...`)",
            spec.name,
            spec.queue_of(&spec.initial)
        );
    }
    Ok(())
}

/// Runs `attnflow workflow workers`.
pub fn list_workers(args: &StoreArgs) -> CliResult {
    let store = open_existing(args)?;
    let workers = store.workers().map_err(store_error)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&workers)
                .map_err(|error| CliError::failed(miette!("{error}")))?
        );
        return Ok(());
    }
    if workers.is_empty() {
        println!("{}: no workers have registered", store.path());
        return Ok(());
    }
    let now = store.now_ms();
    let headers = [
        "worker",
        "status",
        "queues",
        "slots",
        "last heartbeat",
        "leases",
    ];
    let rows: Vec<Vec<String>> = workers
        .iter()
        .map(|worker| {
            let leases: Vec<String> = worker
                .leases
                .iter()
                .map(|(run, state, token, _)| format!("run {run} `{state}` (token {token})"))
                .collect();
            vec![
                worker.name.clone(),
                worker.status.clone(),
                worker.queues.join(","),
                worker.concurrency.to_string(),
                format!("{:.1} s ago", (now - worker.heartbeat_ms) as f64 / 1000.0),
                if leases.is_empty() {
                    "-".to_string()
                } else {
                    leases.join("; ")
                },
            ]
        })
        .collect();
    let headers: Vec<String> = headers.iter().map(|header| header.to_string()).collect();
    print!(
        "{}",
        attnflow_workflow::report::render_table(&headers, &rows)
    );
    Ok(())
}
