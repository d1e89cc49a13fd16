//! `attnflow bench train`: the same small transformer trained for the same
//! steps in attnflow and, when PyTorch can be imported, in the committed
//! script `tools/bench_train_torch.py`; tokens per second for both.
//!
//! The model is a pre-norm causal decoder (learned positions, tied head,
//! GELU(tanh), no dropout) on the copy task (random prompts of `seq/2`
//! symbols, a separator, the prompt again; scored on the copied half by a
//! weighted cross-entropy over every position); both sides run
//! forward, cross-entropy, backward, global-norm clipping and AdamW.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use attnflow_train::tasks::Task;
use attnflow_train::{BlueprintSource, Result, TrainConfig, TrainError, Trainer};

/// The PyTorch script, embedded so the binary runs exactly the committed file.
const TORCH_SCRIPT: &str = include_str!("../peers/train_torch.py");

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
    /// The loss of the last step (a sanity check that it trained).
    pub last_loss: f64,
}

/// The benchmark's outcome.
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

/// Runs both sides.
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
    let mut last_loss = f64::NAN;
    for _ in 0..options.steps {
        let metrics = trainer.step()?.metrics;
        tokens += metrics.tokens as u64;
        last_loss = metrics.loss;
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
        last_loss,
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
    Ok(BenchReport {
        options: options.clone(),
        parameters: trainer.model().store().scalar_count(),
        attnflow,
        pytorch,
        pytorch_note,
        ratio,
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
    Path::new("tools/bench_train_torch.py")
}

impl BenchReport {
    /// The report as people read it.
    pub fn to_text(&self, options: &BenchOptions) -> String {
        use std::fmt::Write as _;
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
        assert!(report.pytorch_note.unwrap().contains("/nonexistent/python"));
        // The spec's parameter count equals PyTorch's model: embedding,
        // positions, per layer 2 norms + 4 projections + MLP, final norm.
        let (v, d, f, s) = (64, 16, 32, 8);
        let expected =
            v * d + s * d + (2 * 2 * d + 4 * (d * d + d) + d * f + f + f * d + d) + 2 * d;
        assert_eq!(report.parameters, expected);
    }
}
