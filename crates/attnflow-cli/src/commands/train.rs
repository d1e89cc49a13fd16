//! `attnflow train` and `attnflow eval`: train a blueprint on a task, and
//! score a checkpoint. Wiring only; the work is in attnflow-train.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use attnflow_train::tasks::Task;
use attnflow_train::trainer::BlueprintSource;
use attnflow_train::{Regulariser, TrainConfig, TrainError, Trainer};
use clap::Args;
use miette::miette;

use crate::error::{CliError, CliResult};
use crate::output::{print_json, progress_bar};

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
        Some(directory) => resumed(&args, directory, source, &task)?,
        None => started(&args, source, task)?,
    };
    let bar = progress_bar(
        trainer.config().steps,
        "{bar:30} {pos}/{len} {msg} [{elapsed_precise}]",
        args.json,
    );
    bar.set_position(trainer.step_count());
    let report = trainer
        .run(|progress| {
            bar.set_position(progress.step);
            bar.set_message(progress.status_line());
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
    print!("{}", report.to_text());
    Ok(())
}

/// A trainer that continues the checkpoint in `directory`; flags that
/// would change its configuration are refused.
fn resumed(
    args: &TrainArgs,
    directory: &Path,
    source: BlueprintSource,
    task: &Task,
) -> Result<Trainer, CliError> {
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
    let trainer = Trainer::resume(directory, Some(source), args.steps).map_err(train_error)?;
    reach_gate(&trainer, args.strict)?;
    if &trainer.config().task != task {
        return Err(CliError::bad_input(miette!(
            "{}: the checkpoint trains task `{}`, not `{}`",
            directory.display(),
            trainer.config().task.name(),
            task.name()
        )));
    }
    Ok(trainer)
}

/// A new trainer writing to `--out`, by default `runs/<blueprint>-<task>`.
fn started(args: &TrainArgs, source: BlueprintSource, task: Task) -> Result<Trainer, CliError> {
    let config = config_of(args, task.clone())?;
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
    trainer.with_output(&out).map_err(train_error)
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
    print!("{}", evaluation.to_text(&meta));
    Ok(())
}
