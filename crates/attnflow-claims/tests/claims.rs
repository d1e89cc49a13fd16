//! `check_claims` on the shipped engines: every claim gets the verdict its
//! rule derives from the evidence, and a faulty engine changes it.

use attnflow_claims::{check_claims, check_claims_with, tally, ClaimOptions, ClaimStatus, Engines};
use attnflow_core::analysis::{AnalysisResult, AttentionMap};

fn options() -> ClaimOptions {
    ClaimOptions {
        timing_lengths: vec![],
        ..ClaimOptions::default()
    }
}

fn status(checks: &[attnflow_claims::ClaimCheck], id: &str) -> ClaimStatus {
    checks
        .iter()
        .find(|check| check.id == id)
        .unwrap_or_else(|| panic!("no check {id}"))
        .status
}

#[test]
fn verdicts_follow_the_evidence_on_the_shipped_engines() {
    let checks = check_claims(&options());
    let expected = [
        ("lemma-1", ClaimStatus::False),
        ("lemma-2", ClaimStatus::HoldsUnderCondition),
        ("heatmap", ClaimStatus::HoldsUnderCondition),
        ("blend", ClaimStatus::Holds),
        ("product", ClaimStatus::Holds),
        ("selection", ClaimStatus::False),
        ("theorem-1", ClaimStatus::Definition),
        ("complexity", ClaimStatus::Holds),
    ];
    for (id, want) in expected {
        assert_eq!(status(&checks, id), want, "{id}");
    }
    for check in &checks {
        assert!(
            !check.rule.is_empty() && !check.evidence.is_empty(),
            "{}",
            check.id
        );
    }
    let lemma_1 = checks.iter().find(|c| c.id == "lemma-1").unwrap();
    assert!(
        lemma_1.evidence.contains("[-4/5, 7/5]"),
        "{}",
        lemma_1.evidence
    );
    assert!(lemma_1.finding.contains("P·1 = c·1"));
    let blend = checks.iter().find(|c| c.id == "blend").unwrap();
    assert!(
        blend.evidence.contains("worst row-sum error"),
        "{}",
        blend.evidence
    );
    assert_eq!(
        tally(&checks)
            .iter()
            .find(|(status, _)| *status == ClaimStatus::Inconclusive)
            .unwrap()
            .1,
        0
    );
    // Same seed, same evidence.
    let again = check_claims(&options());
    assert_eq!(
        checks.iter().map(|c| &c.evidence).collect::<Vec<_>>(),
        again.iter().map(|c| &c.evidence).collect::<Vec<_>>()
    );
}

/// A blend that drops the language term and a layer product that returns
/// the last layer twice over.
struct Broken;

impl Engines for Broken {
    fn blend(
        &self,
        vision: &AttentionMap,
        _language: &AttentionMap,
        alpha: f64,
    ) -> AnalysisResult<AttentionMap> {
        let values = vision.values().iter().map(|v| alpha * v).collect();
        AttentionMap::new(vision.rows(), vision.columns(), values)
    }

    fn layer_product(&self, layers: &[AttentionMap]) -> AnalysisResult<AttentionMap> {
        let last = layers.last().expect("layers");
        let values = last.values().iter().map(|v| 2.0 * v).collect();
        AttentionMap::new(last.rows(), last.columns(), values)
    }
}

#[test]
fn a_broken_engine_flips_the_verdicts_it_feeds() {
    let checks = check_claims_with(&Broken, &options());
    assert_eq!(status(&checks, "blend"), ClaimStatus::False);
    assert_eq!(status(&checks, "product"), ClaimStatus::False);
    // The others do not depend on these engines.
    assert_eq!(status(&checks, "lemma-2"), ClaimStatus::HoldsUnderCondition);
    assert_eq!(status(&checks, "selection"), ClaimStatus::False);
}
