//! What serving a decoder costs: FLOPs per token to read a prompt
//! (prefill) and to produce each new token with a key/value cache
//! (decode), the cache's bytes per token with grouped key/value heads, and
//! the memory at a context length.
//!
//! Prefill is the account's forward pass over `seq` tokens divided by the
//! tokens. Decode runs every node on one new position; its attention reads
//! all `context` cached keys (or the window's), so only attention's score
//! and value products depend on the context. The cache holds, per
//! position, a key and a value of every key/value head of every causal
//! self-attention node: `2 · layers · kv_heads · head_dim · bytes`.

use serde::Serialize;

use crate::cost::{
    account, cost_of_work, node_cost, sized_attention_work, AttentionSizes, Cost, CostOptions,
};
use crate::graph::Blueprint;
use crate::ops::{Mask, Op};

/// The inference arithmetic of a blueprint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Inference {
    /// The model's name.
    pub model: String,
    /// How it was counted (the dtype sizes weights and the cache).
    pub options: CostOptions,
    /// Sequences per batch (the `batch` dim; costs below are per sequence).
    pub batch: u64,
    /// Prompt length of the prefill figures (the `seq` dim).
    pub prompt: u64,
    /// Cached positions a decoded token attends over.
    pub context: u64,
    /// Parameters (a tied weight counted once).
    pub params: u128,
    /// Forward FLOPs of the whole prompt, per sequence.
    pub prefill_flops: u128,
    /// `prefill_flops / prompt`.
    pub prefill_flops_per_token: u128,
    /// Forward FLOPs of one new token with `context` positions cached.
    pub decode_flops_per_token: u128,
    /// Causal self-attention nodes, each of which caches keys and values.
    pub cached_layers: usize,
    /// Key/value cache bytes per position.
    pub kv_cache_bytes_per_token: u128,
    /// Key/value cache bytes at `context` (a window caps what a node keeps).
    pub kv_cache_bytes: u128,
    /// Weights at the dtype's size.
    pub weight_bytes: u128,
    /// Activations of one decode step (the largest transient).
    pub decode_activation_bytes: u128,
    /// `weight_bytes + kv_cache_bytes + decode_activation_bytes`.
    pub memory_bytes: u128,
}

/// Whether `node` caches keys and values when decoding: causal (or
/// windowed) attention of a sequence on itself.
fn caches(op: &Op, inputs: usize) -> Option<(u64, u64, Option<u64>)> {
    match op {
        Op::Attention(attention) if inputs == 1 => match attention.mask {
            Mask::Causal => Some((attention.kv_heads, attention.head_dim, None)),
            Mask::Window { size } => Some((attention.kv_heads, attention.head_dim, Some(size))),
            Mask::None => None,
        },
        _ => None,
    }
}

/// Whether the blueprint decodes: it has causal self-attention.
pub fn is_decoder(blueprint: &Blueprint) -> bool {
    blueprint
        .nodes
        .iter()
        .any(|node| caches(&node.op, node.inputs.len()).is_some())
}

/// The inference arithmetic of `blueprint` with `context` cached positions
/// for decoding (default: the `seq` dim).
pub fn inference(blueprint: &Blueprint, options: CostOptions, context: Option<u64>) -> Inference {
    let batch = blueprint.dims.get("batch").copied().unwrap_or(1).max(1);
    let total = account(blueprint, options).total;
    // Tokens of one prompt: the first input's positions past the batch axis.
    let prompt = blueprint
        .inputs()
        .next()
        .map(|input| input.shape.iter().skip(1).product::<u64>())
        .unwrap_or(1)
        .max(1);
    let context = context.unwrap_or(prompt).max(1);
    let bytes = options.dtype.bytes();
    let mut decode = Cost::default();
    let mut cached_layers = 0;
    let mut kv_per_token = 0u128;
    let mut kv_at_context = 0u128;
    for node in &blueprint.nodes {
        if let (Op::Attention(attention), Some((kv_heads, head_dim, window))) =
            (&node.op, caches(&node.op, node.inputs.len()))
        {
            cached_layers += 1;
            let per_position = 2 * u128::from(kv_heads) * u128::from(head_dim) * bytes;
            kv_per_token += per_position;
            let kept = window.map_or(context, |size| size.min(context));
            kv_at_context += per_position * u128::from(kept);
            let width = u128::from(blueprint.input_width(node));
            let sizes = AttentionSizes {
                batch: 1,
                queries: 1,
                keys: kept,
                projected_keys: 1,
                query_width: width,
                memory_width: width,
            };
            // The new token is the last position: it sees every kept key.
            let work = sized_attention_work(attention, &sizes, u128::from(kept), false);
            decode += cost_of_work(work, node.element, options);
            continue;
        }
        let rows = node
            .shape
            .split_last()
            .map_or(1, |(_, leading)| {
                leading.iter().map(|&d| u128::from(d)).product::<u128>()
            })
            .max(1);
        decode += per_row(node_cost(blueprint, node, options), rows);
    }
    let per_sequence = |value: u128| value / u128::from(batch);
    let prefill_flops = per_sequence(total.forward_flops);
    let weight_bytes = total.params * bytes;
    Inference {
        model: blueprint.name.clone(),
        options,
        batch,
        prompt,
        context,
        params: total.params,
        prefill_flops,
        prefill_flops_per_token: prefill_flops / u128::from(prompt),
        decode_flops_per_token: decode.forward_flops,
        cached_layers,
        kv_cache_bytes_per_token: kv_per_token,
        kv_cache_bytes: kv_at_context,
        weight_bytes,
        decode_activation_bytes: decode.activation_bytes,
        memory_bytes: weight_bytes + kv_at_context + decode.activation_bytes,
    }
}

/// A node's cost for one of its `rows` positions (every node but attention
/// does the same work per position); parameters are kept whole.
fn per_row(cost: Cost, rows: u128) -> Cost {
    Cost {
        params: cost.params,
        macs: cost.macs / rows,
        flops: crate::cost::Flops {
            mul: cost.flops.mul / rows,
            add: cost.flops.add / rows,
            exp: cost.flops.exp / rows,
            div: cost.flops.div / rows,
            compare: cost.flops.compare / rows,
            sqrt: cost.flops.sqrt / rows,
        },
        forward_flops: cost.forward_flops / rows,
        training_flops: cost.training_flops / rows,
        activation_bytes: cost.activation_bytes / rows,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cost::{Convention, Dtype};

    fn llama_style(overrides: &[(&str, &str)]) -> Blueprint {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/blueprints/llama-style.toml"
        ))
        .unwrap();
        let overrides: Vec<(String, String)> = overrides
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Blueprint::from_text("llama-style.toml", &text, &overrides).unwrap()
    }

    #[test]
    fn kv_cache_counts_grouped_heads() {
        // TinyLlama: 22 layers, 4 KV heads of 64: 2·22·4·64·4 bytes.
        let blueprint = llama_style(&[]);
        let options = CostOptions::default();
        let inference = inference(&blueprint, options, Some(1000));
        assert_eq!(inference.cached_layers, 22);
        assert_eq!(inference.kv_cache_bytes_per_token, 2 * 22 * 4 * 64 * 4);
        assert_eq!(inference.kv_cache_bytes, 1000 * 2 * 22 * 4 * 64 * 4);
        assert_eq!(inference.params, 1_100_048_384);
        assert_eq!(inference.weight_bytes, 4 * 1_100_048_384);
        let half = CostOptions {
            dtype: Dtype::F16,
            ..options
        };
        assert_eq!(
            super::inference(&blueprint, half, Some(1000)).kv_cache_bytes_per_token,
            2 * 22 * 4 * 64 * 2
        );
    }

    #[test]
    fn decode_matches_the_matmul_closed_form() {
        // Matmul convention: 2 FLOPs per weight MAC, plus 2·2·heads·head_dim
        // per layer per cached key (scores and values).
        let blueprint = llama_style(&[("seq", "16")]);
        let options = CostOptions {
            convention: Convention::Matmul,
            ..CostOptions::default()
        };
        let context = 512u128;
        let decode = inference(&blueprint, options, Some(512)).decode_flops_per_token;
        let weights_without_embedding = 1_100_048_384u128 - 32_000 * 2048;
        let attention = 22 * 2 * 2 * 32 * 64 * context;
        // RMS norms are not matrix products; the matmul convention skips them.
        let norms = 22 * 2 * 2048 + 2048;
        assert_eq!(decode, 2 * (weights_without_embedding - norms) + attention);
        // One more cached key costs the same amount again.
        let next = inference(&blueprint, options, Some(513)).decode_flops_per_token;
        assert_eq!(next - decode, 22 * 2 * 2 * 32 * 64);
    }

    #[test]
    fn prefill_per_token_at_one_token_equals_decode_at_one() {
        let blueprint = llama_style(&[("seq", "1")]);
        for convention in [Convention::Matmul, Convention::Kaplan] {
            let options = CostOptions {
                convention,
                ..CostOptions::default()
            };
            let inference = inference(&blueprint, options, Some(1));
            assert_eq!(
                inference.prefill_flops_per_token, inference.decode_flops_per_token,
                "{convention:?}"
            );
        }
        // Granular: a decoded token needs no mask, so it skips the one
        // comparison per head that builds the prompt's.
        let granular = inference(&blueprint, CostOptions::default(), Some(1));
        assert_eq!(
            granular.prefill_flops_per_token - granular.decode_flops_per_token,
            22 * 32
        );
    }

    #[test]
    fn windows_cap_the_cache() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/blueprints/llama-style.toml"
        ))
        .unwrap()
        .replace("mask = \"causal\"", "mask = \"window\"\nwindow = 256");
        let blueprint = Blueprint::from_text("windowed.toml", &text, &[]).unwrap();
        let inference = inference(&blueprint, CostOptions::default(), Some(4096));
        assert_eq!(
            inference.kv_cache_bytes,
            256 * inference.kv_cache_bytes_per_token
        );
        assert!(is_decoder(&blueprint));
    }
}
