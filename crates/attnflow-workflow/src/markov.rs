//! Markov analysis of recorded runs (§5.2, §5.3).
//!
//! §5.2: `T_ij` is estimated by counting recorded transitions `i -> j` and
//! dividing by the transitions out of `i`. §5.3: with the absorbing states
//! last, `T = [[Q, R], [0, I]]`; the fundamental matrix `N = (I - Q)^-1`
//! gives expected visits, `t = N·1` the expected steps to absorption,
//! `(2N - I)t - t∘t` their variance, and `B = N·R` the absorption
//! probabilities.
//!
//! The paper's Lemma 2 argues from irreducibility of the transient part;
//! that is neither necessary nor sufficient. The condition used here is the
//! correct one: absorption is certain exactly when an absorbing state is
//! reachable from every transient state.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use nalgebra::DMatrix;
use serde::Serialize;

/// The statement of the absorption condition printed with every analysis.
pub const ABSORPTION_CONDITION: &str = "absorption is certain exactly when an absorbing state is reachable from every transient state (the paper's Lemma 2 assumes an irreducible transient part, which is neither necessary nor sufficient)";

/// Transition counts between named states.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TransitionCounts {
    states: Vec<String>,
    counts: BTreeMap<(usize, usize), u64>,
    absorbing_hint: BTreeSet<usize>,
    declared: BTreeSet<(usize, usize)>,
}

impl TransitionCounts {
    /// Empty counts over `states` (listed first, in this order); states
    /// named `absorbing` are treated as absorbing even when never reached.
    pub fn new(states: &[String], absorbing: &[String]) -> Self {
        let mut counts = TransitionCounts::default();
        for state in states {
            counts.index(state);
        }
        for state in absorbing {
            let index = counts.index(state);
            counts.absorbing_hint.insert(index);
        }
        counts
    }

    fn index(&mut self, state: &str) -> usize {
        match self.states.iter().position(|known| known == state) {
            Some(index) => index,
            None => {
                self.states.push(state.to_string());
                self.states.len() - 1
            }
        }
    }

    /// Counts one recorded transition.
    pub fn record(&mut self, from: &str, to: &str) {
        let from = self.index(from);
        let to = self.index(to);
        *self.counts.entry((from, to)).or_insert(0) += 1;
    }

    /// Declares `from -> to` possible (the spec allows it) whether or not
    /// it was recorded: the posterior spreads its prior over these.
    pub fn allow(&mut self, from: &str, to: &str) {
        let from = self.index(from);
        let to = self.index(to);
        self.declared.insert((from, to));
    }

    /// The transitions possible from state `row`: those declared with
    /// [`Self::allow`] and those recorded (none for an absorbing row).
    pub fn allowed(&self, row: usize) -> Vec<bool> {
        (0..self.states.len())
            .map(|column| {
                self.declared.contains(&(row, column)) || self.counts.contains_key(&(row, column))
            })
            .collect()
    }

    /// The counts as a dense matrix in state order.
    pub fn matrix(&self) -> Vec<Vec<u64>> {
        let size = self.states.len();
        let mut matrix = vec![vec![0; size]; size];
        for (&(from, to), &count) in &self.counts {
            matrix[from][to] = count;
        }
        matrix
    }

    /// The states, in order.
    pub fn states(&self) -> &[String] {
        &self.states
    }

    /// The count of `from -> to`.
    pub fn count(&self, from: &str, to: &str) -> u64 {
        let position = |name: &str| self.states.iter().position(|state| state == name);
        match (position(from), position(to)) {
            (Some(from), Some(to)) => self.counts.get(&(from, to)).copied().unwrap_or(0),
            _ => 0,
        }
    }

    /// The total number of transitions counted.
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    /// §5.2: the maximum-likelihood estimate `T_ij = n_ij / Σ_k n_ik`. A
    /// state with no recorded exits gets `T_ii = 1` (absorbing); the
    /// analysis lists the ones the spec does not call terminal.
    pub fn estimate(&self) -> MarkovChain {
        let size = self.states.len();
        let mut counts = DMatrix::<f64>::zeros(size, size);
        for (&(from, to), &count) in &self.counts {
            counts[(from, to)] = count as f64;
        }
        let mut probabilities = DMatrix::<f64>::zeros(size, size);
        let mut unobserved = Vec::new();
        for row in 0..size {
            let total: f64 = counts.row(row).sum();
            if total > 0.0 {
                for column in 0..size {
                    probabilities[(row, column)] = counts[(row, column)] / total;
                }
            } else {
                probabilities[(row, row)] = 1.0;
                if !self.absorbing_hint.contains(&row) {
                    unobserved.push(self.states[row].clone());
                }
            }
        }
        MarkovChain {
            states: self.states.clone(),
            probabilities,
            counts: Some(counts),
            unobserved_exits: unobserved,
        }
    }
}

/// A finite Markov chain over named states.
#[derive(Debug, Clone, PartialEq)]
pub struct MarkovChain {
    /// State names; index `i` is row and column `i`.
    pub states: Vec<String>,
    /// Row-stochastic transition matrix `T`.
    pub probabilities: DMatrix<f64>,
    /// The counts it was estimated from, if estimated.
    pub counts: Option<DMatrix<f64>>,
    /// Non-terminal states with no recorded exits (treated as absorbing).
    pub unobserved_exits: Vec<String>,
}

/// Why a matrix is not a transition matrix.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ChainError {
    /// Wrong shape.
    #[error("the transition matrix is {rows}×{columns} but there are {states} states")]
    Shape {
        /// Rows.
        rows: usize,
        /// Columns.
        columns: usize,
        /// Named states.
        states: usize,
    },
    /// A row that is not a probability distribution.
    #[error("row `{state}` of the transition matrix is not a probability distribution (sum {sum}, or a negative or non-finite entry)")]
    NotStochastic {
        /// The row's state.
        state: String,
        /// Its sum.
        sum: f64,
    },
    /// `I - Q` could not be inverted numerically.
    #[error("I - Q is numerically singular although every transient state can reach absorption")]
    Singular,
}

/// The result of §5.3's absorption analysis.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Absorption {
    /// Absorbing states (`T_ii = 1`), in chain order.
    pub absorbing: Vec<String>,
    /// Transient (non-absorbing) states, in chain order.
    pub transient: Vec<String>,
    /// Whether absorption is certain from every transient state.
    pub certain: bool,
    /// Transient states from which no absorbing state is reachable: runs
    /// there can never end.
    pub never_absorbed: Vec<String>,
    /// Transient states from which absorption has probability below 1
    /// (they can reach a never-absorbed state); includes `never_absorbed`.
    pub not_certain: Vec<String>,
    /// The transient states that can be absorbed: the rows and columns of
    /// `fundamental` and the rows of `absorption_probabilities`.
    pub fundamental_states: Vec<String>,
    /// `N = (I - Q)^-1` over `fundamental_states`: expected visits to `j`
    /// starting from `i`.
    pub fundamental: Vec<Vec<f64>>,
    /// Expected steps to absorption from each transient state (`None`:
    /// infinite, absorption not certain).
    pub expected_steps: BTreeMap<String, Option<f64>>,
    /// Variance of the steps to absorption (`None` where infinite).
    pub steps_variance: BTreeMap<String, Option<f64>>,
    /// `B = N·R`: probability of ending in each absorbing state, from each
    /// transient state (rows of never-absorbed states are all zero).
    pub absorption_probabilities: BTreeMap<String, BTreeMap<String, f64>>,
}

impl MarkovChain {
    /// A chain from an explicit transition matrix.
    pub fn new(states: Vec<String>, probabilities: DMatrix<f64>) -> Result<Self, ChainError> {
        if probabilities.nrows() != states.len() || probabilities.ncols() != states.len() {
            return Err(ChainError::Shape {
                rows: probabilities.nrows(),
                columns: probabilities.ncols(),
                states: states.len(),
            });
        }
        for (row, state) in states.iter().enumerate() {
            let values = probabilities.row(row);
            let sum: f64 = values.sum();
            if values
                .iter()
                .any(|value| !value.is_finite() || *value < 0.0)
                || (sum - 1.0).abs() > 1e-9
            {
                return Err(ChainError::NotStochastic {
                    state: state.clone(),
                    sum,
                });
            }
        }
        Ok(MarkovChain {
            states,
            probabilities,
            counts: None,
            unobserved_exits: Vec::new(),
        })
    }

    /// The estimated probability of `from -> to`.
    pub fn probability(&self, from: &str, to: &str) -> Option<f64> {
        let from = self.states.iter().position(|state| state == from)?;
        let to = self.states.iter().position(|state| state == to)?;
        Some(self.probabilities[(from, to)])
    }

    fn is_absorbing(&self, index: usize) -> bool {
        (self.probabilities[(index, index)] - 1.0).abs() <= 1e-12
    }

    /// States reachable from `start` (including itself) along edges of
    /// positive probability.
    fn reachable(&self, start: usize) -> Vec<bool> {
        let size = self.states.len();
        let mut seen = vec![false; size];
        seen[start] = true;
        let mut queue = VecDeque::from([start]);
        while let Some(index) = queue.pop_front() {
            for (next, visited) in seen.iter_mut().enumerate() {
                if self.probabilities[(index, next)] > 0.0 && !*visited {
                    *visited = true;
                    queue.push_back(next);
                }
            }
        }
        seen
    }

    /// §5.3: classifies states and computes `N`, `t`, its variance and `B`.
    pub fn absorption(&self) -> Result<Absorption, ChainError> {
        let size = self.states.len();
        let absorbing: Vec<usize> = (0..size)
            .filter(|&index| self.is_absorbing(index))
            .collect();
        let transient: Vec<usize> = (0..size)
            .filter(|&index| !self.is_absorbing(index))
            .collect();
        let reach: Vec<Vec<bool>> = (0..size).map(|index| self.reachable(index)).collect();

        let never: Vec<usize> = transient
            .iter()
            .copied()
            .filter(|&index| !absorbing.iter().any(|&target| reach[index][target]))
            .collect();
        let not_certain: Vec<usize> = transient
            .iter()
            .copied()
            .filter(|&index| never.iter().any(|&bad| reach[index][bad]))
            .collect();
        let solvable: Vec<usize> = transient
            .iter()
            .copied()
            .filter(|index| !never.contains(index))
            .collect();

        let count = solvable.len();
        let identity = DMatrix::<f64>::identity(count, count);
        let q = DMatrix::from_fn(count, count, |row, column| {
            self.probabilities[(solvable[row], solvable[column])]
        });
        let r = DMatrix::from_fn(count, absorbing.len(), |row, column| {
            self.probabilities[(solvable[row], absorbing[column])]
        });
        let fundamental = if count == 0 {
            DMatrix::zeros(0, 0)
        } else {
            (&identity - &q).try_inverse().ok_or(ChainError::Singular)?
        };
        let steps = &fundamental * DMatrix::<f64>::from_element(count, 1, 1.0);
        let variance = (2.0 * &fundamental - &identity) * &steps - steps.component_mul(&steps);
        let absorbed = &fundamental * &r;

        let name = |index: usize| self.states[index].clone();
        let mut expected_steps = BTreeMap::new();
        let mut steps_variance = BTreeMap::new();
        let mut absorption_probabilities = BTreeMap::new();
        for &index in &transient {
            let position = solvable.iter().position(|&solved| solved == index);
            let finite = position.filter(|_| !not_certain.contains(&index));
            expected_steps.insert(name(index), finite.map(|row| steps[(row, 0)]));
            steps_variance.insert(name(index), finite.map(|row| variance[(row, 0)].max(0.0)));
            let row: BTreeMap<String, f64> = absorbing
                .iter()
                .enumerate()
                .map(|(column, &target)| {
                    (
                        name(target),
                        position.map_or(0.0, |row| absorbed[(row, column)]),
                    )
                })
                .collect();
            absorption_probabilities.insert(name(index), row);
        }
        Ok(Absorption {
            absorbing: absorbing.iter().map(|&index| name(index)).collect(),
            transient: transient.iter().map(|&index| name(index)).collect(),
            certain: never.is_empty(),
            never_absorbed: never.iter().map(|&index| name(index)).collect(),
            not_certain: not_certain.iter().map(|&index| name(index)).collect(),
            fundamental_states: solvable.iter().map(|&index| name(index)).collect(),
            fundamental: (0..count)
                .map(|row| {
                    (0..count)
                        .map(|column| fundamental[(row, column)])
                        .collect()
                })
                .collect(),
            expected_steps,
            steps_variance,
            absorption_probabilities,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(count: usize) -> Vec<String> {
        (0..count).map(|index| format!("S{index}")).collect()
    }

    /// Gambler's ruin on 0..=m with win probability p: 0 and m absorb.
    fn gamblers_ruin(m: usize, p: f64) -> MarkovChain {
        let mut matrix = DMatrix::zeros(m + 1, m + 1);
        matrix[(0, 0)] = 1.0;
        matrix[(m, m)] = 1.0;
        for i in 1..m {
            matrix[(i, i + 1)] = p;
            matrix[(i, i - 1)] = 1.0 - p;
        }
        MarkovChain::new(names(m + 1), matrix).unwrap()
    }

    #[test]
    fn gamblers_ruin_fair_matches_closed_forms() {
        let m = 6;
        let absorption = gamblers_ruin(m, 0.5).absorption().unwrap();
        assert!(absorption.certain);
        assert_eq!(absorption.absorbing, ["S0", "S6"]);
        // Fair game: N_ij = 2 min(i,j) (m - max(i,j)) / m, t_i = i (m - i),
        // P(reach m | i) = i / m.
        for (row, i) in (1..m).enumerate() {
            for (column, j) in (1..m).enumerate() {
                let expected = 2.0 * i.min(j) as f64 * (m - i.max(j)) as f64 / m as f64;
                assert!((absorption.fundamental[row][column] - expected).abs() < 1e-9);
            }
            let state = format!("S{i}");
            let steps = absorption.expected_steps[&state].unwrap();
            assert!(
                (steps - (i * (m - i)) as f64).abs() < 1e-9,
                "{state}: {steps}"
            );
            let win = absorption.absorption_probabilities[&state]["S6"];
            assert!((win - i as f64 / m as f64).abs() < 1e-12);
            let lose = absorption.absorption_probabilities[&state]["S0"];
            assert!((win + lose - 1.0).abs() < 1e-12);
        }
    }

    #[test]
    fn gamblers_ruin_biased_matches_closed_forms() {
        let (m, p) = (5_usize, 0.6_f64);
        let q = 1.0 - p;
        let ratio = q / p;
        let absorption = gamblers_ruin(m, p).absorption().unwrap();
        for i in 1..m {
            let state = format!("S{i}");
            let win = (1.0 - ratio.powi(i as i32)) / (1.0 - ratio.powi(m as i32));
            let steps = i as f64 / (q - p) - m as f64 / (q - p) * win;
            assert!((absorption.absorption_probabilities[&state]["S5"] - win).abs() < 1e-9);
            assert!((absorption.expected_steps[&state].unwrap() - steps).abs() < 1e-9);
        }
    }

    #[test]
    fn geometric_variance_matches_closed_form() {
        // One transient state that stays with probability a: steps are
        // geometric with mean 1 / (1 - a) and variance a / (1 - a)^2.
        let a = 0.7;
        let matrix = DMatrix::from_row_slice(2, 2, &[a, 1.0 - a, 0.0, 1.0]);
        let absorption = MarkovChain::new(names(2), matrix)
            .unwrap()
            .absorption()
            .unwrap();
        assert!((absorption.expected_steps["S0"].unwrap() - 1.0 / (1.0 - a)).abs() < 1e-12);
        let variance = a / ((1.0 - a) * (1.0 - a));
        assert!((absorption.steps_variance["S0"].unwrap() - variance).abs() < 1e-9);
    }

    #[test]
    fn chain_that_can_never_be_absorbed_is_reported() {
        // S0 -> {S1, S3}; S1 <-> S2 forever; S3 absorbs. From S0 absorption
        // has probability 1/2; from S1 and S2 it never happens.
        let matrix = DMatrix::from_row_slice(
            4,
            4,
            &[
                0.0, 0.5, 0.0, 0.5, //
                0.0, 0.0, 1.0, 0.0, //
                0.0, 1.0, 0.0, 0.0, //
                0.0, 0.0, 0.0, 1.0,
            ],
        );
        let absorption = MarkovChain::new(names(4), matrix)
            .unwrap()
            .absorption()
            .unwrap();
        assert!(!absorption.certain);
        assert_eq!(absorption.never_absorbed, ["S1", "S2"]);
        assert_eq!(absorption.not_certain, ["S0", "S1", "S2"]);
        assert_eq!(absorption.expected_steps["S0"], None);
        assert!((absorption.absorption_probabilities["S0"]["S3"] - 0.5).abs() < 1e-12);
        assert_eq!(absorption.absorption_probabilities["S1"]["S3"], 0.0);

        // No absorbing state at all.
        let cycle = DMatrix::from_row_slice(2, 2, &[0.0, 1.0, 1.0, 0.0]);
        let absorption = MarkovChain::new(names(2), cycle)
            .unwrap()
            .absorption()
            .unwrap();
        assert!(!absorption.certain);
        assert_eq!(absorption.never_absorbed, ["S0", "S1"]);
    }

    #[test]
    fn irreducible_transient_part_is_not_necessary() {
        // Lemma 2 as stated needs the transient part irreducible; here it is
        // not (S0 -> S1 only), yet absorption is certain.
        let matrix = DMatrix::from_row_slice(3, 3, &[0.0, 1.0, 0.0, 0.0, 0.5, 0.5, 0.0, 0.0, 1.0]);
        let absorption = MarkovChain::new(names(3), matrix)
            .unwrap()
            .absorption()
            .unwrap();
        assert!(absorption.certain);
        assert!((absorption.expected_steps["S0"].unwrap() - 3.0).abs() < 1e-12);
    }

    #[test]
    fn estimates_converge_on_simulated_histories() {
        // A known chain shaped like figure 2.
        let states: Vec<String> = ["Init", "Proc", "Valid", "Fail", "Done", "Abandon"]
            .iter()
            .map(|name| name.to_string())
            .collect();
        let truth = DMatrix::from_row_slice(
            6,
            6,
            &[
                0.0, 0.95, 0.0, 0.05, 0.0, 0.0, //
                0.0, 0.0, 0.7, 0.3, 0.0, 0.0, //
                0.0, 0.0, 0.0, 0.2, 0.8, 0.0, //
                0.0, 0.6, 0.0, 0.0, 0.0, 0.4, //
                0.0, 0.0, 0.0, 0.0, 1.0, 0.0, //
                0.0, 0.0, 0.0, 0.0, 0.0, 1.0,
            ],
        );
        let mut counts = TransitionCounts::new(&states, &states[4..]);
        let mut random = 0x1234_5678_u64;
        let mut draw = || {
            random = crate::action::splitmix64(random);
            (random >> 11) as f64 / (1_u64 << 53) as f64
        };
        for _ in 0..20_000 {
            let mut state = 0;
            while state < 4 {
                let unit = draw();
                let mut cumulative = 0.0;
                let mut next = 5;
                for column in 0..6 {
                    cumulative += truth[(state, column)];
                    if unit < cumulative {
                        next = column;
                        break;
                    }
                }
                counts.record(&states[state], &states[next]);
                state = next;
            }
        }
        let estimate = counts.estimate();
        assert!(estimate.unobserved_exits.is_empty());
        let observed = estimate.counts.as_ref().unwrap();
        for row in 0..4 {
            let visits: f64 = observed.row(row).sum();
            for column in 0..6 {
                let p = truth[(row, column)];
                let error = (estimate.probabilities[(row, column)] - p).abs();
                // Five standard errors of a binomial proportion.
                let tolerance = 5.0 * (p * (1.0 - p) / visits).sqrt() + 1e-12;
                assert!(
                    error <= tolerance,
                    "T[{row}][{column}]: error {error} > {tolerance}"
                );
            }
        }
        // The analysis of the estimate approaches that of the truth.
        let exact = MarkovChain::new(states.clone(), truth)
            .unwrap()
            .absorption()
            .unwrap();
        let estimated = estimate.absorption().unwrap();
        let exact_done = exact.absorption_probabilities["Init"]["Done"];
        let estimated_done = estimated.absorption_probabilities["Init"]["Done"];
        assert!(
            (exact_done - estimated_done).abs() < 0.02,
            "{exact_done} vs {estimated_done}"
        );
    }

    proptest::proptest! {
        /// On random chains with at least one absorbing state: N (I - Q) = I,
        /// rows of B sum to the absorption probability (1 where certain),
        /// and t = 1 + Q t.
        #[test]
        fn absorption_identities_hold_on_random_chains(
            size in 2_usize..7,
            weights in proptest::collection::vec(0_u8..4, 49),
            absorbing_count in 1_usize..3,
        ) {
            let absorbing_count = absorbing_count.min(size - 1);
            let mut matrix = DMatrix::zeros(size, size);
            for row in 0..size {
                if row >= size - absorbing_count {
                    matrix[(row, row)] = 1.0;
                    continue;
                }
                let raw: Vec<f64> = (0..size).map(|column| f64::from(weights[row * 7 + column])).collect();
                let total: f64 = raw.iter().sum();
                for column in 0..size {
                    matrix[(row, column)] = if total > 0.0 {
                        raw[column] / total
                    } else if column == (row + 1) % size {
                        1.0
                    } else {
                        0.0
                    };
                }
                if matrix[(row, row)] == 1.0 {
                    // Keep transient rows transient.
                    matrix[(row, row)] = 0.5;
                    matrix[(row, size - 1)] += 0.5;
                }
            }
            let chain = MarkovChain::new(names(size), matrix.clone()).unwrap();
            let absorption = chain.absorption().unwrap();
            let solvable = &absorption.fundamental_states;
            let index = |name: &String| chain.states.iter().position(|state| state == name).unwrap();
            for (row, from) in solvable.iter().enumerate() {
                for (column, to) in solvable.iter().enumerate() {
                    // (N (I - Q))_{row, column}
                    let mut value = 0.0;
                    for (middle, via) in solvable.iter().enumerate() {
                        let identity = if middle == column { 1.0 } else { 0.0 };
                        value += absorption.fundamental[row][middle]
                            * (identity - matrix[(index(via), index(to))]);
                    }
                    let expected = if row == column { 1.0 } else { 0.0 };
                    proptest::prop_assert!((value - expected).abs() < 1e-8, "{from}->{to}: {value}");
                }
            }
            for state in &absorption.transient {
                let total: f64 = absorption.absorption_probabilities[state].values().sum();
                if absorption.not_certain.contains(state) {
                    proptest::prop_assert!(total < 1.0 - 1e-12 || absorption.never_absorbed.contains(state));
                } else {
                    proptest::prop_assert!((total - 1.0).abs() < 1e-9, "{state}: {total}");
                    let steps = absorption.expected_steps[state].unwrap();
                    let mut recursion = 1.0;
                    for next in &absorption.transient {
                        if let Some(next_steps) = absorption.expected_steps[next] {
                            recursion += matrix[(index(state), index(next))] * next_steps;
                        }
                    }
                    proptest::prop_assert!((steps - recursion).abs() < 1e-8 * steps.max(1.0));
                }
            }
            proptest::prop_assert_eq!(absorption.certain, absorption.never_absorbed.is_empty());
        }
    }

    #[test]
    fn non_stochastic_matrix_is_rejected() {
        let matrix = DMatrix::from_row_slice(2, 2, &[0.5, 0.4, 0.0, 1.0]);
        assert!(matches!(
            MarkovChain::new(names(2), matrix),
            Err(ChainError::NotStochastic { .. })
        ));
    }
}
