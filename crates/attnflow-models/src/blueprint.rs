//! The blueprint of a BERT checkpoint, derived from its `config.json`, so
//! that `attnflow blueprint` (cost, receptive field, diagrams) works on a
//! model directory as on a hand-written spec.

use std::path::Path;

use attnflow_blueprint::Blueprint;

use crate::config::BertConfig;
use crate::error::{ModelError, Result};
use crate::weights::{has_pooler, tensor_names};

/// Blueprint spec text (TOML) for the encoder `config` describes, in the
/// layout of `examples/blueprints/bert-base.toml`: embeddings, `layers`
/// post-norm blocks, the pooler when `with_pooler`, and the mean-pooled
/// sentence vector.
///
/// Dims a user may override (`--set seq=256`): `batch` (1) and `seq`
/// (128, or the longest input if shorter).
pub fn blueprint_text(config: &BertConfig, name: &str, with_pooler: bool) -> String {
    let seq = config.max_position_embeddings.min(128);
    let architectures = if config.architectures.is_empty() {
        "BERT".to_string()
    } else {
        config.architectures.join(", ")
    };
    let pooler = if with_pooler {
        r#"
[[node]]
name = "cls"
op = "pool"
input = "layer"
kind = "first"

[[node]]
name = "pooler"
op = "linear"
input = "cls"
out = "d_model"

[[node]]
name = "pooler_tanh"
op = "activation"
input = "pooler"
function = "tanh"
"#
    } else {
        ""
    };
    format!(
        r#"# Derived by attnflow-models from {config_path} ({architectures}).
[model]
name = {name:?}
description = "{layers}-layer BERT encoder, {d} wide, {heads} heads of {head_dim}"

[dims]
batch = 1
seq = {seq}
max_positions = {max_positions}
vocab = {vocab}
type_vocab = {type_vocab}
d_model = {d}
heads = {heads}
layers = {layers}
d_ff = {d_ff}

[[node]]
name = "tokens"
op = "input"
shape = ["batch", "seq"]
dtype = "index"

[[node]]
name = "segments"
op = "input"
shape = ["batch", "seq"]
dtype = "index"

[[node]]
name = "word_embeddings"
op = "embedding"
input = "tokens"
vocab = "vocab"
dim = "d_model"

[[node]]
name = "position_embeddings"
op = "positional"
input = "word_embeddings"
kind = "learned"
max_len = "max_positions"

[[node]]
name = "token_type_embeddings"
op = "embedding"
input = "segments"
vocab = "type_vocab"
dim = "d_model"

[[node]]
name = "embeddings"
op = "add"
input = ["position_embeddings", "token_type_embeddings"]

[[node]]
name = "embeddings_norm"
op = "layer_norm"
input = "embeddings"
eps = {eps:?}

[[node]]
name = "embeddings_dropout"
op = "dropout"
input = "embeddings_norm"
p = {dropout:?}

[[block]]
name = "layer"
repeat = "layers"
input = "embeddings_dropout"
output = "output_norm"

[[block.node]]
name = "attention"
op = "attention"
input = "in"
heads = "heads"

[[block.node]]
name = "attention_residual"
op = "add"
input = ["in", "attention"]

[[block.node]]
name = "attention_norm"
op = "layer_norm"
input = "attention_residual"
eps = {eps:?}

[[block.node]]
name = "feed_forward"
op = "feed_forward"
input = "attention_norm"
hidden = "d_ff"
activation = "gelu"

[[block.node]]
name = "output_residual"
op = "add"
input = ["attention_norm", "feed_forward"]

[[block.node]]
name = "output_norm"
op = "layer_norm"
input = "output_residual"
eps = {eps:?}
{pooler}
[[node]]
name = "sentence"
op = "pool"
input = "layer"
kind = "mean"
"#,
        config_path = config.path.display(),
        layers = config.num_hidden_layers,
        d = config.hidden_size,
        heads = config.num_attention_heads,
        head_dim = config.head_dim(),
        max_positions = config.max_position_embeddings,
        vocab = config.vocab_size,
        type_vocab = config.type_vocab_size,
        d_ff = config.intermediate_size,
        eps = config.layer_norm_eps,
        dropout = config.hidden_dropout_prob,
    )
}

/// The blueprint spec of the model in `directory` as `(file, text)`: a name
/// for messages and the TOML text, from its `config.json` and the tensor
/// names in `model.safetensors`'s header (to know whether it has a pooler);
/// the weights themselves are not read.
pub fn blueprint_spec_of_directory(directory: &Path) -> Result<(String, String)> {
    crate::pretrained::check_directory(directory)?;
    let config = BertConfig::from_file(&directory.join("config.json"))?;
    let names = tensor_names(&directory.join("model.safetensors"))?;
    let name = crate::family::model_name(directory);
    let text = blueprint_text(&config, &name, has_pooler(&names));
    let file = format!(
        "{} (derived blueprint)",
        directory.join("config.json").display()
    );
    Ok((file, text))
}

/// The checked blueprint of the model in `directory` (see
/// [`blueprint_spec_of_directory`]) and its spec text. `overrides` set dims
/// as `attnflow blueprint --set` does.
pub fn blueprint_of_directory(
    directory: &Path,
    overrides: &[(String, String)],
) -> Result<(Blueprint, String)> {
    blueprint_of_model(directory, overrides)
}

/// The checked blueprint of the model at `path`, a Hugging Face directory
/// of any family or a GGUF file (see [`crate::blueprint_spec_of_model`]),
/// and its spec text.
pub fn blueprint_of_model(
    path: &Path,
    overrides: &[(String, String)],
) -> Result<(Blueprint, String)> {
    let (file, text) = crate::family::blueprint_spec_of_model(path)?;
    let blueprint = Blueprint::from_text(&file, &text, overrides).map_err(ModelError::Blueprint)?;
    Ok((blueprint, text))
}
