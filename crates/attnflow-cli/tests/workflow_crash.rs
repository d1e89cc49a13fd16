//! SIGKILL crash test on the real `attnflow` binary.
//!
//! A workflow whose actions are external commands appending to a journal is
//! started again and again and killed with SIGKILL when its event log
//! reaches a chosen length (varied from the first event to the last), then
//! resumed. Every run must reach its terminal state along exactly the path
//! of an uninterrupted run, no completed step may run again, nothing may
//! run without being recorded first, and the event log must have no gaps.
#![cfg(unix)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use attnflow_workflow::{Location, Store};

const EXPECTED_PATH: [&str; 7] = [
    "Transform",
    "Validate",
    "Failed",
    "Retry",
    "Transform",
    "Validate",
    "Done",
];

fn spec(journal: &Path) -> String {
    let journal = journal.display();
    // Each action writes `start KEY` before its work and `end KEY` after it.
    // Transform fails its first two attempts; Validate finds the data of
    // step 3 invalid, which sends the run round the retry loop once.
    let action = |body: &str| {
        format!(
            "[\"sh\", \"-c\", \"echo \\\"start $ATTNFLOW_IDEMPOTENCY_KEY\\\" >> {journal}; {body}echo \\\"end $ATTNFLOW_IDEMPOTENCY_KEY\\\" >> {journal}\"]"
        )
    };
    format!(
        r#"
[workflow]
name = "crash-test"
initial = "Fetch"
lease_ms = 60000
max_crashes = 3

[states.Fetch]
action = {{ command = {fetch} }}
on = {{ ok = "Transform", failed = "Abandoned" }}

[states.Transform]
action = {{ command = {transform} }}
retry = {{ attempts = 3, backoff_ms = 1, multiplier = 2.0, cap_ms = 2, jitter = 0.5 }}
on = {{ ok = "Validate", failed = "Abandoned" }}

[states.Validate]
action = {{ command = {validate} }}
on = {{ ok = "Done", invalid = "Failed", failed = "Abandoned" }}

[states.Failed]
action = {{ command = {failed} }}
on = {{ ok = "Retry", failed = "Abandoned" }}

[states.Retry]
action = {{ command = {retry} }}
max_visits = 1
on = {{ ok = "Transform", failed = "Abandoned", exhausted = "Abandoned" }}

[states.Done]
terminal = "success"

[states.Abandoned]
terminal = "failure"
"#,
        fetch = action(""),
        transform = action("[ \\\"$ATTNFLOW_ATTEMPT\\\" -ge 3 ] || exit 1; "),
        validate = action("[ \\\"$ATTNFLOW_STEP\\\" != 3 ] || exit 65; "),
        failed = action(""),
        retry = action(""),
    )
}

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_attnflow")
}

fn event_count(store: &Store, run_id: i64) -> i64 {
    store.event_count(run_id).unwrap()
}

fn journal_lines(journal: &Path) -> Vec<String> {
    std::fs::read_to_string(journal)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Starts a run and SIGKILLs it once its log holds `kill_at` events (after
/// waiting `extra` more). Returns the log length and journal length seen
/// right after the kill, or `None` if the run finished first.
fn run_and_kill(
    database: &str,
    spec_path: &Path,
    journal: &Path,
    store: &Store,
    run_id: i64,
    kill_at: i64,
    extra: Duration,
) -> Option<(i64, usize)> {
    let mut child = Command::new(binary())
        .args(["workflow", "run"])
        .arg(spec_path)
        .arg("--db")
        .arg(database)
        .arg("--quiet")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().unwrap().is_some() {
            return None;
        }
        if event_count(store, run_id) >= kill_at {
            if !extra.is_zero() {
                std::thread::sleep(extra);
            }
            // Child::kill sends SIGKILL on unix.
            child.kill().unwrap();
            child.wait().unwrap();
            return Some((event_count(store, run_id), journal_lines(journal).len()));
        }
        assert!(
            Instant::now() < deadline,
            "the run neither progressed nor finished"
        );
        std::thread::sleep(Duration::from_micros(50));
    }
}

fn show(database: &str, run_id: i64) -> serde_json::Value {
    let output = Command::new(binary())
        .args(["workflow", "show", &run_id.to_string(), "--json", "--db"])
        .arg(database)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Checks one finished run against every invariant; returns its events.
fn check_run(database: &str, run_id: i64, journal: &[String]) -> usize {
    let shown = show(database, run_id);
    assert_eq!(
        shown["run"]["status"], "succeeded",
        "run {run_id}: {shown:#}"
    );
    assert_eq!(shown["run"]["current_state"], "Done");
    let events = shown["events"].as_array().unwrap();

    // No gaps: sequence numbers are exactly 1..=n.
    for (index, event) in events.iter().enumerate() {
        assert_eq!(
            event["seq"],
            index as i64 + 1,
            "run {run_id}: gap in the event log"
        );
    }
    // Transitions chain from the initial state along the one correct path.
    let mut state = "Fetch".to_string();
    let mut path = Vec::new();
    for event in events.iter().filter(|event| event["kind"] == "transition") {
        assert_eq!(event["state"], state.as_str(), "run {run_id}: broken chain");
        state = event["to_state"].as_str().unwrap().to_string();
        path.push(state.clone());
    }
    assert_eq!(path, EXPECTED_PATH, "run {run_id}: wrong path");

    // No completed step ran again: after a step's completion no attempt of
    // it starts.
    let mut completed = BTreeSet::new();
    let mut started: BTreeMap<String, usize> = BTreeMap::new();
    let mut succeeded_keys = Vec::new();
    for event in events {
        let step = event["step"].as_i64();
        match event["kind"].as_str().unwrap() {
            "step_completed" => {
                assert!(
                    completed.insert(step.unwrap()),
                    "run {run_id}: step completed twice"
                );
            }
            "attempt_started" => {
                assert!(
                    !completed.contains(&step.unwrap()),
                    "run {run_id}: completed step {step:?} ran again"
                );
                let key = event["idempotency_key"].as_str().unwrap().to_string();
                *started.entry(key).or_default() += 1;
            }
            "attempt_finished" if event["outcome"] == "ok" => {
                succeeded_keys.push(format!(
                    "run-{run_id}/step-{}/attempt-{}",
                    step.unwrap(),
                    event["attempt"]
                ));
            }
            _ => {}
        }
    }
    let steps = shown["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 7, "run {run_id}: one step per state visited");
    assert!(steps.iter().all(|step| step["completed"] == true));

    // Nothing ran without being recorded first: each execution's `start`
    // line has its own `attempt_started` event (re-executions after a crash
    // reuse the key, and each has its own event).
    let prefix = format!("run-{run_id}/");
    let mut lines: BTreeMap<String, usize> = BTreeMap::new();
    let mut ended = BTreeSet::new();
    for line in journal {
        if let Some(key) = line
            .strip_prefix("start ")
            .filter(|key| key.starts_with(&prefix))
        {
            *lines.entry(key.to_string()).or_default() += 1;
        }
        if let Some(key) = line
            .strip_prefix("end ")
            .filter(|key| key.starts_with(&prefix))
        {
            ended.insert(key.to_string());
        }
    }
    for (key, count) in &lines {
        let recorded = started.get(key).copied().unwrap_or(0);
        assert!(
            *count <= recorded,
            "run {run_id}: {key} ran {count} times, recorded {recorded}"
        );
    }
    // Every attempt recorded as ok really did its work.
    for key in &succeeded_keys {
        assert!(
            ended.contains(key),
            "run {run_id}: {key} recorded ok without finishing"
        );
    }
    events.len()
}

#[test]
fn sigkill_at_many_points_then_resume_loses_and_repeats_nothing_on_sqlite() {
    let directory = tempfile::tempdir().unwrap();
    let database = directory.path().join("crash.db");
    sigkill_at_many_points(&directory, database.to_str().unwrap());
}

#[test]
fn sigkill_at_many_points_then_resume_loses_and_repeats_nothing_on_postgres() {
    let directory = tempfile::tempdir().unwrap();
    if let Some(url) = attnflow_testkit::postgres_database() {
        sigkill_at_many_points(&directory, &url);
    }
}

fn sigkill_at_many_points(directory: &tempfile::TempDir, database: &str) {
    let journal = directory.path().join("journal.txt");
    let spec_path = directory.path().join("crash.toml");
    std::fs::write(&spec_path, spec(&journal)).unwrap();
    // Creates the schema, and stays open for reading while runs write.
    let store = Store::connect(&Location::parse(database).unwrap()).unwrap();

    // An uninterrupted run gives the length of a clean log.
    let status = Command::new(binary())
        .args(["workflow", "run"])
        .arg(&spec_path)
        .arg("--db")
        .arg(database)
        .arg("--quiet")
        .status()
        .unwrap();
    assert!(status.success());
    let clean_events = check_run(database, 1, &journal_lines(&journal)) as i64;

    let mut run_id = 1;
    let mut kill_points = BTreeSet::new();
    let mut kills = 0;
    for extra_micros in [0_u64, 700] {
        for kill_at in 1..clean_events {
            run_id += 1;
            let point = run_and_kill(
                database,
                &spec_path,
                &journal,
                &store,
                run_id,
                kill_at,
                Duration::from_micros(extra_micros),
            );
            if let Some(point) = point {
                kills += 1;
                kill_points.insert(point);
                // Resume after the kill; a kill that came after the run
                // finished still resumes cleanly.
                let output = Command::new(binary())
                    .args(["workflow", "resume", &run_id.to_string(), "--quiet", "--db"])
                    .arg(database)
                    .output()
                    .unwrap();
                assert!(
                    output.status.success(),
                    "resume of run {run_id} (killed at {point:?}): {}",
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            check_run(database, run_id, &journal_lines(&journal));
        }
    }
    eprintln!(
        "{kills} kills at {} distinct (events, journal lines) points; clean log has {clean_events} events",
        kill_points.len()
    );
    assert!(
        kill_points.len() >= 50,
        "only {} distinct kill points ({kills} kills)",
        kill_points.len()
    );
    // Killed runs record exactly one crash each.
    let runs = store.runs().unwrap();
    assert_eq!(runs.len() as i64, run_id);
    assert!(runs.iter().all(|run| run.crash_count <= 1));
}

/// Live (non-zombie) processes in process group `group`.
#[cfg(target_os = "linux")]
fn group_members(group: i64) -> Vec<u32> {
    let mut members = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() > 2 && fields[0] != "Z" && fields[2].parse::<i64>().ok() == Some(group) {
            members.push(pid);
        }
    }
    members
}

#[cfg(target_os = "linux")]
#[test]
fn resume_kills_what_a_killed_executor_left_running() {
    let directory = tempfile::tempdir().unwrap();
    let database = directory.path().join("orphans.db");
    let group_file = directory.path().join("group");
    let marker = directory.path().join("marker");
    let late = directory.path().join("late");
    let spec_path = directory.path().join("orphans.toml");
    // The first execution leaves `sleep` running as a grandchild of the
    // executor (the shell forks it); a re-execution finds the marker and
    // succeeds at once.
    std::fs::write(
        &spec_path,
        format!(
            r#"
[workflow]
name = "orphans"
initial = "Long"

[states.Long]
action = {{ command = ["sh", "-c", "echo $$ > {group}.tmp && mv {group}.tmp {group}; if [ -e {marker} ]; then exit 0; fi; touch {marker}; sleep 30; echo late > {late}"] }}
on = {{ ok = "Done", failed = "Done" }}

[states.Done]
terminal = "success"
"#,
            group = group_file.display(),
            marker = marker.display(),
            late = late.display(),
        ),
    )
    .unwrap();
    let mut child = Command::new(binary())
        .args(["workflow", "run", "--quiet", "--db"])
        .arg(&database)
        .arg(&spec_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(marker.exists() && group_file.exists()) {
        assert!(Instant::now() < deadline, "the action never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    let group: i64 = std::fs::read_to_string(&group_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // `sleep` has started once the shell's group has more than the shell.
    while group_members(group).len() < 2 {
        assert!(Instant::now() < deadline, "sleep never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();

    let output = Command::new(binary())
        .args(["workflow", "resume", "1", "--quiet", "--db"])
        .arg(&database)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Killing is immediate but reaping is not; allow the kernel a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !group_members(group).is_empty() {
        assert!(
            Instant::now() < deadline,
            "processes of the killed executor's attempt still run: {:?}",
            group_members(group)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!late.exists());
}
