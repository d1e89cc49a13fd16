//! The run folders under `--runs`: pipeline runs (`attnflow run`, with a
//! `run.json` tying them to their workflow run) and training runs
//! (`attnflow train --out`). Folders are found by the files the crates
//! that write them name, read through their own types, and rescanned at
//! most every [`RESCAN`], so new runs appear without restarting the server.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use attnflow_pipeline::{files, RunFile, Validation};
use attnflow_store::Location;
use attnflow_train::checkpoint::{META_FILE, SPEC_FILE};
use attnflow_train::trainer::{EVAL_FILE, METRICS_FILE, REPORT_FILE};
use attnflow_train::{Evaluation, StepMetrics, TrainReport};
use serde::de::DeserializeOwned;

/// How stale the folder list may be.
pub const RESCAN: Duration = Duration::from_secs(2);

/// A training log written to within this long is taken as a run in
/// progress.
pub const LIVE_WINDOW: Duration = Duration::from_secs(60);

/// What wrote a folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FolderKind {
    /// `attnflow run`: the whole pipeline.
    Pipeline,
    /// `attnflow train --out`: training only.
    Training,
}

impl FolderKind {
    /// The word the pages use.
    pub fn name(self) -> &'static str {
        match self {
            FolderKind::Pipeline => "pipeline",
            FolderKind::Training => "training",
        }
    }
}

/// Where training stands, from its files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Training {
    /// No training log yet.
    NotStarted,
    /// The log grew within [`LIVE_WINDOW`] and there is no report yet.
    Running,
    /// A log without a report, untouched for a while: interrupted.
    Stopped,
    /// The training report is written.
    Finished,
}

/// A run's final (or latest) numbers.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Results {
    /// Cross-entropy `L` of the last logged step.
    pub loss: Option<f64>,
    /// Exact-sequence accuracy: the validation verdict's, else the last
    /// evaluation's.
    pub accuracy: Option<f64>,
    /// Updates completed.
    pub steps: Option<u64>,
}

/// One run folder.
#[derive(Debug, Clone)]
pub struct FolderRun {
    /// Its key in URLs: `run-ID` when its workflow run is in the main
    /// store, else `dir-` and a digest of its path.
    pub key: String,
    /// The folder (canonical).
    pub path: PathBuf,
    /// Its name as shown: the path below the `--runs` folder.
    pub name: String,
    /// What wrote it.
    pub kind: FolderKind,
    /// `run.json`, for pipeline runs.
    pub run_file: Option<RunFile>,
    /// The store `run.json` names.
    pub store: Option<Location>,
    /// Its workflow run, when that is in the main store.
    pub linked: Option<i64>,
    /// Where `metrics.jsonl` and `eval.jsonl` are.
    pub training_dir: PathBuf,
    /// When it started (ms since the epoch, from its first file).
    pub started_ms: i64,
    /// When it finished (its manifest or training report).
    pub finished_ms: Option<i64>,
    /// Loss and accuracy.
    pub results: Results,
    /// Where training stands.
    pub training: Training,
    /// What is wrong with the folder, if anything (a damaged `run.json`).
    pub problem: Option<String>,
}

/// The folders under the `--runs` roots.
pub struct Catalog {
    roots: Vec<PathBuf>,
    main_store: String,
    scan: Mutex<Scan>,
}

#[derive(Default)]
struct Scan {
    at: Option<Instant>,
    folders: Arc<Vec<FolderRun>>,
    /// Results per file read, with the modification time and size they
    /// were read at, so an unchanged report is not parsed again.
    results: HashMap<PathBuf, (SystemTime, u64, Results)>,
}

fn modified(path: &Path) -> Option<(SystemTime, u64)> {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.modified().ok()?, metadata.len()))
}

fn milliseconds(time: SystemTime) -> i64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |duration| duration.as_millis() as i64)
}

/// Reads a JSON run file through its own type.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, String> {
    let text =
        std::fs::read_to_string(path).map_err(|error| format!("{}: {error}", path.display()))?;
    serde_json::from_str(&text).map_err(|error| format!("{}: damaged: {error}", path.display()))
}

/// The last complete line of a JSON Lines log that parses as `T` (read
/// from the file's end, so a long log costs no more than a short one).
pub fn last_line<T: DeserializeOwned>(path: &Path) -> Option<T> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path).ok()?;
    let length = file.metadata().ok()?.len();
    let start = length.saturating_sub(64 * 1024);
    file.seek(SeekFrom::Start(start)).ok()?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail).ok()?;
    let text = String::from_utf8_lossy(&tail);
    // The part after the last newline may be a line still being written.
    let complete = &text[..text.rfind('\n')?];
    complete
        .lines()
        .rev()
        .find_map(|line| serde_json::from_str(line).ok())
}

/// A stable key for a folder that is not in the main store.
pub fn folder_key(path: &Path) -> String {
    let digest = attnflow_base::digest::sha256(path.to_string_lossy().as_bytes());
    format!("dir-{}", &digest[..12])
}

impl Catalog {
    /// The folders under `roots`; a pipeline run whose `run.json` names
    /// `main_store` is linked to its run there.
    pub fn new(roots: Vec<PathBuf>, main_store: &Location) -> Self {
        Catalog {
            roots,
            main_store: main_store.argument(),
            scan: Mutex::new(Scan::default()),
        }
    }

    /// Every run folder, at most [`RESCAN`] old.
    pub fn folders(&self) -> Arc<Vec<FolderRun>> {
        let mut scan = self
            .scan
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if scan.at.is_some_and(|at| at.elapsed() < RESCAN) {
            return scan.folders.clone();
        }
        let mut found = Vec::new();
        for root in &self.roots {
            for path in candidates(root) {
                if let Some(folder) = self.read_folder(root, &path, &mut scan.results) {
                    found.push(folder);
                }
            }
        }
        // One entry per folder even when two roots overlap.
        found.sort_by(|a, b| a.path.cmp(&b.path));
        found.dedup_by(|a, b| a.path == b.path);
        scan.folders = Arc::new(found);
        scan.at = Some(Instant::now());
        scan.folders.clone()
    }

    /// The folder with `key`.
    pub fn by_key(&self, key: &str) -> Option<FolderRun> {
        self.folders()
            .iter()
            .find(|folder| folder.key == key)
            .cloned()
    }

    fn read_folder(
        &self,
        root: &Path,
        path: &Path,
        cache: &mut HashMap<PathBuf, (SystemTime, u64, Results)>,
    ) -> Option<FolderRun> {
        let path = path.canonicalize().ok()?;
        let name = path
            .strip_prefix(root.canonicalize().ok()?)
            .ok()
            .filter(|relative| !relative.as_os_str().is_empty())
            .map_or_else(
                || {
                    path.file_name()
                        .map(|name| name.to_string_lossy().into_owned())
                },
                |relative| Some(relative.display().to_string()),
            )
            .unwrap_or_else(|| path.display().to_string());
        let pipeline = path.join(files::RUN).is_file();
        let (kind, training_dir) = if pipeline {
            (FolderKind::Pipeline, path.join(files::TRAINING_DIR))
        } else {
            (FolderKind::Training, path.clone())
        };
        let mut problem = None;
        let run_file = if pipeline {
            read_json::<RunFile>(&path.join(files::RUN))
                .map_err(|error| problem = Some(error))
                .ok()
        } else {
            None
        };
        let store = run_file
            .as_ref()
            .and_then(|run| Location::parse(&run.store.to_string_lossy()).ok());
        let linked = match (&store, &run_file) {
            (Some(store), Some(run)) if store.argument() == self.main_store => {
                Some(run.workflow_run)
            }
            _ => None,
        };
        let key = linked.map_or_else(|| folder_key(&path), |id| format!("run-{id}"));
        let first = if pipeline {
            path.join(files::RUN)
        } else {
            path.join(SPEC_FILE)
        };
        let started_ms = modified(&first)
            .or_else(|| modified(&training_dir.join(METRICS_FILE)))
            .map_or(0, |(time, _)| milliseconds(time));
        let report = if pipeline {
            path.join(files::TRAINING)
        } else {
            path.join(REPORT_FILE)
        };
        let finished = if pipeline {
            path.join(files::MANIFEST)
        } else {
            report.clone()
        };
        let finished_ms = modified(&finished).map(|(time, _)| milliseconds(time));
        let metrics = training_dir.join(METRICS_FILE);
        let training = if report.is_file() {
            Training::Finished
        } else {
            match modified(&metrics) {
                None => Training::NotStarted,
                Some((time, _)) => {
                    let age = SystemTime::now().duration_since(time).unwrap_or_default();
                    if age < LIVE_WINDOW {
                        Training::Running
                    } else {
                        Training::Stopped
                    }
                }
            }
        };
        let source = if report.is_file() { report } else { metrics };
        let mut results = match (modified(&source), cache.get(&source)) {
            (Some((time, size)), Some((seen, seen_size, results)))
                if *seen == time && *seen_size == size =>
            {
                *results
            }
            (Some((time, size)), _) => {
                let results = read_results(&source, &training_dir);
                cache.insert(source, (time, size, results));
                results
            }
            (None, _) => Results::default(),
        };
        if let Ok(validation) = read_json::<Validation>(&path.join(files::VALIDATION)) {
            results.accuracy = Some(validation.sequence_accuracy);
        }
        Some(FolderRun {
            key,
            path,
            name,
            kind,
            run_file,
            store,
            linked,
            training_dir,
            started_ms,
            finished_ms,
            results,
            training,
            problem,
        })
    }
}

/// Loss, accuracy and steps from a training report, or from the ends of
/// the logs while training runs.
fn read_results(source: &Path, training_dir: &Path) -> Results {
    let last_evaluation = || {
        last_line::<Evaluation>(&training_dir.join(EVAL_FILE))
            .map(|evaluation| evaluation.sequence_accuracy)
    };
    let report = source
        .extension()
        .is_some_and(|extension| extension == "json")
        .then(|| read_json::<TrainReport>(source).ok())
        .flatten();
    match report {
        Some(report) => Results {
            loss: report.last_step.as_ref().map(|step| step.loss),
            accuracy: report
                .evaluations
                .last()
                .map(|evaluation| evaluation.sequence_accuracy)
                .or_else(last_evaluation),
            steps: Some(report.step),
        },
        None => {
            let step = last_line::<StepMetrics>(&training_dir.join(METRICS_FILE));
            Results {
                loss: step.as_ref().map(|step| step.loss),
                accuracy: last_evaluation(),
                steps: step.map(|step| step.step),
            }
        }
    }
}

/// `root` itself when it is a run folder, else its run subfolders in name
/// order.
fn candidates(root: &Path) -> Vec<PathBuf> {
    if is_run_folder(root) {
        return vec![root.to_path_buf()];
    }
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut folders: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.is_dir() && is_run_folder(path))
        .collect();
    folders.sort();
    folders
}

/// Whether `path` holds a pipeline run (`run.json`) or a training run
/// (its checkpoint or metrics log).
pub fn is_run_folder(path: &Path) -> bool {
    path.join(files::RUN).is_file()
        || path.join(META_FILE).is_file()
        || path.join(METRICS_FILE).is_file()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_complete_line_wins_and_a_partial_one_is_ignored() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("log.jsonl");
        std::fs::write(&path, "{\"a\": 1}\n{\"a\": 2}\n{\"a\": 3").unwrap();
        #[derive(serde::Deserialize)]
        struct Line {
            a: u32,
        }
        assert_eq!(last_line::<Line>(&path).unwrap().a, 2);
        std::fs::write(&path, "{\"a\": 1}\nnot json\n").unwrap();
        assert_eq!(last_line::<Line>(&path).unwrap().a, 1);
        std::fs::write(&path, "").unwrap();
        assert!(last_line::<Line>(&path).is_none());
    }

    #[test]
    fn folder_keys_are_stable_and_carry_no_path() {
        let key = folder_key(Path::new("/tmp/x/../secret"));
        assert_eq!(key, folder_key(Path::new("/tmp/x/../secret")));
        assert!(key.starts_with("dir-") && key.len() == 16, "{key}");
        assert!(key[4..].chars().all(|c| c.is_ascii_hexdigit()));
    }
}
