//! Training curves: a run's logs read through the trainer's own line types
//! (`StepMetrics`, `Evaluation`) and drawn as overlaid line charts, one
//! series per run, by attnflow-report.

use std::io::BufRead;
use std::path::Path;

use attnflow_report::{LineChart, Series};
use attnflow_train::trainer::{EVAL_FILE, METRICS_FILE};
use attnflow_train::{Evaluation, StepMetrics};

/// Points kept per series; longer logs are thinned evenly (the last point
/// always kept) and the chart's caption says so.
pub const MAX_POINTS: usize = 2000;

/// The logs of one run.
#[derive(Debug, Clone, Default)]
pub struct Curves {
    /// The run's name, the series' legend.
    pub name: String,
    /// One entry per logged step.
    pub steps: Vec<StepMetrics>,
    /// One entry per evaluation.
    pub evaluations: Vec<Evaluation>,
    /// Lines that did not parse (a line being written, or damage).
    pub unreadable_lines: usize,
}

fn read_lines<T: serde::de::DeserializeOwned>(path: &Path, unreadable: &mut usize) -> Vec<T> {
    let Ok(file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let mut values = Vec::new();
    for line in std::io::BufReader::new(file).lines() {
        let Ok(line) = line else {
            *unreadable += 1;
            break;
        };
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(&line) {
            Ok(value) => values.push(value),
            Err(_) => *unreadable += 1,
        }
    }
    values
}

/// Reads `metrics.jsonl` and `eval.jsonl` of a training folder (missing
/// files give empty curves).
pub fn read_curves(name: &str, training_dir: &Path) -> Curves {
    let mut unreadable_lines = 0;
    let steps = read_lines(&training_dir.join(METRICS_FILE), &mut unreadable_lines);
    let evaluations = read_lines(&training_dir.join(EVAL_FILE), &mut unreadable_lines);
    Curves {
        name: name.to_owned(),
        steps,
        evaluations,
        unreadable_lines,
    }
}

/// At most [`MAX_POINTS`] of `points`, evenly spaced, the last kept.
fn thin(points: Vec<(f64, f64)>) -> Vec<(f64, f64)> {
    if points.len() <= MAX_POINTS {
        return points;
    }
    let stride = points.len().div_ceil(MAX_POINTS);
    let last = points.len() - 1;
    points
        .into_iter()
        .enumerate()
        .filter(|(index, _)| index % stride == 0 || *index == last)
        .map(|(_, point)| point)
        .collect()
}

/// One overlaid chart: its anchor id and the chart.
pub struct Chart {
    /// A stable id for the page (`chart-loss`, ...).
    pub id: &'static str,
    /// The chart.
    pub chart: LineChart,
}

/// The charts Compare and a run's page show: `L`, `J`, `R`, exact-sequence
/// and token accuracy, one series per run in `runs`' order.
pub fn charts(runs: &[Curves]) -> Vec<Chart> {
    let longest = runs.iter().map(|run| run.steps.len()).max().unwrap_or(0);
    let thinned = if longest > MAX_POINTS {
        format!(
            " Logs longer than {MAX_POINTS} steps are drawn with one logged step in {}.",
            longest.div_ceil(MAX_POINTS)
        )
    } else {
        String::new()
    };
    let step_series = |value: fn(&StepMetrics) -> Option<f64>| -> Vec<Series> {
        runs.iter()
            .map(|run| Series {
                name: run.name.clone(),
                points: thin(
                    run.steps
                        .iter()
                        .filter_map(|step| Some((step.step as f64, value(step)?)))
                        .collect(),
                ),
            })
            .collect()
    };
    let evaluation_series = |value: fn(&Evaluation) -> f64| -> Vec<Series> {
        runs.iter()
            .map(|run| Series {
                name: run.name.clone(),
                points: run
                    .evaluations
                    .iter()
                    .map(|evaluation| (evaluation.step as f64, value(evaluation)))
                    .collect(),
            })
            .collect()
    };
    let chart =
        |title: &str, caption: String, y_label: &str, log_y: bool, series: Vec<Series>| LineChart {
            title: title.to_owned(),
            caption,
            x_label: "step".to_owned(),
            y_label: y_label.to_owned(),
            log_y,
            series,
        };
    vec![
        Chart {
            id: "chart-loss",
            chart: chart(
                "Loss L",
                format!("Cross-entropy L of every logged step (§7.1).{thinned}"),
                "L (nats)",
                true,
                step_series(|step| Some(step.loss)),
            ),
        },
        Chart {
            id: "chart-objective",
            chart: chart(
                "Objective J = L + λR",
                format!("The objective training minimised (§7.1); equal to L when λ = 0.{thinned}"),
                "J",
                true,
                step_series(|step| Some(step.objective)),
            ),
        },
        Chart {
            id: "chart-regulariser",
            chart: chart(
                "Regulariser R",
                format!(
                    "The attention regulariser R (§7.1); runs without one have no line.{thinned}"
                ),
                "R",
                false,
                step_series(|step| step.regulariser),
            ),
        },
        Chart {
            id: "chart-accuracy",
            chart: chart(
                "Validation accuracy",
                "Exact-sequence accuracy on the validation set at each evaluation.".to_owned(),
                "accuracy",
                false,
                evaluation_series(|evaluation| evaluation.sequence_accuracy),
            ),
        },
        Chart {
            id: "chart-token-accuracy",
            chart: chart(
                "Validation token accuracy",
                "Per-token accuracy on the validation set at each evaluation.".to_owned(),
                "token accuracy",
                false,
                evaluation_series(|evaluation| evaluation.token_accuracy),
            ),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(step: u64, loss: f64) -> StepMetrics {
        StepMetrics {
            step,
            loss,
            regulariser: None,
            objective: loss,
            learning_rate: 1e-3,
            gradient_norm: 1.0,
            tokens: 64,
            tokens_per_second: 1000.0,
        }
    }

    #[test]
    fn logs_are_read_through_their_types_and_partial_lines_counted() {
        let directory = tempfile::tempdir().unwrap();
        let mut text = String::new();
        for step in 1..=3 {
            text.push_str(&serde_json::to_string(&metrics(step, 1.0 / step as f64)).unwrap());
            text.push('\n');
        }
        text.push_str("{\"step\": 4, \"lo");
        std::fs::write(directory.path().join(METRICS_FILE), text).unwrap();
        let curves = read_curves("a", directory.path());
        assert_eq!(curves.steps.len(), 3);
        assert_eq!(curves.unreadable_lines, 1);
        assert!(curves.evaluations.is_empty());
    }

    #[test]
    fn every_chart_has_one_series_per_run_and_long_logs_are_thinned() {
        let runs: Vec<Curves> = (0..3)
            .map(|run| Curves {
                name: format!("run <{run}>"),
                steps: (1..=5000)
                    .map(|step| metrics(step, 2.0 / step as f64))
                    .collect(),
                ..Curves::default()
            })
            .collect();
        let charts = charts(&runs);
        assert_eq!(charts.len(), 5);
        for chart in &charts {
            assert_eq!(chart.chart.series.len(), 3);
        }
        let loss = &charts[0].chart;
        assert!(loss.series[0].points.len() <= MAX_POINTS);
        assert_eq!(loss.series[0].points.last().unwrap().0, 5000.0);
        assert!(
            loss.caption.contains("one logged step in 3"),
            "{}",
            loss.caption
        );
        let svg = loss.svg();
        assert_eq!(svg.matches("<polyline").count(), 3);
        assert!(svg.contains("run &lt;0&gt;"));
    }
}
