//! `attnflow train` and `attnflow eval`: train a blueprint on a task, and
//! score a checkpoint. Wiring only; the work is in attnflow-train.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use attnflow_train::tasks::Task;
use attnflow_train::trainer::BlueprintSource;
use attnflow_train::{Regulariser, TrainConfig, TrainError, TrainReport, Trainer};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use miette::miette;

use crate::error::{CliError, CliResult};

/// Arguments of `attnflow train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The blueprint spec (TOML), such as examples/train/reverse.toml.
    spec: PathBuf,
    /// What to learn: copy, reverse, sort, recall (alias induction), or
    /// text:PATH for next-token prediction on a text file (one token per
    /// character; needs a causal model).
    #[arg(long)]
    task: String,
    /// Step budget (updates); also the length of the learning-rate schedule.
    #[arg(long)]
    steps: Option<u64>,
    /// λ in J = L + λR (§7.1); a positive λ defaults the regulariser to entropy.
    #[arg(long)]
    lambda: Option<f64>,
    /// The attention regulariser R: none, entropy, or band:W (mass outside
    /// |i - j| <= W).
    #[arg(long)]
    regulariser: Option<String>,
    /// Output directory for checkpoints, logs and the report
    /// [default: runs/<blueprint>-<task>].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run checkpointed in this directory (the spec must be
    /// the same blueprint; only --steps may change).
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Override a blueprint dimension: --set d_model=128 (repeatable).
    #[arg(long = "set", value_name = "DIM=VALUE")]
    overrides: Vec<String>,
    /// Prompt length of a synthetic task, window length for text.
    #[arg(long)]
    length: Option<usize>,
    /// Content symbols of synthetic tasks [default: 10].
    #[arg(long)]
    symbols: Option<usize>,
    /// Seed of weights, data, shuffles and dropout [default: 0].
    #[arg(long)]
    seed: Option<u64>,
    /// Examples per update [default: 32].
    #[arg(long)]
    batch_size: Option<usize>,
    /// Peak learning rate [default: 0.003].
    #[arg(long)]
    learning_rate: Option<f64>,
    /// Linear warm-up steps [default: 50].
    #[arg(long)]
    warmup: Option<u64>,
    /// Evaluate every this many steps [default: 100].
    #[arg(long)]
    eval_every: Option<u64>,
    /// Stop when validation exact-sequence accuracy reaches this (0..1).
    #[arg(long)]
    target_accuracy: Option<f64>,
    /// Stop when validation loss falls to this.
    #[arg(long)]
    target_loss: Option<f64>,
    /// Checkpoint every this many steps (0: only at the end) [default: 0].
    #[arg(long)]
    checkpoint_every: Option<u64>,
    /// Log every parameter's gradient norm every this many steps [default: 10].
    #[arg(long)]
    log_every: Option<u64>,
    /// Clip the global gradient norm to this; 0 disables [default: 1].
    #[arg(long)]
    clip_norm: Option<f64>,
    /// Do not apply the blueprint's dropout while training.
    #[arg(long)]
    no_dropout: bool,
    /// Print the report as JSON instead of tables.
    #[arg(long)]
    json: bool,
    /// Refuse (exit 2) instead of warning when the blueprint's receptive
    /// field cannot see what the task needs.
    #[arg(long)]
    strict: bool,
}

/// Arguments of `attnflow eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// A directory written by `attnflow train`.
    dir: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn train_error(error: TrainError) -> CliError {
    if error.is_bad_input() {
        CliError::bad_input(miette!("{error}"))
    } else {
        CliError::failed(miette!("{error}"))
    }
}

fn config_of(args: &TrainArgs, task: Task) -> Result<TrainConfig, CliError> {
    let mut config = TrainConfig {
        task,
        ..TrainConfig::default()
    };
    for text in &args.overrides {
        let pair = attnflow_blueprint::parse_override(text)
            .map_err(|error| CliError::bad_input(miette!("{error}")))?;
        config.overrides.push(pair);
    }
    config.length = args.length;
    fn set<T>(target: &mut T, value: Option<T>) {
        if let Some(value) = value {
            *target = value;
        }
    }
    set(&mut config.steps, args.steps);
    set(&mut config.symbols, args.symbols);
    set(&mut config.seed, args.seed);
    set(&mut config.batch_size, args.batch_size);
    set(&mut config.warmup_steps, args.warmup);
    set(&mut config.eval_every, args.eval_every);
    set(&mut config.checkpoint_every, args.checkpoint_every);
    set(&mut config.log_every, args.log_every);
    if let Some(rate) = args.learning_rate {
        config.learning_rate = rate;
        config.min_learning_rate = rate / 10.0;
    }
    if let Some(clip) = args.clip_norm {
        config.clip_norm = (clip != 0.0).then_some(clip);
    }
    config.target_accuracy = args.target_accuracy;
    config.target_loss = args.target_loss;
    config.dropout = !args.no_dropout;
    if let Some(lambda) = args.lambda {
        config.lambda = lambda;
        if lambda > 0.0 {
            config.regulariser = Regulariser::Entropy;
        }
    }
    if let Some(name) = &args.regulariser {
        config.regulariser = Regulariser::parse(name)
            .map_err(|message| CliError::bad_input(miette!("--regulariser: {message}")))?;
    }
    Ok(config)
}

/// Runs `attnflow train`.
pub fn train(args: TrainArgs) -> CliResult {
    let task = Task::parse(&args.task).map_err(train_error)?;
    // An unreadable spec is the user's input at fault, whatever the OS says.
    let source = BlueprintSource::from_file(&args.spec)
        .map_err(|error| CliError::bad_input(miette!("{error}")))?;
    let mut trainer = match &args.resume {
        Some(directory) => {
            let changed: Vec<&str> = [
                ("--lambda", args.lambda.is_some()),
                ("--regulariser", args.regulariser.is_some()),
                ("--set", !args.overrides.is_empty()),
                ("--length", args.length.is_some()),
                ("--symbols", args.symbols.is_some()),
                ("--seed", args.seed.is_some()),
                ("--batch-size", args.batch_size.is_some()),
                ("--learning-rate", args.learning_rate.is_some()),
                ("--warmup", args.warmup.is_some()),
                ("--out", args.out.is_some()),
            ]
            .into_iter()
            .filter_map(|(flag, given)| given.then_some(flag))
            .collect();
            if !changed.is_empty() {
                return Err(CliError::bad_input(miette!(
                    "--resume continues the checkpoint's configuration; {} cannot change (only --steps may)",
                    changed.join(", ")
                )));
            }
            let trainer =
                Trainer::resume(directory, Some(source), args.steps).map_err(train_error)?;
            reach_gate(&trainer, args.strict)?;
            if trainer.config().task != task {
                return Err(CliError::bad_input(miette!(
                    "{}: the checkpoint trains task `{}`, not `{}`",
                    directory.display(),
                    trainer.config().task.name(),
                    task.name()
                )));
            }
            trainer
        }
        None => {
            let config = config_of(&args, task.clone())?;
            let trainer = Trainer::new(source, config).map_err(train_error)?;
            reach_gate(&trainer, args.strict)?;
            let out = args.out.clone().unwrap_or_else(|| {
                let name = trainer.model().blueprint().name.clone();
                let task_name = match &task {
                    Task::Text { .. } => "text".to_string(),
                    other => other.name(),
                };
                PathBuf::from("runs").join(format!("{name}-{task_name}"))
            });
            trainer.with_output(&out).map_err(train_error)?
        }
    };
    let bar = ProgressBar::new(trainer.config().steps);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} [{elapsed_precise}]")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_position(trainer.step_count());
    let report = trainer
        .run(|progress| {
            let metrics = progress.metrics;
            let mut message = format!("L {:.4}", metrics.loss);
            if let Some(value) = metrics.regulariser {
                message.push_str(&format!(" R {value:.4} J {:.4}", metrics.objective));
            }
            message.push_str(&format!(" {:.0} tok/s", metrics.tokens_per_second));
            if let Some(evaluation) = progress.evaluation {
                message.push_str(&format!(" | val acc {:.3}", evaluation.sequence_accuracy));
            }
            bar.set_position(progress.step);
            bar.set_message(message);
            ControlFlow::Continue(())
        })
        .map_err(|error| {
            bar.abandon();
            train_error(error)
        })?;
    bar.finish_and_clear();
    if args.json {
        return print_json(&report);
    }
    print_report(&report);
    Ok(())
}

/// Warns, before any step, when the blueprint cannot see what the task
/// needs; refuses under `--strict`.
fn reach_gate(trainer: &Trainer, strict: bool) -> CliResult {
    match trainer.reach().filter(|check| !check.fits) {
        Some(check) if strict => Err(CliError::bad_input(miette!(
            "{} (--strict: not training)",
            check.message()
        ))),
        Some(check) => {
            eprintln!("warning: {}", check.message());
            Ok(())
        }
        None => Ok(()),
    }
}

fn print_json(value: &impl serde::Serialize) -> CliResult {
    let text = serde_json::to_string_pretty(value)
        .map_err(|error| CliError::failed(miette!("cannot write JSON: {error}")))?;
    println!("{text}");
    Ok(())
}

fn optional(value: Option<f64>) -> String {
    value.map_or("-".to_string(), |value| format!("{value:.4}"))
}

fn print_report(report: &TrainReport) {
    println!(
        "blueprint {} ({} parameters), task {} ({:?} layout, length {}, {} token ids)",
        report.blueprint,
        report.parameters,
        report.task,
        report.format,
        report.sequence_length,
        report.task_vocab
    );
    println!(
        "step {} ({} this run, stopped: {:?}) in {:.1} s, {:.0} tokens/s",
        report.step,
        report.steps_this_run,
        report.stop_reason,
        report.elapsed_seconds,
        report.tokens_per_second
    );
    if let Some(last) = &report.last_step {
        println!(
            "last step: L {:.4}  R {}  J {:.4}  lr {:.2e}  |g| {:.3}",
            last.loss,
            optional(last.regulariser),
            last.objective,
            last.learning_rate,
            last.gradient_norm
        );
    }
    if !report.evaluations.is_empty() {
        println!();
        println!(
            "{:>8}  {:>9}  {:>9}  {:>9}  {:>9}",
            "step", "val loss", "token acc", "seq acc", "entropy"
        );
        for evaluation in &report.evaluations {
            println!(
                "{:>8}  {:>9.4}  {:>9.4}  {:>9.4}  {:>9}",
                evaluation.step,
                evaluation.loss,
                evaluation.token_accuracy,
                evaluation.sequence_accuracy,
                optional(evaluation.attention_entropy)
            );
        }
    }
    let flow = &report.gradient_flow;
    if !flow.layers.is_empty() {
        println!();
        println!(
            "gradient flow over {} logged steps (L2 norm per parameter)",
            flow.logged_steps
        );
        println!(
            "{:<24}  {:>10}  {:>10}  {:>10}",
            "layer", "min", "median", "max"
        );
        for layer in &flow.layers {
            println!(
                "{:<24}  {:>10.3e}  {:>10.3e}  {:>10.3e}",
                layer.layer, layer.min, layer.median, layer.max
            );
        }
        for flag in &flow.flags {
            println!(
                "flag: {:?} gradient of `{}` (first at step {}, {} logged steps, norm {:.3e})",
                flag.kind, flag.parameter, flag.first_step, flag.count, flag.norm
            );
        }
        for zero in &flow.structural_zeros {
            println!(
                "zero by construction: `{}` (largest norm {:.1e}): {}",
                zero.parameter, zero.largest_norm, zero.reason
            );
        }
    }
    if let Some(output) = &report.output {
        println!();
        println!("checkpoint, logs and report.json in {}", output.display());
    }
}

/// Runs `attnflow eval`.
pub fn eval(args: EvalArgs) -> CliResult {
    let (meta, evaluation) =
        attnflow_train::evaluate_checkpoint(Path::new(&args.dir)).map_err(train_error)?;
    if args.json {
        return print_json(&serde_json::json!({
            "blueprint": meta.blueprint,
            "task": meta.config.task.name(),
            "evaluation": evaluation,
        }));
    }
    println!(
        "{} at step {} on {} ({} validation examples)",
        meta.blueprint,
        meta.step,
        meta.config.task.name(),
        evaluation.examples
    );
    println!("loss            {:.4}", evaluation.loss);
    println!("token accuracy  {:.4}", evaluation.token_accuracy);
    println!("seq accuracy    {:.4}", evaluation.sequence_accuracy);
    println!(
        "attention entropy {}",
        optional(evaluation.attention_entropy)
    );
    Ok(())
}
