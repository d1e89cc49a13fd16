//! Exact chains for bounded retries.
//!
//! A state with `max_visits` takes its `exhausted` transition on the visit
//! after its cap, so what happens next depends on how often it was visited:
//! the chain over bare state names is not Markov. Carrying the visit counts
//! of the capped states in the state makes it so: `(state, visits)` moves to
//! `(next, visits + [next is capped])`, and every transition probability
//! is again a property of the state alone. Labels read `Processing[2]`:
//! Processing after 2 visits to the capped state (bare names while no
//! capped state has been visited; terminal states keep their names, since
//! nothing happens after them).
//!
//! Counts restart with each restart epoch, as the runner's do.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::Serialize;

use crate::spec::{Outcome, Spec};
use crate::store::StepRecord;

/// Expanded chains larger than this are not built (the plain view is
/// shown instead).
pub const MAX_EXPANDED_STATES: usize = 5000;

/// The exact `(state, visits)` chain of a spec with capped states.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VisitChain {
    /// The capped states and their `max_visits`, in the order their counts
    /// appear in labels.
    pub capped: Vec<(String, u32)>,
    /// Expanded states reachable from the initial state, breadth first.
    pub states: Vec<String>,
    /// The transitions the spec allows from each expanded state.
    pub allowed: BTreeMap<String, Vec<String>>,
    /// The plain state of each expanded state.
    pub plain: BTreeMap<String, String>,
    /// Terminal states (plain names).
    pub terminal: Vec<String>,
    /// The initial expanded state.
    pub initial: String,
}

impl VisitChain {
    /// The exact chain of `spec`; `None` when no state is capped or the
    /// expansion would exceed [`MAX_EXPANDED_STATES`].
    pub fn of(spec: &Spec) -> Option<VisitChain> {
        let capped: Vec<(String, u32)> = spec
            .states
            .iter()
            .filter_map(|state| Some((state.name.clone(), state.active()?.max_visits?)))
            .collect();
        if capped.is_empty() {
            return None;
        }
        let mut chain = VisitChain {
            capped,
            states: Vec::new(),
            allowed: BTreeMap::new(),
            plain: BTreeMap::new(),
            terminal: spec
                .states
                .iter()
                .filter(|state| state.terminal().is_some())
                .map(|state| state.name.clone())
                .collect(),
            initial: String::new(),
        };
        let start = (
            spec.initial.clone(),
            chain.enter(&spec.initial, &chain.zero()),
        );
        chain.initial = chain.label(&start.0, &start.1);
        let mut seen = BTreeSet::from([start.clone()]);
        let mut queue = VecDeque::from([start]);
        while let Some((state, counts)) = queue.pop_front() {
            let label = chain.label(&state, &counts);
            chain.states.push(label.clone());
            chain.plain.insert(label.clone(), state.clone());
            if chain.states.len() > MAX_EXPANDED_STATES {
                return None;
            }
            let Some(active) = spec.state(&state).and_then(|state| state.active()) else {
                continue;
            };
            let exhausted = chain
                .position(&state)
                .is_some_and(|index| counts[index] > chain.capped[index].1);
            let outcomes: &[Outcome] = if exhausted {
                &[Outcome::Exhausted]
            } else {
                &[
                    Outcome::Ok,
                    Outcome::Failed,
                    Outcome::Invalid,
                    Outcome::Timeout,
                ]
            };
            let mut targets = Vec::new();
            for &outcome in outcomes {
                let Some(next) = active.next_state(outcome) else {
                    continue;
                };
                let next_counts = chain.enter(next, &counts);
                let next_label = chain.label(next, &next_counts);
                if !targets.contains(&next_label) {
                    targets.push(next_label);
                }
                let key = (next.to_string(), next_counts);
                if seen.insert(key.clone()) {
                    queue.push_back(key);
                }
            }
            chain.allowed.insert(label, targets);
        }
        Some(chain)
    }

    fn zero(&self) -> Vec<u32> {
        vec![0; self.capped.len()]
    }

    fn position(&self, state: &str) -> Option<usize> {
        self.capped.iter().position(|(name, _)| name == state)
    }

    /// The counts after entering `state`: its own count rises (capped at
    /// `max_visits + 1`, beyond which every visit behaves the same);
    /// entering a terminal state forgets them.
    fn enter(&self, state: &str, counts: &[u32]) -> Vec<u32> {
        if self.terminal.iter().any(|name| name == state) {
            return self.zero();
        }
        let mut counts = counts.to_vec();
        if let Some(index) = self.position(state) {
            counts[index] = (counts[index] + 1).min(self.capped[index].1 + 1);
        }
        counts
    }

    /// `Processing[2]`, or the bare name when no count is positive.
    pub fn label(&self, state: &str, counts: &[u32]) -> String {
        if counts.iter().all(|&count| count == 0) {
            state.to_string()
        } else {
            let counts: Vec<String> = counts.iter().map(u32::to_string).collect();
            format!("{state}[{}]", counts.join(","))
        }
    }

    /// What a label means, for the output.
    pub fn legend(&self) -> String {
        let names: Vec<String> = self
            .capped
            .iter()
            .map(|(name, cap)| format!("{name} (max_visits {cap})"))
            .collect();
        format!(
            "X[k] is state X after k visits to {} in this run (restarts count afresh); a bare name means no visit yet",
            names.join(", then ")
        )
    }

    /// A run's completed steps as transitions between expanded states, in
    /// order (steps sorted by sequence number).
    pub fn replay(&self, steps: &[StepRecord]) -> Vec<(String, String)> {
        let mut transitions = Vec::new();
        let mut counts = self.zero();
        let mut epoch = None;
        for step in steps {
            if epoch != Some(step.epoch) {
                epoch = Some(step.epoch);
                counts = self.zero();
            }
            counts = self.enter(&step.state, &counts);
            if let Some(next) = &step.next_state {
                let from = self.label(&step.state, &counts);
                let to = self.label(next, &self.enter(next, &counts));
                transitions.push((from, to));
            }
        }
        transitions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_spec_expands_around_its_retry_cap() {
        let spec = Spec::default_spec();
        let chain = VisitChain::of(&spec).expect("Retry is capped");
        assert_eq!(chain.capped, [("Retry".to_string(), 3)]);
        assert_eq!(chain.initial, "Initialized");
        // Three retries lead back to Processing; the fourth visit is
        // exhausted and can only be abandoned.
        assert_eq!(chain.allowed["Retry[1]"], ["Processing[1]", "Abandoned"]);
        assert_eq!(chain.allowed["Retry[3]"], ["Processing[3]", "Abandoned"]);
        assert_eq!(chain.allowed["Retry[4]"], ["Abandoned"]);
        assert!(chain.states.contains(&"Validation[3]".to_string()));
        assert!(!chain
            .states
            .iter()
            .any(|state| state.starts_with("Processing[4")));
        assert_eq!(chain.plain["Failed[2]"], "Failed");
    }

    #[test]
    fn replay_counts_visits_per_epoch() {
        let chain = VisitChain::of(&Spec::default_spec()).unwrap();
        let step = |seq: i64, state: &str, epoch: i64, next: &str| StepRecord {
            run_id: 1,
            seq,
            state: state.into(),
            epoch,
            completed: true,
            attempt: 1,
            attempt_open: false,
            last_outcome: None,
            retry_at_ms: None,
            outcome: Some("ok".into()),
            next_state: Some(next.into()),
            started_ms: 0,
            finished_ms: Some(0),
        };
        let steps = [
            step(1, "Processing", 0, "Failed"),
            step(2, "Failed", 0, "Retry"),
            step(3, "Retry", 0, "Processing"),
            step(4, "Processing", 0, "Failed"),
            step(5, "Failed", 1, "Retry"),
        ];
        let transitions = chain.replay(&steps);
        let expected = [
            ("Processing", "Failed"),
            ("Failed", "Retry[1]"),
            ("Retry[1]", "Processing[1]"),
            ("Processing[1]", "Failed[1]"),
            ("Failed", "Retry[1]"),
        ];
        let got: Vec<(&str, &str)> = transitions
            .iter()
            .map(|(from, to)| (from.as_str(), to.as_str()))
            .collect();
        assert_eq!(got, expected);
    }
}
