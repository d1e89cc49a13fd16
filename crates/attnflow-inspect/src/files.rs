//! Everything an inspection writes into its output folder: one heatmap per
//! head, the layers × heads grid, the rollout view (PNG and SVG),
//! `statistics.json`, `rollout.json` and `report.html`. The two JSON files
//! have types here, so whoever reads them back (tests, the web app) reads
//! the same fields the writer wrote.

use std::path::{Path, PathBuf};

use attnflow_core::analysis::HeadStatistics;
use attnflow_report::{HeadSummary, InspectionReport};
use serde::{Deserialize, Serialize};

use crate::analysis::{summary_of, Analysis};
use crate::error::{InspectError, Result};
use crate::source::Inspection;

/// `statistics.json`.
pub const STATISTICS_FILE: &str = "statistics.json";
/// `rollout.json`.
pub const ROLLOUT_FILE: &str = "rollout.json";
/// `report.html`.
pub const REPORT_FILE: &str = "report.html";
/// `attention.safetensors` (written on request): the raw maps.
pub const WEIGHTS_FILE: &str = "attention.safetensors";

/// `statistics.json`: every head's statistics.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatisticsDocument {
    /// Where the maps came from.
    pub source: String,
    /// The tokens.
    pub tokens: Vec<String>,
    /// One entry per head, layer by layer.
    pub heads: Vec<HeadStatistics>,
    /// For grouped-query attention, the key/value head each query head
    /// shares.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_groups: Option<Vec<usize>>,
}

/// `rollout.json`: the rollout matrix and the target's relevance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RolloutDocument {
    /// The tokens.
    pub tokens: Vec<String>,
    /// Head fusion: mean, max or min.
    pub fusion: String,
    /// Fraction of each row's lowest weights discarded.
    pub discard_ratio: f64,
    /// The first layer taken into account.
    pub start_layer: usize,
    /// The target token.
    pub target: usize,
    /// The target's row of the rollout.
    pub relevance: Vec<f64>,
    /// Attention flow from the target (absent beyond 64 tokens).
    pub flow: Option<Vec<f64>>,
    /// The rollout matrix, row by row.
    pub rollout: Vec<Vec<f64>>,
}

/// What [`write`] wrote.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Written {
    /// The output folder.
    pub out: PathBuf,
    /// Every file written, relative to `out`.
    pub files: Vec<String>,
}

/// How many files [`write`] writes for `inspection` (for progress bars).
pub fn file_count(inspection: &Inspection) -> usize {
    let maps = inspection.maps.num_layers() * inspection.maps.num_heads();
    // Heatmaps, then grid and rollout in two formats, the report, and the
    // two JSON documents.
    maps + 5 + 2
}

/// Writes every file of `inspection` and `analysis` into `out` (created if
/// missing), each atomically; `on_file` is called after each file.
pub fn write(
    inspection: &Inspection,
    analysis: &Analysis,
    out: &Path,
    mut on_file: impl FnMut(),
) -> Result<Written> {
    std::fs::create_dir_all(out).map_err(|source| InspectError::Io {
        path: out.to_path_buf(),
        source,
    })?;
    let mut files = report(inspection, analysis).write_files(|file| {
        write_file(out, &file.name, &file.bytes).map_err(|error| error.to_string())?;
        on_file();
        Ok(())
    })?;
    let statistics = StatisticsDocument {
        source: inspection.description.clone(),
        tokens: inspection.tokens.clone(),
        heads: analysis.statistics.clone(),
        kv_groups: inspection.kv_groups.clone(),
    };
    let rollout = RolloutDocument {
        tokens: inspection.tokens.clone(),
        fusion: analysis.options.fusion.name().to_string(),
        discard_ratio: analysis.options.discard,
        start_layer: analysis.options.start_layer,
        target: analysis.target,
        relevance: analysis.relevance().to_vec(),
        flow: analysis.flow.clone(),
        rollout: analysis.rollout.iter_rows().map(<[f64]>::to_vec).collect(),
    };
    for (name, text) in [
        (STATISTICS_FILE, to_json(&statistics)),
        (ROLLOUT_FILE, to_json(&rollout)),
    ] {
        write_file(out, name, text.as_bytes())?;
        on_file();
        files.push(name.to_string());
    }
    Ok(Written {
        out: out.to_path_buf(),
        files,
    })
}

/// The pictures and report of an inspection, as `attnflow-report` draws
/// them.
fn report(inspection: &Inspection, analysis: &Analysis) -> InspectionReport {
    let n = inspection.tokens.len();
    let target = analysis.target;
    InspectionReport {
        source: inspection.description.clone(),
        tokens: inspection.tokens.clone(),
        maps: inspection
            .maps
            .layers()
            .iter()
            .map(|heads| heads.iter().map(|map| map.values().to_vec()).collect())
            .collect(),
        heatmaps: analysis.heatmaps.clone(),
        rollout: analysis.rollout.values().to_vec(),
        rollout_settings: analysis.settings(),
        target,
        flow: analysis.flow.clone(),
        statistics: analysis.head_summaries(),
        summary: vec![
            ("source".into(), inspection.description.clone()),
            ("tokens".into(), n.to_string()),
            (
                "layers × heads".into(),
                format!(
                    "{} × {}",
                    inspection.maps.num_layers(),
                    inspection.maps.num_heads()
                ),
            ),
            ("rollout".into(), analysis.settings()),
            (
                "target token".into(),
                format!("{target} “{}”", inspection.tokens[target]),
            ),
        ]
        .into_iter()
        .chain(
            inspection
                .kv_groups
                .as_deref()
                .map(|groups| ("key/value groups".to_string(), describe_groups(groups))),
        )
        .collect(),
        kv_groups: inspection.kv_groups.clone(),
    }
}

/// Which query heads share which key/value head: "heads 0–2 → KV 0, 3–5 →
/// KV 1".
pub fn describe_groups(groups: &[usize]) -> String {
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

/// Writes the raw maps into `out` as [`WEIGHTS_FILE`]: one tensor
/// `attentions` `(layers, heads, n, n)` in f32, Hugging Face's layout of
/// `output_attentions` for one text, which reads back as a weights file
/// ([`crate::read_stack`]). Returns the file's name.
pub fn write_weights(inspection: &Inspection, out: &Path) -> Result<String> {
    let maps = &inspection.maps;
    let (layers, heads, n) = (maps.num_layers(), maps.num_heads(), maps.num_tokens());
    let mut bytes = Vec::with_capacity(layers * heads * n * n * 4);
    for layer in maps.layers() {
        for map in layer {
            bytes.extend(map.values().iter().flat_map(|&v| (v as f32).to_le_bytes()));
        }
    }
    let fault = |error: safetensors::SafeTensorError| {
        InspectError::file(&out.join(WEIGHTS_FILE), error.to_string())
    };
    let view = safetensors::tensor::TensorView::new(
        safetensors::Dtype::F32,
        vec![layers, heads, n, n],
        &bytes,
    )
    .map_err(fault)?;
    let file = safetensors::tensor::serialize([("attentions", view)], None).map_err(fault)?;
    std::fs::create_dir_all(out).map_err(|source| InspectError::Io {
        path: out.to_path_buf(),
        source,
    })?;
    write_file(out, WEIGHTS_FILE, &file)?;
    Ok(WEIGHTS_FILE.to_string())
}

fn to_json(value: &impl Serialize) -> String {
    // These documents hold only numbers and strings: encoding cannot fail.
    format!(
        "{}\n",
        serde_json::to_string_pretty(value).unwrap_or_default()
    )
}

fn write_file(directory: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let path = directory.join(name);
    let io = |source| InspectError::Io {
        path: path.clone(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    attnflow_base::write_atomically(&path, bytes).map_err(io)
}

/// What `attnflow attention inspect` prints: the machine-readable summary.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Where the maps came from.
    pub source: String,
    /// The output folder.
    pub out: PathBuf,
    /// Number of tokens.
    pub tokens: usize,
    /// Layers.
    pub layers: usize,
    /// Heads per layer.
    pub heads: usize,
    /// The target token.
    pub target: usize,
    /// The target token's text.
    pub target_text: String,
    /// The most relevant tokens to the target.
    pub top_relevance: Vec<Relevance>,
    /// Every file written.
    pub files: Vec<String>,
    /// Every head's statistics.
    pub statistics: Vec<HeadStatistics>,
    /// For grouped-query attention, the key/value head of each query head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_groups: Option<Vec<usize>>,
}

/// One token's rollout relevance to the target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Relevance {
    /// The token's position.
    pub token: usize,
    /// The token.
    pub text: String,
    /// Its rollout weight in the target's row.
    pub rollout: f64,
}

impl Summary {
    /// The summary of a written inspection.
    pub fn new(inspection: &Inspection, analysis: &Analysis, written: &Written) -> Self {
        let relevance = analysis.relevance();
        Summary {
            source: inspection.description.clone(),
            out: written.out.clone(),
            tokens: inspection.tokens.len(),
            layers: inspection.maps.num_layers(),
            heads: inspection.maps.num_heads(),
            target: analysis.target,
            target_text: inspection.tokens[analysis.target].clone(),
            top_relevance: analysis
                .most_relevant(5)
                .into_iter()
                .map(|token| Relevance {
                    token,
                    text: inspection.tokens[token].clone(),
                    rollout: relevance[token],
                })
                .collect(),
            files: written.files.clone(),
            statistics: analysis.statistics.clone(),
            kv_groups: inspection.kv_groups.clone(),
        }
    }

    /// The summary as people read it: statistics per head, the most
    /// relevant tokens, where the files are.
    pub fn to_text(&self, analysis: &Analysis) -> String {
        use std::fmt::Write as _;
        let mut out = format!(
            "inspected {}: {} tokens, {} layers × {} heads\n",
            self.source, self.tokens, self.layers, self.heads
        );
        if let Some(groups) = &self.kv_groups {
            let _ = writeln!(out, "key/value groups: {}", describe_groups(groups));
        }
        out.push('\n');
        let rows: Vec<Vec<String>> = self
            .statistics
            .iter()
            .map(|s| summary_of(s).cells())
            .collect();
        out.push_str(&attnflow_base::table::table(
            &HeadSummary::HEADERS,
            &rows,
            0,
            attnflow_base::table::Style::Text,
        ));
        let _ = writeln!(
            out,
            "\nrollout ({}), most relevant to token {} “{}”:",
            analysis.settings(),
            self.target,
            self.target_text
        );
        for relevance in &self.top_relevance {
            let flow = analysis
                .flow
                .as_ref()
                .map(|flow| format!("  flow {:.4}", flow[relevance.token]))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  {:>4} {:<14} {:.4}{flow}",
                relevance.token,
                format!("“{}”", relevance.text),
                relevance.rollout
            );
        }
        if analysis.flow.is_none() {
            let _ = writeln!(
                out,
                "  (attention flow skipped: {} tokens > {})",
                self.tokens,
                attnflow_core::analysis::MAX_FLOW_TOKENS
            );
        }
        let _ = writeln!(
            out,
            "\nwrote {} files to {} (open report.html)",
            self.files.len(),
            self.out.display()
        );
        out
    }
}
