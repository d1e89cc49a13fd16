//! A trained model opened for inference: the weights of a checkpoint and
//! the vocabulary of its task, without the optimizer state or the logs.
//! Inspection and reports open checkpoints through this one entry point.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{Device, Tensor};

use crate::checkpoint::{self, CheckpointMeta};
use crate::model::{Capture, Mode, Model};
use crate::setup::Setup;
use crate::tasks::Example;
use crate::vocabulary::Vocabulary;
use crate::{Result, TrainError};

/// The model of a training checkpoint, ready to read tokens.
pub struct TrainedModel {
    model: Model,
    vocabulary: Vocabulary,
    validation: Vec<Example>,
    meta: CheckpointMeta,
}

impl TrainedModel {
    /// Opens the checkpoint in `directory` (written by `attnflow train` or a
    /// pipeline's Training step): rebuilds the blueprint saved there, checks
    /// that the checkpoint belongs to it, and loads the weights (verified
    /// against their recorded size and checksum).
    pub fn open(directory: &Path) -> Result<Self> {
        let meta = checkpoint::read_meta(directory)?;
        let source = checkpoint::saved_source(directory)?;
        let setup = Setup::build(&source, &meta.config)?;
        checkpoint::check_blueprint(
            directory,
            &meta,
            &setup.blueprint.name,
            &setup.blueprint_hash,
        )?;
        let weights_path = directory.join(&meta.weights.file);
        let weights = checkpoint::load_weights(directory, &meta, setup.model.device())?;
        let weights = checkpoint::take_tensors(&weights_path, weights, &setup.parameter_shapes)?;
        for ((_, var), value) in setup.parameters.iter().zip(&weights) {
            var.set(value)?;
        }
        Ok(TrainedModel {
            vocabulary: Vocabulary::of(&setup.dataset),
            validation: setup.dataset.validation().to_vec(),
            model: setup.model,
            meta,
        })
    }

    /// The model, with the checkpoint's weights.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// How the task writes its tokens.
    pub fn vocabulary(&self) -> &Vocabulary {
        &self.vocabulary
    }

    /// The task's fixed validation examples.
    pub fn validation(&self) -> &[Example] {
        &self.validation
    }

    /// The checkpoint's record (step, configuration, blueprint).
    pub fn meta(&self) -> &CheckpointMeta {
        &self.meta
    }
}

/// Runs one sequence of token ids through `model` and returns every
/// attention node's weights, one `(heads, n, n)` tensor per node in
/// blueprint order.
pub fn attention_maps(model: &Model, ids: &[u32]) -> Result<Vec<Tensor>> {
    let blueprint = model.blueprint();
    let input = blueprint
        .inputs()
        .find(|node| node.element == attnflow_blueprint::Element::Index)
        .ok_or_else(|| TrainError::Model {
            blueprint: blueprint.name.clone(),
            node: blueprint.name.clone(),
            message: "has no token-id input to feed tokens to".into(),
        })?
        .name
        .clone();
    let tokens = Tensor::from_vec(ids.to_vec(), (1, ids.len()), &Device::Cpu)?;
    let inputs = BTreeMap::from([(input, tokens)]);
    let output = model.forward(&inputs, Mode::Eval, Some(&Capture::all()))?;
    if output.attention.is_empty() {
        return Err(TrainError::Model {
            blueprint: blueprint.name.clone(),
            node: blueprint.name.clone(),
            message: "has no attention node".into(),
        });
    }
    output
        .attention
        .iter()
        .map(|captured| Ok(captured.weights.get(0)?))
        .collect()
}
