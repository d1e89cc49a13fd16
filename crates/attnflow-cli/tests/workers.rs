//! Workers as real processes sharing one store, on both backends: a worker
//! killed mid-step (another completes the run, no step completes twice) and
//! a worker frozen past its lease (its late result is refused by fencing
//! and reported as superseded). Queues route states to the right workers.
#![cfg(unix)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use attnflow_workflow::{Location, Store};

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_attnflow")
}

/// Each state's command journals `start KEY` and `end KEY` around a pause.
fn spec(journal: &Path, pause: &str, lease_ms: u64, queues: [&str; 3]) -> String {
    let action = format!(
        "[\"sh\", \"-c\", \"echo \\\"start $ATTNFLOW_IDEMPOTENCY_KEY\\\" >> {journal}; sleep {pause}; echo \\\"end $ATTNFLOW_IDEMPOTENCY_KEY\\\" >> {journal}\"]",
        journal = journal.display()
    );
    format!(
        r#"
[workflow]
name = "shared"
initial = "A"
lease_ms = {lease_ms}
max_crashes = 5

[states.A]
action = {{ command = {action} }}
queue = "{qa}"
on = {{ ok = "B", failed = "Lost" }}

[states.B]
action = {{ command = {action} }}
queue = "{qb}"
on = {{ ok = "C", failed = "Lost" }}

[states.C]
action = {{ command = {action} }}
queue = "{qc}"
on = {{ ok = "Done", failed = "Lost" }}

[states.Done]
terminal = "success"

[states.Lost]
terminal = "failure"
"#,
        qa = queues[0],
        qb = queues[1],
        qc = queues[2],
    )
}

fn attnflow(arguments: &[&str]) -> std::process::Output {
    Command::new(binary()).args(arguments).output().unwrap()
}

fn submit(database: &str, spec_path: &Path, runs: usize) {
    for _ in 0..runs {
        let output = attnflow(&[
            "workflow",
            "submit",
            spec_path.to_str().unwrap(),
            "--db",
            database,
        ]);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

fn worker(database: &str, name: &str, queues: &[&str], idle_seconds: &str) -> Child {
    let mut command = Command::new(binary());
    command.args([
        "worker",
        "--db",
        database,
        "--name",
        name,
        "--poll-ms",
        "50",
        "--quiet",
    ]);
    command.args(["--exit-when-idle", idle_seconds]);
    for queue in queues {
        command.args(["--queue", queue]);
    }
    command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn show(database: &str, run_id: i64) -> serde_json::Value {
    let output = attnflow(&[
        "workflow",
        "show",
        &run_id.to_string(),
        "--json",
        "--db",
        database,
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Every run succeeded along A, B, C with gapless logs, each step completed
/// exactly once, and every attempt recorded ok really finished its work.
fn check_runs(database: &str, runs: i64, journal: &Path) -> Vec<serde_json::Value> {
    let lines = std::fs::read_to_string(journal).unwrap_or_default();
    let mut shown = Vec::new();
    for run_id in 1..=runs {
        let value = show(database, run_id);
        assert_eq!(
            value["run"]["status"], "succeeded",
            "run {run_id}: {value:#}"
        );
        let events = value["events"].as_array().unwrap();
        for (index, event) in events.iter().enumerate() {
            assert_eq!(
                event["seq"],
                index as i64 + 1,
                "run {run_id}: gap in the log"
            );
        }
        let mut completions: BTreeMap<i64, usize> = BTreeMap::new();
        for event in events {
            if event["kind"] == "step_completed" {
                *completions
                    .entry(event["step"].as_i64().unwrap())
                    .or_default() += 1;
            }
            if event["kind"] == "attempt_finished" && event["outcome"] == "ok" {
                let key = format!(
                    "run-{run_id}/step-{}/attempt-{}",
                    event["step"], event["attempt"]
                );
                assert!(
                    lines.contains(&format!("end {key}")),
                    "{key} recorded ok, never ended"
                );
            }
        }
        assert_eq!(completions.len(), 3, "run {run_id}: {completions:?}");
        assert!(
            completions.values().all(|count| *count == 1),
            "run {run_id}: a step completed twice"
        );
        let path: Vec<_> = events
            .iter()
            .filter(|event| event["kind"] == "transition")
            .map(|event| event["to_state"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(path, ["B", "C", "Done"]);
        shown.push(value);
    }
    shown
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The restart test takes the server down; the others must not run then.
static SERVER: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn each_backend(test: impl Fn(&tempfile::TempDir, &str)) {
    let _shared = SERVER
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let directory = tempfile::tempdir().unwrap();
    let database = directory.path().join("shared.db");
    test(&directory, database.to_str().unwrap());
    if let Some(url) = attnflow_testkit::postgres_database() {
        let directory = tempfile::tempdir().unwrap();
        test(&directory, &url);
    }
}

#[test]
fn killing_one_of_four_workers_mid_step_loses_and_repeats_nothing() {
    each_backend(|directory, database| {
        let journal = directory.path().join("journal.txt");
        let spec_path = directory.path().join("shared.toml");
        let queues = ["default"; 3];
        std::fs::write(&spec_path, spec(&journal, "0.2", 600, queues)).unwrap();
        let runs = 6;
        submit(database, &spec_path, runs);
        let store = Store::connect(&Location::parse(database).unwrap()).unwrap();
        let mut workers: Vec<Child> = (0..4)
            .map(|index| worker(database, &format!("w{index}"), &["default"], "3"))
            .collect();
        // Kill a worker while it holds a lease, that is, mid-step.
        let mut victim = None;
        wait_for("a worker holding a lease", Duration::from_secs(30), || {
            victim = store
                .workers()
                .unwrap()
                .into_iter()
                .find(|worker| !worker.leases.is_empty())
                .map(|worker| worker.name);
            victim.is_some()
        });
        let index: usize = victim.unwrap()[1..].parse().unwrap();
        workers[index].kill().unwrap();
        workers[index].wait().unwrap();
        for (other, child) in workers.iter_mut().enumerate() {
            if other != index {
                assert!(child.wait().unwrap().success(), "worker w{other} failed");
            }
        }
        let shown = check_runs(database, runs as i64, &journal);
        // The killed worker's run was taken over after its lease expired.
        let crashes: i64 = shown
            .iter()
            .map(|value| value["run"]["crash_count"].as_i64().unwrap())
            .sum();
        assert_eq!(crashes, 1, "exactly one executor died");
    });
}

#[test]
fn a_worker_frozen_past_its_lease_is_fenced_and_reported_superseded() {
    each_backend(|directory, database| {
        let journal = directory.path().join("journal.txt");
        let spec_path = directory.path().join("frozen.toml");
        std::fs::write(
            &spec_path,
            spec(&journal, "0.4", 300, ["slow", "default", "default"]),
        )
        .unwrap();
        submit(database, &spec_path, 1);
        let frozen = worker(database, "frozen", &["slow", "default"], "2");
        let key = "run-1/step-1/attempt-1";
        wait_for(
            "the first attempt to start",
            Duration::from_secs(30),
            || {
                std::fs::read_to_string(&journal)
                    .unwrap_or_default()
                    .contains(key)
            },
        );
        let pid = frozen.id() as libc::pid_t;
        // SAFETY: signals to a child this test started.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        // Its lease runs out; another worker takes the run and finishes it.
        let rescuer = worker(database, "rescuer", &["slow", "default"], "1.5");
        let store = Store::connect(&Location::parse(database).unwrap()).unwrap();
        wait_for(
            "the rescuer to finish the run",
            Duration::from_secs(30),
            || store.run(1).unwrap().status == attnflow_workflow::RunStatus::Succeeded,
        );
        unsafe { libc::kill(pid, libc::SIGCONT) };
        let mut rescuer = rescuer;
        let mut frozen = frozen;
        assert!(rescuer.wait().unwrap().success());
        assert!(frozen.wait().unwrap().success());
        let shown = check_runs(database, 1, &journal);
        let superseded = shown[0]["superseded"].as_array().unwrap();
        assert_eq!(superseded.len(), 1, "{superseded:#?}");
        assert_eq!(superseded[0]["idempotency_key"], key);
        assert!(superseded[0]["owner"]
            .as_str()
            .unwrap()
            .contains(":frozen#"));
        // Fencing: nothing in the log carries the frozen worker's token
        // after the rescuer took the run.
        let token = superseded[0]["lease_token"].as_i64().unwrap();
        let events = shown[0]["events"].as_array().unwrap();
        let takeover = events
            .iter()
            .position(|event| {
                event["kind"] == "lease_acquired" && event["lease_token"] == token + 1
            })
            .expect("the rescuer acquired the lease");
        assert!(events[takeover..]
            .iter()
            .all(|event| event["lease_token"].as_i64() != Some(token)));
    });
}

#[test]
fn queues_send_each_state_to_its_workers() {
    each_backend(|directory, database| {
        let journal = directory.path().join("journal.txt");
        let spec_path = directory.path().join("queues.toml");
        std::fs::write(
            &spec_path,
            spec(&journal, "0", 5000, ["default", "gpu", "default"]),
        )
        .unwrap();
        submit(database, &spec_path, 2);
        let mut cpu = worker(database, "cpu", &["default"], "1.5");
        let mut gpu = worker(database, "gpu", &["gpu"], "1.5");
        assert!(cpu.wait().unwrap().success());
        assert!(gpu.wait().unwrap().success());
        for value in check_runs(database, 2, &journal) {
            for event in value["events"].as_array().unwrap() {
                if event["kind"] == "lease_acquired" {
                    let owner = event["detail"].as_str().unwrap();
                    let state = event["state"].as_str().unwrap();
                    let expected = if state == "B" { ":gpu#" } else { ":cpu#" };
                    assert!(owner.contains(expected), "{state} ran on {owner}");
                }
            }
        }
        let workers = attnflow(&["workflow", "workers", "--db", database]);
        let listing = String::from_utf8_lossy(&workers.stdout);
        assert!(
            listing.contains("gpu") && listing.contains("stopped"),
            "{listing}"
        );
    });
}

#[test]
fn workers_ride_out_an_immediate_postgres_restart() {
    let _alone = SERVER
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let Some(database) = attnflow_testkit::postgres_database() else {
        return;
    };
    let directory = tempfile::tempdir().unwrap();
    let journal = directory.path().join("journal.txt");
    let spec_path = directory.path().join("restart.toml");
    // The lease outlives the restart, so the workers keep their runs.
    std::fs::write(&spec_path, spec(&journal, "0.3", 20_000, ["default"; 3])).unwrap();
    let runs = 4;
    submit(&database, &spec_path, runs);
    let mut workers: Vec<Child> = (0..2)
        .map(|index| {
            let mut command = Command::new(binary());
            command.args(["worker", "--db", &database, "--name", &format!("r{index}")]);
            command.args(["--concurrency", "2", "--poll-ms", "50", "--quiet"]);
            command.args(["--exit-when-idle", "3"]);
            command
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    wait_for("work under way", Duration::from_secs(30), || {
        std::fs::read_to_string(&journal)
            .unwrap_or_default()
            .lines()
            .count()
            >= 3
    });
    attnflow_testkit::restart_postgres_immediately();
    for (index, worker) in workers.iter_mut().enumerate() {
        assert!(
            worker.wait().unwrap().success(),
            "worker r{index} did not survive the restart"
        );
    }
    check_runs(&database, runs as i64, &journal);
}

/// `attnflow run --submit` leaves the pipeline to the workers: nothing runs
/// until they come; the Training step goes to the `gpu` worker the spec's
/// `train.queue` names, every other step to the `default` one, and the run
/// folder ends complete with its report and manifest.
#[test]
fn a_submitted_pipeline_is_completed_by_workers_with_training_on_its_queue() {
    let _shared = SERVER
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let Some(database) = attnflow_testkit::postgres_database() else {
        return;
    };
    let directory = tempfile::tempdir().unwrap();
    let inputs = directory.path().join("inputs");
    let written = attnflow(&[
        "run",
        "--rows",
        "300",
        "--write-default",
        inputs.to_str().unwrap(),
    ]);
    assert!(written.status.success());
    let spec_path = inputs.join("pipeline.toml");
    let spec = std::fs::read_to_string(&spec_path)
        .unwrap()
        .replace("steps = 1500", "steps = 20\nqueue = \"gpu\"")
        .replace("target_accuracy = 0.99\n", "")
        .replace("eval_every = 20", "eval_every = 10")
        .replace("checkpoint_every = 50", "checkpoint_every = 10")
        .replace(
            "min_sequence_accuracy = 0.95",
            "min_sequence_accuracy = 0.0",
        );
    std::fs::write(&spec_path, spec).unwrap();
    let run_dir = directory.path().join("run");
    let submitted = attnflow(&[
        "run",
        spec_path.to_str().unwrap(),
        "--out",
        run_dir.to_str().unwrap(),
        "--db",
        &database,
        "--submit",
        "--json",
    ]);
    assert!(
        submitted.status.success(),
        "{}",
        String::from_utf8_lossy(&submitted.stderr)
    );
    let submitted: serde_json::Value = serde_json::from_slice(&submitted.stdout).unwrap();
    assert_eq!(submitted["queues"], serde_json::json!(["default", "gpu"]));
    let run_id = submitted["workflow_run"].as_i64().unwrap();
    let waiting = show(&database, run_id);
    assert_eq!(waiting["run"]["status"], "running", "{waiting:#}");
    assert_eq!(waiting["run"]["current_state"], "Ingestion");
    assert!(
        !run_dir.join("quality.json").exists(),
        "submitting ran nothing"
    );

    let mut cpu = worker(&database, "cpu", &["default"], "600");
    let mut gpu = worker(&database, "gpu", &["gpu"], "600");
    wait_for(
        "the workers to finish the run",
        Duration::from_secs(600),
        || show(&database, run_id)["run"]["status"] != "running",
    );
    for child in [&mut cpu, &mut gpu] {
        let _ = child.kill();
        let _ = child.wait();
    }
    let value = show(&database, run_id);
    assert_eq!(value["run"]["status"], "succeeded", "{value:#}");
    assert_eq!(value["run"]["current_state"], "Completed");
    let mut trained_on = Vec::new();
    for event in value["events"].as_array().unwrap() {
        if event["kind"] == "lease_acquired" {
            let owner = event["detail"].as_str().unwrap();
            let state = event["state"].as_str().unwrap();
            let expected = if state == "Training" {
                ":gpu#"
            } else {
                ":cpu#"
            };
            assert!(owner.contains(expected), "{state} ran on {owner}");
            if state == "Training" {
                trained_on.push(owner.to_string());
            }
        }
    }
    assert!(!trained_on.is_empty(), "Training never changed hands");
    let quality: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("quality.json")).unwrap())
            .unwrap();
    assert_eq!(quality["accepted"], 300);
    for file in [
        "training.json",
        "validation.json",
        "report.html",
        "manifest.json",
    ] {
        assert!(run_dir.join(file).is_file(), "the workers left no {file}");
    }
}
