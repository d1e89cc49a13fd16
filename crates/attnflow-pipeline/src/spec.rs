//! The pipeline spec: which data, schema, blueprint, training budget,
//! validation threshold and report settings a run uses.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{PipelineError, Result};

/// A pipeline spec as read from TOML. Paths are relative to the spec file.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    /// Name and description.
    pub pipeline: PipelineInfo,
    /// Data sources and their quality criteria.
    pub data: DataSection,
    /// The architecture to train.
    pub model: ModelSection,
    /// The training budget and objective.
    pub train: TrainSection,
    /// What a trained model must reach.
    pub validate: ValidateSection,
    /// What the report shows.
    #[serde(default)]
    pub report: ReportSection,
}

/// Name and description of a pipeline.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineInfo {
    /// Short name, shown in the report title.
    pub name: String,
    /// One sentence on what the pipeline does.
    #[serde(default)]
    pub description: String,
}

/// Data sources and schema.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    /// The schema (attnflow-data TOML) with the quality criteria `I(d)`.
    pub schema: PathBuf,
    /// CSV, JSON Lines or Parquet files with fields `input` and `target`
    /// (token lists).
    pub sources: Vec<PathBuf>,
    /// The run stops in ErrorHandling when a larger share is quarantined.
    #[serde(default = "default_max_quarantine_share")]
    pub max_quarantine_share: f64,
}

fn default_max_quarantine_share() -> f64 {
    0.05
}

/// The architecture.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// The blueprint (attnflow-blueprint TOML).
    pub blueprint: PathBuf,
}

/// Training settings.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSection {
    /// Step budget.
    pub steps: u64,
    /// Examples per step.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Peak learning rate.
    #[serde(default = "default_learning_rate")]
    pub learning_rate: f64,
    /// Evaluate every this many steps.
    #[serde(default = "default_eval_every")]
    pub eval_every: u64,
    /// Checkpoint every this many steps (so a crash loses little).
    #[serde(default = "default_eval_every")]
    pub checkpoint_every: u64,
    /// Stop early at this exact-sequence validation accuracy.
    pub target_accuracy: Option<f64>,
    /// Held-out examples for validation.
    #[serde(default = "default_validation_size")]
    pub validation_size: usize,
    /// Seed of initialisation, shuffling and dropout.
    #[serde(default)]
    pub seed: u64,
    /// λ of `J = L + λR` (§7.1).
    #[serde(default)]
    pub lambda: f64,
    /// The attention regulariser R: `none`, `entropy` or `band:W`.
    #[serde(default = "default_regulariser")]
    pub regulariser: String,
    /// The workers' queue the Training step goes to when the run is
    /// submitted (`attnflow worker --queue gpu`); the other steps stay on
    /// `default`.
    #[serde(default)]
    pub queue: Option<String>,
}

fn default_batch_size() -> usize {
    32
}
fn default_learning_rate() -> f64 {
    3e-3
}
fn default_eval_every() -> u64 {
    100
}
fn default_validation_size() -> usize {
    256
}
fn default_regulariser() -> String {
    "none".to_string()
}

/// The validation threshold.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ValidateSection {
    /// Exact-sequence accuracy the model must reach on held-out records.
    pub min_sequence_accuracy: f64,
}

/// Report settings.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReportSection {
    /// Validation examples whose attention the report shows.
    #[serde(default = "default_attention_examples")]
    pub attention_examples: usize,
}

fn default_attention_examples() -> usize {
    2
}

impl Default for ReportSection {
    fn default() -> Self {
        Self {
            attention_examples: default_attention_examples(),
        }
    }
}

impl PipelineSpec {
    /// Reads and checks a spec file; errors name the file, line and column.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| PipelineError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses spec text read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Self> {
        let spec: PipelineSpec = toml::from_str(text).map_err(|error| {
            let (line, column) = error
                .span()
                .map(|span| line_column(text, span.start))
                .unwrap_or((1, 1));
            PipelineError::Spec {
                path: path.to_path_buf(),
                line,
                column,
                message: error.message().to_string(),
            }
        })?;
        spec.check(path, text)?;
        Ok(spec)
    }

    fn check(&self, path: &Path, text: &str) -> Result<()> {
        let fault = |key: &str, message: String| {
            let offset = text
                .find(&format!("{key} ="))
                .or_else(|| text.find(key))
                .unwrap_or(0);
            let (line, column) = line_column(text, offset);
            Err(PipelineError::Spec {
                path: path.to_path_buf(),
                line,
                column,
                message,
            })
        };
        if self.data.sources.is_empty() {
            return fault(
                "sources",
                "`sources` must name at least one data file".into(),
            );
        }
        if !(0.0..=1.0).contains(&self.data.max_quarantine_share) {
            return fault(
                "max_quarantine_share",
                format!(
                    "{} is not a share in [0, 1]",
                    self.data.max_quarantine_share
                ),
            );
        }
        if !(0.0..=1.0).contains(&self.validate.min_sequence_accuracy) {
            return fault(
                "min_sequence_accuracy",
                format!(
                    "{} is not an accuracy in [0, 1]",
                    self.validate.min_sequence_accuracy
                ),
            );
        }
        if self.train.steps == 0 {
            return fault("steps", "`steps` must be at least 1".into());
        }
        if let Some(queue) = &self.train.queue {
            if !attnflow_workflow::spec::is_queue_name(queue) {
                return fault(
                    "queue",
                    format!(
                        "queue name `{queue}` must be 1 to 64 letters, digits, `_`, `-` or `.`"
                    ),
                );
            }
        }
        Ok(())
    }
}

/// 1-based line and column of a byte offset.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// The embedded default pipeline, schema, blueprint and workflow.
pub mod embedded {
    /// The default pipeline spec.
    pub const PIPELINE: &str = include_str!("default/pipeline.toml");
    /// The default schema.
    pub const SCHEMA: &str = include_str!("default/schema.toml");
    /// The default blueprint: a small bidirectional encoder.
    pub const BLUEPRINT: &str = include_str!("../../../examples/train/reverse.toml");
    /// The workflow every pipeline runs as.
    pub const WORKFLOW: &str = include_str!("default/workflow.toml");
}
