//! Human-readable renderings of accounts, summaries and scaling reports:
//! aligned text tables for terminals and Markdown tables for documents.
//! Machines read the JSON (every type here is `Serialize`).

use std::collections::BTreeMap;

use crate::cost::{Account, Cost};
use crate::inference::Inference;
use crate::receptive::Summary;
use crate::scale::{Fit, ScaleReport};

pub use attnflow_base::table::{table, Style};

/// `124439808` → `124,439,808`.
pub fn grouped(value: u128) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// Three significant digits with a decimal prefix: `2.90 G`.
pub fn si(value: u128) -> String {
    const PREFIXES: [&str; 7] = ["", "k", "M", "G", "T", "P", "E"];
    if value < 1000 {
        return value.to_string();
    }
    let mut scaled = value as f64;
    let mut prefix = 0;
    while scaled >= 999.5 && prefix < PREFIXES.len() - 1 {
        scaled /= 1000.0;
        prefix += 1;
    }
    let decimals = if scaled >= 99.95 {
        0
    } else if scaled >= 9.995 {
        1
    } else {
        2
    };
    format!("{scaled:.decimals$} {}", PREFIXES[prefix])
}

/// Bytes with a binary prefix: `1.50 MiB`.
pub fn bytes(value: u128) -> String {
    const PREFIXES: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut scaled = value as f64;
    let mut prefix = 0;
    while scaled >= 1024.0 && prefix < PREFIXES.len() - 1 {
        scaled /= 1024.0;
        prefix += 1;
    }
    if prefix == 0 {
        format!("{value} B")
    } else {
        format!("{scaled:.2} {}", PREFIXES[prefix])
    }
}

/// One line saying a blueprint checked: name, file, nodes, blocks,
/// parameters, input and output shapes.
pub fn check_line(blueprint: &crate::Blueprint) -> String {
    let total = crate::account(blueprint, crate::CostOptions::default()).total;
    let tensors = |list: Vec<&crate::Node>| {
        list.iter()
            .map(|node| format!("{} {:?}", node.name, node.shape))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let blocks: Vec<String> = blueprint
        .blocks
        .iter()
        .map(|block| format!("{} ×{}", block.name, block.repeat))
        .collect();
    format!(
        "ok: {} ({}): {} nodes{}, {} parameters; inputs {}; outputs {}",
        blueprint.name,
        blueprint.file,
        blueprint.nodes.len(),
        if blocks.is_empty() {
            String::new()
        } else {
            format!(" (blocks {})", blocks.join(", "))
        },
        grouped(total.params),
        tensors(blueprint.inputs().collect()),
        tensors(blueprint.outputs()),
    )
}

fn shape_text(shape: &[u64]) -> String {
    let parts: Vec<String> = shape.iter().map(u64::to_string).collect();
    format!("[{}]", parts.join(", "))
}

fn cost_cells(cost: &Cost) -> Vec<String> {
    vec![
        grouped(cost.params),
        si(cost.macs),
        si(cost.forward_flops),
        si(cost.flops.mul),
        si(cost.flops.add),
        si(cost.flops.exp),
        si(cost.flops.div),
        si(cost.flops.compare),
        si(cost.flops.sqrt),
        bytes(cost.activation_bytes),
    ]
}

/// The account as a table: one row per node, or, unless `expand`, one row
/// per node of a repeated block summed over its layers (`h.*.attn ×12`).
pub fn account_table(account: &Account, expand: bool, style: Style) -> String {
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut grouped_rows: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut sums: Vec<(Cost, u64)> = Vec::new();
    for node in &account.nodes {
        match (&node.block, expand) {
            (Some(position), false) => {
                let key = (position.block.clone(), position.local.clone());
                if let Some(index) = grouped_rows.get(&key) {
                    sums[*index].0 += node.cost;
                    sums[*index].1 += 1;
                    continue;
                }
                grouped_rows.insert(key, rows.len());
                rows.push(vec![
                    format!("{}.*.{}", position.block, position.local),
                    node.op.clone(),
                    shape_text(&node.shape),
                ]);
                sums.push((node.cost, 1));
            }
            _ => {
                rows.push(vec![
                    node.name.clone(),
                    node.op.clone(),
                    shape_text(&node.shape),
                ]);
                sums.push((node.cost, 1));
            }
        }
    }
    for (row, (cost, layers)) in rows.iter_mut().zip(&sums) {
        if *layers > 1 {
            row[0] = format!("{} ×{layers}", row[0]);
        }
        row.extend(cost_cells(cost));
    }
    let mut total = vec!["total".to_string(), String::new(), String::new()];
    total.extend(cost_cells(&account.total));
    rows.push(total);
    let headers = [
        "node",
        "op",
        "shape",
        "params",
        "MACs",
        "FLOPs",
        "mul",
        "add",
        "exp",
        "div",
        "cmp",
        "sqrt",
        "activations",
    ];
    let dims: Vec<String> = account
        .dims
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    let title = format!(
        "{}: convention {}, attention counted {}, activations in {}\ndims: {}\n",
        account.model,
        account.options.convention.name(),
        match account.options.counting {
            crate::cost::Counting::Dense => "dense",
            crate::cost::Counting::Exact => "exactly (masked entries skipped)",
        },
        match account.options.dtype {
            crate::cost::Dtype::F64 => "f64",
            crate::cost::Dtype::F32 => "f32",
            crate::cost::Dtype::F16 => "f16",
            crate::cost::Dtype::Bf16 => "bf16",
        },
        dims.join(" ")
    );
    let footer = format!(
        "parameters {} · forward {} FLOPs ({} MACs) · training {} FLOPs · activations {}\n",
        grouped(account.total.params),
        grouped(account.total.forward_flops),
        grouped(account.total.macs),
        grouped(account.total.training_flops),
        bytes(account.total.activation_bytes)
    );
    let body = table(&headers, &rows, 3, style);
    match style {
        Style::Text => format!("{title}\n{body}\n{footer}"),
        Style::Markdown => format!("{}\n{body}\n{footer}", title.replace('\n', "  \n")),
    }
}

/// The inference arithmetic as a two-column table.
pub fn inference_table(inference: &Inference, style: Style) -> String {
    let dtype = match inference.options.dtype {
        crate::cost::Dtype::F64 => "f64",
        crate::cost::Dtype::F32 => "f32",
        crate::cost::Dtype::F16 => "f16",
        crate::cost::Dtype::Bf16 => "bf16",
    };
    let rows = vec![
        vec!["parameters".to_string(), grouped(inference.params)],
        vec![
            format!("prefill FLOPs per token ({} tokens)", inference.prompt),
            si(inference.prefill_flops_per_token),
        ],
        vec![
            format!("decode FLOPs per token (context {})", inference.context),
            si(inference.decode_flops_per_token),
        ],
        vec![
            format!(
                "KV cache per token ({} layers, {dtype})",
                inference.cached_layers
            ),
            bytes(inference.kv_cache_bytes_per_token),
        ],
        vec![
            format!("KV cache at context {}", inference.context),
            bytes(inference.kv_cache_bytes),
        ],
        vec![format!("weights ({dtype})"), bytes(inference.weight_bytes)],
        vec![
            format!("memory at context {}", inference.context),
            bytes(inference.memory_bytes),
        ],
    ];
    format!(
        "inference ({}, {} convention, per sequence)\n{}",
        inference.model,
        inference.options.convention.name(),
        table(&["quantity", "value"], &rows, 1, style)
    )
}

/// `M = (I, O, F, R)` as text.
pub fn summary_text(summary: &Summary, style: Style) -> String {
    let mut out = format!("{}: M = (I, O, F, R)\n\n", summary.model);
    let tensors = |title: &str, list: &[crate::receptive::TensorSummary]| {
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|tensor| {
                vec![
                    tensor.name.clone(),
                    shape_text(&tensor.shape),
                    format!("{:?}", tensor.element).to_lowercase(),
                ]
            })
            .collect();
        format!(
            "{title}\n{}\n",
            table(&["node", "shape", "element"], &rows, 3, style)
        )
    };
    out.push_str(&tensors("I (inputs)", &summary.inputs));
    out.push_str(&tensors("O (outputs)", &summary.outputs));
    let steps: Vec<Vec<String>> = summary
        .forward
        .iter()
        .enumerate()
        .map(|(index, step)| {
            vec![
                (index + 1).to_string(),
                step.name.clone(),
                step.op.clone(),
                step.inputs.join(", "),
                shape_text(&step.shape),
            ]
        })
        .collect();
    out.push_str(&format!(
        "F (forward graph, topological order)\n{}\n",
        table(&["#", "node", "op", "inputs", "shape"], &steps, 5, style)
    ));
    let receptive: Vec<Vec<String>> = summary
        .receptive
        .iter()
        .map(|entry| {
            vec![
                entry.output.clone(),
                entry.input.clone(),
                entry.reach.describe(),
                grouped(entry.length.into()),
                grouped(entry.seen_by_first.into()),
                grouped(entry.seen_by_last.into()),
            ]
        })
        .collect();
    out.push_str(&format!(
        "R (receptive field: input positions reaching an output position)\n{}",
        table(
            &[
                "output",
                "input",
                "reach of position i",
                "length",
                "first sees",
                "last sees"
            ],
            &receptive,
            3,
            style
        )
    ));
    out
}

fn fit_text(name: &str, fit: &Option<Fit>) -> String {
    match fit {
        Some(fit) => format!("{name} ∝ x^{:.3} (R² = {:.4})", fit.exponent, fit.r_squared),
        None => format!("{name}: no fit (needs two distinct positive points)"),
    }
}

/// A scaling report as a table plus the fitted exponents.
pub fn scale_table(report: &ScaleReport, style: Style) -> String {
    let rows: Vec<Vec<String>> = report
        .points
        .iter()
        .map(|point| {
            vec![
                grouped(point.value.into()),
                grouped(point.params),
                si(point.forward_flops),
                si(point.attention_flops),
                si(point.training_flops),
                bytes(point.activation_bytes),
            ]
        })
        .collect();
    let body = table(
        &[
            report.dim.as_str(),
            "params",
            "FLOPs",
            "attention FLOPs",
            "training FLOPs",
            "activations",
        ],
        &rows,
        0,
        style,
    );
    let fits = [
        fit_text("time (forward FLOPs)", &report.time),
        fit_text("attention FLOPs", &report.attention),
        fit_text("memory (activations)", &report.memory),
    ]
    .map(|line| line.replace("x^", &format!("{}^", report.dim)));
    format!(
        "{}: cost over {} (convention {})\n\n{body}\n{}\n",
        report.model,
        report.dim,
        report.options.convention.name(),
        fits.join("\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_formats() {
        assert_eq!(grouped(124_439_808), "124,439,808");
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(100), "100");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(si(999), "999");
        assert_eq!(si(1000), "1.00 k");
        assert_eq!(si(2_903_000_000), "2.90 G");
        assert_eq!(si(999_600), "1.00 M");
        assert_eq!(si(12_345_678), "12.3 M");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.50 KiB");
    }
}
