//! Workflow specs: the TOML form of the paper's `W = (S, A, T, s0)` (§5.1).
//!
//! A spec names its states, the action each non-terminal state runs, the
//! transition taken on each outcome, the terminal states and the initial
//! state, plus per-state retry policy and timeout. Parsing keeps the byte span
//! of every name so that each rejection points at `file:line:column`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::ops::Range;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::action::TaskRegistry;
pub use crate::outcome::Outcome;

/// The embedded default spec: the paper's figure 2 with a bounded retry loop.
pub const DEFAULT_SPEC_SOURCE: &str = include_str!("default_spec.toml");

/// The queue of a state that names none.
pub const DEFAULT_QUEUE: &str = "default";

/// The origin recorded for runs of the embedded default spec.
pub const DEFAULT_SPEC_ORIGIN: &str = "<default figure-2 spec>";

impl fmt::Display for Outcome {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// How a run that reaches a terminal state ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TerminalKind {
    /// The workflow did its job.
    Success,
    /// The workflow gave up (for example after its last retry).
    Failure,
}

/// What a non-terminal state runs.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// A built-in task looked up by name in a [`TaskRegistry`], with its
    /// arguments from the spec (a JSON object).
    Task {
        /// The registered task name.
        name: String,
        /// The task's arguments.
        args: serde_json::Value,
    },
    /// An external program started without a shell.
    Command {
        /// The program and its arguments.
        argv: Vec<String>,
        /// Extra environment variables.
        env: BTreeMap<String, String>,
    },
}

/// Per-state retry policy: how many attempts and how long to wait between
/// them (exponential backoff with jitter, capped).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RetryPolicy {
    /// Total attempts including the first (at least 1).
    pub attempts: u32,
    /// Delay before the second attempt.
    pub backoff: Duration,
    /// Factor by which the delay grows per attempt (at least 1).
    pub multiplier: f64,
    /// Upper bound on any delay.
    pub cap: Duration,
    /// Relative jitter in `[0, 1]`: the delay is scaled by a factor drawn
    /// from `[1 - jitter, 1 + jitter]` (then capped).
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 1,
            backoff: Duration::from_millis(100),
            multiplier: 2.0,
            cap: Duration::from_secs(60),
            jitter: 0.1,
        }
    }
}

impl RetryPolicy {
    /// The delay before attempt `next_attempt` (2 for the first retry).
    ///
    /// `unit` in `[0, 1)` chooses the jitter; the runner derives it from the
    /// idempotency key so that a resumed run waits as the original would
    /// have, while different runs spread out.
    pub fn delay_before(&self, next_attempt: u32, unit: f64) -> Duration {
        let exponent = next_attempt.saturating_sub(2) as i32;
        let base = self.backoff.as_secs_f64() * self.multiplier.powi(exponent);
        let factor = 1.0 - self.jitter + 2.0 * self.jitter * unit.clamp(0.0, 1.0);
        let seconds = (base * factor).min(self.cap.as_secs_f64()).max(0.0);
        if seconds.is_finite() {
            Duration::from_secs_f64(seconds)
        } else {
            self.cap
        }
    }
}

/// A non-terminal state: its action, transitions and policies.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ActiveState {
    /// What the state runs.
    pub action: Action,
    /// The next state for each outcome declared in the spec.
    pub transitions: BTreeMap<Outcome, String>,
    /// Retry policy for failed or timed-out attempts.
    pub retry: RetryPolicy,
    /// Per-attempt time limit.
    pub timeout: Option<Duration>,
    /// How often a run may enter this state (per restart epoch) before the
    /// `exhausted` transition is taken instead of running the action.
    pub max_visits: Option<u32>,
    /// The queue whose workers run this state (`default` unless the spec
    /// names one, such as `gpu` for training).
    pub queue: String,
}

impl ActiveState {
    /// The next state for `outcome`. `invalid` and `timeout` follow the
    /// `failed` transition unless the spec gives them their own.
    pub fn next_state(&self, outcome: Outcome) -> Option<&str> {
        let explicit = self.transitions.get(&outcome);
        let fallback = match outcome {
            Outcome::Invalid | Outcome::Timeout => self.transitions.get(&Outcome::Failed),
            _ => None,
        };
        explicit.or(fallback).map(String::as_str)
    }
}

/// What kind of state this is.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StateKind {
    /// An absorbing state: the run ends here.
    Terminal(TerminalKind),
    /// A state that runs an action and moves on.
    Active(ActiveState),
}

/// One state of the machine.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct State {
    /// The state's name (letters, digits, `_`; starting with a letter).
    pub name: String,
    /// Free text for people.
    pub description: Option<String>,
    /// Terminal or active.
    pub kind: StateKind,
}

impl State {
    /// The active part, or `None` for a terminal state.
    pub fn active(&self) -> Option<&ActiveState> {
        match &self.kind {
            StateKind::Active(active) => Some(active),
            StateKind::Terminal(_) => None,
        }
    }

    /// The terminal kind, or `None` for an active state.
    pub fn terminal(&self) -> Option<TerminalKind> {
        match &self.kind {
            StateKind::Terminal(kind) => Some(*kind),
            StateKind::Active(_) => None,
        }
    }
}

/// A validated workflow spec.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Spec {
    /// The workflow's name; runs and analyses are grouped by it.
    pub name: String,
    /// Free text for people.
    pub description: Option<String>,
    /// The initial state `s0`.
    pub initial: String,
    /// How long an executor's lease lasts without a heartbeat.
    pub lease: Duration,
    /// How many executor crashes a run survives before it is marked
    /// crashed and needs an explicit restart (the crash-loop cap).
    pub max_crashes: u32,
    /// The states, in breadth-first order from the initial state.
    pub states: Vec<State>,
    #[serde(skip)]
    origin: String,
    #[serde(skip)]
    source: String,
    #[serde(skip)]
    task_spans: HashMap<String, Range<usize>>,
}

/// A rejected spec: the place (file, line, column, byte span) and why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{origin}:{line}:{column}: {message}")]
pub struct SpecError {
    /// The file path (or a name for an embedded spec).
    pub origin: String,
    /// The full spec text, for rendering a snippet.
    pub source_text: String,
    /// The byte range of the fault in `source_text`.
    pub span: Range<usize>,
    /// 1-based line of the fault.
    pub line: usize,
    /// 1-based column (in characters) of the fault.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl SpecError {
    fn new(origin: &str, source: &str, span: Range<usize>, message: impl Into<String>) -> Self {
        let start = span.start.min(source.len());
        let (line, column) = line_column(source, start);
        SpecError {
            origin: origin.to_string(),
            source_text: source.to_string(),
            span: start..span.end.clamp(start, source.len()),
            line,
            column,
            message: message.into(),
        }
    }
}

/// 1-based line and character column of byte `offset` in `source`.
pub fn line_column(source: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(source.len());
    while !source.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |index| index + 1);
    let column = source[line_start..offset].chars().count() + 1;
    (line, column)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    workflow: Spanned<RawWorkflow>,
    states: Spanned<BTreeMap<Spanned<String>, Spanned<RawState>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkflow {
    name: Spanned<String>,
    initial: Spanned<String>,
    description: Option<String>,
    lease_ms: Option<Spanned<i64>>,
    max_crashes: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawState {
    terminal: Option<Spanned<String>>,
    action: Option<Spanned<RawAction>>,
    on: Option<Spanned<BTreeMap<Spanned<String>, Spanned<String>>>>,
    retry: Option<Spanned<RawRetry>>,
    timeout_ms: Option<Spanned<i64>>,
    max_visits: Option<Spanned<i64>>,
    queue: Option<Spanned<String>>,
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAction {
    task: Option<Spanned<String>>,
    args: Option<Spanned<toml::Table>>,
    command: Option<Spanned<Vec<String>>>,
    env: Option<Spanned<BTreeMap<String, String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    attempts: Option<Spanned<i64>>,
    backoff_ms: Option<Spanned<i64>>,
    multiplier: Option<Spanned<toml::Value>>,
    cap_ms: Option<Spanned<i64>>,
    jitter: Option<Spanned<toml::Value>>,
}

/// Builds errors that all name the same file.
struct Place<'a> {
    origin: &'a str,
    source: &'a str,
}

impl Place<'_> {
    fn error(&self, span: Range<usize>, message: impl Into<String>) -> SpecError {
        SpecError::new(self.origin, self.source, span, message)
    }

    fn integer(
        &self,
        value: &Spanned<i64>,
        field: &str,
        minimum: i64,
        maximum: i64,
    ) -> Result<i64, SpecError> {
        let number = *value.get_ref();
        if number < minimum || number > maximum {
            return Err(self.error(
                value.span(),
                format!("`{field}` must be between {minimum} and {maximum}, found {number}"),
            ));
        }
        Ok(number)
    }

    fn float(
        &self,
        value: &Spanned<toml::Value>,
        field: &str,
        minimum: f64,
        maximum: f64,
    ) -> Result<f64, SpecError> {
        let number = match value.get_ref() {
            toml::Value::Float(number) => *number,
            toml::Value::Integer(number) => *number as f64,
            other => {
                return Err(self.error(
                    value.span(),
                    format!("`{field}` must be a number, found {}", other.type_str()),
                ))
            }
        };
        if !(minimum..=maximum).contains(&number) {
            return Err(self.error(
                value.span(),
                format!("`{field}` must be between {minimum} and {maximum}, found {number}"),
            ));
        }
        Ok(number)
    }
}

fn is_state_name(name: &str) -> bool {
    let mut characters = name.chars();
    characters
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic())
        && characters.all(|character| character.is_ascii_alphanumeric() || character == '_')
}

impl Spec {
    /// The embedded default spec (figure 2).
    pub fn default_spec() -> Spec {
        Spec::parse(DEFAULT_SPEC_ORIGIN, DEFAULT_SPEC_SOURCE)
            .expect("the embedded default spec is valid (checked by a unit test)")
    }

    /// Reads and parses a spec file.
    pub fn from_file(path: &std::path::Path) -> Result<Spec, SpecError> {
        let origin = path.display().to_string();
        let source = std::fs::read_to_string(path).map_err(|error| SpecError {
            origin: origin.clone(),
            source_text: String::new(),
            span: 0..0,
            line: 1,
            column: 1,
            message: format!("cannot read the spec file: {error}"),
        })?;
        Spec::parse(&origin, &source)
    }

    /// Parses and validates spec text; `origin` names it in errors.
    pub fn parse(origin: &str, source: &str) -> Result<Spec, SpecError> {
        let place = Place { origin, source };
        let raw: RawSpec = toml::from_str(source).map_err(|error| {
            place.error(
                error.span().unwrap_or(0..0),
                error.message().trim().to_string(),
            )
        })?;
        let workflow = raw.workflow.get_ref();
        let name = workflow.name.get_ref().trim().to_string();
        if name.is_empty() {
            return Err(place.error(workflow.name.span(), "the workflow name is empty"));
        }
        let lease_ms = match &workflow.lease_ms {
            Some(value) => place.integer(value, "lease_ms", 100, 86_400_000)? as u64,
            None => 30_000,
        };
        let max_crashes = match &workflow.max_crashes {
            Some(value) => place.integer(value, "max_crashes", 1, 1_000_000)? as u32,
            None => 5,
        };

        let raw_states = raw.states.get_ref();
        if raw_states.is_empty() {
            return Err(place.error(raw.states.span(), "the workflow declares no states"));
        }
        let mut key_spans: HashMap<String, Range<usize>> = HashMap::new();
        for key in raw_states.keys() {
            if !is_state_name(key.get_ref()) {
                return Err(place.error(
                    key.span(),
                    format!(
                        "state name `{}` must start with a letter and hold only letters, digits and `_`",
                        key.get_ref()
                    ),
                ));
            }
            key_spans.insert(key.get_ref().clone(), key.span());
        }

        let mut states: BTreeMap<String, State> = BTreeMap::new();
        let mut task_spans = HashMap::new();
        for (key, raw_state) in raw_states {
            let state_name = key.get_ref().clone();
            let state = parse_state(&place, key, raw_state, &key_spans, &mut task_spans)?;
            states.insert(state_name, state);
        }

        let initial = workflow.initial.get_ref().clone();
        match states.get(&initial) {
            None => {
                return Err(place.error(
                    workflow.initial.span(),
                    format!("initial state `{initial}` is not declared under [states]"),
                ))
            }
            Some(state) if state.terminal().is_some() => {
                return Err(place.error(
                    workflow.initial.span(),
                    format!(
                        "initial state `{initial}` is terminal, so the workflow would do nothing"
                    ),
                ))
            }
            Some(_) => {}
        }
        if !states.values().any(|state| state.terminal().is_some()) {
            return Err(place.error(
                raw.states.span(),
                "the workflow declares no terminal state (`terminal = \"success\"` or `\"failure\"`)",
            ));
        }

        let order = breadth_first_order(&initial, &states);
        // §5.1: every state must be reachable from s0 ...
        for name in states.keys() {
            if !order.contains(name) {
                return Err(place.error(
                    key_spans[name].clone(),
                    format!("state `{name}` is unreachable from the initial state `{initial}`"),
                ));
            }
        }
        // ... and must be able to reach a terminal state, or a run could
        // circle forever with no way to end.
        let can_finish = states_reaching_terminal(&states);
        for name in &order {
            if !can_finish.contains(name) {
                return Err(place.error(
                    key_spans[name].clone(),
                    format!("no terminal state can be reached from state `{name}`"),
                ));
            }
        }

        let ordered = order
            .iter()
            .map(|name| {
                states
                    .remove(name)
                    .expect("ordered names come from the map")
            })
            .collect();
        Ok(Spec {
            name,
            description: workflow.description.clone(),
            initial,
            lease: Duration::from_millis(lease_ms),
            max_crashes,
            states: ordered,
            origin: origin.to_string(),
            source: source.to_string(),
            task_spans,
        })
    }

    /// The spec text as written (stored with each run so that a resumed run
    /// follows exactly the spec it started with).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Where the spec came from (a path or the default's name).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The state called `name`.
    pub fn state(&self, name: &str) -> Option<&State> {
        self.states.iter().find(|state| state.name == name)
    }

    /// The queue of state `name` ([`DEFAULT_QUEUE`] for terminal and
    /// unknown states).
    pub fn queue_of(&self, name: &str) -> &str {
        self.state(name)
            .and_then(State::active)
            .map_or(DEFAULT_QUEUE, |active| active.queue.as_str())
    }

    /// Checks that every `task = "..."` names a task in `registry` and that
    /// the task accepts its arguments.
    pub fn check_tasks(&self, registry: &TaskRegistry) -> Result<(), SpecError> {
        let place = Place {
            origin: &self.origin,
            source: &self.source,
        };
        for state in &self.states {
            let Some(active) = state.active() else {
                continue;
            };
            let Action::Task { name, args } = &active.action else {
                continue;
            };
            let span = self.task_spans.get(&state.name).cloned().unwrap_or(0..0);
            let Some(task) = registry.get(name) else {
                let known = registry.names().join(", ");
                return Err(place.error(
                    span,
                    format!(
                        "unknown task `{name}` in state `{}` (known tasks: {known})",
                        state.name
                    ),
                ));
            };
            task.check_args(args).map_err(|message| {
                place.error(
                    span,
                    format!("task `{name}` in state `{}`: {message}", state.name),
                )
            })?;
        }
        Ok(())
    }
}

fn parse_state(
    place: &Place<'_>,
    key: &Spanned<String>,
    raw_state: &Spanned<RawState>,
    key_spans: &HashMap<String, Range<usize>>,
    task_spans: &mut HashMap<String, Range<usize>>,
) -> Result<State, SpecError> {
    let name = key.get_ref().clone();
    let raw = raw_state.get_ref();
    if let Some(terminal) = &raw.terminal {
        let kind = match terminal.get_ref().as_str() {
            "success" => TerminalKind::Success,
            "failure" => TerminalKind::Failure,
            other => {
                return Err(place.error(
                    terminal.span(),
                    format!("`terminal` must be \"success\" or \"failure\", found \"{other}\""),
                ))
            }
        };
        let extra = [
            raw.action.as_ref().map(|value| ("action", value.span())),
            raw.on.as_ref().map(|value| ("on", value.span())),
            raw.retry.as_ref().map(|value| ("retry", value.span())),
            raw.timeout_ms
                .as_ref()
                .map(|value| ("timeout_ms", value.span())),
            raw.max_visits
                .as_ref()
                .map(|value| ("max_visits", value.span())),
            raw.queue.as_ref().map(|value| ("queue", value.span())),
        ];
        if let Some((field, span)) = extra.into_iter().flatten().next() {
            return Err(place.error(
                span,
                format!("terminal state `{name}` cannot have `{field}`: a run ends there"),
            ));
        }
        return Ok(State {
            name,
            description: raw.description.clone(),
            kind: StateKind::Terminal(kind),
        });
    }

    let Some(raw_action) = &raw.action else {
        return Err(place.error(
            key.span(),
            format!("state `{name}` needs an `action` (or `terminal = \"success\"|\"failure\"`)"),
        ));
    };
    let action = parse_action(place, &name, raw_action, task_spans)?;

    let Some(raw_on) = &raw.on else {
        return Err(place.error(
            key.span(),
            format!("state `{name}` has no transitions: add `on = {{ ok = \"...\", failed = \"...\" }}`"),
        ));
    };
    let mut transitions = BTreeMap::new();
    for (outcome_key, target) in raw_on.get_ref() {
        let Some(outcome) = Outcome::parse(outcome_key.get_ref()) else {
            return Err(place.error(
                outcome_key.span(),
                format!(
                    "unknown outcome `{}` (expected ok, failed, invalid, timeout or exhausted)",
                    outcome_key.get_ref()
                ),
            ));
        };
        if !key_spans.contains_key(target.get_ref()) {
            return Err(place.error(
                target.span(),
                format!(
                    "transition `{outcome}` of state `{name}` goes to `{}`, which is not declared",
                    target.get_ref()
                ),
            ));
        }
        transitions.insert(outcome, target.get_ref().clone());
    }
    for required in [Outcome::Ok, Outcome::Failed] {
        if !transitions.contains_key(&required) {
            return Err(place.error(
                raw_on.span(),
                format!("state `{name}` has no `{required}` transition"),
            ));
        }
    }

    let max_visits = match &raw.max_visits {
        Some(value) => Some(place.integer(value, "max_visits", 1, 1_000_000)? as u32),
        None => None,
    };
    let exhausted_declared = transitions.contains_key(&Outcome::Exhausted);
    if max_visits.is_some() && !exhausted_declared {
        return Err(place.error(
            raw_on.span(),
            format!("state `{name}` sets `max_visits` but has no `exhausted` transition"),
        ));
    }
    if max_visits.is_none() && exhausted_declared {
        return Err(place.error(
            raw_on.span(),
            format!("state `{name}` has an `exhausted` transition but no `max_visits`"),
        ));
    }

    let timeout = match &raw.timeout_ms {
        Some(value) => Some(Duration::from_millis(
            place.integer(value, "timeout_ms", 1, i64::MAX)? as u64,
        )),
        None => None,
    };
    let retry = match &raw.retry {
        Some(raw_retry) => parse_retry(place, raw_retry.get_ref())?,
        None => RetryPolicy::default(),
    };
    let queue = match &raw.queue {
        Some(queue) if is_queue_name(queue.get_ref()) => queue.get_ref().clone(),
        Some(queue) => {
            return Err(place.error(
                queue.span(),
                format!(
                    "queue name `{}` must be 1 to 64 letters, digits, `_`, `-` or `.`",
                    queue.get_ref()
                ),
            ))
        }
        None => DEFAULT_QUEUE.to_string(),
    };
    Ok(State {
        name,
        description: raw.description.clone(),
        kind: StateKind::Active(ActiveState {
            action,
            transitions,
            retry,
            timeout,
            max_visits,
            queue,
        }),
    })
}

/// Whether `name` can name a queue (it travels in `--queue` flags and
/// notifications, so it stays plain).
pub fn is_queue_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|character| character.is_ascii_alphanumeric() || "_-.".contains(character))
}

fn parse_action(
    place: &Place<'_>,
    state: &str,
    raw_action: &Spanned<RawAction>,
    task_spans: &mut HashMap<String, Range<usize>>,
) -> Result<Action, SpecError> {
    let raw = raw_action.get_ref();
    match (&raw.task, &raw.command) {
        (Some(task), None) => {
            if let Some(env) = &raw.env {
                return Err(place.error(
                    env.span(),
                    "`env` applies to `command` actions, not tasks",
                ));
            }
            let args = match &raw.args {
                Some(args) => toml_to_json(&toml::Value::Table(args.get_ref().clone())),
                None => serde_json::Value::Object(serde_json::Map::new()),
            };
            task_spans.insert(state.to_string(), task.span());
            Ok(Action::Task {
                name: task.get_ref().clone(),
                args,
            })
        }
        (None, Some(command)) => {
            if let Some(args) = &raw.args {
                return Err(place.error(
                    args.span(),
                    "`args` applies to `task` actions; put a command's arguments in the `command` array",
                ));
            }
            if command.get_ref().is_empty() || command.get_ref()[0].is_empty() {
                return Err(place.error(command.span(), "`command` needs at least a program"));
            }
            Ok(Action::Command {
                argv: command.get_ref().clone(),
                env: raw.env.as_ref().map(|env| env.get_ref().clone()).unwrap_or_default(),
            })
        }
        (Some(task), Some(_)) => Err(place.error(
            task.span(),
            format!("the action of state `{state}` has both `task` and `command`; choose one"),
        )),
        (None, None) => Err(place.error(
            raw_action.span(),
            format!("the action of state `{state}` needs `task = \"name\"` or `command = [\"program\", ...]`"),
        )),
    }
}

fn parse_retry(place: &Place<'_>, raw: &RawRetry) -> Result<RetryPolicy, SpecError> {
    let defaults = RetryPolicy::default();
    let attempts = match &raw.attempts {
        Some(value) => place.integer(value, "attempts", 1, 1_000)? as u32,
        None => defaults.attempts,
    };
    let backoff_ms = match &raw.backoff_ms {
        Some(value) => place.integer(value, "backoff_ms", 0, 86_400_000)? as u64,
        None => defaults.backoff.as_millis() as u64,
    };
    let multiplier = match &raw.multiplier {
        Some(value) => place.float(value, "multiplier", 1.0, 1_000.0)?,
        None => defaults.multiplier,
    };
    let cap_ms = match &raw.cap_ms {
        Some(value) => {
            let cap = place.integer(value, "cap_ms", 0, 86_400_000)? as u64;
            if cap < backoff_ms {
                return Err(place.error(
                    value.span(),
                    format!("`cap_ms` ({cap}) is below `backoff_ms` ({backoff_ms})"),
                ));
            }
            cap
        }
        None => (defaults.cap.as_millis() as u64).max(backoff_ms),
    };
    let jitter = match &raw.jitter {
        Some(value) => place.float(value, "jitter", 0.0, 1.0)?,
        None => defaults.jitter,
    };
    Ok(RetryPolicy {
        attempts,
        backoff: Duration::from_millis(backoff_ms),
        multiplier,
        cap: Duration::from_millis(cap_ms),
        jitter,
    })
}

/// Converts task arguments to JSON, the neutral form tasks receive.
fn toml_to_json(value: &toml::Value) -> serde_json::Value {
    match value {
        toml::Value::String(text) => serde_json::Value::String(text.clone()),
        toml::Value::Integer(number) => serde_json::Value::from(*number),
        toml::Value::Float(number) => serde_json::Number::from_f64(*number)
            .map(serde_json::Value::Number)
            .unwrap_or_else(|| serde_json::Value::String(number.to_string())),
        toml::Value::Boolean(flag) => serde_json::Value::Bool(*flag),
        toml::Value::Datetime(datetime) => serde_json::Value::String(datetime.to_string()),
        toml::Value::Array(items) => {
            serde_json::Value::Array(items.iter().map(toml_to_json).collect())
        }
        toml::Value::Table(table) => serde_json::Value::Object(
            table
                .iter()
                .map(|(key, value)| (key.clone(), toml_to_json(value)))
                .collect(),
        ),
    }
}

fn successors(state: &State) -> Vec<&str> {
    match &state.kind {
        StateKind::Terminal(_) => Vec::new(),
        StateKind::Active(active) => Outcome::ALL
            .iter()
            .filter_map(|outcome| active.transitions.get(outcome).map(String::as_str))
            .collect(),
    }
}

fn breadth_first_order(initial: &str, states: &BTreeMap<String, State>) -> Vec<String> {
    let mut order = vec![initial.to_string()];
    let mut queue = VecDeque::from([initial.to_string()]);
    while let Some(name) = queue.pop_front() {
        for next in successors(&states[&name]) {
            if !order.iter().any(|seen| seen == next) {
                order.push(next.to_string());
                queue.push_back(next.to_string());
            }
        }
    }
    order
}

fn states_reaching_terminal(states: &BTreeMap<String, State>) -> Vec<String> {
    let mut reached: Vec<String> = states
        .values()
        .filter(|state| state.terminal().is_some())
        .map(|state| state.name.clone())
        .collect();
    loop {
        let before = reached.len();
        for state in states.values() {
            if !reached.contains(&state.name)
                && successors(state)
                    .into_iter()
                    .any(|next| reached.iter().any(|seen| seen == next))
            {
                reached.push(state.name.clone());
            }
        }
        if reached.len() == before {
            return reached;
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn queues_are_named_per_state_and_checked_with_their_place() {
        let spec = Spec::parse(
            "q.toml",
            "[workflow]\nname = \"q\"\ninitial = \"Train\"\n\
             [states.Train]\naction = { task = \"noop\" }\nqueue = \"gpu\"\non = { ok = \"Done\", failed = \"Done\" }\n\
             [states.Done]\nterminal = \"success\"\n",
        )
        .unwrap();
        assert_eq!(spec.queue_of("Train"), "gpu");
        assert_eq!(spec.queue_of("Done"), DEFAULT_QUEUE);
        let bad = Spec::parse(
            "q.toml",
            "[workflow]\nname = \"q\"\ninitial = \"A\"\n\
             [states.A]\naction = { task = \"noop\" }\nqueue = \"g p u\"\non = { ok = \"Done\", failed = \"Done\" }\n\
             [states.Done]\nterminal = \"success\"\n",
        )
        .unwrap_err();
        assert_eq!((bad.line, bad.column), (6, 9), "{bad}");
        assert!(bad.message.contains("queue name"), "{bad}");
        let terminal = Spec::parse(
            "q.toml",
            "[workflow]\nname = \"q\"\ninitial = \"A\"\n\
             [states.A]\naction = { task = \"noop\" }\non = { ok = \"Done\", failed = \"Done\" }\n\
             [states.Done]\nterminal = \"success\"\nqueue = \"gpu\"\n",
        )
        .unwrap_err();
        assert!(
            terminal.message.contains("cannot have `queue`"),
            "{terminal}"
        );
    }

    use super::*;

    fn reject(source: &str) -> SpecError {
        Spec::parse("test.toml", source).expect_err("the spec should be rejected")
    }

    const HEADER: &str = "[workflow]\nname = \"t\"\ninitial = \"A\"\n";

    #[test]
    fn default_spec_is_figure_two() {
        let spec = Spec::default_spec();
        let names: Vec<&str> = spec
            .states
            .iter()
            .map(|state| state.name.as_str())
            .collect();
        assert_eq!(
            names,
            [
                "Initialized",
                "Processing",
                "Failed",
                "Validation",
                "Retry",
                "Completed",
                "Abandoned"
            ]
        );
        let retry = spec.state("Retry").unwrap().active().unwrap();
        assert_eq!(retry.max_visits, Some(3));
        assert_eq!(retry.next_state(Outcome::Exhausted), Some("Abandoned"));
        let validation = spec.state("Validation").unwrap().active().unwrap();
        assert_eq!(validation.next_state(Outcome::Invalid), Some("Failed"));
        assert_eq!(
            spec.state("Abandoned").unwrap().terminal(),
            Some(TerminalKind::Failure)
        );
        spec.check_tasks(&TaskRegistry::with_builtins()).unwrap();
    }

    #[test]
    fn unreachable_state_is_rejected_with_its_line() {
        let source = format!(
            "{HEADER}[states.A]\naction = {{ task = \"noop\" }}\non = {{ ok = \"Done\", failed = \"Done\" }}\n\
             [states.Orphan]\naction = {{ task = \"noop\" }}\non = {{ ok = \"Done\", failed = \"Done\" }}\n\
             [states.Done]\nterminal = \"success\"\n"
        );
        let error = reject(&source);
        assert_eq!(error.line, 7, "{error}");
        assert!(error.message.contains("unreachable"), "{error}");
        assert!(error.to_string().starts_with("test.toml:7:9:"), "{error}");
    }

    #[test]
    fn missing_transition_is_rejected_with_its_line() {
        let source = format!(
            "{HEADER}[states.A]\naction = {{ task = \"noop\" }}\non = {{ ok = \"Done\" }}\n[states.Done]\nterminal = \"success\"\n"
        );
        let error = reject(&source);
        assert_eq!((error.line, error.column), (6, 6), "{error}");
        assert!(error.message.contains("no `failed` transition"), "{error}");
    }

    #[test]
    fn state_that_cannot_finish_is_rejected() {
        let source = format!(
            "{HEADER}[states.A]\naction = {{ task = \"noop\" }}\non = {{ ok = \"Done\", failed = \"Loop\" }}\n\
             [states.Loop]\naction = {{ task = \"noop\" }}\non = {{ ok = \"Loop\", failed = \"Loop\" }}\n\
             [states.Done]\nterminal = \"success\"\n"
        );
        let error = reject(&source);
        assert_eq!(error.line, 7, "{error}");
        assert!(
            error
                .message
                .contains("no terminal state can be reached from state `Loop`"),
            "{error}"
        );
    }

    #[test]
    fn unknown_target_and_bad_values_name_their_place() {
        let source = format!(
            "{HEADER}[states.A]\naction = {{ task = \"noop\" }}\non = {{ ok = \"Nowhere\", failed = \"Done\" }}\n[states.Done]\nterminal = \"success\"\n"
        );
        let error = reject(&source);
        assert_eq!((error.line, error.column), (6, 13), "{error}");

        let source = format!(
            "{HEADER}[states.A]\naction = {{ task = \"noop\" }}\nretry = {{ jitter = 1.5 }}\non = {{ ok = \"Done\", failed = \"Done\" }}\n[states.Done]\nterminal = \"success\"\n"
        );
        let error = reject(&source);
        assert_eq!(error.line, 6, "{error}");
        assert!(error.message.contains("jitter"), "{error}");

        let error = reject("[workflow]\nname = \"t\"\ninitial = \"A\"\nbogus = 1\n[states.A]\nterminal = \"success\"\n");
        assert_eq!(error.line, 4, "{error}");

        let error = reject("[workflow\n");
        assert_eq!(error.line, 1, "{error}");
    }

    #[test]
    fn unknown_task_is_rejected_at_check_time() {
        let source = format!(
            "{HEADER}[states.A]\naction = {{ task = \"nope\" }}\non = {{ ok = \"Done\", failed = \"Done\" }}\n[states.Done]\nterminal = \"success\"\n"
        );
        let spec = Spec::parse("test.toml", &source).unwrap();
        let error = spec
            .check_tasks(&TaskRegistry::with_builtins())
            .unwrap_err();
        assert_eq!((error.line, error.column), (5, 19), "{error}");
        assert!(error.message.contains("unknown task `nope`"), "{error}");
    }

    proptest::proptest! {
        /// Any text, and the default spec with any one line removed or any
        /// byte range cut out, is accepted or rejected with a place inside
        /// the text; never a panic.
        #[test]
        fn malformed_specs_never_panic(
            text in "\\PC{0,200}",
            line in 0_usize..60,
            start in 0_usize..2000,
            length in 0_usize..40,
        ) {
            if let Err(error) = Spec::parse("fuzz.toml", &text) {
                proptest::prop_assert!(error.span.end <= text.len());
            }
            let lines: Vec<&str> = DEFAULT_SPEC_SOURCE.lines().collect();
            let without_line: String = lines
                .iter()
                .enumerate()
                .filter(|(index, _)| *index != line % lines.len())
                .map(|(_, text)| format!("{text}\n"))
                .collect();
            if let Err(error) = Spec::parse("fuzz.toml", &without_line) {
                proptest::prop_assert!(error.line >= 1 && error.line <= lines.len() + 1);
            }
            let bytes = DEFAULT_SPEC_SOURCE.as_bytes();
            let start = start % bytes.len();
            let end = (start + length).min(bytes.len());
            let cut = [&bytes[..start], &bytes[end..]].concat();
            let cut = String::from_utf8_lossy(&cut).into_owned();
            if let Err(error) = Spec::parse("fuzz.toml", &cut) {
                proptest::prop_assert!(error.span.start <= cut.len());
            }
        }
    }

    #[test]
    fn backoff_grows_exponentially_and_is_capped() {
        let policy = RetryPolicy {
            attempts: 6,
            backoff: Duration::from_millis(100),
            multiplier: 2.0,
            cap: Duration::from_millis(500),
            jitter: 0.0,
        };
        let delays: Vec<u128> = (2..=6)
            .map(|attempt| policy.delay_before(attempt, 0.5).as_millis())
            .collect();
        assert_eq!(delays, [100, 200, 400, 500, 500]);
        let jittered = RetryPolicy {
            jitter: 0.5,
            ..policy
        };
        assert_eq!(jittered.delay_before(2, 0.0).as_millis(), 50);
        assert_eq!(jittered.delay_before(2, 1.0).as_millis(), 150);
        assert_eq!(jittered.delay_before(4, 1.0).as_millis(), 500);
    }
}
