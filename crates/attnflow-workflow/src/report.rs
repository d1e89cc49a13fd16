//! Turning specs and run histories into things people read: the Markov
//! analysis of a store (§5.2, §5.3) as a table, JSON and a Mermaid state
//! diagram, and a spec's own state diagram (figure 2).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::markov::{Absorption, ChainError, TransitionCounts, ABSORPTION_CONDITION};
use crate::spec::{Action, Outcome, Spec, StateKind, TerminalKind};
use crate::store::{EventRecord, RunRecord, StepRecord, Store, StoreError};

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
}

/// Analyses the recorded transitions of every workflow in `store` (or of
/// `workflow` only), one analysis per workflow name.
pub fn analyze(
    store: &Store,
    workflow: Option<&str>,
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
        let (order, terminal, initial) = match &spec {
            Some(spec) => (
                spec.states.iter().map(|state| state.name.clone()).collect(),
                spec.states
                    .iter()
                    .filter(|state| state.terminal().is_some())
                    .map(|state| state.name.clone())
                    .collect(),
                Some(spec.initial.clone()),
            ),
            None => (Vec::new(), Vec::new(), None),
        };
        let mut counts = TransitionCounts::new(&order, &terminal);
        let mut run_ids = std::collections::BTreeSet::new();
        for record in &records {
            counts.record(&record.from, &record.to);
            run_ids.insert(record.run_id);
        }
        let chain = counts.estimate();
        let absorption = chain.absorption().map_err(|source| AnalysisError::Chain {
            workflow: name.to_string(),
            source,
        })?;
        let size = chain.states.len();
        let observed = chain
            .counts
            .clone()
            .unwrap_or_else(|| nalgebra::DMatrix::zeros(size, size));
        analyses.push(WorkflowAnalysis {
            workflow: name.to_string(),
            runs: run_ids.len(),
            transitions: counts.total(),
            initial,
            states: chain.states.clone(),
            counts: (0..size)
                .map(|row| {
                    (0..size)
                        .map(|column| observed[(row, column)] as u64)
                        .collect()
                })
                .collect(),
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
        });
    }
    Ok(analyses)
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

/// Renders an analysis as plain-text tables.
pub fn render_analysis(analysis: &WorkflowAnalysis) -> String {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "workflow `{}`: {} transitions from {} runs",
        analysis.workflow, analysis.transitions, analysis.runs
    );
    let _ = writeln!(
        text,
        "\n§5.2 estimated transition probabilities T (row: from, column: to; count in brackets)"
    );
    let mut headers = vec!["from \\ to".to_string()];
    headers.extend(analysis.states.iter().cloned());
    let rows: Vec<Vec<String>> = analysis
        .states
        .iter()
        .enumerate()
        .map(|(row, state)| {
            let mut cells = vec![state.clone()];
            for column in 0..analysis.states.len() {
                let count = analysis.counts[row][column];
                let probability = analysis.probabilities[row][column];
                cells.push(if count > 0 {
                    format!("{} ({count})", number(probability))
                } else if probability > 0.0 {
                    // An absorbing row with no recorded exits.
                    number(probability)
                } else {
                    ".".to_string()
                });
            }
            cells
        })
        .collect();
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
        "expected steps".to_string(),
        "variance".to_string(),
    ];
    headers.extend(
        absorption
            .absorbing
            .iter()
            .map(|state| format!("P(end in {state})")),
    );
    let rows: Vec<Vec<String>> = absorption
        .transient
        .iter()
        .map(|state| {
            let finite = |value: Option<f64>| value.map_or("infinite".to_string(), number);
            let mut cells = vec![
                state.clone(),
                finite(absorption.expected_steps[state]),
                finite(absorption.steps_variance[state]),
            ];
            for target in &absorption.absorbing {
                cells.push(number(absorption.absorption_probabilities[state][target]));
            }
            cells
        })
        .collect();
    text.push_str(&render_table(&headers, &rows));

    if !absorption.fundamental_states.is_empty() {
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

/// A Mermaid state diagram of the estimated chain, with `T_ij` (and the
/// count) on each edge.
pub fn analysis_mermaid(analysis: &WorkflowAnalysis) -> String {
    let mut text = String::from("stateDiagram-v2\n");
    if let Some(initial) = &analysis.initial {
        let _ = writeln!(text, "    [*] --> {initial}");
    }
    for (row, from) in analysis.states.iter().enumerate() {
        for (column, to) in analysis.states.iter().enumerate() {
            let count = analysis.counts[row][column];
            if count > 0 {
                let _ = writeln!(
                    text,
                    "    {from} --> {to} : {:.3} ({count})",
                    analysis.probabilities[row][column]
                );
            }
        }
    }
    for state in &analysis.absorption.absorbing {
        let _ = writeln!(text, "    {state} --> [*]");
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
