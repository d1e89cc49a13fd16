//! `attnflow attention inspect` and `attnflow attention blend`: look inside
//! attention with the analysis of `attnflow_core::analysis` and the
//! pictures and report of `attnflow_report`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use attnflow_core::analysis::{
    attention_flow, blend, character_tokens, heatmap, rollout, stack_statistics, AnalysisError,
    AttentionMap, AttentionStack, HeadFusion, RolloutOptions, SeededModel, SeededModelConfig,
    MAX_FLOW_TOKENS,
};
use attnflow_report::{blend_figure, HeadSummary, Heatmap, ImageFormat, Inspection};
use candle_core::Tensor;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use miette::miette;

use super::attention::load_tensors;
use crate::error::{CliError, CliResult};
use attnflow_base::write_atomically;

/// Row sums may be off by this much in a weights file (maps saved in f16
/// or bf16 lose about three decimal digits).
const FILE_ROW_TOLERANCE: f64 = 1e-2;

/// Arguments of `attnflow attention inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A safetensors file of attention weights: one tensor
    /// (layers, batch, heads, n, n) or (layers, heads, n, n), or one tensor
    /// per layer named with a trailing layer number (`layer.0`,
    /// `attentions.1`, ...), each (heads, n, n) or (batch, heads, n, n). Without it, a model with
    /// seeded weights is built (see --layers, --heads, --width, --seed).
    weights: Option<PathBuf>,
    /// A pretrained model: a Hugging Face directory (BERT, llama, mistral,
    /// qwen2, gpt2: config.json, model.safetensors, tokenizer.json) or a
    /// GGUF file. Runs --text through it and inspects every layer's
    /// attention per query head, labelled with its tokens (and, for grouped
    /// heads, the key/value head each query head shares).
    #[arg(long, conflicts_with_all = ["weights", "tokens"], requires = "text")]
    model: Option<PathBuf>,
    /// A training checkpoint directory (`attnflow train --out DIR`): runs
    /// the input through the trained model. Text tasks take characters
    /// (--text); pair tasks take their words; synthetic tasks take token
    /// ids (--text "3 1 4 1 5" or one id per line of --tokens).
    #[arg(long, conflicts_with_all = ["weights", "model", "blueprint"])]
    checkpoint: Option<PathBuf>,
    /// A blueprint spec (TOML): builds the model with seeded weights (--seed)
    /// and runs the input through it; tokens are ids below the blueprint's
    /// vocabulary (--text "3 1 4" or one id per line of --tokens).
    #[arg(long, conflicts_with_all = ["weights", "model"])]
    blueprint: Option<PathBuf>,
    /// The input text; for a seeded model each character is a token.
    #[arg(long, conflicts_with = "tokens")]
    text: Option<String>,
    /// A UTF-8 file with one token per line (labels for a weights file, or
    /// the seeded model's input).
    #[arg(long)]
    tokens: Option<PathBuf>,
    /// Directory to write into (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Batch element to inspect, for weights with a batch axis.
    #[arg(long, default_value_t = 0)]
    batch: usize,
    /// Seeded model: number of attention blocks.
    #[arg(long, default_value_t = 4)]
    layers: usize,
    /// Seeded model: heads per block.
    #[arg(long, default_value_t = 4)]
    heads: usize,
    /// Seeded model: embedding width (divisible by --heads).
    #[arg(long, default_value_t = 32)]
    width: usize,
    /// Seeded model: seed of every weight.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Seeded model: causal attention (a decoder) instead of bidirectional.
    #[arg(long)]
    causal: bool,
    /// Rollout head fusion: mean, max or min.
    #[arg(long, default_value = "mean")]
    fusion: String,
    /// Rollout: fraction of each row's lowest weights to discard, in [0, 1).
    #[arg(long, default_value_t = 0.0)]
    discard: f64,
    /// Rollout: first layer taken into account (0-based).
    #[arg(long, default_value_t = 0)]
    start_layer: usize,
    /// The output token whose relevance is shown (0-based; default: the last).
    #[arg(long)]
    target: Option<usize>,
    /// Also write the raw maps as `attention.safetensors` in --out: one
    /// tensor `attentions` (layers, heads, n, n), f32, Hugging Face's layout
    /// (it reads back as a weights file).
    #[arg(long)]
    save_weights: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

/// Arguments of `attnflow attention blend`.
#[derive(Debug, Args)]
pub struct BlendArgs {
    /// The first map, `A_v`: a CSV file of numbers (one row per line) or a
    /// safetensors file with one 2-D tensor (or name it with --name).
    a: PathBuf,
    /// The second map, `A_l`, of the same shape and format.
    b: PathBuf,
    /// Weight of the first map, in [0, 1] (§8.1).
    #[arg(long)]
    alpha: f64,
    /// The tensor to read from safetensors inputs.
    #[arg(long)]
    name: Option<String>,
    /// Row sums may differ from 1 by this much.
    #[arg(long, default_value_t = 1e-4)]
    tolerance: f64,
    /// A UTF-8 file with one token per line, to label the pictures.
    #[arg(long)]
    tokens: Option<PathBuf>,
    /// Directory for blend.csv, blend.png and blend.svg (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

fn analysis_error(place: &str, error: AnalysisError) -> CliError {
    match error {
        AnalysisError::Candle(_) => CliError::failed(miette!("{place}: {error}")),
        AnalysisError::Core(attnflow_core::CoreError::Candle(_)) => {
            CliError::failed(miette!("{place}: {error}"))
        }
        other => CliError::bad_input(miette!("{place}: {other}")),
    }
}

fn report_error(error: attnflow_report::ReportError) -> CliError {
    CliError::failed(miette!("drawing the results: {error}"))
}

/// Reads one token per line. Empty lines are refused (an empty token cannot
/// be labelled or embedded), with the line number.
fn read_tokens(path: &Path) -> Result<Vec<String>, CliError> {
    let text = std::fs::read_to_string(path).map_err(|error| {
        CliError::bad_input(miette!(
            "cannot read tokens from {}: {error}",
            path.display()
        ))
    })?;
    let mut tokens = Vec::new();
    for (index, line) in text.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            // A final newline ends the last line; it does not start a token.
            if index + 1 == text.split('\n').count() {
                continue;
            }
            return Err(CliError::bad_input(miette!(
                "{}:{}: empty line; the file needs one non-empty token per line",
                path.display(),
                index + 1
            )));
        }
        tokens.push(line.to_string());
    }
    if tokens.is_empty() {
        return Err(CliError::bad_input(miette!(
            "{}: no tokens (one token per line)",
            path.display()
        )));
    }
    Ok(tokens)
}

/// The trailing number of a tensor name (`attentions.11` -> 11).
fn layer_number(name: &str) -> Option<usize> {
    let digits: String = name
        .chars()
        .rev()
        .take_while(char::is_ascii_digit)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    digits.parse().ok()
}

fn load_stack(path: &Path, batch: usize) -> Result<AttentionStack, CliError> {
    let tensors = load_tensors(path)?;
    let place = path.display().to_string();
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    let listing = names
        .iter()
        .map(|n| format!("`{n}` {:?}", tensors[*n].dims()))
        .collect::<Vec<_>>()
        .join(", ");
    let five: Vec<&String> = names
        .iter()
        .copied()
        .filter(|n| tensors[*n].rank() == 5)
        .collect();
    let four: Vec<&String> = names
        .iter()
        .copied()
        .filter(|n| tensors[*n].rank() == 4 && layer_number(n).is_none())
        .collect();
    let stack = if let (None, [name]) = (five.first(), four.as_slice()) {
        // One (layers, heads, n, n) tensor: Hugging Face's layout, as
        // `--save-weights` writes it.
        let tensor = &tensors[*name];
        let layers = (0..tensor.dim(0).unwrap_or(0))
            .map(|layer| tensor.get(layer))
            .collect::<Result<Vec<Tensor>, _>>()
            .map_err(|error| CliError::bad_input(miette!("{place}: tensor `{name}`: {error}")))?;
        AttentionStack::from_layer_tensors(&layers)
            .map_err(|error| analysis_error(&format!("{place}: tensor `{name}`"), error))?
    } else if let Some(name) = five.first() {
        if five.len() > 1 {
            return Err(CliError::bad_input(miette!(
                "{place}: several (layers, batch, heads, n, n) tensors ({listing}); keep one"
            )));
        }
        AttentionStack::from_tensor(&tensors[*name], batch)
            .map_err(|error| analysis_error(&format!("{place}: tensor `{name}`"), error))?
    } else {
        let mut layers: Vec<(usize, &String)> = names
            .iter()
            .filter_map(|name| layer_number(name).map(|number| (number, *name)))
            .collect();
        layers.sort();
        if layers.is_empty() {
            return Err(CliError::bad_input(miette!(
                "{place}: expected one (layers, batch, heads, n, n) tensor or one tensor per layer named with a trailing number (`layer.0`, ...); the file holds {}",
                if listing.is_empty() { "nothing".to_string() } else { listing }
            )));
        }
        for (position, (number, name)) in layers.iter().enumerate() {
            if *number != position {
                return Err(CliError::bad_input(miette!(
                    "{place}: layer tensors must be numbered 0, 1, 2, ... without gaps; `{name}` is number {number} at position {position}"
                )));
            }
        }
        let per_layer = layers
            .iter()
            .map(|(_, name)| {
                let tensor = &tensors[*name];
                match tensor.rank() {
                    3 => Ok(tensor.clone()),
                    4 => tensor.get(batch).map_err(|_| {
                        CliError::bad_input(miette!(
                            "{place}: tensor `{name}` {:?} has no batch element {batch}",
                            tensor.dims()
                        ))
                    }),
                    _ => Err(CliError::bad_input(miette!(
                        "{place}: tensor `{name}` has shape {:?}; a layer is (heads, n, n) or (batch, heads, n, n)",
                        tensor.dims()
                    ))),
                }
            })
            .collect::<Result<Vec<Tensor>, CliError>>()?;
        AttentionStack::from_layer_tensors(&per_layer)
            .map_err(|error| analysis_error(&place, error))?
    };
    stack
        .check_row_stochastic(FILE_ROW_TOLERANCE)
        .map_err(|error| analysis_error(&place, error))?;
    Ok(stack)
}

fn write_file(directory: &Path, name: &str, bytes: &[u8]) -> CliResult {
    let path = directory.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|error| {
            CliError::failed(miette!("cannot create {}: {error}", parent.display()))
        })?;
    }
    write_atomically(&path, bytes)
        .map_err(|error| CliError::failed(miette!("cannot write {}: {error}", path.display())))
}

/// Runs `text` through the pretrained model at `path` (attnflow-models, any
/// family) and returns every layer's attention, the tokens, a description
/// and, for grouped heads, the key/value head of every query head.
fn model_attention(path: &Path, text: &str) -> Result<ModelMaps, CliError> {
    use super::embed::model_error;
    let model = attnflow_models::PretrainedModel::open(path).map_err(model_error)?;
    let attention = model.attention(text).map_err(model_error)?;
    let stack = AttentionStack::from_layer_tensors(&attention.layers)
        .map_err(|error| analysis_error(&path.display().to_string(), error))?;
    let groups = (attention.kv_heads < attention.heads).then(|| {
        (0..attention.heads)
            .map(|head| attention.kv_group(head))
            .collect()
    });
    Ok(((stack, attention.tokens, attention.description), groups))
}

/// A model's maps, tokens and description, with the key/value head of each
/// query head when heads are grouped.
type ModelMaps = ((AttentionStack, Vec<String>, String), Option<Vec<usize>>);

/// "heads 0–2 → KV 0, 3–5 → KV 1": which query heads share which key/value head.
fn describe_groups(groups: &[usize]) -> String {
    let mut parts = Vec::new();
    let mut start = 0;
    for head in 1..=groups.len() {
        if head == groups.len() || groups[head] != groups[start] {
            parts.push(if head - 1 == start {
                format!("head {start} → KV {}", groups[start])
            } else {
                format!("heads {start}–{} → KV {}", head - 1, groups[start])
            });
            start = head;
        }
    }
    parts.join(", ")
}

/// The maps as one `(layers, heads, n, n)` f32 safetensors tensor.
fn weights_file(stack: &AttentionStack) -> Result<Vec<u8>, CliError> {
    let (layers, heads, n) = (stack.num_layers(), stack.num_heads(), stack.num_tokens());
    let mut bytes = Vec::with_capacity(layers * heads * n * n * 4);
    for layer in stack.layers() {
        for map in layer {
            bytes.extend(
                map.values()
                    .iter()
                    .flat_map(|&value| (value as f32).to_le_bytes()),
            );
        }
    }
    let view = safetensors::tensor::TensorView::new(
        safetensors::Dtype::F32,
        vec![layers, heads, n, n],
        &bytes,
    )
    .map_err(|error| CliError::failed(miette!("attention.safetensors: {error}")))?;
    safetensors::tensor::serialize([("attentions", view)], None)
        .map_err(|error| CliError::failed(miette!("attention.safetensors: {error}")))
}

/// The input of a trained or blueprint model as strings: `--text` split
/// into characters (`by_character`) or at whitespace, or the lines of
/// `--tokens`.
fn input_strings(args: &InspectArgs, by_character: bool) -> Result<Vec<String>, CliError> {
    let strings = match (&args.text, &args.tokens) {
        (Some(text), None) if by_character => character_tokens(text),
        (Some(text), None) => text.split_whitespace().map(str::to_string).collect(),
        (None, Some(path)) => read_tokens(path)?,
        _ => Vec::new(),
    };
    if strings.is_empty() {
        return Err(CliError::bad_input(miette!(
            "give the model's input as --text \"...\" or --tokens FILE"
        )));
    }
    Ok(strings)
}

/// Token ids written as numbers, each below `vocab`.
fn numeric_ids(strings: &[String], vocab: usize, place: &str) -> Result<Vec<u32>, CliError> {
    strings
        .iter()
        .enumerate()
        .map(|(position, text)| match text.parse::<u32>() {
            Ok(id) if (id as usize) < vocab => Ok(id),
            _ => Err(CliError::bad_input(miette!(
                "token {position} `{text}`: {place} takes token ids 0..{} (whole numbers)",
                vocab.saturating_sub(1)
            ))),
        })
        .collect()
}

/// Runs `ids` through `model` and returns every attention node's maps for
/// the single sequence.
fn captured_attention(
    model: &attnflow_train::Model,
    ids: &[u32],
    place: &str,
) -> Result<AttentionStack, CliError> {
    use attnflow_train::{Capture, Mode};
    let input = model
        .blueprint()
        .inputs()
        .find(|node| node.element == attnflow_blueprint::Element::Index)
        .ok_or_else(|| {
            CliError::bad_input(miette!(
                "{place}: the model has no token-id input to feed text to"
            ))
        })?
        .name
        .clone();
    let tensor = Tensor::from_vec(ids.to_vec(), (1, ids.len()), &candle_core::Device::Cpu)
        .map_err(|error| CliError::failed(miette!("{place}: {error}")))?;
    let inputs = std::collections::BTreeMap::from([(input, tensor)]);
    let output = model
        .forward(&inputs, Mode::Eval, Some(&Capture::all()))
        .map_err(|error| CliError::bad_input(miette!("{place}: {error}")))?;
    if output.attention.is_empty() {
        return Err(CliError::bad_input(miette!(
            "{place}: the model has no attention node"
        )));
    }
    let layers = output
        .attention
        .iter()
        .map(|captured| {
            captured.weights.get(0).map_err(|error| {
                CliError::failed(miette!(
                    "{place}: attention of `{}`: {error}",
                    captured.node
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    AttentionStack::from_layer_tensors(&layers).map_err(|error| analysis_error(place, error))
}

/// The attention of a trained checkpoint on the user's input.
fn checkpoint_attention(
    directory: &Path,
    args: &InspectArgs,
) -> Result<(AttentionStack, Vec<String>, String), CliError> {
    let place = directory.display().to_string();
    let trainer = attnflow_train::Trainer::resume(directory, None, None)
        .map_err(|error| CliError::bad_input(miette!("{place}: {error}")))?;
    let dataset = trainer.dataset();
    let (strings, ids) = if let Some(alphabet) = dataset.alphabet() {
        let strings = input_strings(args, true)?;
        let ids = strings
            .iter()
            .enumerate()
            .map(|(position, text)| {
                let mut characters = text.chars();
                match (characters.next(), characters.next()) {
                    (Some(character), None) => alphabet
                        .binary_search(&character)
                        .map(|id| id as u32)
                        .map_err(|_| {
                            CliError::bad_input(miette!(
                                "token {position} {text:?} is not in the alphabet the model at {place} was trained on"
                            ))
                        }),
                    _ => Err(CliError::bad_input(miette!(
                        "token {position} {text:?}: the model at {place} reads one character per token"
                    ))),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        (strings, ids)
    } else if let Some(words) = dataset.pair_tokens() {
        let strings = input_strings(args, false)?;
        let ids = strings
            .iter()
            .enumerate()
            .map(|(position, text)| {
                words
                    .iter()
                    .position(|word| word == text)
                    .map(|id| id as u32)
                    .ok_or_else(|| {
                        CliError::bad_input(miette!(
                        "token {position} {text:?} is not in the vocabulary of the model at {place}"
                    ))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        (strings, ids)
    } else {
        let strings = input_strings(args, false)?;
        let ids = numeric_ids(&strings, dataset.vocab_size(), &place)?;
        (strings, ids)
    };
    let stack = captured_attention(trainer.model(), &ids, &place)?;
    let source = format!(
        "checkpoint {place} (step {}, task {})",
        trainer.step_count(),
        dataset.task().name()
    );
    Ok((stack, strings, source))
}

/// The attention of a blueprint built with seeded weights on token ids.
fn blueprint_attention(
    spec: &Path,
    args: &InspectArgs,
) -> Result<(AttentionStack, Vec<String>, String), CliError> {
    let place = spec.display().to_string();
    let text = std::fs::read_to_string(spec)
        .map_err(|error| CliError::bad_input(miette!("cannot read {place}: {error}")))?;
    let blueprint = attnflow_blueprint::Spec::parse(&place, &text)
        .map_err(|error| CliError::bad_input(miette!("{error}")))?
        .check(&[])
        .map_err(|error| CliError::bad_input(miette!("{error}")))?;
    let vocab = blueprint
        .nodes
        .iter()
        .find_map(|node| match node.op {
            attnflow_blueprint::Op::Embedding { vocab, .. } => Some(vocab as usize),
            _ => None,
        })
        .ok_or_else(|| {
            CliError::bad_input(miette!(
                "{place}: no embedding node, so no token ids to feed"
            ))
        })?;
    let strings = input_strings(args, false)?;
    let ids = numeric_ids(&strings, vocab, &place)?;
    let store = attnflow_train::ParameterStore::new(args.seed);
    let model = attnflow_train::Model::new(&blueprint, &store, &candle_core::Device::Cpu)
        .map_err(|error| CliError::bad_input(miette!("{place}: {error}")))?;
    let stack = captured_attention(&model, &ids, &place)?;
    Ok((
        stack,
        strings,
        format!("blueprint {place} with seeded weights (seed {})", args.seed),
    ))
}

/// Runs `attnflow attention inspect`.
pub fn inspect(args: &InspectArgs) -> CliResult {
    let fusion: HeadFusion = args
        .fusion
        .parse()
        .map_err(|error| analysis_error("--fusion", error))?;
    let given_tokens = match (&args.text, &args.tokens) {
        (Some(text), None) => Some(character_tokens(text)),
        (None, Some(path)) => Some(read_tokens(path)?),
        _ => None,
    };
    let trained = match (&args.checkpoint, &args.blueprint) {
        (Some(directory), _) => Some(checkpoint_attention(directory, args)?),
        (None, Some(spec)) => Some(blueprint_attention(spec, args)?),
        (None, None) => None,
    };
    let mut groups: Option<Vec<usize>> = None;
    let (stack, tokens, source) = match (&args.model, &args.weights) {
        _ if trained.is_some() => trained.expect("checked"),
        (Some(path), _) => {
            let (maps, grouped) = model_attention(path, args.text.as_deref().unwrap_or(""))?;
            groups = grouped;
            maps
        }
        (None, Some(path)) => {
            let stack = load_stack(path, args.batch)?;
            let n = stack.num_tokens();
            let tokens = match given_tokens {
                Some(tokens) if tokens.len() != n => {
                    return Err(CliError::bad_input(miette!(
                        "{} holds maps over {n} tokens but {} tokens were given ({})",
                        path.display(),
                        tokens.len(),
                        if args.text.is_some() {
                            "one per character of --text"
                        } else {
                            "one per line of --tokens"
                        }
                    )))
                }
                Some(tokens) => tokens,
                None => (0..n).map(|i| format!("#{i}")).collect(),
            };
            (stack, tokens, path.display().to_string())
        }
        (None, None) => {
            let tokens = given_tokens
                .filter(|tokens| !tokens.is_empty())
                .ok_or_else(|| {
                    CliError::bad_input(miette!(
                        "give the input as --text \"...\" or --tokens FILE (or a weights file to inspect)"
                    ))
                })?;
            let config = SeededModelConfig {
                layers: args.layers,
                heads: args.heads,
                width: args.width,
                seed: args.seed,
                causal: args.causal,
            };
            let model =
                SeededModel::new(config).map_err(|error| analysis_error("seeded model", error))?;
            let stack = model
                .attention(&tokens)
                .map_err(|error| analysis_error("seeded model", error))?;
            let source = format!(
                "seeded model ({} layers × {} heads, width {}, seed {}{})",
                args.layers,
                args.heads,
                args.width,
                args.seed,
                if args.causal { ", causal" } else { "" }
            );
            (stack, tokens, source)
        }
    };
    write_report(args, fusion, stack, tokens, source, groups, false).map(|_| ())
}

/// Inspects a decoder's attention over given token ids (`attnflow generate
/// --inspect`): the same report `attention inspect --model` writes, with
/// the default rollout settings, into `out`; prints nothing and returns
/// the summary.
pub(crate) fn inspect_decoder_tokens(
    decoder: &attnflow_models::PretrainedDecoder,
    ids: &[u32],
    out: &Path,
    json: bool,
) -> Result<serde_json::Value, CliError> {
    use super::embed::model_error;
    use clap::{Args as _, FromArgMatches as _};
    let matches = InspectArgs::augment_args(clap::Command::new("inspect"))
        .try_get_matches_from([
            std::ffi::OsStr::new("inspect"),
            "--out".as_ref(),
            out.as_os_str(),
        ])
        .map_err(|error| CliError::failed(miette!("{error}")))?;
    let mut args = InspectArgs::from_arg_matches(&matches)
        .map_err(|error| CliError::failed(miette!("{error}")))?;
    args.json = json;
    let inspection = decoder
        .inspect_tokens(decoder.tokens_of(ids))
        .map_err(model_error)?;
    let attention =
        attnflow_models::decoder_attention(decoder, &inspection).map_err(model_error)?;
    let place = decoder.path.display().to_string();
    let stack = AttentionStack::from_layer_tensors(&attention.layers)
        .map_err(|error| analysis_error(&place, error))?;
    let groups = (attention.kv_heads < attention.heads).then(|| {
        (0..attention.heads)
            .map(|head| attention.kv_group(head))
            .collect()
    });
    write_report(
        &args,
        HeadFusion::Mean,
        stack,
        attention.tokens,
        attention.description,
        groups,
        true,
    )
}

/// Analyses the maps (rollout, flow, statistics) and writes the report and
/// its files into `args.out`; prints the summary unless `quiet`.
fn write_report(
    args: &InspectArgs,
    fusion: HeadFusion,
    stack: AttentionStack,
    tokens: Vec<String>,
    source: String,
    groups: Option<Vec<usize>>,
    quiet: bool,
) -> Result<serde_json::Value, CliError> {
    let n = stack.num_tokens();
    let target = args.target.unwrap_or(n - 1);
    if target >= n {
        return Err(CliError::bad_input(miette!(
            "--target {target}: there are only {n} tokens (0..{})",
            n - 1
        )));
    }
    let options = RolloutOptions {
        fusion,
        discard_ratio: args.discard,
        start_layer: args.start_layer,
        residual: true,
    };
    let rolled = rollout(&stack, &options).map_err(|error| analysis_error("rollout", error))?;
    let flow = if n <= MAX_FLOW_TOKENS {
        Some(
            attention_flow(&stack, &options, target)
                .map_err(|error| analysis_error("attention flow", error))?,
        )
    } else {
        None
    };
    let statistics = stack_statistics(&stack);
    let to_values = |map: &AttentionMap| map.values().to_vec();
    let maps: Vec<Vec<Vec<f64>>> = stack
        .layers()
        .iter()
        .map(|heads| heads.iter().map(to_values).collect())
        .collect();
    let heatmaps = stack
        .layers()
        .iter()
        .enumerate()
        .map(|(layer, heads)| {
            heads
                .iter()
                .enumerate()
                .map(|(head, map)| {
                    heatmap(map, &format!("layer {layer} head {head}"))
                        .map(AttentionMap::into_values)
                        .map_err(|error| analysis_error("heatmap", error))
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let settings = format!(
        "{} fusion, discard {}, from layer {}",
        fusion.name(),
        args.discard,
        args.start_layer
    );
    let inspection = Inspection {
        source: source.clone(),
        tokens: tokens.clone(),
        maps,
        heatmaps,
        rollout: rolled.values().to_vec(),
        rollout_settings: settings.clone(),
        target,
        flow: flow.clone(),
        statistics: statistics
            .iter()
            .map(|s| HeadSummary {
                layer: s.layer,
                head: s.head,
                mean_entropy: s.mean_entropy,
                mean_distance: s.mean_distance,
                first_token_share: s.first_token_share,
                diagonal_share: s.diagonal_share,
            })
            .collect(),
        summary: vec![
            ("source".into(), source.clone()),
            ("tokens".into(), n.to_string()),
            (
                "layers × heads".into(),
                format!("{} × {}", stack.num_layers(), stack.num_heads()),
            ),
            ("rollout".into(), settings.clone()),
            (
                "target token".into(),
                format!("{target} “{}”", tokens[target]),
            ),
        ]
        .into_iter()
        .chain(
            groups
                .as_deref()
                .map(|groups| ("key/value groups".to_string(), describe_groups(groups))),
        )
        .collect(),
        kv_groups: groups.clone(),
    };

    std::fs::create_dir_all(&args.out).map_err(|error| {
        CliError::failed(miette!("cannot create {}: {error}", args.out.display()))
    })?;
    let bar = ProgressBar::new(inspection.file_count() as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} files")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_message("drawing");
    let layers = stack.num_layers();
    let heads = stack.num_heads();
    if args.save_weights {
        write_file(&args.out, "attention.safetensors", &weights_file(&stack)?)?;
    }
    // The analysis is done: free the maps before drawing (the inspection
    // holds its own copy, which moves into the report).
    drop(stack);
    let out = args.out.clone();
    let files = inspection
        .write_files(|file| {
            let path = out.join(&file.name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|error| format!("cannot create {}: {error}", parent.display()))?;
            }
            write_atomically(&path, &file.bytes)
                .map_err(|error| format!("cannot write {}: {error}", path.display()))?;
            bar.inc(1);
            Ok(())
        })
        .map_err(|error| match error {
            attnflow_report::ReportError::Output { message, .. } => {
                CliError::failed(miette!("{message}"))
            }
            other => report_error(other),
        })?;
    bar.finish_and_clear();
    let statistics_json: Vec<serde_json::Value> = statistics
        .iter()
        .map(|s| {
            let mut entry = serde_json::json!({
                "layer": s.layer, "head": s.head,
                "mean_entropy": s.mean_entropy, "mean_distance": s.mean_distance,
                "first_token_share": s.first_token_share, "diagonal_share": s.diagonal_share,
                "empty_rows": s.empty_rows,
            });
            if let Some(groups) = &groups {
                entry["kv_group"] = groups[s.head].into();
            }
            entry
        })
        .collect();
    let statistics_document =
        serde_json::json!({ "source": source, "tokens": tokens, "heads": statistics_json });
    write_file(
        &args.out,
        "statistics.json",
        format!("{statistics_document:#}\n").as_bytes(),
    )?;
    let rows: Vec<&[f64]> = rolled.iter_rows().collect();
    let relevance = rolled.row(target);
    let rollout_document = serde_json::json!({
        "tokens": tokens,
        "fusion": fusion.name(),
        "discard_ratio": args.discard,
        "start_layer": args.start_layer,
        "target": target,
        "relevance": relevance,
        "flow": flow,
        "rollout": rows,
    });
    write_file(
        &args.out,
        "rollout.json",
        format!("{rollout_document:#}\n").as_bytes(),
    )?;

    let mut top: Vec<usize> = (0..n).collect();
    top.sort_by(|&a, &b| relevance[b].total_cmp(&relevance[a]));
    top.truncate(5);
    let summary = serde_json::json!({
            "source": source,
            "out": args.out,
            "tokens": n,
            "layers": layers,
            "heads": heads,
            "target": target,
            "top_relevance": top.iter().map(|&j| serde_json::json!({"token": j, "text": tokens[j], "rollout": relevance[j]})).collect::<Vec<_>>(),
            "files": files.iter().cloned().chain(["statistics.json".to_string(), "rollout.json".to_string()]).chain(args.save_weights.then(|| "attention.safetensors".to_string())).collect::<Vec<_>>(),
            "statistics": statistics_json,
    });
    if quiet {
        return Ok(summary);
    }
    if args.json {
        println!("{summary}");
    } else {
        println!(
            "inspected {source}: {n} tokens, {} layers × {} heads",
            layers, heads
        );
        if let Some(groups) = &groups {
            println!("key/value groups: {}", describe_groups(groups));
        }
        println!();
        println!(
            "{:>5} {:>4} {:>9} {:>9} {:>7} {:>8}",
            "layer", "head", "entropy", "distance", "first", "diagonal"
        );
        for s in &statistics {
            println!(
                "{:>5} {:>4} {:>9.4} {:>9.3} {:>7.4} {:>8.4}",
                s.layer,
                s.head,
                s.mean_entropy,
                s.mean_distance,
                s.first_token_share,
                s.diagonal_share
            );
        }
        println!();
        println!(
            "rollout ({settings}), most relevant to token {target} “{}”:",
            tokens[target]
        );
        for &j in &top {
            let flow_text = flow
                .as_ref()
                .map(|f| format!("  flow {:.4}", f[j]))
                .unwrap_or_default();
            println!(
                "  {j:>4} {:<14} {:.4}{flow_text}",
                format!("“{}”", tokens[j]),
                relevance[j]
            );
        }
        if flow.is_none() {
            println!("  (attention flow skipped: {n} tokens > {MAX_FLOW_TOKENS})");
        }
        println!();
        println!(
            "wrote {} files to {} (open report.html)",
            files.len() + 2 + usize::from(args.save_weights),
            args.out.display()
        );
    }
    Ok(summary)
}

/// Reads a map from CSV (numbers separated by commas, one row per line;
/// blank lines ignored) or safetensors.
fn load_map(path: &Path, name: Option<&str>) -> Result<AttentionMap, CliError> {
    let is_safetensors = path.extension().is_some_and(|e| e == "safetensors");
    if is_safetensors {
        let tensors: HashMap<String, Tensor> = load_tensors(path)?;
        let tensor = match name {
            Some(name) => tensors.get(name).ok_or_else(|| {
                CliError::bad_input(miette!("{}: no tensor named `{name}`", path.display()))
            })?,
            None => {
                let matrices: Vec<&String> =
                    tensors.keys().filter(|k| tensors[*k].rank() == 2).collect();
                match matrices.as_slice() {
                    [only] => &tensors[*only],
                    _ => {
                        return Err(CliError::bad_input(miette!(
                            "{}: {} two-dimensional tensors; name the one to blend with --name",
                            path.display(),
                            matrices.len()
                        )))
                    }
                }
            }
        };
        let (rows, columns) = tensor.dims2().map_err(|_| {
            CliError::bad_input(miette!(
                "{}: the map must be 2-D, got shape {:?}",
                path.display(),
                tensor.dims()
            ))
        })?;
        let values = tensor
            .to_dtype(candle_core::DType::F64)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f64>())
            .map_err(|error| CliError::bad_input(miette!("{}: {error}", path.display())))?;
        return AttentionMap::new(rows, columns, values)
            .map_err(|error| analysis_error(&path.display().to_string(), error));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|error| CliError::bad_input(miette!("cannot read {}: {error}", path.display())))?;
    let mut rows: Vec<Vec<f64>> = Vec::new();
    for (line_index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut row = Vec::new();
        let mut column = 1;
        for field in line.split(',') {
            let value: f64 = field.trim().parse().map_err(|_| {
                CliError::bad_input(miette!(
                    "{}:{}:{}: `{}` is not a number",
                    path.display(),
                    line_index + 1,
                    column,
                    field.trim()
                ))
            })?;
            row.push(value);
            column += field.chars().count() + 1;
        }
        if let Some(first) = rows.first() {
            if first.len() != row.len() {
                return Err(CliError::bad_input(miette!(
                    "{}:{}: {} values, but the first row has {}",
                    path.display(),
                    line_index + 1,
                    row.len(),
                    first.len()
                )));
            }
        }
        rows.push(row);
    }
    if rows.is_empty() {
        return Err(CliError::bad_input(miette!("{}: no rows", path.display())));
    }
    AttentionMap::from_rows(&rows)
        .map_err(|error| analysis_error(&path.display().to_string(), error))
}

/// Runs `attnflow attention blend`.
pub fn blend_maps(args: &BlendArgs) -> CliResult {
    let vision = load_map(&args.a, args.name.as_deref())?;
    let language = load_map(&args.b, args.name.as_deref())?;
    let blended = blend(&vision, &language, args.alpha, args.tolerance).map_err(|error| {
        let place = match &error {
            AnalysisError::NotRowStochastic { map, .. } | AnalysisError::NotFinite { map, .. }
                if map == "A_v" =>
            {
                args.a.display().to_string()
            }
            AnalysisError::NotRowStochastic { .. } | AnalysisError::NotFinite { .. } => {
                args.b.display().to_string()
            }
            AnalysisError::Shape { .. } => format!("{} and {}", args.a.display(), args.b.display()),
            _ => "--alpha".to_string(),
        };
        analysis_error(&place, error)
    })?;
    let tokens = match &args.tokens {
        Some(path) => {
            let tokens = read_tokens(path)?;
            if tokens.len() != blended.rows() || tokens.len() != blended.columns() {
                return Err(CliError::bad_input(miette!(
                    "{}: {} tokens for a {} × {} map",
                    path.display(),
                    tokens.len(),
                    blended.rows(),
                    blended.columns()
                )));
            }
            tokens
        }
        None => Vec::new(),
    };
    let panel = |title: &str, map: &AttentionMap| {
        Heatmap::new(title, map.rows(), map.columns(), map.values().to_vec()).map_err(report_error)
    };
    let figure = blend_figure(
        &tokens,
        panel("A_v", &vision)?,
        panel("A_l", &language)?,
        panel("blend", &blended)?,
        args.alpha,
    )
    .map_err(report_error)?;
    std::fs::create_dir_all(&args.out).map_err(|error| {
        CliError::failed(miette!("cannot create {}: {error}", args.out.display()))
    })?;
    let csv: String = blended
        .iter_rows()
        .map(|row| {
            row.iter()
                .map(|v| format!("{v:.17}"))
                .collect::<Vec<_>>()
                .join(",")
                + "\n"
        })
        .collect();
    write_file(&args.out, "blend.csv", csv.as_bytes())?;
    for format in [ImageFormat::Png, ImageFormat::Svg] {
        let bytes = figure.render(format).map_err(report_error)?;
        write_file(&args.out, &format!("blend.{}", format.extension()), &bytes)?;
    }
    let error = blended.max_row_sum_error();
    if args.json {
        let summary = serde_json::json!({
            "a": args.a, "b": args.b, "alpha": args.alpha,
            "rows": blended.rows(), "columns": blended.columns(),
            "max_row_sum_error": error,
            "files": ["blend.csv", "blend.png", "blend.svg"],
            "out": args.out,
        });
        println!("{summary}");
    } else {
        println!(
            "blend {} · A_v + {} · A_l of {} × {} maps: rows sum to 1 within {error:.1e}",
            args.alpha,
            1.0 - args.alpha,
            blended.rows(),
            blended.columns()
        );
        println!(
            "wrote blend.csv, blend.png, blend.svg to {}",
            args.out.display()
        );
    }
    Ok(())
}
