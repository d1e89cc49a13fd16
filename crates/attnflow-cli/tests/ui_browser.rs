//! `attnflow ui` in headless Chromium: every page loads without a console
//! error, the compare chart has one series per run and draws 5 runs of
//! 1,000 steps in well under a second, and the quarantine page shows what
//! a re-check released. `screenshots` (ignored; run it by name) renews the
//! README's pictures in docs/.

mod ui_support;

use std::time::Instant;

use attnflow_testkit::Browser;
use ui_support::{
    fixture, people_quarantine, relaxed_schema, run_key_after, Server, PEOPLE_HELD, PEOPLE_RELEASED,
};

fn server() -> Server {
    let fixture = fixture();
    Server::start(
        &fixture.root,
        &[
            "--db",
            fixture.store.to_str().unwrap(),
            "--runs",
            fixture.runs.to_str().unwrap(),
        ],
    )
}

/// Loads `path` and requires a page without script errors.
fn visit(browser: &Browser, server: &Server, path: &str) -> String {
    let page = browser.dump_dom(&format!("{}{path}", server.base), 3000);
    assert!(page.success, "{path}: chromium failed: {}", page.log);
    assert!(
        page.console_errors().is_empty(),
        "{path}: {:?}",
        page.console_errors()
    );
    assert!(page.dom.contains("</main>"), "{path}: {}", page.dom);
    page.dom
}

/// The `<figure id="ID">` element of `dom`.
fn figure<'a>(dom: &'a str, id: &str) -> &'a str {
    let start = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no {id}"));
    let end = dom[start..].find("</figure>").unwrap() + start;
    &dom[start..end]
}

#[test]
fn every_page_loads_in_chromium_without_errors() {
    let Some(browser) = attnflow_testkit::chromium() else {
        return;
    };
    let server = server();
    let runs = visit(&browser, &server, "/");
    let pipeline = run_key_after(&runs, ">pipeline<");
    let trained = run_key_after(&runs, ">trained-a<");
    let long: Vec<String> = (1..=5)
        .map(|index| run_key_after(&runs, &format!(">long-{index}<")))
        .collect();
    let mut pages = vec![
        "/?kind=training&sort=accuracy".to_owned(),
        format!("/runs/{pipeline}"),
        format!("/runs/{pipeline}?verify=1"),
        format!("/runs/{trained}"),
        "/runs/run-2".to_owned(),
        "/compare".to_owned(),
        "/quarantine".to_owned(),
        format!("/quarantine?store={pipeline}"),
        format!("/quarantine/record?store={pipeline}&id=1"),
        "/quarantine?store=main".to_owned(),
        "/quarantine/record?store=main&id=2".to_owned(),
        "/workflow".to_owned(),
        "/workflow?name=flaky-figure-2".to_owned(),
        "/workflow?name=attnflow-pipeline".to_owned(),
        "/no/such/page".to_owned(),
    ];
    pages.push(format!("/compare?run={}", long.join("&run=")));
    for path in &pages {
        visit(&browser, &server, path);
    }
    // The report inside the run page runs its own self-test in its sandbox.
    let report = visit(
        &browser,
        &server,
        &format!("/runs/{pipeline}/files/report.html"),
    );
    assert!(report.contains("Claims, checked"));
}

#[test]
fn the_compare_chart_draws_one_series_per_run_in_well_under_a_second() {
    let Some(browser) = attnflow_testkit::chromium() else {
        return;
    };
    let server = server();
    let runs = server.get("/").text();
    let keys: Vec<String> = (1..=5)
        .map(|index| run_key_after(&runs, &format!(">long-{index}<")))
        .collect();
    let compare = format!("/compare?run={}", keys.join("&run="));
    let dom = visit(&browser, &server, &compare);
    for id in [
        "chart-loss",
        "chart-objective",
        "chart-regulariser",
        "chart-accuracy",
        "chart-token-accuracy",
    ] {
        let chart = figure(&dom, id);
        assert_eq!(
            chart.matches("<polyline").count(),
            5,
            "{id}: one series per run"
        );
        for index in 1..=5 {
            assert!(
                chart.contains(&format!("long-{index}")),
                "{id} lacks the legend of long-{index}"
            );
        }
    }
    let loss = figure(&dom, "chart-loss");
    let points = loss
        .split("points=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    assert_eq!(
        points.split(' ').count(),
        1000,
        "every logged step is drawn"
    );

    // Chromium's time on the page: loading it minus loading a bare page,
    // interleaved, best of three (the start of the browser itself is the
    // same in both and cancels).
    let server_ms = server.get(&compare).server_ms();
    let (mut compare_best, mut bare_best) = (f64::MAX, f64::MAX);
    for _ in 0..3 {
        let started = Instant::now();
        visit(&browser, &server, &compare);
        compare_best = compare_best.min(started.elapsed().as_secs_f64());
        let started = Instant::now();
        visit(&browser, &server, "/no/such/page");
        bare_best = bare_best.min(started.elapsed().as_secs_f64());
    }
    let drawing = compare_best - bare_best;
    eprintln!(
        "compare of 5 × 1000 steps: {:.0} ms in chromium beyond a bare page ({:.0} ms against {:.0} ms), {server_ms:.0} ms on the server; load {:?}",
        drawing * 1000.0,
        compare_best * 1000.0,
        bare_best * 1000.0,
        std::fs::read_to_string("/proc/loadavg").ok()
    );
    assert!(
        drawing < 1.0,
        "compare took {drawing:.2} s beyond a bare page"
    );
}

#[test]
fn the_quarantine_page_shows_what_a_recheck_released() {
    let Some(browser) = attnflow_testkit::chromium() else {
        return;
    };
    let directory = tempfile::tempdir().unwrap();
    people_quarantine(directory.path(), "main.sqlite");
    let server = Server::start(directory.path(), &["--db", "main.sqlite"]);
    let before = visit(&browser, &server, "/quarantine?store=main");
    assert!(
        before.contains(&format!("<strong id=\"held\">{PEOPLE_HELD}</strong>")),
        "{before}"
    );
    // The form as the browser received it: its CSRF token and the store.
    let marker = "name=\"csrf\" value=\"";
    let start = before.find(marker).unwrap() + marker.len();
    let csrf = &before[start..start + 64];
    let schema: String = relaxed_schema()
        .bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() {
                (byte as char).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect();
    let origin = format!("Origin: {}", server.base);
    let done = server.post(
        "/quarantine/recheck",
        &format!("csrf={csrf}&store=main&schema={schema}"),
        &[&origin],
    );
    assert_eq!(done.status, 200, "{}", done.text());
    let after = visit(&browser, &server, "/quarantine?store=main");
    assert!(
        after.contains(&format!(
            "<strong id=\"held\">{}</strong>",
            PEOPLE_HELD - PEOPLE_RELEASED
        )),
        "{after}"
    );
    let released = visit(&browser, &server, "/quarantine?store=main&released=1");
    assert_eq!(
        released.matches("released</span>").count() as u64,
        PEOPLE_RELEASED
    );
}

/// Renews docs/ui-runs.png and docs/ui-compare.png for the README:
/// `cargo test -p attnflow-cli --test ui_browser -- --ignored screenshots`.
#[test]
#[ignore = "writes the README's screenshots into docs/"]
fn screenshots() {
    let Some(browser) = attnflow_testkit::chromium() else {
        return;
    };
    // Names relative to the fixture's folder, so the pictures show no
    // path of this machine.
    let fixture = fixture();
    let server = Server::start(&fixture.root, &["--db", "store.sqlite", "--runs", "runs"]);
    let runs = server.get("/").text();
    let keys: Vec<String> = (1..=5)
        .map(|index| run_key_after(&runs, &format!(">long-{index}<")))
        .collect();
    let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs");
    for (path, file, height) in [
        ("/".to_owned(), "ui-runs.png", 640),
        (
            format!("/compare?run={}", keys.join("&run=")),
            "ui-compare.png",
            1000,
        ),
    ] {
        let target = docs.join(file);
        let shot = browser.screenshot(&format!("{}{path}", server.base), &target, 1280, height);
        assert!(shot.success, "{file}: {}", shot.log);
    }
}
