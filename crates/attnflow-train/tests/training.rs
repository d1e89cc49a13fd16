//! Training end to end on tiny models: the loss falls, λ = 0 is plain
//! cross-entropy, λ > 0 lowers attention entropy, the reported gradient
//! norms are candle's, resume is bit-identical, bad checkpoints are refused.

mod common;

use std::ops::ControlFlow;
use std::path::Path;

use attnflow_train::gradflow::GradientRecord;
use attnflow_train::tasks::Task;
use attnflow_train::trainer::BlueprintSource;
use attnflow_train::{Regulariser, StopReason, TrainConfig, TrainError, Trainer};
use candle_core::DType;

fn encoder() -> BlueprintSource {
    common::source("train/reverse.toml")
}

fn decoder() -> BlueprintSource {
    common::source("train/decoder.toml")
}

fn small(task: Task) -> TrainConfig {
    TrainConfig {
        task,
        length: Some(6),
        symbols: 6,
        steps: 40,
        batch_size: 16,
        learning_rate: 1e-2,
        min_learning_rate: 1e-3,
        warmup_steps: 5,
        eval_every: 20,
        validation_size: 64,
        overrides: vec![
            ("d_model".into(), "32".into()),
            ("layers".into(), "1".into()),
            ("d_ff".into(), "64".into()),
        ],
        ..TrainConfig::default()
    }
}

fn bits(trainer: &Trainer) -> Vec<(String, Vec<u32>)> {
    trainer
        .weights()
        .into_iter()
        .map(|(name, tensor)| {
            let values = tensor.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            (name, values.iter().map(|value| value.to_bits()).collect())
        })
        .collect()
}

fn run(trainer: &mut Trainer) -> attnflow_train::TrainReport {
    trainer.run(|_| ControlFlow::Continue(())).unwrap()
}

#[test]
fn loss_falls_well_below_its_start() {
    let mut trainer = Trainer::new(encoder(), small(Task::Reverse)).unwrap();
    let first = trainer.step().unwrap().metrics.loss;
    let report = run(&mut trainer);
    let last = report.last_step.unwrap().loss;
    assert!(last < 0.5 * first, "loss {first} -> {last}");
    let evaluation = report.evaluations.last().unwrap();
    assert!(evaluation.token_accuracy > 0.5, "{evaluation:?}");
    assert_eq!(report.stop_reason, StopReason::Budget);
    assert_eq!(report.step, 40);
    // Text: a causal decoder learns character statistics.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("text.txt");
    std::fs::write(&path, "abcabcabdabcabcabd".repeat(40)).unwrap();
    let mut config = small(Task::Text { path });
    config.length = Some(12);
    let mut trainer = Trainer::new(decoder(), config).unwrap();
    let first = trainer.step().unwrap().metrics.loss;
    let report = run(&mut trainer);
    let last = report.last_step.unwrap().loss;
    assert!(last < 0.5 * first, "text loss {first} -> {last}");
}

#[test]
fn target_metric_stops_training() {
    let mut config = small(Task::Copy);
    config.steps = 400;
    config.eval_every = 10;
    config.target_accuracy = Some(0.9);
    let mut trainer = Trainer::new(encoder(), config).unwrap();
    let report = run(&mut trainer);
    assert_eq!(
        report.stop_reason,
        StopReason::Target,
        "{:?}",
        report.evaluations
    );
    assert!(report.step < 400);
    assert!(report.evaluations.last().unwrap().sequence_accuracy >= 0.9);
}

#[test]
fn lambda_zero_is_plain_cross_entropy_and_lambda_lowers_entropy() {
    let plain = small(Task::Reverse);
    let mut plain_trainer = Trainer::new(encoder(), plain.clone()).unwrap();
    let plain_report = run(&mut plain_trainer);
    let measured = TrainConfig {
        regulariser: Regulariser::Entropy,
        lambda: 0.0,
        ..plain.clone()
    };
    let mut measured_trainer = Trainer::new(encoder(), measured).unwrap();
    let measured_report = run(&mut measured_trainer);
    assert_eq!(
        bits(&plain_trainer),
        bits(&measured_trainer),
        "λ = 0 changed training"
    );
    let last = measured_report.last_step.unwrap();
    assert!(last.regulariser.unwrap() > 0.0);
    assert_eq!(last.objective, last.loss, "J = L when λ = 0");
    assert!(plain_report
        .last_step
        .as_ref()
        .unwrap()
        .regulariser
        .is_none());

    let regularised = TrainConfig {
        regulariser: Regulariser::Entropy,
        lambda: 1.0,
        ..plain
    };
    let mut regularised_trainer = Trainer::new(encoder(), regularised).unwrap();
    let regularised_report = run(&mut regularised_trainer);
    let last = regularised_report.last_step.clone().unwrap();
    assert!((last.objective - (last.loss + last.regulariser.unwrap())).abs() < 1e-5);
    let entropy = |report: &attnflow_train::TrainReport| {
        report
            .evaluations
            .last()
            .unwrap()
            .attention_entropy
            .unwrap()
    };
    let (without, with) = (entropy(&plain_report), entropy(&regularised_report));
    assert!(
        with < 0.7 * without,
        "entropy {without} with λ = 0, {with} with λ = 1"
    );
}

#[test]
fn reported_gradient_norms_are_candles() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = small(Task::Sort);
    config.log_every = 2;
    let mut trainer = Trainer::new(encoder(), config)
        .unwrap()
        .with_output(dir.path())
        .unwrap();
    let names = trainer.parameter_names();
    let mut direct = Vec::new();
    for _ in 0..2 {
        let outcome = trainer.step().unwrap();
        let store = trainer.model().store().parameters();
        let norms: Vec<f64> = store
            .iter()
            .map(|(_, var)| {
                let gradient = outcome.gradients.get(var.as_tensor()).unwrap();
                let values = gradient.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                values
                    .iter()
                    .map(|v| f64::from(*v).powi(2))
                    .sum::<f64>()
                    .sqrt()
            })
            .collect();
        direct.push((outcome.metrics.step, norms));
    }
    trainer.checkpoint().unwrap();
    let log = std::fs::read_to_string(dir.path().join("grad_norms.jsonl")).unwrap();
    let records: Vec<GradientRecord> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    // Step 1 is always logged, then every log_every = 2 steps.
    assert_eq!(
        records.iter().map(|r| r.step).collect::<Vec<_>>(),
        vec![1, 2]
    );
    for ((step, norms), record) in direct.iter().zip(&records) {
        assert_eq!(*step, record.step);
        for (name, norm) in names.iter().zip(norms) {
            let reported = record.norms[name];
            assert!(*norm > 0.0);
            assert!(
                (reported - norm).abs() <= 1e-9 * norm,
                "{name}: {reported} vs {norm}"
            );
        }
        let total = norms.iter().map(|n| n * n).sum::<f64>().sqrt();
        assert!((record.total_norm - total).abs() <= 1e-9 * total);
    }
}

fn resume_config() -> TrainConfig {
    TrainConfig {
        steps: 12,
        regulariser: Regulariser::Band { width: 2 },
        lambda: 0.1,
        ..small(Task::Copy)
    }
}

#[test]
fn resume_is_bit_identical() {
    // The decoder has dropout: its masks must continue exactly too.
    let mut straight = Trainer::new(decoder(), resume_config()).unwrap();
    run(&mut straight);

    let dir = tempfile::tempdir().unwrap();
    let mut first = Trainer::new(decoder(), resume_config())
        .unwrap()
        .with_output(dir.path())
        .unwrap();
    let report = first
        .run(|progress| {
            if progress.step == 6 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
    assert_eq!(report.stop_reason, StopReason::Interrupted);
    assert_eq!(report.step, 6);
    drop(first);
    let mut resumed = Trainer::resume(dir.path(), None, None).unwrap();
    assert_eq!(resumed.step_count(), 6);
    let report = run(&mut resumed);
    assert_eq!((report.step, report.steps_this_run), (12, 6));
    assert_eq!(bits(&straight), bits(&resumed));
    // The logs hold each step once.
    let metrics = std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
    let steps: Vec<u64> = metrics
        .lines()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(steps, (1..=12).collect::<Vec<_>>());
    // The checkpoint evaluates to what the trainer saw.
    let (meta, evaluation) = attnflow_train::evaluate_checkpoint(dir.path()).unwrap();
    assert_eq!(meta.step, 12);
    assert_eq!(evaluation, resumed.evaluate().unwrap());
}

fn checkpointed(dir: &Path) {
    let mut config = resume_config();
    config.steps = 2;
    let mut trainer = Trainer::new(encoder(), config)
        .unwrap()
        .with_output(dir)
        .unwrap();
    run(&mut trainer);
}

fn refused(dir: &Path, source: Option<BlueprintSource>) -> String {
    match Trainer::resume(dir, source, None) {
        Err(error @ TrainError::Checkpoint { .. }) => error.to_string(),
        Err(other) => panic!("wrong error kind: {other}"),
        Ok(_) => panic!("a bad checkpoint was accepted"),
    }
}

fn weights_file(dir: &Path) -> std::path::PathBuf {
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("checkpoint.json")).unwrap())
            .unwrap();
    dir.join(meta["weights"]["file"].as_str().unwrap())
}

#[test]
fn bad_checkpoints_are_refused_with_the_problem_named() {
    // A flipped byte.
    let dir = tempfile::tempdir().unwrap();
    checkpointed(dir.path());
    let path = weights_file(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let message = refused(dir.path(), None);
    assert!(
        message.contains("checksum mismatch") && message.contains("weights-"),
        "{message}"
    );

    // A missing tensor, in a file whose checksum is right.
    let dir = tempfile::tempdir().unwrap();
    checkpointed(dir.path());
    let path = weights_file(dir.path());
    let mut tensors = candle_core::safetensors::load(&path, &candle_core::Device::Cpu).unwrap();
    tensors.remove("head.weight").unwrap();
    candle_core::safetensors::save(&tensors, &path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let meta_path = dir.path().join("checkpoint.json");
    let mut meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&meta_path).unwrap()).unwrap();
    meta["weights"]["bytes"] = bytes.len().into();
    meta["weights"]["fnv1a64"] = format!("{:016x}", attnflow_train::rng::fnv1a64(&bytes)).into();
    std::fs::write(&meta_path, meta.to_string()).unwrap();
    let message = refused(dir.path(), None);
    assert!(
        message.contains("missing tensor `head.weight`"),
        "{message}"
    );

    // Another blueprint.
    let dir = tempfile::tempdir().unwrap();
    checkpointed(dir.path());
    let mut other = encoder();
    other.text = other.text.replace("heads = 4", "heads = 2");
    let message = refused(dir.path(), Some(other));
    assert!(message.contains("another blueprint"), "{message}");

    // A damaged commit record.
    let dir = tempfile::tempdir().unwrap();
    checkpointed(dir.path());
    let meta_path = dir.path().join("checkpoint.json");
    let text = std::fs::read_to_string(&meta_path).unwrap();
    std::fs::write(&meta_path, &text[..text.len() / 2]).unwrap();
    let message = refused(dir.path(), None);
    assert!(
        message.contains("checkpoint.json") && message.contains("line"),
        "{message}"
    );

    // No checkpoint at all; and a fresh run will not overwrite one.
    let empty = tempfile::tempdir().unwrap();
    assert!(refused(empty.path(), None).contains("no checkpoint"));
    let dir = tempfile::tempdir().unwrap();
    checkpointed(dir.path());
    let error = Trainer::new(encoder(), resume_config())
        .unwrap()
        .with_output(dir.path())
        .err()
        .unwrap();
    assert!(
        error.to_string().contains("already holds a checkpoint"),
        "{error}"
    );
}

#[test]
fn non_finite_loss_stops_and_keeps_the_last_good_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let config = TrainConfig {
        learning_rate: 1e30,
        min_learning_rate: 1e30,
        warmup_steps: 0,
        clip_norm: None,
        checkpoint_every: 1,
        steps: 50,
        ..small(Task::Reverse)
    };
    let mut trainer = Trainer::new(encoder(), config)
        .unwrap()
        .with_output(dir.path())
        .unwrap();
    let error = trainer.run(|_| ControlFlow::Continue(())).err().unwrap();
    let TrainError::NonFinite {
        step,
        last_checkpoint,
        ..
    } = &error
    else {
        panic!("expected a non-finite stop, got {error}");
    };
    let (path, good) = last_checkpoint.clone().expect("a checkpoint was written");
    assert_eq!(good + 1, *step);
    assert!(
        error.to_string().contains("last good checkpoint"),
        "{error}"
    );
    let resumed = Trainer::resume(&path, None, None).unwrap();
    assert_eq!(resumed.step_count(), good);
    for (_, tensor) in resumed.weights() {
        let values = tensor
            .to_dtype(DType::F64)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        assert!(values.iter().all(|v| v.is_finite()));
    }
}

#[test]
fn mismatched_tasks_and_models_are_refused() {
    // The encoder is bidirectional: text prediction would see the answer.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.txt");
    std::fs::write(&path, "hello world ".repeat(20)).unwrap();
    let error = Trainer::new(encoder(), small(Task::Text { path }))
        .err()
        .unwrap();
    assert!(error.to_string().contains("causal"), "{error}");
    // Too many symbols for the embedding.
    let mut config = small(Task::Copy);
    config.symbols = 40;
    let error = Trainer::new(encoder(), config).err().unwrap();
    assert!(
        error.to_string().contains("`embed`") && error.to_string().contains("rows"),
        "{error}"
    );
    // A sequence longer than the learned positions.
    let mut config = small(Task::Reverse);
    config.length = Some(100);
    let error = Trainer::new(encoder(), config).err().unwrap();
    assert!(error.to_string().contains("max_len"), "{error}");
    // λ without a regulariser.
    let mut config = small(Task::Copy);
    config.lambda = 0.5;
    assert!(Trainer::new(encoder(), config).is_err());
    // BERT has no token-logits output.
    let mut config = small(Task::Copy);
    config.overrides.push(("heads".into(), "4".into()));
    config.overrides.push(("vocab".into(), "30".into()));
    let error = Trainer::new(common::source("blueprints/bert-base.toml"), config)
        .err()
        .unwrap();
    assert!(error.to_string().contains("(batch, seq, vocab)"), "{error}");
}
