//! General-purpose report sections: groups of parts, preformatted text,
//! line charts and trusted SVG from other attnflow crates.

use std::fmt::Write;

use crate::error::ReportResult;
use crate::html::{escape_html, inline_svg, RenderContext, Section};

/// Several parts under one heading; each part keeps its own subheading.
pub struct Group {
    /// Heading.
    pub title: String,
    /// The parts, rendered in order.
    pub parts: Vec<Box<dyn Section>>,
}

impl Group {
    /// An empty group.
    pub fn new(title: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            parts: Vec::new(),
        }
    }

    /// Appends a part.
    pub fn part(mut self, part: impl Section + 'static) -> Self {
        self.parts.push(Box::new(part));
        self
    }
}

impl Section for Group {
    fn title(&self) -> String {
        self.title.clone()
    }

    fn render(&self, context: &mut RenderContext) -> ReportResult<String> {
        let mut html = String::new();
        for part in &self.parts {
            let body = part.render(context)?;
            let _ = write!(html, "<h3>{}</h3>\n{body}\n", escape_html(&part.title()));
        }
        Ok(html)
    }
}

/// Text shown as written (tables and summaries made for terminals).
pub struct Preformatted {
    /// Heading.
    pub title: String,
    /// A sentence above the text.
    pub caption: String,
    /// The text, escaped when rendered.
    pub text: String,
}

impl Section for Preformatted {
    fn title(&self) -> String {
        self.title.clone()
    }

    fn render(&self, _: &mut RenderContext) -> ReportResult<String> {
        Ok(format!(
            "<p>{}</p><pre>{}</pre>",
            escape_html(&self.caption),
            escape_html(&self.text)
        ))
    }
}

/// An SVG document produced by another attnflow crate (a blueprint
/// diagram, a state diagram). The producer escapes its own labels; this
/// section only refuses markup that could run script.
pub struct TrustedSvg {
    /// Heading.
    pub title: String,
    /// A sentence under the image.
    pub caption: String,
    /// The `<svg>` element.
    pub svg: String,
}

impl Section for TrustedSvg {
    fn title(&self) -> String {
        self.title.clone()
    }

    fn render(&self, _: &mut RenderContext) -> ReportResult<String> {
        if runs_script(&self.svg) {
            return Err(crate::ReportError::data(
                &self.title,
                "SVG with script is not embedded",
            ));
        }
        Ok(format!(
            "<figure class=\"image\">{}<figcaption>{}</figcaption></figure>",
            inline_svg(&self.svg),
            escape_html(&self.caption)
        ))
    }
}

/// Whether markup holds a script element, a `javascript:` URL or an event
/// handler attribute (` onload=`, ` onclick=`, ...).
fn runs_script(markup: &str) -> bool {
    let lower = markup.to_ascii_lowercase();
    if lower.contains("<script") || lower.contains("javascript:") {
        return true;
    }
    lower.match_indices(" on").any(|(at, _)| {
        let rest = &lower[at + 3..];
        let name_length = rest.chars().take_while(char::is_ascii_alphabetic).count();
        name_length > 0 && rest[name_length..].trim_start().starts_with('=')
    })
}

/// One named series of a line chart.
pub struct Series {
    /// Legend entry.
    pub name: String,
    /// `(x, y)` points; non-finite points are skipped.
    pub points: Vec<(f64, f64)>,
}

/// A line chart drawn as inline SVG, with axes, ticks and a legend.
pub struct LineChart {
    /// Heading.
    pub title: String,
    /// A sentence under the chart.
    pub caption: String,
    /// Label of the horizontal axis.
    pub x_label: String,
    /// Label of the vertical axis.
    pub y_label: String,
    /// Logarithmic vertical axis (for gradient norms, losses).
    pub log_y: bool,
    /// The lines.
    pub series: Vec<Series>,
}

const PALETTE: [&str; 6] = [
    "#3b3bb3", "#d1495b", "#2a9d8f", "#e9a23b", "#7b2cbf", "#555555",
];

impl LineChart {
    fn y_value(&self, y: f64) -> Option<f64> {
        if !y.is_finite() {
            return None;
        }
        if self.log_y {
            (y > 0.0).then(|| y.log10())
        } else {
            Some(y)
        }
    }

    /// The chart as an SVG element.
    pub fn svg(&self) -> String {
        let (width, height, left, right, top, bottom) = (640.0, 300.0, 64.0, 150.0, 16.0, 44.0);
        let points: Vec<Vec<(f64, f64)>> = self
            .series
            .iter()
            .map(|s| {
                s.points
                    .iter()
                    .filter(|(x, _)| x.is_finite())
                    .filter_map(|&(x, y)| self.y_value(y).map(|y| (x, y)))
                    .collect()
            })
            .collect();
        let all = points.iter().flatten();
        let (mut x_min, mut x_max, mut y_min, mut y_max) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for &(x, y) in all {
            x_min = x_min.min(x);
            x_max = x_max.max(x);
            y_min = y_min.min(y);
            y_max = y_max.max(y);
        }
        let mut svg = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\" font-size=\"11\">"
        );
        if x_min > x_max {
            svg.push_str("<text x=\"20\" y=\"40\">no data</text></svg>");
            return svg;
        }
        if x_max == x_min {
            x_max = x_min + 1.0;
        }
        if y_max == y_min {
            y_max = y_min + 1.0;
        }
        let plot_width = width - left - right;
        let plot_height = height - top - bottom;
        let sx = |x: f64| left + (x - x_min) / (x_max - x_min) * plot_width;
        let sy = |y: f64| top + (1.0 - (y - y_min) / (y_max - y_min)) * plot_height;
        let _ = write!(
            svg,
            "<rect x=\"{left}\" y=\"{top}\" width=\"{plot_width}\" height=\"{plot_height}\" fill=\"none\" stroke=\"#999\"/>"
        );
        for tick in 0..=4 {
            let fraction = tick as f64 / 4.0;
            let y = y_min + fraction * (y_max - y_min);
            let x = x_min + fraction * (x_max - x_min);
            let y_text = if self.log_y {
                format!("{:.1e}", 10f64.powf(y))
            } else {
                format_tick(y)
            };
            let _ = write!(
                svg,
                "<line x1=\"{left}\" x2=\"{}\" y1=\"{py:.1}\" y2=\"{py:.1}\" stroke=\"#eee\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{y_text}</text>\
                 <text x=\"{px:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
                left + plot_width,
                left - 4.0,
                sy(y) + 4.0,
                top + plot_height + 14.0,
                format_tick(x),
                py = sy(y),
                px = sx(x),
            );
        }
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>\
             <text transform=\"translate(14 {:.1}) rotate(-90)\" text-anchor=\"middle\">{}</text>",
            left + plot_width / 2.0,
            height - 6.0,
            escape_html(&self.x_label),
            top + plot_height / 2.0,
            escape_html(&self.y_label)
        );
        for (index, (series, points)) in self.series.iter().zip(&points).enumerate() {
            let colour = PALETTE[index % PALETTE.len()];
            let path: Vec<String> = points
                .iter()
                .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
                .collect();
            if path.len() == 1 {
                let _ = write!(
                    svg,
                    "<circle cx=\"{}\" r=\"3\" fill=\"{colour}\" cy=\"{}\"/>",
                    sx(points[0].0),
                    sy(points[0].1)
                );
            } else if !path.is_empty() {
                let _ = write!(
                    svg,
                    "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" points=\"{}\"/>",
                    path.join(" ")
                );
            }
            let legend_y = top + 12.0 + 16.0 * index as f64;
            let _ = write!(
                svg,
                "<line x1=\"{}\" x2=\"{}\" y1=\"{legend_y}\" y2=\"{legend_y}\" stroke=\"{colour}\" stroke-width=\"2\"/><text x=\"{}\" y=\"{}\">{}</text>",
                left + plot_width + 10.0,
                left + plot_width + 28.0,
                left + plot_width + 32.0,
                legend_y + 4.0,
                escape_html(&series.name)
            );
        }
        svg.push_str("</svg>");
        svg
    }
}

fn format_tick(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude != 0.0 && !(1e-3..1e5).contains(&magnitude) {
        format!("{value:.1e}")
    } else if magnitude >= 10.0 || value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}

impl Section for LineChart {
    fn title(&self) -> String {
        self.title.clone()
    }

    fn render(&self, _: &mut RenderContext) -> ReportResult<String> {
        Ok(format!(
            "<figure class=\"image\">{}<figcaption>{}</figcaption></figure>",
            inline_svg(&self.svg()),
            escape_html(&self.caption)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart(points: Vec<(f64, f64)>, log_y: bool) -> LineChart {
        LineChart {
            title: "loss".into(),
            caption: "falls".into(),
            x_label: "step".into(),
            y_label: "loss <nats>".into(),
            log_y,
            series: vec![Series {
                name: "train & eval".into(),
                points,
            }],
        }
    }

    #[test]
    fn a_chart_draws_every_finite_point_and_escapes_labels() {
        let svg = chart(
            vec![(0.0, 2.0), (10.0, 1.0), (20.0, f64::NAN), (30.0, 0.5)],
            false,
        )
        .svg();
        let polyline = svg
            .split("points=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        assert_eq!(polyline.split(' ').count(), 3, "the NaN point is skipped");
        assert!(svg.contains("loss &lt;nats&gt;") && svg.contains("train &amp; eval"));
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
    }

    #[test]
    fn a_log_chart_skips_non_positive_values_and_empty_charts_say_so() {
        let svg = chart(vec![(0.0, 1e-3), (1.0, 0.0), (2.0, 10.0)], true).svg();
        let polyline = svg
            .split("points=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        assert_eq!(polyline.split(' ').count(), 2);
        assert!(chart(vec![], false).svg().contains("no data"));
    }

    #[test]
    fn trusted_svg_refuses_script() {
        let section = TrustedSvg {
            title: "x".into(),
            caption: String::new(),
            svg: "<svg><script>alert(1)</script></svg>".into(),
        };
        assert!(section.render(&mut RenderContext::default()).is_err());
        assert!(runs_script("<svg><rect onclick = \"x()\"/></svg>"));
        assert!(!runs_script(
            "<svg><text>on top</text><g id=\"only\"/></svg>"
        ));
    }
}
