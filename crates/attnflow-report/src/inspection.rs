//! Everything `attnflow attention inspect` writes, from plain numbers: one
//! heatmap per head, the layers × heads grid, the rollout view, and the
//! HTML report tying them together.
//!
//! The numbers come from `attnflow-core`'s analysis; this module only
//! draws and lays out, so it stays free of the tensor library.

use crate::error::{ReportError, ReportResult};
use crate::figure::{Figure, Heatmap, ImageFormat};
use crate::html::{AttentionExplorer, InlineSvg, KeyValues, Paragraphs, Report, Table};

/// Per-head statistics, as computed by the analysis.
#[derive(Clone, Debug, PartialEq)]
pub struct HeadSummary {
    /// Layer index.
    pub layer: usize,
    /// Head index.
    pub head: usize,
    /// Mean row entropy in nats.
    pub mean_entropy: f64,
    /// Mean attention distance in tokens.
    pub mean_distance: f64,
    /// Mean weight on the first token.
    pub first_token_share: f64,
    /// Mean weight on the query's own position.
    pub diagonal_share: f64,
}

impl HeadSummary {
    /// Column names of [`HeadSummary::cells`].
    pub const HEADERS: [&'static str; 6] = [
        "layer",
        "head",
        "entropy",
        "distance",
        "first token",
        "diagonal",
    ];

    /// The statistics as table cells, in the order of
    /// [`HeadSummary::HEADERS`]: the one rounding every table uses.
    pub fn cells(&self) -> Vec<String> {
        vec![
            self.layer.to_string(),
            self.head.to_string(),
            format!("{:.4}", self.mean_entropy),
            format!("{:.3}", self.mean_distance),
            format!("{:.4}", self.first_token_share),
            format!("{:.4}", self.diagonal_share),
        ]
    }
}

/// A report table of per-head statistics.
pub fn head_table(title: &str, caption: &str, heads: &[HeadSummary]) -> Table {
    Table {
        title: title.into(),
        caption: caption.into(),
        headers: HeadSummary::HEADERS.iter().map(|h| h.to_string()).collect(),
        rows: heads.iter().map(HeadSummary::cells).collect(),
    }
}

/// One inspected input: the maps of every head and what was derived from
/// them.
#[derive(Clone, Debug)]
pub struct InspectionReport {
    /// Where the maps came from (file, or the seeded model's settings).
    pub source: String,
    /// The input tokens.
    pub tokens: Vec<String>,
    /// `maps[layer][head]`: raw weights, `n × n` row-major.
    pub maps: Vec<Vec<Vec<f64>>>,
    /// `heatmaps[layer][head]`: the same maps normalised by §4.2.
    pub heatmaps: Vec<Vec<Vec<f64>>>,
    /// The rollout matrix, `n × n` row-major.
    pub rollout: Vec<f64>,
    /// Rollout settings in words (fusion, discard ratio, start layer).
    pub rollout_settings: String,
    /// The target token whose row is shown.
    pub target: usize,
    /// Attention flow from the target to every input token, when computed.
    pub flow: Option<Vec<f64>>,
    /// Statistics of every head.
    pub statistics: Vec<HeadSummary>,
    /// Settings and facts shown at the top of the report.
    pub summary: Vec<(String, String)>,
    /// For grouped-query attention, the key/value head each query head
    /// reads (`kv_groups[head]`); heatmaps and tables are labelled with it.
    pub kv_groups: Option<Vec<usize>>,
}

/// A file to write: its name inside the output directory and its bytes.
#[derive(Clone, Debug)]
pub struct OutputFile {
    /// Relative path, e.g. `heatmaps/layer-0-head-1.png`.
    pub name: String,
    /// The contents.
    pub bytes: Vec<u8>,
}

impl InspectionReport {
    fn check(&self) -> ReportResult<usize> {
        let n = self.tokens.len();
        let layers = self.maps.len();
        if n == 0 || layers == 0 || self.heatmaps.len() != layers {
            return Err(ReportError::data(
                "inspection",
                "needs tokens, at least one layer, and one heatmap per map",
            ));
        }
        if self.rollout.len() != n * n || self.target >= n {
            return Err(ReportError::data(
                "inspection",
                format!(
                    "rollout has {} values for {n} tokens, target {}",
                    self.rollout.len(),
                    self.target
                ),
            ));
        }
        Ok(n)
    }

    /// How many files [`InspectionReport::write_files`] produces (for progress
    /// bars).
    pub fn file_count(&self) -> usize {
        self.maps.iter().map(Vec::len).sum::<usize>() + 5
    }

    /// Draws every file and hands each to `emit` as soon as it is ready
    /// (so only one image is held at a time), returning the files' names in
    /// order. Consumes the inspection: its maps move into the report
    /// rather than being copied, which matters at 512 tokens × 144 heads.
    /// An `Err` from `emit` stops the work and is returned as
    /// [`ReportError::Output`].
    pub fn write_files(
        mut self,
        mut emit: impl FnMut(OutputFile) -> Result<(), String>,
    ) -> ReportResult<Vec<String>> {
        let n = self.check()?;
        let mut names = Vec::with_capacity(self.file_count());
        let mut send = |file: OutputFile| -> ReportResult<()> {
            let name = file.name.clone();
            emit(file).map_err(|message| ReportError::Output {
                file: name.clone(),
                message,
            })?;
            names.push(name);
            Ok(())
        };
        for (layer, heads) in self.heatmaps.iter().enumerate() {
            for (head, values) in heads.iter().enumerate() {
                let figure = self.head_figure(layer, head, values)?;
                send(OutputFile {
                    name: format!("heatmaps/layer-{layer}-head-{head}.png"),
                    bytes: figure.render(ImageFormat::Png)?,
                })?;
            }
        }
        let grid = self.grid_figure(n)?;
        let rollout = self.rollout_figure(n)?;
        for (name, figure) in [("grid", &grid), ("rollout", &rollout)] {
            for format in [ImageFormat::Png, ImageFormat::Svg] {
                send(OutputFile {
                    name: format!("{name}.{}", format.extension()),
                    bytes: figure.render(format)?,
                })?;
            }
        }
        // The heatmaps are drawn; free them before the report copies the
        // maps into its quantised form.
        self.heatmaps = Vec::new();
        let html = self.report(&grid, &rollout)?.render()?;
        send(OutputFile {
            name: "report.html".into(),
            bytes: html.into_bytes(),
        })?;
        Ok(names)
    }

    /// ", KV 1" for a query head that shares key/value head 1.
    fn group_suffix(&self, head: usize, separator: &str) -> String {
        self.kv_groups
            .as_ref()
            .and_then(|groups| groups.get(head))
            .map_or(String::new(), |group| format!("{separator}KV {group}"))
    }

    fn head_figure(&self, layer: usize, head: usize, values: &[f64]) -> ReportResult<Figure> {
        let n = self.tokens.len();
        let group = self.group_suffix(head, ", ");
        let heatmap = Heatmap::new(
            format!("layer {layer}, head {head}{group}"),
            n,
            n,
            values.to_vec(),
        )?
        .with_labels(self.tokens.clone(), self.tokens.clone())?;
        Ok(Figure::single(
            format!("Attention heatmap (§4.2), layer {layer} head {head}{group}"),
            heatmap,
        )
        .with_scale(0.0, 1.0)
        .with_scale_label("h = a / max a"))
    }

    fn grid_figure(&self, n: usize) -> ReportResult<Figure> {
        let heads = self.heatmaps[0].len();
        let mut panels = Vec::new();
        for (layer, maps) in self.heatmaps.iter().enumerate() {
            for (head, values) in maps.iter().enumerate() {
                panels.push(Heatmap::new(
                    format!("L{layer} H{head}{}", self.group_suffix(head, " ")),
                    n,
                    n,
                    values.clone(),
                )?);
            }
        }
        Ok(Figure::grid(
            format!("Every head (rows: layers, columns: heads), {n} tokens"),
            panels,
            heads,
        )
        .with_scale(0.0, 1.0)
        .with_scale_label("h = a / max a"))
    }

    fn rollout_figure(&self, n: usize) -> ReportResult<Figure> {
        let matrix = Heatmap::new(
            "rollout: output token (row) from input token (column)",
            n,
            n,
            self.rollout.clone(),
        )?
        .with_labels(self.tokens.clone(), self.tokens.clone())?;
        let start = self.target * n;
        let row = Heatmap::new(
            format!("target token {}", self.target),
            1,
            n,
            self.rollout[start..start + n].to_vec(),
        )?
        .with_labels(vec![self.tokens[self.target].clone()], self.tokens.clone())?;
        Ok(Figure::side_by_side(
            format!("Attention rollout ({})", self.rollout_settings),
            vec![matrix, row],
        )
        .with_scale_label("relevance"))
    }

    fn report(&mut self, grid: &Figure, rollout: &Figure) -> ReportResult<Report> {
        let n = self.tokens.len();
        let mut report = Report::new(format!("attnflow inspection: {}", self.source))
            .section(KeyValues {
                title: "Input".into(),
                entries: self.summary.clone(),
            })
            .section(AttentionExplorer {
                title: "Attention by layer and head".into(),
                tokens: self.tokens.clone(),
                maps: std::mem::take(&mut self.maps),
            })
            .section(InlineSvg::render(
                "All heads",
                "Each panel is one head's §4.2 heatmap; rows are layers, columns heads.",
                grid,
            )?)
            .section(InlineSvg::render(
                "Attention rollout",
                format!(
                    "Rollout (Abnar & Zuidema 2020): per layer 0.5·A + 0.5·I with rows renormalised, multiplied from the first layer used to the last; {}.",
                    self.rollout_settings
                ),
                rollout,
            )?);
        let start = self.target * n;
        let mut headers = vec![
            "token".to_string(),
            "text".to_string(),
            "rollout".to_string(),
        ];
        if self.flow.is_some() {
            headers.push("flow".into());
        }
        let rows = (0..n)
            .map(|j| {
                let mut row = vec![
                    j.to_string(),
                    self.tokens[j].clone(),
                    format!("{:.6}", self.rollout[start + j]),
                ];
                if let Some(flow) = &self.flow {
                    row.push(format!("{:.6}", flow[j]));
                }
                row
            })
            .collect();
        report.push(Table {
            title: format!("Relevance to target token {}", self.target),
            caption: format!(
                "How much output token {} (“{}”) draws on each input token: its rollout row{}.",
                self.target,
                self.tokens[self.target],
                if self.flow.is_some() {
                    ", and the maximum flow from it to each input token through the layered attention graph"
                } else {
                    ""
                }
            ),
            headers,
            rows,
        });
        // Grouped-query attention: each query head's row names its KV head.
        let mut heads = head_table(
            "Head statistics",
            "Averages over queries with any weight: row entropy (nats), attention distance (tokens), weight on the first token and on the query's own position.",
            &self.statistics,
        );
        for (row, summary) in heads.rows.iter_mut().zip(&self.statistics) {
            row[1].push_str(&self.group_suffix(summary.head, " · "));
        }
        report.push(heads);
        report.push(Paragraphs {
            title: "Reading this report".into(),
            paragraphs: vec![
                "Heatmaps follow the paper's §4.2 exactly: each weight divided by the map's largest, non-positive weights shown as 0.".into(),
                "Files next to this report: heatmaps/layer-L-head-H.png (one per head), grid.png/svg, rollout.png/svg, statistics.json, rollout.json.".into(),
            ],
        });
        Ok(report)
    }
}

/// The §8.1 blend view: `A_v`, `A_l` and their blend side by side on one
/// colour scale.
pub fn blend_figure(
    tokens: &[String],
    vision: Heatmap,
    language: Heatmap,
    blended: Heatmap,
    alpha: f64,
) -> ReportResult<Figure> {
    let mut panels = Vec::new();
    for panel in [vision, language, blended] {
        let labels_fit = tokens.len() == panel.rows && tokens.len() == panel.columns;
        panels.push(if labels_fit {
            panel.with_labels(tokens.to_vec(), tokens.to_vec())?
        } else {
            panel
        });
    }
    Ok(
        Figure::side_by_side(format!("Blend α·A_v + (1 − α)·A_l, α = {alpha}"), panels)
            .with_scale_label("weight"),
    )
}
