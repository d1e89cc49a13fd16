//! What the `attnflow ui` tests share: real run folders and stores made by
//! the real binary, the server started as a real process on a free
//! loopback port, and a small HTTP/1.1 client over `TcpStream` that sends
//! exactly the bytes a test asks for (so `..` reaches the server as is).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use attnflow_train::{Evaluation, StepMetrics};

/// The binary under test.
pub fn attnflow() -> Command {
    Command::new(env!("CARGO_BIN_EXE_attnflow"))
}

/// Runs `attnflow ARGS` in `directory` and requires success.
pub fn run_ok(directory: &Path, args: &[&str]) -> String {
    let output = attnflow()
        .current_dir(directory)
        .args(args)
        .output()
        .expect("attnflow starts");
    assert!(
        output.status.success(),
        "attnflow {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A hostile name: markup, both quotes and an ampersand.
pub const HOSTILE: &str = "<script>alert(1)</script>\"x' & y";

/// A schema whose quarantine the re-check tests relax (`age` max 120 -> 200).
pub const PEOPLE_SCHEMA: &str = r#"name = "people"

[[field]]
name = "id"
type = "int"
required = true
unique = true

[[field]]
name = "name"
type = "string"
max_length = 12

[[field]]
name = "age"
type = "int"
min = 0
max = 120
"#;

/// Records for [`PEOPLE_SCHEMA`]: two ages over 120 (released by the
/// relaxed schema), a hostile name too long, a type fault, a short row.
pub const PEOPLE_CSV: &str = "id,name,age\n1,ann,30\n2,bob,150\n3,\"<script>alert(2)</script>\",40\n4,\"\"\" onmouseover=\"\"x\",abc\n5,eve,199\n6,dan\n";

/// Records held by [`PEOPLE_CSV`] under [`PEOPLE_SCHEMA`].
pub const PEOPLE_HELD: u64 = 5;

/// Of those, the ones the relaxed schema releases.
pub const PEOPLE_RELEASED: u64 = 2;

/// The relaxed schema.
pub fn relaxed_schema() -> String {
    PEOPLE_SCHEMA.replace("max = 120", "max = 200")
}

/// Checks [`PEOPLE_CSV`] into `store` (made in `directory`).
pub fn people_quarantine(directory: &Path, store: &str) {
    std::fs::write(directory.join("people.toml"), PEOPLE_SCHEMA).unwrap();
    std::fs::write(directory.join("people.csv"), PEOPLE_CSV).unwrap();
    let output = attnflow()
        .current_dir(directory)
        .args(["data", "check", "people.toml", "people.csv", "--db", store])
        .output()
        .unwrap();
    // Quarantined records are not a failure without --strict.
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Writes a training folder's logs (`metrics.jsonl`, `eval.jsonl`) through
/// the trainer's own line types: `steps` steps, an evaluation every 100.
pub fn write_training_logs(folder: &Path, steps: u64, speed: f64) {
    std::fs::create_dir_all(folder).unwrap();
    let mut metrics = String::new();
    let mut evaluations = String::new();
    for step in 1..=steps {
        let loss = 3.0 * (-(step as f64) * speed / 300.0).exp() + 0.05;
        let line = StepMetrics {
            step,
            loss,
            regulariser: Some(0.5 + 0.1 * (step as f64 / 50.0).sin()),
            objective: loss + 0.01,
            learning_rate: 1e-3,
            gradient_norm: 1.0 / step as f64,
            tokens: 512,
            tokens_per_second: 20_000.0,
        };
        metrics.push_str(&serde_json::to_string(&line).unwrap());
        metrics.push('\n');
        if step % 100 == 0 {
            let accuracy = 1.0 - (-(step as f64) * speed / 400.0).exp();
            let evaluation = Evaluation {
                step,
                loss,
                token_accuracy: accuracy.sqrt(),
                sequence_accuracy: accuracy,
                attention_entropy: None,
                examples: 64,
            };
            evaluations.push_str(&serde_json::to_string(&evaluation).unwrap());
            evaluations.push('\n');
        }
    }
    std::fs::write(folder.join("metrics.jsonl"), metrics).unwrap();
    std::fs::write(folder.join("eval.jsonl"), evaluations).unwrap();
}

/// The run folders and stores every UI test reads (never changes them).
pub struct Fixture {
    /// The folder holding everything.
    pub root: PathBuf,
    /// The main store: the pipeline run's and three flaky workflows'
    /// history, and the people quarantine.
    pub store: PathBuf,
    /// The `--runs` folder.
    pub runs: PathBuf,
    /// A real pipeline run (`attnflow run`).
    pub pipeline: PathBuf,
    /// Two real training runs (`attnflow train`) on blueprints differing
    /// in one line, with different learning rates.
    pub trained: [PathBuf; 2],
    /// Five training logs of 1,000 steps each.
    pub long: Vec<PathBuf>,
    /// A training folder with a hostile name.
    pub hostile: PathBuf,
}

fn stamp() -> String {
    let binary = std::fs::metadata(env!("CARGO_BIN_EXE_attnflow"))
        .and_then(|metadata| metadata.modified())
        .unwrap_or(SystemTime::UNIX_EPOCH);
    format!("{binary:?}")
}

/// The fixture, made once per build of the binary (kept under the target
/// folder, so later test runs and the browser tests reuse it).
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ui-fixture");
        let runs = root.join("runs");
        let fixture = Fixture {
            store: root.join("store.sqlite"),
            pipeline: runs.join("pipeline"),
            trained: [runs.join("trained-a"), runs.join("trained-b")],
            long: (1..=5)
                .map(|index| runs.join(format!("long-{index}")))
                .collect(),
            hostile: runs.join(HOSTILE.replace('/', "|")),
            runs,
            root,
        };
        let stamp_path = fixture.root.join("stamp");
        if std::fs::read_to_string(&stamp_path).ok() != Some(stamp()) {
            build(&fixture);
            std::fs::write(&stamp_path, stamp()).unwrap();
        }
        fixture
    })
}

fn build(fixture: &Fixture) {
    let _ = std::fs::remove_dir_all(&fixture.root);
    std::fs::create_dir_all(&fixture.runs).unwrap();
    let root = &fixture.root;
    let store = fixture.store.to_str().unwrap();
    run_ok(
        root,
        &[
            "run",
            "--rows",
            "600",
            "--out",
            fixture.pipeline.to_str().unwrap(),
            "--db",
            store,
        ],
    );
    for _ in 0..3 {
        let flaky = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/workflows/flaky.toml"
        );
        run_ok(root, &["workflow", "run", flaky, "--db", store, "--quiet"]);
    }
    people_quarantine(root, store);
    let blueprint = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/train/reverse.toml"
    ))
    .unwrap();
    std::fs::write(root.join("a.toml"), &blueprint).unwrap();
    std::fs::write(
        root.join("b.toml"),
        blueprint.replacen("\n", "\n# variant b\n", 1),
    )
    .unwrap();
    for (spec, folder, rate) in [
        ("a.toml", &fixture.trained[0], "0.001"),
        ("b.toml", &fixture.trained[1], "0.003"),
    ] {
        run_ok(
            root,
            &[
                "train",
                spec,
                "--task",
                "reverse",
                "--steps",
                "30",
                "--learning-rate",
                rate,
                "--eval-every",
                "10",
                "--out",
                folder.to_str().unwrap(),
            ],
        );
    }
    for (index, folder) in fixture.long.iter().enumerate() {
        write_training_logs(folder, 1000, 1.0 + index as f64 * 0.5);
    }
    write_training_logs(&fixture.hostile, 200, 2.0);
}

/// `attnflow ui` running on a free loopback port.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The socket address.
    pub address: SocketAddr,
}

impl Server {
    /// Starts `attnflow ui --port 0 ARGS` in `directory` and waits for the
    /// line with its URL.
    pub fn start(directory: &Path, args: &[&str]) -> Server {
        let mut child = attnflow()
            .current_dir(directory)
            .args(["ui", "--port", "0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("attnflow ui starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .split_whitespace()
            .find(|word| word.starts_with("http://"))
            .unwrap_or_else(|| panic!("no URL in {line:?}"));
        let base = url.trim_end_matches('/').to_owned();
        let address: SocketAddr = base.trim_start_matches("http://").parse().unwrap();
        Server {
            child,
            base,
            address,
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// The server's peak resident memory (VmHWM), in bytes.
    pub fn peak_memory(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let line = status
            .lines()
            .find(|line| line.starts_with("VmHWM:"))
            .unwrap();
        let kilobytes: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kilobytes * 1024
    }

    /// Sends `raw` as is and reads the whole answer.
    pub fn raw(&self, raw: &[u8]) -> Reply {
        let mut stream = TcpStream::connect(self.address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        // The server may answer (413) before the body is all sent.
        let _ = stream.write_all(raw);
        let mut bytes = Vec::new();
        let _ = stream.read_to_end(&mut bytes);
        Reply::parse(&bytes)
    }

    /// `GET path` with extra header lines.
    pub fn get_with(&self, path: &str, headers: &[&str]) -> Reply {
        let mut request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.address
        );
        for header in headers {
            request.push_str(header);
            request.push_str("\r\n");
        }
        request.push_str("\r\n");
        self.raw(request.as_bytes())
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> Reply {
        self.get_with(path, &[])
    }

    /// `POST path` with a form body and extra header lines.
    pub fn post(&self, path: &str, body: &str, headers: &[&str]) -> Reply {
        let mut request = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            self.address,
            body.len()
        );
        for header in headers {
            request.push_str(header);
            request.push_str("\r\n");
        }
        request.push_str("\r\n");
        request.push_str(body);
        self.raw(request.as_bytes())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status code (0 when there was no answer).
    pub status: u16,
    /// Header names in lowercase, with values.
    pub headers: Vec<(String, String)>,
    /// The body, chunked encoding removed.
    pub bytes: Vec<u8>,
}

impl Reply {
    fn parse(raw: &[u8]) -> Reply {
        let Some(split) = raw.windows(4).position(|window| window == b"\r\n\r\n") else {
            return Reply {
                status: 0,
                headers: Vec::new(),
                bytes: raw.to_vec(),
            };
        };
        let head = String::from_utf8_lossy(&raw[..split]);
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|code| code.parse().ok())
            .unwrap_or(0);
        let headers: Vec<(String, String)> = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
            .collect();
        let mut body = raw[split + 4..].to_vec();
        let chunked = headers
            .iter()
            .any(|(name, value)| name == "transfer-encoding" && value.contains("chunked"));
        if chunked {
            body = dechunk(&body);
        }
        Reply {
            status,
            headers,
            bytes: body,
        }
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// The server's own time for the answer (`Server-Timing: app;dur=MS`).
    pub fn server_ms(&self) -> f64 {
        self.header("server-timing")
            .and_then(|value| value.split("dur=").nth(1))
            .and_then(|ms| ms.parse().ok())
            .expect("a Server-Timing header")
    }
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(end) = body.windows(2).position(|window| window == b"\r\n") else {
            return out;
        };
        let size_text = String::from_utf8_lossy(&body[..end]);
        let Ok(size) = usize::from_str_radix(size_text.trim().split(';').next().unwrap_or(""), 16)
        else {
            return out;
        };
        if size == 0 || body.len() < end + 2 + size {
            return out;
        }
        out.extend_from_slice(&body[end + 2..end + 2 + size]);
        body = &body[(end + 4 + size).min(body.len())..];
    }
}

/// The run linked in the first table row of `page` that holds `marker`
/// (a name, kind or workflow cell).
pub fn run_key_after(page: &str, marker: &str) -> String {
    let found = page.match_indices(marker).find_map(|(at, _)| {
        let row = &page[page[..at].rfind("<tr")?..at];
        let start = row.find("href=\"/runs/")? + 12;
        Some(row[start..].split('"').next()?.to_owned())
    });
    found.unwrap_or_else(|| {
        panic!("no table row with {marker:?} and a run link in the page:\n{page}")
    })
}
