//! Pictures of attention and the self-contained HTML report.
//!
//! * [`Figure`]: PNG and SVG heatmaps with token labels on both axes, a
//!   title and a colour bar; layers × heads grids; side-by-side views for
//!   §8.1 blends and rollout. The font is compiled in, so figures render
//!   the same on a machine with no fonts installed.
//! * [`Report`]: one HTML file with inline CSS, JS and SVG and no network
//!   access, built from typed [`Section`]s; [`AttentionExplorer`] is the
//!   interactive layer/head view.
//!
//! This crate works on plain `f64` values and strings: it does not depend
//! on the tensor library, so it builds fast and anything can feed it.

mod colour;
mod error;
mod figure;
mod font;
mod html;
mod inspection;
mod sections;

pub use colour::viridis;
pub use error::{ReportError, ReportResult};
pub use figure::{
    display_label, Figure, FigureLayout, Heatmap, ImageFormat, PanelLayout, SVG_MAX_CELLS,
};
pub use html::{
    escape_html, script_json, AttentionExplorer, InlineSvg, KeyValues, Paragraphs, RenderContext,
    Report, Section, Table,
};
pub use inspection::{blend_figure, head_table, HeadSummary, InspectionReport, OutputFile};
pub use sections::{Group, LineChart, Preformatted, Series, TrustedSvg};
