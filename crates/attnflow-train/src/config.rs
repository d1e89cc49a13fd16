//! Everything that defines a training run: the task, the budget, the
//! optimiser and the objective. Stored in every checkpoint.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::objective::Regulariser;
use crate::optim::AdamWConfig;
use crate::tasks::Task;
use crate::{Result, TrainError};

/// Everything that defines a run. Stored in checkpoints; `Default` gives
/// settings that train the small example models well.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainConfig {
    /// What to learn.
    pub task: Task,
    /// Prompt length of a synthetic task, window length for text; `None`:
    /// 16 for synthetic tasks, the blueprint's input length for text.
    pub length: Option<usize>,
    /// Content symbols of synthetic tasks.
    pub symbols: usize,
    /// Seeds initial weights, data, shuffles and dropout.
    pub seed: u64,
    /// The step budget (updates); the schedule's length.
    pub steps: u64,
    /// Examples per update.
    pub batch_size: usize,
    /// Peak learning rate.
    pub learning_rate: f64,
    /// Learning rate at the end of the cosine decay.
    pub min_learning_rate: f64,
    /// Linear warm-up steps.
    pub warmup_steps: u64,
    /// AdamW settings.
    pub optimizer: AdamWConfig,
    /// Clip the global gradient norm to this; `None` disables clipping.
    pub clip_norm: Option<f64>,
    /// Evaluate every this many steps (and at the end).
    pub eval_every: u64,
    /// Validation examples (text: at most this many windows).
    pub validation_size: usize,
    /// Stop once validation exact-sequence accuracy reaches this.
    pub target_accuracy: Option<f64>,
    /// Stop once validation loss falls to this.
    pub target_loss: Option<f64>,
    /// λ in `J = L + λR`.
    pub lambda: f64,
    /// R in `J = L + λR`.
    pub regulariser: Regulariser,
    /// Log every parameter's gradient norm every this many steps (steps
    /// with a flagged gradient are always logged).
    pub log_every: u64,
    /// Write a checkpoint every this many steps (0: only at the end).
    pub checkpoint_every: u64,
    /// Apply the blueprint's dropout nodes while training.
    pub dropout: bool,
    /// `dim=value` overrides applied to the blueprint.
    pub overrides: Vec<(String, String)>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            task: Task::Reverse,
            length: None,
            symbols: 10,
            seed: 0,
            steps: 1000,
            batch_size: 32,
            learning_rate: 3e-3,
            min_learning_rate: 3e-4,
            warmup_steps: 50,
            optimizer: AdamWConfig::default(),
            clip_norm: Some(1.0),
            eval_every: 100,
            validation_size: 256,
            target_accuracy: None,
            target_loss: None,
            lambda: 0.0,
            regulariser: Regulariser::None,
            log_every: 10,
            checkpoint_every: 0,
            dropout: true,
            overrides: Vec::new(),
        }
    }
}

impl TrainConfig {
    pub(crate) fn check(&self) -> Result<()> {
        let positive = |field: &str, value: u64| {
            if value == 0 {
                Err(TrainError::config(field, "must be at least 1"))
            } else {
                Ok(())
            }
        };
        positive("steps", self.steps)?;
        positive("batch_size", self.batch_size as u64)?;
        positive("eval_every", self.eval_every)?;
        positive("log_every", self.log_every)?;
        let finite_non_negative = |field: &str, value: f64| {
            if value.is_finite() && value >= 0.0 {
                Ok(())
            } else {
                Err(TrainError::config(
                    field,
                    format!("{value} must be a finite number >= 0"),
                ))
            }
        };
        finite_non_negative("learning_rate", self.learning_rate)?;
        finite_non_negative("min_learning_rate", self.min_learning_rate)?;
        finite_non_negative("lambda", self.lambda)?;
        finite_non_negative("weight_decay", self.optimizer.weight_decay)?;
        if let Some(clip) = self.clip_norm {
            if !(clip.is_finite() && clip > 0.0) {
                return Err(TrainError::config(
                    "clip_norm",
                    format!("{clip} must be a positive number"),
                ));
            }
        }
        if self.lambda > 0.0 && self.regulariser == Regulariser::None {
            return Err(TrainError::config(
                "lambda",
                format!(
                    "λ = {} needs a regulariser (entropy or band:W)",
                    self.lambda
                ),
            ));
        }
        if let Some(target) = self.target_accuracy {
            if !(0.0..=1.0).contains(&target) {
                return Err(TrainError::config(
                    "target_accuracy",
                    format!("{target} is not in [0, 1]"),
                ));
            }
        }
        Ok(())
    }
}

/// A blueprint spec's text and the name it is known by.
#[derive(Clone, Debug)]
pub struct BlueprintSource {
    /// The file name used in messages.
    pub file: String,
    /// The TOML text.
    pub text: String,
}

impl BlueprintSource {
    /// Reads a spec file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| TrainError::io(path, source))?;
        Ok(Self {
            file: path.display().to_string(),
            text,
        })
    }
}
