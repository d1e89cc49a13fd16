//! The workflow tasks of the pipeline and the code that starts and resumes
//! a run. Every task reads what earlier steps left in the run folder, so a
//! step that re-runs after a crash finds its inputs where they were.

use std::io::Write as _;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use attnflow_data::run::{check_files, CheckOptions, CheckReport};
use attnflow_data::Schema;
use attnflow_train::tasks::Task;
use attnflow_train::{BlueprintSource, Regulariser, TrainConfig, TrainReport, Trainer};
use attnflow_workflow::{
    Outcome, RunStatus, Runner, Spec as WorkflowSpec, Store as WorkflowStore, TaskContext,
    TaskOutput, TaskRegistry,
};
use indicatif::{ProgressBar, ProgressStyle};

use crate::folder::{files, write_atomically, write_json, Context, Validation};
use crate::manifest::Manifest;
use crate::spec::{embedded, PipelineSpec};
use crate::{PipelineError, Result, RunFile, RunOptions, RunOutcome, Submitted};

/// What the pipeline reports while it runs: the workflow's own events.
pub type StepEvent = attnflow_workflow::Progress;

pub(crate) fn start(spec_path: &Path, options: RunOptions<'_>) -> Result<RunOutcome> {
    let (context, registry, mut store, run_id) = create(spec_path, &options)?;
    drive(&context, &mut store, &registry, run_id, options)
}

/// Creates the run (folder, `run.json`, the workflow run in the store) and
/// leaves it for the workers of the store's queues.
pub(crate) fn submit(spec_path: &Path, options: RunOptions<'_>) -> Result<Submitted> {
    let (context, _, store, run_id) = create(spec_path, &options)?;
    let mut queues = vec![attnflow_workflow::spec::DEFAULT_QUEUE.to_string()];
    queues.extend(context.spec.train.queue.clone());
    queues.dedup();
    Ok(Submitted {
        run_dir: context.run_dir.clone(),
        workflow_run: run_id,
        store: PathBuf::from(store.path()),
        queues,
    })
}

/// Checks the inputs, makes the run folder and creates the workflow run.
fn create(
    spec_path: &Path,
    options: &RunOptions<'_>,
) -> Result<(Arc<Context>, TaskRegistry, WorkflowStore, i64)> {
    let spec = PipelineSpec::from_file(spec_path)?;
    let run_dir = options.run_dir.clone();
    if run_dir.exists()
        && std::fs::read_dir(&run_dir)
            .map_err(|source| PipelineError::io(&run_dir, source))?
            .any(|entry| entry.map(|e| e.file_name() != "inputs").unwrap_or(true))
    {
        return Err(PipelineError::RunFolder {
            path: run_dir,
            message: "already holds a run; resume it with `attnflow run --resume` or choose another folder".into(),
        });
    }
    let store_path = options
        .store
        .clone()
        .unwrap_or_else(|| PathBuf::from(crate::DEFAULT_STORE));
    // The store first: a wrong `--db` leaves no run folder behind.
    let mut store = open_store(&store_path)?;
    std::fs::create_dir_all(&run_dir).map_err(|source| PipelineError::io(&run_dir, source))?;
    let spec_path = spec_path
        .canonicalize()
        .map_err(|source| PipelineError::io(spec_path, source))?;
    let context = Arc::new(Context {
        run_dir: run_dir.clone(),
        spec_path,
        spec,
        store: store_path,
        progress_bar: options.progress_bar,
    });
    // Check the schema and blueprint now, so a typo fails before any work.
    load_schema(&context)?;
    load_blueprint(&context)?;
    let workflow = workflow_spec(&context)?;
    let registry = registry(&context);
    let run_id = Runner::new(&mut store, &registry)
        .create(&workflow)
        .map_err(run_error)?;
    let run_file = RunFile {
        workflow_run: run_id,
        store: context
            .store
            .canonicalize()
            .unwrap_or(context.store.clone()),
        spec: context.spec_path.clone(),
    };
    write_json(&context.file(files::RUN), &run_file)?;
    Ok((context, registry, store, run_id))
}

/// The embedded workflow, bound to this run folder: every pipeline task
/// gets the folder as its `run_dir` argument (so a worker on another
/// process finds the run), and Training the spec's queue.
fn workflow_spec(context: &Context) -> Result<WorkflowSpec> {
    let origin = "attnflow-pipeline (embedded)";
    let broken = |error: String| PipelineError::Workflow(format!("{origin}: {error}"));
    let mut table: toml::Table = embedded::WORKFLOW
        .parse()
        .map_err(|error: toml::de::Error| broken(error.to_string()))?;
    let run_dir = context
        .run_dir
        .canonicalize()
        .map_err(|source| PipelineError::io(&context.run_dir, source))?;
    let run_dir = run_dir.to_str().ok_or_else(|| PipelineError::RunFolder {
        path: run_dir.clone(),
        message: "is not valid UTF-8, which the workflow store needs".into(),
    })?;
    let states = table
        .get_mut("states")
        .and_then(toml::Value::as_table_mut)
        .ok_or_else(|| broken("no [states]".into()))?;
    for (name, state) in states.iter_mut() {
        let Some(state) = state.as_table_mut() else {
            continue;
        };
        if let (Some(queue), "Training") = (&context.spec.train.queue, name.as_str()) {
            state.insert("queue".into(), queue.clone().into());
        }
        let Some(action) = state.get_mut("action").and_then(toml::Value::as_table_mut) else {
            continue;
        };
        let ours = action
            .get("task")
            .and_then(toml::Value::as_str)
            .is_some_and(|task| task.starts_with("pipeline."));
        if ours {
            let mut args = toml::Table::new();
            args.insert("run_dir".into(), run_dir.into());
            action.insert("args".into(), args.into());
        }
    }
    let text = toml::to_string(&table).map_err(|error| broken(error.to_string()))?;
    WorkflowSpec::parse(origin, &text).map_err(|error| broken(error.to_string()))
}

fn run_error(error: attnflow_workflow::RunError) -> PipelineError {
    match error {
        attnflow_workflow::RunError::Store(error) => error.into(),
        other => PipelineError::Workflow(other.to_string()),
    }
}

/// Reads a run folder's `run.json`.
fn read_run_file(run_dir: &Path) -> Result<RunFile> {
    let run_path = run_dir.join(files::RUN);
    let text = std::fs::read_to_string(&run_path).map_err(|source| PipelineError::RunFolder {
        path: run_dir.to_path_buf(),
        message: format!("is not a pipeline run folder ({}: {source})", files::RUN),
    })?;
    serde_json::from_str(&text).map_err(|error| PipelineError::RunFolder {
        path: run_path,
        message: format!("is damaged: {error}"),
    })
}

pub(crate) fn resume(run_dir: &Path, options: RunOptions<'_>) -> Result<RunOutcome> {
    let run_path = run_dir.join(files::RUN);
    let run_file = read_run_file(run_dir)?;
    let spec = PipelineSpec::from_file(&run_file.spec)?;
    // A store given with --resume replaces the recorded one (the user moved
    // it, or keeps history elsewhere); the folder then records the new one.
    let store = match &options.store {
        Some(store) if *store != run_file.store => {
            let moved = RunFile {
                store: store.clone(),
                ..run_file.clone()
            };
            write_json(&run_path, &moved)?;
            store.clone()
        }
        _ => run_file.store.clone(),
    };
    let context = Arc::new(Context {
        run_dir: run_dir.to_path_buf(),
        spec_path: run_file.spec.clone(),
        spec,
        store,
        progress_bar: options.progress_bar,
    });
    let registry = registry(&context);
    let mut store = open_store(&context.store)?;
    let record = store.run(run_file.workflow_run)?;
    if matches!(record.status, RunStatus::Succeeded | RunStatus::Failed) {
        // Nothing left to do: report how the run ended.
        let report = context.file(files::REPORT);
        return Ok(RunOutcome {
            run_dir: context.run_dir.clone(),
            workflow_run: record.id,
            store: context.store.clone(),
            state: record.current_state,
            succeeded: record.status == RunStatus::Succeeded,
            report: report.exists().then_some(report),
        });
    }
    drive(
        &context,
        &mut store,
        &registry,
        run_file.workflow_run,
        options,
    )
}

fn drive(
    context: &Arc<Context>,
    store: &mut WorkflowStore,
    registry: &TaskRegistry,
    run_id: i64,
    mut options: RunOptions<'_>,
) -> Result<RunOutcome> {
    let record = Runner::new(store, registry)
        .with_observer(|event| (options.observer)(event))
        .resume(run_id)
        .map_err(run_error)?;
    let report = context.file(files::REPORT);
    Ok(RunOutcome {
        run_dir: context.run_dir.clone(),
        workflow_run: run_id,
        store: context.store.clone(),
        state: record.current_state.clone(),
        succeeded: record.status == RunStatus::Succeeded,
        report: report.exists().then_some(report),
    })
}

/// Opens the workflow store named by `path`: an SQLite file, or a
/// `postgres://` URL shared with workers on other machines.
pub(crate) fn open_store(path: &Path) -> Result<WorkflowStore> {
    let location = attnflow_workflow::Location::parse(&path.to_string_lossy())
        .map_err(attnflow_workflow::StoreError::from)?;
    if let Some(parent) = location
        .sqlite_path()
        .and_then(Path::parent)
        .filter(|p| !p.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent).map_err(|source| PipelineError::io(parent, source))?;
    }
    Ok(WorkflowStore::connect(&location)?)
}

/// One pipeline step: what it reads and writes is in the run folder.
type Step = fn(&Context, &TaskContext) -> Result<TaskOutput>;

/// The pipeline's tasks, by the names the embedded workflow gives them.
const STEPS: [(&str, Step); 7] = [
    ("pipeline.ingest", ingest),
    ("pipeline.check", quality_check),
    ("pipeline.reject", reject),
    ("pipeline.train", train),
    ("pipeline.validate", validate),
    ("pipeline.report", output_generation),
    ("pipeline.store", storage),
];

/// The built-in tasks plus the pipeline's own, each bound to this run.
fn registry(context: &Arc<Context>) -> TaskRegistry {
    let mut registry = TaskRegistry::with_builtins();
    for (name, step) in STEPS {
        let context = Arc::clone(context);
        registry.register(name, move |task: &TaskContext| {
            step(&context, task)
                .unwrap_or_else(|error| TaskOutput::with(Outcome::Failed, error.to_string()))
        });
    }
    registry
}

/// Registers the pipeline's tasks for `attnflow worker`: each finds its
/// run folder in the `run_dir` argument the submitted workflow carries (the
/// folder must be reachable at the same path from the worker's machine).
pub fn register_tasks(registry: &mut TaskRegistry) {
    for (name, step) in STEPS {
        registry.register(name, move |task: &TaskContext| {
            worker_context(task)
                .and_then(|context| step(&context, task))
                .unwrap_or_else(|error| TaskOutput::with(Outcome::Failed, error.to_string()))
        });
    }
}

/// The run a worker's task belongs to, from its `run_dir` argument.
fn worker_context(task: &TaskContext) -> Result<Context> {
    let run_dir = task
        .args
        .get("run_dir")
        .and_then(serde_json::Value::as_str)
        .map(PathBuf::from)
        .ok_or_else(|| {
            PipelineError::Workflow(format!(
                "state {}: a pipeline task needs its run folder as argument `run_dir`",
                task.state
            ))
        })?;
    let run_file = read_run_file(&run_dir)?;
    Ok(Context {
        spec: PipelineSpec::from_file(&run_file.spec)?,
        spec_path: run_file.spec,
        store: run_file.store,
        run_dir,
        progress_bar: false,
    })
}

/// Ingestion: snapshot every source into the run folder, so later steps (and
/// a resumed run) read exactly what was ingested.
fn ingest(context: &Context, _: &TaskContext) -> Result<TaskOutput> {
    let data_dir = context.file(files::DATA);
    std::fs::create_dir_all(&data_dir).map_err(|source| PipelineError::io(&data_dir, source))?;
    let mut total = 0u64;
    for source in &context.spec.data.sources {
        let path = context.input(source);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) => {
                return Ok(TaskOutput::with(
                    Outcome::Invalid,
                    format!("cannot read data source {}: {error}", path.display()),
                ))
            }
        };
        total += bytes.len() as u64;
        write_atomically(&data_dir.join(snapshot_name(source)), &bytes)?;
    }
    Ok(TaskOutput::with(
        Outcome::Ok,
        format!(
            "ingested {} source(s), {total} bytes",
            context.spec.data.sources.len()
        ),
    ))
}

fn snapshot_name(source: &Path) -> String {
    source
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| "source".into())
}

fn load_schema(context: &Context) -> Result<Schema> {
    let path = context.input(&context.spec.data.schema);
    let text = std::fs::read_to_string(&path).map_err(|error| PipelineError::Schema {
        schema: path.clone(),
        message: format!("cannot read the schema the pipeline names: {error}"),
    })?;
    Ok(Schema::parse(&path, &text)?)
}

fn load_blueprint(context: &Context) -> Result<BlueprintSource> {
    let path = context.input(&context.spec.model.blueprint);
    let source = BlueprintSource::from_file(&path)?;
    attnflow_blueprint::Blueprint::from_text(&source.file, &source.text, &[])?;
    Ok(source)
}

/// §6.1 quality check: every record to the queue or to quarantine with its
/// reason; then the accepted records become the training set.
fn quality_check(context: &Context, _: &TaskContext) -> Result<TaskOutput> {
    let schema = load_schema(context)?;
    let snapshots: Vec<PathBuf> = context
        .spec
        .data
        .sources
        .iter()
        .map(|source| context.file(files::DATA).join(snapshot_name(source)))
        .collect();
    // Each run checks its data into its own store: `unique` then means
    // unique within this run's data, and the queue is this run's alone.
    let mut store = attnflow_data::store::Store::open(&context.file(files::DATA_STORE))?;
    let report = check_files(
        &schema,
        &snapshots,
        Some(&mut store),
        &CheckOptions::default(),
    )?;
    assert_eq!(
        report.read,
        report.accepted + report.quarantined,
        "the data check lost records"
    );
    write_json(&context.file(files::QUALITY), &report)?;
    let profile = attnflow_data::profile::profile_files(&schema, &snapshots)?;
    write_json(&context.file(files::PROFILE), &profile)?;
    let share = if report.read == 0 {
        1.0
    } else {
        report.quarantined as f64 / report.read as f64
    };
    if report.accepted == 0 || share > context.spec.data.max_quarantine_share {
        return Ok(TaskOutput::with(
            Outcome::Invalid,
            format!(
                "{} of {} records quarantined ({:.1}%, limit {:.1}%)",
                report.quarantined,
                report.read,
                100.0 * share,
                100.0 * context.spec.data.max_quarantine_share
            ),
        ));
    }
    export_pairs(context, &store, &report)?;
    Ok(TaskOutput::with(
        Outcome::Ok,
        format!(
            "read {} = accepted {} + quarantined {}",
            report.read, report.accepted, report.quarantined
        ),
    ))
}

/// Writes the run's accepted records as `{"input": [...], "target": [...]}`
/// lines: the processing queue as training reads it.
fn export_pairs(
    context: &Context,
    store: &attnflow_data::store::Store,
    report: &CheckReport,
) -> Result<()> {
    let run_id = report.run_id.ok_or_else(|| {
        PipelineError::Workflow("the data check recorded no run in the data store".into())
    })?;
    let mut lines = Vec::new();
    let mut missing = None;
    store.queued_records(run_id, |record| {
        let field = |name: &str| record.get(name).cloned();
        match (field("input"), field("target")) {
            (Some(input), Some(target)) => {
                let line = serde_json::json!({ "input": input, "target": target });
                let _ = writeln!(lines, "{line}");
            }
            _ => missing = Some(record.to_string()),
        }
    })?;
    if let Some(record) = missing {
        return Err(PipelineError::Schema {
            schema: context.input(&context.spec.data.schema),
            message: format!("accepts records without `input` and `target` fields, which training needs: {record}"),
        });
    }
    write_atomically(&context.file(files::PAIRS), &lines)
}

/// Error handling: the data was rejected as a whole; the quarantine holds
/// the reasons and `quality.json` the counts.
fn reject(context: &Context, _: &TaskContext) -> Result<TaskOutput> {
    let detail = match std::fs::read_to_string(context.file(files::QUALITY)) {
        Ok(_) => "data rejected; see quality.json and `attnflow data quarantine`".to_string(),
        Err(_) => "data could not be ingested".to_string(),
    };
    Ok(TaskOutput::with(Outcome::Ok, detail))
}

fn train_config(context: &Context) -> Result<TrainConfig> {
    let train = &context.spec.train;
    let regulariser = Regulariser::parse(&train.regulariser)
        .map_err(|message| attnflow_train::TrainError::config("train.regulariser", message))?;
    Ok(TrainConfig {
        task: Task::Pairs {
            path: context.file(files::PAIRS),
        },
        seed: train.seed,
        steps: train.steps,
        batch_size: train.batch_size,
        learning_rate: train.learning_rate,
        min_learning_rate: train.learning_rate / 10.0,
        eval_every: train.eval_every,
        checkpoint_every: train.checkpoint_every,
        validation_size: train.validation_size,
        target_accuracy: train.target_accuracy,
        lambda: train.lambda,
        regulariser,
        ..TrainConfig::default()
    })
}

/// Training: a fresh run, or the continuation of the last checkpoint when
/// this step re-runs (after a crash, or from the Retry state — then with
/// half the budget again, so a retry trains further).
fn train(context: &Context, task: &TaskContext) -> Result<TaskOutput> {
    let directory = context.file(files::TRAINING_DIR);
    let checkpointed = directory
        .join(attnflow_train::checkpoint::META_FILE)
        .exists();
    let budget = context.spec.train.steps;
    let mut trainer = if checkpointed {
        let meta = attnflow_train::checkpoint::read_meta(&directory)?;
        let steps =
            if meta.step >= meta.config.steps && task.attempt >= 1 && validation_failed(context) {
                Some(meta.config.steps + budget / 2)
            } else {
                None
            };
        Trainer::resume(&directory, None, steps)
    } else {
        Trainer::new(load_blueprint(context)?, train_config(context)?)
            .and_then(|t| t.with_output(&directory))
    }?;
    // Recorded in training.json (`receptive_field`) and said before the
    // first step.
    if let Some(check) = trainer.reach().filter(|check| !check.fits) {
        eprintln!("  warning: {}", check.message());
    }

    let bar = progress_bar(context, trainer.config().steps, trainer.step_count());
    let report = trainer.run(|progress| {
        bar.set_position(progress.step);
        let accuracy = progress
            .evaluation
            .map(|e| format!(" acc {:.3}", e.sequence_accuracy))
            .unwrap_or_default();
        bar.set_message(format!(
            "loss {:.4}{accuracy} {:.0} tok/s",
            progress.metrics.loss, progress.metrics.tokens_per_second
        ));
        ControlFlow::Continue(())
    })?;
    bar.finish_and_clear();
    write_json(
        &context.file(files::TRAINING),
        &merge_training(context, report)?,
    )?;
    Ok(TaskOutput::with(Outcome::Ok, "trained".to_string()))
}

/// Keeps the evaluations of earlier attempts, so a resumed run's report
/// shows the whole curve.
fn merge_training(context: &Context, mut report: TrainReport) -> Result<TrainReport> {
    if let Ok(text) = std::fs::read_to_string(context.file(files::TRAINING)) {
        if let Ok(previous) = serde_json::from_str::<TrainReport>(&text) {
            let first = report.evaluations.first().map_or(u64::MAX, |e| e.step);
            let mut merged: Vec<_> = previous
                .evaluations
                .into_iter()
                .filter(|e| e.step < first)
                .collect();
            merged.append(&mut report.evaluations);
            report.evaluations = merged;
        }
    }
    Ok(report)
}

fn validation_failed(context: &Context) -> bool {
    std::fs::read_to_string(context.file(files::VALIDATION))
        .ok()
        .and_then(|text| serde_json::from_str::<Validation>(&text).ok())
        .is_some_and(|validation| !validation.passed)
}

fn progress_bar(context: &Context, steps: u64, position: u64) -> ProgressBar {
    if !context.progress_bar {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(steps);
    bar.set_style(
        ProgressStyle::with_template("  training {bar:30} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_position(position);
    bar
}

/// Validation: the last checkpoint, evaluated on held-out records, against
/// the spec's threshold.
fn validate(context: &Context, _: &TaskContext) -> Result<TaskOutput> {
    let (meta, evaluation) =
        attnflow_train::evaluate_checkpoint(&context.file(files::TRAINING_DIR))?;
    let threshold = context.spec.validate.min_sequence_accuracy;
    let validation = Validation {
        sequence_accuracy: evaluation.sequence_accuracy,
        token_accuracy: evaluation.token_accuracy,
        threshold,
        passed: evaluation.sequence_accuracy >= threshold,
        step: meta.step,
    };
    write_json(&context.file(files::VALIDATION), &validation)?;
    let detail = format!(
        "sequence accuracy {:.4} (threshold {threshold}) at step {}",
        validation.sequence_accuracy, meta.step
    );
    Ok(TaskOutput::with(
        if validation.passed {
            Outcome::Ok
        } else {
            Outcome::Invalid
        },
        detail,
    ))
}

/// Output generation: the HTML report.
fn output_generation(context: &Context, _: &TaskContext) -> Result<TaskOutput> {
    let html = crate::report::build(context)?;
    write_atomically(&context.file(files::REPORT), html.as_bytes())?;
    Ok(TaskOutput::with(
        Outcome::Ok,
        "report.html written".to_string(),
    ))
}

/// Storage: the manifest of every artifact with its size and SHA-256,
/// written last, marks the run folder complete.
fn storage(context: &Context, _: &TaskContext) -> Result<TaskOutput> {
    let manifest = Manifest::of_folder(
        &context.run_dir,
        &context.spec.pipeline.name,
        &context.store,
        &context.file(files::DATA_STORE),
    )?;
    write_json(&context.file(files::MANIFEST), &manifest)?;
    Ok(TaskOutput::with(
        Outcome::Ok,
        format!("{} artifacts", manifest.artifacts.len()),
    ))
}
