//! The intervals of `workflow analyze` mean what they say: on 500 seeded
//! histories simulated from a known chain, the 95% intervals for `T_ij`
//! and for the absorption probabilities `B` cover the truth in 93-97% of
//! cases.

use attnflow_workflow::markov::{MarkovChain, TransitionCounts};
use attnflow_workflow::uncertainty::{posterior, simulate, PosteriorOptions};
use nalgebra::DMatrix;

#[test]
fn ninety_five_percent_intervals_cover_the_truth_ninety_five_percent_of_the_time() {
    let states: Vec<String> = ["Init", "Proc", "Valid", "Fail", "Done", "Abandon"]
        .iter()
        .map(|name| name.to_string())
        .collect();
    // Figure 2's shape: processing fails, validation rejects, failures are
    // retried or abandoned.
    let truth = DMatrix::from_row_slice(
        6,
        6,
        &[
            0.0, 0.8, 0.0, 0.2, 0.0, 0.0, //
            0.0, 0.0, 0.7, 0.3, 0.0, 0.0, //
            0.0, 0.0, 0.0, 0.25, 0.75, 0.0, //
            0.0, 0.6, 0.0, 0.0, 0.0, 0.4, //
            0.0, 0.0, 0.0, 0.0, 1.0, 0.0, //
            0.0, 0.0, 0.0, 0.0, 0.0, 1.0,
        ],
    );
    let exact = MarkovChain::new(states.clone(), truth.clone())
        .unwrap()
        .absorption()
        .unwrap();
    let options = PosteriorOptions {
        draws: 2000,
        ..PosteriorOptions::default()
    };
    let (mut transitions, mut transitions_covered) = (0usize, 0usize);
    let (mut absorption, mut absorption_covered) = (0usize, 0usize);
    for history in 0..500u64 {
        let mut counts = TransitionCounts::new(&states, &states[4..]);
        for row in 0..4 {
            for column in 0..6 {
                if truth[(row, column)] > 0.0 {
                    counts.allow(&states[row], &states[column]);
                }
            }
        }
        let runs = 100;
        simulate(&truth, &states, 0, runs, history, &mut counts);
        let summary = posterior(
            &counts,
            runs,
            &PosteriorOptions {
                seed: history,
                ..options.clone()
            },
        );
        for row in 0..4 {
            for column in 0..6 {
                if let Some([low, high]) = summary.transitions[row][column] {
                    transitions += 1;
                    transitions_covered +=
                        usize::from((low..=high).contains(&truth[(row, column)]));
                }
            }
        }
        // B from every transient state to Done (to Abandon is its
        // complement).
        for state in &states[..4] {
            let [low, high] = summary.absorption[state]["Done"];
            let value = exact.absorption_probabilities[state]["Done"];
            absorption += 1;
            absorption_covered += usize::from((low..=high).contains(&value));
        }
    }
    let coverage = |covered: usize, total: usize| covered as f64 / total as f64;
    let t = coverage(transitions_covered, transitions);
    let b = coverage(absorption_covered, absorption);
    eprintln!("coverage over 500 histories: T_ij {t:.3} ({transitions} intervals), B {b:.3} ({absorption})");
    assert!(
        (0.93..=0.97).contains(&t),
        "T_ij coverage {t} over {transitions}"
    );
    assert!(
        (0.93..=0.97).contains(&b),
        "B coverage {b} over {absorption}"
    );
}
