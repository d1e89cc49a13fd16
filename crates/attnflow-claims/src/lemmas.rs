//! §3.3 Lemma 1 and §5.3 Lemma 2, decided in exact rational arithmetic.

use std::collections::VecDeque;

use attnflow_core::analysis::random::{stream, SplitMix};
use attnflow_workflow::markov::MarkovChain;
use nalgebra::DMatrix;
use num_rational::BigRational;
use num_traits::{One, Zero};

use crate::exact::{show, Exact};
use crate::{ClaimCheck, ClaimStatus, Engines};

fn integer(rng: &mut SplitMix, low: i64, high: i64) -> i64 {
    low + (rng.next_u64() % (high - low + 1) as u64) as i64
}

fn all_one(sums: &[BigRational]) -> bool {
    sums.iter().all(One::is_one)
}

/// The evidence on Lemma 1: `P⁻¹AP` keeps the row sums of a row-stochastic
/// `A` for any invertible `P`. Everything is exact: `A` has rational
/// entries, `P` integer ones.
#[derive(Clone, Debug)]
pub struct Lemma1Evidence {
    /// Row sums of `P⁻¹AP` for `A = [[1/2, 1/2], [1/5, 4/5]]`,
    /// `P = [[1, 2], [0, 1]]`.
    pub counterexample_sums: Vec<BigRational>,
    /// Random invertible `P` with `P·1 = c·1`, `c ≠ 0`, tried.
    pub conditioned_cases: usize,
    /// Of those, how many kept every row sum exactly 1.
    pub conditioned_kept: usize,
    /// Random invertible `P` without that property, tried.
    pub generic_cases: usize,
    /// Of those, how many broke some row sum.
    pub generic_broken: usize,
}

impl Lemma1Evidence {
    /// The rule, as printed.
    pub const RULE: &'static str = "false if some invertible P makes a row sum of P⁻¹AP differ from 1 in exact rational arithmetic, and the corrected statement is confirmed (every random P with P·1 = c·1 keeps every row sum exactly 1); inconclusive if the corrected statement fails; holds if no counterexample is found";

    /// Evaluates the fixed counterexample and `trials` random 4×4 cases
    /// with and without `P·1 = c·1`.
    pub fn gather(seed: u64, trials: usize) -> Self {
        let a = Exact::from_fractions(&[&[(1, 2), (1, 2)], &[(1, 5), (4, 5)]]);
        let p = Exact::from_integers(2, 2, &[1, 2, 0, 1]);
        let counterexample_sums = similar(&a, &p).map_or_else(Vec::new, |m| m.row_sums());

        let mut rng = stream(seed, "lemma-1");
        let n = 4;
        let mut evidence = Self {
            counterexample_sums,
            conditioned_cases: 0,
            conditioned_kept: 0,
            generic_cases: 0,
            generic_broken: 0,
        };
        for _ in 0..trials {
            let weights: Vec<i64> = (0..n * n).map(|_| integer(&mut rng, 1, 9)).collect();
            let a = Exact::normalised_rows(n, n, &weights);
            // P·1 = c·1: random integer rows whose last entry makes each
            // row sum to c.
            let c = integer(&mut rng, 1, 3);
            let mut conditioned = Vec::with_capacity(n * n);
            for _ in 0..n {
                let row: Vec<i64> = (0..n - 1).map(|_| integer(&mut rng, -4, 4)).collect();
                let last = c - row.iter().sum::<i64>();
                conditioned.extend(row);
                conditioned.push(last);
            }
            if let Some(result) = similar(&a, &Exact::from_integers(n, n, &conditioned)) {
                evidence.conditioned_cases += 1;
                evidence.conditioned_kept += usize::from(all_one(&result.row_sums()));
            }
            let generic: Vec<i64> = (0..n * n).map(|_| integer(&mut rng, -4, 4)).collect();
            let generic = Exact::from_integers(n, n, &generic);
            let sums = generic.row_sums();
            let proportional = sums.iter().all(|sum| *sum == sums[0]) && !sums[0].is_zero();
            if proportional {
                continue;
            }
            if let Some(result) = similar(&a, &generic) {
                evidence.generic_cases += 1;
                evidence.generic_broken += usize::from(!all_one(&result.row_sums()));
            }
        }
        evidence
    }

    /// The verdict by [`Self::RULE`].
    pub fn decide(&self) -> ClaimStatus {
        let refuted = !all_one(&self.counterexample_sums) || self.generic_broken > 0;
        let corrected =
            self.conditioned_cases > 0 && self.conditioned_kept == self.conditioned_cases;
        match (refuted, corrected) {
            (true, true) => ClaimStatus::False,
            (true, false) => ClaimStatus::Inconclusive,
            (false, _) => ClaimStatus::Holds,
        }
    }

    /// The check, with its decisive numbers.
    pub fn check(&self) -> ClaimCheck {
        let sums: Vec<String> = self.counterexample_sums.iter().map(show).collect();
        ClaimCheck {
            id: "lemma-1",
            section: "§3.3",
            statement: "for row-stochastic A and any invertible P, P⁻¹AP has rows summing to 1",
            rule: Self::RULE,
            status: self.decide(),
            finding: "holds exactly when the all-ones vector is an eigenvector of P: P·1 = c·1, c ≠ 0 (then AP·1 = c·1 and P⁻¹(c·1) = 1)".into(),
            evidence: format!(
                "A = [[1/2, 1/2], [1/5, 4/5]], P = [[1, 2], [0, 1]]: row sums of P⁻¹AP are exactly [{}]; \
                 {} of {} random 4×4 integer P with P·1 = c·1 kept every row sum exactly 1; \
                 {} of {} random P without it broke a row sum (exact rational arithmetic)",
                sums.join(", "),
                self.conditioned_kept,
                self.conditioned_cases,
                self.generic_broken,
                self.generic_cases,
            ),
        }
    }
}

/// `P⁻¹AP`, or `None` when `P` is singular.
fn similar(a: &Exact, p: &Exact) -> Option<Exact> {
    Some(p.inverse()?.multiply(a).multiply(p))
}

/// One chain examined for Lemma 2.
#[derive(Clone, Debug, PartialEq)]
pub struct ChainCase {
    /// Whether the transient part is irreducible (the paper's premise).
    pub irreducible: bool,
    /// Whether absorption is certain, exactly: `I − Q` is invertible in
    /// rational arithmetic (then `B = (I − Q)⁻¹R` has rows summing to 1).
    pub exact_certain: bool,
    /// Whether the shipped analysis reports absorption certain (its
    /// reachability condition).
    pub engine_certain: Option<bool>,
    /// Largest `|B_engine − B_exact|` where absorption is certain.
    pub absorption_error: Option<f64>,
    /// `B_exact` of the first transient state, for display.
    pub first_row: Vec<BigRational>,
}

impl ChainCase {
    /// Examines a chain given as integer weights per row (absorbing rows
    /// are those with all weight on the diagonal).
    pub fn examine(engines: &dyn Engines, size: usize, weights: &[i64]) -> Self {
        let chain = Exact::normalised_rows(size, size, weights);
        let absorbing: Vec<bool> = (0..size)
            .map(|state| chain.get(state, state).is_one())
            .collect();
        let transient: Vec<usize> = (0..size).filter(|&state| !absorbing[state]).collect();
        let targets: Vec<usize> = (0..size).filter(|&state| absorbing[state]).collect();
        let irreducible = strongly_connected(&chain, &transient);
        let q = chain.select(&transient, &transient);
        let fundamental = Exact::identity(transient.len()).subtract(&q).inverse();
        let exact_b = fundamental
            .as_ref()
            .map(|n| n.multiply(&chain.select(&transient, &targets)));

        let names: Vec<String> = (0..size).map(|state| format!("S{state}")).collect();
        let values = chain.to_f64();
        let engine = MarkovChain::new(names.clone(), DMatrix::from_row_slice(size, size, &values))
            .ok()
            .and_then(|chain| engines.absorption(&chain).ok());
        let absorption_error = match (&engine, &exact_b) {
            (Some(absorption), Some(exact)) => {
                let exact_values = exact.to_f64();
                let mut worst = 0.0f64;
                for (row, &state) in transient.iter().enumerate() {
                    for (column, &target) in targets.iter().enumerate() {
                        let reported = absorption
                            .absorption_probabilities
                            .get(&names[state])
                            .and_then(|row| row.get(&names[target]))
                            .copied()
                            .unwrap_or(f64::NAN);
                        let error = (reported - exact_values[row * targets.len() + column]).abs();
                        worst = if error.is_nan() {
                            f64::INFINITY
                        } else {
                            worst.max(error)
                        };
                    }
                }
                Some(worst)
            }
            _ => None,
        };
        Self {
            irreducible,
            exact_certain: fundamental.is_some(),
            engine_certain: engine.as_ref().map(|absorption| absorption.certain),
            absorption_error,
            first_row: exact_b
                .map(|b| (0..b.columns()).map(|column| b.get(0, column)).collect())
                .unwrap_or_default(),
        }
    }

    /// Whether the engine agrees with exact arithmetic on this chain.
    pub fn engine_agrees(&self) -> bool {
        self.engine_certain == Some(self.exact_certain)
            && self.absorption_error.is_none_or(|error| error < 1e-9)
    }
}

/// Whether every state of `states` reaches every other along positive
/// entries without leaving `states`.
fn strongly_connected(chain: &Exact, states: &[usize]) -> bool {
    states.iter().all(|&start| {
        let mut seen = vec![false; chain.rows()];
        seen[start] = true;
        let mut queue = VecDeque::from([start]);
        while let Some(state) = queue.pop_front() {
            for &next in states {
                if !seen[next] && !chain.get(state, next).is_zero() {
                    seen[next] = true;
                    queue.push_back(next);
                }
            }
        }
        states.iter().all(|&state| seen[state])
    })
}

/// The evidence on Lemma 2: irreducibility of the transient part implies
/// absorption with probability 1.
#[derive(Clone, Debug)]
pub struct Lemma2Evidence {
    /// Two working states handing over to each other, with a "done" state
    /// nobody reaches.
    pub irreducible_loop: ChainCase,
    /// `0 → 1 → done` with retries: not irreducible, always finishes.
    pub pipeline: ChainCase,
    /// Random chains.
    pub random: Vec<ChainCase>,
}

impl Lemma2Evidence {
    /// The rule, as printed.
    pub const RULE: &'static str = "holds under condition if some chain with an irreducible transient part is not absorbed with certainty (I − Q singular in exact rational arithmetic) and the shipped analysis's reachability condition agrees with exact arithmetic on every chain (same certainty, |B − B_exact| < 1e-9); inconclusive if it disagrees anywhere; holds if no such chain is found";

    /// Examines the two named chains and `trials` random ones through the
    /// shipped (or given) absorption analysis.
    pub fn gather(engines: &dyn Engines, seed: u64, trials: usize) -> Self {
        let irreducible_loop = ChainCase::examine(engines, 3, &[0, 1, 0, 1, 0, 0, 0, 0, 1]);
        let pipeline = ChainCase::examine(engines, 3, &[3, 7, 0, 0, 4, 6, 0, 0, 1]);
        let mut rng = stream(seed, "lemma-2");
        let random = (0..trials)
            .map(|_| {
                let size = integer(&mut rng, 2, 6) as usize;
                let absorbing = (integer(&mut rng, 0, 2) as usize).min(size - 1);
                let mut weights = vec![0i64; size * size];
                for row in 0..size {
                    if row >= size - absorbing {
                        weights[row * size + row] = 1;
                        continue;
                    }
                    for column in 0..size {
                        // Sparse rows, so closed transient classes occur.
                        weights[row * size + column] = (integer(&mut rng, -3, 3)).max(0);
                    }
                    let sum: i64 = weights[row * size..(row + 1) * size].iter().sum();
                    if sum == 0 || weights[row * size + row] == sum {
                        weights[row * size + (row + 1) % size] += 1;
                    }
                }
                ChainCase::examine(engines, size, &weights)
            })
            .collect();
        Self {
            irreducible_loop,
            pipeline,
            random,
        }
    }

    fn cases(&self) -> impl Iterator<Item = &ChainCase> {
        [&self.irreducible_loop, &self.pipeline]
            .into_iter()
            .chain(&self.random)
    }

    /// The verdict by [`Self::RULE`].
    pub fn decide(&self) -> ClaimStatus {
        if !self.cases().all(ChainCase::engine_agrees) {
            ClaimStatus::Inconclusive
        } else if self
            .cases()
            .any(|case| case.irreducible && !case.exact_certain)
        {
            ClaimStatus::HoldsUnderCondition
        } else {
            ClaimStatus::Holds
        }
    }

    /// The check, with its decisive numbers.
    pub fn check(&self) -> ClaimCheck {
        let agree = self
            .random
            .iter()
            .filter(|case| case.engine_agrees())
            .count();
        let insufficient = self
            .cases()
            .filter(|case| case.irreducible && !case.exact_certain)
            .count();
        let unnecessary = self
            .cases()
            .filter(|case| !case.irreducible && case.exact_certain)
            .count();
        let worst = self
            .cases()
            .filter_map(|case| case.absorption_error)
            .fold(0.0f64, f64::max);
        let engine = |case: &ChainCase| match case.engine_certain {
            Some(true) => "certain",
            Some(false) => "not certain",
            None => "failed",
        };
        let first_row: Vec<String> = self.pipeline.first_row.iter().map(show).collect();
        ClaimCheck {
            id: "lemma-2",
            section: "§5.3",
            statement: "if T is irreducible on the non-absorbing states, the chain is absorbed with probability 1",
            rule: Self::RULE,
            status: self.decide(),
            finding: "a finite chain is absorbed with probability 1 exactly when an absorbing state is reachable from every non-absorbing state (then I − Q is invertible); irreducibility is neither necessary nor sufficient".into(),
            evidence: format!(
                "irreducible loop S0 ⇄ S1 with S2 absorbing but unreachable: I − Q is {} (exact), shipped analysis says {}; \
                 pipeline 0→1→done with retries (not irreducible): I − Q is {}, exact B from state 0 = [{}], shipped analysis says {}; \
                 {} random chains: shipped analysis agrees with exact arithmetic on {agree}; \
                 irreducible but not certainly absorbed: {insufficient}; certainly absorbed but not irreducible: {unnecessary}; largest |B − B_exact| = {worst:.1e}",
                if self.irreducible_loop.exact_certain { "invertible" } else { "singular" },
                engine(&self.irreducible_loop),
                if self.pipeline.exact_certain { "invertible" } else { "singular" },
                first_row.join(", "),
                engine(&self.pipeline),
                self.random.len(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exact::ratio;
    use crate::Shipped;
    use attnflow_workflow::markov::{Absorption, ChainError};

    #[test]
    fn lemma_1_is_false_with_an_exact_counterexample() {
        let evidence = Lemma1Evidence::gather(0, 50);
        // P⁻¹ = [[1, −2], [0, 1]], AP = [[1/2, 3/2], [1/5, 6/5]],
        // P⁻¹AP = [[1/10, −9/10], [1/5, 6/5]] with row sums −4/5 and 7/5.
        assert_eq!(
            evidence.counterexample_sums,
            vec![ratio(-4, 5), ratio(7, 5)]
        );
        assert_eq!(evidence.conditioned_kept, evidence.conditioned_cases);
        assert!(evidence.conditioned_cases > 40);
        assert!(evidence.generic_broken > 0);
        assert_eq!(evidence.decide(), ClaimStatus::False);
        assert!(evidence.check().evidence.contains("[-4/5, 7/5]"));
    }

    #[test]
    fn lemma_1_rule_goes_either_way() {
        let mut evidence = Lemma1Evidence::gather(1, 10);
        // A "counterexample" that keeps the row sums refutes nothing.
        evidence.counterexample_sums = vec![ratio(1, 1), ratio(1, 1)];
        evidence.generic_broken = 0;
        assert_eq!(evidence.decide(), ClaimStatus::Holds);
        // A corrected statement contradicted by one case settles nothing.
        let mut evidence = Lemma1Evidence::gather(1, 10);
        evidence.conditioned_kept -= 1;
        assert_eq!(evidence.decide(), ClaimStatus::Inconclusive);
    }

    #[test]
    fn lemma_2_holds_under_the_reachability_condition() {
        let evidence = Lemma2Evidence::gather(&Shipped, 0, 200);
        assert!(evidence.irreducible_loop.irreducible);
        assert!(!evidence.irreducible_loop.exact_certain);
        assert_eq!(evidence.irreducible_loop.engine_certain, Some(false));
        assert!(!evidence.pipeline.irreducible && evidence.pipeline.exact_certain);
        assert_eq!(evidence.pipeline.first_row, vec![ratio(1, 1)]);
        // The random chains include both kinds of uncertain absorption.
        assert!(evidence.random.iter().any(|case| !case.exact_certain));
        assert!(evidence.random.iter().any(|case| case.exact_certain));
        assert_eq!(evidence.decide(), ClaimStatus::HoldsUnderCondition);
    }

    /// An absorption analysis that ignores reachability: it calls every
    /// chain certainly absorbed.
    struct IgnoresReachability;

    impl Engines for IgnoresReachability {
        fn absorption(&self, chain: &MarkovChain) -> Result<Absorption, ChainError> {
            let mut absorption = chain.absorption()?;
            absorption.certain = true;
            absorption.never_absorbed.clear();
            Ok(absorption)
        }
    }

    /// An analysis whose absorption probabilities are off by a little.
    struct Skewed;

    impl Engines for Skewed {
        fn absorption(&self, chain: &MarkovChain) -> Result<Absorption, ChainError> {
            let mut absorption = chain.absorption()?;
            for row in absorption.absorption_probabilities.values_mut() {
                for value in row.values_mut() {
                    *value *= 1.0 + 1e-6;
                }
            }
            Ok(absorption)
        }
    }

    #[test]
    fn lemma_2_flips_on_a_faulty_absorption_analysis() {
        for engines in [&IgnoresReachability as &dyn Engines, &Skewed] {
            let evidence = Lemma2Evidence::gather(engines, 0, 50);
            assert_eq!(evidence.decide(), ClaimStatus::Inconclusive);
        }
    }

    #[test]
    fn lemma_2_holds_when_no_irreducible_chain_fails() {
        let mut evidence = Lemma2Evidence::gather(&Shipped, 0, 0);
        evidence.irreducible_loop = evidence.pipeline.clone();
        assert_eq!(evidence.decide(), ClaimStatus::Holds);
    }
}
