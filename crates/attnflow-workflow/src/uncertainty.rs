//! How sure the §5.2 estimates are: per-row Dirichlet posteriors over the
//! recorded counts, intervals for every `T_ij`, and intervals for the §5.3
//! absorption probabilities `B` and expected steps `t` by sampling the
//! posterior and analysing each draw with [`MarkovChain::absorption`].
//!
//! Each row `i` of `T` is a categorical distribution over the transitions
//! the spec allows from `i`. With the Jeffreys prior (½ per allowed
//! transition) its posterior is `Dirichlet(n_i· + ½)`, whose marginal for
//! one `T_ij` is `Beta(n_ij + ½, n_i − n_ij + (k − 1)/2)` for `k` allowed
//! transitions: the `T_ij` interval is that Beta's equal-tailed quantiles.
//! `B` and `t` are non-linear in `T`, so their intervals come from draws.

use std::collections::BTreeMap;

use nalgebra::DMatrix;
use serde::Serialize;

use crate::markov::{MarkovChain, TransitionCounts};

/// Settings of [`posterior`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PosteriorOptions {
    /// Central probability of every interval.
    pub level: f64,
    /// Prior pseudo-count per allowed transition (½: Jeffreys).
    pub prior: f64,
    /// Posterior draws for `B` and `t`.
    pub draws: usize,
    /// Seed of the draws.
    pub seed: u64,
    /// The half-width "runs needed" aims for.
    pub target_half_width: f64,
}

impl Default for PosteriorOptions {
    fn default() -> Self {
        Self {
            level: 0.95,
            prior: 0.5,
            draws: 4000,
            seed: 0,
            target_half_width: 0.05,
        }
    }
}

impl PosteriorOptions {
    /// The method, named for the output.
    pub fn method(&self) -> String {
        format!(
            "{:.0}% intervals. T_ij: equal-tailed quantiles of the Beta marginal of each row's Dirichlet posterior (prior {} per transition the spec allows). \
             B and t: {} draws from the rows' Dirichlet posteriors (seed {}), each analysed as in §5.3; equal-tailed quantiles of the draws. \
             Runs needed: the current runs times (half-width / {})², since intervals narrow as 1/√runs",
            self.level * 100.0,
            self.prior,
            self.draws,
            self.seed,
            self.target_half_width
        )
    }
}

/// An interval `[low, high]`.
pub type Interval = [f64; 2];

/// The posterior summary of one estimated chain.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Uncertainty {
    /// How the intervals were made.
    pub method: String,
    /// Central probability of every interval.
    pub level: f64,
    /// Interval of each `T_ij` the spec (or the record) allows; `None`
    /// elsewhere (structurally 0) and on absorbing rows.
    pub transitions: Vec<Vec<Option<Interval>>>,
    /// Interval of `B` from each transient state to each absorbing state.
    pub absorption: BTreeMap<String, BTreeMap<String, Interval>>,
    /// Interval of the expected steps to absorption from each transient
    /// state (an end at infinity when some draws are never absorbed).
    pub expected_steps: BTreeMap<String, Interval>,
    /// Observed exits of each transient state.
    pub exits: BTreeMap<String, u64>,
    /// The half-width "runs needed" aims for.
    pub target_half_width: f64,
    /// Runs needed in total for every `B` interval of a state to be within
    /// ± the target half-width (`None`: no exits observed yet).
    pub runs_needed: BTreeMap<String, Option<u64>>,
    /// Transient states with fewer than [`FEW_EXITS`] observed exits.
    pub few_exits: Vec<String>,
}

/// A row with fewer observed exits than this gets a warning.
pub const FEW_EXITS: u64 = 10;

/// Summarises the posterior of `counts` given `runs` recorded runs.
pub fn posterior(
    counts: &TransitionCounts,
    runs: usize,
    options: &PosteriorOptions,
) -> Uncertainty {
    let estimate = counts.estimate();
    let states = estimate.states.clone();
    let size = states.len();
    let observed = counts.matrix();
    let support: Vec<Vec<bool>> = (0..size).map(|row| counts.allowed(row)).collect();
    let lower = (1.0 - options.level) / 2.0;
    let upper = 1.0 - lower;

    let mut transitions = vec![vec![None; size]; size];
    for row in 0..size {
        let allowed: Vec<usize> = (0..size).filter(|&column| support[row][column]).collect();
        let total: u64 = observed[row].iter().sum();
        let prior_total = options.prior * allowed.len() as f64;
        for &column in &allowed {
            let a = observed[row][column] as f64 + options.prior;
            let b = total as f64 + prior_total - a;
            transitions[row][column] = Some(if b <= 0.0 {
                [1.0, 1.0]
            } else {
                [beta_quantile(lower, a, b), beta_quantile(upper, a, b)]
            });
        }
    }

    // Draw whole chains; rows without allowed transitions keep the
    // estimate's absorbing self-loop.
    let point = estimate.absorption().ok();
    let transient: Vec<String> = point
        .as_ref()
        .map(|absorption| absorption.transient.clone())
        .unwrap_or_default();
    let absorbing: Vec<String> = point
        .as_ref()
        .map(|absorption| absorption.absorbing.clone())
        .unwrap_or_default();
    let mut absorbed: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
    let mut steps: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut random = Random::new(options.seed);
    for _ in 0..options.draws {
        let mut matrix = estimate.probabilities.clone();
        for row in 0..size {
            let allowed: Vec<usize> = (0..size).filter(|&column| support[row][column]).collect();
            if allowed.is_empty() {
                continue;
            }
            let draws: Vec<f64> = allowed
                .iter()
                .map(|&column| random.gamma(observed[row][column] as f64 + options.prior))
                .collect();
            let sum: f64 = draws.iter().sum();
            for column in 0..size {
                matrix[(row, column)] = 0.0;
            }
            for (&column, draw) in allowed.iter().zip(&draws) {
                matrix[(row, column)] = if sum > 0.0 {
                    draw / sum
                } else {
                    1.0 / allowed.len() as f64
                };
            }
        }
        let chain = MarkovChain {
            states: states.clone(),
            probabilities: matrix,
            counts: None,
            unobserved_exits: Vec::new(),
        };
        let Ok(analysis) = chain.absorption() else {
            continue;
        };
        for state in &transient {
            for target in &absorbing {
                let value = analysis
                    .absorption_probabilities
                    .get(state)
                    .and_then(|row| row.get(target))
                    .copied()
                    .unwrap_or(0.0);
                absorbed
                    .entry((state.clone(), target.clone()))
                    .or_default()
                    .push(value);
            }
            let value = analysis
                .expected_steps
                .get(state)
                .copied()
                .flatten()
                .unwrap_or(f64::INFINITY);
            steps.entry(state.clone()).or_default().push(value);
        }
    }

    let mut absorption: BTreeMap<String, BTreeMap<String, Interval>> = BTreeMap::new();
    for ((state, target), mut values) in absorbed {
        values.sort_by(f64::total_cmp);
        absorption
            .entry(state)
            .or_default()
            .insert(target, [quantile(&values, lower), quantile(&values, upper)]);
    }
    let expected_steps = steps
        .into_iter()
        .map(|(state, mut values)| {
            values.sort_by(f64::total_cmp);
            (state, [quantile(&values, lower), quantile(&values, upper)])
        })
        .collect();
    let index = |name: &str| states.iter().position(|state| state == name);
    let exits: BTreeMap<String, u64> = transient
        .iter()
        .map(|state| {
            let row = index(state).map_or(0, |row| observed[row].iter().sum());
            (state.clone(), row)
        })
        .collect();
    let runs_needed = transient
        .iter()
        .map(|state| {
            let widest = absorption
                .get(state)
                .map(|row| {
                    row.values()
                        .map(|[low, high]| (high - low) / 2.0)
                        .fold(0.0, f64::max)
                })
                .unwrap_or(0.0);
            let needed = (exits[state] > 0 && runs > 0).then(|| {
                let factor = (widest / options.target_half_width).powi(2);
                ((runs as f64 * factor).ceil() as u64).max(runs as u64)
            });
            (state.clone(), needed)
        })
        .collect();
    let few_exits = transient
        .iter()
        .filter(|state| exits[*state] < FEW_EXITS)
        .cloned()
        .collect();
    Uncertainty {
        method: options.method(),
        level: options.level,
        transitions,
        absorption,
        expected_steps,
        exits,
        target_half_width: options.target_half_width,
        runs_needed,
        few_exits,
    }
}

/// The `p` quantile of sorted values (linear interpolation).
fn quantile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let position = p * (sorted.len() - 1) as f64;
    let below = position.floor() as usize;
    let above = position.ceil() as usize;
    let weight = position - below as f64;
    if sorted[above].is_infinite() || weight == 0.0 {
        return if weight == 0.0 {
            sorted[below]
        } else {
            sorted[above]
        };
    }
    sorted[below] * (1.0 - weight) + sorted[above] * weight
}

/// `ln Γ(x)` for `x > 0` (Lanczos, g = 7, n = 9; about 15 digits).
pub fn ln_gamma(x: f64) -> f64 {
    const COEFFICIENTS: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x)Γ(1 − x) = π / sin(πx).
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut sum = COEFFICIENTS[0];
    for (index, coefficient) in COEFFICIENTS.iter().enumerate().skip(1) {
        sum += coefficient / (x + index as f64);
    }
    let t = x + 7.5;
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + sum.ln()
}

/// The regularised incomplete beta function `I_x(a, b)` (continued
/// fraction, Lentz's method).
pub fn incomplete_beta(x: f64, a: f64, b: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let front =
        (ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln()).exp();
    // The continued fraction converges fast for x < (a + 1)/(a + b + 2).
    if x < (a + 1.0) / (a + b + 2.0) {
        front * beta_fraction(x, a, b) / a
    } else {
        1.0 - front * beta_fraction(1.0 - x, b, a) / b
    }
}

fn beta_fraction(x: f64, a: f64, b: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let mut c = 1.0;
    let mut d = 1.0 - (a + b) * x / (a + 1.0);
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut result = d;
    for m in 1..=300 {
        let m = f64::from(m);
        let even = m * (b - m) * x / ((a + 2.0 * m - 1.0) * (a + 2.0 * m));
        for coefficient in [
            even,
            -(a + m) * (a + b + m) * x / ((a + 2.0 * m) * (a + 2.0 * m + 1.0)),
        ] {
            d = 1.0 + coefficient * d;
            if d.abs() < TINY {
                d = TINY;
            }
            c = 1.0 + coefficient / c;
            if c.abs() < TINY {
                c = TINY;
            }
            d = 1.0 / d;
            result *= d * c;
        }
        if (d * c - 1.0).abs() < 1e-15 {
            break;
        }
    }
    result
}

/// The `p` quantile of `Beta(a, b)`, by bisection on [`incomplete_beta`].
pub fn beta_quantile(p: f64, a: f64, b: f64) -> f64 {
    let (mut low, mut high) = (0.0f64, 1.0f64);
    for _ in 0..100 {
        let middle = 0.5 * (low + high);
        if incomplete_beta(middle, a, b) < p {
            low = middle;
        } else {
            high = middle;
        }
    }
    0.5 * (low + high)
}

/// The central `level` band of `Binomial(n, p)`: the counts `[low, high]`
/// with `P(X < low) ≤ (1 − level)/2` and `P(X > high) ≤ (1 − level)/2`.
pub fn binomial_band(n: u64, p: f64, level: f64) -> [u64; 2] {
    if p <= 0.0 {
        return [0, 0];
    }
    if p >= 1.0 {
        return [n, n];
    }
    let tail = (1.0 - level) / 2.0;
    let ln_choose = |k: u64| {
        ln_gamma(n as f64 + 1.0) - ln_gamma(k as f64 + 1.0) - ln_gamma((n - k) as f64 + 1.0)
    };
    let mass = |k: u64| (ln_choose(k) + k as f64 * p.ln() + (n - k) as f64 * (1.0 - p).ln()).exp();
    let mut cumulative = 0.0;
    let mut low = None;
    let mut high = n;
    for k in 0..=n {
        cumulative += mass(k);
        if low.is_none() && cumulative > tail {
            low = Some(k);
        }
        if cumulative >= 1.0 - tail {
            high = k;
            break;
        }
    }
    [low.unwrap_or(0), high]
}

/// Seeded draws for the posterior (SplitMix64 chained).
struct Random(u64);

impl Random {
    fn new(seed: u64) -> Self {
        Self(seed ^ 0x0005_EED0_FD1C_41E7)
    }

    fn uniform(&mut self) -> f64 {
        self.0 = crate::action::splitmix64(self.0);
        ((self.0 >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    /// `Gamma(shape, 1)` (Marsaglia and Tsang 2000; shapes below 1 boosted
    /// by `U^(1/shape)`).
    fn gamma(&mut self, shape: f64) -> f64 {
        if shape < 1.0 {
            let boost = self.uniform().powf(1.0 / shape);
            return self.gamma(shape + 1.0) * boost;
        }
        let d = shape - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let x = self.normal();
            let v = (1.0 + c * x).powi(3);
            if v <= 0.0 {
                continue;
            }
            let u = self.uniform();
            if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
                return d * v;
            }
        }
    }
}

/// Draws a history of `runs` runs of `chain` from `start` (states with
/// `T_ii = 1` end a run) into `counts`; for tests and simulations.
pub fn simulate(
    chain: &DMatrix<f64>,
    states: &[String],
    start: usize,
    runs: usize,
    seed: u64,
    counts: &mut TransitionCounts,
) {
    let mut random = Random::new(seed);
    for _ in 0..runs {
        let mut state = start;
        for _ in 0..100_000 {
            if (chain[(state, state)] - 1.0).abs() < 1e-15 {
                break;
            }
            let unit = random.uniform();
            let mut cumulative = 0.0;
            let mut next = chain.ncols() - 1;
            for column in 0..chain.ncols() {
                cumulative += chain[(state, column)];
                if unit < cumulative {
                    next = column;
                    break;
                }
            }
            counts.record(&states[state], &states[next]);
            state = next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_functions_match_known_values() {
        assert!((ln_gamma(5.0) - 24f64.ln()).abs() < 1e-12);
        assert!((ln_gamma(0.5) - std::f64::consts::PI.sqrt().ln()).abs() < 1e-12);
        // I_x(1, 1) = x; I_x(2, 1) = x²; symmetric Beta has median ½.
        assert!((incomplete_beta(0.3, 1.0, 1.0) - 0.3).abs() < 1e-12);
        assert!((incomplete_beta(0.3, 2.0, 1.0) - 0.09).abs() < 1e-12);
        assert!((beta_quantile(0.5, 7.5, 7.5) - 0.5).abs() < 1e-9);
        // Beta(1, 1) is uniform.
        assert!((beta_quantile(0.025, 1.0, 1.0) - 0.025).abs() < 1e-9);
        // Binomial(100, ½): the 99% band is 37..=63.
        assert_eq!(binomial_band(100, 0.5, 0.99), [37, 63]);
    }

    #[test]
    fn gamma_draws_have_the_right_mean_and_variance() {
        let mut random = Random::new(3);
        for shape in [0.5, 2.0, 30.0] {
            let draws: Vec<f64> = (0..40_000).map(|_| random.gamma(shape)).collect();
            let mean = draws.iter().sum::<f64>() / draws.len() as f64;
            let variance =
                draws.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / draws.len() as f64;
            assert!(
                (mean - shape).abs() < 0.05 * shape.max(1.0),
                "{shape}: {mean}"
            );
            assert!(
                (variance - shape).abs() < 0.1 * shape.max(1.0),
                "{shape}: {variance}"
            );
        }
    }
}
