//! §4.2 heatmap, §8.1 blend, §8.2 product and rollout, §7.2 Theorem 1:
//! checked on attnflow-core's engines.

use attnflow_core::analysis::random::{stream, SplitMix};
use attnflow_core::analysis::{AttentionMap, AttentionStack, RolloutOptions};
use candle_core::{Device, Tensor};

use crate::{ClaimCheck, ClaimStatus, Engines};

/// The tolerance the blend and product rules hold row sums to.
pub const ROW_SUM_RULE: f64 = 1e-9;

fn random_stochastic(rng: &mut SplitMix, n: usize) -> AttentionMap {
    let rows: Vec<Vec<f64>> = (0..n)
        .map(|_| {
            let raw: Vec<f64> = (0..n).map(|_| rng.uniform()).collect();
            let sum: f64 = raw.iter().sum();
            raw.iter().map(|value| value / sum).collect()
        })
        .collect();
    AttentionMap::from_rows(&rows).expect("equal row lengths")
}

/// The evidence on §4.2: `h_ij = a_ij / max a` where `a_ij > 0`, else 0.
#[derive(Clone, Debug, PartialEq)]
pub struct HeatmapEvidence {
    /// Random maps tried.
    pub trials: usize,
    /// Largest deviation of the engine's heatmap from the definition.
    pub worst_deviation: f64,
    /// Maps whose heatmap lies in [0, 1] with a 1 at the maximum.
    pub normalised: usize,
    /// Whether the map with no positive entry came out all zeros, with no
    /// cell at 1 (the normalisation promise fails there).
    pub no_positive_all_zero: bool,
    /// Whether a NaN entry was rejected.
    pub nan_rejected: bool,
    /// Engine errors on valid input.
    pub errors: usize,
}

impl HeatmapEvidence {
    /// The rule, as printed.
    pub const RULE: &'static str = "holds under condition if the shipped heatmap equals a / max a (0 where a ≤ 0) within 1e-12 on every random map, every such map lands in [0, 1] with a 1 at its maximum, and a map with no positive entry gets no 1 (the condition: some a > 0); inconclusive if the engine departs from the definition";

    /// Runs the engine on `trials` random 6×6 maps and the edge cases.
    pub fn gather(engines: &dyn Engines, seed: u64, trials: usize) -> Self {
        let mut rng = stream(seed, "heatmap");
        let mut evidence = Self {
            trials,
            worst_deviation: 0.0,
            normalised: 0,
            no_positive_all_zero: false,
            nan_rejected: false,
            errors: 0,
        };
        for _ in 0..trials {
            let values = rng.normals(36, 1.0);
            let map = AttentionMap::new(6, 6, values.clone()).expect("6 × 6");
            let Ok(result) = engines.heatmap(&map) else {
                evidence.errors += 1;
                continue;
            };
            let maximum = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            for (value, original) in result.values().iter().zip(&values) {
                let defined = if *original > 0.0 {
                    original / maximum
                } else {
                    0.0
                };
                let deviation = (value - defined).abs();
                evidence.worst_deviation = if deviation.is_nan() {
                    f64::INFINITY
                } else {
                    evidence.worst_deviation.max(deviation)
                };
            }
            let in_range = result.values().iter().all(|v| (0.0..=1.0).contains(v));
            if in_range && result.values().contains(&1.0) {
                evidence.normalised += 1;
            }
        }
        let negative = AttentionMap::new(3, 3, vec![-0.5; 9]).expect("3 × 3");
        match engines.heatmap(&negative) {
            Ok(result) => {
                evidence.no_positive_all_zero = result.values().iter().all(|&v| v == 0.0);
            }
            Err(_) => evidence.errors += 1,
        }
        let nan = AttentionMap::new(1, 2, vec![0.5, f64::NAN]).expect("1 × 2");
        evidence.nan_rejected = engines.heatmap(&nan).is_err();
        evidence
    }

    /// The verdict by [`Self::RULE`].
    pub fn decide(&self) -> ClaimStatus {
        if self.errors > 0 || self.worst_deviation > 1e-12 || self.normalised < self.trials {
            ClaimStatus::Inconclusive
        } else if self.no_positive_all_zero {
            ClaimStatus::HoldsUnderCondition
        } else {
            ClaimStatus::Holds
        }
    }

    /// The check, with its decisive numbers.
    pub fn check(&self) -> ClaimCheck {
        ClaimCheck {
            id: "heatmap",
            section: "§4.2",
            statement: "h_ij = a_ij / max a where a_ij > 0, else 0",
            rule: Self::RULE,
            status: self.decide(),
            finding: "normalises to [0, 1] with the maximum at 1 when some a > 0 (always for softmax output); with no positive entry every h is 0 and nothing reaches 1; attnflow rejects NaN and +∞".into(),
            evidence: format!(
                "{} random 6×6 maps: largest deviation from the definition {:.1e}, {} in [0, 1] with a 1 at the maximum; \
                 all −0.5 map gives all zeros: {}; NaN rejected: {}; engine errors: {}",
                self.trials,
                self.worst_deviation,
                self.normalised,
                self.no_positive_all_zero,
                self.nan_rejected,
                self.errors
            ),
        }
    }
}

/// The evidence on §8.1: a blend of row-stochastic maps with α in [0, 1].
#[derive(Clone, Debug, PartialEq)]
pub struct BlendEvidence {
    /// Random blends tried.
    pub trials: usize,
    /// Largest `|Σ_j a_ij − 1|` over every blend.
    pub worst_row_sum_error: f64,
    /// The smallest weight in any blend.
    pub smallest_weight: f64,
    /// Largest deviation from `α·A_v + (1 − α)·A_l` computed here.
    pub worst_deviation: f64,
    /// Whether the engine rejected α = 1.5.
    pub outside_rejected: bool,
    /// Engine errors on valid input.
    pub errors: usize,
}

impl BlendEvidence {
    /// The rule, as printed.
    pub const RULE: &'static str = "holds if the worst row-sum error of the shipped blend over N random 7×7 cases with α in [0, 1] is below 1e-9 and no weight is negative; false otherwise";

    /// Runs the engine on `trials` random blends.
    pub fn gather(engines: &dyn Engines, seed: u64, trials: usize) -> Self {
        let mut rng = stream(seed, "blend");
        let mut evidence = Self {
            trials,
            worst_row_sum_error: 0.0,
            smallest_weight: f64::INFINITY,
            worst_deviation: 0.0,
            outside_rejected: false,
            errors: 0,
        };
        for _ in 0..trials {
            let vision = random_stochastic(&mut rng, 7);
            let language = random_stochastic(&mut rng, 7);
            let alpha = rng.uniform();
            let Ok(blended) = engines.blend(&vision, &language, alpha) else {
                evidence.errors += 1;
                continue;
            };
            evidence.worst_row_sum_error =
                nan_is_worst(evidence.worst_row_sum_error, blended.max_row_sum_error());
            for ((value, v), l) in blended
                .values()
                .iter()
                .zip(vision.values())
                .zip(language.values())
            {
                evidence.smallest_weight = evidence.smallest_weight.min(*value);
                let deviation = (value - (alpha * v + (1.0 - alpha) * l)).abs();
                evidence.worst_deviation = nan_is_worst(evidence.worst_deviation, deviation);
            }
        }
        let one_hot = AttentionMap::new(1, 2, vec![0.0, 1.0]).expect("1 × 2");
        let other = AttentionMap::new(1, 2, vec![1.0, 0.0]).expect("1 × 2");
        evidence.outside_rejected = engines.blend(&one_hot, &other, 1.5).is_err();
        evidence
    }

    /// The verdict by [`Self::RULE`].
    pub fn decide(&self) -> ClaimStatus {
        if self.errors == 0
            && self.worst_row_sum_error < ROW_SUM_RULE
            && self.smallest_weight >= 0.0
        {
            ClaimStatus::Holds
        } else {
            ClaimStatus::False
        }
    }

    /// The check, with its decisive numbers.
    pub fn check(&self) -> ClaimCheck {
        ClaimCheck {
            id: "blend",
            section: "§8.1",
            statement: "A = α A_v + (1 − α) A_l with α in [0, 1]",
            rule: Self::RULE,
            status: self.decide(),
            finding: "row-stochastic inputs and α in [0, 1] give a row-stochastic blend (a convex combination per row); α = 1.5 on rows [0, 1] and [1, 0] would give [−0.5, 1.5], so attnflow rejects α outside [0, 1]".into(),
            evidence: format!(
                "{} random 7×7 blends by the shipped engine: worst row-sum error {:.1e} (rule: < {ROW_SUM_RULE:.0e}), smallest weight {:.2e}, \
                 largest deviation from α·A_v + (1 − α)·A_l {:.1e}; α = 1.5 rejected: {}; engine errors: {}",
                self.trials,
                self.worst_row_sum_error,
                self.smallest_weight,
                self.worst_deviation,
                self.outside_rejected,
                self.errors
            ),
        }
    }
}

fn nan_is_worst(worst: f64, value: f64) -> f64 {
    if value.is_nan() {
        f64::INFINITY
    } else {
        worst.max(value)
    }
}

/// The evidence on §8.2: products of row-stochastic maps, and rollout.
#[derive(Clone, Debug, PartialEq)]
pub struct ProductEvidence {
    /// Random products of 12 maps tried.
    pub products: usize,
    /// Worst row-sum error of a product.
    pub worst_product_error: f64,
    /// Random rollouts (4 layers × 2 heads) tried.
    pub rollouts: usize,
    /// Worst row-sum error of a rollout.
    pub worst_rollout_error: f64,
    /// Engine errors on valid input.
    pub errors: usize,
}

impl ProductEvidence {
    /// The rule, as printed.
    pub const RULE: &'static str = "holds if the worst row-sum error of the shipped layer product over N random products of 12 row-stochastic 8×8 maps, and of the shipped rollout over N random 4-layer stacks, is below 1e-9; false otherwise";

    /// Runs the engines on random products and stacks.
    pub fn gather(engines: &dyn Engines, seed: u64, trials: usize) -> Self {
        let mut rng = stream(seed, "product");
        let count = trials / 4 + 1;
        let mut evidence = Self {
            products: count,
            worst_product_error: 0.0,
            rollouts: count,
            worst_rollout_error: 0.0,
            errors: 0,
        };
        for _ in 0..count {
            let layers: Vec<AttentionMap> =
                (0..12).map(|_| random_stochastic(&mut rng, 8)).collect();
            match engines.layer_product(&layers) {
                Ok(product) => {
                    evidence.worst_product_error =
                        nan_is_worst(evidence.worst_product_error, product.max_row_sum_error());
                }
                Err(_) => evidence.errors += 1,
            }
            let stack: Vec<Vec<AttentionMap>> = (0..4)
                .map(|_| (0..2).map(|_| random_stochastic(&mut rng, 8)).collect())
                .collect();
            let rolled = AttentionStack::new(stack)
                .and_then(|stack| engines.rollout(&stack, &RolloutOptions::default()));
            match rolled {
                Ok(rolled) => {
                    evidence.worst_rollout_error =
                        nan_is_worst(evidence.worst_rollout_error, rolled.max_row_sum_error());
                }
                Err(_) => evidence.errors += 1,
            }
        }
        evidence
    }

    /// The verdict by [`Self::RULE`].
    pub fn decide(&self) -> ClaimStatus {
        if self.errors == 0
            && self.worst_product_error < ROW_SUM_RULE
            && self.worst_rollout_error < ROW_SUM_RULE
        {
            ClaimStatus::Holds
        } else {
            ClaimStatus::False
        }
    }

    /// The check, with its decisive numbers.
    pub fn check(&self) -> ClaimCheck {
        ClaimCheck {
            id: "product",
            section: "§8.2",
            statement: "A_total = Π A_i over the hierarchy levels",
            rule: Self::RULE,
            status: self.decide(),
            finding: "a product of row-stochastic matrices is row-stochastic (P·1 = 1 for each factor), in either order; attnflow multiplies in the order information flows, A_L ⋯ A_1, and rollout's 0.5·A + 0.5·I layers keep it".into(),
            evidence: format!(
                "{} random products of 12 row-stochastic 8×8 maps: worst row-sum error {:.1e}; {} random rollouts of 4 layers × 2 heads: worst row-sum error {:.1e} (rule: < {ROW_SUM_RULE:.0e}); engine errors: {}",
                self.products,
                self.worst_product_error,
                self.rollouts,
                self.worst_rollout_error,
                self.errors
            ),
        }
    }
}

/// The evidence on §7.2 Theorem 1: `A* = argmin (L + λR)` "by convex
/// optimisation".
#[derive(Clone, Debug, PartialEq)]
pub struct Theorem1Evidence {
    /// The largest violation of midpoint convexity found on the grid:
    /// `(a, b, f((a+b)/2) − (f(a)+f(b))/2)`.
    pub violation: Option<(f64, f64, f64)>,
    /// Grid points where the engine failed.
    pub errors: usize,
}

impl Theorem1Evidence {
    /// The rule, as printed.
    pub const RULE: &'static str = "definition, not a theorem, if the loss of one attention weight computed by the shipped attention engine violates midpoint convexity by more than 1e-9 somewhere on a grid of θ in [−4, 4] (the proof's premise fails); holds if no violation is found";

    /// The loss `(attention([θ], [[1], [−1]], [[1], [−1]]) − 0.9)²` on a
    /// grid: one query, two keys, scale 1; the output is
    /// `softmax([θ, −θ])·[1, −1]`.
    pub fn gather(engines: &dyn Engines) -> Self {
        let device = Device::Cpu;
        let grid: Vec<f64> = (0..=80).map(|i| -4.0 + 0.1 * f64::from(i)).collect();
        let mut errors = 0;
        let losses: Vec<Option<f64>> = grid
            .iter()
            .map(|&theta| {
                let loss = (|| {
                    let q = Tensor::from_vec(vec![theta], (1, 1), &device)?;
                    let keys = Tensor::from_vec(vec![1.0f64, -1.0], (2, 1), &device)?;
                    let output = engines.attention(&q, &keys, &keys)?;
                    let value = output.flatten_all()?.to_vec1::<f64>()?;
                    Ok::<_, candle_core::Error>(
                        (value.first().copied().unwrap_or(f64::NAN) - 0.9).powi(2),
                    )
                })();
                loss.ok().filter(|value| value.is_finite())
            })
            .collect();
        let mut violation: Option<(f64, f64, f64)> = None;
        for (i, a) in grid.iter().enumerate() {
            for (j, b) in grid.iter().enumerate().skip(i + 2).step_by(2) {
                let middle = (i + j) / 2;
                let (Some(fa), Some(fb), Some(fm)) = (losses[i], losses[j], losses[middle]) else {
                    errors += 1;
                    continue;
                };
                let gap = fm - 0.5 * (fa + fb);
                if gap > violation.map_or(1e-9, |(_, _, best)| best) {
                    violation = Some((*a, *b, gap));
                }
            }
        }
        Self { violation, errors }
    }

    /// The verdict by [`Self::RULE`].
    pub fn decide(&self) -> ClaimStatus {
        match (self.errors, self.violation) {
            (0, Some(_)) => ClaimStatus::Definition,
            (0, None) => ClaimStatus::Holds,
            _ => ClaimStatus::Inconclusive,
        }
    }

    /// The check, with its decisive numbers.
    pub fn check(&self) -> ClaimCheck {
        let evidence = match self.violation {
            Some((a, b, gap)) => format!(
                "loss (attention(θ)·[1, −1] − 0.9)² of one attention weight θ through the shipped attention engine: f(({a:.1} + {b:.1})/2) exceeds the chord by {gap:.4}, so it is not convex"
            ),
            None => format!(
                "no violation of midpoint convexity found on the grid ({} engine errors)",
                self.errors
            ),
        };
        ClaimCheck {
            id: "theorem-1",
            section: "§7.2",
            statement: "the optimal attention weights satisfy A* = argmin_A {L + λR}, by convex optimisation",
            rule: Self::RULE,
            status: self.decide(),
            finding: "the statement restates the definition of argmin; neural-network objectives are not convex, so no optimality (or uniqueness) follows; attnflow makes no such claim".into(),
            evidence,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Shipped;
    use attnflow_core::analysis::{AnalysisResult, HeadFusion};

    /// A blend that drops the language term.
    struct DropsTerm;

    impl Engines for DropsTerm {
        fn blend(
            &self,
            vision: &AttentionMap,
            _language: &AttentionMap,
            alpha: f64,
        ) -> AnalysisResult<AttentionMap> {
            let values = vision.values().iter().map(|v| alpha * v).collect();
            AttentionMap::new(vision.rows(), vision.columns(), values)
        }
    }

    #[test]
    fn blend_holds_on_the_shipped_engine_and_fails_on_a_faulty_one() {
        let shipped = BlendEvidence::gather(&Shipped, 0, 100);
        assert!(shipped.worst_row_sum_error < 1e-12);
        assert!(shipped.outside_rejected);
        assert_eq!(shipped.decide(), ClaimStatus::Holds);
        let faulty = BlendEvidence::gather(&DropsTerm, 0, 100);
        assert!(faulty.worst_row_sum_error > 0.1, "{faulty:?}");
        assert_eq!(faulty.decide(), ClaimStatus::False);
        assert!(faulty.check().evidence.contains("α = 1.5 rejected: false"));
    }

    /// A product that forgets to renormalise nothing but adds the maps.
    struct AddsLayers;

    impl Engines for AddsLayers {
        fn layer_product(&self, layers: &[AttentionMap]) -> AnalysisResult<AttentionMap> {
            let mut values = vec![0.0; layers[0].values().len()];
            for layer in layers {
                for (total, value) in values.iter_mut().zip(layer.values()) {
                    *total += value;
                }
            }
            AttentionMap::new(layers[0].rows(), layers[0].columns(), values)
        }
    }

    /// A rollout that skips the renormalisation after adding the identity.
    struct UnnormalisedRollout;

    impl Engines for UnnormalisedRollout {
        fn rollout(
            &self,
            stack: &AttentionStack,
            _options: &RolloutOptions,
        ) -> AnalysisResult<AttentionMap> {
            let mut result = AttentionMap::identity(stack.num_tokens());
            for layer in stack.layers() {
                let fused = attnflow_core::analysis::fuse_heads(layer, HeadFusion::Max)?;
                result = fused.matmul(&result)?;
            }
            Ok(result)
        }
    }

    #[test]
    fn product_rule_fails_on_a_faulty_product_or_rollout() {
        assert_eq!(
            ProductEvidence::gather(&Shipped, 0, 40).decide(),
            ClaimStatus::Holds
        );
        let added = ProductEvidence::gather(&AddsLayers, 0, 40);
        assert!(added.worst_product_error > 1.0);
        assert_eq!(added.decide(), ClaimStatus::False);
        let rolled = ProductEvidence::gather(&UnnormalisedRollout, 0, 40);
        assert!(rolled.worst_rollout_error > 1e-3, "{rolled:?}");
        assert_eq!(rolled.decide(), ClaimStatus::False);
    }

    /// A heatmap that divides by each row's sum instead of the maximum.
    struct RowSums;

    impl Engines for RowSums {
        fn heatmap(&self, map: &AttentionMap) -> AnalysisResult<AttentionMap> {
            let mut values = Vec::new();
            for row in map.iter_rows() {
                let sum: f64 = row.iter().filter(|v| **v > 0.0).sum();
                values.extend(row.iter().map(|v| if *v > 0.0 { v / sum } else { 0.0 }));
            }
            AttentionMap::new(map.rows(), map.columns(), values)
        }
    }

    #[test]
    fn heatmap_rule_goes_either_way() {
        let shipped = HeatmapEvidence::gather(&Shipped, 0, 100);
        assert_eq!(shipped.worst_deviation, 0.0);
        assert!(shipped.nan_rejected && shipped.no_positive_all_zero);
        assert_eq!(shipped.decide(), ClaimStatus::HoldsUnderCondition);
        assert_eq!(
            HeatmapEvidence::gather(&RowSums, 0, 100).decide(),
            ClaimStatus::Inconclusive
        );
    }

    /// "Attention" without the softmax: the output is linear in θ, so the
    /// squared loss is convex.
    struct Linear;

    impl Engines for Linear {
        fn attention(&self, q: &Tensor, _k: &Tensor, _v: &Tensor) -> candle_core::Result<Tensor> {
            q.affine(0.1, 0.0)
        }
    }

    #[test]
    fn theorem_1_premise_fails_only_through_the_softmax() {
        let shipped = Theorem1Evidence::gather(&Shipped);
        assert_eq!(shipped.decide(), ClaimStatus::Definition);
        assert!(shipped.check().evidence.contains("not convex"));
        assert_eq!(
            Theorem1Evidence::gather(&Linear).decide(),
            ClaimStatus::Holds
        );
    }
}
