//! `attnflow workflow ...` on real files: exit codes, messages that name
//! the place of a fault, JSON outputs, restart and analysis.

use std::path::Path;

use assert_cmd::Command;
use predicates::prelude::*;

fn attnflow(directory: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_attnflow"));
    command.current_dir(directory);
    command
}

#[test]
fn default_workflow_runs_and_is_listed_and_shown() {
    let directory = tempfile::tempdir().unwrap();
    attnflow(directory.path())
        .args(["workflow", "run", "--default", "--db", "runs.db"])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "run 1: succeeded in state `Completed`",
        ))
        .stderr(predicate::str::contains("Validation --ok--> Completed"));
    // Without SPEC the default runs too.
    attnflow(directory.path())
        .args(["workflow", "run", "--db", "runs.db", "--quiet"])
        .assert()
        .success();
    let output = attnflow(directory.path())
        .args(["workflow", "runs", "--db", "runs.db", "--json"])
        .output()
        .unwrap();
    let runs: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(runs.as_array().unwrap().len(), 2);
    assert_eq!(runs[1]["workflow"], "figure-2");
    attnflow(directory.path())
        .args(["workflow", "show", "2", "--db", "runs.db"])
        .assert()
        .success()
        .stdout(predicate::str::contains("run_finished"));
}

#[test]
fn bad_specs_name_file_line_and_column_and_exit_2() {
    let directory = tempfile::tempdir().unwrap();
    std::fs::write(
        directory.path().join("bad.toml"),
        "[workflow]\nname = \"w\"\ninitial = \"A\"\n\n[states.A]\naction = { task = \"noop\" }\non = { ok = \"B\", failed = \"Nowhere\" }\n\n[states.B]\nterminal = \"success\"\n",
    )
    .unwrap();
    attnflow(directory.path())
        .args(["workflow", "run", "bad.toml", "--db", "runs.db"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("bad.toml:7:27"))
        .stderr(predicate::str::contains("`Nowhere`, which is not declared"));
    assert!(
        !directory.path().join("runs.db").exists(),
        "no store for a rejected spec"
    );

    std::fs::write(
        directory.path().join("task.toml"),
        "[workflow]\nname = \"w\"\ninitial = \"A\"\n[states.A]\naction = { task = \"sleep\", args = { ms = -3 } }\non = { ok = \"B\", failed = \"B\" }\n[states.B]\nterminal = \"success\"\n",
    )
    .unwrap();
    attnflow(directory.path())
        .args(["workflow", "check", "task.toml"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("task.toml:5:19"))
        .stderr(predicate::str::contains("argument `ms`"));
    attnflow(directory.path())
        .args(["workflow", "diagram", "missing.toml"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("missing.toml"));
}

#[test]
fn unknown_runs_and_missing_stores_are_bad_input() {
    let directory = tempfile::tempdir().unwrap();
    attnflow(directory.path())
        .args(["workflow", "runs", "--db", "none.db"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("none.db: no workflow store here"));
    assert!(!directory.path().join("none.db").exists());
    attnflow(directory.path())
        .args(["workflow", "run", "--db", "runs.db", "--quiet"])
        .assert()
        .success();
    attnflow(directory.path())
        .args(["workflow", "resume", "9", "--db", "runs.db"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no run with id 9"));
    // Resuming a finished run reports it and succeeds.
    attnflow(directory.path())
        .args(["workflow", "resume", "1", "--db", "runs.db"])
        .assert()
        .success()
        .stdout(predicate::str::contains("run 1: succeeded"));
}

#[test]
fn failed_run_exits_1_and_restarts_from_the_failed_step() {
    let directory = tempfile::tempdir().unwrap();
    // The Work step succeeds once the file `ready` exists.
    std::fs::write(
        directory.path().join("gate.toml"),
        r#"
[workflow]
name = "gate"
initial = "Prepare"

[states.Prepare]
action = { command = ["sh", "-c", "echo prepared >> log.txt"] }
on = { ok = "Work", failed = "GaveUp" }

[states.Work]
action = { command = ["sh", "-c", "echo work >> log.txt; test -e ready"] }
retry = { attempts = 2, backoff_ms = 1, cap_ms = 2 }
on = { ok = "Finished", failed = "GaveUp" }

[states.Finished]
terminal = "success"

[states.GaveUp]
terminal = "failure"
"#,
    )
    .unwrap();
    attnflow(directory.path())
        .args(["workflow", "run", "gate.toml", "--db", "runs.db"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("ended in failure state `GaveUp`"));
    std::fs::write(directory.path().join("ready"), "").unwrap();
    attnflow(directory.path())
        .args(["workflow", "restart", "1", "--db", "runs.db", "--json"])
        .assert()
        .success()
        .stdout(predicate::str::contains("\"status\": \"succeeded\""));
    // Prepare ran once; Work twice in the failed run and once after restart.
    let log = std::fs::read_to_string(directory.path().join("log.txt")).unwrap();
    assert_eq!(log, "prepared\nwork\nwork\nwork\n");
    // A succeeded run cannot be restarted.
    attnflow(directory.path())
        .args(["workflow", "restart", "1", "--db", "runs.db"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("only failed or crashed runs"));
}

#[test]
fn analyze_estimates_the_chain_of_recorded_runs() {
    let directory = tempfile::tempdir().unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/workflows/flaky.toml");
    attnflow(directory.path())
        .args(["workflow", "analyze", "--db", "runs.db"])
        .assert()
        .code(2);
    for _ in 0..15 {
        let status = attnflow(directory.path())
            .args(["workflow", "run", "--quiet", "--db", "runs.db"])
            .arg(&example)
            .output()
            .unwrap()
            .status;
        assert!(matches!(status.code(), Some(0 | 1)));
    }
    let output = attnflow(directory.path())
        .args(["workflow", "analyze", "--db", "runs.db", "--json"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let analyses: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let analysis = &analyses[0];
    assert_eq!(analysis["workflow"], "flaky-figure-2");
    assert_eq!(analysis["runs"], 15);
    assert_eq!(analysis["absorption"]["certain"], true);
    let states = analysis["states"].as_array().unwrap();
    assert_eq!(states[0], "Initialized");
    for row in analysis["probabilities"].as_array().unwrap() {
        let sum: f64 = row
            .as_array()
            .unwrap()
            .iter()
            .map(|value| value.as_f64().unwrap())
            .sum();
        assert!((sum - 1.0).abs() < 1e-9);
    }
    attnflow(directory.path())
        .args(["workflow", "analyze", "--db", "runs.db", "--mermaid"])
        .assert()
        .success()
        .stdout(predicate::str::starts_with(
            "stateDiagram-v2\n    [*] --> Initialized\n",
        ))
        .stdout(
            predicate::str::is_match(
                r"Initialized --> Processing : 1\.000 \[0\.\d+, 1\.000\] \(15\)",
            )
            .unwrap(),
        );
    attnflow(directory.path())
        .args(["workflow", "analyze", "--db", "runs.db"])
        .assert()
        .success()
        .stdout(predicate::str::contains("absorption is CERTAIN"));
}

/// `workflow analyze` on flaky.toml: intervals for T, B and t with the
/// method named, runs needed, a warning for rows with few exits, the exact
/// (state, visits) chain beside the plain one, and `--collapse`.
#[test]
fn analyze_flaky_with_intervals_and_the_exact_chain() {
    let directory = tempfile::tempdir().unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/workflows/flaky.toml");
    for _ in 0..40 {
        let status = attnflow(directory.path())
            .args(["workflow", "run", "--quiet", "--db", "runs.db"])
            .arg(&example)
            .output()
            .unwrap()
            .status;
        assert!(matches!(status.code(), Some(0 | 1)));
    }
    let text = attnflow(directory.path())
        .args(["workflow", "analyze", "--db", "runs.db"])
        .output()
        .unwrap();
    assert!(text.status.success());
    let text = String::from_utf8(text.stdout).unwrap();
    for expected in [
        "view: the exact chain; X[k] is state X after k visits to Retry (max_visits 3)",
        "T with 95% intervals",
        "Retry[1]       Processing[1]",
        "runs for ±0.050",
        "method: 95% intervals. T_ij: equal-tailed quantiles of the Beta marginal",
        "4000 draws from the rows' Dirichlet posteriors (seed 0)",
        "warning: fewer than 10 observed exits from",
        "binomial 99% band",
        "why the plain chain differs: `Retry` (max_visits 3)",
    ] {
        assert!(text.contains(expected), "missing `{expected}` in\n{text}");
    }
    let output = attnflow(directory.path())
        .args(["workflow", "analyze", "--db", "runs.db", "--json"])
        .output()
        .unwrap();
    let analyses: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let analysis = &analyses[0];
    assert_eq!(analysis["view"], "exact");
    let [low, high] = [0, 1].map(|end| {
        analysis["uncertainty"]["absorption"]["Initialized"]["Completed"][end]
            .as_f64()
            .unwrap()
    });
    let point = analysis["absorption"]["absorption_probabilities"]["Initialized"]["Completed"]
        .as_f64()
        .unwrap();
    assert!(
        low < point && point <= high && high <= 1.0,
        "{low} {point} {high}"
    );
    assert!(analysis["uncertainty"]["runs_needed"]["Initialized"].is_u64());
    assert!(!analysis["comparison"]["predictions"]
        .as_array()
        .unwrap()
        .is_empty());
    attnflow(directory.path())
        .args(["workflow", "analyze", "--db", "runs.db", "--mermaid"])
        .assert()
        .success()
        .stdout(predicate::str::contains("state \"Retry[1]\" as Retry_1"))
        .stdout(
            predicate::str::is_match(
                r"Retry_1 --> Processing_1 : 1\.000 \[0\.\d+, 1\.000\] \(\d+\)",
            )
            .unwrap(),
        );
    let collapsed = attnflow(directory.path())
        .args(["workflow", "analyze", "--db", "runs.db", "--collapse"])
        .output()
        .unwrap();
    let collapsed = String::from_utf8(collapsed.stdout).unwrap();
    assert!(
        collapsed.contains("view: the plain chain over state names"),
        "{collapsed}"
    );
    assert!(collapsed.contains("\nRetry "), "{collapsed}");
    assert!(!collapsed.contains("Retry[1]"), "{collapsed}");
}

#[test]
fn diagram_of_the_default_is_figure_two() {
    let directory = tempfile::tempdir().unwrap();
    attnflow(directory.path())
        .args(["workflow", "diagram", "--default"])
        .assert()
        .success()
        .stdout(predicate::str::contains("Validation --> Completed : ok"))
        .stdout(predicate::str::contains("Retry --> Processing : ok"));
}
