//! `attnflow ui` over HTTP: the real binary on a free loopback port, real
//! run folders and stores made by the real binary, and a client that sends
//! exactly the bytes each test means (so `..` and broken requests reach
//! the server as written).

mod ui_support;

use std::time::{Duration, Instant};

use attnflow_pipeline::Manifest;
use ui_support::{
    attnflow, fixture, people_quarantine, relaxed_schema, run_key_after, run_ok, Server, HOSTILE,
    PEOPLE_HELD, PEOPLE_RELEASED,
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

/// The escaped form maud writes of [`HOSTILE`] with `/` made `|`.
fn hostile_escaped() -> String {
    HOSTILE
        .replace('/', "|")
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn form_value(page: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = page
        .find(&marker)
        .unwrap_or_else(|| panic!("no field {name}"))
        + marker.len();
    page[start..].split('"').next().unwrap().to_owned()
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                (byte as char).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

#[test]
fn every_page_answers_with_its_content_and_status() {
    let fixture = fixture();
    let server = server();
    let runs = server.get("/");
    assert_eq!(runs.status, 200, "{}", runs.text());
    let page = runs.text();
    assert!(
        page.contains("pipeline") && page.contains("flaky-figure-2"),
        "{page}"
    );
    for name in ["trained-a", "trained-b", "long-1", "long-5"] {
        assert!(page.contains(name), "runs page lacks {name}");
    }
    assert!(runs
        .header("content-security-policy")
        .unwrap()
        .contains("default-src 'none'"));
    assert!(runs.header("server-timing").is_some());

    // The pipeline run: summary, report, manifest with hashes, events.
    let key = run_key_after(&page, ">pipeline<");
    assert!(
        key.starts_with("run-"),
        "the pipeline run is in the main store: {key}"
    );
    let run = server.get(&format!("/runs/{key}"));
    assert_eq!(run.status, 200);
    let text = run.text();
    let manifest: Manifest = serde_json::from_str(
        &std::fs::read_to_string(fixture.pipeline.join("manifest.json")).unwrap(),
    )
    .unwrap();
    for artifact in &manifest.artifacts {
        assert!(
            text.contains(&artifact.sha256),
            "the page lacks the hash of {}",
            artifact.file
        );
    }
    for part in [
        "Event log",
        "run_finished",
        "transition",
        "Storage",
        "iframe",
        "chart-loss",
        "Quarantine of this run",
    ] {
        assert!(text.contains(part), "run page lacks {part}");
    }
    let verified = server.get(&format!("/runs/{key}?verify=1")).text();
    assert!(
        verified.contains("Every file matches its size and SHA-256"),
        "{verified}"
    );

    // Filters, sorting and paging.
    let training = server.get("/?kind=training&sort=loss&order=asc").text();
    // The table only: the workflow filter still offers every workflow.
    let training = &training[training.find("<tbody>").unwrap()..];
    assert!(training.contains("long-5") && !training.contains("flaky-figure-2"));
    assert!(
        training.find("long-5").unwrap() < training.find("long-1").unwrap(),
        "lowest loss first"
    );
    let paged = server.get("/?per=2&page=2").text();
    assert!(paged.contains("Runs 3–4 of"), "{paged}");
    let flaky = server.get("/?workflow=flaky-figure-2").text();
    assert!(flaky.contains("of 3<"), "three flaky runs: {flaky}");

    // Compare, quarantine, workflow.
    let trained_a = run_key_after(&page, ">trained-a<");
    let trained_b = run_key_after(&page, ">trained-b<");
    let compare = server
        .get(&format!("/compare?run={trained_a}&run={trained_b}"))
        .text();
    for part in [
        "chart-loss",
        "chart-objective",
        "chart-regulariser",
        "chart-accuracy",
        "learning_rate",
        "# variant b",
    ] {
        assert!(compare.contains(part), "compare lacks {part}");
    }
    assert!(server
        .get("/compare")
        .text()
        .contains("Choose two or more runs"));
    let chooser = server.get("/quarantine").text();
    assert!(
        chooser.contains("main store") && chooser.contains("pipeline"),
        "{chooser}"
    );
    let held = server.get(&format!("/quarantine?store={key}")).text();
    assert!(
        held.contains("<strong id=\"held\">7</strong>"),
        "the default data's 7 broken records: {held}"
    );
    for rule in [
        "unique",
        "type",
        "min_length",
        "one_of",
        "required",
        "column_count",
    ] {
        assert!(held.contains(rule), "quarantine lacks rule {rule}");
    }
    let workflow = server.get("/workflow?name=flaky-figure-2").text();
    for part in [
        "Transition matrix",
        "Absorption",
        "P(end in Completed)",
        "<svg",
        "State diagram",
    ] {
        assert!(workflow.contains(part), "workflow page lacks {part}");
    }
    // The page's absorption probability is the analysis' own.
    let analysis = run_ok(
        &fixture.root,
        &[
            "workflow",
            "analyze",
            "--db",
            fixture.store.to_str().unwrap(),
            "--workflow",
            "flaky-figure-2",
            "--json",
        ],
    );
    let analysis: serde_json::Value = serde_json::from_str(&analysis).unwrap();
    let analysis = if analysis.is_array() {
        analysis[0].clone()
    } else {
        analysis
    };
    let completed = analysis["absorption"]["absorption_probabilities"]["Initialized"]["Completed"]
        .as_f64()
        .unwrap();
    assert!(
        workflow.contains(&format!("{completed:.3}")),
        "page lacks B = {completed:.3}"
    );

    // Unknown things are 404 pages; bad parameters are 400 pages naming them.
    for path in [
        "/runs/run-999999",
        "/runs/nonsense",
        "/runs/dir-000000000000",
        "/nothing/here",
    ] {
        let reply = server.get(path);
        assert_eq!(reply.status, 404, "{path}");
        assert!(reply
            .header("content-type")
            .unwrap()
            .starts_with("text/html"));
    }
    let bad = server.get("/?sort=%3Cevil%3E");
    assert_eq!(bad.status, 400);
    assert!(
        bad.text().contains("parameter `sort`: `&lt;evil&gt;`"),
        "{}",
        bad.text()
    );
    assert_eq!(server.get("/?page=abc").status, 400);
    assert_eq!(server.get("/quarantine/record?store=main&id=x").status, 400);
    let wrong_method = server.post("/", "", &[]);
    assert_eq!(wrong_method.status, 405);
    assert!(wrong_method.text().contains("Method not allowed"));
}

#[test]
fn hostile_names_and_record_values_stay_text() {
    let server = server();
    let page = server.get("/").text();
    assert!(
        !page.contains("<script>alert"),
        "a folder name became markup"
    );
    assert!(
        page.contains(&hostile_escaped()),
        "the hostile folder is listed, escaped"
    );
    // Echoed search text, in an attribute and in text.
    let echoed = server
        .get(&format!("/?q={}", encode("\"><script>alert(3)</script>")))
        .text();
    assert!(!echoed.contains("<script>alert(3)"));
    assert!(
        echoed.contains("value=\"&quot;&gt;&lt;script&gt;alert(3)&lt;/script&gt;\""),
        "{echoed}"
    );
    // Record values in the quarantine listing and on the record's page.
    let listing = server.get("/quarantine?store=main").text();
    assert!(!listing.contains("<script>alert(2)") && listing.contains("&lt;script&gt;alert(2)"));
    assert!(
        !listing.contains("\" onmouseover"),
        "a quote in a value closed an attribute"
    );
    let start = listing
        .find("/quarantine/record?store=main&amp;id=")
        .unwrap();
    let ids: Vec<String> = listing[start..]
        .split("id=")
        .skip(1)
        .map(|rest| rest.chars().take_while(char::is_ascii_digit).collect())
        .collect();
    let mut marked = 0;
    for id in ids.iter().filter(|id| !id.is_empty()) {
        let record = server
            .get(&format!("/quarantine/record?store=main&id={id}"))
            .text();
        assert!(
            !record.contains("<script>alert(2)") && !record.contains("\" onmouseover"),
            "{record}"
        );
        marked += record.matches("<mark>").count();
    }
    assert!(
        marked >= 4,
        "every field violation is marked on its record's page ({marked})"
    );
    let hostile = server.get("/quarantine/record?store=main&id=2").text();
    assert!(
        hostile.contains("<mark>&lt;script&gt;alert(2)&lt;/script&gt;</mark>"),
        "{hostile}"
    );
}

#[test]
fn files_are_served_only_when_the_manifest_names_them() {
    let fixture = fixture();
    let server = server();
    let page = server.get("/").text();
    let key = run_key_after(&page, ">pipeline<");
    let manifest: Manifest = serde_json::from_str(
        &std::fs::read_to_string(fixture.pipeline.join("manifest.json")).unwrap(),
    )
    .unwrap();
    let quality = manifest
        .artifacts
        .iter()
        .find(|artifact| artifact.file == "quality.json")
        .unwrap();
    let reply = server.get(&format!("/runs/{key}/files/quality.json"));
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.bytes,
        std::fs::read(fixture.pipeline.join("quality.json")).unwrap()
    );
    assert_eq!(
        reply.header("etag"),
        Some(format!("\"{}\"", quality.sha256).as_str())
    );
    assert!(reply
        .header("content-disposition")
        .unwrap()
        .starts_with("attachment"));
    let report = server.get(&format!("/runs/{key}/files/report.html"));
    assert_eq!(report.status, 200);
    assert!(report
        .header("content-security-policy")
        .unwrap()
        .starts_with("sandbox allow-scripts"));
    let weights = manifest
        .artifacts
        .iter()
        .find(|artifact| artifact.file.ends_with(".safetensors"))
        .unwrap();
    assert_eq!(
        server
            .get(&format!("/runs/{key}/files/{}", weights.file))
            .status,
        200
    );

    for (path, status) in [
        // A real file the manifest does not name (the live data store).
        ("data.sqlite".to_owned(), 404),
        ("../../store.sqlite".to_owned(), 400),
        ("training/../quality.json".to_owned(), 400),
        ("%2e%2e/%2e%2e/store.sqlite".to_owned(), 400),
        ("..%2F..%2Fstore.sqlite".to_owned(), 400),
        ("/etc/passwd".to_owned(), 400),
        ("%2Fetc%2Fpasswd".to_owned(), 400),
        ("..%5C..%5Cstore.sqlite".to_owned(), 400),
        (encode(fixture.store.to_str().unwrap()), 400),
        ("quality.json%00.png".to_owned(), 400),
    ] {
        let reply = server.get(&format!("/runs/{key}/files/{path}"));
        assert_eq!(reply.status, status, "{path}: {}", reply.text());
        assert!(
            !reply.text().contains("SQLite format"),
            "{path} leaked a file"
        );
    }
    assert_eq!(server.get("/runs/../files/quality.json").status, 404);
    assert_eq!(server.get("/runs/%2e%2e/files/quality.json").status, 404);
}

#[test]
fn a_tampered_manifest_cannot_lead_out_of_its_folder() {
    let directory = tempfile::tempdir().unwrap();
    let folder = directory.path().join("runs/evil");
    ui_support::write_training_logs(&folder, 3, 1.0);
    let outside = directory.path().join("secret.txt");
    std::fs::write(&outside, "secret").unwrap();
    std::os::unix::fs::symlink(&outside, folder.join("link.txt")).unwrap();
    std::fs::write(folder.join("changed.txt"), "longer than recorded").unwrap();
    let entry = |file: &str, bytes: u64| attnflow_pipeline::Artifact {
        file: file.to_owned(),
        bytes,
        sha256: "0".repeat(64),
    };
    let manifest = Manifest {
        pipeline: "evil".into(),
        store: "s".into(),
        data_store: "d".into(),
        artifacts: vec![
            entry("../secret.txt", 6),
            entry("link.txt", 6),
            entry("changed.txt", 3),
        ],
    };
    std::fs::write(
        folder.join("manifest.json"),
        serde_json::to_string(&manifest).unwrap(),
    )
    .unwrap();
    let server = Server::start(
        directory.path(),
        &[
            "--db",
            "none.sqlite",
            "--runs",
            directory.path().join("runs").to_str().unwrap(),
        ],
    );
    let key = run_key_after(&server.get("/").text(), ">evil<");
    assert_eq!(
        server
            .get(&format!("/runs/{key}/files/../secret.txt"))
            .status,
        400
    );
    assert_eq!(
        server.get(&format!("/runs/{key}/files/link.txt")).status,
        403
    );
    assert_eq!(
        server.get(&format!("/runs/{key}/files/changed.txt")).status,
        409
    );
    assert_eq!(
        server
            .get(&format!("/runs/{key}/files/metrics.jsonl"))
            .status,
        404
    );
}

#[test]
fn the_recheck_needs_post_csrf_and_a_writable_server_and_releases_what_now_passes() {
    let directory = tempfile::tempdir().unwrap();
    people_quarantine(directory.path(), "main.sqlite");
    let read_only = Server::start(directory.path(), &["--db", "main.sqlite", "--read-only"]);
    let page = read_only.get("/quarantine?store=main").text();
    assert!(page.contains("read-only") && !page.contains("name=\"csrf\""));
    let refused = read_only.post(
        "/quarantine/recheck",
        &format!(
            "store=main&schema={}&csrf=anything",
            encode(&relaxed_schema())
        ),
        &[],
    );
    assert_eq!(refused.status, 403);
    assert!(refused.text().contains("read-only"));
    drop(read_only);

    let server = Server::start(directory.path(), &["--db", "main.sqlite"]);
    let page = server.get("/quarantine?store=main").text();
    assert!(
        page.contains(&format!("<strong id=\"held\">{PEOPLE_HELD}</strong>")),
        "{page}"
    );
    let csrf = form_value(&page, "csrf");
    let body = |token: &str| {
        format!(
            "csrf={token}&store=main&schema={}",
            encode(&relaxed_schema())
        )
    };
    assert_eq!(
        server.get("/quarantine/recheck").status,
        405,
        "a change is POST only"
    );
    assert_eq!(
        server
            .post(
                "/quarantine/recheck",
                &format!("store=main&schema={}", encode(&relaxed_schema())),
                &[]
            )
            .status,
        403
    );
    assert_eq!(
        server
            .post("/quarantine/recheck", &body("0123"), &[])
            .status,
        403
    );
    let cross = server.post(
        "/quarantine/recheck",
        &body(&csrf),
        &["Origin: http://evil.example"],
    );
    assert_eq!(cross.status, 403, "a change from another site");
    let broken = server.post(
        "/quarantine/recheck",
        &format!("csrf={csrf}&store=main&schema=name%3D"),
        &[],
    );
    assert_eq!(
        broken.status,
        400,
        "a broken schema is named: {}",
        broken.text()
    );
    assert!(broken.text().contains("edited schema"));
    // Nothing above changed the store.
    let page = server.get("/quarantine?store=main").text();
    assert!(page.contains(&format!("<strong id=\"held\">{PEOPLE_HELD}</strong>")));

    let origin = format!("Origin: {}", server.base);
    let done = server.post("/quarantine/recheck", &body(&csrf), &[&origin]);
    assert_eq!(done.status, 200, "{}", done.text());
    let text = done.text();
    assert!(
        text.contains(&format!(
            "<strong id=\"released\">{PEOPLE_RELEASED}</strong>"
        )),
        "{text}"
    );
    assert!(text.contains(&format!(
        "<strong id=\"still-held\">{}</strong>",
        PEOPLE_HELD - PEOPLE_RELEASED
    )));
    let page = server.get("/quarantine?store=main").text();
    assert!(page.contains(&format!(
        "<strong id=\"held\">{}</strong>",
        PEOPLE_HELD - PEOPLE_RELEASED
    )));
    // The CLI sees the same store.
    let listed = run_ok(
        directory.path(),
        &["data", "quarantine", "--db", "main.sqlite", "--json"],
    );
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(
        listed["entries"].as_array().unwrap().len() as u64,
        PEOPLE_HELD - PEOPLE_RELEASED
    );
}

#[test]
fn oversized_bodies_and_broken_requests_are_refused_and_the_server_lives_on() {
    let mut server = server();
    let big = "x".repeat(2 << 20);
    let reply = server.post("/quarantine/recheck", &format!("schema={big}"), &[]);
    assert_eq!(reply.status, 413, "{}", reply.text());
    let declared = server.raw(
        format!(
            "POST /login HTTP/1.1\r\nHost: {}\r\nContent-Length: 999999999\r\nConnection: close\r\n\r\nabc",
            server.address
        )
        .as_bytes(),
    );
    assert_eq!(declared.status, 413);
    for garbage in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET / HTTP/9.9\r\n\r\n",
        b"GET /\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
    ] {
        let reply = server.raw(garbage);
        assert!(
            reply.status == 0 || (400..500).contains(&reply.status),
            "{garbage:?}: {}",
            reply.status
        );
        assert!(server.alive());
    }
    let undecodable = server.get("/runs/%ff%fe");
    assert_eq!(undecodable.status, 400, "{}", undecodable.text());
    let long = server.get(&format!("/?q={}", "a".repeat(100_000)));
    assert!(long.status == 200 || long.status == 414 || long.status == 431 || long.status == 0);
    assert!(server.alive());
    assert_eq!(server.get("/").status, 200);
}

#[test]
fn a_loopback_server_refuses_other_host_names() {
    let server = server();
    // A page of another site reaching 127.0.0.1 through its own name
    // (DNS rebinding) sends that name as the Host.
    let raw = server.raw(b"GET / HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n");
    assert_eq!(raw.status, 421, "{}", raw.text());
    assert!(!raw.text().contains("flaky-figure-2"));
    let named = server.raw(
        format!(
            "GET / HTTP/1.1\r\nHost: localhost:{}\r\nConnection: close\r\n\r\n",
            server.address.port()
        )
        .as_bytes(),
    );
    assert_eq!(named.status, 200);
}

#[test]
fn another_host_needs_a_token_and_the_token_is_checked() {
    let directory = tempfile::tempdir().unwrap();
    let refused = attnflow()
        .current_dir(directory.path())
        .args(["ui", "--host", "0.0.0.0", "--port", "0"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--token"));
    let weak = attnflow()
        .current_dir(directory.path())
        .args(["ui", "--host", "0.0.0.0", "--port", "0", "--token", "short"])
        .output()
        .unwrap();
    assert_eq!(weak.status.code(), Some(2));
    let bad_host = attnflow()
        .current_dir(directory.path())
        .args(["ui", "--host", "not a host", "--port", "0"])
        .output()
        .unwrap();
    assert_eq!(bad_host.status.code(), Some(2));

    let token = "correct-horse-battery-staple";
    let server = Server::start(
        directory.path(),
        &["--host", "0.0.0.0", "--token", token, "--db", "none.sqlite"],
    );
    let denied = server.get("/");
    assert_eq!(denied.status, 401);
    assert!(denied.text().contains("Sign in"));
    assert_eq!(
        server
            .get_with("/", &["Authorization: Bearer wrong-token-wrong-token"])
            .status,
        401
    );
    assert_eq!(
        server
            .get_with("/", &[&format!("Authorization: Bearer {token}")])
            .status,
        200
    );
    assert_eq!(
        server
            .get_with("/", &[&format!("Cookie: attnflow_token={token}")])
            .status,
        200
    );
    let signed = server.get(&format!("/workflow?token={token}"));
    assert_eq!(signed.status, 303);
    assert_eq!(signed.header("location"), Some("/workflow"));
    assert!(signed
        .header("set-cookie")
        .unwrap()
        .contains("HttpOnly; SameSite=Strict"));
    let login = server.post("/login", &format!("token={token}"), &[]);
    assert_eq!(login.status, 303);
    assert_eq!(server.post("/login", "token=nope", &[]).status, 401);
    assert_eq!(
        server.get("/assets/app.css").status,
        200,
        "the sign-in page's style needs no token"
    );
}

#[test]
fn missing_and_locked_stores_answer_with_error_pages() {
    let directory = tempfile::tempdir().unwrap();
    let server = Server::start(directory.path(), &["--db", "missing.sqlite"]);
    let runs = server.get("/");
    assert_eq!(runs.status, 200);
    assert!(runs.text().contains("does not exist"), "{}", runs.text());
    let workflow = server.get("/workflow");
    assert_eq!(workflow.status, 503);
    assert!(workflow.text().contains("missing.sqlite does not exist"));
    assert!(
        !directory.path().join("missing.sqlite").exists(),
        "a reader never creates a store"
    );
    drop(server);

    let store = directory.path().join("locked.sqlite");
    run_ok(
        directory.path(),
        &[
            "workflow",
            "run",
            "--db",
            store.to_str().unwrap(),
            "--quiet",
        ],
    );
    // A holder in exclusive locking mode shuts out every other connection
    // (in WAL mode it can only take that lock while no other one is open,
    // so it takes it before the server's first read of the store).
    let location = attnflow_store::Location::Sqlite(store.clone());
    let holder = attnflow_store::Connection::open(&location, "").unwrap();
    holder
        .batch("lock", "PRAGMA locking_mode = EXCLUSIVE; BEGIN EXCLUSIVE; UPDATE wf_runs SET updated_ms = updated_ms;")
        .unwrap();
    let server = Server::start(directory.path(), &["--db", "locked.sqlite"]);
    let started = Instant::now();
    for path in ["/", "/workflow", "/runs/run-1"] {
        let reply = server.get(path);
        assert_eq!(reply.status, 503, "{path}: {}", reply.text());
        assert!(reply.text().contains("lock"), "{}", reply.text());
        assert_eq!(reply.header("retry-after"), Some("5"));
    }
    assert!(started.elapsed() < Duration::from_secs(30));
    holder.batch("unlock", "COMMIT").unwrap();
    drop(holder);
    assert_eq!(server.get("/runs/run-1").status, 200);
}

#[test]
fn the_first_page_of_10000_runs_is_served_in_under_100_ms_in_under_150_mb() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("big.sqlite");
    {
        let store = attnflow_workflow::Store::open(&path).unwrap();
        let spec = attnflow_workflow::Spec::default_spec();
        let source = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/workflows/flaky.toml"
        ))
        .unwrap();
        store
            .connection()
            .batch(
                "generate",
                &format!(
                    "BEGIN; WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10000) \
                     INSERT INTO wf_runs (workflow, spec_origin, spec_source, status, current_state, created_ms, updated_ms, finished_ms, queue, ready_ms) \
                     SELECT 'generated-' || (i % 7), 'generated.toml', '{}', \
                     CASE i % 4 WHEN 0 THEN 'running' WHEN 1 THEN 'succeeded' WHEN 2 THEN 'failed' ELSE 'crashed' END, \
                     '{}', 1700000000000 + i * 1000, 1700000000000 + i * 1000, \
                     CASE i % 4 WHEN 0 THEN NULL ELSE 1700000000000 + i * 1000 + (i * 37) % 5000 END, 'default', 0 FROM n; COMMIT;",
                    source.replace('\'', "''"),
                    spec.initial
                ),
            )
            .unwrap();
    }
    let server = Server::start(directory.path(), &["--db", "big.sqlite"]);
    let mut times = Vec::new();
    for path in [
        "/",
        "/",
        "/",
        "/",
        "/",
        "/?sort=duration",
        "/?page=150",
        "/?status=failed&workflow=generated-3",
        "/?q=generated-5&sort=status",
    ] {
        let reply = server.get(path);
        assert_eq!(reply.status, 200, "{path}");
        times.push((path, reply.server_ms()));
        if path == "/" {
            assert!(
                reply.text().contains("Runs 1–50 of 10000"),
                "{}",
                reply.text()
            );
        }
    }
    let first_page: Vec<f64> = times
        .iter()
        .filter(|(path, _)| *path == "/")
        .map(|(_, ms)| *ms)
        .collect();
    let mut sorted = first_page.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    eprintln!(
        "server times (ms): {times:?}; first page median {median:.1} ms; load {:?}",
        std::fs::read_to_string("/proc/loadavg").ok()
    );
    assert!(
        median < 100.0,
        "the first page took {median:.1} ms of server time: {times:?}"
    );
    let peak = server.peak_memory();
    eprintln!("peak memory {} MB", peak >> 20);
    assert!(peak < 150 << 20, "peak memory {} MB", peak >> 20);
}

#[test]
fn live_progress_streams_a_running_training_until_it_ends() {
    let directory = tempfile::tempdir().unwrap();
    let runs = directory.path().join("runs");
    std::fs::create_dir_all(&runs).unwrap();
    let blueprint = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/train/reverse.toml"
    );
    let mut training = attnflow()
        .current_dir(directory.path())
        .args([
            "train",
            blueprint,
            "--task",
            "reverse",
            "--steps",
            "150",
            "--eval-every",
            "50",
            "--out",
            "runs/live",
            "--json",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let server = Server::start(
        directory.path(),
        &["--db", "none.sqlite", "--runs", runs.to_str().unwrap()],
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    let key = loop {
        let page = server.get("/").text();
        if page.contains(">live<") {
            break run_key_after(&page, ">live<");
        }
        assert!(
            Instant::now() < deadline,
            "the training folder never appeared"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let run_page = server.get(&format!("/runs/{key}")).text();
    let mut stream = std::net::TcpStream::connect(server.address).unwrap();
    use std::io::{BufRead, Write};
    stream
        .set_read_timeout(Some(Duration::from_secs(240)))
        .unwrap();
    write!(
        stream,
        "GET /runs/{key}/live HTTP/1.1\r\nHost: {}\r\n\r\n",
        server.address
    )
    .unwrap();
    let reader = std::io::BufReader::new(stream);
    let mut steps = Vec::new();
    let mut done = None;
    let mut event = String::new();
    for line in reader.lines() {
        let Ok(line) = line else { break };
        if let Some(name) = line.strip_prefix("event: ") {
            event = name.to_owned();
        }
        if let Some(data) = line.strip_prefix("data: ") {
            let snapshot: serde_json::Value = serde_json::from_str(data).unwrap();
            if let Some(step) = snapshot["step"].as_u64() {
                steps.push(step);
            }
            if event == "done" {
                done = Some(snapshot);
                break;
            }
        }
    }
    let status = training.wait().unwrap();
    assert!(status.success());
    let done = done.expect("a done event once training finished");
    assert_eq!(done["status"], "succeeded");
    assert_eq!(done["step"], 150);
    assert!(steps.len() >= 2, "progress while it ran: {steps:?}");
    assert!(steps.windows(2).all(|pair| pair[0] <= pair[1]), "{steps:?}");
    assert!(
        run_page.contains("data-live=") || steps[0] == 150,
        "the page of a running run has the live panel"
    );
}

#[test]
fn a_postgresql_store_is_listed_and_analysed_like_sqlite() {
    let Some(url) = attnflow_testkit::postgres_database() else {
        return;
    };
    let directory = tempfile::tempdir().unwrap();
    let flaky = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/workflows/flaky.toml"
    );
    for _ in 0..2 {
        run_ok(
            directory.path(),
            &["workflow", "run", flaky, "--db", &url, "--quiet"],
        );
    }
    let server = Server::start(directory.path(), &["--db", &url]);
    let page = server.get("/?sort=workflow").text();
    assert!(page.contains("Runs 1–2 of 2"), "{page}");
    let workflow = server.get("/workflow?name=flaky-figure-2");
    assert_eq!(workflow.status, 200);
    assert!(workflow.text().contains("Absorption"));
    assert_eq!(server.get("/runs/run-1").status, 200);
}
