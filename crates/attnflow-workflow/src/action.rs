//! Actions: built-in tasks registered by name, and external commands.
//!
//! Other crates extend the engine by registering their own tasks in a
//! [`TaskRegistry`] (the `attnflow run` pipeline registers ingest, train and
//! report). Every attempt receives a stable idempotency key
//! `run-<id>/step-<seq>/attempt-<n>`: an attempt re-executed after a crash
//! gets the same key, so an action can recognise work it already did.

use std::collections::BTreeMap;
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::outcome::Outcome;

/// The environment variable that carries the idempotency key to commands.
pub const IDEMPOTENCY_KEY_VARIABLE: &str = "ATTNFLOW_IDEMPOTENCY_KEY";

/// The environment variable that names the run store (canonical path) to
/// external commands, with `ATTNFLOW_RUN_ID` identifying their run.
pub const DATABASE_VARIABLE: &str = "ATTNFLOW_WORKFLOW_DB";

/// Kills processes that a dead executor of run `run_id` in the store
/// `database` left behind: the executor's direct children die with it
/// (`PR_SET_PDEATHSIG`), but their own children (a `sh -c` wrapper's
/// program, say) would run on beside the re-executed attempt. They are
/// recognised by `ATTNFLOW_WORKFLOW_DB` and `ATTNFLOW_RUN_ID` in their
/// environment; their whole process groups are killed. Called only by an
/// executor that holds the run's lease, so no live executor owns them.
/// Returns how many processes were found.
#[cfg(target_os = "linux")]
pub(crate) fn kill_orphans(database: &str, run_id: i64) -> usize {
    let wanted_database = format!("{DATABASE_VARIABLE}={database}");
    let wanted_run = format!("ATTNFLOW_RUN_ID={run_id}");
    let own = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut found = 0;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == own {
            continue;
        }
        // Other users' processes are unreadable and cannot be ours.
        let Ok(environment) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let mut matches_database = false;
        let mut matches_run = false;
        for variable in environment.split(|byte| *byte == 0) {
            matches_database |= variable == wanted_database.as_bytes();
            matches_run |= variable == wanted_run.as_bytes();
        }
        if !(matches_database && matches_run) {
            continue;
        }
        found += 1;
        let group = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                // Fields after the parenthesised name: state, ppid, pgrp.
                let (_, rest) = stat.rsplit_once(')')?;
                rest.split_whitespace().nth(2)?.parse::<libc::pid_t>().ok()
            });
        // SAFETY: plain syscalls; a negative pid addresses a process group.
        unsafe {
            if let Some(group) = group.filter(|group| *group > 1) {
                libc::kill(-group, libc::SIGKILL);
            }
            libc::kill(pid as libc::pid_t, libc::SIGKILL);
        }
    }
    found
}

/// Elsewhere orphans cannot be found; they finish on their own.
#[cfg(not(target_os = "linux"))]
pub(crate) fn kill_orphans(_database: &str, _run_id: i64) -> usize {
    0
}

/// Exit status by which an external command reports invalid input
/// (`EX_DATAERR` from sysexits.h); it maps to [`Outcome::Invalid`].
pub const INVALID_EXIT_CODE: i32 = 65;

/// Everything an attempt needs to know about itself.
#[derive(Debug, Clone)]
pub struct TaskContext {
    /// The run's id.
    pub run_id: i64,
    /// The step's sequence number within the run (1-based).
    pub step: i64,
    /// The attempt number within the step (1-based).
    pub attempt: u32,
    /// The state whose action this is.
    pub state: String,
    /// `run-<id>/step-<seq>/attempt-<n>`; the same on re-execution after a
    /// crash.
    pub idempotency_key: String,
    /// The task's arguments from the spec (a JSON object).
    pub args: serde_json::Value,
    /// Set when the attempt timed out or the executor lost its lease; a
    /// long task should check it and stop.
    pub cancelled: Arc<AtomicBool>,
}

impl TaskContext {
    /// The idempotency key of attempt `attempt` of step `step` in run `run_id`.
    pub fn idempotency_key_for(run_id: i64, step: i64, attempt: u32) -> String {
        format!("run-{run_id}/step-{step}/attempt-{attempt}")
    }

    /// Whether the task should stop early.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }
}

/// What an attempt produced: its outcome and a short note for the event log.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskOutput {
    /// The outcome that selects the transition.
    pub outcome: Outcome,
    /// A note for people (error message, output tail); may be empty.
    pub detail: String,
}

impl TaskOutput {
    /// Success with no note.
    pub fn ok() -> Self {
        TaskOutput {
            outcome: Outcome::Ok,
            detail: String::new(),
        }
    }

    /// An outcome with a note.
    pub fn with(outcome: Outcome, detail: impl Into<String>) -> Self {
        TaskOutput {
            outcome,
            detail: detail.into(),
        }
    }
}

/// A built-in task. Implemented for closures `Fn(&TaskContext) -> TaskOutput`.
pub trait Task: Send + Sync + 'static {
    /// Runs one attempt.
    fn run(&self, context: &TaskContext) -> TaskOutput;

    /// Checks the spec's arguments before any run starts, so a typo is
    /// reported with its line instead of failing mid-run.
    fn check_args(&self, args: &serde_json::Value) -> Result<(), String> {
        let _ = args;
        Ok(())
    }
}

impl<F> Task for F
where
    F: Fn(&TaskContext) -> TaskOutput + Send + Sync + 'static,
{
    fn run(&self, context: &TaskContext) -> TaskOutput {
        self(context)
    }
}

/// Tasks by name.
#[derive(Clone, Default)]
pub struct TaskRegistry {
    tasks: BTreeMap<String, Arc<dyn Task>>,
}

impl std::fmt::Debug for TaskRegistry {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("TaskRegistry")
            .field("tasks", &self.names())
            .finish()
    }
}

impl TaskRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry holding the built-in tasks `noop`, `sleep`, `fail` and
    /// `flaky`.
    pub fn with_builtins() -> Self {
        let mut registry = Self::new();
        registry.register("noop", |_: &TaskContext| TaskOutput::ok());
        registry.register("sleep", SleepTask);
        registry.register("fail", FailTask);
        registry.register("flaky", FlakyTask);
        registry
    }

    /// Adds (or replaces) the task called `name`.
    pub fn register(&mut self, name: impl Into<String>, task: impl Task) {
        self.tasks.insert(name.into(), Arc::new(task));
    }

    /// The task called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<dyn Task>> {
        self.tasks.get(name).cloned()
    }

    /// Registered names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.tasks.keys().cloned().collect()
    }
}

fn integer_argument(args: &serde_json::Value, name: &str) -> Result<Option<u64>, String> {
    match args.get(name) {
        None => Ok(None),
        Some(value) => value
            .as_u64()
            .map(Some)
            .ok_or_else(|| format!("argument `{name}` must be a non-negative integer")),
    }
}

fn reject_unknown_arguments(args: &serde_json::Value, known: &[&str]) -> Result<(), String> {
    if let Some(object) = args.as_object() {
        if let Some(unknown) = object.keys().find(|key| !known.contains(&key.as_str())) {
            return Err(format!(
                "unknown argument `{unknown}` (expected: {})",
                known.join(", ")
            ));
        }
    }
    Ok(())
}

fn outcome_argument(args: &serde_json::Value) -> Result<Outcome, String> {
    match args.get("outcome") {
        None => Ok(Outcome::Failed),
        Some(value) => match value.as_str().and_then(Outcome::parse) {
            Some(outcome @ (Outcome::Failed | Outcome::Invalid)) => Ok(outcome),
            _ => Err("argument `outcome` must be \"failed\" or \"invalid\"".to_string()),
        },
    }
}

/// `sleep { ms }`: waits, then succeeds; stops early when cancelled.
struct SleepTask;

impl Task for SleepTask {
    fn run(&self, context: &TaskContext) -> TaskOutput {
        let milliseconds = integer_argument(&context.args, "ms")
            .ok()
            .flatten()
            .unwrap_or(0);
        let deadline = Instant::now() + Duration::from_millis(milliseconds);
        while Instant::now() < deadline {
            if context.is_cancelled() {
                return TaskOutput::with(Outcome::Failed, "cancelled");
            }
            std::thread::sleep(Duration::from_millis(5).min(deadline - Instant::now()));
        }
        TaskOutput::ok()
    }

    fn check_args(&self, args: &serde_json::Value) -> Result<(), String> {
        reject_unknown_arguments(args, &["ms"])?;
        integer_argument(args, "ms")?.ok_or("argument `ms` is required")?;
        Ok(())
    }
}

/// `fail { outcome = "failed" | "invalid" }`: always reports that outcome.
struct FailTask;

impl Task for FailTask {
    fn run(&self, context: &TaskContext) -> TaskOutput {
        let outcome = outcome_argument(&context.args).unwrap_or(Outcome::Failed);
        TaskOutput::with(outcome, "the `fail` task always fails")
    }

    fn check_args(&self, args: &serde_json::Value) -> Result<(), String> {
        reject_unknown_arguments(args, &["outcome"])?;
        outcome_argument(args).map(|_| ())
    }
}

/// `flaky { probability, outcome, seed }`: fails with the given probability,
/// decided by hashing the idempotency key, so a re-executed attempt decides
/// the same way. Useful to exercise retries and to build histories for the
/// Markov analysis.
struct FlakyTask;

impl FlakyTask {
    fn probability(args: &serde_json::Value) -> Result<f64, String> {
        let value = args
            .get("probability")
            .ok_or("argument `probability` is required")?;
        let probability = value
            .as_f64()
            .ok_or("argument `probability` must be a number")?;
        if !(0.0..=1.0).contains(&probability) {
            return Err(format!(
                "argument `probability` must be between 0 and 1, found {probability}"
            ));
        }
        Ok(probability)
    }
}

impl Task for FlakyTask {
    fn run(&self, context: &TaskContext) -> TaskOutput {
        let probability = Self::probability(&context.args).unwrap_or(0.0);
        let seed = integer_argument(&context.args, "seed")
            .ok()
            .flatten()
            .unwrap_or(0);
        let draw = unit_from_text(&context.idempotency_key, seed);
        if draw < probability {
            let outcome = outcome_argument(&context.args).unwrap_or(Outcome::Failed);
            TaskOutput::with(
                outcome,
                format!("flaky draw {draw:.4} < probability {probability}"),
            )
        } else {
            TaskOutput::ok()
        }
    }

    fn check_args(&self, args: &serde_json::Value) -> Result<(), String> {
        reject_unknown_arguments(args, &["probability", "outcome", "seed"])?;
        Self::probability(args)?;
        outcome_argument(args)?;
        integer_argument(args, "seed")?;
        Ok(())
    }
}

/// SplitMix64: a small, well-mixed hash step for deterministic draws.
pub(crate) fn splitmix64(mut state: u64) -> u64 {
    state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut mixed = state;
    mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    mixed ^ (mixed >> 31)
}

/// A number in `[0, 1)` determined by `text` and `seed`.
pub(crate) fn unit_from_text(text: &str, seed: u64) -> f64 {
    // FNV-1a over the bytes, then SplitMix64 to spread the bits.
    let mut hash = 0xcbf2_9ce4_8422_2325_u64 ^ seed;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01B3);
    }
    (splitmix64(hash) >> 11) as f64 / (1_u64 << 53) as f64
}

/// A running action the runner waits on while it renews its lease.
pub(crate) enum RunningAction {
    /// A built-in task on its own thread; the result arrives on the channel.
    Task {
        receiver: std::sync::mpsc::Receiver<TaskOutput>,
        cancelled: Arc<AtomicBool>,
    },
    /// An external process in its own process group.
    Command {
        child: Child,
        output: std::sync::mpsc::Receiver<String>,
        program: String,
    },
}

/// The result of waiting a little on a running action.
pub(crate) enum Poll {
    /// Still running.
    Pending,
    /// Finished with this output.
    Done(TaskOutput),
}

impl RunningAction {
    /// Starts a built-in task on a new thread.
    pub(crate) fn start_task(task: Arc<dyn Task>, context: TaskContext) -> RunningAction {
        let (sender, receiver) = std::sync::mpsc::channel();
        let cancelled = context.cancelled.clone();
        std::thread::spawn(move || {
            let task_result =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| task.run(&context)));
            let output = task_result.unwrap_or_else(|panic| {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|text| text.to_string()))
                    .unwrap_or_else(|| "unknown panic".to_string());
                TaskOutput::with(Outcome::Failed, format!("task panicked: {message}"))
            });
            // The receiver is gone only when the runner gave up on this attempt.
            let _ = sender.send(output);
        });
        RunningAction::Task {
            receiver,
            cancelled,
        }
    }

    /// Starts an external command with the attempt's identity in its
    /// environment. A failure to start is an outcome, not an error: the
    /// program may appear later (and the retry policy decides).
    pub(crate) fn start_command(
        argv: &[String],
        env: &BTreeMap<String, String>,
        context: &TaskContext,
        database: Option<&str>,
    ) -> Result<RunningAction, TaskOutput> {
        let mut command = Command::new(&argv[0]);
        if let Some(database) = database {
            // Lets a later executor find this command's processes if this
            // executor dies (see `kill_orphans`).
            command.env(DATABASE_VARIABLE, database);
        }
        command
            .args(&argv[1..])
            .envs(env)
            .env(IDEMPOTENCY_KEY_VARIABLE, &context.idempotency_key)
            .env("ATTNFLOW_RUN_ID", context.run_id.to_string())
            .env("ATTNFLOW_STEP", context.step.to_string())
            .env("ATTNFLOW_ATTEMPT", context.attempt.to_string())
            .env("ATTNFLOW_STATE", &context.state)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        configure_child(&mut command);
        let mut child = command.spawn().map_err(|error| {
            TaskOutput::with(
                Outcome::Failed,
                format!("cannot start `{}`: {error}", argv[0]),
            )
        })?;
        let (sender, output) = std::sync::mpsc::channel();
        for mut stream in [
            child
                .stdout
                .take()
                .map(|out| Box::new(out) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|err| Box::new(err) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let sender = sender.clone();
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                let _ = stream.read_to_end(&mut bytes);
                let _ = sender.send(String::from_utf8_lossy(&bytes).into_owned());
            });
        }
        Ok(RunningAction::Command {
            child,
            output,
            program: argv[0].clone(),
        })
    }

    /// Waits up to `wait` for the action to finish.
    pub(crate) fn poll(&mut self, wait: Duration) -> Poll {
        match self {
            RunningAction::Task { receiver, .. } => match receiver.recv_timeout(wait) {
                Ok(output) => Poll::Done(output),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Poll::Pending,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Poll::Done(
                    TaskOutput::with(Outcome::Failed, "task thread ended without a result"),
                ),
            },
            RunningAction::Command {
                child,
                output,
                program,
            } => {
                // Poll often at first so short commands finish fast, then
                // back off to a few milliseconds.
                let started = Instant::now();
                let mut pause = Duration::from_micros(50);
                loop {
                    match child.try_wait() {
                        Ok(Some(status)) => {
                            let text = collect_output(output);
                            return Poll::Done(command_output(program, status, &text));
                        }
                        Ok(None) => {}
                        Err(error) => {
                            return Poll::Done(TaskOutput::with(
                                Outcome::Failed,
                                format!("cannot wait for `{program}`: {error}"),
                            ))
                        }
                    }
                    let elapsed = started.elapsed();
                    if elapsed >= wait {
                        return Poll::Pending;
                    }
                    std::thread::sleep(pause.min(wait - elapsed));
                    pause = (pause * 2).min(Duration::from_millis(5));
                }
            }
        }
    }

    /// Stops the action: kills a command's whole process group, or asks a
    /// task to stop (a thread cannot be killed; a task that ignores
    /// cancellation runs on, but its result is discarded).
    pub(crate) fn cancel(&mut self) {
        match self {
            RunningAction::Task { cancelled, .. } => cancelled.store(true, Ordering::Relaxed),
            RunningAction::Command { child, .. } => {
                kill_process_group(child);
                let _ = child.wait();
            }
        }
    }
}

fn collect_output(output: &std::sync::mpsc::Receiver<String>) -> String {
    let mut text = String::new();
    // Two readers (stdout, stderr); each sends once its pipe closes. Wait a
    // little in case a grandchild still holds a pipe open.
    for _ in 0..2 {
        if let Ok(part) = output.recv_timeout(Duration::from_secs(1)) {
            text.push_str(&part);
        }
    }
    text
}

fn command_output(program: &str, status: std::process::ExitStatus, text: &str) -> TaskOutput {
    let tail = output_tail(text);
    match status.code() {
        Some(0) => TaskOutput::with(Outcome::Ok, tail),
        Some(INVALID_EXIT_CODE) => TaskOutput::with(
            Outcome::Invalid,
            format!("`{program}` reported invalid input (exit {INVALID_EXIT_CODE}) {tail}")
                .trim_end()
                .to_string(),
        ),
        Some(code) => TaskOutput::with(
            Outcome::Failed,
            format!("`{program}` exited with status {code} {tail}")
                .trim_end()
                .to_string(),
        ),
        None => TaskOutput::with(
            Outcome::Failed,
            format!("`{program}` was killed by a signal ({status}) {tail}")
                .trim_end()
                .to_string(),
        ),
    }
}

/// The last 1000 characters of a command's output, for the event log.
fn output_tail(text: &str) -> String {
    let trimmed = text.trim();
    let count = trimmed.chars().count();
    if count <= 1000 {
        trimmed.to_string()
    } else {
        let tail: String = trimmed.chars().skip(count - 1000).collect();
        format!("...{tail}")
    }
}

#[cfg(unix)]
fn configure_child(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // Its own process group, so a timeout kills the command and everything
    // it started.
    command.process_group(0);
    #[cfg(target_os = "linux")]
    {
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: only async-signal-safe calls (prctl, getppid, _exit)
        // between fork and exec.
        unsafe {
            command.pre_exec(move || {
                // If the executor dies (even by SIGKILL), the command dies
                // with it instead of racing the executor that resumes the run.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                if libc::getppid() != parent {
                    libc::_exit(137);
                }
                Ok(())
            });
        }
    }
}

#[cfg(not(unix))]
fn configure_child(_command: &mut Command) {}

#[cfg(unix)]
fn kill_process_group(child: &mut Child) {
    let group = child.id() as libc::pid_t;
    // SAFETY: plain syscall; a negative pid addresses the process group.
    unsafe {
        libc::kill(-group, libc::SIGKILL);
    }
    let _ = child.kill();
}

#[cfg(not(unix))]
fn kill_process_group(child: &mut Child) {
    let _ = child.kill();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(key: &str, args: serde_json::Value) -> TaskContext {
        TaskContext {
            run_id: 1,
            step: 1,
            attempt: 1,
            state: "S".into(),
            idempotency_key: key.into(),
            args,
            cancelled: Arc::new(AtomicBool::new(false)),
        }
    }

    #[test]
    fn flaky_task_fails_at_about_its_probability_and_is_deterministic() {
        let registry = TaskRegistry::with_builtins();
        let task = registry.get("flaky").unwrap();
        let args = serde_json::json!({ "probability": 0.3 });
        let failures = (0..4000)
            .filter(|index| {
                task.run(&context(
                    &format!("run-{index}/step-1/attempt-1"),
                    args.clone(),
                ))
                .outcome
                    == Outcome::Failed
            })
            .count();
        // Binomial(4000, 0.3): standard deviation 29; allow five.
        assert!((failures as f64 - 1200.0).abs() < 145.0, "{failures}");
        let once = task.run(&context("run-7/step-2/attempt-1", args.clone()));
        let again = task.run(&context("run-7/step-2/attempt-1", args));
        assert_eq!(once, again);
    }

    #[test]
    fn task_arguments_are_checked() {
        let registry = TaskRegistry::with_builtins();
        assert!(registry
            .get("flaky")
            .unwrap()
            .check_args(&serde_json::json!({ "probability": 2.0 }))
            .is_err());
        assert!(registry
            .get("sleep")
            .unwrap()
            .check_args(&serde_json::json!({ "milliseconds": 5 }))
            .is_err());
        assert!(registry
            .get("fail")
            .unwrap()
            .check_args(&serde_json::json!({ "outcome": "invalid" }))
            .is_ok());
    }

    #[cfg(unix)]
    #[test]
    fn command_exit_codes_map_to_outcomes_and_see_the_key() {
        let run = |script: &str| {
            let argv = vec!["sh".to_string(), "-c".to_string(), script.to_string()];
            let mut action = RunningAction::start_command(
                &argv,
                &BTreeMap::new(),
                &context("run-3/step-4/attempt-5", serde_json::json!({})),
                None,
            )
            .ok()
            .unwrap();
            loop {
                if let Poll::Done(output) = action.poll(Duration::from_millis(100)) {
                    return output;
                }
            }
        };
        let ok = run("echo \"$ATTNFLOW_IDEMPOTENCY_KEY\"");
        assert_eq!(ok, TaskOutput::with(Outcome::Ok, "run-3/step-4/attempt-5"));
        assert_eq!(run("exit 65").outcome, Outcome::Invalid);
        assert_eq!(run("exit 3").outcome, Outcome::Failed);
        let missing = RunningAction::start_command(
            &["/nonexistent/program".to_string()],
            &BTreeMap::new(),
            &context("k", serde_json::json!({})),
            None,
        );
        assert!(matches!(missing, Err(output) if output.outcome == Outcome::Failed));
    }
}
