//! `attnflow bench train`: the same small transformer trained for the same
//! steps in attnflow and, when PyTorch can be imported, in the committed
//! script `peers/train_torch.py`; tokens per second and the last loss for
//! both, over interleaved rounds ([`crate::protocol`]).
//!
//! The model is a pre-norm causal decoder (learned positions, tied head,
//! GELU(tanh), no dropout) on the copy task (random prompts of `seq/2`
//! symbols, a separator, the prompt again; scored on the copied half by a
//! weighted cross-entropy over every position); both sides run
//! forward, cross-entropy, backward, global-norm clipping and AdamW, from
//! the same initialisation scheme (PyTorch's `nn.Linear` default for every
//! weight matrix, N(0, 1/d) for the embedding and position tables) at a
//! constant learning rate with no warm-up.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use attnflow_train::tasks::Task;
use attnflow_train::{BlueprintSource, Result, TrainConfig, TrainError, Trainer};

use crate::protocol::{run_rounds, Protocol, Round, Rounds};

/// The PyTorch script, embedded so the binary runs exactly the committed file.
const TORCH_SCRIPT: &str = include_str!("../peers/train_torch.py");

/// A named benchmark size (`--size`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Size {
    /// 2 layers, width 64, 4 heads, 16 tokens, 64 sequences a step.
    Small,
    /// 2 layers, width 128, 4 heads, 64 tokens, 16 sequences a step.
    Medium,
    /// 4 layers, width 256, 8 heads, 128 tokens, 16 sequences a step.
    Large,
}

impl Size {
    /// Every size, smallest first (`--size all`).
    pub const ALL: [Size; 3] = [Size::Small, Size::Medium, Size::Large];

    /// The size's name.
    pub fn name(self) -> &'static str {
        match self {
            Size::Small => "small",
            Size::Medium => "medium",
            Size::Large => "large",
        }
    }

    /// The size's options (feed-forward width 4·d, vocabulary 64, 60 timed
    /// steps after 3 untimed ones), PyTorch run with `python3`.
    pub fn options(self) -> BenchOptions {
        let (layers, d_model, heads, seq, batch) = match self {
            Size::Small => (2, 64, 4, 16, 64),
            Size::Medium => (2, 128, 4, 64, 16),
            Size::Large => (4, 256, 8, 128, 16),
        };
        BenchOptions {
            layers,
            d_model,
            heads,
            d_ff: 4 * d_model,
            seq,
            batch,
            ..BenchOptions::default()
        }
    }
}

impl std::str::FromStr for Size {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        Size::ALL
            .into_iter()
            .find(|size| size.name() == text)
            .ok_or_else(|| format!("unknown size `{text}` (small, medium, large or all)"))
    }
}

/// The sizes `--size` names: one of them, or `all`.
pub fn sizes_named(text: &str) -> std::result::Result<Vec<Size>, String> {
    if text == "all" {
        return Ok(Size::ALL.to_vec());
    }
    Ok(vec![text.parse()?])
}

/// The benchmark at one size, under the protocol.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SizeRounds {
    /// The size named (its dimensions are in each round's options).
    pub size: Size,
    /// The machine, the rounds and the ratios.
    #[serde(flatten)]
    pub rounds: Rounds<BenchReport>,
}

/// The benchmark at each size in turn.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainBench {
    /// One entry per size, in the order asked.
    pub sizes: Vec<SizeRounds>,
}

impl TrainBench {
    /// Each size's machine, last round and ratios, as people read them.
    pub fn to_text(&self) -> String {
        self.sizes
            .iter()
            .map(|size| format!("size {}\n{}", size.size.name(), size.rounds.to_text()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Runs the benchmark at each `(size, options)` in turn under `protocol`.
pub fn run_sizes(sizes: &[(Size, BenchOptions)], protocol: &Protocol) -> Result<TrainBench> {
    let sizes = sizes
        .iter()
        .map(|(size, options)| {
            Ok(SizeRounds {
                size: *size,
                rounds: run_rounds_of(options, protocol)?,
            })
        })
        .collect::<Result<_>>()?;
    Ok(TrainBench { sizes })
}

/// The benchmark model's sizes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BenchOptions {
    /// Vocabulary (the task uses `vocab - 2` symbols plus its two markers).
    pub vocab: usize,
    /// Model width.
    pub d_model: usize,
    /// Attention heads.
    pub heads: usize,
    /// Layers.
    pub layers: usize,
    /// Feed-forward width.
    pub d_ff: usize,
    /// Sequence length (even).
    pub seq: usize,
    /// Sequences per step.
    pub batch: usize,
    /// Timed steps.
    pub steps: u64,
    /// Untimed steps first.
    pub warmup_steps: u64,
    /// The Python interpreter for the PyTorch side.
    pub python: PathBuf,
    /// Skip PyTorch.
    pub skip_torch: bool,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            vocab: 64,
            d_model: 128,
            heads: 4,
            layers: 2,
            d_ff: 512,
            seq: 64,
            batch: 16,
            steps: 60,
            warmup_steps: 3,
            python: PathBuf::from("python3"),
            skip_torch: false,
        }
    }
}

/// One engine's measurement.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BenchSide {
    /// `attnflow` or `pytorch`.
    pub engine: String,
    /// Its version.
    pub version: String,
    /// CPU threads it used.
    pub threads: usize,
    /// Timed steps.
    pub steps: u64,
    /// Input tokens in the timed steps.
    pub tokens: u64,
    /// Seconds of the timed steps.
    pub seconds: f64,
    /// Tokens per second.
    pub tokens_per_second: f64,
    /// The loss of the last step.
    pub last_loss: f64,
    /// Each timed step's loss. Every batch is freshly drawn, so each is
    /// the loss on examples the model has not seen.
    pub losses: Vec<f64>,
    /// Seconds from the first timed step's start to each one's end.
    pub elapsed: Vec<f64>,
}

impl BenchSide {
    /// Seconds until the first timed step whose loss is at most `loss`.
    pub fn seconds_to(&self, loss: f64) -> Option<f64> {
        self.losses
            .iter()
            .zip(&self.elapsed)
            .find(|(reached, _)| **reached <= loss)
            .map(|(_, seconds)| *seconds)
    }
}

/// How long each side took to reach the loss both reached.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TimeToLoss {
    /// The larger of the two last losses: both sides reach it.
    pub loss: f64,
    /// attnflow's seconds to the first step at or under it.
    pub attnflow_seconds: f64,
    /// PyTorch's seconds to the first step at or under it.
    pub pytorch_seconds: f64,
}

/// One round of the benchmark: attnflow, then PyTorch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    /// The sizes used.
    pub options: BenchOptions,
    /// Trainable parameters.
    pub parameters: usize,
    /// attnflow's measurement.
    pub attnflow: BenchSide,
    /// PyTorch's, when it ran.
    pub pytorch: Option<BenchSide>,
    /// Why PyTorch did not run, when it did not.
    pub pytorch_note: Option<String>,
    /// attnflow tokens/s divided by PyTorch's.
    pub ratio: Option<f64>,
    /// Time to the same loss on both sides, when PyTorch ran.
    pub time_to_loss: Option<TimeToLoss>,
}

/// The benchmark model as a blueprint spec.
pub fn bench_spec(options: &BenchOptions) -> String {
    format!(
        r#"[model]
name = "bench-decoder"
description = "attnflow bench train: pre-norm causal decoder, tied head, no dropout"

[dims]
batch = {batch}
seq = {seq}
vocab = {vocab}
d_model = {d_model}
heads = {heads}
layers = {layers}
d_ff = {d_ff}

[[node]]
name = "tokens"
op = "input"
shape = ["batch", "seq"]
dtype = "index"

[[node]]
name = "embed"
op = "embedding"
input = "tokens"
vocab = "vocab"
dim = "d_model"

[[node]]
name = "positions"
op = "positional"
input = "embed"
kind = "learned"
max_len = "seq"

[[block]]
name = "h"
repeat = "layers"
input = "positions"
output = "mlp_residual"

[[block.node]]
name = "ln_1"
op = "layer_norm"
input = "in"

[[block.node]]
name = "attn"
op = "attention"
input = "ln_1"
heads = "heads"
mask = "causal"

[[block.node]]
name = "attn_residual"
op = "add"
input = ["in", "attn"]

[[block.node]]
name = "ln_2"
op = "layer_norm"
input = "attn_residual"

[[block.node]]
name = "mlp"
op = "feed_forward"
input = "ln_2"
hidden = "d_ff"
activation = "gelu_tanh"

[[block.node]]
name = "mlp_residual"
op = "add"
input = ["attn_residual", "mlp"]

[[node]]
name = "norm"
op = "layer_norm"
input = "h"

[[node]]
name = "head"
op = "head"
input = "norm"
out = "vocab"
bias = false
tie = "embed"
"#,
        batch = options.batch,
        seq = options.seq,
        vocab = options.vocab,
        d_model = options.d_model,
        heads = options.heads,
        layers = options.layers,
        d_ff = options.d_ff,
    )
}

/// The threads candle's CPU kernels use (candle reads `RAYON_NUM_THREADS`,
/// else every core); PyTorch is given the same number.
pub fn cpu_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|text| text.parse::<usize>().ok())
        .filter(|threads| *threads > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
}

/// Runs the benchmark at `options` under `protocol`: each round trains a
/// fresh model on both sides.
pub fn run_rounds_of(options: &BenchOptions, protocol: &Protocol) -> Result<Rounds<BenchReport>> {
    run_rounds(protocol, |_| run_bench(options))
}

/// Runs both sides once.
pub fn run_bench(options: &BenchOptions) -> Result<BenchReport> {
    if options.seq < 4 || options.seq % 2 != 0 {
        return Err(TrainError::config("seq", "must be an even number >= 4"));
    }
    if options.vocab < 4 {
        return Err(TrainError::config("vocab", "must be at least 4"));
    }
    if options.steps == 0 {
        return Err(TrainError::config("steps", "must be at least 1"));
    }
    let source = BlueprintSource {
        file: "bench-decoder.toml".into(),
        text: bench_spec(options),
    };
    // Copy in the autoregressive layout: prompt (seq/2), separator, answer
    // (seq/2 - 1 inputs) = seq input tokens.
    let config = TrainConfig {
        task: Task::Copy,
        length: Some(options.seq / 2),
        symbols: options.vocab - 2,
        steps: options.warmup_steps + options.steps,
        batch_size: options.batch,
        warmup_steps: 0,
        learning_rate: 3e-3,
        min_learning_rate: 3e-3,
        log_every: u64::MAX,
        eval_every: u64::MAX,
        validation_size: 1,
        dropout: false,
        ..TrainConfig::default()
    };
    let mut trainer = Trainer::new(source, config)?;
    for _ in 0..options.warmup_steps {
        trainer.step()?;
    }
    let started = Instant::now();
    let mut tokens = 0u64;
    let mut losses = Vec::with_capacity(options.steps as usize);
    let mut elapsed = Vec::with_capacity(options.steps as usize);
    for _ in 0..options.steps {
        let metrics = trainer.step()?.metrics;
        tokens += metrics.tokens as u64;
        losses.push(metrics.loss);
        elapsed.push(started.elapsed().as_secs_f64());
    }
    let seconds = started.elapsed().as_secs_f64();
    let threads = cpu_threads();
    let attnflow = BenchSide {
        engine: "attnflow".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        threads,
        steps: options.steps,
        tokens,
        seconds,
        tokens_per_second: tokens as f64 / seconds,
        last_loss: losses.last().copied().unwrap_or(f64::NAN),
        losses,
        elapsed,
    };
    let (pytorch, pytorch_note) = if options.skip_torch {
        (None, Some("skipped (--no-torch)".to_string()))
    } else {
        match run_torch(options, threads) {
            Ok(side) => (Some(side), None),
            Err(note) => (None, Some(note)),
        }
    };
    let ratio = pytorch
        .as_ref()
        .map(|torch| attnflow.tokens_per_second / torch.tokens_per_second);
    let time_to_loss = pytorch.as_ref().and_then(|torch| {
        let loss = attnflow.last_loss.max(torch.last_loss);
        Some(TimeToLoss {
            loss,
            attnflow_seconds: attnflow.seconds_to(loss)?,
            pytorch_seconds: torch.seconds_to(loss)?,
        })
    });
    Ok(BenchReport {
        options: options.clone(),
        parameters: trainer.model().store().scalar_count(),
        attnflow,
        pytorch,
        pytorch_note,
        ratio,
        time_to_loss,
    })
}

/// Runs the PyTorch script; `Err` holds a note saying why it did not run.
fn run_torch(options: &BenchOptions, threads: usize) -> std::result::Result<BenchSide, String> {
    let python = &options.python;
    let probe = Command::new(python)
        .args(["-c", "import torch"])
        .output()
        .map_err(|error| format!("PyTorch skipped: cannot run {}: {error}", python.display()))?;
    if !probe.status.success() {
        return Err(format!(
            "PyTorch skipped: `import torch` fails with {} (pass --python PATH to an interpreter that has it)",
            python.display()
        ));
    }
    let directory = tempfile::tempdir().map_err(|error| format!("PyTorch skipped: {error}"))?;
    let script = directory.path().join("bench_train_torch.py");
    std::fs::write(&script, TORCH_SCRIPT).map_err(|error| format!("PyTorch skipped: {error}"))?;
    let output = Command::new(python)
        .arg(&script)
        .args(torch_arguments(options, threads))
        .output()
        .map_err(|error| format!("PyTorch failed to start: {error}"))?;
    if !output.status.success() {
        return Err(format!(
            "PyTorch run failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or("");
    serde_json::from_str(line).map_err(|error| format!("PyTorch printed {line:?}: {error}"))
}

fn torch_arguments(options: &BenchOptions, threads: usize) -> Vec<String> {
    let pairs = [
        ("--vocab", options.vocab.to_string()),
        ("--d-model", options.d_model.to_string()),
        ("--heads", options.heads.to_string()),
        ("--layers", options.layers.to_string()),
        ("--d-ff", options.d_ff.to_string()),
        ("--seq", options.seq.to_string()),
        ("--batch", options.batch.to_string()),
        ("--steps", options.steps.to_string()),
        ("--warmup-steps", options.warmup_steps.to_string()),
        ("--threads", threads.to_string()),
    ];
    pairs
        .into_iter()
        .flat_map(|(flag, value)| [flag.to_string(), value])
        .collect()
}

/// Where the committed script lives in the repository (for messages).
pub fn torch_script_path() -> &'static Path {
    Path::new("crates/attnflow-bench/peers/train_torch.py")
}

impl Round for BenchReport {
    fn ratios(&self) -> Vec<(String, Option<f64>)> {
        let sooner = self
            .time_to_loss
            .as_ref()
            .map(|time| time.pytorch_seconds / time.attnflow_seconds);
        vec![
            ("tokens/s".to_string(), self.ratio),
            (
                "speed to the same loss (PyTorch seconds / attnflow seconds)".to_string(),
                sooner,
            ),
        ]
    }

    fn to_text(&self) -> String {
        use std::fmt::Write as _;
        let options = &self.options;
        let mut out = format!(
            "bench-decoder: {} layers, width {}, {} heads, {} parameters; {} sequences × {} tokens per step, {} timed steps\n",
            options.layers,
            options.d_model,
            options.heads,
            self.parameters,
            options.batch,
            options.seq,
            options.steps
        );
        let rows: Vec<Vec<String>> = std::iter::once(&self.attnflow)
            .chain(self.pytorch.as_ref())
            .map(|side| {
                vec![
                    side.engine.clone(),
                    side.threads.to_string(),
                    format!("{:.3}", side.seconds),
                    format!("{:.0}", side.tokens_per_second),
                    format!("{:.4}", side.last_loss),
                ]
            })
            .collect();
        out.push_str(&attnflow_base::table::table(
            &["engine", "threads", "seconds", "tokens/s", "last loss"],
            &rows,
            1,
            attnflow_base::table::Style::Text,
        ));
        match (self.ratio, &self.pytorch_note) {
            (Some(ratio), _) => {
                let _ = writeln!(out, "attnflow / pytorch tokens/s: {ratio:.2}");
            }
            (None, Some(note)) => {
                let _ = writeln!(out, "{note}");
            }
            (None, None) => {}
        }
        if let Some(time) = &self.time_to_loss {
            let _ = writeln!(
                out,
                "time to loss {:.4}: attnflow {:.3} s, pytorch {:.3} s",
                time.loss, time.attnflow_seconds, time.pytorch_seconds
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_runs_without_torch_and_notes_why() {
        let options = BenchOptions {
            d_model: 16,
            d_ff: 32,
            heads: 2,
            layers: 1,
            seq: 8,
            batch: 2,
            steps: 2,
            warmup_steps: 1,
            python: PathBuf::from("/nonexistent/python"),
            ..BenchOptions::default()
        };
        let report = run_bench(&options).unwrap();
        assert_eq!(report.attnflow.tokens, 2 * 2 * 8);
        assert!(report.attnflow.last_loss.is_finite());
        assert!(report.pytorch.is_none() && report.ratio.is_none());
        assert!(report.time_to_loss.is_none());
        assert_eq!(report.attnflow.losses.len(), 2);
        assert_eq!(report.attnflow.losses[1], report.attnflow.last_loss);
        assert!(report.attnflow.elapsed[0] <= report.attnflow.elapsed[1]);
        assert!(report.pytorch_note.unwrap().contains("/nonexistent/python"));
        // The spec's parameter count equals PyTorch's model: embedding,
        // positions, per layer 2 norms + 4 projections + MLP, final norm.
        let (v, d, f, s) = (64, 16, 32, 8);
        let expected =
            v * d + s * d + (2 * 2 * d + 4 * (d * d + d) + d * f + f + f * d + d) + 2 * d;
        assert_eq!(report.parameters, expected);
    }

    #[test]
    fn seconds_to_a_loss_is_the_first_step_at_or_under_it() {
        let side = BenchSide {
            engine: "attnflow".into(),
            version: "0".into(),
            threads: 1,
            steps: 3,
            tokens: 3,
            seconds: 3.0,
            tokens_per_second: 1.0,
            last_loss: 0.5,
            losses: vec![2.0, 0.4, 0.5],
            elapsed: vec![1.0, 2.0, 3.0],
        };
        assert_eq!(side.seconds_to(0.5), Some(2.0));
        assert_eq!(side.seconds_to(2.0), Some(1.0));
        assert_eq!(side.seconds_to(0.1), None);
    }

    #[test]
    fn sizes_follow_the_issue_and_all_names_every_one() {
        let shape = |size: Size| {
            let options = size.options();
            (
                options.layers,
                options.d_model,
                options.heads,
                options.seq,
                options.batch,
                options.d_ff,
            )
        };
        assert_eq!(shape(Size::Small), (2, 64, 4, 16, 64, 256));
        assert_eq!(shape(Size::Medium), (2, 128, 4, 64, 16, 512));
        assert_eq!(shape(Size::Large), (4, 256, 8, 128, 16, 1024));
        // Medium is the bench as it always ran.
        assert_eq!(Size::Medium.options(), BenchOptions::default());
        assert_eq!(sizes_named("all").unwrap(), Size::ALL);
        assert_eq!(sizes_named("large").unwrap(), [Size::Large]);
        assert!(sizes_named("huge").unwrap_err().contains("huge"));
    }
}
