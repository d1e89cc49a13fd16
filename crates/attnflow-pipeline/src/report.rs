//! Output generation: every part of the run in one self-contained HTML page.
//! Blueprint (§3, §9), data (§6), training (§2.3, §7.1), attention (§4.2,
//! §8.2), workflow (§5) and the checked claims.

use std::collections::BTreeMap;

use attnflow_blueprint::render::Style;
use attnflow_blueprint::{account, Blueprint, CostOptions};
use attnflow_claims::{check_claims, ClaimOptions};
use attnflow_core::analysis::heatmap;
use attnflow_data::profile::ProfileReport;
use attnflow_data::run::CheckReport;
use attnflow_inspect::{AnalysisOptions, AttentionSource, Inspector};
use attnflow_report::{
    head_table, AttentionExplorer, Figure, Group, Heatmap, InlineSvg, KeyValues, LineChart,
    Preformatted, Report, Series, Table, TrustedSvg,
};
use attnflow_train::{StepMetrics, TrainReport};
use attnflow_workflow::report::analyze;

use crate::folder::{files, read_json, Context, Validation};
use crate::{PipelineError, Result};

/// Builds the report's HTML from what the run folder and the store hold.
pub(crate) fn build(context: &Context) -> Result<String> {
    let quality: CheckReport = read_json(&context.file(files::QUALITY))?;
    let training: TrainReport = read_json(&context.file(files::TRAINING))?;
    let validation: Validation = read_json(&context.file(files::VALIDATION))?;
    let blueprint_text = std::fs::read_to_string(context.input(&context.spec.model.blueprint))
        .map_err(|source| {
            PipelineError::io(&context.input(&context.spec.model.blueprint), source)
        })?;
    // Cost the model at the shapes it trained on, when the blueprint names
    // them `batch` and `seq`.
    let declared = Blueprint::from_text(&training.blueprint, &blueprint_text, &[])?;
    let overrides: Vec<(String, String)> = [
        ("batch", context.spec.train.batch_size),
        ("seq", training.sequence_length),
    ]
    .into_iter()
    .filter(|(dim, _)| declared.dims.contains_key(*dim))
    .map(|(dim, value)| (dim.to_string(), value.to_string()))
    .collect();
    let blueprint =
        Blueprint::from_text(&training.blueprint, &blueprint_text, &overrides).unwrap_or(declared);

    let mut report = Report::new(format!("attnflow run: {}", context.spec.pipeline.name));
    report.push(summary(context, &quality, &training, &validation));
    report.push(blueprint_section(
        &blueprint,
        &training.blueprint,
        &blueprint_text,
    )?);
    let profile: ProfileReport = read_json(&context.file(files::PROFILE))?;
    report.push(data_section(&quality, &profile));
    report.push(training_section(&training, &step_metrics(context)));
    report.push(attention_section(context)?);
    report.push(workflow_section(context)?);
    report.push(claims_section());
    Ok(report.render()?)
}

fn summary(
    context: &Context,
    quality: &CheckReport,
    training: &TrainReport,
    validation: &Validation,
) -> KeyValues {
    KeyValues {
        title: "Summary".into(),
        entries: vec![
            (
                "pipeline".into(),
                format!(
                    "{}: {}",
                    context.spec.pipeline.name, context.spec.pipeline.description
                ),
            ),
            ("run folder".into(), context.run_dir.display().to_string()),
            ("workflow store".into(), context.store.display().to_string()),
            (
                "data store (queue, quarantine)".into(),
                context.file(files::DATA_STORE).display().to_string(),
            ),
            (
                "records".into(),
                format!(
                    "read {} = accepted {} + quarantined {}",
                    quality.read, quality.accepted, quality.quarantined
                ),
            ),
            (
                "model".into(),
                format!(
                    "{} ({} parameters)",
                    training.blueprint, training.parameters
                ),
            ),
            (
                "training".into(),
                format!(
                    "{} steps, stopped by {:?}, {:.0} tokens/s",
                    training.step, training.stop_reason, training.tokens_per_second
                ),
            ),
            (
                "validation".into(),
                format!(
                    "sequence accuracy {:.4} (threshold {}), token accuracy {:.4}: {}",
                    validation.sequence_accuracy,
                    validation.threshold,
                    validation.token_accuracy,
                    if validation.passed {
                        "passed"
                    } else {
                        "failed"
                    }
                ),
            ),
        ],
    }
}

/// §3 and §9: cost table, `M = (I, O, F, R)`, the diagram and scaling.
fn blueprint_section(blueprint: &Blueprint, file: &str, text: &str) -> Result<Group> {
    let cost = account(blueprint, CostOptions::default());
    let summary = attnflow_blueprint::summary(blueprint);
    let drawing = attnflow_blueprint::diagram::drawing(
        blueprint,
        attnflow_blueprint::diagram::DiagramOptions {
            shapes: true,
            ..Default::default()
        },
    );
    let mut group = Group::new("Blueprint")
        .part(Preformatted {
            title: "Cost per node".into(),
            caption: "Parameters (shared weights once), forward FLOPs by kind, MACs and activation memory, granular convention.".into(),
            text: attnflow_blueprint::render::account_table(&cost, false, Style::Text),
        })
        .part(Preformatted {
            title: "M = (I, O, F, R)".into(),
            caption: "Input and output shapes, the forward graph in order, and the receptive field (§3.1).".into(),
            text: attnflow_blueprint::render::summary_text(&summary, Style::Text),
        })
        .part(TrustedSvg {
            title: "Data-flow graph".into(),
            caption: "§4.1: G = (V, E); repeated blocks drawn once, marked ×L.".into(),
            svg: attnflow_blueprint::diagram::svg(&drawing),
        });
    if let Some(seq) = blueprint.dims.get("seq").copied() {
        let values: Vec<u64> = [1u64, 2, 4, 8].iter().map(|f| seq * f).collect();
        let scaling = attnflow_blueprint::Spec::parse(file, text)
            .ok()
            .and_then(|spec| {
                attnflow_blueprint::scale(
                    &spec,
                    "seq",
                    &values,
                    &[],
                    CostOptions::default(),
                    |_| {},
                )
                .ok()
            });
        if let Some(scaling) = scaling {
            group = group.part(Preformatted {
                title: "Scaling in seq (§9)".into(),
                caption: "Cost over sequence lengths and the fitted growth exponents.".into(),
                text: attnflow_blueprint::render::scale_table(&scaling, Style::Text),
            });
        }
    }
    Ok(group)
}

/// The text of a JSON value: strings without quotes, anything else as JSON.
/// §6: counts, quarantine reasons and samples (from `quality.json`, the
/// data check's report) and the profile.
fn data_section(quality: &CheckReport, profile: &ProfileReport) -> Group {
    let files = Table {
        title: "Records per source".into(),
        caption: "Every record read is accepted into the queue or quarantined with its reason."
            .into(),
        headers: vec![
            "file".into(),
            "read".into(),
            "accepted".into(),
            "quarantined".into(),
        ],
        rows: quality
            .files
            .iter()
            .map(|f| {
                vec![
                    f.path.clone(),
                    f.read.to_string(),
                    f.accepted.to_string(),
                    f.quarantined.to_string(),
                ]
            })
            .collect(),
    };
    let reasons = Table {
        title: "Quarantine reasons".into(),
        caption: "Quarantined records by the rule of their first violation.".into(),
        headers: vec!["rule".into(), "records".into()],
        rows: quality
            .by_rule
            .iter()
            .map(|(rule, count)| vec![rule.clone(), count.to_string()])
            .collect(),
    };
    let samples = Table {
        title: "Quarantined records".into(),
        caption: "Source, line and every violation; `attnflow data quarantine --db RUN/data.sqlite` lists them all.".into(),
        headers: vec!["source".into(), "line".into(), "violations".into()],
        rows: quality
            .samples
            .iter()
            .map(|sample| {
                let violations: Vec<String> = sample
                    .violations
                    .iter()
                    .map(|v| format!("{} [{}]", v.message, v.rule))
                    .collect();
                vec![sample.source.clone(), sample.line.to_string(), violations.join("; ")]
            })
            .collect(),
    };
    Group::new("Data")
        .part(files)
        .part(reasons)
        .part(samples)
        .part(profile_table(profile))
}

fn profile_table(profile: &ProfileReport) -> Table {
    let number = |value: Option<f64>| value.map_or("–".to_string(), |v| format!("{v:.3}"));
    Table {
        title: "Profile".into(),
        caption: "Per field: values seen, nulls, invalid values, range, mean and standard deviation (of the value, or of the length for text and token lists), approximate distinct count.".into(),
        headers: ["field", "type", "count", "nulls", "invalid", "min", "max", "mean", "std", "of", "distinct ≈"]
            .iter()
            .map(|h| h.to_string())
            .collect(),
        rows: profile
            .fields
            .iter()
            .map(|f| {
                vec![
                    f.name.clone(),
                    f.field_type.name().to_string(),
                    f.count.to_string(),
                    f.nulls.to_string(),
                    f.invalid.to_string(),
                    number(f.min),
                    number(f.max),
                    number(f.mean),
                    number(f.std),
                    f.measure.clone(),
                    f.distinct.to_string(),
                ]
            })
            .collect(),
    }
}

/// Every logged training step (`training/metrics.jsonl`), across attempts.
fn step_metrics(context: &Context) -> Vec<StepMetrics> {
    std::fs::read_to_string(
        context
            .file(files::TRAINING_DIR)
            .join(attnflow_train::trainer::METRICS_FILE),
    )
    .unwrap_or_default()
    .lines()
    .filter_map(|line| serde_json::from_str(line).ok())
    .collect()
}

/// §7.1 and §2.3: the objective's terms, accuracy and gradient flow.
fn training_section(training: &TrainReport, steps: &[StepMetrics]) -> Group {
    let evaluations = &training.evaluations;
    let curve = |name: &str, value: &dyn Fn(&attnflow_train::Evaluation) -> f64| Series {
        name: name.into(),
        points: evaluations
            .iter()
            .map(|e| (e.step as f64, value(e)))
            .collect(),
    };
    let step_series = |name: &str, value: &dyn Fn(&StepMetrics) -> Option<f64>| Series {
        name: name.into(),
        points: steps
            .iter()
            .filter_map(|m| value(m).map(|v| (m.step as f64, v)))
            .collect(),
    };
    let mut terms = vec![
        step_series("J (training)", &|m| Some(m.objective)),
        step_series("L (training)", &|m| Some(m.loss)),
    ];
    if steps.iter().any(|m| m.regulariser.is_some()) {
        terms.push(step_series("R (training)", &|m| m.regulariser));
    }
    terms.push(curve("L (validation)", &|e| e.loss));
    let loss = LineChart {
        title: "Objective and loss".into(),
        caption: "J = L + λR, its cross-entropy term L and regulariser R at every logged training step, and L on held-out records at each evaluation.".into(),
        x_label: "step".into(),
        y_label: "nats".into(),
        log_y: true,
        series: terms,
    };
    let accuracy = LineChart {
        title: "Validation accuracy".into(),
        caption: "Exact-sequence and per-token accuracy on held-out records.".into(),
        x_label: "step".into(),
        y_label: "accuracy".into(),
        log_y: false,
        series: vec![
            curve("sequence", &|e| e.sequence_accuracy),
            curve("token", &|e| e.token_accuracy),
        ],
    };
    let objective = KeyValues {
        title: "Objective J = L + λR (§7.1)".into(),
        entries: match &training.last_step {
            Some(last) => vec![
                ("step".into(), last.step.to_string()),
                ("L (cross-entropy)".into(), format!("{:.5}", last.loss)),
                (
                    "R (attention regulariser)".into(),
                    last.regulariser
                        .map_or("not used (λ = 0)".into(), |r| format!("{r:.5}")),
                ),
                ("J".into(), format!("{:.5}", last.objective)),
                ("gradient norm".into(), format!("{:.4}", last.gradient_norm)),
                (
                    "learning rate".into(),
                    format!("{:.2e}", last.learning_rate),
                ),
            ],
            None => vec![("steps".into(), "none in the last attempt".into())],
        },
    };
    let layers = &training.gradient_flow.layers;
    let gradient_chart = LineChart {
        title: "Gradient flow by layer (§2.3)".into(),
        caption: "Minimum, median and maximum parameter-gradient L2 norm of each layer over training (x: layer in model order).".into(),
        x_label: "layer".into(),
        y_label: "gradient L2 norm".into(),
        log_y: true,
        series: [("min", 0), ("median", 1), ("max", 2)]
            .iter()
            .map(|(name, which)| Series {
                name: (*name).into(),
                points: layers
                    .iter()
                    .enumerate()
                    .map(|(index, layer)| (index as f64, [layer.min, layer.median, layer.max][*which]))
                    .collect(),
            })
            .collect(),
    };
    let gradient_table = Table {
        title: "Gradient norms per layer".into(),
        caption: format!(
            "Over {} logged steps; flags: vanishing < 1e-7, exploding > 1e3, non-finite. {} flag(s).",
            training.gradient_flow.logged_steps,
            training.gradient_flow.flags.len()
        ),
        headers: vec!["layer".into(), "min".into(), "median".into(), "max".into()],
        rows: layers
            .iter()
            .map(|l| vec![l.layer.clone(), format!("{:.3e}", l.min), format!("{:.3e}", l.median), format!("{:.3e}", l.max)])
            .collect(),
    };
    Group::new("Training")
        .part(objective)
        .part(loss)
        .part(accuracy)
        .part(gradient_chart)
        .part(gradient_table)
}

/// §4.2 and §8.2 on validation examples of the trained model.
fn attention_section(context: &Context) -> Result<Group> {
    let checkpoint = AttentionSource::Checkpoint(context.file(files::TRAINING_DIR));
    let inspector = Inspector::open(&checkpoint)?;
    let mut group = Group::new("Attention");
    let examples = inspector.validation_examples(context.spec.report.attention_examples)?;
    for (index, example) in examples.iter().enumerate() {
        let inspection = inspector.inspect(&example.input)?;
        let analysis = inspection.analyse(&AnalysisOptions::default())?;
        let labels = inspection.tokens.clone();
        let n = labels.len();
        group.parts.push(Box::new(AttentionExplorer {
            title: format!(
                "Example {}: {} → {}",
                index + 1,
                labels.join(" "),
                example.answer.join(" ")
            ),
            tokens: labels.clone(),
            maps: inspection
                .maps
                .layers()
                .iter()
                .map(|heads| heads.iter().map(|map| map.values().to_vec()).collect())
                .collect(),
        }));
        let normalised = heatmap(&analysis.rollout, "rollout").map_err(|source| {
            attnflow_inspect::InspectError::Analysis {
                place: "rollout".into(),
                source,
            }
        })?;
        let figure_map = Heatmap::new("rollout", n, n, normalised.into_values())?
            .with_labels(labels.clone(), labels)?;
        let figure = Figure::single(format!("Rollout, example {}", index + 1), figure_map);
        group.parts.push(Box::new(InlineSvg::render(
            format!("Rollout, example {}", index + 1),
            "Attention rollout (Abnar & Zuidema 2020): per layer 0.5·A + 0.5·I, heads averaged, rows renormalised; shown as the §4.2 heatmap h = a / max a.",
            &figure,
        )?));
        if index == 0 {
            group.parts.push(Box::new(head_table(
                "Per-head statistics, example 1",
                "Mean row entropy (nats), mean attention distance (tokens), weight on the first token and on the diagonal.",
                &analysis.head_summaries(),
            )));
        }
    }
    Ok(group)
}

/// §5.2 and §5.3: transition probabilities estimated from every recorded
/// run, and the absorption analysis.
fn workflow_section(context: &Context) -> Result<Group> {
    let store = crate::steps::open_store(&context.store)?;
    let analyses = analyze(&store, Some("attnflow-pipeline"))
        .map_err(|error| PipelineError::Workflow(error.to_string()))?;
    let mut group = Group::new("Workflow");
    for analysis in analyses {
        let mut rows = Vec::new();
        let intervals = &analysis.uncertainty.transitions;
        for (row, from) in analysis.states.iter().enumerate() {
            for (column, to) in analysis.states.iter().enumerate() {
                let probability = analysis.probabilities[row][column];
                if probability > 0.0 {
                    rows.push(vec![
                        from.clone(),
                        to.clone(),
                        analysis.counts[row][column].to_string(),
                        format!("{probability:.3}"),
                        intervals[row][column]
                            .map(|[low, high]| format!("[{low:.3}, {high:.3}]"))
                            .unwrap_or_default(),
                    ]);
                }
            }
        }
        group.parts.push(Box::new(TrustedSvg {
            title: "State diagram".into(),
            caption: format!(
                "Figure 2/3 as run: edges carry T_ij estimated from {} transitions of {} run(s) in the store. This report is written in OutputGeneration, so this run's last steps (Storage, Completed) are not counted yet; `attnflow workflow analyze --db STORE` shows them.",
                analysis.transitions, analysis.runs
            ),
            svg: state_diagram_svg(
                &analysis.states,
                &analysis.probabilities,
                &analysis.absorption.absorbing,
            ),
        }));
        group.parts.push(Box::new(Table {
            title: "Estimated transition probabilities (§5.2)".into(),
            caption: format!(
                "T_ij = transitions i → j / transitions out of i, over every recorded run of this workflow. {}{}",
                analysis.legend.as_deref().map(|legend| format!("Exact chain: {legend}. ")).unwrap_or_default(),
                analysis.uncertainty.method
            ),
            headers: vec!["from".into(), "to".into(), "count".into(), "T_ij".into(), "95% interval".into()],
            rows,
        }));
        let absorption = &analysis.absorption;
        let mut entries = vec![
            ("absorbing states".into(), absorption.absorbing.join(", ")),
            ("transient states".into(), absorption.transient.join(", ")),
            ("absorption certain".into(), absorption.certain.to_string()),
            (
                "condition (§5.3, corrected)".into(),
                analysis.condition.to_string(),
            ),
        ];
        let uncertainty = &analysis.uncertainty;
        let range = |interval: Option<&[f64; 2]>| {
            interval.map_or(String::new(), |[low, high]| {
                format!(" [{low:.3}, {high:.3}]")
            })
        };
        if let Some(initial) = &analysis.initial {
            for target in &absorption.absorbing {
                if let Some(value) = absorption
                    .absorption_probabilities
                    .get(initial)
                    .and_then(|row| row.get(target))
                {
                    entries.push((
                        format!("P(end in {target}) from {initial}"),
                        format!(
                            "{value:.3}{}",
                            range(
                                uncertainty
                                    .absorption
                                    .get(initial)
                                    .and_then(|row| row.get(target))
                            )
                        ),
                    ));
                }
            }
            if let Some(Some(needed)) = uncertainty.runs_needed.get(initial) {
                entries.push((
                    format!("runs for ±{} on B", uncertainty.target_half_width),
                    format!("{needed} (now {})", analysis.runs),
                ));
            }
        }
        for (state, steps) in &absorption.expected_steps {
            if let Some(steps) = steps {
                entries.push((
                    format!("expected steps from {state}"),
                    format!("{steps:.3}{}", range(uncertainty.expected_steps.get(state))),
                ));
            }
        }
        for warning in &analysis.warnings {
            entries.push(("warning".into(), warning.clone()));
        }
        if let Some(comparison) = &analysis.comparison {
            entries.push((
                "exact vs plain chain".into(),
                format!(
                    "where runs ended after each state, outside the binomial 99% band: exact chain {} of {}, plain chain {} of {}. {}",
                    comparison.outside(false),
                    comparison.predictions.len(),
                    comparison.outside(true),
                    comparison.predictions.len(),
                    comparison.explanation
                ),
            ));
        }
        group.parts.push(Box::new(KeyValues {
            title: "Absorption analysis (§5.3)".into(),
            entries,
        }));
    }
    Ok(group)
}

/// Lays states out in rows by distance from the first state and draws the
/// observed transitions with their probabilities.
fn state_diagram_svg(
    states: &[String],
    probabilities: &[Vec<f64>],
    absorbing: &[String],
) -> String {
    let n = states.len();
    let mut depth = vec![usize::MAX; n];
    if n > 0 {
        depth[0] = 0;
        let mut frontier = vec![0];
        while let Some(from) = frontier.pop() {
            for to in 0..n {
                if probabilities[from][to] > 0.0 && depth[to] == usize::MAX {
                    depth[to] = depth[from] + 1;
                    frontier.insert(0, to);
                }
            }
        }
    }
    let mut columns: BTreeMap<usize, usize> = BTreeMap::new();
    let mut position = vec![(0.0, 0.0); n];
    for index in 0..n {
        let row = if depth[index] == usize::MAX {
            n
        } else {
            depth[index]
        };
        let column = columns.entry(row).or_insert(0);
        position[index] = (90.0 + 170.0 * *column as f64, 40.0 + 80.0 * row as f64);
        *column += 1;
    }
    let width = 90.0 + 170.0 * columns.values().max().copied().unwrap_or(1) as f64;
    let height = 40.0 + 80.0 * (columns.keys().max().copied().unwrap_or(0) + 1) as f64;
    let escape = attnflow_report::escape_html;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\" font-size=\"11\">\
         <defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"#555\"/></marker></defs>"
    );
    for from in 0..n {
        for to in 0..n {
            let probability = probabilities[from][to];
            if probability <= 0.0 {
                continue;
            }
            let (x1, y1) = position[from];
            let (x2, y2) = position[to];
            let (mx, my) = (
                (x1 + x2) / 2.0 + (y2 - y1) * 0.15,
                (y1 + y2) / 2.0 - (x2 - x1) * 0.15,
            );
            svg.push_str(&format!(
                "<path d=\"M{x1:.0},{:.0} Q{mx:.0},{my:.0} {x2:.0},{:.0}\" fill=\"none\" stroke=\"#777\" marker-end=\"url(#arrow)\"/>\
                 <text x=\"{mx:.0}\" y=\"{my:.0}\" fill=\"#26215c\">{probability:.2}</text>",
                y1 + 12.0,
                y2 - 14.0
            ));
        }
    }
    for (index, state) in states.iter().enumerate() {
        let (x, y) = position[index];
        let fill = if absorbing.contains(state) {
            "#d9d4ff"
        } else {
            "#ffffff"
        };
        svg.push_str(&format!(
            "<rect x=\"{:.0}\" y=\"{:.0}\" width=\"140\" height=\"26\" rx=\"6\" fill=\"{fill}\" stroke=\"#26215c\"/>\
             <text x=\"{x:.0}\" y=\"{:.0}\" text-anchor=\"middle\">{}</text>",
            x - 70.0,
            y - 13.0,
            y + 4.0,
            escape(state)
        ));
    }
    svg.push_str("</svg>");
    svg
}

/// The paper's claims, each checked on the shipped engines
/// (`attnflow verify`): the verdict, the rule that decided it and the
/// numbers it was decided from.
fn claims_section() -> Table {
    let checks = check_claims(&ClaimOptions::default());
    Table {
        title: "Claims, checked".into(),
        caption: "Each claim of the paper checked on the engines this build ships; the rule states how the evidence decides the verdict.".into(),
        headers: vec!["claim".into(), "section".into(), "verdict".into(), "rule".into(), "finding".into(), "evidence".into()],
        rows: checks
            .iter()
            .map(|check| {
                vec![
                    check.statement.to_string(),
                    check.section.to_string(),
                    check.status.label().to_string(),
                    check.rule.to_string(),
                    check.finding.clone(),
                    check.evidence.clone(),
                ]
            })
            .collect(),
    }
}
