//! Workflow: the Markov analysis of one workflow's recorded runs (§5.2,
//! §5.3) from attnflow-workflow's `analyze`: the estimated transition
//! matrix as a heatmap, absorption probabilities and expected steps with
//! their posterior intervals, and the state diagram, drawn as SVG by
//! attnflow-report.

use attnflow_report::{state_diagram_svg, Figure, Heatmap, ImageFormat};
use attnflow_workflow::report::{analyze, AnalysisError, WorkflowAnalysis};
use maud::{html, Markup};

use crate::app::App;
use crate::error::{PageError, PageResult};
use crate::html::{drawn_svg, href, number, page, Frame};
use crate::query::Params;
use crate::stores::workflow_error;

fn heatmap(analysis: &WorkflowAnalysis) -> PageResult<String> {
    let n = analysis.states.len();
    let values: Vec<f64> = analysis.probabilities.iter().flatten().copied().collect();
    let drawing_error =
        |error: attnflow_report::ReportError| PageError::internal(error.to_string());
    let map = Heatmap::new("T", n, n, values)
        .and_then(|map| map.with_labels(analysis.states.clone(), analysis.states.clone()))
        .map_err(drawing_error)?;
    let figure = Figure::single(
        format!(
            "Estimated transition matrix T of {} (rows: from, columns: to)",
            analysis.workflow
        ),
        map,
    )
    .with_scale(0.0, 1.0)
    .with_scale_label("T_ij");
    let svg = figure.render(ImageFormat::Svg).map_err(drawing_error)?;
    Ok(String::from_utf8_lossy(&svg).into_owned())
}

/// `value [low, high]`, the interval only where there is one.
fn with_interval(value: Option<f64>, interval: Option<&[f64; 2]>) -> Markup {
    html! {
        (number(value, 3))
        @if let Some([low, high]) = interval {
            " " span.interval { "[" (number(Some(*low), 3)) ", " (number(Some(*high), 3)) "]" }
        }
    }
}

fn analysis_section(analysis: &WorkflowAnalysis) -> PageResult<Markup> {
    let absorption = &analysis.absorption;
    let uncertainty = &analysis.uncertainty;
    let transient: Vec<&String> = absorption
        .fundamental_states
        .iter()
        .filter(|state| absorption.absorption_probabilities.contains_key(*state))
        .collect();
    Ok(html! {
        p {
            (analysis.transitions) " transitions of " (analysis.runs) " runs. "
            @if let Some(initial) = &analysis.initial { "Initial state " code { (initial) } ". " }
        }
        @if !analysis.unobserved_exits.is_empty() {
            p.notice {
                "No exit has been recorded from " (analysis.unobserved_exits.join(", "))
                " (runs still there, or crashed there); this estimate treats them as absorbing."
            }
        }
        section #matrix {
            h2 { "Transition matrix (§5.2)" }
            figure.heatmap { (drawn_svg(heatmap(analysis)?)) }
            p.hint { "Each cell: estimated T_ij, its interval, and (the transitions counted). " (uncertainty.method) }
            @if let Some(legend) = &analysis.legend { p.hint { "Exact chain: " (legend) "." } }
            table.matrix {
                thead { tr { th { "from \\ to" } @for state in &analysis.states { th { (state) } } } }
                tbody {
                    @for (row, from) in analysis.states.iter().enumerate() {
                        tr {
                            th { (from) }
                            @for column in 0..analysis.states.len() {
                                @let count = analysis.counts[row][column];
                                td.number title={ (count) " transitions" } {
                                    @if count > 0 {
                                        (with_interval(
                                            Some(analysis.probabilities[row][column]),
                                            uncertainty.transitions[row][column].as_ref(),
                                        ))
                                        " (" (count) ")"
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        section #absorption {
            h2 { "Absorption (§5.3)" }
            p {
                "Absorbing: " (absorption.absorbing.join(", ")) ". Absorption is "
                strong { @if absorption.certain { "certain" } @else { "not certain" } }
                " (" (analysis.condition) ")."
            }
            @for warning in &analysis.warnings { p.notice { (warning) } }
            @if !absorption.never_absorbed.is_empty() {
                p.notice { "Never absorbed from: " (absorption.never_absorbed.join(", ")) "." }
            }
            table.absorption {
                thead {
                    tr {
                        th { "from" }
                        th { "expected steps" }
                        th { "variance" }
                        @for target in &absorption.absorbing { th { "P(end in " (target) ")" } }
                        th { "runs for ±" (uncertainty.target_half_width) }
                    }
                }
                tbody {
                    @for state in &transient {
                        tr {
                            th { (state) }
                            td.number {
                                (with_interval(
                                    absorption.expected_steps.get(*state).copied().flatten(),
                                    uncertainty.expected_steps.get(*state),
                                ))
                            }
                            td.number { (number(absorption.steps_variance.get(*state).copied().flatten(), 3)) }
                            @for target in &absorption.absorbing {
                                td.number {
                                    (with_interval(
                                        absorption.absorption_probabilities.get(*state).and_then(|row| row.get(target)).copied(),
                                        uncertainty.absorption.get(*state).and_then(|row| row.get(target)),
                                    ))
                                }
                            }
                            td.number {
                                @match uncertainty.runs_needed.get(*state) {
                                    Some(Some(needed)) => (needed),
                                    _ => "-",
                                }
                            }
                        }
                    }
                }
            }
        }
        section #diagram {
            h2 { "State diagram" }
            figure.diagram {
                (drawn_svg(state_diagram_svg(&analysis.states, &analysis.probabilities, &absorption.absorbing)))
                figcaption { "Edges carry the estimated T_ij; absorbing states are shaded." }
            }
        }
    })
}

/// The Workflow page: one workflow's analysis, or the list to choose from.
pub fn render(app: &App, params: &Params, frame: &Frame) -> PageResult<Markup> {
    let store = app.workflow_stores.get(&app.store)?;
    let workflows = store
        .workflow_counts()
        .map_err(|error| workflow_error(&error))?;
    let name = params
        .get("name")
        .map(str::to_owned)
        .or_else(|| (workflows.len() == 1).then(|| workflows[0].0.clone()));
    let Some(name) = name else {
        let body = html! {
            @if workflows.is_empty() {
                p.notice { "The store holds no workflow runs yet." }
            } @else {
                p { "Choose a workflow:" }
                ul { @for (name, count) in &workflows { li { a href=(href("/workflow", &[("name", name)])) { (name) } " (" (count) " runs)" } } }
            }
        };
        return Ok(page("Workflow", "/workflow", frame, body));
    };
    let analyses = match analyze(&store, Some(&name)) {
        Ok(analyses) => analyses,
        Err(AnalysisError::Empty(message)) => {
            let body = html! { p.notice { (message) } };
            return Ok(page(&format!("Workflow {name}"), "/workflow", frame, body));
        }
        Err(AnalysisError::Store(error)) => return Err(workflow_error(&error)),
        Err(error) => return Err(PageError::internal(error.to_string())),
    };
    let sections = analyses
        .iter()
        .map(analysis_section)
        .collect::<PageResult<Vec<Markup>>>()?;
    let body = html! {
        @if workflows.len() > 1 {
            nav.choices { @for (other, _) in &workflows { a href=(href("/workflow", &[("name", other)])) { (other) } " " } }
        }
        @for section in sections { (section) }
    };
    Ok(page(&format!("Workflow {name}"), "/workflow", frame, body))
}
