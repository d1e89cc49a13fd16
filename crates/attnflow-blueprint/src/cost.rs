//! The arithmetic account (§9): parameters, forward FLOPs split by kind,
//! multiply-accumulates, activation memory and training FLOPs, per node and
//! in total, under one of three counting conventions.
//!
//! Why three: published numbers disagree mostly because they count different
//! things. `granular` counts every scalar operation an implementation
//! performs; `matmul` counts only matrix products at 2 FLOPs per MAC (what
//! PyTorch's `FlopCounterMode` reports); `kaplan` is the closed form of
//! Kaplan et al. 2020, Table 1: `2N + 2·n_layer·n_ctx·d_attn` per token.

use std::collections::BTreeMap;
use std::ops::{Add, AddAssign};

use serde::Serialize;

use crate::graph::{BlockPosition, Blueprint, Node};
use crate::ops::{Activation, AttentionOp, Element, Mask, Op, PoolKind, PositionalKind};

/// Which operations are counted and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Convention {
    /// Every scalar operation, split by kind.
    #[default]
    Granular,
    /// Matrix products only (linear maps, attention's two products,
    /// convolutions), 2 FLOPs per MAC: PyTorch `FlopCounterMode`.
    Matmul,
    /// Kaplan et al. 2020: `2N + 2·n_layer·n_ctx·d_attn` per token, where `N`
    /// excludes vocabulary and position embeddings.
    Kaplan,
}

impl Convention {
    /// All conventions with their names.
    pub const ALL: [(&'static str, Convention); 3] = [
        ("granular", Convention::Granular),
        ("matmul", Convention::Matmul),
        ("kaplan", Convention::Kaplan),
    ];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Convention::Granular => "granular",
            Convention::Matmul => "matmul",
            Convention::Kaplan => "kaplan",
        }
    }
}

/// How masked attention entries are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Counting {
    /// The whole score matrix, masked entries included: what a plain
    /// implementation (and `FlopCounterMode`) computes.
    #[default]
    Dense,
    /// Only the entries the mask keeps (causal: n(n+1)/2 per head).
    Exact,
}

/// The number type of activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Dtype {
    /// 8 bytes.
    F64,
    /// 4 bytes.
    #[default]
    F32,
    /// 2 bytes.
    F16,
    /// 2 bytes.
    Bf16,
}

impl Dtype {
    /// All dtypes with their names.
    pub const ALL: [(&'static str, Dtype); 4] = [
        ("f64", Dtype::F64),
        ("f32", Dtype::F32),
        ("f16", Dtype::F16),
        ("bf16", Dtype::Bf16),
    ];

    /// Bytes per element.
    pub fn bytes(self) -> u128 {
        match self {
            Dtype::F64 => 8,
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::Bf16 => 2,
        }
    }
}

/// How to count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub struct CostOptions {
    /// Which operations count.
    pub convention: Convention,
    /// Dense or exact counting of masked attention.
    pub counting: Counting,
    /// Activation number type (index tensors are always 8 bytes).
    pub dtype: Dtype,
}

/// Scalar operations by kind. `exp` counts every transcendental evaluation
/// (exp, tanh, erf), since each costs about one exponential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub struct Flops {
    /// Multiplications.
    pub mul: u128,
    /// Additions and subtractions.
    pub add: u128,
    /// Exponentials and other transcendentals.
    pub exp: u128,
    /// Divisions.
    pub div: u128,
    /// Comparisons (max, masks, ReLU).
    pub compare: u128,
    /// Square roots.
    pub sqrt: u128,
}

impl Flops {
    /// Sum over kinds.
    pub fn total(&self) -> u128 {
        self.mul + self.add + self.exp + self.div + self.compare + self.sqrt
    }

    /// Every kind scaled by `factor`.
    pub fn times(&self, factor: u128) -> Flops {
        Flops {
            mul: self.mul * factor,
            add: self.add * factor,
            exp: self.exp * factor,
            div: self.div * factor,
            compare: self.compare * factor,
            sqrt: self.sqrt * factor,
        }
    }
}

impl Add for Flops {
    type Output = Flops;
    fn add(self, other: Flops) -> Flops {
        Flops {
            mul: self.mul + other.mul,
            add: self.add + other.add,
            exp: self.exp + other.exp,
            div: self.div + other.div,
            compare: self.compare + other.compare,
            sqrt: self.sqrt + other.sqrt,
        }
    }
}

impl AddAssign for Flops {
    fn add_assign(&mut self, other: Flops) {
        *self = *self + other;
    }
}

/// The cost of one node or of a sum of nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub struct Cost {
    /// Trainable parameters (a tied weight is counted at its owner only).
    pub params: u128,
    /// Multiply-accumulates of matrix products, shown apart from FLOPs.
    pub macs: u128,
    /// Forward FLOPs by kind under the chosen convention.
    pub flops: Flops,
    /// `flops.total()`, kept as a field for machine readers.
    pub forward_flops: u128,
    /// Forward plus backward: 3× forward (the backward pass computes one
    /// product for the input gradient and one for the weight gradient).
    pub training_flops: u128,
    /// Bytes of the tensors the forward pass materialises.
    pub activation_bytes: u128,
}

impl Add for Cost {
    type Output = Cost;
    fn add(self, other: Cost) -> Cost {
        Cost {
            params: self.params + other.params,
            macs: self.macs + other.macs,
            flops: self.flops + other.flops,
            forward_flops: self.forward_flops + other.forward_flops,
            training_flops: self.training_flops + other.training_flops,
            activation_bytes: self.activation_bytes + other.activation_bytes,
        }
    }
}

impl AddAssign for Cost {
    fn add_assign(&mut self, other: Cost) {
        *self = *self + other;
    }
}

/// One node's line of the account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeCost {
    /// The node's name.
    pub name: String,
    /// The op name.
    pub op: String,
    /// The node's output shape.
    pub shape: Vec<u64>,
    /// Set for nodes of a repeated block.
    pub block: Option<BlockPosition>,
    /// The node's cost.
    pub cost: Cost,
}

/// The whole account of a blueprint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Account {
    /// The model's name.
    pub model: String,
    /// How it was counted.
    pub options: CostOptions,
    /// The dims it was counted at.
    pub dims: BTreeMap<String, u64>,
    /// One line per node, in topological order.
    pub nodes: Vec<NodeCost>,
    /// Sums per op name.
    pub by_op: BTreeMap<String, Cost>,
    /// The sum over all nodes.
    pub total: Cost,
}

/// Costs `blueprint` under `options`.
pub fn account(blueprint: &Blueprint, options: CostOptions) -> Account {
    let mut nodes = Vec::with_capacity(blueprint.nodes.len());
    let mut by_op: BTreeMap<String, Cost> = BTreeMap::new();
    let mut total = Cost::default();
    for node in &blueprint.nodes {
        let cost = node_cost(blueprint, node, options);
        *by_op.entry(node.op.name().to_string()).or_default() += cost;
        total += cost;
        nodes.push(NodeCost {
            name: node.name.clone(),
            op: node.op.name().to_string(),
            shape: node.shape.clone(),
            block: node.block.clone(),
            cost,
        });
    }
    Account {
        model: blueprint.name.clone(),
        options,
        dims: blueprint.dims.clone(),
        nodes,
        by_op,
        total,
    }
}

/// What one node does, before a convention chooses what counts.
#[derive(Debug, Default)]
pub(crate) struct Work {
    params: u128,
    macs: u128,
    granular: Flops,
    activation_elements: u128,
    /// Kaplan's attention term for this node: `2·n_ctx·d_attn` per token.
    kaplan_attention: u128,
    /// Rows (tokens) the node processes, for Kaplan's `2N` per token.
    rows: u128,
    /// Whether Kaplan's `N` leaves this node's parameters out.
    embedding_like: bool,
}

fn product(shape: &[u64]) -> u128 {
    shape.iter().map(|size| u128::from(*size)).product()
}

/// A dense `[rows, inner] × [inner, columns]` product, with or without bias.
fn dense(rows: u128, inner: u128, columns: u128, bias: bool) -> (u128, Flops) {
    let macs = rows * inner * columns;
    let flops = Flops {
        mul: macs,
        add: rows * columns * inner.saturating_sub(1) + if bias { rows * columns } else { 0 },
        ..Flops::default()
    };
    (macs, flops)
}

/// Scalar operations of one element of an activation function.
fn activation_flops(function: Activation) -> Flops {
    match function {
        Activation::Relu => Flops {
            compare: 1,
            ..Flops::default()
        },
        // x·½·(1 + erf(x/√2)): scale, erf, add one, two products.
        Activation::Gelu => Flops {
            mul: 3,
            add: 1,
            exp: 1,
            ..Flops::default()
        },
        // ½·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))): x², x³, ·0.044715, ·√(2/π), ½x, final product.
        Activation::GeluTanh => Flops {
            mul: 6,
            add: 2,
            exp: 1,
            ..Flops::default()
        },
        // x / (1 + e^{-x}) and 1 / (1 + e^{-x}).
        Activation::Silu | Activation::Sigmoid => Flops {
            add: 1,
            exp: 1,
            div: 1,
            ..Flops::default()
        },
        Activation::Tanh => Flops {
            exp: 1,
            ..Flops::default()
        },
    }
}

/// Softmax over rows of the given lengths: max, subtract, exp, sum, divide.
fn softmax_flops(rows: u128, entries: u128) -> Flops {
    Flops {
        compare: entries.saturating_sub(rows),
        add: entries + entries.saturating_sub(rows),
        exp: entries,
        div: entries,
        ..Flops::default()
    }
}

/// Σ_{t=first}^{last} min(max(t, 0), cap): keys visible to queries whose
/// causal reach ends at key t (1-based counts), capped by a window.
fn clipped_sum(first: i128, last: i128, cap: i128) -> u128 {
    let first = first.max(1);
    if last < first {
        return 0;
    }
    let arithmetic = |low: i128, high: i128| (low + high) * (high - low + 1) / 2;
    let total = if last <= cap {
        arithmetic(first, last)
    } else if first > cap {
        cap * (last - first + 1)
    } else {
        arithmetic(first, cap) + cap * (last - cap)
    };
    total as u128
}

/// Score entries per (batch, head) that the mask keeps. Masks are aligned
/// top-left, as PyTorch's SDPA and attnflow-core do when the lengths differ:
/// query i sees keys `0..=i` (causal) or `i−w+1..=i` (window of w), within
/// the `keys` that exist.
pub fn visible_entries(queries: u64, keys: u64, mask: Mask) -> u128 {
    let (queries, keys) = (i128::from(queries), i128::from(keys));
    match mask {
        Mask::None => (queries * keys) as u128,
        Mask::Causal => clipped_sum(1, queries, keys),
        Mask::Window { size } => {
            let size = i128::from(size);
            // Queries that have every key of their window available...
            let inside = clipped_sum(1, queries.min(keys), size);
            // ...and queries past the last key, whose windows run off its end.
            let past = if queries > keys {
                clipped_sum(keys + size - queries, size - 1, keys)
            } else {
                0
            };
            inside + past
        }
    }
}

fn attention_work(
    blueprint: &Blueprint,
    node: &Node,
    attention: &AttentionOp,
    counting: Counting,
) -> Work {
    let query = blueprint.node(&node.inputs[0]).expect("checked input");
    let memory = blueprint
        .node(node.inputs.get(1).unwrap_or(&node.inputs[0]))
        .expect("checked input");
    let rank = query.shape.len();
    let sizes = AttentionSizes {
        batch: product(&query.shape[..rank - 2]),
        queries: query.shape[rank - 2],
        keys: memory.shape[rank - 2],
        projected_keys: memory.shape[rank - 2],
        query_width: u128::from(query.shape[rank - 1]),
        memory_width: u128::from(memory.shape[rank - 1]),
    };
    let entries = match counting {
        Counting::Dense => u128::from(sizes.queries) * u128::from(sizes.keys),
        Counting::Exact => visible_entries(sizes.queries, sizes.keys, attention.mask),
    };
    sized_attention_work(attention, &sizes, entries, counting == Counting::Dense)
}

/// The sizes one attention call works on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AttentionSizes {
    /// Product of the leading (batch) axes.
    pub batch: u128,
    /// Query positions.
    pub queries: u64,
    /// Key positions attended over.
    pub keys: u64,
    /// Key positions projected by this call (fewer than `keys` when the
    /// rest come from a cache).
    pub projected_keys: u64,
    /// Width of the query input.
    pub query_width: u128,
    /// Width of the key/value input.
    pub memory_width: u128,
}

/// Attention's work on `sizes` with `entries` score entries per head;
/// `dense_mask` adds the comparisons that build a dense mask.
pub(crate) fn sized_attention_work(
    attention: &AttentionOp,
    sizes: &AttentionSizes,
    entries: u128,
    dense_mask: bool,
) -> Work {
    let AttentionSizes {
        batch,
        queries: _,
        keys: _,
        projected_keys,
        query_width,
        memory_width,
    } = *sizes;
    let heads = u128::from(attention.heads);
    let kv_heads = u128::from(attention.kv_heads);
    let head_dim = u128::from(attention.head_dim);
    let out = u128::from(attention.out);
    let (n, m) = (u128::from(sizes.queries), u128::from(sizes.keys));
    let projected = u128::from(projected_keys);
    let bias = attention.bias;

    let mut work = Work {
        rows: batch * n,
        ..Work::default()
    };
    let projections = [
        (batch * n, query_width, heads * head_dim, bias),
        (
            batch * projected,
            memory_width,
            kv_heads * head_dim,
            attention.key_bias,
        ),
        (batch * projected, memory_width, kv_heads * head_dim, bias),
        (batch * n, heads * head_dim, out, attention.output_bias),
    ];
    for (rows, inner, columns, bias) in projections {
        let (macs, flops) = dense(rows, inner, columns, bias);
        work.macs += macs;
        work.granular += flops;
        work.params += inner * columns + if bias { columns } else { 0 };
    }
    if attention.rotary {
        // x·cos + rotate(x)·sin on every query and key feature.
        let rotated = batch * (n * heads + projected * kv_heads) * head_dim;
        work.granular += Flops {
            mul: 2 * rotated,
            add: rotated,
            ..Flops::default()
        };
    }
    let dense_entries = n * m;
    let per_head = batch * heads;
    // §3.2: scores QKᵀ, scaled by 1/√d_k, softmax, then weights × V.
    let score_macs = entries * head_dim;
    let value_macs = entries * head_dim;
    work.macs += per_head * (score_macs + value_macs);
    let mut core = Flops {
        mul: score_macs + value_macs,
        add: entries * (head_dim - 1) + entries.saturating_sub(n) * head_dim,
        div: entries,
        ..Flops::default()
    };
    core += softmax_flops(n, entries);
    if dense_mask && attention.mask != Mask::None {
        // Building the mask compares a query and a key index per entry.
        core.compare += dense_entries;
    }
    // 1/√d_k is a constant of the model, computed once: no per-entry sqrt.
    work.granular += core.times(per_head);
    // Kaplan Table 1: 2·n_ctx·d_attn per token per attention layer.
    work.kaplan_attention = 2 * work.rows * m * heads * head_dim;
    work.activation_elements = batch
        * (n * heads * head_dim // queries
            + 2 * projected * kv_heads * head_dim // keys and values
            + 2 * heads * n * m // scores and weights (§9: O(n²) space)
            + n * heads * head_dim // weighted values
            + n * out); // output projection
    work
}

fn work(blueprint: &Blueprint, node: &Node, options: CostOptions) -> Work {
    let output_elements = product(&node.shape);
    let input = node.inputs.first().and_then(|name| blueprint.node(name));
    let input_width = u128::from(blueprint.input_width(node));
    let rows = output_elements / u128::from(*node.shape.last().unwrap_or(&1)).max(1);
    let mut work = Work {
        activation_elements: output_elements,
        rows,
        ..Work::default()
    };
    let elementwise = |flops: Flops| flops.times(output_elements);
    match &node.op {
        Op::Input { .. } | Op::Concat { .. } | Op::Dropout { .. } => {}
        Op::ClassToken => {
            work.params = u128::from(*node.shape.last().unwrap_or(&0));
            work.embedding_like = true;
        }
        Op::Embedding { vocab, dim, tie } => {
            if tie.is_none() {
                work.params = u128::from(*vocab) * u128::from(*dim);
            }
            work.embedding_like = true;
        }
        Op::Positional { kind, max_len } => {
            work.embedding_like = true;
            match kind {
                PositionalKind::Learned => {
                    work.params = u128::from(max_len.unwrap_or(0)) * input_width;
                    work.granular = elementwise(Flops {
                        add: 1,
                        ..Flops::default()
                    });
                }
                PositionalKind::Sinusoidal => {
                    work.granular = elementwise(Flops {
                        add: 1,
                        ..Flops::default()
                    });
                }
                PositionalKind::Rotary => {
                    work.granular = elementwise(Flops {
                        mul: 2,
                        add: 1,
                        ..Flops::default()
                    });
                }
            }
        }
        Op::Linear { out, bias, tie } | Op::Head { out, bias, tie } => {
            let out = u128::from(*out);
            let (macs, flops) = dense(rows, input_width, out, *bias);
            work.macs = macs;
            work.granular = flops;
            work.params =
                if tie.is_none() { input_width * out } else { 0 } + if *bias { out } else { 0 };
            work.embedding_like = matches!(node.op, Op::Head { .. });
        }
        Op::Attention(attention) => {
            return attention_work(blueprint, node, attention, options.counting)
        }
        Op::LayerNorm { bias, .. } => {
            let width = input_width;
            work.params = if *bias { 2 * width } else { width };
            let per_row = Flops {
                add: (width - 1) + width + (width - 1) + 1 + if *bias { width } else { 0 },
                mul: 2 * width,
                div: 2 + width,
                sqrt: 1,
                ..Flops::default()
            };
            work.granular = per_row.times(rows);
            work.activation_elements += 2 * rows; // mean and 1/σ kept for the backward pass
        }
        Op::RmsNorm { .. } => {
            let width = input_width;
            work.params = width;
            let per_row = Flops {
                mul: 2 * width,
                add: width,
                div: 1 + width,
                sqrt: 1,
                ..Flops::default()
            };
            work.granular = per_row.times(rows);
            work.activation_elements += rows;
        }
        Op::FeedForward {
            hidden,
            activation,
            gated,
            bias,
            out,
        } => {
            let (hidden, out) = (u128::from(*hidden), u128::from(*out));
            let up_count = if *gated { 2 } else { 1 };
            let (up_macs, up_flops) = dense(rows, input_width, hidden, *bias);
            let (down_macs, down_flops) = dense(rows, hidden, out, *bias);
            work.macs = up_count * up_macs + down_macs;
            work.granular = up_flops.times(up_count)
                + down_flops
                + activation_flops(*activation).times(rows * hidden);
            if *gated {
                work.granular.mul += rows * hidden;
            }
            work.params = up_count * (input_width * hidden + if *bias { hidden } else { 0 })
                + hidden * out
                + if *bias { out } else { 0 };
            // Hidden tensors: projection(s), activation, gated product.
            let hidden_tensors = if *gated { 4 } else { 2 };
            work.activation_elements += hidden_tensors * rows * hidden;
        }
        Op::Activation { function } => work.granular = elementwise(activation_flops(*function)),
        Op::Add => {
            work.granular = elementwise(Flops {
                add: (node.inputs.len() as u128).saturating_sub(1),
                ..Flops::default()
            })
        }
        Op::Softmax { axis } => {
            let length = u128::from(node.shape[*axis]);
            work.granular = softmax_flops(output_elements / length, output_elements);
        }
        Op::Pool { kind } => {
            if *kind == PoolKind::Mean {
                let input = input.expect("checked input");
                let seq = u128::from(input.shape[input.shape.len() - 2]);
                work.granular = Flops {
                    add: output_elements * (seq - 1),
                    div: output_elements,
                    ..Flops::default()
                };
            }
        }
        Op::Matmul { transpose_b } => {
            let right = blueprint.node(&node.inputs[1]).expect("checked input");
            let rank = right.shape.len();
            let inner = u128::from(if *transpose_b {
                right.shape[rank - 1]
            } else {
                right.shape[rank - 2]
            });
            let columns = u128::from(node.shape[rank - 1]);
            let (macs, flops) = dense(rows, inner, columns, false);
            work.macs = macs;
            work.granular = flops;
        }
        Op::PatchEmbedding { patch, dim, bias } => {
            let input = input.expect("checked input");
            let channels = u128::from(input.shape[1]);
            let inner = channels * u128::from(*patch) * u128::from(*patch);
            let dim = u128::from(*dim);
            let (macs, flops) = dense(rows, inner, dim, *bias);
            work.macs = macs;
            work.granular = flops;
            work.params = inner * dim + if *bias { dim } else { 0 };
        }
    }
    work
}

/// One node's cost under `options`.
pub fn node_cost(blueprint: &Blueprint, node: &Node, options: CostOptions) -> Cost {
    cost_of_work(work(blueprint, node, options), node.element, options)
}

/// A node's work priced under `options`; `element` sets the activation
/// bytes per element.
pub(crate) fn cost_of_work(work: Work, element: Element, options: CostOptions) -> Cost {
    let flops = match options.convention {
        Convention::Granular => work.granular,
        Convention::Matmul => Flops {
            mul: work.macs,
            add: work.macs,
            ..Flops::default()
        },
        Convention::Kaplan => {
            let parameters = if work.embedding_like { 0 } else { work.params };
            let total = 2 * parameters * work.rows + work.kaplan_attention;
            Flops {
                mul: total / 2,
                add: total - total / 2,
                ..Flops::default()
            }
        }
    };
    let macs = match options.convention {
        Convention::Kaplan => flops.mul,
        _ => work.macs,
    };
    let bytes_per_element = if element == Element::Index {
        8
    } else {
        options.dtype.bytes()
    };
    let forward_flops = flops.total();
    Cost {
        params: work.params,
        macs,
        flops,
        forward_flops,
        training_flops: 3 * forward_flops,
        activation_bytes: work.activation_elements * bytes_per_element,
    }
}

/// Kaplan's `N`: parameters excluding vocabulary and position embeddings
/// (and the output head, which Kaplan et al. tie to the vocabulary).
pub fn non_embedding_params(blueprint: &Blueprint) -> u128 {
    blueprint
        .nodes
        .iter()
        .map(|node| {
            let work = work(blueprint, node, CostOptions::default());
            if work.embedding_like {
                0
            } else {
                work.params
            }
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brute_force(queries: u64, keys: u64, mask: Mask) -> u128 {
        let mut count = 0;
        for query in 0..queries as i64 {
            for key in 0..keys as i64 {
                let visible = match mask {
                    Mask::None => true,
                    Mask::Causal => key <= query,
                    Mask::Window { size } => key <= query && key > query - size as i64,
                };
                count += u128::from(visible);
            }
        }
        count
    }

    #[test]
    fn visible_entries_match_brute_force() {
        for queries in 1..9 {
            for keys in 1..9 {
                for mask in [
                    Mask::None,
                    Mask::Causal,
                    Mask::Window { size: 1 },
                    Mask::Window { size: 3 },
                    Mask::Window { size: 20 },
                ] {
                    assert_eq!(
                        visible_entries(queries, keys, mask),
                        brute_force(queries, keys, mask),
                        "{queries} queries, {keys} keys, {mask:?}"
                    );
                }
            }
        }
        assert_eq!(visible_entries(1024, 1024, Mask::Causal), 1024 * 1025 / 2);
    }

    #[test]
    fn a_left_out_key_bias_is_not_counted() {
        let account_of = |attributes: &str| {
            let text = format!(
                "[dims]\nd = 8\n[[node]]\nname = \"x\"\nop = \"input\"\nshape = [1, 5, \"d\"]\n[[node]]\nname = \"attn\"\nop = \"attention\"\ninput = \"x\"\nheads = 2\nkv_heads = 1\n{attributes}\n"
            );
            let blueprint = crate::Blueprint::from_text("a.toml", &text, &[]).unwrap();
            account(&blueprint, CostOptions::default()).total
        };
        let with = account_of("");
        let without = account_of("key_bias = false");
        // One key/value head of 4 features: 4 bias entries, one add per
        // key feature at each of 5 positions.
        assert_eq!(with.params - without.params, 4);
        assert_eq!(with.flops.add - without.flops.add, 5 * 4);
        // Without any bias: the query (8), value (4) and output (8) ones go too.
        assert_eq!(
            account_of("bias = false").params + 8 + 4 + 8,
            without.params
        );
    }
}
