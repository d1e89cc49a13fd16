//! Heatmap figures: one map with token labels on both axes, a layers ×
//! heads grid of small maps, and side-by-side views (blends, rollout), each
//! with a title and a colour bar, as PNG or SVG.
//!
//! Layout is computed before drawing ([`Figure::layout`]) so callers and
//! tests know exactly where each cell lands. Maps larger than a panel's
//! pixel budget are shown pooled (each displayed cell is the mean of a
//! square block of cells), and the panel title says so: nothing is dropped
//! without a word.

use plotters::backend::{BitMapBackend, DrawingBackend, SVGBackend};
use plotters::coord::Shift;
use plotters::prelude::{DrawingArea, IntoDrawingArea, Rectangle, Text};
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{Color, FontTransform, IntoFont, RGBColor, TextStyle, BLACK, WHITE};

use crate::colour::viridis;
use crate::error::{ReportError, ReportResult};
use crate::font::{ensure_registered, FAMILY};

/// One matrix to draw, with its labels and title.
#[derive(Clone, Debug, PartialEq)]
pub struct Heatmap {
    /// The panel's title (for a single-panel figure, shown under the
    /// figure title).
    pub title: String,
    /// Number of rows (queries).
    pub rows: usize,
    /// Number of columns (keys).
    pub columns: usize,
    /// Row-major values.
    pub values: Vec<f64>,
    /// One label per row (tokens); empty for none.
    pub row_labels: Vec<String>,
    /// One label per column (tokens); empty for none.
    pub column_labels: Vec<String>,
}

impl Heatmap {
    /// A heatmap of `rows × columns` row-major `values`, checked: the count
    /// must match and every value be finite.
    pub fn new(
        title: impl Into<String>,
        rows: usize,
        columns: usize,
        values: Vec<f64>,
    ) -> ReportResult<Self> {
        let title = title.into();
        if rows == 0 || columns == 0 || rows.checked_mul(columns) != Some(values.len()) {
            return Err(ReportError::data(
                &title,
                format!(
                    "{} values do not fill a {rows} × {columns} matrix (both sizes must be at least 1)",
                    values.len()
                ),
            ));
        }
        if let Some(index) = values.iter().position(|v| !v.is_finite()) {
            return Err(ReportError::NotFinite {
                place: title,
                row: index / columns,
                column: index % columns,
                value: values[index],
            });
        }
        Ok(Self {
            title,
            rows,
            columns,
            values,
            row_labels: Vec::new(),
            column_labels: Vec::new(),
        })
    }

    /// Adds token labels; each list must be empty or match its axis.
    pub fn with_labels(
        mut self,
        row_labels: Vec<String>,
        column_labels: Vec<String>,
    ) -> ReportResult<Self> {
        for (axis, labels, count) in [
            ("row", &row_labels, self.rows),
            ("column", &column_labels, self.columns),
        ] {
            if !labels.is_empty() && labels.len() != count {
                return Err(ReportError::data(
                    &self.title,
                    format!("{} {axis} labels for {count} {axis}s", labels.len()),
                ));
            }
        }
        self.row_labels = row_labels;
        self.column_labels = column_labels;
        Ok(self)
    }

    fn extent(&self) -> (f64, f64) {
        self.values
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(low, high), &v| {
                (low.min(v), high.max(v))
            })
    }
}

/// The image formats figures render to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageFormat {
    /// A PNG bitmap (RGB, 8 bits per channel).
    Png,
    /// An SVG document; text stays text (token labels are searchable).
    Svg,
}

impl ImageFormat {
    /// The usual file extension.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Png => "png",
            Self::Svg => "svg",
        }
    }
}

/// Where one panel's cells land in the image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PanelLayout {
    /// Pixel position of the top-left corner of the first cell.
    pub origin: (i32, i32),
    /// Side of one displayed cell in pixels.
    pub cell: u32,
    /// Cells per displayed cell along each axis (1 = no pooling).
    pub block: usize,
    /// Displayed rows and columns after pooling.
    pub displayed: (usize, usize),
    /// Every `stride`-th label is drawn, so labels never overlap.
    pub label_stride: usize,
}

impl PanelLayout {
    /// The pixel rectangle `(left, top, right, bottom)` (right and bottom
    /// exclusive) of displayed cell `(row, column)`.
    pub fn cell_rect(&self, row: usize, column: usize) -> (i32, i32, i32, i32) {
        let cell = self.cell as i32;
        let left = self.origin.0 + column as i32 * cell;
        let top = self.origin.1 + row as i32 * cell;
        (left, top, left + cell, top + cell)
    }

    fn width(&self) -> i32 {
        self.displayed.1 as i32 * self.cell as i32
    }

    fn height(&self) -> i32 {
        self.displayed.0 as i32 * self.cell as i32
    }
}

/// Pixel sizes of a whole figure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FigureLayout {
    /// Image width in pixels.
    pub width: u32,
    /// Image height in pixels.
    pub height: u32,
    /// One entry per panel, in the order given.
    pub panels: Vec<PanelLayout>,
    colour_bar: (i32, i32, i32, i32),
}

const MARGIN: i32 = 12;
const TITLE_HEIGHT: i32 = 34;
const PANEL_TITLE_HEIGHT: i32 = 22;
const LABEL_FONT: f64 = 12.0;
const LABEL_CHARACTERS: usize = 12;
const GAP: i32 = 18;
const COLOUR_BAR_WIDTH: i32 = 16;
const COLOUR_BAR_SPACE: i32 = 80;

/// The most cells an SVG figure draws, over all its panels; larger maps are
/// pooled. Keeps SVG files to a few megabytes whatever the input.
pub const SVG_MAX_CELLS: usize = 40_000;

/// A titled figure of one or more heatmap panels sharing one colour scale.
#[derive(Clone, Debug)]
pub struct Figure {
    title: String,
    panels: Vec<Heatmap>,
    panel_columns: usize,
    token_labels: bool,
    panel_pixels: u32,
    scale: Option<(f64, f64)>,
    scale_label: String,
}

impl Figure {
    /// One heatmap with its token labels on both axes.
    pub fn single(title: impl Into<String>, heatmap: Heatmap) -> Self {
        Self {
            title: title.into(),
            panels: vec![heatmap],
            panel_columns: 1,
            token_labels: true,
            panel_pixels: 560,
            scale: None,
            scale_label: String::new(),
        }
    }

    /// Small multiples without token labels, `columns` panels per row:
    /// the layers × heads grid (one row per layer).
    pub fn grid(title: impl Into<String>, panels: Vec<Heatmap>, columns: usize) -> Self {
        let columns = columns.max(1);
        let panel_pixels = (960 / columns as u32).clamp(64, 200);
        Self {
            title: title.into(),
            panels,
            panel_columns: columns,
            token_labels: false,
            panel_pixels,
            scale: None,
            scale_label: String::new(),
        }
    }

    /// Panels in one row, each with token labels: blends (`A_v`, `A_l`,
    /// blend) and rollout views.
    pub fn side_by_side(title: impl Into<String>, panels: Vec<Heatmap>) -> Self {
        let columns = panels.len().max(1);
        Self {
            title: title.into(),
            panels,
            panel_columns: columns,
            token_labels: true,
            panel_pixels: 360,
            scale: None,
            scale_label: String::new(),
        }
    }

    /// Fixes the colour scale to `[low, high]` instead of the data's range
    /// (heatmaps normalised by §4.2 use `[0, 1]`).
    pub fn with_scale(mut self, low: f64, high: f64) -> Self {
        self.scale = Some((low, high));
        self
    }

    /// Names what the colour bar measures (`weight`, `h = a / max a`).
    pub fn with_scale_label(mut self, label: impl Into<String>) -> Self {
        self.scale_label = label.into();
        self
    }

    /// The colour scale: the fixed one, or from `min(0, data)` to the
    /// data's maximum.
    pub fn scale(&self) -> (f64, f64) {
        if let Some(scale) = self.scale {
            return scale;
        }
        let (low, high) = self
            .panels
            .iter()
            .map(Heatmap::extent)
            .fold((0.0f64, f64::NEG_INFINITY), |(l, h), (pl, ph)| {
                (l.min(pl), h.max(ph))
            });
        if high > low {
            (low, high)
        } else {
            (low, low + 1.0)
        }
    }

    /// Where everything goes in the given format, computed without drawing.
    /// SVG shows fewer, larger cells than PNG (at most [`SVG_MAX_CELLS`]
    /// in all), since every cell is an element of the document.
    pub fn layout(&self, format: ImageFormat) -> FigureLayout {
        let label_space = if self.token_labels {
            let longest = self
                .panels
                .iter()
                .flat_map(|p| p.row_labels.iter().chain(&p.column_labels))
                .map(|label| display_label(label).chars().count())
                .max()
                .unwrap_or(0) as f64;
            if longest > 0.0 {
                (longest * LABEL_FONT * 0.62).ceil() as i32 + 8
            } else {
                0
            }
        } else {
            0
        };
        let mut panels = Vec::with_capacity(self.panels.len());
        let (mut cell_width_max, mut cell_height_max) = (0, 0);
        let budget = self.panel_pixels as usize;
        let cell_budget = match format {
            ImageFormat::Png => budget,
            ImageFormat::Svg => {
                let per_panel = SVG_MAX_CELLS / self.panels.len().max(1);
                ((per_panel as f64).sqrt() as usize).clamp(8, budget)
            }
        };
        for panel in &self.panels {
            let largest = panel.rows.max(panel.columns);
            let block = largest.div_ceil(cell_budget).max(1);
            let displayed = (panel.rows.div_ceil(block), panel.columns.div_ceil(block));
            let cell = ((budget / displayed.0.max(displayed.1)) as u32).clamp(1, 48);
            let label_stride = if self.token_labels {
                ((LABEL_FONT as u32 + 2).div_ceil(cell) as usize).max(1) * block
            } else {
                1
            };
            panels.push(PanelLayout {
                origin: (0, 0),
                cell,
                block,
                displayed,
                label_stride,
            });
            let last = panels.last().expect("just pushed");
            cell_width_max = cell_width_max.max(last.width());
            cell_height_max = cell_height_max.max(last.height());
        }
        let slot_width = label_space + cell_width_max;
        let slot_height = PANEL_TITLE_HEIGHT + cell_height_max + label_space;
        for (index, panel) in panels.iter_mut().enumerate() {
            let (row, column) = (index / self.panel_columns, index % self.panel_columns);
            panel.origin = (
                MARGIN + column as i32 * (slot_width + GAP) + label_space,
                MARGIN + TITLE_HEIGHT + row as i32 * (slot_height + GAP) + PANEL_TITLE_HEIGHT,
            );
        }
        let columns = self.panel_columns.min(self.panels.len()).max(1) as i32;
        let rows = self.panels.len().div_ceil(self.panel_columns).max(1) as i32;
        let content_width = columns * slot_width + (columns - 1) * GAP;
        let content_height = rows * slot_height + (rows - 1) * GAP;
        let bar_left = MARGIN + content_width + GAP;
        let bar_top = MARGIN + TITLE_HEIGHT + PANEL_TITLE_HEIGHT;
        let bar_height = (content_height - PANEL_TITLE_HEIGHT - label_space).clamp(100, 400);
        let title_width = (self.title.chars().count() as f64 * 18.0 * 0.62) as i32 + 2 * MARGIN;
        let width = (bar_left + COLOUR_BAR_SPACE + MARGIN).max(title_width);
        let height = (MARGIN + TITLE_HEIGHT + content_height + MARGIN)
            .max(bar_top + bar_height + 2 * MARGIN);
        FigureLayout {
            width: width as u32,
            height: height as u32,
            panels,
            colour_bar: (
                bar_left,
                bar_top,
                bar_left + COLOUR_BAR_WIDTH,
                bar_top + bar_height,
            ),
        }
    }

    /// Draws the figure and returns the encoded file (PNG bytes or SVG
    /// text as bytes).
    pub fn render(&self, format: ImageFormat) -> ReportResult<Vec<u8>> {
        ensure_registered().map_err(|message| ReportError::Drawing {
            figure: self.title.clone(),
            message,
        })?;
        if self.panels.is_empty() {
            return Err(ReportError::data(
                &self.title,
                "a figure needs at least one panel",
            ));
        }
        let layout = self.layout(format);
        let size = (layout.width, layout.height);
        let failed = |error: String| ReportError::Drawing {
            figure: self.title.clone(),
            message: error,
        };
        match format {
            ImageFormat::Png => {
                let mut pixels = vec![255u8; size.0 as usize * size.1 as usize * 3];
                {
                    let area = BitMapBackend::with_buffer(&mut pixels, size).into_drawing_area();
                    self.draw(&area, &layout).map_err(failed)?;
                    area.present().map_err(|e| failed(e.to_string()))?;
                }
                encode_png(&pixels, size).map_err(failed)
            }
            ImageFormat::Svg => {
                let mut text = String::new();
                {
                    let area = SVGBackend::with_string(&mut text, size).into_drawing_area();
                    self.draw(&area, &layout).map_err(failed)?;
                    area.present().map_err(|e| failed(e.to_string()))?;
                }
                Ok(text.into_bytes())
            }
        }
    }

    fn draw<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        layout: &FigureLayout,
    ) -> Result<(), String> {
        let error = |e: plotters::drawing::DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
        area.fill(&WHITE).map_err(error)?;
        let title_style = TextStyle::from((FAMILY, 18).into_font()).color(&BLACK);
        area.draw(&Text::new(
            self.title.clone(),
            (MARGIN, MARGIN + 4),
            title_style,
        ))
        .map_err(error)?;
        let (low, high) = self.scale();
        let panel_title = TextStyle::from((FAMILY, 13).into_font()).color(&BLACK);
        let label = TextStyle::from((FAMILY, LABEL_FONT).into_font()).color(&BLACK);
        for (panel, place) in self.panels.iter().zip(&layout.panels) {
            let mut heading = panel.title.clone();
            if place.block > 1 {
                heading.push_str(&format!(" (mean of {0}×{0} blocks)", place.block));
            }
            area.draw(&Text::new(
                heading,
                (place.origin.0, place.origin.1 - PANEL_TITLE_HEIGHT + 4),
                panel_title.clone(),
            ))
            .map_err(error)?;
            // A one-pixel white seam separates cells big enough to spare it.
            let gap = if place.cell >= 6 { 1 } else { 0 };
            for row in 0..place.displayed.0 {
                for column in 0..place.displayed.1 {
                    let value = pooled(panel, place.block, row, column);
                    let (r, g, b) = viridis((value - low) / (high - low));
                    let (left, top, right, bottom) = place.cell_rect(row, column);
                    area.draw(&Rectangle::new(
                        [(left, top), (right - gap, bottom - gap)],
                        RGBColor(r, g, b).filled(),
                    ))
                    .map_err(error)?;
                }
            }
            if self.token_labels {
                let half = place.cell as i32 / 2;
                let row_style = label.pos(Pos::new(HPos::Right, VPos::Center));
                for (index, text) in panel
                    .row_labels
                    .iter()
                    .enumerate()
                    .step_by(place.label_stride)
                {
                    let y = place.cell_rect(index / place.block, 0).1 + half;
                    area.draw(&Text::new(
                        display_label(text),
                        (place.origin.0 - 4, y),
                        row_style.clone(),
                    ))
                    .map_err(error)?;
                }
                let column_style = label
                    .transform(FontTransform::Rotate270)
                    .pos(Pos::new(HPos::Right, VPos::Center));
                let below = place.origin.1 + place.height() + 4;
                for (index, text) in panel
                    .column_labels
                    .iter()
                    .enumerate()
                    .step_by(place.label_stride)
                {
                    let x = place.cell_rect(0, index / place.block).0 + half;
                    area.draw(&Text::new(
                        display_label(text),
                        (x, below),
                        column_style.clone(),
                    ))
                    .map_err(error)?;
                }
            }
        }
        self.draw_colour_bar(area, layout.colour_bar, (low, high))
    }

    fn draw_colour_bar<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        (left, top, right, bottom): (i32, i32, i32, i32),
        (low, high): (f64, f64),
    ) -> Result<(), String> {
        let error = |e: plotters::drawing::DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
        let height = bottom - top;
        for offset in 0..height {
            let fraction = 1.0 - offset as f64 / (height - 1).max(1) as f64;
            let (r, g, b) = viridis(fraction);
            area.draw(&Rectangle::new(
                [(left, top + offset), (right, top + offset + 1)],
                RGBColor(r, g, b).filled(),
            ))
            .map_err(error)?;
        }
        area.draw(&Rectangle::new(
            [(left, top), (right - 1, bottom - 1)],
            BLACK.stroke_width(1),
        ))
        .map_err(error)?;
        let tick = TextStyle::from((FAMILY, LABEL_FONT).into_font())
            .color(&BLACK)
            .pos(Pos::new(HPos::Left, VPos::Center));
        for fraction in [0.0, 0.5, 1.0] {
            let y = bottom - 1 - (fraction * (height - 1) as f64).round() as i32;
            let value = low + fraction * (high - low);
            area.draw(&Text::new(format_tick(value), (right + 4, y), tick.clone()))
                .map_err(error)?;
        }
        if !self.scale_label.is_empty() {
            let caption = TextStyle::from((FAMILY, LABEL_FONT).into_font()).color(&BLACK);
            area.draw(&Text::new(
                self.scale_label.clone(),
                (left, bottom + 6),
                caption,
            ))
            .map_err(error)?;
        }
        Ok(())
    }
}

/// The mean of the block of cells behind displayed cell `(row, column)`.
fn pooled(panel: &Heatmap, block: usize, row: usize, column: usize) -> f64 {
    if block == 1 {
        return panel.values[row * panel.columns + column];
    }
    let rows = row * block..((row + 1) * block).min(panel.rows);
    let columns = column * block..((column + 1) * block).min(panel.columns);
    let count = rows.len() * columns.len();
    let sum: f64 = rows
        .flat_map(|r| columns.clone().map(move |c| (r, c)))
        .map(|(r, c)| panel.values[r * panel.columns + c])
        .sum();
    sum / count as f64
}

/// A token as shown on an axis: whitespace made visible, long tokens cut
/// with an ellipsis so one token cannot push the plot off the image.
pub fn display_label(token: &str) -> String {
    let visible: String = token
        .chars()
        .map(|c| match c {
            ' ' => '␣',
            '\n' => '↵',
            '\t' => '→',
            c if c.is_control() => '·',
            c => c,
        })
        .collect();
    if visible.chars().count() > LABEL_CHARACTERS {
        let cut: String = visible.chars().take(LABEL_CHARACTERS - 1).collect();
        format!("{cut}…")
    } else if visible.is_empty() {
        "∅".to_string()
    } else {
        visible
    }
}

fn format_tick(value: f64) -> String {
    if value == 0.0 || (1e-3..1e4).contains(&value.abs()) {
        let text = format!("{value:.3}");
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        format!("{value:.2e}")
    }
}

fn encode_png(pixels: &[u8], (width, height): (u32, u32)) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut bytes, width, height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(|e| e.to_string())?;
        writer.write_image_data(pixels).map_err(|e| e.to_string())?;
    }
    Ok(bytes)
}
