//! The self-contained HTML report: one file, no network, inline CSS, JS and
//! SVG, built from typed sections.
//!
//! A [`Report`] is a title plus an ordered list of [`Section`]s. Each
//! section renders its own HTML; later tools add their own section types
//! (blueprint cost tables, training curves, workflow diagrams, data
//! quality) by implementing [`Section`], or use the general ones here
//! ([`Table`], [`Paragraphs`], [`Figure`](crate::Figure) images through
//! [`InlineSvg`], [`KeyValues`]).
//!
//! Safety: every user string (tokens, names, cell text) is HTML-escaped, and
//! data for scripts travels as JSON inside `<script type="application/json">`
//! with `<`, `>` and `&` escaped, so a token such as
//! `</script><script>alert(1)</script>` stays text. SVG is only accepted
//! from this crate's renderer ([`InlineSvg::render`]), which escapes text.

use std::fmt::Write as _;

use base64_free::encode as base64;

use crate::colour::viridis_stops_css;
use crate::error::{ReportError, ReportResult};
use crate::figure::{Figure, ImageFormat};

/// Escapes text for HTML element content and attribute values.
pub fn escape_html(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// Serialises `value` as JSON safe to place inside a `<script>` element:
/// no `<`, `>` or `&` survives, so no string can close the element.
pub fn script_json(value: &serde_json::Value) -> String {
    let mut text = String::new();
    for c in value.to_string().chars() {
        match c {
            '<' => text.push_str("\\u003c"),
            '>' => text.push_str("\\u003e"),
            '&' => text.push_str("\\u0026"),
            '\u{2028}' => text.push_str("\\u2028"),
            '\u{2029}' => text.push_str("\\u2029"),
            c => text.push(c),
        }
    }
    text
}

/// What sections may ask of the report while rendering: unique element ids
/// and scripts included once however many sections need them.
#[derive(Default)]
pub struct RenderContext {
    next_id: usize,
    needs_explorer_script: bool,
}

impl RenderContext {
    /// A fresh element id with the given prefix, unique in the document.
    pub fn unique_id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}-{}", self.next_id)
    }
}

/// One part of the report. Implement it to add a new kind of content.
pub trait Section {
    /// The heading, shown in the table of contents too (plain text; the
    /// report escapes it).
    fn title(&self) -> String;
    /// The section's body as HTML. User strings must go through
    /// [`escape_html`] or [`script_json`].
    fn render(&self, context: &mut RenderContext) -> ReportResult<String>;
}

/// A report: a title and its sections, rendered into one HTML file.
pub struct Report {
    title: String,
    sections: Vec<Box<dyn Section>>,
}

impl Report {
    /// An empty report with a title.
    pub fn new(title: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            sections: Vec::new(),
        }
    }

    /// Appends a section.
    pub fn section(mut self, section: impl Section + 'static) -> Self {
        self.sections.push(Box::new(section));
        self
    }

    /// Appends a section in place.
    pub fn push(&mut self, section: impl Section + 'static) {
        self.sections.push(Box::new(section));
    }

    /// Renders the whole document.
    pub fn render(&self) -> ReportResult<String> {
        let mut context = RenderContext::default();
        let mut body = String::new();
        let mut contents = String::new();
        for (index, section) in self.sections.iter().enumerate() {
            let anchor = format!("section-{index}");
            let title = escape_html(&section.title());
            let inner = section.render(&mut context)?;
            let _ = write!(contents, "<li><a href=\"#{anchor}\">{title}</a></li>");
            let _ = write!(
                body,
                "<section id=\"{anchor}\"><h2>{title}</h2>\n{inner}\n</section>\n"
            );
        }
        let script = if context.needs_explorer_script {
            format!(
                "<script>\nconst VIRIDIS = {};\n{EXPLORER_SCRIPT}</script>",
                viridis_stops_css()
            )
        } else {
            String::new()
        };
        let title = escape_html(&self.title);
        Ok(format!(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
             <title>{title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
             <header><h1>{title}</h1><nav><ol>{contents}</ol></nav></header>\n<main>\n{body}</main>\n\
             <footer>Written by attnflow {}. This file is self-contained: it loads nothing from the network.</footer>\n\
             {script}\n</body>\n</html>\n",
            env!("CARGO_PKG_VERSION")
        ))
    }
}

/// Paragraphs of plain text.
pub struct Paragraphs {
    /// Heading.
    pub title: String,
    /// Paragraphs, escaped when rendered.
    pub paragraphs: Vec<String>,
}

impl Section for Paragraphs {
    fn title(&self) -> String {
        self.title.clone()
    }

    fn render(&self, _: &mut RenderContext) -> ReportResult<String> {
        Ok(self
            .paragraphs
            .iter()
            .map(|p| format!("<p>{}</p>", escape_html(p)))
            .collect())
    }
}

/// Name–value pairs (settings, summary figures).
pub struct KeyValues {
    /// Heading.
    pub title: String,
    /// Pairs in display order.
    pub entries: Vec<(String, String)>,
}

impl Section for KeyValues {
    fn title(&self) -> String {
        self.title.clone()
    }

    fn render(&self, _: &mut RenderContext) -> ReportResult<String> {
        let mut html = String::from("<dl class=\"pairs\">");
        for (key, value) in &self.entries {
            let _ = write!(
                html,
                "<dt>{}</dt><dd>{}</dd>",
                escape_html(key),
                escape_html(value)
            );
        }
        html.push_str("</dl>");
        Ok(html)
    }
}

/// A table with a header row; numeric-looking cells are right-aligned.
pub struct Table {
    /// Heading.
    pub title: String,
    /// A sentence under the heading saying what the table shows.
    pub caption: String,
    /// Column headers.
    pub headers: Vec<String>,
    /// Rows, each as long as `headers`.
    pub rows: Vec<Vec<String>>,
}

impl Section for Table {
    fn title(&self) -> String {
        self.title.clone()
    }

    fn render(&self, _: &mut RenderContext) -> ReportResult<String> {
        if let Some(index) = self.rows.iter().position(|r| r.len() != self.headers.len()) {
            return Err(ReportError::data(
                &self.title,
                format!(
                    "row {index} has {} cells but there are {} headers",
                    self.rows[index].len(),
                    self.headers.len()
                ),
            ));
        }
        let mut html = format!("<p>{}</p><table><thead><tr>", escape_html(&self.caption));
        for header in &self.headers {
            let _ = write!(html, "<th>{}</th>", escape_html(header));
        }
        html.push_str("</tr></thead><tbody>");
        for row in &self.rows {
            html.push_str("<tr>");
            for cell in row {
                let numeric = cell.parse::<f64>().is_ok();
                let _ = write!(
                    html,
                    "<td{}>{}</td>",
                    if numeric { " class=\"number\"" } else { "" },
                    escape_html(cell)
                );
            }
            html.push_str("</tr>");
        }
        html.push_str("</tbody></table>");
        Ok(html)
    }
}

/// An SVG image drawn by this crate, placed inline in the report.
pub struct InlineSvg {
    /// Heading.
    pub title: String,
    /// A sentence under the image.
    pub caption: String,
    svg: String,
}

impl InlineSvg {
    /// Renders `figure` as SVG for inline use. Only this crate's renderer
    /// produces the markup, so no unescaped user text can get in.
    pub fn render(
        title: impl Into<String>,
        caption: impl Into<String>,
        figure: &Figure,
    ) -> ReportResult<Self> {
        let bytes = figure.render(ImageFormat::Svg)?;
        let svg = String::from_utf8(bytes).map_err(|_| ReportError::Drawing {
            figure: "inline SVG".into(),
            message: "the SVG backend wrote invalid UTF-8".into(),
        })?;
        let svg = inline_svg(&svg);
        Ok(Self {
            title: title.into(),
            caption: caption.into(),
            svg,
        })
    }
}

impl Section for InlineSvg {
    fn title(&self) -> String {
        self.title.clone()
    }

    fn render(&self, _: &mut RenderContext) -> ReportResult<String> {
        Ok(format!(
            "<figure class=\"image\">{}<figcaption>{}</figcaption></figure>",
            self.svg,
            escape_html(&self.caption)
        ))
    }
}

/// The interactive attention view: every layer and head of a model on one
/// input, drawn on a canvas (so 512 tokens × 12 layers × 12 heads stays
/// responsive), with a layer and head selector, token labels and the
/// weight under the pointer.
///
/// Maps are stored quantised per map — 16 bits below 8 million values in
/// all, 8 bits above (relative error at most 1/65535 or 1/255 of the map's
/// maximum, stated in the section) — base64-encoded, and decoded only
/// when selected.
pub struct AttentionExplorer {
    /// Heading.
    pub title: String,
    /// The input tokens (labels of both axes).
    pub tokens: Vec<String>,
    /// `maps[layer][head]`: `n × n` row-major weights.
    pub maps: Vec<Vec<Vec<f64>>>,
}

/// Quantised maps above this many values in all use 8 bits per value.
const SIXTEEN_BIT_LIMIT: usize = 8_000_000;

impl AttentionExplorer {
    fn check(&self) -> ReportResult<usize> {
        let n = self.tokens.len();
        if n == 0 || self.maps.is_empty() || self.maps[0].is_empty() {
            return Err(ReportError::data(
                &self.title,
                "needs at least one token, one layer and one head",
            ));
        }
        let heads = self.maps[0].len();
        for (layer, maps) in self.maps.iter().enumerate() {
            if maps.len() != heads {
                return Err(ReportError::data(
                    &self.title,
                    format!(
                        "layer {layer} has {} heads, layer 0 has {heads}",
                        maps.len()
                    ),
                ));
            }
            for (head, map) in maps.iter().enumerate() {
                if map.len() != n * n {
                    return Err(ReportError::data(
                        &self.title,
                        format!(
                            "layer {layer} head {head} has {} values; {n} tokens need {}",
                            map.len(),
                            n * n
                        ),
                    ));
                }
                if let Some(index) = map.iter().position(|v| !v.is_finite()) {
                    return Err(ReportError::NotFinite {
                        place: format!("{}: layer {layer} head {head}", self.title),
                        row: index / n,
                        column: index % n,
                        value: map[index],
                    });
                }
            }
        }
        Ok(n)
    }
}

impl Section for AttentionExplorer {
    fn title(&self) -> String {
        self.title.clone()
    }

    fn render(&self, context: &mut RenderContext) -> ReportResult<String> {
        let n = self.check()?;
        let total: usize = self.maps.iter().map(|l| l.len() * n * n).sum();
        let bits = if total <= SIXTEEN_BIT_LIMIT { 16 } else { 8 };
        let levels = if bits == 16 { 65535.0 } else { 255.0 };
        let mut encoded = Vec::with_capacity(self.maps.len());
        let mut maxima = Vec::with_capacity(self.maps.len());
        for layer in &self.maps {
            let mut layer_codes = Vec::with_capacity(layer.len());
            let mut layer_maxima = Vec::with_capacity(layer.len());
            for map in layer {
                let maximum = map.iter().copied().fold(0.0f64, f64::max);
                let mut bytes = Vec::with_capacity(map.len() * bits / 8);
                for &value in map {
                    let level = if maximum > 0.0 {
                        (value.max(0.0) / maximum * levels).round()
                    } else {
                        0.0
                    };
                    if bits == 16 {
                        bytes.extend_from_slice(&(level as u16).to_le_bytes());
                    } else {
                        bytes.push(level as u8);
                    }
                }
                layer_codes.push(base64(&bytes));
                layer_maxima.push(maximum);
            }
            encoded.push(layer_codes);
            maxima.push(layer_maxima);
        }
        let data = serde_json::json!({
            "tokens": self.tokens,
            "bits": bits,
            "maps": encoded,
            "maxima": maxima,
        });
        context.needs_explorer_script = true;
        let id = context.unique_id("explorer");
        let layer_options: String = (0..self.maps.len())
            .map(|l| format!("<option value=\"{l}\">layer {l}</option>"))
            .collect();
        let head_options: String = (0..self.maps[0].len())
            .map(|h| format!("<option value=\"{h}\">head {h}</option>"))
            .collect();
        Ok(format!(
            "<div class=\"explorer\" id=\"{id}\" data-explorer>\n\
             <p>{n} tokens, {layers} layers × {heads} heads. Rows are queries, columns keys; colour is the weight divided by the map's largest (§4.2). \
             Stored with {bits}-bit precision relative to each map's largest weight.</p>\n\
             <div class=\"controls\"><label>Layer <select class=\"layer\">{layer_options}</select></label>\
             <label>Head <select class=\"head\">{head_options}</select></label>\
             <span class=\"readout\" aria-live=\"polite\">point at a cell</span></div>\n\
             <canvas class=\"map\" width=\"10\" height=\"10\"></canvas>\n\
             <script type=\"application/json\" class=\"data\">{json}</script>\n</div>",
            layers = self.maps.len(),
            heads = self.maps[0].len(),
            json = script_json(&data),
        ))
    }
}

/// A small base64 encoder (standard alphabet, padded), so the report crate
/// needs no extra dependency for it.
mod base64_free {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    pub fn encode(bytes: &[u8]) -> String {
        let mut text = String::with_capacity(bytes.len().div_ceil(3) * 4);
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                chunk.get(1).copied().unwrap_or(0),
                chunk.get(2).copied().unwrap_or(0),
            ];
            let word = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for position in 0..4 {
                if position <= chunk.len() {
                    text.push(ALPHABET[(word >> (18 - 6 * position) & 63) as usize] as char);
                } else {
                    text.push('=');
                }
            }
        }
        text
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn known_vectors() {
            // RFC 4648 §10 test vectors.
            for (input, expected) in [
                ("", ""),
                ("f", "Zg=="),
                ("fo", "Zm8="),
                ("foo", "Zm9v"),
                ("foob", "Zm9vYg=="),
                ("fooba", "Zm9vYmE="),
                ("foobar", "Zm9vYmFy"),
            ] {
                assert_eq!(super::encode(input.as_bytes()), expected);
            }
        }
    }
}

const STYLE: &str = r#"
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #1d1d1f; background: #fafafa; }
header { background: #26215c; color: white; padding: 1rem 2rem; }
header h1 { margin: 0 0 .5rem 0; font-size: 1.5rem; }
header nav ol { margin: 0; padding-left: 1.2rem; columns: 2; }
header a { color: #d9d4ff; }
main { padding: 1rem 2rem; max-width: 1400px; }
section { background: white; border: 1px solid #ddd; border-radius: 6px; padding: 1rem 1.5rem; margin: 1rem 0; overflow-x: auto; }
h2 { font-size: 1.2rem; margin-top: 0; }
table { border-collapse: collapse; font-size: .9rem; }
th, td { border-bottom: 1px solid #e4e4e4; padding: .25rem .6rem; text-align: left; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
dl.pairs { display: grid; grid-template-columns: max-content auto; gap: .2rem 1rem; }
dl.pairs dt { font-weight: 600; }
.controls { display: flex; gap: 1rem; align-items: center; margin: .5rem 0; flex-wrap: wrap; }
.readout { font-family: ui-monospace, monospace; background: #f0eefc; padding: .2rem .5rem; border-radius: 4px; min-width: 24rem; }
canvas.map { image-rendering: pixelated; border: 1px solid #ccc; }
figure.image svg { max-width: 100%; height: auto; }
footer { color: #666; font-size: .8rem; padding: 1rem 2rem; }
"#;

/// The explorer's script: decodes the selected map on demand, draws it
/// into an offscreen canvas at one pixel per cell and scales that up, so a
/// 512 × 512 map redraws in milliseconds. `#selftest` in the URL makes it
/// switch heads once and record whether the picture changed (used by the
/// headless-browser test).
const EXPLORER_SCRIPT: &str = r##"
(function () {
  "use strict";
  window.attnflowErrors = [];
  window.addEventListener("error", function (event) {
    window.attnflowErrors.push(String(event.message));
    document.body.dataset.errors = window.attnflowErrors.join(" | ");
  });
  function colour(fraction) {
    var f = Math.min(1, Math.max(0, fraction)) * (VIRIDIS.length - 1);
    var i = Math.min(Math.floor(f), VIRIDIS.length - 2), w = f - i;
    var a = VIRIDIS[i], b = VIRIDIS[i + 1];
    return [a[0] + (b[0] - a[0]) * w, a[1] + (b[1] - a[1]) * w, a[2] + (b[2] - a[2]) * w];
  }
  function decode(text, bits) {
    var raw = atob(text), count = raw.length / (bits / 8), levels = new Float64Array(count);
    for (var i = 0; i < count; i++) {
      levels[i] = bits === 16 ? raw.charCodeAt(2 * i) | (raw.charCodeAt(2 * i + 1) << 8) : raw.charCodeAt(i);
    }
    return levels;
  }
  function Explorer(root) {
    var data = JSON.parse(root.querySelector("script.data").textContent);
    var tokens = data.tokens, n = tokens.length, top = (1 << data.bits) - 1;
    var layerSelect = root.querySelector("select.layer"), headSelect = root.querySelector("select.head");
    var readout = root.querySelector(".readout"), canvas = root.querySelector("canvas.map");
    var cell = Math.max(1, Math.min(32, Math.floor(720 / n)));
    var labels = cell >= 10, margin = labels ? 90 : 0;
    var side = n * cell;
    canvas.width = margin + side; canvas.height = margin + side;
    var context = canvas.getContext("2d");
    var offscreen = document.createElement("canvas");
    offscreen.width = n; offscreen.height = n;
    var offscreenContext = offscreen.getContext("2d");
    var cache = {}, current = null;
    function map(layer, head) {
      var key = layer + "/" + head;
      if (!cache[key]) cache[key] = decode(data.maps[layer][head], data.bits);
      return cache[key];
    }
    function shown(text) {
      var visible = text.replace(/ /g, "\u2423").replace(/\n/g, "\u21b5").replace(/\t/g, "\u2192");
      return visible.length > 12 ? visible.slice(0, 11) + "\u2026" : (visible || "\u2205");
    }
    function draw() {
      var layer = Number(layerSelect.value), head = Number(headSelect.value);
      var levels = map(layer, head), image = offscreenContext.createImageData(n, n);
      for (var i = 0; i < n * n; i++) {
        var rgb = colour(levels[i] / top);
        image.data[4 * i] = rgb[0]; image.data[4 * i + 1] = rgb[1]; image.data[4 * i + 2] = rgb[2]; image.data[4 * i + 3] = 255;
      }
      offscreenContext.putImageData(image, 0, 0);
      context.fillStyle = "white"; context.fillRect(0, 0, canvas.width, canvas.height);
      context.imageSmoothingEnabled = false;
      context.drawImage(offscreen, margin, margin, side, side);
      if (labels) {
        context.fillStyle = "#1d1d1f"; context.font = Math.min(12, cell) + "px sans-serif";
        context.textAlign = "right"; context.textBaseline = "middle";
        for (var r = 0; r < n; r++) context.fillText(shown(tokens[r]), margin - 4, margin + r * cell + cell / 2);
        for (var c = 0; c < n; c++) {
          context.save(); context.translate(margin + c * cell + cell / 2, margin - 4); context.rotate(Math.PI / 2);
          context.textAlign = "right"; context.fillText(shown(tokens[c]), 0, 0); context.restore();
        }
      }
      current = { layer: layer, head: head, levels: levels, maximum: data.maxima[layer][head] };
      root.dataset.view = layer + "/" + head;
    }
    canvas.addEventListener("mousemove", function (event) {
      if (!current) return;
      var box = canvas.getBoundingClientRect();
      var x = (event.clientX - box.left) * canvas.width / box.width - margin;
      var y = (event.clientY - box.top) * canvas.height / box.height - margin;
      var column = Math.floor(x / cell), row = Math.floor(y / cell);
      if (row < 0 || column < 0 || row >= n || column >= n) { readout.textContent = "point at a cell"; return; }
      var weight = current.levels[row * n + column] / top * current.maximum;
      readout.textContent = "layer " + current.layer + " head " + current.head + ": query " + row + " \u201c" + tokens[row] +
        "\u201d \u2192 key " + column + " \u201c" + tokens[column] + "\u201d = " + weight.toFixed(4);
    });
    layerSelect.addEventListener("change", draw);
    headSelect.addEventListener("change", draw);
    draw();
    this.canvas = canvas; this.headSelect = headSelect; this.layerSelect = layerSelect;
  }
  var explorers = [];
  document.querySelectorAll("[data-explorer]").forEach(function (root) { explorers.push(new Explorer(root)); });
  window.attnflowExplorers = explorers;
  document.body.dataset.readyMs = performance.now().toFixed(0);
  if (location.hash === "#selftest" && explorers.length > 0) {
    var first = explorers[0], before = first.canvas.toDataURL();
    var options = first.headSelect.options.length > 1 ? first.headSelect : first.layerSelect;
    options.selectedIndex = (options.selectedIndex + 1) % options.options.length;
    var switchStart = performance.now();
    options.dispatchEvent(new Event("change"));
    document.body.dataset.switchMs = (performance.now() - switchStart).toFixed(1);
    document.body.dataset.selftest = first.canvas.toDataURL() !== before ? "view-changed" : "view-unchanged";
  }
})();
"##;

/// An SVG document made fit for inline HTML: no XML declaration and no
/// namespace URLs (HTML implies them), so the report holds no URL at all.
pub(crate) fn inline_svg(svg: &str) -> String {
    let start = svg.find("<svg").unwrap_or(0);
    svg[start..]
        .replace(" xmlns=\"http://www.w3.org/2000/svg\"", "")
        .replace(" xmlns:xlink=\"http://www.w3.org/1999/xlink\"", "")
}
