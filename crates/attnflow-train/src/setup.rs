//! What training and inference both build from a blueprint and a task:
//! the model with seeded weights, the task's data, and which nodes take the
//! tokens and give the logits, all checked against each other.

use attnflow_blueprint::{Blueprint, Element, Op};
use candle_core::{Device, Var};

use crate::checkpoint;
use crate::config::{BlueprintSource, TrainConfig};
use crate::model::Model;
use crate::store::ParameterStore;
use crate::tasks::{Dataset, Format, Task};
use crate::{Result, TrainError};

/// A blueprint built for a task.
pub(crate) struct Setup {
    pub blueprint: Blueprint,
    /// [`checkpoint::blueprint_hash`] of the blueprint and its parameters.
    pub blueprint_hash: String,
    pub model: Model,
    pub dataset: Dataset,
    /// The input node that takes token ids.
    pub token_input: String,
    /// Other index inputs (fed zeros).
    pub other_index_inputs: Vec<String>,
    /// The output node of `(batch, seq, vocab)` logits.
    pub logits: String,
    /// Every parameter, in checkpoint order.
    pub parameters: Vec<(String, Var)>,
    pub parameter_shapes: Vec<(String, Vec<usize>)>,
}

impl Setup {
    /// Builds the model with seeded weights and the task's data, and checks
    /// that they fit: one token input, one logits output, tables and
    /// positions large enough for the task.
    pub fn build(source: &BlueprintSource, config: &TrainConfig) -> Result<Self> {
        let blueprint = Blueprint::from_text(&source.file, &source.text, &config.overrides)?;
        let device = Device::Cpu;
        let store = ParameterStore::new(config.seed);
        let model = Model::new(&blueprint, &store, &device)?;
        let fault = |node: &str, message: String| TrainError::Model {
            blueprint: blueprint.name.clone(),
            node: node.to_string(),
            message,
        };

        let mut token_input = None;
        let mut other_index_inputs = Vec::new();
        for input in blueprint.inputs() {
            match input.element {
                Element::Index if token_input.is_none() => token_input = Some(input.name.clone()),
                Element::Index => other_index_inputs.push(input.name.clone()),
                Element::Float => {
                    return Err(fault(
                        &input.name,
                        "holds real numbers; the training tasks feed token ids only".into(),
                    ))
                }
            }
        }
        let token_input = token_input.ok_or_else(|| {
            fault(
                &blueprint.name,
                "has no token input (an input with dtype = \"index\")".into(),
            )
        })?;
        let candidates: Vec<_> = blueprint
            .outputs()
            .into_iter()
            .filter(|node| node.element == Element::Float && node.shape.len() == 3)
            .collect();
        let logits_node = match candidates.as_slice() {
            [only] => *only,
            [] => {
                return Err(fault(
                    &blueprint.name,
                    format!(
                        "has no (batch, seq, vocab) output to read token predictions from; its outputs are {}",
                        blueprint
                            .outputs()
                            .iter()
                            .map(|node| format!("`{}` {:?}", node.name, node.shape))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ))
            }
            several => several
                .iter()
                .find(|node| matches!(node.op, Op::Head { .. }))
                .copied()
                .ok_or_else(|| {
                    fault(&blueprint.name, "has several (batch, seq, features) outputs and none is a `head`".into())
                })?,
        };
        let logits = logits_node.name.clone();
        let output_vocab = *logits_node.shape.last().unwrap_or(&0) as usize;

        let format = if model.is_autoregressive() {
            Format::Autoregressive
        } else {
            Format::Aligned
        };
        let length = match (&config.task, config.length) {
            (_, Some(length)) => length,
            (Task::Text { .. }, None) => blueprint
                .node(&token_input)
                .and_then(|node| node.shape.last().copied())
                .unwrap_or(16) as usize,
            (_, None) => 16,
        };
        let dataset = Dataset::new(
            &config.task,
            format,
            length,
            config.symbols,
            config.seed,
            config.validation_size,
        )?;
        let vocab = dataset.vocab_size();
        for node in &blueprint.nodes {
            match &node.op {
                Op::Embedding { vocab: table, .. } if node.inputs.first() == Some(&token_input) && (*table as usize) < vocab => {
                    return Err(fault(
                        &node.name,
                        format!("its table has {table} rows but task `{}` uses {vocab} token ids", config.task.name()),
                    ))
                }
                Op::Positional { max_len: Some(max_len), .. } if (*max_len as usize) < dataset.sequence_length() => {
                    return Err(fault(
                        &node.name,
                        format!(
                            "max_len {max_len} is shorter than the task's input length {} (task `{}`, length {length}, {format:?} layout)",
                            dataset.sequence_length(),
                            config.task.name()
                        ),
                    ))
                }
                _ => {}
            }
        }
        if output_vocab < vocab {
            return Err(fault(
                &logits,
                format!(
                    "predicts {output_vocab} classes but task `{}` uses {vocab} token ids",
                    config.task.name()
                ),
            ));
        }

        let parameters = store.parameters();
        let parameter_shapes: Vec<(String, Vec<usize>)> = parameters
            .iter()
            .map(|(name, var)| (name.clone(), var.dims().to_vec()))
            .collect();
        let blueprint_hash = checkpoint::blueprint_hash(&blueprint, &parameter_shapes);
        Ok(Setup {
            blueprint,
            blueprint_hash,
            model,
            dataset,
            token_input,
            other_index_inputs,
            logits,
            parameters,
            parameter_shapes,
        })
    }
}
