//! The training loop: `J = L + λR` (§7.1), AdamW with warm-up and cosine
//! decay, global-norm clipping, evaluation every K steps, stopping on a
//! target or the step budget, gradient-flow logging (§2.3), checkpoints.
//!
//! ```no_run
//! use attnflow_train::{tasks::Task, trainer::BlueprintSource, TrainConfig, Trainer};
//! use std::ops::ControlFlow;
//!
//! let source = BlueprintSource::from_file("examples/train/reverse.toml".as_ref())?;
//! let config = TrainConfig { task: Task::Reverse, steps: 500, ..TrainConfig::default() };
//! let mut trainer = Trainer::new(source, config)?.with_output("runs/reverse".as_ref())?;
//! let report = trainer.run(|progress| {
//!     eprintln!("step {} loss {:.3}", progress.step, progress.metrics.loss);
//!     ControlFlow::Continue(())
//! })?;
//! println!("{}", serde_json::to_string_pretty(&report).unwrap());
//! # Ok::<(), attnflow_train::TrainError>(())
//! ```

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

use attnflow_blueprint::Blueprint;
use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::checkpoint::{self, CheckpointMeta, FileRecord, META_FILE, SPEC_FILE};
use crate::gradflow::{self, GradientFlow, GradientFlowReport, GradientRecord};
use crate::model::{Capture, Mode, Model};
use crate::objective::{self, Regulariser};
use crate::optim::{self, AdamW};
use crate::reach::{check_reach, ReachCheck};
use crate::rng::Rng;
use crate::setup::Setup;
use crate::tasks::{self, Batch, DataPosition, Dataset, Format};
use crate::{Result, TrainError};

pub use crate::config::{BlueprintSource, TrainConfig};

/// The training quantities of one update.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    /// The update (1-based).
    pub step: u64,
    /// Cross-entropy `L`.
    pub loss: f64,
    /// The regulariser `R` (absent when none is configured).
    pub regulariser: Option<f64>,
    /// `J = L + λR`.
    pub objective: f64,
    /// The learning rate used.
    pub learning_rate: f64,
    /// Global gradient norm before clipping.
    pub gradient_norm: f64,
    /// Input tokens processed.
    pub tokens: usize,
    /// Input tokens per second over this run so far.
    pub tokens_per_second: f64,
}

/// Validation results.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Updates completed when evaluated.
    pub step: u64,
    /// Mean cross-entropy over scored targets.
    pub loss: f64,
    /// Fraction of scored targets predicted right (arg-max).
    pub token_accuracy: f64,
    /// Fraction of examples with every scored target right.
    pub sequence_accuracy: f64,
    /// Mean attention entropy (nats) over every head of every attention node.
    pub attention_entropy: Option<f64>,
    /// Validation examples.
    pub examples: usize,
}

/// Why a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The step budget was used up.
    Budget,
    /// A target metric was reached.
    Target,
    /// The progress callback asked to stop.
    Interrupted,
}

/// What the progress callback sees after each update.
#[derive(Clone, Debug)]
pub struct Progress<'a> {
    /// Updates completed.
    pub step: u64,
    /// The step budget.
    pub steps: u64,
    /// This update's quantities.
    pub metrics: &'a StepMetrics,
    /// The evaluation made at this step, if any.
    pub evaluation: Option<&'a Evaluation>,
}

/// The outcome of a run; serialisable for `--json` and pipelines.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainReport {
    /// The blueprint's name.
    pub blueprint: String,
    /// Its hash (as checkpoints record it).
    pub blueprint_hash: String,
    /// The task.
    pub task: String,
    /// How examples were laid out.
    pub format: Format,
    /// Model input length.
    pub sequence_length: usize,
    /// Token ids the task uses.
    pub task_vocab: usize,
    /// Trainable scalars.
    pub parameters: usize,
    /// Updates completed in total.
    pub step: u64,
    /// Updates made by this run (less than `step` after a resume).
    pub steps_this_run: u64,
    /// Why it ended.
    pub stop_reason: StopReason,
    /// Seconds this run took.
    pub elapsed_seconds: f64,
    /// Input tokens per second in this run.
    pub tokens_per_second: f64,
    /// The last update's quantities.
    pub last_step: Option<StepMetrics>,
    /// Every evaluation of this run.
    pub evaluations: Vec<Evaluation>,
    /// Gradient-flow summary and flags (§2.3), over all logged steps.
    pub gradient_flow: GradientFlowReport,
    /// The task's needed reach against the blueprint's receptive field,
    /// checked before the first step (`None` for text and pairs tasks).
    #[serde(default)]
    pub receptive_field: Option<ReachCheck>,
    /// The output directory, when the run wrote one.
    pub output: Option<PathBuf>,
}

/// The full result of one update, for callers that inspect gradients.
pub struct StepOutcome {
    /// The update's quantities.
    pub metrics: StepMetrics,
    /// candle's gradients of `J` (before clipping).
    pub gradients: GradStore,
    /// Each parameter's gradient norm, in [`Trainer::parameter_names`] order.
    pub norms: Vec<f64>,
}

struct Logs {
    metrics: BufWriter<File>,
    evaluations: BufWriter<File>,
    gradients: BufWriter<File>,
}

/// One line of [`StepMetrics`] per step, in a training directory.
pub const METRICS_FILE: &str = "metrics.jsonl";
/// One line per evaluation.
pub const EVAL_FILE: &str = "eval.jsonl";
/// One [`GradientRecord`] line per logged step.
pub const GRADIENTS_FILE: &str = "grad_norms.jsonl";
/// The [`TrainReport`] of the run.
pub const REPORT_FILE: &str = "report.json";

/// Trains one model from one blueprint on one task.
pub struct Trainer {
    config: TrainConfig,
    source: BlueprintSource,
    blueprint: Blueprint,
    blueprint_hash: String,
    model: Model,
    dataset: Dataset,
    optimizer: AdamW,
    rng: Rng,
    position: DataPosition,
    step: u64,
    token_input: String,
    other_index_inputs: Vec<String>,
    logits: String,
    parameter_shapes: Vec<(String, Vec<usize>)>,
    gradient_flow: GradientFlow,
    reach: Option<ReachCheck>,
    output: Option<PathBuf>,
    logs: Option<Logs>,
    last_checkpoint: Option<(PathBuf, u64)>,
}

impl Trainer {
    /// Checks the blueprint and the configuration against each other and
    /// builds the model with seeded initial weights.
    pub fn new(source: BlueprintSource, config: TrainConfig) -> Result<Self> {
        config.check()?;
        attnflow_core::process::keep_freed_memory();
        attnflow_core::process::one_worker_pool();
        let Setup {
            blueprint,
            blueprint_hash,
            model,
            dataset,
            token_input,
            other_index_inputs,
            logits,
            parameters,
            parameter_shapes,
        } = Setup::build(&source, &config)?;
        let optimizer = AdamW::new(parameters, config.optimizer)?;
        let rng = Rng::derive(config.seed, "dropout", 0);
        let gradient_flow = GradientFlow::new(&blueprint);
        let reach = check_reach(
            &source,
            &config.overrides,
            &blueprint,
            (&token_input, &logits),
            &dataset,
        );
        Ok(Self {
            config,
            source,
            blueprint,
            blueprint_hash,
            model,
            dataset,
            optimizer,
            rng,
            position: DataPosition::default(),
            step: 0,
            token_input,
            other_index_inputs,
            logits,
            parameter_shapes,
            gradient_flow,
            reach,
            output: None,
            logs: None,
            last_checkpoint: None,
        })
    }

    /// Writes logs, checkpoints and the report into `directory`, which must
    /// not already hold a checkpoint (resume with [`Trainer::resume`]).
    pub fn with_output(mut self, directory: &Path) -> Result<Self> {
        let meta = directory.join(META_FILE);
        if meta.exists() {
            return Err(TrainError::config(
                "out",
                format!(
                    "{} already holds a checkpoint; resume from it or choose another output directory",
                    directory.display()
                ),
            ));
        }
        std::fs::create_dir_all(directory).map_err(|source| TrainError::io(directory, source))?;
        checkpoint::write_atomically(&directory.join(SPEC_FILE), self.source.text.as_bytes())?;
        for file in [METRICS_FILE, EVAL_FILE, GRADIENTS_FILE] {
            checkpoint::write_atomically(&directory.join(file), b"")?;
        }
        self.logs = Some(open_logs(directory)?);
        self.output = Some(directory.to_path_buf());
        Ok(self)
    }

    /// Continues the run checkpointed in `directory`, with the spec saved
    /// there or `source` (which must be the same blueprint), optionally a
    /// new step budget (changing it changes the schedule, so the result is
    /// then no longer identical to an uninterrupted run).
    pub fn resume(
        directory: &Path,
        source: Option<BlueprintSource>,
        steps: Option<u64>,
    ) -> Result<Self> {
        let meta = checkpoint::read_meta(directory)?;
        let source = match source {
            Some(source) => source,
            None => checkpoint::saved_source(directory)?,
        };
        let mut config = meta.config.clone();
        if let Some(steps) = steps {
            config.steps = steps;
        }
        let mut trainer = Self::new(source, config)?;
        checkpoint::check_blueprint(
            directory,
            &meta,
            &trainer.blueprint.name,
            &trainer.blueprint_hash,
        )?;
        trainer.load_checkpoint(directory)?;
        // Drop log lines of steps after the checkpoint: they will be redone.
        for file in [METRICS_FILE, EVAL_FILE, GRADIENTS_FILE] {
            truncate_log(&directory.join(file), trainer.step)?;
        }
        let gradient_log = directory.join(GRADIENTS_FILE);
        for (number, line) in read_lines(&gradient_log)?.iter().enumerate() {
            let record: GradientRecord =
                serde_json::from_str(line).map_err(|error| TrainError::Data {
                    path: gradient_log.clone(),
                    message: format!("line {}: {error}", number + 1),
                })?;
            trainer.gradient_flow.push(record);
        }
        if !directory.join(SPEC_FILE).exists() {
            checkpoint::write_atomically(
                &directory.join(SPEC_FILE),
                trainer.source.text.as_bytes(),
            )?;
        }
        trainer.logs = Some(open_logs(directory)?);
        trainer.output = Some(directory.to_path_buf());
        trainer.last_checkpoint = Some((directory.to_path_buf(), trainer.step));
        Ok(trainer)
    }

    fn load_checkpoint(&mut self, directory: &Path) -> Result<()> {
        let loaded = checkpoint::load(directory, self.model.device())?;
        let weights_path = directory.join(&loaded.meta.weights.file);
        let optimizer_path = directory.join(&loaded.meta.optimizer.file);
        let weights =
            checkpoint::take_tensors(&weights_path, loaded.weights, &self.parameter_shapes)?;
        let mut moment_shapes = Vec::with_capacity(2 * self.parameter_shapes.len());
        for (name, shape) in &self.parameter_shapes {
            moment_shapes.push((format!("m.{name}"), shape.clone()));
            moment_shapes.push((format!("v.{name}"), shape.clone()));
        }
        let moments = checkpoint::take_tensors(&optimizer_path, loaded.optimizer, &moment_shapes)?;
        for ((_, var), value) in self.optimizer.parameters().iter().zip(&weights) {
            var.set(value)?;
        }
        let (first, second): (Vec<_>, Vec<_>) = moments
            .chunks(2)
            .map(|pair| (pair[0].clone(), pair[1].clone()))
            .unzip();
        self.optimizer.restore(first, second, loaded.meta.step)?;
        self.step = loaded.meta.step;
        self.rng = loaded.meta.rng;
        self.position = loaded.meta.data;
        Ok(())
    }

    /// The model being trained.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The task's data.
    pub fn dataset(&self) -> &Dataset {
        &self.dataset
    }

    /// The task's needed reach against the blueprint's receptive field,
    /// checked when the trainer was built (`None` for text and pairs).
    pub fn reach(&self) -> Option<&ReachCheck> {
        self.reach.as_ref()
    }

    /// The configuration.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// Updates completed.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// The blueprint's hash as checkpoints record it.
    pub fn blueprint_hash(&self) -> &str {
        &self.blueprint_hash
    }

    /// Parameter names in the order of norms and checkpoints.
    pub fn parameter_names(&self) -> Vec<String> {
        self.parameter_shapes
            .iter()
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// The current weights, by parameter name.
    pub fn weights(&self) -> Vec<(String, Tensor)> {
        self.optimizer
            .parameters()
            .iter()
            .map(|(name, var)| (name.clone(), var.as_tensor().clone()))
            .collect()
    }

    fn inputs(&self, batch: &Batch) -> Result<BTreeMap<String, Tensor>> {
        let mut inputs = BTreeMap::new();
        inputs.insert(self.token_input.clone(), batch.tokens.clone());
        for name in &self.other_index_inputs {
            // Segment ids and the like: all zero (one segment).
            inputs.insert(name.clone(), batch.tokens.zeros_like()?);
        }
        Ok(inputs)
    }

    /// Whether `R` is part of the trained objective (and so needs the
    /// attention weights inside the training pass).
    fn regularised(&self) -> bool {
        self.config.regulariser != Regulariser::None && self.config.lambda != 0.0
    }

    /// One update: forward, `J = L + λR`, backward, gradient norms (logged),
    /// clipping, AdamW. Fails without updating when the loss, objective or
    /// a gradient is not finite.
    pub fn step(&mut self) -> Result<StepOutcome> {
        attnflow_kernels::threads::install(|| self.step_on_pool())
    }

    fn step_on_pool(&mut self) -> Result<StepOutcome> {
        let started = Instant::now();
        let examples = self
            .dataset
            .next_examples(&mut self.position, self.config.batch_size);
        let batch = tasks::collate(&examples, self.model.device())?;
        let inputs = self.inputs(&batch)?;
        // Only a trained R needs the weights in the training pass: asking for
        // them switches attention from core's fused kernel to the exact path,
        // whose last bits differ, so with λ = 0 the pass stays plain.
        let capture = self.regularised().then(Capture::all);
        let dropout = self.config.dropout;
        let mut dropout_rng = self.rng.clone();
        let forward = {
            let mode = if dropout {
                Mode::Train {
                    rng: &mut dropout_rng,
                }
            } else {
                Mode::Eval
            };
            self.model.forward(&inputs, mode, capture.as_ref())?
        };
        self.rng = dropout_rng;
        let logits = &forward.outputs[&self.logits];
        let loss = objective::cross_entropy(logits, &batch.targets, &batch.weights)?;
        let regulariser = if self.regularised() {
            self.config.regulariser.value(&forward.attention)?
        } else if self.config.regulariser != Regulariser::None {
            // λ = 0: R is measured on this batch by a separate pass without
            // dropout, leaving the training computation untouched.
            let measured = self
                .model
                .forward(&inputs, Mode::Eval, Some(&Capture::all()))?;
            self.config
                .regulariser
                .value(&measured.attention)?
                .map(|value| value.detach())
        } else {
            None
        };
        // §7.1: J = L + λR. With λ = 0 the graph is L alone, so training is
        // exactly plain cross-entropy; R is still measured and logged.
        let objective = match &regulariser {
            Some(value) if self.config.lambda != 0.0 => {
                (&loss + value.affine(self.config.lambda, 0.0)?)?
            }
            _ => loss.clone(),
        };
        let scalar =
            |t: &Tensor| -> Result<f64> { Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?) };
        let loss_value = scalar(&loss)?;
        let regulariser_value = regulariser.as_ref().map(scalar).transpose()?;
        let objective_value = scalar(&objective)?;
        let step = self.step + 1;
        for (what, value) in [("loss", loss_value), ("objective", objective_value)] {
            if !value.is_finite() {
                return Err(self.non_finite(step, what.into(), value));
            }
        }
        let gradients = objective.backward()?;
        let parameters = self.optimizer.parameters().to_vec();
        let measured = gradflow::gradient_norms(&parameters, &gradients)?;
        let norms: Vec<f64> = measured.iter().map(|(_, norm)| *norm).collect();
        let total_norm = gradflow::global_norm(&norms);
        let record = GradientRecord {
            step,
            total_norm,
            norms: parameters
                .iter()
                .zip(&norms)
                .map(|((name, _), norm)| (name.clone(), *norm))
                .collect(),
            missing: parameters
                .iter()
                .zip(&measured)
                .filter(|(_, (gradient, _))| gradient.is_none())
                .map(|((name, _), _)| name.clone())
                .collect(),
        };
        let flagged = !self.gradient_flow.flags_of(&record).is_empty();
        if step % self.config.log_every == 0 || flagged || step == 1 {
            if let Some(logs) = &mut self.logs {
                write_line(&mut logs.gradients, &record, GRADIENTS_FILE)?;
            }
            self.gradient_flow.push(record);
        }
        if let Some(((name, _), norm)) = parameters
            .iter()
            .zip(&norms)
            .find(|(_, norm)| !norm.is_finite())
        {
            if let Some(logs) = &mut self.logs {
                let _ = logs.gradients.flush();
            }
            return Err(self.non_finite(step, format!("gradient of `{name}`"), *norm));
        }
        let learning_rate = optim::learning_rate(
            self.step,
            self.config.steps,
            self.config.warmup_steps,
            self.config.learning_rate,
            self.config.min_learning_rate,
        );
        let scale = optim::clip_scale(total_norm, self.config.clip_norm);
        let gradient_tensors: Vec<Option<Tensor>> =
            measured.into_iter().map(|(gradient, _)| gradient).collect();
        self.optimizer
            .step(&gradient_tensors, scale, learning_rate)?;
        self.step = step;
        let tokens = batch.tokens.elem_count();
        let seconds = started.elapsed().as_secs_f64();
        let metrics = StepMetrics {
            step,
            loss: loss_value,
            regulariser: regulariser_value,
            objective: objective_value,
            learning_rate,
            gradient_norm: total_norm,
            tokens,
            tokens_per_second: if seconds > 0.0 {
                tokens as f64 / seconds
            } else {
                0.0
            },
        };
        if let Some(logs) = &mut self.logs {
            write_line(&mut logs.metrics, &metrics, METRICS_FILE)?;
        }
        Ok(StepOutcome {
            metrics,
            gradients,
            norms,
        })
    }

    fn non_finite(&self, step: u64, what: String, value: f64) -> TrainError {
        TrainError::NonFinite {
            step,
            what,
            value,
            last_checkpoint: self.last_checkpoint.clone(),
        }
    }

    /// Scores the model on the validation set (no dropout, no update).
    pub fn evaluate(&self) -> Result<Evaluation> {
        let mut totals = objective::Scores::default();
        let mut entropy_sum = 0.0;
        let mut entropy_batches = 0usize;
        let capture = Capture::all();
        for chunk in self
            .dataset
            .validation()
            .chunks(self.config.batch_size.max(1))
        {
            let batch = tasks::collate(chunk, self.model.device())?;
            let forward = self
                .model
                .forward(&self.inputs(&batch)?, Mode::Eval, Some(&capture))?;
            let scores = objective::score(
                &forward.outputs[&self.logits],
                &batch.targets,
                &batch.weights,
            )?;
            totals.loss_sum += scores.loss_sum;
            totals.targets += scores.targets;
            totals.correct_targets += scores.correct_targets;
            totals.examples += scores.examples;
            totals.correct_examples += scores.correct_examples;
            if let Some(entropy) = objective::mean_entropy(&forward.attention)? {
                entropy_sum += entropy * chunk.len() as f64;
                entropy_batches += chunk.len();
            }
        }
        let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        Ok(Evaluation {
            step: self.step,
            loss: if totals.targets == 0 {
                0.0
            } else {
                totals.loss_sum / totals.targets as f64
            },
            token_accuracy: ratio(totals.correct_targets, totals.targets),
            sequence_accuracy: ratio(totals.correct_examples, totals.examples),
            attention_entropy: (entropy_batches > 0).then(|| entropy_sum / entropy_batches as f64),
            examples: totals.examples,
        })
    }

    /// Writes a checkpoint of the current state into the output directory
    /// (no-op without one). Returns the directory.
    pub fn checkpoint(&mut self) -> Result<Option<PathBuf>> {
        let Some(directory) = self.output.clone() else {
            return Ok(None);
        };
        if let Some(logs) = &mut self.logs {
            for (writer, file) in [
                (&mut logs.metrics, METRICS_FILE),
                (&mut logs.evaluations, EVAL_FILE),
                (&mut logs.gradients, GRADIENTS_FILE),
            ] {
                writer
                    .flush()
                    .and_then(|()| writer.get_ref().sync_data())
                    .map_err(|source| TrainError::io(directory.join(file), source))?;
            }
        }
        let empty = FileRecord {
            file: String::new(),
            bytes: 0,
            fnv1a64: String::new(),
        };
        let meta = CheckpointMeta {
            format: String::new(),
            version: 0,
            step: self.step,
            blueprint: self.blueprint.name.clone(),
            blueprint_hash: self.blueprint_hash.clone(),
            config: self.config.clone(),
            rng: self.rng.clone(),
            data: self.position,
            weights: empty.clone(),
            optimizer: empty,
        };
        checkpoint::save(&directory, meta, &self.weights(), &self.optimizer.state()?)?;
        self.last_checkpoint = Some((directory.clone(), self.step));
        Ok(Some(directory))
    }

    /// Trains until the step budget is used, a target is reached or
    /// `progress` returns `Break`; evaluates every `eval_every` steps and at
    /// the end; checkpoints every `checkpoint_every` steps and at the end.
    pub fn run(
        &mut self,
        mut progress: impl FnMut(&Progress<'_>) -> ControlFlow<()>,
    ) -> Result<TrainReport> {
        let started = Instant::now();
        let first_step = self.step;
        let mut tokens = 0usize;
        let mut evaluations = Vec::new();
        let mut last_step = None;
        let mut stop_reason = StopReason::Budget;
        while self.step < self.config.steps {
            let mut metrics = self.step()?.metrics;
            tokens += metrics.tokens;
            let seconds = started.elapsed().as_secs_f64();
            metrics.tokens_per_second = if seconds > 0.0 {
                tokens as f64 / seconds
            } else {
                0.0
            };
            let evaluation =
                if self.step % self.config.eval_every == 0 || self.step == self.config.steps {
                    let evaluation = self.evaluate()?;
                    if let Some(logs) = &mut self.logs {
                        write_line(&mut logs.evaluations, &evaluation, EVAL_FILE)?;
                    }
                    let reached = self
                        .config
                        .target_accuracy
                        .is_some_and(|target| evaluation.sequence_accuracy >= target)
                        || self
                            .config
                            .target_loss
                            .is_some_and(|target| evaluation.loss <= target);
                    if reached {
                        stop_reason = StopReason::Target;
                    }
                    evaluations.push(evaluation);
                    evaluations.last()
                } else {
                    None
                };
            if self.config.checkpoint_every > 0 && self.step % self.config.checkpoint_every == 0 {
                self.checkpoint()?;
            }
            let flow = progress(&Progress {
                step: self.step,
                steps: self.config.steps,
                metrics: &metrics,
                evaluation,
            });
            last_step = Some(metrics);
            if stop_reason == StopReason::Target {
                break;
            }
            if flow.is_break() {
                stop_reason = StopReason::Interrupted;
                break;
            }
        }
        if self.last_checkpoint.as_ref().map(|(_, step)| *step) != Some(self.step) {
            self.checkpoint()?;
        }
        let elapsed_seconds = started.elapsed().as_secs_f64();
        let report = TrainReport {
            blueprint: self.blueprint.name.clone(),
            blueprint_hash: self.blueprint_hash.clone(),
            task: self.config.task.name(),
            format: self.dataset.format(),
            sequence_length: self.dataset.sequence_length(),
            task_vocab: self.dataset.vocab_size(),
            parameters: self.model.store().scalar_count(),
            step: self.step,
            steps_this_run: self.step - first_step,
            stop_reason,
            elapsed_seconds,
            tokens_per_second: if elapsed_seconds > 0.0 {
                tokens as f64 / elapsed_seconds
            } else {
                0.0
            },
            last_step,
            evaluations,
            gradient_flow: self
                .gradient_flow
                .report(&self.blueprint, &self.parameter_names()),
            receptive_field: self.reach.clone(),
            output: self.output.clone(),
        };
        if let Some(directory) = &self.output {
            let text = serde_json::to_string_pretty(&report)
                .map_err(|error| TrainError::config("report", error.to_string()))?;
            checkpoint::write_atomically(&directory.join(REPORT_FILE), text.as_bytes())?;
        }
        Ok(report)
    }
}

/// Evaluates the checkpoint in `directory` on its task's validation set.
pub fn evaluate_checkpoint(directory: &Path) -> Result<(CheckpointMeta, Evaluation)> {
    let trainer = Trainer::resume_read_only(directory)?;
    let meta = checkpoint::read_meta(directory)?;
    Ok((meta, trainer.evaluate()?))
}

impl Trainer {
    fn resume_read_only(directory: &Path) -> Result<Self> {
        let meta = checkpoint::read_meta(directory)?;
        let mut trainer = Self::new(checkpoint::saved_source(directory)?, meta.config.clone())?;
        checkpoint::check_blueprint(
            directory,
            &meta,
            &trainer.blueprint.name,
            &trainer.blueprint_hash,
        )?;
        trainer.load_checkpoint(directory)?;
        Ok(trainer)
    }
}

fn open_logs(directory: &Path) -> Result<Logs> {
    let open = |file: &str| -> Result<BufWriter<File>> {
        let path = directory.join(file);
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map(BufWriter::new)
            .map_err(|source| TrainError::io(path, source))
    };
    Ok(Logs {
        metrics: open(METRICS_FILE)?,
        evaluations: open(EVAL_FILE)?,
        gradients: open(GRADIENTS_FILE)?,
    })
}

fn write_line(writer: &mut BufWriter<File>, value: &impl Serialize, file: &str) -> Result<()> {
    let line = serde_json::to_string(value)
        .map_err(|error| TrainError::config(file, error.to_string()))?;
    writeln!(writer, "{line}").map_err(|source| TrainError::io(file, source))
}

fn read_lines(path: &Path) -> Result<Vec<String>> {
    match File::open(path) {
        Ok(file) => BufReader::new(file)
            .lines()
            .filter(|line| !matches!(line, Ok(text) if text.trim().is_empty()))
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|source| TrainError::io(path, source)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(TrainError::io(path, source)),
    }
}

/// Keeps only the log lines whose `step` is at most `step` (rewritten
/// atomically); a line that does not parse is kept, never dropped.
fn truncate_log(path: &Path, step: u64) -> Result<()> {
    let lines = read_lines(path)?;
    let kept: Vec<&String> = lines
        .iter()
        .filter(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|value| value.get("step").and_then(serde_json::Value::as_u64))
                .is_none_or(|line_step| line_step <= step)
        })
        .collect();
    if kept.len() != lines.len() {
        let mut text = String::new();
        for line in kept {
            text.push_str(line);
            text.push('\n');
        }
        checkpoint::write_atomically(path, text.as_bytes())?;
    }
    Ok(())
}
