//! Bounded retries analysed exactly: on `examples/workflows/flaky.toml`,
//! 2,000 real runs, the exact `(state, visits)` chain predicts where runs
//! ended after every state within the binomial 99% band, and the plain
//! chain over bare names does not.

use std::path::Path;

use attnflow_workflow::report::{self, AnalysisOptions};
use attnflow_workflow::{RunStatus, Runner, Spec, Store, TaskRegistry};

#[test]
fn the_exact_chain_predicts_two_thousand_runs_of_flaky_figure_two() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/workflows/flaky.toml");
    let spec = Spec::from_file(&example).unwrap();
    // The store's fsyncs, not the analysis, would dominate on a disk: use
    // memory where the system offers it.
    let shared = Path::new("/dev/shm");
    let directory = if shared.is_dir() {
        tempfile::tempdir_in(shared).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    };
    let mut store = Store::open(&directory.path().join("runs.db")).unwrap();
    let registry = TaskRegistry::with_builtins();
    let runs = 2000;
    let mut succeeded = 0;
    for _ in 0..runs {
        let run = Runner::new(&mut store, &registry).start(&spec).unwrap();
        succeeded += usize::from(run.status == RunStatus::Succeeded);
    }
    let analyses = report::analyze(&store, None).unwrap();
    let analysis = &analyses[0];
    assert_eq!(analysis.view, "exact");
    assert_eq!(analysis.runs, runs);
    assert!(analysis.states.contains(&"Retry[3]".to_string()));
    let comparison = analysis.comparison.as_ref().expect("a capped spec");
    for prediction in &comparison.predictions {
        assert!(
            prediction.exact_within,
            "{} -> {}: {} of {} observed, exact chain predicts {:.4} (band {:?})",
            prediction.state,
            prediction.target,
            prediction.ended,
            prediction.visits,
            prediction.exact,
            prediction.exact_band
        );
    }
    // After the third retry only one more try is left: the plain chain,
    // which averages Retry over its visits, is far off there.
    let late = comparison
        .predictions
        .iter()
        .find(|prediction| prediction.state == "Retry[3]" && prediction.target == "Completed")
        .expect("runs reached the third retry");
    assert!(!late.plain_within, "{late:?}");
    assert!((late.plain_chain - late.observed).abs() > 0.1, "{late:?}");
    // From the start both chains agree with the observed success rate.
    let start = &analysis.absorption.absorption_probabilities["Initialized"]["Completed"];
    assert!((start - succeeded as f64 / runs as f64).abs() < 0.01);
    // Processing fails 30% of attempts, twice per visit; validation rejects
    // 20%: a cycle succeeds with p = 0.91·0.8 and a run has four cycles.
    let truth = 1.0 - (1.0f64 - 0.91 * 0.8).powi(4);
    let [low, high] = analysis.uncertainty.absorption["Initialized"]["Completed"];
    assert!(
        low <= truth && truth <= high,
        "{truth} not in [{low}, {high}]"
    );

    let text = report::render_analysis(analysis);
    assert!(text.contains("why the plain chain differs"), "{text}");
    let collapsed = report::analyze_with(
        &store,
        None,
        &AnalysisOptions {
            collapse: true,
            ..AnalysisOptions::default()
        },
    )
    .unwrap();
    assert_eq!(collapsed[0].view, "plain");
    assert!(collapsed[0].comparison.is_none());
    assert!(!collapsed[0].states.iter().any(|state| state.contains('[')));
}
