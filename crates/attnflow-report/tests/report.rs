//! The HTML report: self-contained, escaped, carries its data, and works in
//! a real browser (headless Chromium) when one is installed.

use attnflow_report::{
    AttentionExplorer, Figure, Heatmap, InlineSvg, KeyValues, Paragraphs, Report, Table,
};

const EVIL: &str = "<script>alert(1)</script>";

fn explorer(tokens: Vec<String>, layers: usize, heads: usize) -> AttentionExplorer {
    let n = tokens.len();
    let maps = (0..layers)
        .map(|layer| {
            (0..heads)
                .map(|head| {
                    // Head h attends from i to (i + h + layer) mod n.
                    (0..n * n)
                        .map(|cell| {
                            let (i, j) = (cell / n, cell % n);
                            if (i + head + layer) % n == j {
                                1.0
                            } else {
                                0.0
                            }
                        })
                        .collect()
                })
                .collect()
        })
        .collect();
    AttentionExplorer {
        title: "Attention".into(),
        tokens,
        maps,
    }
}

fn sample_report() -> String {
    let tokens: Vec<String> = ["The", "cat", EVIL, "sat", "</script>", "&amp;"]
        .iter()
        .map(|t| t.to_string())
        .collect();
    let heatmap = Heatmap::new("layer 0 head 0", 6, 6, vec![1.0 / 6.0; 36])
        .unwrap()
        .with_labels(tokens.clone(), tokens.clone())
        .unwrap();
    let figure = Figure::single("Rollout", heatmap);
    Report::new(format!("Inspection of {EVIL}"))
        .section(KeyValues {
            title: "Run".into(),
            entries: vec![("text".into(), EVIL.into())],
        })
        .section(explorer(tokens, 2, 3))
        .section(InlineSvg::render("Rollout", "mean fusion", &figure).unwrap())
        .section(Table {
            title: "Head statistics".into(),
            caption: "one row per head".into(),
            headers: vec!["head".into(), "entropy".into()],
            rows: vec![vec![EVIL.into(), "0.25".into()]],
        })
        .section(Paragraphs {
            title: "Notes".into(),
            paragraphs: vec![format!("token {EVIL}")],
        })
        .render()
        .unwrap()
}

#[test]
fn report_is_self_contained_and_escapes_user_strings() {
    let html = sample_report();
    assert!(html.starts_with("<!DOCTYPE html>"));
    for external in ["http://", "https://", "src=", "<link", "@import"] {
        assert!(!html.contains(external), "report references {external}");
    }
    // Exactly one script element carries code (the explorer's); user
    // strings never open another.
    assert_eq!(html.matches("<script>").count(), 1);
    assert_eq!(html.matches("<script type=\"application/json\"").count(), 1);
    assert_eq!(html.matches("</script>").count(), 2);
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(html.contains("\\u003cscript\\u003ealert(1)\\u003c/script\\u003e"));
    assert!(html.contains("&amp;amp;"));
    // The data is there: 2 layers × 3 heads of 36 16-bit values.
    assert!(html.contains("\"bits\":16"));
    assert_eq!(html.matches("<option value=").count(), 2 + 3);
    assert!(html.contains("<svg"));
    assert!(!html.contains("<?xml"));
}

#[test]
fn malformed_sections_are_errors() {
    let table = Table {
        title: "t".into(),
        caption: String::new(),
        headers: vec!["a".into(), "b".into()],
        rows: vec![vec!["1".into()]],
    };
    let error = Report::new("r").section(table).render().unwrap_err();
    assert!(error.to_string().contains("row 0 has 1 cells"), "{error}");
    let mut ragged = explorer(vec!["a".into(), "b".into()], 2, 2);
    ragged.maps[1].pop();
    assert!(Report::new("r").section(ragged).render().is_err());
    let mut nan = explorer(vec!["a".into(), "b".into()], 1, 1);
    nan.maps[0][0][3] = f64::NAN;
    let error = Report::new("r").section(nan).render().unwrap_err();
    assert!(error.to_string().contains("row 1, column 1"), "{error}");
}

#[test]
fn large_reports_switch_to_eight_bits() {
    let tokens: Vec<String> = (0..512).map(|i| format!("t{i}")).collect();
    let section = explorer(tokens, 6, 6);
    let html = Report::new("big").section(section).render().unwrap();
    assert!(html.contains("\"bits\":8"));
    // 36 maps × 512² bytes, base64: about 12.6 MB.
    assert!(html.len() < 13_000_000, "{} bytes", html.len());
}

/// Opens the report in headless Chromium with `#selftest`: the page's own
/// script switches the head selector (a real `change` event on the real
/// `<select>`) and records whether the canvas changed. Checks there were
/// no script errors and no token became markup.
#[test]
fn report_works_in_headless_chromium() {
    let Some(browser) = attnflow_testkit::chromium() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.html");
    std::fs::write(&path, sample_report()).unwrap();
    let page = browser.dump_dom(&format!("file://{}#selftest", path.display()), 5000);
    let (dom, log) = (&page.dom, &page.log);
    assert!(page.success, "chromium failed: {log}");
    assert!(
        dom.contains("data-selftest=\"view-changed\""),
        "head switch did not change the view:\n{dom}"
    );
    assert!(!dom.contains("data-errors"), "script errors: {dom}");
    assert!(!log.contains("Uncaught"), "console errors: {log}");
    // The explorer drew layer 0 after switching to head 1.
    assert!(dom.contains("data-view=\"0/1\""));
    // The hostile token is still text in the live DOM.
    assert!(!dom.contains("<script>alert(1)"));
}
