//! Checking: dims are evaluated, blocks expanded into per-layer nodes, names
//! resolved, the graph ordered topologically and every shape inferred. The
//! result, [`Blueprint`], is the §4.1 data-flow graph `G = (V, E)` in which
//! each vertex carries its op and resolved output shape.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::ops::Range;

use serde::Serialize;

use crate::error::{Error, SpecError, SpecErrorKind};
use crate::expr::Expr;
use crate::ops::{self, Element, Fault, Op, TensorType};
use crate::spec::{AttrValue, NodeSpec, Sp, Spec};

/// Where a node sits in a repeated block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlockPosition {
    /// The block's name.
    pub block: String,
    /// 0-based layer index.
    pub layer: u64,
    /// The node's name within one layer.
    pub local: String,
}

/// A checked node: a vertex of `G` with its op and resolved output shape.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Node {
    /// Unique name; nodes of blocks are called `block.layer.local`.
    pub name: String,
    /// The operation and its resolved attributes.
    #[serde(flatten)]
    pub op: Op,
    /// Names of the nodes feeding this one, in order.
    pub inputs: Vec<String>,
    /// The output shape.
    pub shape: Vec<u64>,
    /// Whether the output holds indices or reals.
    pub element: Element,
    /// Set for nodes of a repeated block.
    pub block: Option<BlockPosition>,
    /// 1-based line of the node's declaration in the spec.
    pub line: usize,
    /// Byte span of the node's name in the spec.
    #[serde(skip)]
    pub span: Range<usize>,
}

/// A repeated block after checking.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Block {
    /// The block's name.
    pub name: String,
    /// Number of layers.
    pub repeat: u64,
    /// The node layer 0 reads as `in`.
    pub input: String,
    /// The local name of the node each layer hands on.
    pub output: String,
    /// The local node names of one layer, in declaration order.
    pub locals: Vec<String>,
}

/// A checked blueprint: the data-flow graph with every shape resolved.
/// Nodes are in topological order (ties broken by declaration order), so a
/// consumer can evaluate them front to back.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Blueprint {
    /// The model's name.
    pub name: String,
    /// The file it came from.
    pub file: String,
    /// Every dimension's resolved value.
    pub dims: BTreeMap<String, u64>,
    /// Nodes in topological order.
    pub nodes: Vec<Node>,
    /// Repeated blocks.
    pub blocks: Vec<Block>,
    #[serde(skip)]
    index: HashMap<String, usize>,
}

impl Blueprint {
    /// Reads, parses and checks the spec at `path` with `overrides` applied.
    pub fn from_file(
        path: &std::path::Path,
        overrides: &[(String, String)],
    ) -> crate::Result<Blueprint> {
        Spec::from_file(path)?.check(overrides)
    }

    /// Parses and checks spec text; `file` names it in messages.
    pub fn from_text(
        file: &str,
        text: &str,
        overrides: &[(String, String)],
    ) -> crate::Result<Blueprint> {
        Spec::parse(file, text)?.check(overrides)
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.index.get(name).map(|index| &self.nodes[*index])
    }

    /// Position of `name` in [`Blueprint::nodes`].
    pub fn position(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// The graph's inputs `I`: nodes with op `input`.
    pub fn inputs(&self) -> impl Iterator<Item = &Node> {
        self.nodes
            .iter()
            .filter(|node| matches!(node.op, Op::Input { .. }))
    }

    /// The graph's outputs `O`: nodes that no other node reads.
    pub fn outputs(&self) -> Vec<&Node> {
        let read: BTreeSet<&str> = self
            .nodes
            .iter()
            .flat_map(|node| node.inputs.iter().map(String::as_str))
            .collect();
        self.nodes
            .iter()
            .filter(|node| {
                !read.contains(node.name.as_str()) && !matches!(node.op, Op::Input { .. })
            })
            .collect()
    }

    /// Width of the node's first input's last axis (the `in` of a linear map).
    pub fn input_width(&self, node: &Node) -> u64 {
        node.inputs
            .first()
            .and_then(|name| self.node(name))
            .and_then(|input| input.shape.last().copied())
            .unwrap_or(0)
    }

    /// Follows `tie` links to the node that owns the shared weight.
    pub fn tie_root<'a>(&'a self, node: &'a Node) -> &'a Node {
        let mut current = node;
        // A chain cannot be longer than the node count: checking rejected cycles.
        for _ in 0..self.nodes.len() {
            match current.op.tie().and_then(|name| self.node(name)) {
                Some(next) => current = next,
                None => break,
            }
        }
        current
    }
}

/// Parses `dim=value` (as given to `--set`).
pub fn parse_override(text: &str) -> crate::Result<(String, String)> {
    let (name, value) = text.split_once('=').ok_or_else(|| {
        Error::Request(format!(
            "--set `{text}`: expected dim=value, such as seq=2048"
        ))
    })?;
    let name = name.trim();
    let value = value.trim();
    if name.is_empty() || value.is_empty() {
        return Err(Error::Request(format!(
            "--set `{text}`: expected dim=value, such as seq=2048"
        )));
    }
    Ok((name.to_string(), value.to_string()))
}

/// Declaration order: (span start of the node or block, layer, span start within the block).
type Order = (usize, u64, usize);

struct Pending<'a> {
    name: String,
    spec: &'a NodeSpec,
    inputs: Vec<(String, Range<usize>)>,
    block: Option<BlockPosition>,
    order: Order,
}

impl Spec {
    fn fault(&self, node: Option<&str>, fault: Fault) -> Box<SpecError> {
        self.error(fault.span, node, fault.kind)
    }

    /// Evaluates `[dims]` (with `overrides` replacing declared values).
    pub fn resolve_dims(
        &self,
        overrides: &[(String, String)],
    ) -> crate::Result<BTreeMap<String, i128>> {
        let mut sources: BTreeMap<String, Sp<AttrValue>> = BTreeMap::new();
        for dim in &self.dims {
            sources.insert(dim.name.value.clone(), dim.value.clone());
        }
        let mut overridden = BTreeSet::new();
        for (name, value) in overrides {
            let Some(declared) = sources.get_mut(name) else {
                return Err(Error::Request(format!(
                    "--set {name}={value}: `{name}` is not a dimension of {} (declared: {})",
                    self.file,
                    self.dims
                        .iter()
                        .map(|dim| dim.name.value.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            };
            if Expr::parse(value).is_err() {
                return Err(Error::Request(format!(
                    "--set {name}={value}: `{value}` is not a whole number or dimension expression"
                )));
            }
            // Keep the declaration's span so later faults still point at the dim's line.
            declared.value = AttrValue::Text(value.clone());
            overridden.insert(name.clone());
        }
        let mut values = BTreeMap::new();
        let mut visiting = Vec::new();
        for dim in &self.dims {
            self.resolve_dim(&dim.name.value, &sources, &mut values, &mut visiting)?;
        }
        Ok(values)
    }

    fn resolve_dim(
        &self,
        name: &str,
        sources: &BTreeMap<String, Sp<AttrValue>>,
        values: &mut BTreeMap<String, i128>,
        visiting: &mut Vec<String>,
    ) -> crate::Result<i128> {
        if let Some(value) = values.get(name) {
            return Ok(*value);
        }
        let source = &sources[name];
        if let Some(start) = visiting.iter().position(|seen| seen == name) {
            let mut path = visiting[start..].to_vec();
            path.push(name.to_string());
            return Err(self
                .error(
                    source.span.clone(),
                    None,
                    SpecErrorKind::DimensionCycle { path },
                )
                .into());
        }
        visiting.push(name.to_string());
        // Resolve what this expression depends on first, so that a missing
        // name is reported as unknown only when it is truly undeclared.
        if let AttrValue::Text(text) = &source.value {
            if let Ok(expr) = Expr::parse(text) {
                for dependency in expr.dims() {
                    if sources.contains_key(dependency) {
                        self.resolve_dim(dependency, sources, values, visiting)?;
                    }
                }
            }
        }
        let value = ops::resolve_size(source, values).map_err(|fault| self.fault(None, fault))?;
        visiting.pop();
        values.insert(name.to_string(), i128::from(value));
        Ok(i128::from(value))
    }

    /// Checks the spec and builds the [`Blueprint`].
    pub fn check(&self, overrides: &[(String, String)]) -> crate::Result<Blueprint> {
        let dims = self.resolve_dims(overrides)?;
        if self.nodes.is_empty() && self.blocks.is_empty() {
            return Err(self
                .error(
                    0..0,
                    None,
                    SpecErrorKind::Missing {
                        field: "[[node]]".into(),
                        context: ": a blueprint needs at least one node".into(),
                    },
                )
                .into());
        }

        // Names: top-level nodes and blocks share one namespace.
        let mut declared: HashMap<String, Range<usize>> = HashMap::new();
        let mut claim = |name: &Sp<String>, owner: Option<&str>| -> Result<(), Box<SpecError>> {
            if let Some(first) = declared.get(name.value.as_str()) {
                let first_line =
                    crate::error::Location::from_span(&self.file, &self.source, first.clone()).line;
                return Err(self.error(
                    name.span.clone(),
                    owner.or(Some(&name.value)),
                    SpecErrorKind::DuplicateName {
                        name: name.value.clone(),
                        first_line,
                    },
                ));
            }
            declared.insert(name.value.clone(), name.span.clone());
            Ok(())
        };
        for node in &self.nodes {
            claim(&node.name, None)?;
        }
        for block in &self.blocks {
            claim(&block.name, None)?;
        }

        let mut repeats = Vec::new();
        for block in &self.blocks {
            let repeat = ops::resolve_size(&block.repeat, &dims)
                .map_err(|fault| self.fault(Some(&block.name.value), fault))?;
            let mut locals: HashMap<&str, Range<usize>> = HashMap::new();
            for node in &block.nodes {
                if node.name.value == "in" || node.name.value.contains('.') {
                    return Err(self
                        .error(
                            node.name.span.clone(),
                            Some(&node.name.value),
                            SpecErrorKind::InvalidAttribute {
                                attribute: "name".into(),
                                message: "`in` is reserved for the layer's input and names in blocks may not contain `.`".into(),
                            },
                        )
                        .into());
                }
                if let Some(first) = locals.get(node.name.value.as_str()) {
                    let first_line =
                        crate::error::Location::from_span(&self.file, &self.source, first.clone())
                            .line;
                    return Err(self
                        .error(
                            node.name.span.clone(),
                            Some(&node.name.value),
                            SpecErrorKind::DuplicateName {
                                name: node.name.value.clone(),
                                first_line,
                            },
                        )
                        .into());
                }
                locals.insert(node.name.value.as_str(), node.name.span.clone());
            }
            if !locals.contains_key(block.output.value.as_str()) {
                return Err(self
                    .error(
                        block.output.span.clone(),
                        Some(&block.name.value),
                        SpecErrorKind::UnknownInput {
                            hint: ops::suggestion(&block.output.value, locals.keys().copied())
                                + " (a block's output must be one of its own nodes)",
                            input: block.output.value.clone(),
                        },
                    )
                    .into());
            }
            repeats.push(repeat);
        }

        // Every name a reference may use, and what it stands for.
        let mut aliases: HashMap<String, String> = HashMap::new();
        for node in &self.nodes {
            aliases.insert(node.name.value.clone(), node.name.value.clone());
        }
        for (block, repeat) in self.blocks.iter().zip(&repeats) {
            for layer in 0..*repeat {
                for node in &block.nodes {
                    let name = format!("{}.{layer}.{}", block.name.value, node.name.value);
                    aliases.insert(name.clone(), name);
                }
            }
            aliases.insert(
                block.name.value.clone(),
                format!("{}.{}.{}", block.name.value, repeat - 1, block.output.value),
            );
        }
        let resolve_global =
            |reference: &Sp<String>, owner: &str| -> Result<String, Box<SpecError>> {
                aliases.get(&reference.value).cloned().ok_or_else(|| {
                    let candidates = self
                        .nodes
                        .iter()
                        .map(|node| node.name.value.as_str())
                        .chain(self.blocks.iter().map(|block| block.name.value.as_str()));
                    self.error(
                        reference.span.clone(),
                        Some(owner),
                        SpecErrorKind::UnknownInput {
                            input: reference.value.clone(),
                            hint: ops::suggestion(&reference.value, candidates),
                        },
                    )
                })
            };

        let mut pending: Vec<Pending> = Vec::new();
        for node in &self.nodes {
            let inputs = node
                .inputs
                .iter()
                .map(|input| Ok((resolve_global(input, &node.name.value)?, input.span.clone())))
                .collect::<Result<Vec<_>, Box<SpecError>>>()?;
            pending.push(Pending {
                name: node.name.value.clone(),
                spec: node,
                inputs,
                block: None,
                order: (node.span.start, 0, 0),
            });
        }
        for (block, repeat) in self.blocks.iter().zip(&repeats) {
            let block_input = resolve_global(&block.input, &block.name.value)?;
            let local_names: BTreeSet<&str> = block
                .nodes
                .iter()
                .map(|node| node.name.value.as_str())
                .collect();
            for layer in 0..*repeat {
                for node in &block.nodes {
                    let name = format!("{}.{layer}.{}", block.name.value, node.name.value);
                    let mut inputs = Vec::new();
                    for input in &node.inputs {
                        let resolved = if local_names.contains(input.value.as_str()) {
                            format!("{}.{layer}.{}", block.name.value, input.value)
                        } else if input.value == "in" {
                            if layer == 0 {
                                block_input.clone()
                            } else {
                                format!("{}.{}.{}", block.name.value, layer - 1, block.output.value)
                            }
                        } else if input.value == block.name.value {
                            // The block's own name inside itself would be a loop onto its last layer.
                            return Err(self
                                .error(
                                    input.span.clone(),
                                    Some(&name),
                                    SpecErrorKind::Cycle {
                                        path: vec![name.clone(), input.value.clone(), name.clone()],
                                    },
                                )
                                .into());
                        } else {
                            resolve_global(input, &name)?
                        };
                        inputs.push((resolved, input.span.clone()));
                    }
                    pending.push(Pending {
                        name,
                        spec: node,
                        inputs,
                        block: Some(BlockPosition {
                            block: block.name.value.clone(),
                            layer,
                            local: node.name.value.clone(),
                        }),
                        order: (block.span.start, layer, node.span.start),
                    });
                }
            }
        }

        let order = self.topological_order(&pending)?;
        let position: HashMap<&str, usize> = pending
            .iter()
            .enumerate()
            .map(|(index, item)| (item.name.as_str(), index))
            .collect();

        // Shape inference front to back.
        let mut types: Vec<Option<TensorType>> = vec![None; pending.len()];
        let mut nodes = Vec::with_capacity(pending.len());
        for index in order {
            let item = &pending[index];
            let input_types: Vec<TensorType> = item
                .inputs
                .iter()
                .map(|(name, _)| {
                    types[position[name.as_str()]]
                        .clone()
                        .expect("inputs come first in topological order")
                })
                .collect();
            let input_spans: Vec<Range<usize>> =
                item.inputs.iter().map(|(_, span)| span.clone()).collect();
            let (op, output) = ops::resolve(item.spec, &dims, &input_types, &input_spans)
                .map_err(|fault| self.fault(Some(&item.name), fault))?;
            types[index] = Some(output.clone());
            nodes.push(Node {
                name: item.name.clone(),
                op,
                inputs: item.inputs.iter().map(|(name, _)| name.clone()).collect(),
                shape: output.shape,
                element: output.element,
                block: item.block.clone(),
                line: crate::error::Location::from_span(
                    &self.file,
                    &self.source,
                    item.spec.name.span.clone(),
                )
                .line,
                span: item.spec.name.span.clone(),
            });
        }
        let index: HashMap<String, usize> = nodes
            .iter()
            .enumerate()
            .map(|(index, node)| (node.name.clone(), index))
            .collect();

        let blueprint = Blueprint {
            name: self.name.clone(),
            file: self.file.clone(),
            dims: dims
                .iter()
                .map(|(name, value)| (name.clone(), *value as u64))
                .collect(),
            nodes,
            blocks: self
                .blocks
                .iter()
                .zip(&repeats)
                .map(|(block, repeat)| -> Result<Block, Box<SpecError>> {
                    Ok(Block {
                        name: block.name.value.clone(),
                        repeat: *repeat,
                        input: resolve_global(&block.input, &block.name.value)?,
                        output: block.output.value.clone(),
                        locals: block
                            .nodes
                            .iter()
                            .map(|node| node.name.value.clone())
                            .collect(),
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
            index,
        };
        self.check_ties(&blueprint, &pending)?;
        Ok(blueprint)
    }

    fn check_ties(&self, blueprint: &Blueprint, pending: &[Pending]) -> Result<(), Box<SpecError>> {
        let specs: HashMap<&str, &NodeSpec> = pending
            .iter()
            .map(|item| (item.name.as_str(), item.spec))
            .collect();
        for node in &blueprint.nodes {
            let Some(target_name) = node.op.tie() else {
                continue;
            };
            let spec = specs[node.name.as_str()];
            let tie_span = spec
                .attribute("tie")
                .map_or(spec.name.span.clone(), |attribute| {
                    attribute.value.span.clone()
                });
            let fault = |kind| self.error(tie_span.clone(), Some(&node.name), kind);
            // A tie inside a block may name a node of the same layer.
            let local_target = node
                .block
                .as_ref()
                .map(|position| format!("{}.{}.{}", position.block, position.layer, target_name));
            let target = local_target
                .as_deref()
                .and_then(|name| blueprint.node(name))
                .or_else(|| blueprint.node(target_name))
                .ok_or_else(|| {
                    fault(SpecErrorKind::UnknownInput {
                        input: target_name.to_string(),
                        hint: " (a tie must name another node with a weight)".into(),
                    })
                })?;
            if target.name == node.name {
                return Err(fault(SpecErrorKind::Cycle {
                    path: vec![node.name.clone(), node.name.clone()],
                }));
            }
            let mine = node.op.tieable_weight(blueprint.input_width(node));
            let theirs = target.op.tieable_weight(blueprint.input_width(target));
            match (mine, theirs) {
                (Some(mine), Some(theirs)) if mine == theirs => {}
                (Some(mine), Some(theirs)) => {
                    return Err(fault(SpecErrorKind::ShapeMismatch {
                        op: "tie".into(),
                        message: format!(
                            "weight [{}, {}] cannot share `{}`'s weight [{}, {}]",
                            mine[0], mine[1], target.name, theirs[0], theirs[1]
                        ),
                    }))
                }
                _ => {
                    return Err(fault(SpecErrorKind::InvalidAttribute {
                        attribute: "tie".into(),
                        message: format!(
                            "`{}` ({}) has no weight to share",
                            target.name,
                            target.op.name()
                        ),
                    }))
                }
            }
            // Reject loops of ties (a -> b -> a), which would own no weight.
            let mut seen = vec![node.name.clone()];
            let mut current = target;
            while let Some(next) = current.op.tie().and_then(|name| blueprint.node(name)) {
                seen.push(current.name.clone());
                if seen.contains(&next.name) {
                    seen.push(next.name.clone());
                    return Err(fault(SpecErrorKind::Cycle { path: seen }));
                }
                current = next;
            }
        }
        Ok(())
    }

    /// Kahn's algorithm with declaration order breaking ties; on a cycle,
    /// reports one actual loop of names.
    fn topological_order(&self, pending: &[Pending]) -> Result<Vec<usize>, Box<SpecError>> {
        let position: HashMap<&str, usize> = pending
            .iter()
            .enumerate()
            .map(|(index, item)| (item.name.as_str(), index))
            .collect();
        let mut consumers: Vec<Vec<usize>> = vec![Vec::new(); pending.len()];
        let mut waiting: Vec<usize> = vec![0; pending.len()];
        for (index, item) in pending.iter().enumerate() {
            for (input, _) in &item.inputs {
                consumers[position[input.as_str()]].push(index);
                waiting[index] += 1;
            }
        }
        let mut ready: BinaryHeap<Reverse<(Order, usize)>> = pending
            .iter()
            .enumerate()
            .filter(|(index, _)| waiting[*index] == 0)
            .map(|(index, item)| Reverse((item.order, index)))
            .collect();
        let mut order = Vec::with_capacity(pending.len());
        while let Some(Reverse((_, index))) = ready.pop() {
            order.push(index);
            for consumer in &consumers[index] {
                waiting[*consumer] -= 1;
                if waiting[*consumer] == 0 {
                    ready.push(Reverse((pending[*consumer].order, *consumer)));
                }
            }
        }
        if order.len() == pending.len() {
            return Ok(order);
        }
        // Walk backwards along unfinished inputs until a node repeats.
        let start = (0..pending.len())
            .filter(|index| waiting[*index] > 0)
            .min_by_key(|index| pending[*index].order)
            .expect("some node is unfinished");
        let mut path = vec![start];
        let mut current = start;
        loop {
            let next = pending[current]
                .inputs
                .iter()
                .map(|(name, _)| position[name.as_str()])
                .find(|input| waiting[*input] > 0)
                .expect("an unfinished node has an unfinished input");
            if let Some(at) = path.iter().position(|seen| *seen == next) {
                let mut cycle: Vec<usize> = path[at..].to_vec();
                // Data-flow direction, starting at the node declared first.
                cycle.reverse();
                let earliest = (0..cycle.len())
                    .min_by_key(|at| pending[cycle[*at]].order)
                    .expect("a cycle has nodes");
                cycle.rotate_left(earliest);
                let first = cycle[0];
                let mut names: Vec<String> = cycle
                    .iter()
                    .map(|index| pending[*index].name.clone())
                    .collect();
                names.push(pending[first].name.clone());
                let node = &pending[first];
                return Err(self.error(
                    node.spec.name.span.clone(),
                    Some(&node.name),
                    SpecErrorKind::Cycle { path: names },
                ));
            }
            path.push(next);
            current = next;
        }
    }
}
