//! Data-flow diagrams of a blueprint (§4.1, figure 1): Mermaid flowcharts,
//! Graphviz DOT, and SVG drawn here without Graphviz.
//!
//! A repeated block is drawn once, framed and marked `×L`, unless expanded:
//! a 96-layer model then fits on a page, and the dashed "next layer" edge
//! shows where layer l+1 picks up layer l's output.

use std::collections::HashMap;
use std::fmt::Write;

use crate::cost::{node_cost, CostOptions};
use crate::graph::Blueprint;
use crate::ops::{Activation, Mask, Op, PositionalKind};
use crate::render::si;

/// What to draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DiagramOptions {
    /// Draw every layer of repeated blocks instead of one framed copy.
    pub expand: bool,
    /// Show output shapes on nodes.
    pub shapes: bool,
    /// Show parameters and forward FLOPs on nodes, counted this way.
    pub cost: Option<CostOptions>,
}

/// An edge of the drawing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    /// Source node index.
    pub from: usize,
    /// Target node index.
    pub to: usize,
    /// The edge of a collapsed block that carries layer l's output to layer l+1.
    pub next_layer: bool,
    /// A shared weight, not a data flow.
    pub tied: bool,
}

/// A box of the drawing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Box {
    /// Identifier safe in every output format.
    pub id: String,
    /// Text lines: name, op, then optional shape and cost.
    pub lines: Vec<String>,
    /// The op name (for colour).
    pub op: String,
    /// Index into [`Drawing::groups`].
    pub group: Option<usize>,
}

/// A blueprint prepared for drawing: boxes, frames and edges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drawing {
    /// The model's name.
    pub title: String,
    /// Boxes in topological order.
    pub boxes: Vec<Box>,
    /// Frame labels (`block ×12`, or `block.3` when expanded).
    pub groups: Vec<String>,
    /// Edges, without duplicates.
    pub edges: Vec<Edge>,
}

fn op_detail(op: &Op) -> String {
    let activation_name = |function: &Activation| function.name().to_string();
    match op {
        Op::Input { element, .. } => format!("input ({})", format!("{element:?}").to_lowercase()),
        Op::Embedding { vocab, tie, .. } => match tie {
            Some(tie) => format!("embedding {vocab} (tied to {tie})"),
            None => format!("embedding {vocab}"),
        },
        Op::Positional { kind, .. } => format!(
            "positional ({})",
            match kind {
                PositionalKind::Learned => "learned",
                PositionalKind::Sinusoidal => "sinusoidal",
                PositionalKind::Rotary => "rotary",
            }
        ),
        Op::Linear { out, tie, .. } | Op::Head { out, tie, .. } => {
            let tied = tie
                .as_ref()
                .map(|tie| format!(", tied to {tie}"))
                .unwrap_or_default();
            format!("{} → {out}{tied}", op.name())
        }
        Op::Attention(attention) => {
            let mut text = format!("attention {}h×{}", attention.heads, attention.head_dim);
            if attention.kv_heads != attention.heads {
                text.push_str(&format!(", {} kv", attention.kv_heads));
            }
            match attention.mask {
                Mask::None => {}
                Mask::Causal => text.push_str(", causal"),
                Mask::Window { size } => text.push_str(&format!(", window {size}")),
            }
            if attention.cross {
                text.push_str(", cross");
            }
            if attention.rotary {
                text.push_str(", rotary");
            }
            text
        }
        Op::FeedForward {
            hidden,
            activation,
            gated,
            ..
        } => format!(
            "feed_forward {hidden} {}{}",
            activation_name(activation),
            if *gated { " gated" } else { "" }
        ),
        Op::Activation { function } => activation_name(function),
        Op::Dropout { p } => format!("dropout {p}"),
        Op::Pool { kind } => format!("pool ({})", format!("{kind:?}").to_lowercase()),
        other => other.name().to_string(),
    }
}

fn shape_text(shape: &[u64]) -> String {
    let parts: Vec<String> = shape.iter().map(u64::to_string).collect();
    format!("[{}]", parts.join(", "))
}

/// Prepares `blueprint` for drawing.
pub fn drawing(blueprint: &Blueprint, options: DiagramOptions) -> Drawing {
    let mut boxes: Vec<Box> = Vec::new();
    let mut groups: Vec<String> = Vec::new();
    let mut group_of: HashMap<String, usize> = HashMap::new();
    // Which box stands for each node.
    let mut representative: Vec<usize> = Vec::with_capacity(blueprint.nodes.len());
    let mut first_layer_box: HashMap<(String, String), usize> = HashMap::new();
    let repeats: HashMap<&str, u64> = blueprint
        .blocks
        .iter()
        .map(|block| (block.name.as_str(), block.repeat))
        .collect();
    for node in &blueprint.nodes {
        let collapsed_key = node
            .block
            .as_ref()
            .filter(|_| !options.expand)
            .map(|position| (position.block.clone(), position.local.clone()));
        if let Some(existing) = collapsed_key
            .as_ref()
            .and_then(|key| first_layer_box.get(key))
        {
            representative.push(*existing);
            continue;
        }
        let group = node.block.as_ref().map(|position| {
            let label = if options.expand {
                format!("{}.{}", position.block, position.layer)
            } else {
                format!("{} ×{}", position.block, repeats[position.block.as_str()])
            };
            *group_of.entry(label.clone()).or_insert_with(|| {
                groups.push(label);
                groups.len() - 1
            })
        });
        let title = match (&node.block, options.expand) {
            (Some(position), false) => position.local.clone(),
            _ => node.name.clone(),
        };
        let mut lines = vec![title, op_detail(&node.op)];
        if options.shapes {
            lines.push(shape_text(&node.shape));
        }
        if let Some(cost_options) = options.cost {
            let cost = node_cost(blueprint, node, cost_options);
            let per_layer = if collapsed_key.is_some() {
                " per layer"
            } else {
                ""
            };
            lines.push(format!(
                "{} params · {}FLOPs{per_layer}",
                si(cost.params),
                si(cost.forward_flops).trim_end().to_string() + " "
            ));
        }
        let index = boxes.len();
        boxes.push(Box {
            id: format!("n{index}"),
            lines,
            op: node.op.name().to_string(),
            group,
        });
        if let Some(key) = collapsed_key {
            first_layer_box.insert(key, index);
        }
        representative.push(index);
    }
    let mut edges: Vec<Edge> = Vec::new();
    let mut push = |edge: Edge| {
        if edge.from != edge.to
            && !edges
                .iter()
                .any(|seen| seen.from == edge.from && seen.to == edge.to)
        {
            edges.push(edge);
        }
    };
    for (index, node) in blueprint.nodes.iter().enumerate() {
        for input in &node.inputs {
            let source = blueprint.position(input).expect("checked input");
            let source_node = &blueprint.nodes[source];
            let next_layer = !options.expand
                && match (&source_node.block, &node.block) {
                    (Some(from), Some(to)) => from.block == to.block && from.layer != to.layer,
                    _ => false,
                };
            push(Edge {
                from: representative[source],
                to: representative[index],
                next_layer,
                tied: false,
            });
        }
        if let Some(tie) = node.op.tie() {
            let target = node
                .block
                .as_ref()
                .map(|position| format!("{}.{}.{}", position.block, position.layer, tie))
                .and_then(|name| blueprint.position(&name))
                .or_else(|| blueprint.position(tie));
            if let Some(target) = target {
                push(Edge {
                    from: representative[target],
                    to: representative[index],
                    next_layer: false,
                    tied: true,
                });
            }
        }
    }
    Drawing {
        title: blueprint.name.clone(),
        boxes,
        groups,
        edges,
    }
}

fn mermaid_text(text: &str) -> String {
    text.replace('&', "#amp;")
        .replace('"', "#quot;")
        .replace('<', "#lt;")
        .replace('>', "#gt;")
}

/// A Mermaid flowchart.
pub fn mermaid(drawing: &Drawing) -> String {
    let mut out = String::from("flowchart TD\n");
    let node_line = |item: &Box| {
        let label: Vec<String> = item.lines.iter().map(|line| mermaid_text(line)).collect();
        format!("{}[\"{}\"]", item.id, label.join("<br/>"))
    };
    for item in drawing.boxes.iter().filter(|item| item.group.is_none()) {
        let _ = writeln!(out, "    {}", node_line(item));
    }
    for (group_index, label) in drawing.groups.iter().enumerate() {
        let _ = writeln!(
            out,
            "    subgraph g{group_index}[\"{}\"]",
            mermaid_text(label)
        );
        for item in drawing
            .boxes
            .iter()
            .filter(|item| item.group == Some(group_index))
        {
            let _ = writeln!(out, "        {}", node_line(item));
        }
        out.push_str("    end\n");
    }
    for edge in &drawing.edges {
        let (from, to) = (&drawing.boxes[edge.from].id, &drawing.boxes[edge.to].id);
        let _ = if edge.tied {
            writeln!(out, "    {from} -. tied weight .- {to}")
        } else if edge.next_layer {
            writeln!(out, "    {from} -. next layer .-> {to}")
        } else {
            writeln!(out, "    {from} --> {to}")
        };
    }
    out
}

fn dot_text(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"")
}

fn fill(op: &str) -> &'static str {
    match op {
        "input" => "#e8e8e8",
        "attention" => "#fde2c4",
        "layer_norm" | "rms_norm" => "#d9f0d3",
        "linear" | "head" | "feed_forward" | "matmul" | "patch_embedding" => "#d6e4f5",
        "embedding" | "positional" | "class_token" => "#efe0f5",
        _ => "#fbfbfb",
    }
}

/// A Graphviz DOT digraph.
pub fn dot(drawing: &Drawing) -> String {
    let mut out = format!(
        "digraph \"{}\" {{\n    rankdir=TB;\n    node [shape=box, style=\"rounded,filled\", fontname=\"Helvetica\", fontsize=10];\n    edge [fontname=\"Helvetica\", fontsize=9];\n",
        dot_text(&drawing.title)
    );
    let node_line = |item: &Box| {
        format!(
            "{} [label=\"{}\", fillcolor=\"{}\"];",
            item.id,
            item.lines
                .iter()
                .map(|line| dot_text(line))
                .collect::<Vec<_>>()
                .join("\\n"),
            fill(&item.op)
        )
    };
    for item in drawing.boxes.iter().filter(|item| item.group.is_none()) {
        let _ = writeln!(out, "    {}", node_line(item));
    }
    for (group_index, label) in drawing.groups.iter().enumerate() {
        let _ = writeln!(
            out,
            "    subgraph cluster_{group_index} {{\n        label=\"{}\";\n        style=dashed;",
            dot_text(label)
        );
        for item in drawing
            .boxes
            .iter()
            .filter(|item| item.group == Some(group_index))
        {
            let _ = writeln!(out, "        {}", node_line(item));
        }
        out.push_str("    }\n");
    }
    for edge in &drawing.edges {
        let (from, to) = (&drawing.boxes[edge.from].id, &drawing.boxes[edge.to].id);
        let _ = if edge.tied {
            writeln!(
                out,
                "    {from} -> {to} [style=dotted, arrowhead=none, label=\"tied weight\", constraint=false];"
            )
        } else if edge.next_layer {
            writeln!(
                out,
                "    {from} -> {to} [style=dashed, label=\"next layer\", constraint=false];"
            )
        } else {
            writeln!(out, "    {from} -> {to};")
        };
    }
    out.push_str("}\n");
    out
}

fn xml_text(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const CHARACTER_WIDTH: f64 = 7.0;
const LINE_HEIGHT: f64 = 15.0;
const PADDING: f64 = 10.0;
const ROW_GAP: f64 = 34.0;
const COLUMN_GAP: f64 = 24.0;
const MARGIN: f64 = 30.0;
/// Room on the left for edges that skip rows (residual connections).
const SKIP_LANE: f64 = 60.0;

/// A self-contained SVG: boxes layered top to bottom by longest path from
/// the inputs, frames around repeated blocks, straight arrows for data, a
/// dashed arc on the right for "next layer", dotted lines for tied weights.
pub fn svg(drawing: &Drawing) -> String {
    let count = drawing.boxes.len();
    // Boxes are in topological order and every data edge that is not a
    // "next layer" edge points forward, so one pass gives longest-path ranks.
    let mut rank = vec![0usize; count];
    for index in 0..count {
        for edge in drawing
            .edges
            .iter()
            .filter(|edge| edge.to == index && !edge.next_layer && !edge.tied)
        {
            if edge.from < edge.to {
                rank[index] = rank[index].max(rank[edge.from] + 1);
            }
        }
    }
    let rows = rank.iter().copied().max().map_or(0, |max| max + 1);
    let size = |item: &Box| {
        let widest = item
            .lines
            .iter()
            .map(|line| line.chars().count())
            .max()
            .unwrap_or(1) as f64;
        (
            widest * CHARACTER_WIDTH + 2.0 * PADDING,
            item.lines.len() as f64 * LINE_HEIGHT + PADDING,
        )
    };
    let sizes: Vec<(f64, f64)> = drawing.boxes.iter().map(size).collect();
    let mut row_members: Vec<Vec<usize>> = vec![Vec::new(); rows];
    for (index, row) in rank.iter().enumerate() {
        row_members[*row].push(index);
    }
    let row_widths: Vec<f64> = row_members
        .iter()
        .map(|members| {
            members.iter().map(|index| sizes[*index].0).sum::<f64>()
                + COLUMN_GAP * members.len().saturating_sub(1) as f64
        })
        .collect();
    let content_width = row_widths.iter().copied().fold(200.0, f64::max);
    let mut position = vec![(0.0f64, 0.0f64); count];
    let mut y = MARGIN + 30.0;
    for (row, members) in row_members.iter().enumerate() {
        let height = members
            .iter()
            .map(|index| sizes[*index].1)
            .fold(0.0, f64::max);
        let mut x = MARGIN + SKIP_LANE + (content_width - row_widths[row]) / 2.0;
        for index in members {
            position[*index] = (x, y);
            x += sizes[*index].0 + COLUMN_GAP;
        }
        y += height + ROW_GAP;
    }
    let width = content_width + 2.0 * MARGIN + SKIP_LANE + 80.0;
    let height = y + MARGIN;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" viewBox=\"0 0 {width:.0} {height:.0}\" font-family=\"Helvetica, Arial, sans-serif\" font-size=\"11\">\n\
<defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto-start-reverse\"><path d=\"M 0 0 L 10 5 L 0 10 z\" fill=\"#555\"/></marker></defs>\n\
<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
<text x=\"{MARGIN}\" y=\"{:.0}\" font-size=\"14\" font-weight=\"bold\">{}</text>\n",
        MARGIN + 4.0,
        xml_text(&drawing.title)
    );
    let mut group_labels: Vec<String> = Vec::new();
    for (group_index, label) in drawing.groups.iter().enumerate() {
        let members: Vec<usize> = (0..count)
            .filter(|index| drawing.boxes[*index].group == Some(group_index))
            .collect();
        if members.is_empty() {
            continue;
        }
        let left = members
            .iter()
            .map(|index| position[*index].0)
            .fold(f64::MAX, f64::min)
            - 12.0;
        let top = members
            .iter()
            .map(|index| position[*index].1)
            .fold(f64::MAX, f64::min)
            - 22.0;
        let right = members
            .iter()
            .map(|index| position[*index].0 + sizes[*index].0)
            .fold(f64::MIN, f64::max)
            + 12.0;
        let bottom = members
            .iter()
            .map(|index| position[*index].1 + sizes[*index].1)
            .fold(f64::MIN, f64::max)
            + 10.0;
        let _ = writeln!(
            out,
            "<rect x=\"{left:.1}\" y=\"{top:.1}\" width=\"{:.1}\" height=\"{:.1}\" rx=\"8\" fill=\"none\" stroke=\"#888\" stroke-dasharray=\"6 4\"/>",
            right - left,
            bottom - top,
        );
        // Labels go on top of the edges, on a white backing, once edges are drawn.
        group_labels.push(format!(
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"15\" fill=\"white\"/>\n<text x=\"{:.1}\" y=\"{:.1}\" font-weight=\"bold\" fill=\"#444\">{}</text>",
            left + 4.0,
            top + 3.0,
            label.chars().count() as f64 * CHARACTER_WIDTH + 8.0,
            left + 8.0,
            top + 15.0,
            xml_text(label)
        ));
    }
    for edge in &drawing.edges {
        let (from_x, from_y) = position[edge.from];
        let (to_x, to_y) = position[edge.to];
        let (from_width, from_height) = sizes[edge.from];
        let (to_width, to_height) = sizes[edge.to];
        if edge.next_layer {
            let start = (from_x + from_width, from_y + from_height / 2.0);
            let end = (to_x + to_width, to_y + to_height / 2.0);
            let bulge = start.0.max(end.0) + 50.0;
            let _ = writeln!(
                out,
                "<path d=\"M {:.1} {:.1} C {bulge:.1} {:.1}, {bulge:.1} {:.1}, {:.1} {:.1}\" fill=\"none\" stroke=\"#555\" stroke-dasharray=\"5 3\" marker-end=\"url(#arrow)\"/>\n<text x=\"{:.1}\" y=\"{:.1}\" fill=\"#555\" font-size=\"10\">next layer</text>",
                start.0,
                start.1,
                start.1,
                end.1,
                end.0,
                end.1,
                bulge - 20.0,
                (start.1 + end.1) / 2.0
            );
        } else if edge.tied {
            let _ = writeln!(
                out,
                "<line x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#999\" stroke-dasharray=\"2 3\"/>",
                from_x,
                from_y + from_height / 2.0,
                to_x,
                to_y + to_height / 2.0
            );
        } else if rank[edge.to] > rank[edge.from] + 1 {
            // A skip over rows (a residual connection): route it round the
            // left so that it does not hide behind the boxes in between.
            let span = 18.0 + 8.0 * ((rank[edge.to] - rank[edge.from]) as f64).min(5.0);
            let from_center = from_x + from_width / 2.0;
            let to_center = to_x + to_width / 2.0;
            // Clear the boxes on the rows in between, not just the two ends.
            let between: Vec<usize> = (0..count)
                .filter(|index| rank[*index] > rank[edge.from] && rank[*index] < rank[edge.to])
                .collect();
            let (start, end, lane) = if from_center > to_center + 1.0 {
                // Coming from the right: go round the right-hand side.
                let start = (from_x + from_width, from_y + from_height * 0.7);
                let end = (to_x + to_width, to_y + to_height * 0.3);
                let edge_of_boxes = between
                    .iter()
                    .map(|index| position[*index].0 + sizes[*index].0)
                    .fold(start.0.max(end.0), f64::max);
                (start, end, edge_of_boxes + span)
            } else {
                let start = (from_x, from_y + from_height * 0.7);
                let end = (to_x, to_y + to_height * 0.3);
                let edge_of_boxes = between
                    .iter()
                    .map(|index| position[*index].0)
                    .fold(start.0.min(end.0), f64::min);
                (start, end, edge_of_boxes - span)
            };
            let _ = writeln!(
                out,
                "<path d=\"M {:.1} {:.1} C {lane:.1} {:.1}, {lane:.1} {:.1}, {:.1} {:.1}\" fill=\"none\" stroke=\"#555\" marker-end=\"url(#arrow)\"/>",
                start.0, start.1, start.1, end.1, end.0, end.1
            );
        } else {
            let _ = writeln!(
                out,
                "<line x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#555\" marker-end=\"url(#arrow)\"/>",
                from_x + from_width / 2.0,
                from_y + from_height,
                to_x + to_width / 2.0,
                to_y
            );
        }
    }
    for label in &group_labels {
        out.push_str(label);
        out.push('\n');
    }
    for (index, item) in drawing.boxes.iter().enumerate() {
        let (x, y) = position[index];
        let (box_width, box_height) = sizes[index];
        let _ = writeln!(
            out,
            "<g id=\"{}\"><rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{box_width:.1}\" height=\"{box_height:.1}\" rx=\"5\" fill=\"{}\" stroke=\"#444\"/>",
            item.id,
            fill(&item.op)
        );
        for (line_index, line) in item.lines.iter().enumerate() {
            let weight = if line_index == 0 {
                " font-weight=\"bold\""
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\"{weight}>{}</text>",
                x + box_width / 2.0,
                y + PADDING / 2.0 + LINE_HEIGHT * (line_index as f64 + 0.8),
                xml_text(line)
            );
        }
        out.push_str("</g>\n");
    }
    out.push_str("</svg>\n");
    out
}

/// Figure 1 (§3.2): the inside of one attention node — projections, scaled
/// scores, mask, softmax (whose output is returned as the attention
/// weights), weighted values, heads concatenated, output projection — with
/// the shape of every intermediate.
pub fn attention_drawing(blueprint: &Blueprint, name: &str) -> crate::Result<Drawing> {
    let node = blueprint.node(name).ok_or_else(|| {
        let hint =
            crate::ops::suggestion(name, blueprint.nodes.iter().map(|node| node.name.as_str()));
        crate::Error::Request(format!("--node {name}: no node of that name{hint}"))
    })?;
    let Op::Attention(attention) = &node.op else {
        return Err(crate::Error::Request(format!(
            "--node {name}: `{name}` is a `{}` node; figure 1 draws attention nodes",
            node.op.name()
        )));
    };
    let query = blueprint.node(&node.inputs[0]).expect("checked input");
    let memory = blueprint
        .node(node.inputs.get(1).unwrap_or(&node.inputs[0]))
        .expect("checked input");
    let rank = query.shape.len();
    let batch = &query.shape[..rank - 2];
    let (queries, keys) = (query.shape[rank - 2], memory.shape[rank - 2]);
    let shape = |tail: &[u64]| shape_text(&batch.iter().chain(tail).copied().collect::<Vec<_>>());
    let (heads, kv_heads, head_dim) = (attention.heads, attention.kv_heads, attention.head_dim);
    let rotary = |text: &str| {
        if attention.rotary {
            format!("rotary({text})")
        } else {
            text.to_string()
        }
    };
    let mut boxes: Vec<Box> = Vec::new();
    let mut add = |lines: Vec<String>, op: &str, group: Option<usize>| {
        boxes.push(Box {
            id: format!("n{}", boxes.len()),
            lines,
            op: op.to_string(),
            group,
        });
        boxes.len() - 1
    };
    let x = add(
        vec![format!("X = {}", query.name), shape_text(&query.shape)],
        "input",
        None,
    );
    let m = if attention.cross {
        add(
            vec![format!("M = {}", memory.name), shape_text(&memory.shape)],
            "input",
            None,
        )
    } else {
        x
    };
    let source = if attention.cross { "M" } else { "X" };
    let q = add(
        vec![
            format!("Q = {}", rotary("X W_Q")),
            shape(&[queries, heads, head_dim]),
        ],
        "linear",
        None,
    );
    let k = add(
        vec![
            format!("K = {}", rotary(&format!("{source} W_K"))),
            shape(&[keys, kv_heads, head_dim]),
        ],
        "linear",
        None,
    );
    let v = add(
        vec![
            format!("V = {source} W_V"),
            shape(&[keys, kv_heads, head_dim]),
        ],
        "linear",
        None,
    );
    let group = Some(0);
    let scores = add(
        vec![
            "S = Q Kᵀ / √d_k".into(),
            format!("d_k = {head_dim}"),
            shape(&[heads, queries, keys]),
        ],
        "matmul",
        group,
    );
    let masked = match attention.mask {
        Mask::None => None,
        Mask::Causal => Some(add(
            vec!["mask: causal".into(), "S_ij = −∞ for j > i".into()],
            "mask",
            group,
        )),
        Mask::Window { size } => Some(add(
            vec![
                format!("mask: window {size}"),
                format!("S_ij = −∞ unless i−{size} < j ≤ i"),
            ],
            "mask",
            group,
        )),
    };
    let weights = add(
        vec![
            "A = softmax(S) by rows".into(),
            shape(&[heads, queries, keys]),
            "returned as the weights".into(),
        ],
        "attention",
        group,
    );
    let context = add(
        vec!["A V".into(), shape(&[heads, queries, head_dim])],
        "matmul",
        group,
    );
    let concat = add(
        vec!["concat heads".into(), shape(&[queries, heads * head_dim])],
        "concat",
        None,
    );
    let output = add(
        vec![
            format!("{} = concat · W_O", node.name),
            shape_text(&node.shape),
        ],
        "linear",
        None,
    );
    let mut edges = Vec::new();
    let mut link = |from: usize, to: usize| {
        edges.push(Edge {
            from,
            to,
            next_layer: false,
            tied: false,
        })
    };
    link(x, q);
    link(m, k);
    link(m, v);
    link(q, scores);
    link(k, scores);
    match masked {
        Some(mask) => {
            link(scores, mask);
            link(mask, weights);
        }
        None => link(scores, weights),
    }
    link(weights, context);
    link(v, context);
    link(context, concat);
    link(concat, output);
    let mut group_label = format!("each of {heads} heads");
    if kv_heads != heads {
        group_label.push_str(&format!(
            " ({} share each key/value head)",
            heads / kv_heads
        ));
    }
    Ok(Drawing {
        title: format!("{}: {} (figure 1)", blueprint.name, node.name),
        boxes,
        groups: vec![group_label],
        edges,
    })
}
