//! `check_claims`: every claim gets the verdict its evidence gives, backed by
//! numbers computed here.

use attnflow_core::claims::{check_claims, log_log_slope, ClaimOptions, ClaimStatus};

#[test]
fn verdicts_follow_the_maths() {
    let options = ClaimOptions {
        timing_lengths: vec![],
        ..ClaimOptions::default()
    };
    let checks = check_claims(&options);
    let status = |id: &str| {
        checks
            .iter()
            .find(|c| c.id == id)
            .unwrap_or_else(|| panic!("no check {id}"))
    };
    assert_eq!(status("lemma-1").status, ClaimStatus::False);
    // P⁻¹ = [[1, −2], [0, 1]], AP = [[0.5, 1.5], [0.2, 1.2]], P⁻¹AP = [[0.1, −0.9], [0.2, 1.2]].
    assert!(
        status("lemma-1").evidence.contains("[-0.8000, 1.4000]"),
        "{}",
        status("lemma-1").evidence
    );
    assert!(status("lemma-1").finding.contains("P·1 = c·1"));
    assert!(status("lemma-1")
        .evidence
        .contains(&format!("{} random 5×5 P with P·1 = c·1", options.trials)));
    assert_eq!(status("lemma-2").status, ClaimStatus::HoldsUnderCondition);
    let lemma_2 = &status("lemma-2").evidence;
    assert!(lemma_2.contains("[0.000, 0.000]"), "{lemma_2}");
    assert!(lemma_2.contains("[1.000000, 1.000000]"), "{lemma_2}");
    assert_eq!(status("heatmap").status, ClaimStatus::HoldsUnderCondition);
    assert!(status("heatmap").evidence.contains("NaN rejected: true"));
    assert_eq!(status("blend").status, ClaimStatus::Holds);
    assert!(status("blend").evidence.contains("[-0.5, 1.5]"));
    assert_eq!(status("product").status, ClaimStatus::Holds);
    assert_eq!(status("selection").status, ClaimStatus::False);
    assert!(status("selection")
        .evidence
        .contains("selects nothing in 20 of 20"));
    assert_eq!(status("theorem-1").status, ClaimStatus::Definition);
    assert!(status("theorem-1").evidence.contains("not convex"));
    assert!(checks.iter().all(|c| c.id != "complexity"));
    // Same seed, same evidence.
    let again = check_claims(&options);
    assert_eq!(
        checks.iter().map(|c| &c.evidence).collect::<Vec<_>>(),
        again.iter().map(|c| &c.evidence).collect::<Vec<_>>()
    );
}

#[test]
fn the_complexity_check_reports_its_timings() {
    let checks = check_claims(&ClaimOptions {
        trials: 4,
        timing_lengths: vec![64, 128],
        ..ClaimOptions::default()
    });
    let complexity = checks.iter().find(|c| c.id == "complexity").unwrap();
    assert!(complexity.evidence.contains("n = 64") && complexity.evidence.contains("n = 128"));
    // The verdict depends on the machine; only its form is checked here.
}

#[test]
fn log_log_slope_recovers_known_exponents() {
    let square: Vec<(f64, f64)> = [100.0, 200.0, 400.0]
        .iter()
        .map(|&n| (n, 3e-9 * n * n))
        .collect();
    assert!((log_log_slope(&square).unwrap() - 2.0).abs() < 1e-12);
    let linear: Vec<(f64, f64)> = [10.0, 20.0].iter().map(|&n| (n, 5.0 * n)).collect();
    assert!((log_log_slope(&linear).unwrap() - 1.0).abs() < 1e-12);
    assert_eq!(log_log_slope(&[(1.0, 1.0)]), None);
}
