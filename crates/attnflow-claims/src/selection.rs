//! §6.2: the literal selection problem, and the forms attnflow-data solves.

use attnflow_core::analysis::random::{stream, SplitMix};
use attnflow_data::select::Item;

use crate::{ClaimCheck, ClaimStatus, Engines};

const ITEMS: usize = 12;
const INSTANCES: usize = 20;

fn integer(rng: &mut SplitMix, low: u64, high: u64) -> u64 {
    low + rng.next_u64() % (high - low + 1)
}

/// The evidence on §6.2. Weights, costs and values are integers, so every
/// sum below is exact and "optimal" means optimal, not optimal to a
/// rounding.
#[derive(Clone, Debug, PartialEq)]
pub struct SelectionEvidence {
    /// Random instances.
    pub instances: usize,
    /// Items per instance.
    pub items: usize,
    /// Instances where the literal form's optimum (every subset
    /// enumerated) selects nothing.
    pub literal_empty: usize,
    /// Instances where the shipped budget solver found the enumerated
    /// optimum and said it was exact.
    pub budget_matches: usize,
    /// Instances where the shipped cover solver found the enumerated
    /// optimum and said it was exact.
    pub cover_matches: usize,
}

impl SelectionEvidence {
    /// The rule, as printed.
    pub const RULE: &'static str = "false if in every random instance the exact optimum of min Σ c_i x_i s.t. Σ w_i x_i ≤ W (all subsets enumerated, integer data) selects nothing, and the shipped solver's budget and cover forms match enumeration on every instance; inconclusive if the solver does not; holds if the literal optimum selects something somewhere";

    /// Enumerates every subset of `INSTANCES` random instances and solves
    /// the same instances with the shipped solver.
    pub fn gather(engines: &dyn Engines, seed: u64) -> Self {
        let mut rng = stream(seed, "selection");
        let mut evidence = Self {
            instances: INSTANCES,
            items: ITEMS,
            literal_empty: 0,
            budget_matches: 0,
            cover_matches: 0,
        };
        for _ in 0..INSTANCES {
            let costs: Vec<u64> = (0..ITEMS).map(|_| integer(&mut rng, 1, 20)).collect();
            let weights: Vec<u64> = (0..ITEMS).map(|_| integer(&mut rng, 1, 20)).collect();
            let values: Vec<u64> = (0..ITEMS).map(|_| integer(&mut rng, 1, 20)).collect();
            let budget = weights.iter().sum::<u64>() / 2;
            let required = values.iter().sum::<u64>() / 2;
            let total = |subset: u32, numbers: &[u64]| -> u64 {
                (0..ITEMS)
                    .filter(|&i| subset & (1 << i) != 0)
                    .map(|i| numbers[i])
                    .sum()
            };
            let mut literal = (u64::MAX, 0u32);
            let mut best_value = 0u64;
            let mut least_cost = u64::MAX;
            for subset in 0u32..(1 << ITEMS) {
                let weight = total(subset, &weights);
                if weight <= budget {
                    let cost = total(subset, &costs);
                    if cost < literal.0 {
                        literal = (cost, subset);
                    }
                    best_value = best_value.max(total(subset, &values));
                }
                if total(subset, &values) >= required {
                    least_cost = least_cost.min(total(subset, &costs));
                }
            }
            evidence.literal_empty += usize::from(literal.1 == 0);

            let items = |sizes: &[u64], gains: &[u64]| -> Vec<Item> {
                (0..ITEMS)
                    .map(|i| Item {
                        id: i.to_string(),
                        weight: sizes[i] as f64,
                        value: gains[i] as f64,
                    })
                    .collect()
            };
            if let Ok(selection) =
                engines.select_within_budget(&items(&weights, &values), budget as f64)
            {
                let chosen_weight: f64 = selection.chosen.iter().map(|&i| weights[i] as f64).sum();
                let chosen_value: f64 = selection.chosen.iter().map(|&i| values[i] as f64).sum();
                evidence.budget_matches += usize::from(
                    selection.exact
                        && chosen_weight <= budget as f64
                        && chosen_value == best_value as f64,
                );
            }
            if let Ok(selection) = engines.select_cover(&items(&costs, &values), required as f64) {
                let chosen_cost: f64 = selection.chosen.iter().map(|&i| costs[i] as f64).sum();
                let covered: f64 = selection.chosen.iter().map(|&i| values[i] as f64).sum();
                evidence.cover_matches += usize::from(
                    selection.exact
                        && covered >= required as f64
                        && chosen_cost == least_cost as f64,
                );
            }
        }
        evidence
    }

    /// The verdict by [`Self::RULE`].
    pub fn decide(&self) -> ClaimStatus {
        let solver = self.budget_matches == self.instances && self.cover_matches == self.instances;
        match (self.literal_empty == self.instances, solver) {
            (true, true) => ClaimStatus::False,
            (true, false) => ClaimStatus::Inconclusive,
            (false, _) => ClaimStatus::Holds,
        }
    }

    /// The check, with its decisive numbers.
    pub fn check(&self) -> ClaimCheck {
        ClaimCheck {
            id: "selection",
            section: "§6.2",
            statement: "min Σ c_i x_i subject to Σ w_i x_i ≤ W, x ∈ {0,1}ⁿ",
            rule: Self::RULE,
            status: self.decide(),
            finding: "as written, with costs c_i ≥ 0, selecting nothing (x = 0, cost 0) is always optimal; the meaningful forms are maximise value within the budget, or cover a required amount at least cost, which attnflow solves".into(),
            evidence: format!(
                "{} random instances of {} items with integer data, every one of {} subsets enumerated: the literal optimum selects nothing in {} of {}; \
                 the shipped solver matched the enumerated optimum in {} of {} (budget form) and {} of {} (cover form)",
                self.instances,
                self.items,
                1u32 << self.items,
                self.literal_empty,
                self.instances,
                self.budget_matches,
                self.instances,
                self.cover_matches,
                self.instances
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Shipped;
    use attnflow_data::select::{select_within_budget, MethodChoice, SelectOptions, Selection};
    use attnflow_data::DataResult;

    /// A budget solver that answers greedily but claims to be exact.
    struct GreedyClaimsExact;

    impl Engines for GreedyClaimsExact {
        fn select_within_budget(&self, items: &[Item], budget: f64) -> DataResult<Selection> {
            let options = SelectOptions {
                method: MethodChoice::Greedy,
                ..SelectOptions::default()
            };
            let mut selection = select_within_budget(items, budget, &options)?;
            selection.exact = true;
            Ok(selection)
        }
    }

    #[test]
    fn the_literal_form_selects_nothing_and_the_solver_matches_enumeration() {
        let evidence = SelectionEvidence::gather(&Shipped, 0);
        assert_eq!(evidence.literal_empty, INSTANCES);
        assert_eq!(evidence.budget_matches, INSTANCES);
        assert_eq!(evidence.cover_matches, INSTANCES);
        assert_eq!(evidence.decide(), ClaimStatus::False);
        assert!(evidence
            .check()
            .evidence
            .contains("selects nothing in 20 of 20"));
    }

    #[test]
    fn a_solver_that_misses_the_optimum_leaves_the_verdict_open() {
        let evidence = SelectionEvidence::gather(&GreedyClaimsExact, 0);
        assert!(evidence.budget_matches < INSTANCES, "{evidence:?}");
        assert_eq!(evidence.decide(), ClaimStatus::Inconclusive);
        let mut evidence = SelectionEvidence::gather(&Shipped, 0);
        evidence.literal_empty -= 1;
        assert_eq!(evidence.decide(), ClaimStatus::Holds);
    }
}
