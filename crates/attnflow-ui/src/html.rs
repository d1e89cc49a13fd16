//! The page frame and the small formatting every page shares. Pages are
//! written with maud, whose `html!` escapes every interpolated value, so a
//! token such as `<script>` or a quote inside an attribute stays text;
//! markup that is not escaped comes only from attnflow-report's SVG
//! renderers, which escape their own labels.

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use maud::{html, Markup, PreEscaped, DOCTYPE};

use crate::error::PageError;

/// What the frame says about the server.
#[derive(Debug, Clone, Default)]
pub struct Frame {
    /// The main store, as shown.
    pub store: String,
    /// Whether changes are refused.
    pub read_only: bool,
}

/// The navigation: (path, label).
const NAVIGATION: [(&str, &str); 4] = [
    ("/", "Runs"),
    ("/compare", "Compare"),
    ("/quarantine", "Quarantine"),
    ("/workflow", "Workflow"),
];

/// A whole page: title, navigation (with `current` marked), body.
pub fn page(title: &str, current: &str, frame: &Frame, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · attnflow" }
                link rel="stylesheet" href="/assets/app.css";
                script src="/assets/app.js" defer {}
            }
            body {
                header.top {
                    a.brand href="/" { "attnflow" }
                    nav {
                        @for (path, label) in NAVIGATION {
                            @if path == current {
                                a.current href=(path) aria-current="page" { (label) }
                            } @else {
                                a href=(path) { (label) }
                            }
                        }
                    }
                    span.store title="the main store" {
                        (frame.store)
                        @if frame.read_only { " · read-only" }
                    }
                }
                main { h1 { (title) } (body) }
            }
        }
    }
}

/// An HTML response with `status`.
pub fn respond(status: axum::http::StatusCode, markup: Markup) -> Response {
    let mut response = (status, markup.into_string()).into_response();
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The page for a request that failed.
pub fn error_page(error: &PageError, frame: &Frame) -> Response {
    let body = html! {
        p.error role="alert" { (error.message) }
        p { a href="/" { "Back to the runs" } }
    };
    let mut response = respond(error.status, page(&error.title, "", frame, body));
    if error.status == axum::http::StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static("5"));
    }
    response
}

/// SVG drawn by attnflow-report, whose renderers escape every label.
pub fn drawn_svg(svg: String) -> Markup {
    PreEscaped(svg)
}

/// A UTC time, or `-`.
pub fn when(milliseconds: Option<i64>) -> String {
    milliseconds
        .filter(|&ms| ms > 0)
        .map_or_else(|| "-".to_owned(), attnflow_base::time::format_utc)
}

/// A duration as people read it: `850 ms`, `12.3 s`, `4 min 05 s`,
/// `2 h 03 min`.
pub fn duration(milliseconds: i64) -> String {
    let milliseconds = milliseconds.max(0);
    if milliseconds < 1000 {
        return format!("{milliseconds} ms");
    }
    let seconds = milliseconds / 1000;
    if seconds < 60 {
        return format!("{:.1} s", milliseconds as f64 / 1000.0);
    }
    if seconds < 3600 {
        return format!("{} min {:02} s", seconds / 60, seconds % 60);
    }
    format!("{} h {:02} min", seconds / 3600, seconds % 3600 / 60)
}

/// A number with `digits` decimals, or `-`.
pub fn number(value: Option<f64>, digits: usize) -> String {
    match value {
        Some(value) if value.is_finite() => format!("{value:.digits$}"),
        Some(value) => value.to_string(),
        None => "-".to_owned(),
    }
}

/// A fraction as a percentage, or `-`.
pub fn percent(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |value| format!("{:.1}%", value * 100.0))
}

/// A byte count as people read it.
pub fn bytes(count: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = count as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{count} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A link target with query parameters, each value encoded.
pub fn href(path: &str, params: &[(&str, &str)]) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (name, value) in params {
        if !value.is_empty() {
            query.append_pair(name, value);
        }
    }
    let query = query.finish();
    if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    }
}

/// The URL of artifact `file` of run `key`, each path segment encoded.
pub fn file_href(key: &str, file: &str) -> String {
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    let encoded: Vec<String> = file
        .split('/')
        .map(|segment| percent_encoding::utf8_percent_encode(segment, SEGMENT).to_string())
        .collect();
    format!("/runs/{key}/files/{}", encoded.join("/"))
}

/// A status as a badge.
pub fn status_badge(status: &str) -> Markup {
    let class = match status {
        "succeeded" => "badge ok",
        "failed" | "crashed" => "badge bad",
        "running" => "badge live",
        _ => "badge",
    };
    html! { span class=(class) { (status) } }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolated_values_are_escaped_in_text_and_attributes() {
        let hostile = "\"><script>alert('x')</script>";
        let markup =
            html! { a href=(href("/runs", &[("q", hostile)])) title=(hostile) { (hostile) } };
        let text = markup.into_string();
        assert!(!text.contains("<script>"), "{text}");
        assert!(text.contains("&lt;script&gt;"), "{text}");
        assert!(text.contains("title=\"&quot;&gt;&lt;script&gt;"), "{text}");
        assert!(text.contains("href=\"/runs?q=%22%3E%3Cscript%3E"), "{text}");
    }

    #[test]
    fn numbers_and_durations_read_well() {
        assert_eq!(duration(850), "850 ms");
        assert_eq!(duration(12_340), "12.3 s");
        assert_eq!(duration(245_000), "4 min 05 s");
        assert_eq!(duration(7_380_000), "2 h 03 min");
        assert_eq!(number(None, 3), "-");
        assert_eq!(percent(Some(0.9876)), "98.8%");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(href("/x", &[("a", ""), ("b", "c d")]), "/x?b=c+d");
        assert_eq!(
            file_href("run-1", "a b/c#?.json"),
            "/runs/run-1/files/a%20b/c%23%3F.json"
        );
    }
}
