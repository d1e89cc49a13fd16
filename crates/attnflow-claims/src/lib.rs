//! The paper's claims, checked on the engines attnflow ships
//! (`attnflow verify`, and the report's "Claims, checked" section).
//!
//! Every claim states the rule that decides it ([`ClaimCheck::rule`]),
//! gathers its evidence by calling the product's own engines (the Markov
//! analysis of attnflow-workflow, the selection solver of attnflow-data,
//! the heatmap, blend, layer product, rollout and attention of
//! attnflow-core, the cost account of attnflow-blueprint), and computes its
//! verdict from that evidence by that rule. Counterexamples that decide a
//! verdict are checked in exact rational arithmetic ([`exact`]).
//!
//! The engines are injectable ([`Engines`]): the tests plant faulty ones
//! (a blend that drops a term, an absorption analysis that ignores
//! reachability, ...) and watch the verdicts change.

mod attention;
mod complexity;
mod engines;
pub mod exact;
mod lemmas;
mod selection;

use serde::{Serialize, Serializer};

pub use attention::{
    BlendEvidence, HeatmapEvidence, ProductEvidence, Theorem1Evidence, ROW_SUM_RULE,
};
pub use complexity::ComplexityEvidence;
pub use engines::{Engines, Shipped};
pub use lemmas::{ChainCase, Lemma1Evidence, Lemma2Evidence};
pub use selection::SelectionEvidence;

/// What the evidence says about a claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimStatus {
    /// The claim holds as stated.
    Holds,
    /// The claim is false as stated; the evidence holds a counterexample.
    False,
    /// The claim holds only under a condition the paper does not state.
    HoldsUnderCondition,
    /// Stated as a theorem, but it is a definition: there is nothing to
    /// prove, and its proof's premise fails.
    Definition,
    /// The evidence contradicts attnflow's own finding (typically a shipped
    /// engine that disagrees with exact arithmetic or with its definition):
    /// no verdict can be given.
    Inconclusive,
}

impl ClaimStatus {
    /// The status as printed in tables and JSON.
    pub fn label(self) -> &'static str {
        match self {
            Self::Holds => "holds",
            Self::False => "false",
            Self::HoldsUnderCondition => "holds under condition",
            Self::Definition => "definition, not a theorem",
            Self::Inconclusive => "inconclusive",
        }
    }
}

impl Serialize for ClaimStatus {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.label())
    }
}

/// One checked claim.
#[derive(Clone, Debug, Serialize)]
pub struct ClaimCheck {
    /// Short identifier (`lemma-1`, `heatmap`, ...).
    pub id: &'static str,
    /// The paper section.
    pub section: &'static str,
    /// The claim as the paper states it.
    #[serde(rename = "claim")]
    pub statement: &'static str,
    /// The rule that turns the evidence into the verdict.
    pub rule: &'static str,
    /// The verdict, computed from the evidence by the rule.
    pub status: ClaimStatus,
    /// What is actually true, stated precisely.
    pub finding: String,
    /// The decisive numbers.
    pub evidence: String,
}

/// Settings of [`check_claims`].
#[derive(Clone, Debug)]
pub struct ClaimOptions {
    /// Seed of every random trial.
    pub seed: u64,
    /// Random trials per statistical check.
    pub trials: usize,
    /// Sequence lengths timed for the complexity exponent; empty decides
    /// §9 from the counted FLOPs alone (timing is the only evidence that
    /// depends on the machine).
    pub timing_lengths: Vec<usize>,
}

impl Default for ClaimOptions {
    fn default() -> Self {
        Self {
            seed: 0,
            trials: 200,
            timing_lengths: vec![512, 1024, 2048, 3072],
        }
    }
}

/// Runs every check on the shipped engines.
pub fn check_claims(options: &ClaimOptions) -> Vec<ClaimCheck> {
    check_claims_with(&Shipped, options)
}

/// Runs every check on the given engines.
pub fn check_claims_with(engines: &dyn Engines, options: &ClaimOptions) -> Vec<ClaimCheck> {
    let trials = options.trials.max(1);
    vec![
        Lemma1Evidence::gather(options.seed, trials).check(),
        Lemma2Evidence::gather(engines, options.seed, trials).check(),
        HeatmapEvidence::gather(engines, options.seed, trials).check(),
        BlendEvidence::gather(engines, options.seed, trials).check(),
        ProductEvidence::gather(engines, options.seed, trials).check(),
        SelectionEvidence::gather(engines, options.seed).check(),
        Theorem1Evidence::gather(engines).check(),
        ComplexityEvidence::gather(engines, &options.timing_lengths).check(),
    ]
}

/// How many checks have each status, in the order of [`ClaimStatus`].
pub fn tally(checks: &[ClaimCheck]) -> Vec<(ClaimStatus, usize)> {
    [
        ClaimStatus::Holds,
        ClaimStatus::False,
        ClaimStatus::HoldsUnderCondition,
        ClaimStatus::Definition,
        ClaimStatus::Inconclusive,
    ]
    .into_iter()
    .map(|status| {
        (
            status,
            checks.iter().filter(|check| check.status == status).count(),
        )
    })
    .collect()
}
