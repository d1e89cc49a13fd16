//! Whether a blueprint can see what a task asks for, before training.
//!
//! Each synthetic task says how far back (and, for bidirectional models,
//! forward) an output position must look: reverse and sort need every
//! answer position to see every prompt position, copy needs the lag from
//! prompt to answer, recall the distance from the first key to the query; a pairs file
//! is taken to need every input token for every target token.
//! The blueprint's receptive field (attnflow-blueprint's
//! [`receptive::summary`], the `R` of `M = (I, O, F, R)`) says how far it
//! can look. When it falls short, no amount of training helps, so the
//! trainer says so before the first step, with the `--set` values that
//! would make it fit.

use attnflow_blueprint::{receptive, Blueprint, Extent, Reach};
use serde::{Deserialize, Serialize};

use crate::tasks::{Dataset, Format, Task};
use crate::trainer::BlueprintSource;

/// What a task needs against what a blueprint sees.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReachCheck {
    /// The task.
    pub task: String,
    /// Positions before an output position that it must see.
    pub needed_back: u64,
    /// Positions after it (bidirectional layouts).
    pub needed_forward: u64,
    /// Why, in words.
    pub reason: String,
    /// The blueprint's reach, as `blueprint show` describes it.
    pub available: String,
    /// Positions before an output position it sees (`None`: unbounded).
    pub available_back: Option<u64>,
    /// Positions after it (`None`: unbounded).
    pub available_forward: Option<u64>,
    /// Whether the blueprint sees what the task needs.
    pub fits: bool,
    /// `--set DIM=VALUE` changes that would make it fit, smallest values.
    pub fixes: Vec<String>,
}

impl ReachCheck {
    /// The warning for people: both numbers and the fix.
    pub fn message(&self) -> String {
        let side = |value: Option<u64>| value.map_or("unbounded".to_string(), |v| v.to_string());
        let fix = if self.fixes.is_empty() {
            "no single --set makes it fit; widen the attention mask in the blueprint".to_string()
        } else {
            format!("fix: {}", self.fixes.join(" or "))
        };
        format!(
            "task `{}` needs each output to see {} position(s) back and {} forward ({}), but the blueprint's receptive field reaches {} back and {} forward ({}); training cannot succeed. {fix}",
            self.task,
            self.needed_back,
            self.needed_forward,
            self.reason,
            side(self.available_back),
            side(self.available_forward),
            self.available
        )
    }
}

/// Positions back and forward the task needs, and why; `None` for text
/// (next-token prediction has no fixed dependence).
pub fn task_needs(dataset: &Dataset) -> Option<(u64, u64, String)> {
    let (prompt, answer) = dataset.lengths();
    let (p, a) = (prompt as u64, answer as u64);
    let span = p.saturating_sub(1);
    let everything = |what: &str| match dataset.format() {
        Format::Aligned if p == a => (
            span,
            span,
            format!("{what}: up to {span} positions either way"),
        ),
        // Answers follow the prompt (after SEP, or in SLOT positions): the
        // last answer position must see the first prompt token.
        _ => (
            p + a - 1,
            0,
            format!(
                "{what}: the last answer position is {} after the first prompt token",
                p + a - 1
            ),
        ),
    };
    Some(match (dataset.task(), dataset.format()) {
        (Task::Text { .. }, _) => return None,
        (Task::Copy, Format::Autoregressive) => (
            p,
            0,
            format!("answer token k copies prompt token k, {p} positions back"),
        ),
        (Task::Copy, Format::Aligned) => (0, 0, "each output copies its own position".into()),
        (Task::Reverse, Format::Autoregressive) => (
            2 * p - 1,
            0,
            format!(
                "the last answer token is the first prompt token, {} positions back",
                2 * p - 1
            ),
        ),
        (Task::Reverse | Task::Sort, _) => {
            everything("every answer token depends on every prompt token")
        }
        (Task::Recall, _) => everything("the answer must find the first key"),
        (Task::Pairs { .. }, _) => everything("a target token may depend on any input token"),
    })
}

fn reach_of(blueprint: &Blueprint, token_input: &str, logits: &str) -> Option<Reach> {
    receptive::summary(blueprint)
        .receptive
        .into_iter()
        .find(|relation| relation.output == logits && relation.input == token_input)
        .map(|relation| relation.reach)
}

fn sides(reach: Reach) -> (Option<u64>, Option<u64>) {
    let finite = |extent: Extent| match extent {
        Extent::Finite(value) => Some(value),
        Extent::Unbounded => None,
    };
    match reach {
        Reach::Relative { back, forward } => (finite(back), finite(forward)),
        Reach::Prefix { .. } | Reach::All => (None, None),
    }
}

fn covers(available: Option<u64>, needed: u64) -> bool {
    available.is_none_or(|value| value >= needed)
}

/// Checks `blueprint` (checked from `source` with `overrides`) against the
/// task of `dataset`; `None` for text, or when the blueprint has no reach
/// from `token_input` to `logits`.
pub fn check_reach(
    source: &BlueprintSource,
    overrides: &[(String, String)],
    blueprint: &Blueprint,
    (token_input, logits): (&str, &str),
    dataset: &Dataset,
) -> Option<ReachCheck> {
    let (needed_back, needed_forward, reason) = task_needs(dataset)?;
    let reach = reach_of(blueprint, token_input, logits)?;
    let (available_back, available_forward) = sides(reach);
    let fits_with = |reach: Reach| {
        let (back, forward) = sides(reach);
        covers(back, needed_back) && covers(forward, needed_forward)
    };
    let fits = fits_with(reach);
    let mut fixes = Vec::new();
    if !fits {
        for (dim, value) in &blueprint.dims {
            let fits_at = |candidate: u64| {
                let mut trial: Vec<(String, String)> = overrides
                    .iter()
                    .filter(|(name, _)| name != dim)
                    .cloned()
                    .collect();
                trial.push((dim.clone(), candidate.to_string()));
                Blueprint::from_text(&source.file, &source.text, &trial)
                    .ok()
                    .and_then(|checked| reach_of(&checked, token_input, logits))
                    .is_some_and(fits_with)
            };
            let value = *value;
            let ceiling = value.max(1) + 4 * (needed_back + needed_forward + 1);
            if !fits_at(ceiling) {
                continue;
            }
            // Reach grows with the dim: the smallest value that fits.
            let (mut low, mut high) = (value, ceiling);
            while high - low > 1 {
                let middle = low + (high - low) / 2;
                if fits_at(middle) {
                    high = middle;
                } else {
                    low = middle;
                }
            }
            fixes.push(format!("--set {dim}={high}"));
        }
    }
    Some(ReachCheck {
        task: dataset.task().name(),
        needed_back,
        needed_forward,
        reason,
        available: reach.describe(),
        available_back,
        available_forward,
        fits,
        fixes,
    })
}
