//! Turning specs and run histories into things people read: the Markov
//! analysis of a store (§5.2, §5.3) as a table, JSON and a Mermaid state
//! diagram, and a spec's own state diagram (figure 2).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::markov::{Absorption, ChainError, TransitionCounts, ABSORPTION_CONDITION};
use crate::spec::{Action, Outcome, Spec, StateKind, TerminalKind};
use crate::store::{EventRecord, RunRecord, StepRecord, Store, StoreError};
use crate::uncertainty::{binomial_band, posterior, PosteriorOptions, Uncertainty, FEW_EXITS};
use crate::visits::VisitChain;

/// Why an analysis could not be made.
#[derive(Debug, thiserror::Error)]
pub enum AnalysisError {
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The estimated chain could not be analysed.
    #[error("workflow `{workflow}`: {source}")]
    Chain {
        /// The workflow.
        workflow: String,
        /// The failure.
        #[source]
        source: ChainError,
    },
    /// Nothing to analyse.
    #[error("{0}")]
    Empty(String),
}

/// The Markov analysis of one workflow's recorded runs.
#[derive(Debug, Clone, Serialize)]
pub struct WorkflowAnalysis {
    /// The workflow's name.
    pub workflow: String,
    /// Runs with at least one recorded transition.
    pub runs: usize,
    /// Transitions counted.
    pub transitions: u64,
    /// `exact` (states carry the visit counts of capped states) or `plain`
    /// (bare state names).
    pub view: &'static str,
    /// What expanded state labels mean (exact view of a spec with caps).
    pub legend: Option<String>,
    /// The initial state (from the latest run's spec).
    pub initial: Option<String>,
    /// States in order (rows and columns of `counts` and `probabilities`).
    pub states: Vec<String>,
    /// `n_ij`: recorded transitions from `i` to `j`.
    pub counts: Vec<Vec<u64>>,
    /// §5.2: estimated `T_ij`.
    pub probabilities: Vec<Vec<f64>>,
    /// Non-terminal states without recorded exits (runs still in them, or
    /// crashed there), treated as absorbing in this estimate.
    pub unobserved_exits: Vec<String>,
    /// §5.3: the absorption analysis of the estimate.
    pub absorption: Absorption,
    /// The condition used to decide whether absorption is certain.
    pub condition: &'static str,
    /// Intervals for `T`, `B` and `t`, and runs needed to narrow them.
    pub uncertainty: Uncertainty,
    /// Warnings for the reader (rows with few observed exits).
    pub warnings: Vec<String>,
    /// Exact view of a capped spec: the exact and the plain chain's
    /// predictions against what the recorded runs did.
    pub comparison: Option<Comparison>,
}

/// How well the exact and the plain chain predict where runs ended.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// Why the plain chain differs.
    pub explanation: String,
    /// Central probability of the binomial bands.
    pub level: f64,
    /// One row per expanded state visited and terminal state.
    pub predictions: Vec<Prediction>,
}

impl Comparison {
    /// Predictions outside their band: of the plain chain, or the exact.
    pub fn outside(&self, plain: bool) -> usize {
        self.predictions
            .iter()
            .filter(|prediction| {
                !if plain {
                    prediction.plain_within
                } else {
                    prediction.exact_within
                }
            })
            .count()
    }
}

/// After visits to one expanded state, how often runs ended in one
/// terminal state, and what each chain predicts.
#[derive(Debug, Clone, Serialize)]
pub struct Prediction {
    /// The expanded state.
    pub state: String,
    /// Its plain state.
    pub plain: String,
    /// The terminal state.
    pub target: String,
    /// Visits followed by a terminal state.
    pub visits: u64,
    /// Of those, how many ended in `target`.
    pub ended: u64,
    /// `ended / visits`.
    pub observed: f64,
    /// `B` of the exact chain.
    pub exact: f64,
    /// The binomial band of `ended` if `exact` were the truth.
    pub exact_band: [u64; 2],
    /// Whether `ended` lies in it.
    pub exact_within: bool,
    /// `B` of the plain chain at the plain state.
    pub plain_chain: f64,
    /// The binomial band of `ended` if `plain_chain` were the truth.
    pub plain_band: [u64; 2],
    /// Whether `ended` lies in it.
    pub plain_within: bool,
}

/// Settings of [`analyze_with`].
#[derive(Debug, Clone, Default)]
pub struct AnalysisOptions {
    /// Analyse the plain chain over bare state names even when the spec
    /// caps visits.
    pub collapse: bool,
    /// How intervals are made.
    pub posterior: PosteriorOptions,
}

/// Analyses the recorded transitions of every workflow in `store` (or of
/// `workflow` only), one analysis per workflow name, with default options.
pub fn analyze(
    store: &Store,
    workflow: Option<&str>,
) -> Result<Vec<WorkflowAnalysis>, AnalysisError> {
    analyze_with(store, workflow, &AnalysisOptions::default())
}

/// Analyses the recorded transitions of every workflow in `store` (or of
/// `workflow` only). A spec that caps visits is analysed on its exact
/// `(state, visits)` chain unless `options.collapse`.
pub fn analyze_with(
    store: &Store,
    workflow: Option<&str>,
    options: &AnalysisOptions,
) -> Result<Vec<WorkflowAnalysis>, AnalysisError> {
    let transitions = store.transitions(workflow)?;
    if transitions.is_empty() {
        return Err(AnalysisError::Empty(match workflow {
            Some(name) => format!(
                "{}: no recorded transitions for workflow `{name}`",
                store.path()
            ),
            None => format!(
                "{}: no recorded transitions yet; run a workflow first",
                store.path()
            ),
        }));
    }
    let runs = store.runs()?;
    let mut by_workflow: BTreeMap<&str, Vec<_>> = BTreeMap::new();
    for transition in &transitions {
        by_workflow
            .entry(transition.workflow.as_str())
            .or_default()
            .push(transition);
    }
    let mut analyses = Vec::new();
    for (name, records) in by_workflow {
        // The newest run's spec orders the states and names the terminal ones.
        let spec = runs
            .iter()
            .rev()
            .filter(|run| run.workflow == name)
            .find_map(|run| Spec::parse(&run.spec_origin, &run.spec_source).ok());
        let run_ids: std::collections::BTreeSet<i64> =
            records.iter().map(|record| record.run_id).collect();
        let plain = plain_counts(spec.as_ref(), &records);
        let exact = match (&spec, options.collapse) {
            (Some(spec), false) => VisitChain::of(spec),
            _ => None,
        };
        let analysis = match exact {
            None => build(name, &spec, plain, run_ids.len(), options, None)?,
            Some(chain) => {
                let mut paths = Vec::with_capacity(run_ids.len());
                for &run in &run_ids {
                    paths.push(chain.replay(&store.steps(run)?));
                }
                let mut counts = TransitionCounts::new(&chain.states, &chain.terminal);
                for (from, targets) in &chain.allowed {
                    for to in targets {
                        counts.allow(from, to);
                    }
                }
                for (from, to) in paths.iter().flatten() {
                    counts.record(from, to);
                }
                let plain_absorption =
                    plain
                        .estimate()
                        .absorption()
                        .map_err(|source| AnalysisError::Chain {
                            workflow: name.to_string(),
                            source,
                        })?;
                let mut analysis =
                    build(name, &spec, counts, run_ids.len(), options, Some(&chain))?;
                analysis.comparison = Some(compare(
                    &chain,
                    &paths,
                    &analysis.absorption,
                    &plain_absorption,
                ));
                analysis
            }
        };
        analyses.push(analysis);
    }
    Ok(analyses)
}

/// Counts over bare state names, with the spec's transitions allowed.
fn plain_counts(
    spec: Option<&Spec>,
    records: &[&crate::store::TransitionRecord],
) -> TransitionCounts {
    let (order, terminal) = match spec {
        Some(spec) => (
            spec.states.iter().map(|state| state.name.clone()).collect(),
            spec.states
                .iter()
                .filter(|state| state.terminal().is_some())
                .map(|state| state.name.clone())
                .collect(),
        ),
        None => (Vec::new(), Vec::new()),
    };
    let mut counts = TransitionCounts::new(&order, &terminal);
    if let Some(spec) = spec {
        for state in &spec.states {
            if let Some(active) = state.active() {
                for outcome in Outcome::ALL {
                    if let Some(next) = active.next_state(outcome) {
                        counts.allow(&state.name, next);
                    }
                }
            }
        }
    }
    for record in records {
        counts.record(&record.from, &record.to);
    }
    counts
}

fn build(
    name: &str,
    spec: &Option<Spec>,
    counts: TransitionCounts,
    runs: usize,
    options: &AnalysisOptions,
    exact: Option<&VisitChain>,
) -> Result<WorkflowAnalysis, AnalysisError> {
    let chain = counts.estimate();
    let absorption = chain.absorption().map_err(|source| AnalysisError::Chain {
        workflow: name.to_string(),
        source,
    })?;
    let uncertainty = posterior(&counts, runs, &options.posterior);
    let warnings = if uncertainty.few_exits.is_empty() {
        Vec::new()
    } else {
        let rows: Vec<String> = uncertainty
            .few_exits
            .iter()
            .map(|state| format!("{state} ({})", uncertainty.exits[state]))
            .collect();
        vec![format!(
            "fewer than {FEW_EXITS} observed exits from {}: these rows of T, and what follows from them, are rough (see their intervals)",
            rows.join(", ")
        )]
    };
    let size = chain.states.len();
    Ok(WorkflowAnalysis {
        workflow: name.to_string(),
        runs,
        transitions: counts.total(),
        view: if exact.is_some() { "exact" } else { "plain" },
        legend: exact.map(VisitChain::legend),
        initial: match exact {
            Some(chain) => Some(chain.initial.clone()),
            None => spec.as_ref().map(|spec| spec.initial.clone()),
        },
        states: chain.states.clone(),
        counts: counts.matrix(),
        probabilities: (0..size)
            .map(|row| {
                (0..size)
                    .map(|column| chain.probabilities[(row, column)])
                    .collect()
            })
            .collect(),
        unobserved_exits: chain.unobserved_exits.clone(),
        absorption,
        condition: ABSORPTION_CONDITION,
        uncertainty,
        warnings,
        comparison: None,
    })
}

/// Where runs ended after each expanded state, against both chains.
fn compare(
    chain: &VisitChain,
    paths: &[Vec<(String, String)>],
    exact: &Absorption,
    plain: &Absorption,
) -> Comparison {
    const LEVEL: f64 = 0.99;
    let mut tallies: BTreeMap<&str, (u64, BTreeMap<&str, u64>)> = BTreeMap::new();
    for path in paths {
        let mut ending: Option<&str> = None;
        for (from, to) in path.iter().rev() {
            if chain.terminal.contains(to) {
                ending = Some(to);
            }
            if let Some(end) = ending {
                let tally = tallies.entry(from).or_default();
                tally.0 += 1;
                *tally.1.entry(end).or_default() += 1;
            }
        }
    }
    let mut predictions = Vec::new();
    for state in &chain.states {
        let Some((visits, ends)) = tallies.get(state.as_str()) else {
            continue;
        };
        let plain_state = chain
            .plain
            .get(state)
            .cloned()
            .unwrap_or_else(|| state.clone());
        for target in &exact.absorbing {
            let ended = ends.get(target.as_str()).copied().unwrap_or(0);
            let probability = |absorption: &Absorption, from: &str| {
                absorption
                    .absorption_probabilities
                    .get(from)
                    .and_then(|row| row.get(target))
                    .copied()
                    .unwrap_or(0.0)
            };
            let exact_value = probability(exact, state);
            let plain_value = probability(plain, &plain_state);
            let exact_band = binomial_band(*visits, exact_value, LEVEL);
            let plain_band = binomial_band(*visits, plain_value, LEVEL);
            predictions.push(Prediction {
                state: state.clone(),
                plain: plain_state.clone(),
                target: target.clone(),
                visits: *visits,
                ended,
                observed: ended as f64 / *visits as f64,
                exact: exact_value,
                exact_band,
                exact_within: (exact_band[0]..=exact_band[1]).contains(&ended),
                plain_chain: plain_value,
                plain_band,
                plain_within: (plain_band[0]..=plain_band[1]).contains(&ended),
            });
        }
    }
    let capped: Vec<String> = chain
        .capped
        .iter()
        .map(|(name, cap)| format!("`{name}` (max_visits {cap})"))
        .collect();
    Comparison {
        explanation: format!(
            "{} behaves by how often it was visited: its first {} visits go on, the next takes `exhausted`. \
             The plain chain over bare state names has one row per state, so it averages over visits: every visit gets the same small chance of giving up \
             and the same chance of success afterwards, which is right on average from the initial state but wrong after a given number of visits. \
             The exact chain carries the visits in its states, so each row is again one fixed distribution (the chain is Markov) and its predictions hold visit by visit",
            capped.join(" and "),
            chain.capped.first().map_or(0, |(_, cap)| *cap)
        ),
        level: LEVEL,
        predictions,
    }
}

/// Renders rows under headers as an aligned plain-text table (first column
/// left-aligned, the others right-aligned).
pub fn render_table(headers: &[String], rows: &[Vec<String>]) -> String {
    let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
    attnflow_base::table::table(&headers, rows, 1, attnflow_base::table::Style::Text)
}

fn number(value: f64) -> String {
    if value == 0.0 {
        "0".to_string()
    } else {
        format!("{value:.3}")
    }
}

fn interval(range: Option<&[f64; 2]>) -> String {
    match range {
        Some([low, high]) if high.is_infinite() => format!("[{}, ∞]", number(*low)),
        Some([low, high]) => format!("[{}, {}]", number(*low), number(*high)),
        None => String::new(),
    }
}

/// Renders an analysis as plain-text tables.
pub fn render_analysis(analysis: &WorkflowAnalysis) -> String {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "workflow `{}`: {} transitions from {} runs",
        analysis.workflow, analysis.transitions, analysis.runs
    );
    match &analysis.legend {
        Some(legend) => {
            let _ = writeln!(
                text,
                "view: the exact chain; {legend}. `--collapse` shows the plain chain over bare state names"
            );
        }
        None => {
            let _ = writeln!(text, "view: the plain chain over state names");
        }
    }
    for warning in &analysis.warnings {
        let _ = writeln!(text, "warning: {warning}");
    }
    let uncertainty = &analysis.uncertainty;
    let level = format!("{:.0}%", uncertainty.level * 100.0);
    let _ = writeln!(
        text,
        "\n§5.2 estimated transition probabilities T with {level} intervals (every transition the spec allows)"
    );
    let headers: Vec<String> = ["from", "to", "count", "T_ij", &format!("{level} interval")]
        .iter()
        .map(|header| header.to_string())
        .collect();
    let mut rows = Vec::new();
    for (row, from) in analysis.states.iter().enumerate() {
        for (column, to) in analysis.states.iter().enumerate() {
            let range = uncertainty.transitions[row][column];
            let count = analysis.counts[row][column];
            if range.is_none() && count == 0 {
                continue;
            }
            rows.push(vec![
                from.clone(),
                to.clone(),
                count.to_string(),
                number(analysis.probabilities[row][column]),
                interval(range.as_ref()),
            ]);
        }
    }
    text.push_str(&render_table(&headers, &rows));

    let absorption = &analysis.absorption;
    let _ = writeln!(
        text,
        "\n§5.3 absorbing states: {}; transient states: {}",
        list(&absorption.absorbing),
        list(&absorption.transient)
    );
    if !analysis.unobserved_exits.is_empty() {
        let _ = writeln!(
            text,
            "note: {} never recorded leaving (runs still there or crashed there); treated as absorbing",
            list(&analysis.unobserved_exits)
        );
    }
    let mut headers = vec![
        "from".to_string(),
        "exits".to_string(),
        "expected steps".to_string(),
        level.clone(),
        "variance".to_string(),
    ];
    for state in &absorption.absorbing {
        headers.push(format!("P(end in {state})"));
        headers.push(level.clone());
    }
    headers.push(format!(
        "runs for ±{}",
        number(uncertainty.target_half_width)
    ));
    let rows: Vec<Vec<String>> = absorption
        .transient
        .iter()
        .map(|state| {
            let finite = |value: Option<f64>| value.map_or("infinite".to_string(), number);
            let mut cells = vec![
                state.clone(),
                uncertainty
                    .exits
                    .get(state)
                    .copied()
                    .unwrap_or(0)
                    .to_string(),
                finite(absorption.expected_steps[state]),
                interval(uncertainty.expected_steps.get(state)),
                finite(absorption.steps_variance[state]),
            ];
            for target in &absorption.absorbing {
                cells.push(number(absorption.absorption_probabilities[state][target]));
                cells.push(interval(
                    uncertainty
                        .absorption
                        .get(state)
                        .and_then(|row| row.get(target)),
                ));
            }
            cells.push(
                match uncertainty.runs_needed.get(state).copied().flatten() {
                    Some(needed) if needed <= analysis.runs as u64 => "reached".to_string(),
                    Some(needed) => format!("{needed} ({} more)", needed - analysis.runs as u64),
                    None => "no exits yet".to_string(),
                },
            );
            cells
        })
        .collect();
    text.push_str(&render_table(&headers, &rows));

    if !absorption.fundamental_states.is_empty() && absorption.fundamental_states.len() <= 10 {
        let _ = writeln!(
            text,
            "\nfundamental matrix N = (I - Q)^-1 (expected visits to column from row)"
        );
        let mut headers = vec!["N".to_string()];
        headers.extend(absorption.fundamental_states.iter().cloned());
        let rows: Vec<Vec<String>> = absorption
            .fundamental_states
            .iter()
            .zip(&absorption.fundamental)
            .map(|(state, values)| {
                let mut cells = vec![state.clone()];
                cells.extend(values.iter().map(|value| number(*value)));
                cells
            })
            .collect();
        text.push_str(&render_table(&headers, &rows));
    }

    let verdict = if absorption.certain {
        "absorption is CERTAIN: an absorbing state is reachable from every transient state"
            .to_string()
    } else {
        format!(
            "absorption is NOT certain: no absorbing state is reachable from {}",
            list(&absorption.never_absorbed)
        )
    };
    let _ = writeln!(text, "\n{verdict}\n(condition: {})", analysis.condition);
    let _ = writeln!(text, "\nmethod: {}", uncertainty.method);
    if let Some(comparison) = &analysis.comparison {
        text.push_str(&render_comparison(comparison));
    }
    text
}

/// The exact chain's predictions beside the plain chain's.
pub fn render_comparison(comparison: &Comparison) -> String {
    let mut text = String::new();
    let level = format!("{:.0}%", comparison.level * 100.0);
    let _ = writeln!(
        text,
        "\nwhere runs ended after each state: observed, and predicted by the exact and the plain chain (binomial {level} band of the count; `no` = outside)"
    );
    let headers: Vec<String> = [
        "after",
        "end in",
        "visits",
        "observed",
        "exact B",
        "in band",
        "plain B",
        "plain error",
        "in band",
    ]
    .iter()
    .map(|header| header.to_string())
    .collect();
    let yes_no = |within: bool| if within { "yes" } else { "no" }.to_string();
    let rows: Vec<Vec<String>> = comparison
        .predictions
        .iter()
        .map(|prediction| {
            vec![
                prediction.state.clone(),
                prediction.target.clone(),
                prediction.visits.to_string(),
                number(prediction.observed),
                number(prediction.exact),
                yes_no(prediction.exact_within),
                number(prediction.plain_chain),
                format!("{:+.3}", prediction.plain_chain - prediction.observed),
                yes_no(prediction.plain_within),
            ]
        })
        .collect();
    text.push_str(&render_table(&headers, &rows));
    let _ = writeln!(
        text,
        "outside the {level} band: exact chain {} of {}, plain chain {} of {}\nwhy the plain chain differs: {}",
        comparison.outside(false),
        comparison.predictions.len(),
        comparison.outside(true),
        comparison.predictions.len(),
        comparison.explanation
    );
    text
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

/// The runs as a table: id, workflow, status, state, steps so far, crashes,
/// creation time.
pub fn render_runs(runs: &[RunRecord]) -> String {
    let headers: Vec<String> = [
        "run",
        "workflow",
        "status",
        "state",
        "epoch",
        "crashes",
        "created (UTC)",
        "spec",
    ]
    .iter()
    .map(|header| header.to_string())
    .collect();
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|run| {
            vec![
                run.id.to_string(),
                run.workflow.clone(),
                run.status.to_string(),
                run.current_state.clone(),
                run.epoch.to_string(),
                run.crash_count.to_string(),
                attnflow_base::time::format_utc(run.created_ms),
                run.spec_origin.clone(),
            ]
        })
        .collect();
    render_table(&headers, &rows)
}

/// One run in detail: its record, steps and event log.
pub fn render_run(run: &RunRecord, steps: &[StepRecord], events: &[EventRecord]) -> String {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "run {} of workflow `{}` ({}): {} in state `{}`",
        run.id, run.workflow, run.spec_origin, run.status, run.current_state
    );
    let _ = writeln!(
        text,
        "created {} UTC; epoch {}; crashes {}; lease {}",
        attnflow_base::time::format_utc(run.created_ms),
        run.epoch,
        run.crash_count,
        match &run.lease_owner {
            Some(owner) => format!("held by {owner} (token {})", run.lease_token),
            None => format!("free (last token {})", run.lease_token),
        }
    );
    let _ = writeln!(text, "\nsteps");
    let headers: Vec<String> = [
        "step", "state", "epoch", "attempts", "outcome", "next", "seconds",
    ]
    .iter()
    .map(|header| header.to_string())
    .collect();
    let rows: Vec<Vec<String>> = steps
        .iter()
        .map(|step| {
            vec![
                step.seq.to_string(),
                step.state.clone(),
                step.epoch.to_string(),
                step.attempt.to_string(),
                step.outcome.clone().unwrap_or_else(|| {
                    if step.attempt_open {
                        "(running)"
                    } else {
                        "(open)"
                    }
                    .to_string()
                }),
                step.next_state.clone().unwrap_or_default(),
                step.finished_ms
                    .map(|finished| format!("{:.3}", (finished - step.started_ms) as f64 / 1000.0))
                    .unwrap_or_default(),
            ]
        })
        .collect();
    text.push_str(&render_table(&headers, &rows));
    let _ = writeln!(text, "\nevents");
    let headers: Vec<String> = [
        "#", "+seconds", "event", "step", "state", "attempt", "outcome", "to", "token", "detail",
    ]
    .iter()
    .map(|header| header.to_string())
    .collect();
    let optional = |value: Option<i64>| value.map(|value| value.to_string()).unwrap_or_default();
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|event| {
            let detail: String = event.detail.replace('\n', " ").chars().take(100).collect();
            vec![
                event.seq.to_string(),
                format!("{:.3}", (event.at_ms - run.created_ms) as f64 / 1000.0),
                event.kind.as_str().to_string(),
                optional(event.step),
                event.state.clone().unwrap_or_default(),
                optional(event.attempt),
                event.outcome.clone().unwrap_or_default(),
                event.to_state.clone().unwrap_or_default(),
                optional(event.lease_token),
                detail,
            ]
        })
        .collect();
    text.push_str(&render_table(&headers, &rows));
    text
}

/// A Mermaid state diagram of the estimated chain, with `T_ij`, its
/// interval and the count on each edge.
pub fn analysis_mermaid(analysis: &WorkflowAnalysis) -> String {
    let mut text = String::from("stateDiagram-v2\n");
    // Expanded labels such as `Retry[2]` are not Mermaid identifiers.
    let id = |state: &str| -> String {
        state
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect::<String>()
            .trim_end_matches('_')
            .to_string()
    };
    if let Some(initial) = &analysis.initial {
        let _ = writeln!(text, "    [*] --> {}", id(initial));
    }
    for state in &analysis.states {
        if id(state) != *state {
            let _ = writeln!(text, "    state \"{state}\" as {}", id(state));
        }
    }
    for (row, from) in analysis.states.iter().enumerate() {
        for (column, to) in analysis.states.iter().enumerate() {
            let count = analysis.counts[row][column];
            if count > 0 {
                let _ = writeln!(
                    text,
                    "    {} --> {} : {:.3} {} ({count})",
                    id(from),
                    id(to),
                    analysis.probabilities[row][column],
                    interval(analysis.uncertainty.transitions[row][column].as_ref())
                );
            }
        }
    }
    for state in &analysis.absorption.absorbing {
        let _ = writeln!(text, "    {} --> [*]", id(state));
    }
    text
}

/// A Mermaid state diagram of a spec (the paper's figure 2 for the default
/// spec): edges carry outcomes, notes carry retry policy and timeout.
pub fn spec_mermaid(spec: &Spec) -> String {
    let mut text = String::from("stateDiagram-v2\n");
    let _ = writeln!(text, "    [*] --> {}", spec.initial);
    let mut failures = Vec::new();
    for state in &spec.states {
        match &state.kind {
            StateKind::Terminal(kind) => {
                let _ = writeln!(text, "    {} --> [*]", state.name);
                if *kind == TerminalKind::Failure {
                    failures.push(state.name.clone());
                }
            }
            StateKind::Active(active) => {
                // Group outcomes sharing a target; invalid and timeout follow
                // `failed` unless given their own edge.
                let mut edges: BTreeMap<&str, Vec<String>> = BTreeMap::new();
                for outcome in Outcome::ALL {
                    let implicit = !active.transitions.contains_key(&outcome);
                    if implicit && outcome == Outcome::Timeout && active.timeout.is_none() {
                        continue;
                    }
                    if let Some(target) = active.next_state(outcome) {
                        let label = if implicit {
                            format!("({outcome})")
                        } else {
                            outcome.to_string()
                        };
                        edges.entry(target).or_default().push(label);
                    }
                }
                let mut targets: Vec<(&str, Vec<String>)> = edges.into_iter().collect();
                targets.sort_by_key(|(target, _)| {
                    spec.states.iter().position(|state| state.name == *target)
                });
                for (target, labels) in targets {
                    let _ = writeln!(
                        text,
                        "    {} --> {target} : {}",
                        state.name,
                        labels.join(", ")
                    );
                }
                let mut notes = vec![match &active.action {
                    Action::Task { name, .. } => format!("task {name}"),
                    Action::Command { argv, .. } => format!("command {}", argv[0]),
                }];
                if active.retry.attempts > 1 {
                    notes.push(format!(
                        "{} attempts, backoff {} ms x{} (cap {} ms, jitter {})",
                        active.retry.attempts,
                        active.retry.backoff.as_millis(),
                        active.retry.multiplier,
                        active.retry.cap.as_millis(),
                        active.retry.jitter
                    ));
                }
                if let Some(timeout) = active.timeout {
                    notes.push(format!("timeout {} ms", timeout.as_millis()));
                }
                if let Some(visits) = active.max_visits {
                    notes.push(format!("at most {visits} visits"));
                }
                let _ = writeln!(
                    text,
                    "    note right of {} : {}",
                    state.name,
                    notes.join("; ")
                );
            }
        }
    }
    if !failures.is_empty() {
        text.push_str("    classDef failure fill:#f8d7da,stroke:#b02a37\n");
        for state in failures {
            let _ = writeln!(text, "    class {state} failure");
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_spec_diagram_has_figure_two_edges() {
        let diagram = spec_mermaid(&Spec::default_spec());
        for edge in [
            "[*] --> Initialized",
            "Initialized --> Processing : ok",
            "Processing --> Validation : ok",
            "Validation --> Completed : ok",
            "Validation --> Failed : invalid, failed",
            "Failed --> Retry : ok, (invalid), failed",
            "Retry --> Processing : ok",
            "Retry --> Abandoned : (invalid), failed, exhausted",
            "Processing --> Failed : (invalid), failed, timeout",
            "Completed --> [*]",
            "class Abandoned failure",
        ] {
            assert!(diagram.contains(edge), "missing `{edge}` in\n{diagram}");
        }
    }
}
