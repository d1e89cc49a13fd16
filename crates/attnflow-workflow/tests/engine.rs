//! The runner and store together: retries, recovery, leases and fencing,
//! the crash-loop cap, restarts, migrations and the analysis of real runs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use attnflow_workflow::store::{AttemptDecision, Clock, EventKind, EventRecord, ManualClock};
use attnflow_workflow::{
    report, DbError, Location, Outcome, RunError, RunStatus, Runner, Spec, Store, StoreError,
    TaskContext, TaskOutput, TaskRegistry,
};

/// Runs `test` against an SQLite file and then a fresh PostgreSQL
/// database: every engine test holds on both backends.
fn each_backend(test: impl Fn(&Location)) {
    let directory = tempfile::tempdir().unwrap();
    test(&Location::Sqlite(directory.path().join("runs.db")));
    if let Some(url) = attnflow_testkit::postgres_database() {
        test(&Location::parse(&url).unwrap());
    }
}

fn store_at(location: &Location) -> Store {
    Store::connect(location).unwrap()
}

/// Checks the log's invariants: gapless sequence numbers and transitions
/// that chain from the initial state.
fn assert_log_consistent(events: &[EventRecord], initial: &str) {
    for (index, event) in events.iter().enumerate() {
        assert_eq!(
            event.seq,
            index as i64 + 1,
            "gap in the event log: {events:#?}"
        );
    }
    let mut state = initial.to_string();
    for event in events
        .iter()
        .filter(|event| event.kind == EventKind::Transition)
    {
        assert_eq!(event.state.as_deref(), Some(state.as_str()));
        state = event.to_state.clone().unwrap();
    }
}

fn path_of(events: &[EventRecord]) -> Vec<String> {
    events
        .iter()
        .filter(|event| event.kind == EventKind::Transition)
        .map(|event| event.to_state.clone().unwrap())
        .collect()
}

#[test]
fn default_spec_runs_to_completion() {
    each_backend(|location| {
        let mut store = store_at(location);
        let registry = TaskRegistry::with_builtins();
        let spec = Spec::default_spec();
        let run = Runner::new(&mut store, &registry).start(&spec).unwrap();
        assert_eq!(run.status, RunStatus::Succeeded);
        assert_eq!(run.current_state, "Completed");
        assert_eq!(run.lease_owner, None);
        let events = store.events(run.id).unwrap();
        assert_log_consistent(&events, "Initialized");
        assert_eq!(path_of(&events), ["Processing", "Validation", "Completed"]);
        assert_eq!(events.last().unwrap().kind, EventKind::RunFinished);
    });
}

const RETRY_SPEC: &str = r#"
[workflow]
name = "retrying"
initial = "Processing"

[states.Processing]
action = { task = "work" }
retry = { attempts = 3, backoff_ms = 1, multiplier = 2.0, cap_ms = 4, jitter = 0.5 }
on = { ok = "Completed", failed = "Failed" }

[states.Failed]
action = { task = "noop" }
on = { ok = "Retry", failed = "Retry" }

[states.Retry]
action = { task = "noop" }
max_visits = 2
on = { ok = "Processing", failed = "Abandoned", exhausted = "Abandoned" }

[states.Completed]
terminal = "success"

[states.Abandoned]
terminal = "failure"
"#;

fn switchable_registry(works: Arc<AtomicBool>) -> TaskRegistry {
    let mut registry = TaskRegistry::with_builtins();
    registry.register("work", move |context: &TaskContext| {
        assert!(context
            .idempotency_key
            .starts_with(&format!("run-{}/", context.run_id)));
        if works.load(Ordering::SeqCst) {
            TaskOutput::ok()
        } else {
            TaskOutput::with(Outcome::Failed, "not yet")
        }
    });
    registry
}

#[test]
fn retries_exhaust_then_restart_resumes_from_the_failed_step() {
    each_backend(|location| {
        let mut store = store_at(location);
        let works = Arc::new(AtomicBool::new(false));
        let registry = switchable_registry(works.clone());
        let spec = Spec::parse("retry.toml", RETRY_SPEC).unwrap();
        let run = Runner::new(&mut store, &registry).start(&spec).unwrap();
        assert_eq!(run.status, RunStatus::Failed);
        assert_eq!(run.current_state, "Abandoned");

        let events = store.events(run.id).unwrap();
        assert_log_consistent(&events, "Processing");
        // Processing fails 3 attempts per visit; Retry may be visited twice;
        // the third arrival at Retry is exhausted.
        assert_eq!(
            path_of(&events),
            [
                "Failed",
                "Retry",
                "Processing",
                "Failed",
                "Retry",
                "Processing",
                "Failed",
                "Retry",
                "Abandoned"
            ]
        );
        let attempts: Vec<&EventRecord> = events
            .iter()
            .filter(|event| {
                event.kind == EventKind::AttemptStarted
                    && event.state.as_deref() == Some("Processing")
            })
            .collect();
        assert_eq!(attempts.len(), 9);
        let retries = events
            .iter()
            .filter(|event| event.kind == EventKind::RetryScheduled)
            .count();
        assert_eq!(retries, 6);
        let keys: std::collections::BTreeSet<_> = attempts
            .iter()
            .map(|event| event.idempotency_key.clone().unwrap())
            .collect();
        assert_eq!(keys.len(), 9, "every attempt has its own key");
        let exhausted = events
            .iter()
            .find(|event| {
                event.kind == EventKind::Transition && event.outcome.as_deref() == Some("exhausted")
            })
            .unwrap();
        assert_eq!(exhausted.state.as_deref(), Some("Retry"));

        // The run is kept; a restart begins at the failed step (Processing).
        works.store(true, Ordering::SeqCst);
        let steps_before = store.steps(run.id).unwrap().len();
        let restarted = Runner::new(&mut store, &registry).restart(run.id).unwrap();
        assert_eq!(restarted.status, RunStatus::Succeeded);
        assert_eq!(restarted.epoch, 1);
        let steps = store.steps(run.id).unwrap();
        assert_eq!(steps.len(), steps_before + 1);
        assert_eq!(steps.last().unwrap().state, "Processing");
        assert!(steps.iter().all(|step| step.completed));

        // Finished runs cannot be resumed or restarted.
        let error = Runner::new(&mut store, &registry)
            .resume(run.id)
            .unwrap_err();
        assert!(
            matches!(error, RunError::Store(StoreError::Finished { .. })),
            "{error}"
        );
        let error = Runner::new(&mut store, &registry)
            .restart(run.id)
            .unwrap_err();
        assert!(
            matches!(error, RunError::Store(StoreError::NotRestartable { .. })),
            "{error}"
        );
    });
}

#[test]
fn crashed_attempt_is_re_executed_with_the_same_key_and_completed_steps_are_not() {
    each_backend(|location| {
        let clock = Arc::new(ManualClock::new(1_000_000));
        let mut store = Store::connect(location).unwrap().with_clock(clock.clone());
        let spec = Spec::default_spec();

        // A first executor completes Initialized, starts Processing's first
        // attempt, and dies before recording its result.
        let run_id = store.create_run(&spec).unwrap();
        let lease = store
            .acquire_lease(run_id, "elsewhere:1:dead", spec.lease, spec.max_crashes)
            .unwrap();
        let step = store.begin_step(&lease, "Initialized", 0).unwrap();
        store
            .start_attempt(&lease, &step, 1, "run-1/step-1/attempt-1", false)
            .unwrap();
        store
            .finish_attempt(
                &lease,
                &step,
                1,
                Outcome::Ok,
                "",
                &AttemptDecision::Complete {
                    next_queue: "default".into(),
                    outcome: Outcome::Ok,
                    next_state: "Processing".into(),
                    terminal: None,
                    begin_next: false,
                },
            )
            .unwrap();
        let step = store.begin_step(&lease, "Processing", 0).unwrap();
        store
            .start_attempt(&lease, &step, 1, "run-1/step-2/attempt-1", false)
            .unwrap();
        drop(store);

        // Its lease expires; a second executor resumes.
        clock.advance(spec.lease + Duration::from_millis(1));
        let mut store = Store::connect(location).unwrap().with_clock(clock.clone());
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut registry = TaskRegistry::with_builtins();
        let record = seen.clone();
        registry.register("noop", move |context: &TaskContext| {
            record.lock().unwrap().push(context.idempotency_key.clone());
            TaskOutput::ok()
        });
        let run = Runner::new(&mut store, &registry).resume(run_id).unwrap();
        assert_eq!(run.status, RunStatus::Succeeded);
        assert_eq!(run.crash_count, 1);
        assert_eq!(
            *seen.lock().unwrap(),
            ["run-1/step-2/attempt-1", "run-1/step-3/attempt-1"],
            "Initialized is not run again; Processing's attempt keeps its key"
        );
        let events = store.events(run_id).unwrap();
        assert_log_consistent(&events, "Initialized");
        assert!(events
            .iter()
            .any(|event| event.kind == EventKind::ExecutorCrashed));
        let rerun = events
            .iter()
            .filter(|event| event.kind == EventKind::AttemptStarted && event.step == Some(2))
            .collect::<Vec<_>>();
        assert_eq!(rerun.len(), 2);
        assert!(rerun[1].detail.contains("re-executed"));
    });
}

#[test]
fn only_the_valid_lease_holder_writes() {
    each_backend(|location| {
        let clock = Arc::new(ManualClock::new(5_000_000));
        let mut first = Store::connect(location).unwrap().with_clock(clock.clone());
        let mut second = Store::connect(location).unwrap().with_clock(clock.clone());
        let spec = Spec::default_spec();
        let lease_time = Duration::from_millis(1_000);
        let run_id = first.create_run(&spec).unwrap();

        let lease_a = first
            .acquire_lease(run_id, "host:1:a", lease_time, 5)
            .unwrap();
        // While A's lease is valid, B cannot take the run.
        clock.advance(Duration::from_millis(500));
        let refused = second
            .acquire_lease(run_id, "host:1:b", lease_time, 5)
            .unwrap_err();
        assert!(matches!(refused, StoreError::LeaseHeld { .. }), "{refused}");
        // A's heartbeat extends its lease to 1500 + 1000.
        first.heartbeat(&lease_a).unwrap();
        clock.advance(Duration::from_millis(900));
        assert!(matches!(
            second.acquire_lease(run_id, "host:1:b", lease_time, 5),
            Err(StoreError::LeaseHeld { .. })
        ));

        // A stalls past its lease; even before anyone takes over, its writes
        // are rejected.
        clock.advance(Duration::from_millis(200));
        let stale = first.begin_step(&lease_a, "Initialized", 0).unwrap_err();
        assert!(matches!(stale, StoreError::LeaseLost { .. }), "{stale}");
        assert!(first.steps(run_id).unwrap().is_empty());

        // B takes over (A counts as crashed) and writes.
        let lease_b = second
            .acquire_lease(run_id, "host:1:b", lease_time, 5)
            .unwrap();
        assert_eq!(lease_b.token, lease_a.token + 1);
        let step_b = second.begin_step(&lease_b, "Initialized", 0).unwrap();

        // A wakes up: every kind of write it tries is rejected.
        for result in [
            first.heartbeat(&lease_a),
            first.begin_step(&lease_a, "Initialized", 0).map(|_| ()),
            first.start_attempt(&lease_a, &step_b, 1, "a", false),
            first.release_lease(&lease_a, "done"),
        ] {
            let error = result.unwrap_err();
            assert!(matches!(error, StoreError::LeaseLost { .. }), "{error}");
            assert!(error.to_string().contains("token 2"), "{error}");
        }
        // B's writes keep landing, even after A's attempts.
        second
            .start_attempt(&lease_b, &step_b, 1, "b", false)
            .unwrap();

        let steps = second.steps(run_id).unwrap();
        assert_eq!(steps.len(), 1);
        assert_eq!(steps[0].attempt, 1);
        let events = second.events(run_id).unwrap();
        assert_log_consistent(&events, "Initialized");
        let takeover = events
            .iter()
            .position(|event| {
                event.kind == EventKind::LeaseAcquired && event.lease_token == Some(2)
            })
            .unwrap();
        assert!(events[takeover + 1..]
            .iter()
            .all(|event| event.lease_token == Some(lease_b.token)));
        let run = second.run(run_id).unwrap();
        assert_eq!(run.crash_count, 1);
        assert_eq!(run.lease_owner.as_deref(), Some("host:1:b"));
    });
}

#[test]
fn crash_loop_is_capped_and_restart_clears_it() {
    each_backend(|location| {
        let clock = Arc::new(ManualClock::new(0));
        let mut store = store_at(location).with_clock(clock.clone());
        let spec = Spec::parse(
            "cap.toml",
            "[workflow]\nname = \"cap\"\ninitial = \"A\"\nmax_crashes = 2\nlease_ms = 100\n\
             [states.A]\naction = { task = \"noop\" }\non = { ok = \"Done\", failed = \"Done\" }\n\
             [states.Done]\nterminal = \"success\"\n",
        )
        .unwrap();
        let run_id = store.create_run(&spec).unwrap();
        for crash in 0..3 {
            let lease = store
                .acquire_lease(
                    run_id,
                    &format!("far:1:{crash}"),
                    spec.lease,
                    spec.max_crashes,
                )
                .unwrap();
            if crash == 0 {
                store.begin_step(&lease, "A", 0).unwrap();
            }
            clock.advance(Duration::from_millis(101));
        }
        let registry = TaskRegistry::with_builtins();
        let error = Runner::new(&mut store, &registry)
            .resume(run_id)
            .unwrap_err();
        assert!(
            matches!(
                error,
                RunError::Store(StoreError::CrashLoop {
                    crashes: 3,
                    cap: 2,
                    ..
                })
            ),
            "{error}"
        );
        let run = store.run(run_id).unwrap();
        assert_eq!(run.status, RunStatus::Crashed);
        // Crashed is not Failed, and is not resumed until restarted.
        assert!(matches!(
            Runner::new(&mut store, &registry).resume(run_id),
            Err(RunError::Store(StoreError::CrashLoop { .. }))
        ));
        let run = Runner::new(&mut store, &registry).restart(run_id).unwrap();
        assert_eq!(run.status, RunStatus::Succeeded);
        assert_eq!(run.crash_count, 0);
        assert_log_consistent(&store.events(run_id).unwrap(), "A");
    });
}

#[cfg(unix)]
#[test]
fn command_that_overruns_its_timeout_is_killed_and_timed_out() {
    each_backend(|location| {
        let mut store = store_at(location);
        let spec = Spec::parse(
            "timeout.toml",
            "[workflow]\nname = \"slow\"\ninitial = \"A\"\n\
             [states.A]\naction = { command = [\"sh\", \"-c\", \"sleep 30\"] }\ntimeout_ms = 200\n\
             on = { ok = \"Done\", failed = \"Gone\", timeout = \"Late\" }\n\
             [states.Done]\nterminal = \"success\"\n[states.Gone]\nterminal = \"failure\"\n\
             [states.Late]\nterminal = \"failure\"\n",
        )
        .unwrap();
        let registry = TaskRegistry::with_builtins();
        let run = Runner::new(&mut store, &registry).start(&spec).unwrap();
        assert_eq!(run.current_state, "Late");
        let events = store.events(run.id).unwrap();
        let finished = events
            .iter()
            .find(|event| event.kind == EventKind::AttemptFinished)
            .unwrap();
        assert_eq!(finished.outcome.as_deref(), Some("timeout"));
    });
}

#[test]
fn schema_is_versioned_and_the_log_is_append_only() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("shared.db");
    // Another crate's table in the same file survives and is untouched.
    let connection = rusqlite::Connection::open(&path).unwrap();
    connection
        .execute_batch(
            "CREATE TABLE quarantine (id INTEGER PRIMARY KEY); INSERT INTO quarantine VALUES (7);",
        )
        .unwrap();
    let mut store = Store::from_connection(connection).unwrap();
    assert_eq!(
        store.schema_version().unwrap(),
        attnflow_workflow::store::SCHEMA_VERSION
    );
    let registry = TaskRegistry::with_builtins();
    let run = Runner::new(&mut store, &registry)
        .start(&Spec::default_spec())
        .unwrap();
    let sqlite = store.connection().sqlite().unwrap();
    let journal: String = sqlite
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .unwrap();
    assert_eq!(journal, "wal");
    let synchronous: i64 = sqlite
        .query_row("PRAGMA synchronous", [], |row| row.get(0))
        .unwrap();
    assert_eq!(synchronous, 2, "synchronous=FULL");
    let kept: i64 = sqlite
        .query_row("SELECT COUNT(*) FROM quarantine", [], |row| row.get(0))
        .unwrap();
    assert_eq!(kept, 1);
    assert_eq!(store.run(run.id).unwrap().status, RunStatus::Succeeded);
}

#[test]
fn the_log_is_append_only_and_a_newer_schema_is_refused() {
    each_backend(|location| {
        let mut store = store_at(location);
        let registry = TaskRegistry::with_builtins();
        let run = Runner::new(&mut store, &registry)
            .start(&Spec::default_spec())
            .unwrap();
        let connection = store.connection();
        for statement in [
            "UPDATE wf_events SET detail = 'x'",
            "DELETE FROM wf_events",
            "DELETE FROM wf_runs",
        ] {
            let refused = connection.execute("tamper", statement, &[]);
            assert!(refused.is_err(), "{statement} must be refused");
        }
        if connection.backend() == attnflow_store::Backend::Postgres {
            assert!(connection
                .batch("tamper", "TRUNCATE wf_events CASCADE")
                .is_err());
        }
        drop(store);

        // Reopening migrates nothing and keeps the runs.
        let store = store_at(location);
        assert_eq!(store.run(run.id).unwrap().status, RunStatus::Succeeded);
        assert_eq!(
            store.event_count(run.id).unwrap(),
            store.events(run.id).unwrap().len() as i64
        );
        store
            .connection()
            .execute("bump", "UPDATE wf_schema_version SET version = 99", &[])
            .unwrap();
        drop(store);
        let error = Store::connect(location).unwrap_err();
        assert!(
            matches!(
                error,
                StoreError::Db(DbError::SchemaTooNew { found: 99, .. })
            ),
            "{error}"
        );
        assert!(error.is_bad_input());
    });
}

#[test]
fn analysis_of_recorded_runs_counts_every_transition() {
    each_backend(|location| {
        let mut store = store_at(location);
        let spec = Spec::parse(
            "flaky.toml",
            r#"
    [workflow]
    name = "flaky"
    initial = "Processing"
    [states.Processing]
    action = { task = "flaky", args = { probability = 0.4 } }
    on = { ok = "Validation", failed = "Retry" }
    [states.Validation]
    action = { task = "flaky", args = { probability = 0.25, outcome = "invalid", seed = 9 } }
    on = { ok = "Completed", failed = "Retry", invalid = "Retry" }
    [states.Retry]
    action = { task = "noop" }
    max_visits = 2
    on = { ok = "Processing", failed = "Abandoned", exhausted = "Abandoned" }
    [states.Completed]
    terminal = "success"
    [states.Abandoned]
    terminal = "failure"
    "#,
        )
        .unwrap();
        let registry = TaskRegistry::with_builtins();
        let mut finished = 0;
        for _ in 0..60 {
            let run = Runner::new(&mut store, &registry).start(&spec).unwrap();
            assert!(matches!(
                run.status,
                RunStatus::Succeeded | RunStatus::Failed
            ));
            finished += 1;
        }
        let analyses = report::analyze(&store, None).unwrap();
        assert_eq!(analyses.len(), 1);
        let analysis = &analyses[0];
        assert_eq!(analysis.runs, finished);
        let recorded = store.transitions(Some("flaky")).unwrap();
        assert_eq!(analysis.transitions as usize, recorded.len());
        // Row sums are 1 and every probability equals its count ratio.
        for (row, counts) in analysis.counts.iter().enumerate() {
            let total: u64 = counts.iter().sum();
            let sum: f64 = analysis.probabilities[row].iter().sum();
            assert!((sum - 1.0).abs() < 1e-12);
            for (column, count) in counts.iter().enumerate() {
                if total > 0 {
                    assert!(
                        (analysis.probabilities[row][column] - *count as f64 / total as f64).abs()
                            < 1e-12
                    );
                }
            }
        }
        let absorption = &analysis.absorption;
        assert!(absorption.certain);
        assert_eq!(absorption.absorbing, ["Completed", "Abandoned"]);
        let from_start = &absorption.absorption_probabilities["Processing"];
        assert!((from_start["Completed"] + from_start["Abandoned"] - 1.0).abs() < 1e-9);
        // The estimate of P(end in Completed | start) is close to the observed
        // fraction of successful runs (the estimate is Markov; the engine's
        // visit cap is not, so allow some slack).
        let successes = store
            .runs()
            .unwrap()
            .iter()
            .filter(|run| run.status == RunStatus::Succeeded)
            .count() as f64;
        assert!((from_start["Completed"] - successes / finished as f64).abs() < 0.2);
        let text = report::render_analysis(analysis);
        assert!(text.contains("absorption is CERTAIN"), "{text}");
        let diagram = report::analysis_mermaid(analysis);
        assert!(
            diagram.starts_with("stateDiagram-v2\n    [*] --> Processing\n"),
            "{diagram}"
        );
        assert!(diagram.contains("Completed --> [*]"));
    });
}

#[test]
fn executor_that_loses_its_lease_mid_action_writes_nothing_more() {
    each_backend(|location| {
        let clock = Arc::new(ManualClock::new(10_000_000));
        let mut store = Store::connect(location).unwrap().with_clock(clock.clone());
        let spec = Spec::parse(
            "takeover.toml",
            "[workflow]\nname = \"takeover\"\ninitial = \"A\"\nlease_ms = 1000\n\
             [states.A]\naction = { task = \"stall\" }\non = { ok = \"Done\", failed = \"Done\" }\n\
             [states.Done]\nterminal = \"success\"\n",
        )
        .unwrap();
        // While the first executor's action runs, its lease expires and a
        // second executor takes the run over.
        let mut registry = TaskRegistry::with_builtins();
        let takeover_location = location.clone();
        let takeover_clock = clock.clone();
        registry.register("stall", move |context: &TaskContext| {
            takeover_clock.advance(Duration::from_millis(5_000));
            let mut other = Store::connect(&takeover_location)
                .unwrap()
                .with_clock(takeover_clock.clone());
            other
                .acquire_lease(context.run_id, "host:1:second", Duration::from_secs(60), 5)
                .unwrap();
            TaskOutput::ok()
        });
        let error = Runner::new(&mut store, &registry)
            .with_owner("host:1:first")
            .start(&spec)
            .unwrap_err();
        assert!(
            matches!(error, RunError::Store(StoreError::LeaseLost { .. })),
            "{error}"
        );
        // The first executor's result never landed: the attempt is still open
        // and the run is still in A, held by the second executor.
        let run = store.run(1).unwrap();
        assert_eq!(run.current_state, "A");
        assert_eq!(run.lease_owner.as_deref(), Some("host:1:second"));
        let steps = store.steps(1).unwrap();
        assert!(steps[0].attempt_open && !steps[0].completed);
        let events = store.events(1).unwrap();
        assert_log_consistent(&events, "A");
        assert!(events
            .iter()
            .all(|event| event.kind != EventKind::AttemptFinished
                && event.kind != EventKind::Transition));
        assert_eq!(events.last().unwrap().kind, EventKind::LeaseAcquired);
    });
}

#[test]
fn a_transition_is_written_whole_or_not_at_all() {
    each_backend(|location| {
        let clock = Arc::new(ManualClock::new(20_000_000));
        let mut store = Store::connect(location).unwrap().with_clock(clock.clone());
        let spec = Spec::default_spec();
        let run_id = store.create_run(&spec).unwrap();
        let lease = store
            .acquire_lease(run_id, "host:1:writer", Duration::from_secs(60), 5)
            .unwrap();
        let first = store
            .begin_step_with_attempt(&lease, "Initialized", 0)
            .unwrap();
        // The step begun without a read-back is the step as stored.
        assert_eq!(first, store.step(run_id, first.seq).unwrap());
        clock.advance(Duration::from_millis(10));
        let complete = AttemptDecision::Complete {
            outcome: Outcome::Ok,
            next_state: "Processing".into(),
            next_queue: "default".into(),
            terminal: None,
            begin_next: true,
        };
        let second = store
            .finish_attempt(&lease, &first, 1, Outcome::Ok, "done", &complete)
            .unwrap()
            .unwrap();
        assert_eq!(second, store.step(run_id, second.seq).unwrap());
        assert_eq!(second.seq, first.seq + 1);
        let key = TaskContext::idempotency_key_for(run_id, second.seq, 1);
        let events = store.events(run_id).unwrap();
        assert_log_consistent(&events, "Initialized");
        assert_eq!(
            events.last().unwrap().idempotency_key.as_deref(),
            Some(&*key)
        );

        // The same result again: the step is completed, so nothing of the
        // transaction lands (no events, no lease extension, no run move).
        let run_before = store.run(run_id).unwrap();
        clock.advance(Duration::from_millis(10));
        let again = store
            .finish_attempt(&lease, &first, 1, Outcome::Ok, "again", &complete)
            .unwrap_err();
        assert!(!matches!(again, StoreError::LeaseLost { .. }), "{again}");
        assert!(again.to_string().contains("never runs again"), "{again}");
        assert_eq!(store.run(run_id).unwrap(), run_before);
        assert_eq!(store.events(run_id).unwrap(), events);
        assert_eq!(store.steps(run_id).unwrap().len(), 2);

        // A retry closes the attempt, keeps the step open and logs both.
        let retry_at = clock.now_ms() + 200;
        let none = store
            .finish_attempt(
                &lease,
                &second,
                1,
                Outcome::Failed,
                "flaky",
                &AttemptDecision::Retry { at_ms: retry_at },
            )
            .unwrap();
        assert!(none.is_none());
        let retried = store.step(run_id, second.seq).unwrap();
        assert!(!retried.attempt_open && !retried.completed);
        assert_eq!(retried.retry_at_ms, Some(retry_at));
        assert_eq!(retried.last_outcome.as_deref(), Some("failed"));
        let events = store.events(run_id).unwrap();
        assert_log_consistent(&events, "Initialized");
        assert_eq!(events.last().unwrap().kind, EventKind::RetryScheduled);

        // A terminal target ends the run and frees its lease in the same
        // write.
        store
            .start_attempt(&lease, &retried, 2, "attempt-2", false)
            .unwrap();
        let open = store.step(run_id, second.seq).unwrap();
        let finish = AttemptDecision::Complete {
            outcome: Outcome::Failed,
            next_state: "Abandoned".into(),
            next_queue: "default".into(),
            terminal: Some(attnflow_workflow::spec::TerminalKind::Failure),
            begin_next: false,
        };
        let begun = store
            .finish_attempt(&lease, &open, 2, Outcome::Failed, "gave up", &finish)
            .unwrap();
        assert!(begun.is_none());
        let run = store.run(run_id).unwrap();
        assert_eq!(run.status, RunStatus::Failed);
        assert_eq!(run.current_state, "Abandoned");
        assert_eq!(run.lease_owner, None);
        assert_eq!(run.finished_ms, Some(clock.now_ms()));
        let events = store.events(run_id).unwrap();
        assert_log_consistent(&events, "Initialized");
        assert_eq!(events.last().unwrap().kind, EventKind::RunFinished);
    });
}
