//! Figures decode, have the size their layout promises, and put each value
//! in the right cell.
//!
//! Set `ATTNFLOW_PREVIEW_DIR` to keep the rendered files for a look.

use attnflow_report::{viridis, Figure, Heatmap, ImageFormat};

fn preview(name: &str, bytes: &[u8]) {
    if let Ok(dir) = std::env::var("ATTNFLOW_PREVIEW_DIR") {
        std::fs::write(std::path::Path::new(&dir).join(name), bytes).unwrap();
    }
}

fn decode(bytes: &[u8]) -> (u32, u32, Vec<u8>) {
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = decoder.read_info().expect("a PNG header");
    let mut pixels = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut pixels).expect("PNG data");
    assert_eq!(info.color_type, png::ColorType::Rgb);
    pixels.truncate(info.buffer_size());
    (info.width, info.height, pixels)
}

fn pixel(pixels: &[u8], width: u32, (x, y): (i32, i32)) -> (u8, u8, u8) {
    let at = (y as usize * width as usize + x as usize) * 3;
    (pixels[at], pixels[at + 1], pixels[at + 2])
}

fn identity(n: usize) -> Vec<f64> {
    (0..n * n)
        .map(|i| if i / n == i % n { 1.0 } else { 0.0 })
        .collect()
}

fn tokens(n: usize) -> Vec<String> {
    [
        "The",
        "cat",
        "sat",
        "on",
        "the",
        "mat",
        ".",
        "<script>alert(1)</script>",
    ]
    .iter()
    .cycle()
    .take(n)
    .map(|t| t.to_string())
    .collect()
}

#[test]
fn identity_lights_exactly_the_diagonal() {
    let n = 8;
    let heatmap = Heatmap::new("identity", n, n, identity(n))
        .unwrap()
        .with_labels(tokens(n), tokens(n))
        .unwrap();
    let figure = Figure::single("Identity attention", heatmap)
        .with_scale(0.0, 1.0)
        .with_scale_label("h = a / max a");
    let layout = figure.layout(ImageFormat::Png);
    let bytes = figure.render(ImageFormat::Png).unwrap();
    preview("identity.png", &bytes);
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let (width, height, pixels) = decode(&bytes);
    assert_eq!((width, height), (layout.width, layout.height));
    let panel = &layout.panels[0];
    assert_eq!(panel.displayed, (n, n));
    assert_eq!(panel.block, 1);
    for row in 0..n {
        for column in 0..n {
            let (left, top, right, bottom) = panel.cell_rect(row, column);
            let centre = ((left + right) / 2, (top + bottom) / 2);
            let expected = if row == column {
                viridis(1.0)
            } else {
                viridis(0.0)
            };
            assert_eq!(
                pixel(&pixels, width, centre),
                expected,
                "cell ({row}, {column})"
            );
        }
    }
}

#[test]
fn svg_has_title_labels_escaped_and_colour_bar() {
    let n = 8;
    let heatmap = Heatmap::new("layer 0 head 1", n, n, identity(n))
        .unwrap()
        .with_labels(tokens(n), tokens(n))
        .unwrap();
    let bytes = Figure::single("Attention <map>", heatmap)
        .render(ImageFormat::Svg)
        .unwrap();
    preview("identity.svg", &bytes);
    let svg = String::from_utf8(bytes).unwrap();
    assert!(svg.contains("<svg"));
    assert!(svg.contains("Attention &lt;map&gt;"));
    assert!(svg.contains("\ncat\n"), "token labels are text elements");
    // The long token is cut to 12 characters and escaped, never markup.
    assert!(!svg.contains("<script>"));
    assert!(svg.contains("&lt;script&gt;"));
    // Colour bar ticks.
    assert!(svg.contains("\n0.5\n"));
    // n × n cells plus background, colour bar rows and frame.
    assert!(svg.matches("<rect").count() >= n * n);
}

#[test]
fn large_maps_are_pooled_and_say_so() {
    let n = 1500;
    let values: Vec<f64> = (0..n * n).map(|i| ((i % n) as f64) / n as f64).collect();
    let heatmap = Heatmap::new("ramp", n, n, values).unwrap();
    let figure = Figure::single("A 1500-token map", heatmap);
    let layout = figure.layout(ImageFormat::Png);
    assert_eq!(layout.panels[0].block, 3);
    assert_eq!(layout.panels[0].displayed, (500, 500));
    let bytes = figure.render(ImageFormat::Png).unwrap();
    let (width, height, _) = decode(&bytes);
    assert_eq!((width, height), (layout.width, layout.height));
    let svg = String::from_utf8(figure.render(ImageFormat::Svg).unwrap()).unwrap();
    // SVG pools harder: at most SVG_MAX_CELLS cells (200 × 200 here).
    let svg_layout = figure.layout(ImageFormat::Svg);
    assert_eq!(svg_layout.panels[0].block, 8);
    assert!(svg.contains("mean of 8×8 blocks"));
    assert!(svg.matches("<rect").count() < attnflow_report::SVG_MAX_CELLS + 1000);
}

#[test]
fn grid_of_layers_and_heads() {
    let (layers, heads, n) = (3, 4, 6);
    let panels: Vec<Heatmap> = (0..layers * heads)
        .map(|index| {
            let shifted: Vec<f64> = (0..n * n)
                .map(|i| {
                    if (i / n + index) % n == i % n {
                        1.0
                    } else {
                        0.0
                    }
                })
                .collect();
            Heatmap::new(
                format!("L{} H{}", index / heads, index % heads),
                n,
                n,
                shifted,
            )
            .unwrap()
        })
        .collect();
    let figure = Figure::grid("layers × heads", panels, heads);
    let layout = figure.layout(ImageFormat::Png);
    assert_eq!(layout.panels.len(), layers * heads);
    // Panels of one row share a top edge; rows go down.
    assert_eq!(layout.panels[0].origin.1, layout.panels[heads - 1].origin.1);
    assert!(layout.panels[heads].origin.1 > layout.panels[0].origin.1);
    let bytes = figure.render(ImageFormat::Png).unwrap();
    preview("grid.png", &bytes);
    let (width, _, pixels) = decode(&bytes);
    // Panel 5 (layer 1, head 1) lights cell (0, 5): (row + 5) % 6 == column.
    let panel = &layout.panels[5];
    let (l, t, r, b) = panel.cell_rect(0, 5);
    assert_eq!(
        pixel(&pixels, width, ((l + r) / 2, (t + b) / 2)),
        viridis(1.0)
    );
    let (l, t, r, b) = panel.cell_rect(0, 0);
    assert_eq!(
        pixel(&pixels, width, ((l + r) / 2, (t + b) / 2)),
        viridis(0.0)
    );
}

#[test]
fn bad_data_is_an_error_not_a_panic() {
    assert!(Heatmap::new("short", 2, 2, vec![0.0; 3]).is_err());
    assert!(Heatmap::new("empty", 0, 0, vec![]).is_err());
    let error = Heatmap::new("nan", 2, 2, vec![0.0, 1.0, f64::NAN, 0.0]).unwrap_err();
    assert!(error.to_string().contains("row 1, column 0"), "{error}");
    let labels = Heatmap::new("labels", 2, 2, vec![0.0; 4])
        .unwrap()
        .with_labels(vec!["a".into()], vec![]);
    assert!(labels.is_err());
    assert!(Figure::grid("none", vec![], 3)
        .render(ImageFormat::Png)
        .is_err());
}

#[test]
fn odd_shapes_render_at_their_layout_size() {
    for (rows, columns) in [(1, 1), (1, 7), (7, 1), (3, 50), (300, 2), (601, 599)] {
        let values: Vec<f64> = (0..rows * columns).map(|i| (i % 13) as f64 - 3.0).collect();
        let labels = |count: usize| (0..count).map(|i| format!("token {i}")).collect();
        let heatmap = Heatmap::new("odd", rows, columns, values)
            .unwrap()
            .with_labels(labels(rows), labels(columns))
            .unwrap();
        let figure = Figure::single(format!("{rows} × {columns}"), heatmap);
        let bytes = figure.render(ImageFormat::Png).unwrap();
        let (width, height, _) = decode(&bytes);
        let layout = figure.layout(ImageFormat::Png);
        assert_eq!(
            (width, height),
            (layout.width, layout.height),
            "{rows} × {columns}"
        );
        let svg = String::from_utf8(figure.render(ImageFormat::Svg).unwrap()).unwrap();
        assert!(svg.contains(&format!("{rows} × {columns}")));
    }
}
