//! The blueprint of a decoder, derived from its `config.json` or GGUF
//! metadata, so that `attnflow blueprint` (cost, inference cost, receptive
//! field, diagrams) works on a model as on a hand-written spec.

use crate::decoder::config::{Activation, DecoderConfig, Family};

/// Blueprint spec text (TOML) for the decoder `config` describes, in the
/// layout of `examples/blueprints/llama-style.toml` (the Llama family) or
/// `gpt2-small.toml`. Dims a user may override: `batch` (1) and `seq` (the
/// context, at most 2048).
pub fn decoder_blueprint_text(config: &DecoderConfig, name: &str) -> String {
    let seq = config.max_positions.min(2048);
    let architectures = if config.architectures.is_empty() {
        config.family.model_type().to_string()
    } else {
        config.architectures.join(", ")
    };
    let header = format!(
        "# Derived by attnflow-models from {path} ({architectures}).\n",
        path = config.path.display()
    );
    match config.family {
        Family::Gpt2 => gpt2_text(config, name, seq, &header),
        _ => llama_text(config, name, seq, &header),
    }
}

/// The attention mask: causal, or a window when every layer shares one.
fn mask(config: &DecoderConfig) -> String {
    let first = config.sliding_windows.first().copied().flatten();
    match first {
        Some(size) if config.sliding_windows.iter().all(|w| *w == Some(size)) => {
            format!("mask = \"window\"\nwindow = {size}")
        }
        _ => "mask = \"causal\"".to_string(),
    }
}

fn llama_text(config: &DecoderConfig, name: &str, seq: usize, header: &str) -> String {
    let eps = config.norm_eps;
    let windows =
        if config.sliding_windows.iter().any(Option::is_some) && !mask(config).contains("window") {
            ", some layers windowed (drawn causal)"
        } else {
            ""
        };
    let head_tie = if config.tie_embeddings {
        "\ntie = \"embed\""
    } else {
        ""
    };
    let theta = config.rope.as_ref().map_or(10_000.0, |rope| rope.theta);
    format!(
        r#"{header}[model]
name = {name:?}
description = "{family} decoder: {layers} layers, {d} wide, {heads} query heads sharing {kv_heads} key/value heads of {head_dim}, RMS norm, rotary (θ = {theta}), SwiGLU{windows}"

[dims]
batch = 1
seq = {seq}
vocab = {vocab}
d_model = {d}
heads = {heads}
kv_heads = {kv_heads}
head_dim = {head_dim}
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

[[block]]
name = "layers"
repeat = "layers"
input = "embed"
output = "mlp_residual"

[[block.node]]
name = "attention_norm"
op = "rms_norm"
input = "in"
eps = {eps:?}

[[block.node]]
name = "attention"
op = "attention"
input = "attention_norm"
heads = "heads"
kv_heads = "kv_heads"
head_dim = "head_dim"
{mask}
rotary = true
bias = {qkv_bias}
output_bias = {output_bias}

[[block.node]]
name = "attention_residual"
op = "add"
input = ["in", "attention"]

[[block.node]]
name = "mlp_norm"
op = "rms_norm"
input = "attention_residual"
eps = {eps:?}

[[block.node]]
name = "mlp"
op = "feed_forward"
input = "mlp_norm"
hidden = "d_ff"
activation = "silu"
gated = true
bias = {mlp_bias}

[[block.node]]
name = "mlp_residual"
op = "add"
input = ["attention_residual", "mlp"]

[[node]]
name = "norm"
op = "rms_norm"
input = "layers"
eps = {eps:?}

[[node]]
name = "lm_head"
op = "head"
input = "norm"
out = "vocab"
bias = false{head_tie}
"#,
        family = config.family.model_type(),
        layers = config.num_layers,
        d = config.hidden_size,
        heads = config.num_heads,
        kv_heads = config.num_kv_heads,
        head_dim = config.head_dim,
        vocab = config.vocab_size,
        d_ff = config.intermediate_size,
        mask = mask(config),
        qkv_bias = config.qkv_bias,
        output_bias = config.output_bias,
        mlp_bias = config.mlp_bias,
    )
}

fn gpt2_text(config: &DecoderConfig, name: &str, seq: usize, header: &str) -> String {
    let eps = config.norm_eps;
    let activation = match config.activation {
        Activation::GeluErf => "gelu",
        _ => "gelu_tanh",
    };
    let head_tie = if config.tie_embeddings {
        "\ntie = \"wte\""
    } else {
        ""
    };
    format!(
        r#"{header}[model]
name = {name:?}
description = "GPT-2 decoder: {layers} pre-norm layers, {d} wide, {heads} heads, learned positions, LayerNorm, {activation}"

[dims]
batch = 1
seq = {seq}
n_ctx = {n_ctx}
vocab = {vocab}
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
name = "wte"
op = "embedding"
input = "tokens"
vocab = "vocab"
dim = "d_model"

[[node]]
name = "wpe"
op = "positional"
input = "wte"
kind = "learned"
max_len = "n_ctx"

[[block]]
name = "h"
repeat = "layers"
input = "wpe"
output = "mlp_residual"

[[block.node]]
name = "ln_1"
op = "layer_norm"
input = "in"
eps = {eps:?}

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
eps = {eps:?}

[[block.node]]
name = "mlp"
op = "feed_forward"
input = "ln_2"
hidden = "d_ff"
activation = "{activation}"

[[block.node]]
name = "mlp_residual"
op = "add"
input = ["attn_residual", "mlp"]

[[node]]
name = "ln_f"
op = "layer_norm"
input = "h"
eps = {eps:?}

[[node]]
name = "lm_head"
op = "head"
input = "ln_f"
out = "vocab"
bias = false{head_tie}
"#,
        layers = config.num_layers,
        d = config.hidden_size,
        heads = config.num_heads,
        n_ctx = config.max_positions,
        vocab = config.vocab_size,
        d_ff = config.intermediate_size,
    )
}
