//! Attention flow (Abnar & Zuidema 2020, §4): the maximum flow through the
//! layered graph of attention weights.
//!
//! Nodes are `(layer, token)`; an edge from token `i` after layer `l` to
//! token `j` before it has capacity equal to rollout's per-layer weight
//! (fused heads, residual included). The flow from an output token to an
//! input token is the maximum flow between them. Unlike rollout it does not
//! multiply weights along paths but is bounded by the narrowest edge on
//! each, so it is always at most the output token's total capacity (1).
//! Max-flow costs far more than a product, so it is offered for short
//! inputs only ([`MAX_FLOW_TOKENS`]).

use std::collections::VecDeque;

use super::error::{AnalysisError, AnalysisResult};
use super::map::AttentionStack;
use super::rollout::{rollout_layers, RolloutOptions};

/// The longest input attention flow accepts: beyond this, use rollout.
pub const MAX_FLOW_TOKENS: usize = 64;

/// Augmenting paths narrower than this are ignored: they only chase
/// floating-point dust and could otherwise keep Edmonds–Karp looping.
const FLOW_EPSILON: f64 = 1e-12;

/// A flow network with residual edges stored in pairs (`edge ^ 1` is the
/// reverse of `edge`).
struct Network {
    heads: Vec<usize>,
    capacities: Vec<f64>,
    outgoing: Vec<Vec<usize>>,
}

impl Network {
    fn new(nodes: usize) -> Self {
        Self {
            heads: Vec::new(),
            capacities: Vec::new(),
            outgoing: vec![Vec::new(); nodes],
        }
    }

    fn add_edge(&mut self, from: usize, to: usize, capacity: f64) {
        self.outgoing[from].push(self.heads.len());
        self.heads.push(to);
        self.capacities.push(capacity);
        self.outgoing[to].push(self.heads.len());
        self.heads.push(from);
        self.capacities.push(0.0);
    }

    /// Edmonds–Karp: augment along shortest paths until none is left.
    /// Returns the flow value; `self.capacities` is left as the residual.
    fn max_flow(&mut self, source: usize, sink: usize) -> f64 {
        let mut total = 0.0;
        let nodes = self.outgoing.len();
        loop {
            let mut via: Vec<Option<usize>> = vec![None; nodes];
            let mut queue = VecDeque::from([source]);
            let mut reached = false;
            while let Some(node) = queue.pop_front() {
                for &edge in &self.outgoing[node] {
                    let next = self.heads[edge];
                    if next != source && via[next].is_none() && self.capacities[edge] > FLOW_EPSILON
                    {
                        via[next] = Some(edge);
                        if next == sink {
                            reached = true;
                            break;
                        }
                        queue.push_back(next);
                    }
                }
                if reached {
                    break;
                }
            }
            if !reached {
                return total;
            }
            let mut bottleneck = f64::INFINITY;
            let mut node = sink;
            while let Some(edge) = via[node] {
                bottleneck = bottleneck.min(self.capacities[edge]);
                node = self.heads[edge ^ 1];
            }
            let mut node = sink;
            while let Some(edge) = via[node] {
                self.capacities[edge] -= bottleneck;
                self.capacities[edge ^ 1] += bottleneck;
                node = self.heads[edge ^ 1];
            }
            total += bottleneck;
        }
    }
}

/// The attention flow from output token `target` (after the last layer) to
/// every input token (before `options.start_layer`): entry `j` is the
/// maximum flow from `target` to input token `j`.
///
/// Fails for inputs longer than [`MAX_FLOW_TOKENS`] tokens or a target out
/// of range.
pub fn attention_flow(
    stack: &AttentionStack,
    options: &RolloutOptions,
    target: usize,
) -> AnalysisResult<Vec<f64>> {
    let n = stack.num_tokens();
    if n > MAX_FLOW_TOKENS {
        return Err(AnalysisError::parameter(
            "tokens",
            format!(
                "attention flow is computed for inputs of at most {MAX_FLOW_TOKENS} tokens (max-flow per token pair is costly); this input has {n}: use rollout"
            ),
        ));
    }
    if target >= n {
        return Err(AnalysisError::parameter(
            "target token",
            format!("is {target} but there are only {n} tokens"),
        ));
    }
    let layers = rollout_layers(stack, options)?;
    let depth = layers.len();
    // Node `level * n + token`: level 0 is the input, level `depth` the
    // output of the last layer used.
    let mut template = Network::new((depth + 1) * n);
    for (index, layer) in layers.iter().enumerate() {
        let (upper, lower) = ((index + 1) * n, index * n);
        for i in 0..n {
            for (j, &weight) in layer.row(i).iter().enumerate() {
                if weight > 0.0 {
                    template.add_edge(upper + i, lower + j, weight);
                }
            }
        }
    }
    let source = depth * n + target;
    Ok((0..n)
        .map(|input| {
            let mut network = Network {
                heads: template.heads.clone(),
                capacities: template.capacities.clone(),
                outgoing: template.outgoing.clone(),
            };
            network.max_flow(source, input)
        })
        .collect())
}
