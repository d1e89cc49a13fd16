//! `attnflow run`, the main job, end to end on real files, a real store and
//! a real killed process.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use assert_cmd::cargo::CommandCargoExt;
use assert_cmd::Command;
use predicates::prelude::*;

fn attnflow() -> Command {
    Command::cargo_bin("attnflow").expect("binary builds")
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The embedded default: every record is accounted for, the seven broken
/// ones are quarantined, training reaches the threshold, and the report has
/// every section.
#[test]
fn the_embedded_default_runs_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let store = dir.path().join("store.sqlite");
    attnflow()
        .current_dir(dir.path())
        .args(["run", "--out"])
        .arg(&run_dir)
        .arg("--db")
        .arg(&store)
        .assert()
        .success()
        .stdout(predicate::str::contains("ended in Completed"))
        .stdout(predicate::str::contains("report.html"));

    let quality = json(&run_dir.join("quality.json"));
    assert_eq!(quality["read"], 6007);
    assert_eq!(quality["accepted"], 6000);
    assert_eq!(quality["quarantined"], 7);
    let pairs = std::fs::read_to_string(run_dir.join("data/pairs.jsonl")).unwrap();
    assert_eq!(
        pairs.lines().count(),
        6000,
        "every accepted record reaches training"
    );
    let validation = json(&run_dir.join("validation.json"));
    assert_eq!(validation["passed"], true);
    assert!(validation["sequence_accuracy"].as_f64().unwrap() >= 0.95);
    assert_manifest_proves_the_folder(&run_dir);

    let report = std::fs::read_to_string(run_dir.join("report.html")).unwrap();
    for section in [
        "Summary",
        "Blueprint",
        "Data",
        "Training",
        "Attention",
        "Workflow",
        "Claims, checked",
    ] {
        assert!(
            report.contains(&format!("<h2>{section}</h2>")),
            "report lacks {section}"
        );
    }
    for part in [
        "Cost per node",
        "M = (I, O, F, R)",
        "Quarantine reasons",
        "Profile",
        "Objective J = L + λR",
        "Gradient flow by layer",
        "Rollout, example 1",
        "Absorption analysis",
    ] {
        assert!(report.contains(part), "report lacks {part}");
    }
    assert!(
        !report.contains("https://") && !report.contains("http://"),
        "the report loads nothing"
    );
    opens_in_headless_chromium(&run_dir.join("report.html"));

    // The store holds the quarantine and the run's history.
    let quarantine = attnflow()
        .args(["data", "quarantine", "--json", "--db"])
        .arg(run_dir.join("data.sqlite"))
        .assert()
        .success();
    let listed = String::from_utf8_lossy(&quarantine.get_output().stdout).to_string();
    for rule in [
        "unique",
        "type",
        "min_length",
        "one_of",
        "required",
        "column_count",
        "truncated",
    ] {
        assert!(
            listed.contains(rule),
            "quarantine lacks a `{rule}` record: {listed}"
        );
    }
    attnflow()
        .args(["workflow", "runs", "--db"])
        .arg(&store)
        .assert()
        .success()
        .stdout(predicate::str::contains("attnflow-pipeline"))
        .stdout(predicate::str::contains("Completed"));
}

/// The manifest lists every file of the run folder (the final weights
/// included) with a size and SHA-256 that match the file.
fn assert_manifest_proves_the_folder(run_dir: &Path) {
    let manifest = json(&run_dir.join("manifest.json"));
    let artifacts = manifest["artifacts"].as_array().unwrap();
    let listed: Vec<&str> = artifacts
        .iter()
        .map(|artifact| artifact["file"].as_str().unwrap())
        .collect();
    let checkpoint = json(&run_dir.join("training/checkpoint.json"));
    let weights = format!(
        "training/{}",
        checkpoint["weights"]["file"].as_str().unwrap()
    );
    for file in [
        "quality.json",
        "profile.json",
        "data/pairs.jsonl",
        "training.json",
        "validation.json",
        "report.html",
        "run.json",
        "training/checkpoint.json",
        "training/metrics.jsonl",
        "training/grad_norms.jsonl",
        weights.as_str(),
    ] {
        assert!(
            listed.contains(&file),
            "the manifest lacks {file}: {listed:?}"
        );
    }
    for artifact in artifacts {
        let path = run_dir.join(artifact["file"].as_str().unwrap());
        let (sha256, bytes) = attnflow_base::digest::sha256_file(&path)
            .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        assert_eq!(artifact["bytes"], bytes, "{}", path.display());
        assert_eq!(artifact["sha256"], sha256.as_str(), "{}", path.display());
    }
}

/// Opens the report in headless Chromium: no console or script errors,
/// every section in the live DOM.
fn opens_in_headless_chromium(report: &Path) {
    let Some(browser) = attnflow_testkit::chromium() else {
        return;
    };
    let page = browser.dump_dom(&format!("file://{}#selftest", report.display()), 5000);
    let (dom, log) = (&page.dom, &page.log);
    assert!(page.success, "chromium failed: {log}");
    assert!(page.console_errors().is_empty(), "console errors: {log}");
    assert!(!dom.contains("data-errors"), "script errors: {dom}");
    for section in [
        "Summary",
        "Blueprint",
        "Data",
        "Training",
        "Attention",
        "Workflow",
        "Claims, checked",
    ] {
        assert!(
            dom.contains(&format!("<h2>{section}</h2>")),
            "the live page lacks {section}"
        );
    }
    assert!(
        dom.contains("data-selftest=\"view-changed\""),
        "the attention explorer did not redraw"
    );
}

fn weights_at_end(run_dir: &Path) -> (PathBuf, Vec<u8>) {
    let meta = json(&run_dir.join("training/checkpoint.json"));
    let file = run_dir
        .join("training")
        .join(meta["weights"]["file"].as_str().unwrap());
    let bytes = std::fs::read(&file).unwrap();
    (file, bytes)
}

/// A run killed with SIGKILL during training resumes from its last
/// checkpoint and ends with exactly the weights of an uninterrupted run.
#[test]
fn a_run_killed_during_training_resumes_to_the_same_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = dir.path().join("inputs");
    attnflow()
        .args(["run", "--rows", "800", "--write-default"])
        .arg(&inputs)
        .assert()
        .success();
    // A fixed budget, no early stop, frequent checkpoints, no threshold.
    let spec_path = inputs.join("pipeline.toml");
    let spec = std::fs::read_to_string(&spec_path)
        .unwrap()
        .replace("steps = 1500", "steps = 60")
        .replace("target_accuracy = 0.99\n", "")
        .replace("checkpoint_every = 50", "checkpoint_every = 10")
        .replace(
            "min_sequence_accuracy = 0.95",
            "min_sequence_accuracy = 0.0",
        );
    std::fs::write(&spec_path, spec).unwrap();
    let store = dir.path().join("store.sqlite");

    let straight = dir.path().join("straight");
    attnflow()
        .args(["run", "--json"])
        .arg(&spec_path)
        .arg("--out")
        .arg(&straight)
        .arg("--db")
        .arg(&store)
        .assert()
        .success();

    let interrupted = dir.path().join("interrupted");
    let mut child = std::process::Command::cargo_bin("attnflow")
        .unwrap()
        .args(["run", "--json"])
        .arg(&spec_path)
        .arg("--out")
        .arg(&interrupted)
        .arg("--db")
        .arg(&store)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill once training has checkpointed step 20 of 60 (and so runs on).
    let checkpoint = interrupted.join("training/checkpoint.json");
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let step = std::fs::read_to_string(&checkpoint)
            .ok()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .and_then(|meta| meta["step"].as_u64())
            .unwrap_or(0);
        if step >= 20 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be killed"
        );
        assert!(Instant::now() < deadline, "training never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        !interrupted.join("manifest.json").exists(),
        "killed before the end"
    );

    // The history moves to another store; --resume --db follows it.
    let moved = dir.path().join("moved.sqlite");
    for suffix in ["", "-wal", "-shm"] {
        let from = PathBuf::from(format!("{}{suffix}", store.display()));
        if from.exists() {
            std::fs::rename(&from, format!("{}{suffix}", moved.display())).unwrap();
        }
    }
    attnflow()
        .args(["run", "--resume"])
        .arg(&interrupted)
        .arg("--db")
        .arg(&moved)
        .assert()
        .success()
        .stderr(predicate::str::contains("re-running Training"));
    assert!(!store.exists(), "the old store was not used again");
    let run_file = json(&interrupted.join("run.json"));
    assert_eq!(
        Path::new(run_file["store"].as_str().unwrap()),
        moved.as_path(),
        "the folder records the store it now uses"
    );
    attnflow()
        .args(["workflow", "runs", "--db"])
        .arg(&moved)
        .assert()
        .success()
        .stdout(predicate::str::contains("Completed"));
    let (file_a, weights_a) = weights_at_end(&straight);
    let (file_b, weights_b) = weights_at_end(&interrupted);
    assert_eq!(
        file_a.file_name(),
        file_b.file_name(),
        "both end at the same step"
    );
    assert!(
        weights_a == weights_b,
        "resumed weights differ from the uninterrupted run's"
    );
    assert!(interrupted.join("report.html").exists());
    // Resuming a finished run only reports how it ended.
    attnflow()
        .args(["run", "--resume"])
        .arg(&interrupted)
        .assert()
        .success()
        .stdout(predicate::str::contains("ended in Completed"));
}

#[test]
fn bad_pipeline_specs_and_folders_exit_2_naming_the_place() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("pipeline.toml");
    std::fs::write(
        &spec,
        "[pipeline]\nname = \"x\"\n\n[data]\nschema = \"s.toml\"\nsources = []\n",
    )
    .unwrap();
    attnflow()
        .arg("run")
        .arg(&spec)
        .arg("--out")
        .arg(dir.path().join("a"))
        .assert()
        .code(2)
        .stderr(predicate::str::contains("pipeline.toml:"));
    std::fs::write(&spec, "[pipeline]\nname = \"x\"\nbogus = 1\n").unwrap();
    attnflow()
        .arg("run")
        .arg(&spec)
        .arg("--out")
        .arg(dir.path().join("b"))
        .assert()
        .code(2)
        .stderr(predicate::str::contains("pipeline.toml:3:1"))
        .stderr(predicate::str::contains("bogus"));
    attnflow()
        .args(["run", "--resume"])
        .arg(dir.path())
        .assert()
        .code(2)
        .stderr(predicate::str::contains("not a pipeline run folder"));
}

/// The exit code comes from the class of the fault: the user's schema or
/// blueprint is bad input (2); a run whose training fails is a failure of
/// the work (1), even though its input checked.
#[test]
fn pipeline_exit_codes_follow_the_class_of_the_fault() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = dir.path().join("inputs");
    attnflow()
        .args(["run", "--rows", "200", "--write-default"])
        .arg(&inputs)
        .assert()
        .success();
    let spec = inputs.join("pipeline.toml");
    let original = std::fs::read_to_string(&spec).unwrap();
    let store = dir.path().join("store.sqlite");
    let run = |name: &str| {
        let mut command = attnflow();
        command
            .arg("run")
            .arg(&spec)
            .arg("--out")
            .arg(dir.path().join(name))
            .arg("--db")
            .arg(&store);
        command
    };

    std::fs::write(inputs.join("blueprint.toml"), "[model]\nname = 3\n").unwrap();
    run("bad-blueprint")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("blueprint.toml:"));
    std::fs::remove_file(inputs.join("schema.toml")).unwrap();
    run("missing-schema")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("schema.toml"));

    // Restore good inputs, then make training fail: the validation
    // threshold cannot be reached in one step, and the retry gets nowhere.
    attnflow()
        .args(["run", "--rows", "200", "--write-default"])
        .arg(&inputs)
        .assert()
        .success();
    let impossible = original.replace("steps = 1500", "steps = 1").replace(
        "min_sequence_accuracy = 0.95",
        "min_sequence_accuracy = 1.0",
    );
    std::fs::write(&spec, impossible).unwrap();
    run("never-valid")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("the pipeline ended in"));
}
