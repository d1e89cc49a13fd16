//! `M = (I, O, F, R)` (§3.1): input and output shapes, the forward graph in
//! topological order, and the receptive-field relation R — for each output
//! position, which input positions can influence it — composed through the
//! masks of every layer.
//!
//! Reach is tracked along the sequence axis as a relative interval
//! `[i − back, i + forward]`: position-wise ops keep it, attention adds its
//! mask's extent (causal: unbounded back; window of w: w − 1 back), and
//! residual adds take the union. So L causal sliding-window layers of width
//! w give `L·(w − 1) + 1` positions, the receptive-field growth that makes
//! windowed models see far.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::graph::Blueprint;
use crate::ops::{Element, Mask, Op, PoolKind};

/// How far a reach extends on one side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Extent {
    /// This many positions.
    Finite(u64),
    /// As far as the sequence goes.
    Unbounded,
}

impl Extent {
    fn plus(self, other: Extent) -> Extent {
        match (self, other) {
            (Extent::Finite(a), Extent::Finite(b)) => {
                a.checked_add(b).map_or(Extent::Unbounded, Extent::Finite)
            }
            _ => Extent::Unbounded,
        }
    }

    fn clip(self, limit: u64) -> u64 {
        match self {
            Extent::Finite(value) => value.min(limit),
            Extent::Unbounded => limit,
        }
    }
}

/// Which positions of one input influence an output position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reach {
    /// Output position `i` depends on input positions `i − back ..= i + forward`.
    Relative {
        /// Positions before `i`.
        back: Extent,
        /// Positions after `i`.
        forward: Extent,
    },
    /// An output without a sequence axis that depends on positions `0..=last`
    /// (first-token pooling).
    Prefix {
        /// The last position that reaches it.
        last: Extent,
    },
    /// Every input position.
    All,
}

impl Reach {
    const IDENTITY: Reach = Reach::Relative {
        back: Extent::Finite(0),
        forward: Extent::Finite(0),
    };

    fn union(self, other: Reach) -> Reach {
        match (self, other) {
            (
                Reach::Relative { back, forward },
                Reach::Relative {
                    back: other_back,
                    forward: other_forward,
                },
            ) => Reach::Relative {
                back: back.max(other_back),
                forward: forward.max(other_forward),
            },
            (Reach::Prefix { last }, Reach::Prefix { last: other }) => Reach::Prefix {
                last: last.max(other),
            },
            // Mixing a sequence-aligned and a pooled reach: stay conservative.
            _ => Reach::All,
        }
    }

    /// Reach after a layer in which position `i` reads positions `mask(i)`.
    fn through(self, mask: Reach) -> Reach {
        match (mask, self) {
            (
                Reach::Relative { back, forward },
                Reach::Relative {
                    back: inner_back,
                    forward: inner_forward,
                },
            ) => Reach::Relative {
                back: back.plus(inner_back),
                forward: forward.plus(inner_forward),
            },
            (Reach::Relative { .. }, other) => other,
            _ => Reach::All,
        }
    }

    /// Number of input positions (out of `length`) that reach the last
    /// output position.
    pub fn seen_by_last(&self, length: u64) -> u64 {
        match self {
            Reach::Relative { back, .. } => back.clip(length.saturating_sub(1)) + 1,
            Reach::Prefix { last } => last.clip(length.saturating_sub(1)) + 1,
            Reach::All => length,
        }
    }

    /// Number of input positions (out of `length`) that reach the first
    /// output position.
    pub fn seen_by_first(&self, length: u64) -> u64 {
        match self {
            Reach::Relative { forward, .. } => forward.clip(length.saturating_sub(1)) + 1,
            Reach::Prefix { last } => last.clip(length.saturating_sub(1)) + 1,
            Reach::All => length,
        }
    }

    /// A short formula for people.
    pub fn describe(&self) -> String {
        let side = |extent: &Extent| match extent {
            Extent::Finite(value) => value.to_string(),
            Extent::Unbounded => "∞".to_string(),
        };
        match self {
            Reach::Relative { back, forward } => match (back, forward) {
                (Extent::Unbounded, Extent::Unbounded) => "all positions".into(),
                (Extent::Unbounded, Extent::Finite(0)) => "prefix 0..=i (causal)".into(),
                (Extent::Finite(0), Extent::Finite(0)) => "position i only".into(),
                _ => format!("i-{} ..= i+{}", side(back), side(forward)),
            },
            Reach::Prefix { last } => format!("positions 0..={}", side(last)),
            Reach::All => "all positions".into(),
        }
    }
}

fn mask_reach(mask: Mask) -> Reach {
    match mask {
        Mask::None => Reach::All,
        Mask::Causal => Reach::Relative {
            back: Extent::Unbounded,
            forward: Extent::Finite(0),
        },
        Mask::Window { size } => Reach::Relative {
            back: Extent::Finite(size - 1),
            forward: Extent::Finite(0),
        },
    }
}

type Reaches = BTreeMap<String, Reach>;

fn merge(target: &mut Reaches, source: &Reaches, transform: impl Fn(Reach) -> Reach) {
    for (input, reach) in source {
        let reach = transform(*reach);
        target
            .entry(input.clone())
            .and_modify(|existing| *existing = existing.union(reach))
            .or_insert(reach);
    }
}

/// For every node, the reach of each graph input that influences it.
pub fn reaches(blueprint: &Blueprint) -> Vec<Reaches> {
    let mut result: Vec<Reaches> = Vec::with_capacity(blueprint.nodes.len());
    for node in &blueprint.nodes {
        let inputs: Vec<&Reaches> = node
            .inputs
            .iter()
            .map(|name| &result[blueprint.position(name).expect("checked input")])
            .collect();
        let mut reach = Reaches::new();
        match &node.op {
            Op::Input { .. } => {
                reach.insert(node.name.clone(), Reach::IDENTITY);
            }
            Op::Attention(attention) => {
                let keys = inputs.get(1).copied().unwrap_or(inputs[0]);
                // The query's own row reaches the output through the query path,
                // every visible key position through the key/value path.
                merge(&mut reach, inputs[0], |inner| inner);
                merge(&mut reach, keys, |inner| {
                    inner.through(mask_reach(attention.mask))
                });
            }
            Op::Matmul { .. } => {
                merge(&mut reach, inputs[0], |inner| inner);
                merge(&mut reach, inputs[1], |_| Reach::All);
            }
            Op::Pool { kind } => match kind {
                PoolKind::Mean => merge(&mut reach, inputs[0], |_| Reach::All),
                PoolKind::First => merge(&mut reach, inputs[0], |inner| match inner {
                    Reach::Relative { forward, .. } => Reach::Prefix { last: forward },
                    other => other,
                }),
            },
            Op::Concat { axis } if *axis + 1 != node.shape.len() => {
                for input in &inputs {
                    merge(&mut reach, input, |_| Reach::All);
                }
            }
            Op::Softmax { axis } if *axis + 2 == node.shape.len() => {
                // A softmax across positions mixes every position.
                merge(&mut reach, inputs[0], |_| Reach::All);
            }
            _ => {
                for input in &inputs {
                    merge(&mut reach, input, |inner| inner);
                }
            }
        }
        result.push(reach);
    }
    result
}

/// A named tensor's shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TensorSummary {
    /// Node name.
    pub name: String,
    /// Shape.
    pub shape: Vec<u64>,
    /// Indices or reals.
    pub element: Element,
}

/// One step of `F`: a node in evaluation order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// Node name.
    pub name: String,
    /// Op name.
    pub op: String,
    /// Nodes it reads.
    pub inputs: Vec<String>,
    /// Output shape.
    pub shape: Vec<u64>,
}

/// One pair of `R`: how an input reaches an output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Receptive {
    /// The output node.
    pub output: String,
    /// The input node.
    pub input: String,
    /// The relation.
    pub reach: Reach,
    /// The input's sequence length.
    pub length: u64,
    /// Input positions that reach the output's last position.
    pub seen_by_last: u64,
    /// Input positions that reach the output's first position.
    pub seen_by_first: u64,
}

/// `M = (I, O, F, R)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// The model's name.
    pub model: String,
    /// `I`: input shapes.
    pub inputs: Vec<TensorSummary>,
    /// `O`: output shapes.
    pub outputs: Vec<TensorSummary>,
    /// `F`: the forward graph in topological order.
    pub forward: Vec<Step>,
    /// `R`: for each output and input, which positions reach which.
    pub receptive: Vec<Receptive>,
}

/// Number of positions of an input: its last axis for index tensors
/// (`[batch, seq]`), the second-to-last for activations (`[batch, seq, d]`),
/// height × width pixels for images (`[batch, channels, height, width]`).
/// For images only "all positions" is exact: a relative reach that passes a
/// patch embedding is counted in patches, not pixels.
fn sequence_length(shape: &[u64], element: Element) -> u64 {
    match (element, shape.len()) {
        (_, 0) => 1,
        (Element::Index, rank) | (Element::Float, rank @ 1) => shape[rank - 1],
        (Element::Float, 4) => shape[2] * shape[3],
        (Element::Float, rank) => shape[rank - 2],
    }
}

/// Builds `M = (I, O, F, R)` for `blueprint`.
pub fn summary(blueprint: &Blueprint) -> Summary {
    let reaches = reaches(blueprint);
    let tensor = |node: &crate::graph::Node| TensorSummary {
        name: node.name.clone(),
        shape: node.shape.clone(),
        element: node.element,
    };
    let outputs = blueprint.outputs();
    let mut receptive = Vec::new();
    for output in &outputs {
        let position = blueprint.position(&output.name).expect("output exists");
        for (input, reach) in &reaches[position] {
            let input_node = blueprint.node(input).expect("reach keys are inputs");
            let length = sequence_length(&input_node.shape, input_node.element);
            receptive.push(Receptive {
                output: output.name.clone(),
                input: input.clone(),
                reach: *reach,
                length,
                seen_by_last: reach.seen_by_last(length),
                seen_by_first: reach.seen_by_first(length),
            });
        }
    }
    Summary {
        model: blueprint.name.clone(),
        inputs: blueprint.inputs().map(tensor).collect(),
        outputs: outputs.into_iter().map(tensor).collect(),
        forward: blueprint
            .nodes
            .iter()
            .map(|node| Step {
                name: node.name.clone(),
                op: node.op.name().to_string(),
                inputs: node.inputs.clone(),
                shape: node.shape.clone(),
            })
            .collect(),
        receptive,
    }
}
