//! Where attention maps come from, and how an input becomes tokens for
//! each source.

use std::path::{Path, PathBuf};

use attnflow_core::analysis::{character_tokens, AttentionStack, SeededModel, SeededModelConfig};
use attnflow_models::PretrainedDecoder;
use attnflow_train::{attention_maps, Model, TrainedModel, Vocabulary};

use crate::error::{InspectError, Result};
use crate::maps::read_stack;

/// A source of attention maps.
#[derive(Clone, Debug)]
pub enum AttentionSource {
    /// A safetensors file of maps (see [`crate::read_stack`]); `batch` picks
    /// the batch element.
    WeightsFile {
        /// The file.
        path: PathBuf,
        /// The batch element, for maps with a batch axis.
        batch: usize,
    },
    /// `MultiHeadAttention` blocks with weights drawn from a seed: attention
    /// to look at before any training.
    Seeded(SeededModelConfig),
    /// A training checkpoint directory (`attnflow train --out DIR`, or a
    /// pipeline run's `training/`).
    Checkpoint(PathBuf),
    /// A blueprint spec built with weights drawn from `seed`.
    Blueprint {
        /// The spec file.
        spec: PathBuf,
        /// The seed of every weight.
        seed: u64,
    },
    /// A pretrained model: a Hugging Face directory (BERT, llama, mistral,
    /// qwen2, gpt2) or a GGUF file.
    Pretrained(PathBuf),
}

/// What to run through the source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// Nothing given: only a file of maps can do without (its tokens are
    /// then numbered `#0`, `#1`, ...).
    Nothing,
    /// Text as the user typed it: split into characters, or into words for
    /// models whose tokens are words or ids; tokenized by a pretrained
    /// model's own tokenizer.
    Text(String),
    /// One token per entry, as written in a tokens file.
    Tokens(Vec<String>),
    /// Token ids, for models trained by attnflow.
    Ids(Vec<u32>),
}

/// The attention of one input: every layer's and head's `n × n` map, the
/// tokens that label them and where they came from.
#[derive(Clone, Debug)]
pub struct Inspection {
    /// The `n` tokens, as the source writes them.
    pub tokens: Vec<String>,
    /// `(layers, heads, n, n)`, row-stochastic, in `f64`.
    pub maps: AttentionStack,
    /// Where the maps came from, in words.
    pub description: String,
    /// For grouped-query attention, the key/value head each query head
    /// shares (`kv_groups[head]`); `None` when every head has its own.
    pub kv_groups: Option<Vec<usize>>,
}

/// A validation example of a trained model: its input and the answer it
/// should give, written as tokens.
#[derive(Clone, Debug)]
pub struct Example {
    /// The model's input.
    pub input: Input,
    /// The target tokens.
    pub answer: Vec<String>,
}

/// A source opened once, ready for many inputs.
pub struct Inspector {
    opened: Opened,
    place: String,
}

enum Opened {
    Maps(AttentionStack),
    Seeded(SeededModel),
    Trained(Box<TrainedModel>),
    Blueprint { model: Box<Model>, seed: u64 },
    Pretrained(Box<attnflow_models::PretrainedBert>),
    Decoder(Box<PretrainedDecoder>),
}

/// The attention of `input` run through `source`.
pub fn inspect(source: &AttentionSource, input: &Input) -> Result<Inspection> {
    Inspector::open(source)?.inspect(input)
}

impl Inspector {
    /// Opens `source`: reads a file of maps, builds a seeded model, loads a
    /// checkpoint or a pretrained model.
    pub fn open(source: &AttentionSource) -> Result<Self> {
        let (opened, place) = match source {
            AttentionSource::WeightsFile { path, batch } => {
                (Opened::Maps(read_stack(path, *batch)?), display(path))
            }
            AttentionSource::Seeded(config) => {
                let model = SeededModel::new(config.clone())
                    .map_err(InspectError::analysis("seeded model"))?;
                (Opened::Seeded(model), "seeded model".to_string())
            }
            AttentionSource::Checkpoint(directory) => (
                Opened::Trained(Box::new(TrainedModel::open(directory)?)),
                display(directory),
            ),
            AttentionSource::Blueprint { spec, seed } => {
                let model = blueprint_model(spec, *seed)?;
                (
                    Opened::Blueprint {
                        model: Box::new(model),
                        seed: *seed,
                    },
                    display(spec),
                )
            }
            AttentionSource::Pretrained(path) => {
                let opened = match attnflow_models::PretrainedModel::open(path)? {
                    attnflow_models::PretrainedModel::Bert(model) => Opened::Pretrained(model),
                    attnflow_models::PretrainedModel::Decoder(model) => Opened::Decoder(model),
                };
                (opened, display(path))
            }
        };
        Ok(Self { opened, place })
    }

    /// Runs `input` through the source (or labels a file's maps with it).
    pub fn inspect(&self, input: &Input) -> Result<Inspection> {
        match &self.opened {
            Opened::Maps(stack) => self.label_maps(stack, input),
            Opened::Seeded(model) => {
                let tokens = match input {
                    Input::Text(text) => character_tokens(text),
                    Input::Tokens(tokens) => tokens.clone(),
                    _ => Vec::new(),
                };
                if tokens.is_empty() {
                    return Err(self.needs_input());
                }
                let maps = model
                    .attention(&tokens)
                    .map_err(InspectError::analysis("seeded model"))?;
                let config = model.config();
                let description = format!(
                    "seeded model ({} layers × {} heads, width {}, seed {}{})",
                    config.layers,
                    config.heads,
                    config.width,
                    config.seed,
                    if config.causal { ", causal" } else { "" }
                );
                Ok(Inspection {
                    tokens,
                    maps,
                    description,
                    kv_groups: None,
                })
            }
            Opened::Trained(trained) => {
                let (tokens, ids) = self.tokens_and_ids(trained.vocabulary(), input)?;
                let meta = trained.meta();
                let description = format!(
                    "checkpoint {} (step {}, task {})",
                    self.place,
                    meta.step,
                    meta.config.task.name()
                );
                self.run(trained.model(), tokens, &ids, description)
            }
            Opened::Blueprint { model, seed } => {
                let vocabulary = Vocabulary::Numbers(embedding_rows(model));
                let (tokens, ids) = self.tokens_and_ids(&vocabulary, input)?;
                let description =
                    format!("blueprint {} with seeded weights (seed {seed})", self.place);
                self.run(model, tokens, &ids, description)
            }
            Opened::Pretrained(model) => self.pretrained(model, input),
            Opened::Decoder(model) => {
                let inspection = match input {
                    Input::Text(text) => model.inspect(text)?,
                    Input::Ids(ids) if !ids.is_empty() => {
                        model.inspect_tokens(model.tokens_of(ids))?
                    }
                    _ => {
                        return Err(InspectError::input(
                            &self.place,
                            "a decoder reads text: give it with --text \"...\"",
                        ))
                    }
                };
                decoder_inspection(model, &inspection)
            }
        }
    }

    /// The validation examples of a trained checkpoint, at most `count`.
    pub fn validation_examples(&self, count: usize) -> Result<Vec<Example>> {
        let Opened::Trained(trained) = &self.opened else {
            return Err(InspectError::input(
                &self.place,
                "only a training checkpoint has validation examples",
            ));
        };
        Ok(trained
            .validation()
            .iter()
            .take(count)
            .map(|example| Example {
                input: Input::Ids(example.input.clone()),
                answer: trained.vocabulary().decode(&example.target),
            })
            .collect())
    }

    fn needs_input(&self) -> InspectError {
        InspectError::input(
            &self.place,
            "give the model's input as --text \"...\" or --tokens FILE",
        )
    }

    fn label_maps(&self, stack: &AttentionStack, input: &Input) -> Result<Inspection> {
        let n = stack.num_tokens();
        let tokens = match input {
            Input::Nothing => (0..n).map(|i| format!("#{i}")).collect(),
            Input::Text(text) => character_tokens(text),
            Input::Tokens(tokens) => tokens.clone(),
            Input::Ids(ids) => ids.iter().map(|id| format!("#{id}")).collect(),
        };
        if tokens.len() != n {
            let given = match input {
                Input::Text(_) => "one per character of the text",
                _ => "one per line of the tokens file",
            };
            return Err(InspectError::input(
                &self.place,
                format!(
                    "holds maps over {n} tokens but {} tokens were given ({given})",
                    tokens.len()
                ),
            ));
        }
        Ok(Inspection {
            tokens,
            maps: stack.clone(),
            description: self.place.clone(),
            kv_groups: None,
        })
    }

    fn tokens_and_ids(
        &self,
        vocabulary: &Vocabulary,
        input: &Input,
    ) -> Result<(Vec<String>, Vec<u32>)> {
        let tokens = match input {
            Input::Ids(ids) => return Ok((vocabulary.decode(ids), ids.clone())),
            Input::Text(text) => vocabulary.split(text),
            Input::Tokens(tokens) => tokens.clone(),
            Input::Nothing => Vec::new(),
        };
        if tokens.is_empty() {
            return Err(self.needs_input());
        }
        let ids = vocabulary
            .encode(&tokens)
            .map_err(|unknown| InspectError::input(&self.place, unknown.to_string()))?;
        Ok((tokens, ids))
    }

    fn run(
        &self,
        model: &Model,
        tokens: Vec<String>,
        ids: &[u32],
        description: String,
    ) -> Result<Inspection> {
        let layers = attention_maps(model, ids)?;
        let maps = AttentionStack::from_layer_tensors(&layers)
            .map_err(InspectError::analysis(self.place.clone()))?;
        Ok(Inspection {
            tokens,
            maps,
            description,
            kv_groups: None,
        })
    }

    fn pretrained(
        &self,
        model: &attnflow_models::PretrainedBert,
        input: &Input,
    ) -> Result<Inspection> {
        let Input::Text(text) = input else {
            return Err(InspectError::input(
                &self.place,
                "a pretrained model reads text: give it with --text \"...\"",
            ));
        };
        let inspection = model.inspect(text)?;
        let layers = inspection.layer_attentions()?;
        let maps = AttentionStack::from_layer_tensors(&layers)
            .map_err(InspectError::analysis(self.place.clone()))?;
        let description = format!(
            "{} ({} word pieces{})",
            self.place,
            inspection.encoding.tokens.len(),
            if inspection.encoding.truncated {
                format!(", text cut at {}", model.tokenizer.max_length())
            } else {
                String::new()
            }
        );
        Ok(Inspection {
            tokens: inspection.encoding.tokens,
            maps,
            description,
            kv_groups: None,
        })
    }
}

/// The attention of given token ids run through a decoder already loaded
/// (`attnflow generate --inspect`: the prompt and the generated tokens).
pub fn inspect_decoder(decoder: &PretrainedDecoder, ids: &[u32]) -> Result<Inspection> {
    if ids.is_empty() {
        return Err(InspectError::input(
            display(&decoder.path),
            "no tokens to inspect",
        ));
    }
    let inspection = decoder.inspect_tokens(decoder.tokens_of(ids))?;
    decoder_inspection(decoder, &inspection)
}

/// A decoder's maps as an [`Inspection`], labelled with each query head's
/// key/value group when heads are grouped.
fn decoder_inspection(
    decoder: &PretrainedDecoder,
    inspection: &attnflow_models::DecoderInspection,
) -> Result<Inspection> {
    let attention = attnflow_models::decoder_attention(decoder, inspection)?;
    let maps = AttentionStack::from_layer_tensors(&attention.layers)
        .map_err(InspectError::analysis(display(&decoder.path)))?;
    let kv_groups = (attention.kv_heads < attention.heads).then(|| {
        (0..attention.heads)
            .map(|head| attention.kv_group(head))
            .collect()
    });
    Ok(Inspection {
        tokens: attention.tokens,
        maps,
        description: attention.description,
        kv_groups,
    })
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

/// A blueprint built with seeded weights.
fn blueprint_model(spec: &Path, seed: u64) -> Result<Model> {
    let text = std::fs::read_to_string(spec)
        .map_err(|error| InspectError::file(spec, format!("cannot read: {error}")))?;
    let blueprint = attnflow_blueprint::Blueprint::from_text(&display(spec), &text, &[])
        .map_err(attnflow_train::TrainError::from)?;
    if embedding_rows_of(&blueprint) == 0 {
        return Err(InspectError::input(
            display(spec),
            "no embedding node, so no token ids to feed",
        ));
    }
    let store = attnflow_train::ParameterStore::new(seed);
    Ok(Model::new(&blueprint, &store, &candle_core::Device::Cpu)?)
}

fn embedding_rows(model: &Model) -> usize {
    embedding_rows_of(model.blueprint())
}

fn embedding_rows_of(blueprint: &attnflow_blueprint::Blueprint) -> usize {
    blueprint
        .nodes
        .iter()
        .find_map(|node| match node.op {
            attnflow_blueprint::Op::Embedding { vocab, .. } => Some(vocab as usize),
            _ => None,
        })
        .unwrap_or(0)
}
