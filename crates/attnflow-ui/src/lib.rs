//! `attnflow ui`: a local web app over every run. Pages, all server-drawn
//! and usable without JavaScript:
//!
//! * **Runs** (`/`): pipeline, training and workflow runs in one table,
//!   filtered, sorted and paged (store runs in SQL, so 10,000 runs cost
//!   one short query);
//! * **a run** (`/runs/KEY`): its report, curves, manifest with every
//!   artifact's size and SHA-256 (downloads for exactly those files), its
//!   steps and event log, live progress while it runs (server-sent events);
//! * **Compare** (`/compare?run=A&run=B`): loss, J, R and accuracy
//!   overlaid, one series per run, and the differences between their
//!   configurations and blueprints;
//! * **Quarantine** (`/quarantine`): held records by rule, field and
//!   source, each record's raw bytes with its violations marked, and a
//!   re-check against an edited schema;
//! * **Workflow** (`/workflow`): the estimated transition matrix as a
//!   heatmap, absorption probabilities and expected steps, the state
//!   diagram.
//!
//! Safe by default: loopback only unless a token is set, every value
//! escaped, files served only when a manifest names them, bounded request
//! bodies, a strict Content-Security-Policy, CSRF tokens on the one change.

mod app;
mod catalog;
mod curves;
mod error;
mod files;
mod html;
mod listing;
mod live;
mod pages;
mod query;
mod resolve;
mod routes;
mod security;
mod stores;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use attnflow_store::Location;

pub use error::UiError;

/// The token the server asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    /// None: only allowed on a loopback address.
    None,
    /// This one (at least 16 characters).
    Given(String),
    /// A random one, reported in [`Started`].
    Generate,
}

/// How to serve.
#[derive(Debug, Clone)]
pub struct Options {
    /// The main store: workflow runs and their history.
    pub store: Location,
    /// Run folders, or folders holding them.
    pub runs: Vec<PathBuf>,
    /// The address to listen on: an IP address or `localhost`.
    pub host: String,
    /// The port (0: any free one).
    pub port: u16,
    /// Refuse every change.
    pub read_only: bool,
    /// The token requests must carry.
    pub token: Token,
}

/// A server that is listening.
#[derive(Debug, Clone)]
pub struct Started {
    /// Where it listens.
    pub address: SocketAddr,
    /// The URL to open.
    pub url: String,
    /// Whether other machines can reach it (not loopback).
    pub exposed: bool,
    /// The token, when the server made one up.
    pub generated_token: Option<String>,
}

/// The default main store: `--db`, else `$ATTNFLOW_DB`, else the store
/// `attnflow run` writes by default.
pub fn resolve_store(flag: Option<&str>) -> Result<Location, UiError> {
    let environment = std::env::var(attnflow_store::DEFAULT_VARIABLE)
        .ok()
        .filter(|text| !text.trim().is_empty());
    Ok(Location::parse(
        flag.map(str::to_owned)
            .or(environment)
            .as_deref()
            .unwrap_or(attnflow_pipeline::DEFAULT_STORE),
    )?)
}

fn host_address(host: &str) -> Result<IpAddr, UiError> {
    if host == "localhost" {
        return Ok(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    host.parse().map_err(|_| UiError::BadHost {
        host: host.to_owned(),
        reason: "give an IP address such as 127.0.0.1 or 0.0.0.0 (or localhost)".into(),
    })
}

/// The workflow name `attnflow run` records its runs under, read from the
/// pipeline's own embedded spec.
fn pipeline_workflow() -> String {
    attnflow_workflow::Spec::parse("pipeline", attnflow_pipeline::spec::embedded::WORKFLOW)
        .map(|spec| spec.name)
        .unwrap_or_else(|_| "attnflow-pipeline".to_owned())
}

/// Serves until interrupted (Ctrl-C or SIGTERM). `started` is called once
/// the port is bound, with the URL to print.
pub fn serve(options: Options, started: impl FnOnce(&Started)) -> Result<(), UiError> {
    let ip = host_address(&options.host)?;
    let exposed = !ip.is_loopback();
    let (token, generated_token) = match options.token {
        Token::None if exposed => return Err(UiError::TokenRequired { host: options.host }),
        Token::None => (None, None),
        Token::Given(token) if token.chars().count() < 16 => return Err(UiError::WeakToken),
        Token::Given(token) => (Some(token), None),
        Token::Generate => {
            let token = security::random_hex(16);
            (Some(token.clone()), Some(token))
        }
    };
    for folder in &options.runs {
        if !folder.is_dir() {
            return Err(UiError::NotAFolder {
                path: folder.display().to_string(),
            });
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(32)
        .enable_all()
        .build()
        .map_err(UiError::Serve)?;
    runtime.block_on(async move {
        let wanted = SocketAddr::new(ip, options.port);
        let listener = tokio::net::TcpListener::bind(wanted)
            .await
            .map_err(|source| UiError::Bind {
                address: wanted,
                source,
            })?;
        let address = listener.local_addr().map_err(UiError::Serve)?;
        let port = address.port();
        let shown_host = if ip.is_unspecified() {
            "127.0.0.1".to_owned()
        } else {
            address.ip().to_string()
        };
        let shown_host = if address.is_ipv6() && !ip.is_unspecified() {
            format!("[{shown_host}]")
        } else {
            shown_host
        };
        let mut allowed_hosts = vec![
            format!("127.0.0.1:{port}"),
            format!("localhost:{port}"),
            format!("[::1]:{port}"),
        ];
        allowed_hosts.push(format!("{shown_host}:{port}"));
        let app = Arc::new(app::App {
            catalog: catalog::Catalog::new(options.runs, &options.store),
            store: options.store,
            read_only: options.read_only,
            token,
            csrf: security::random_hex(32),
            allowed_hosts,
            pipeline_workflow: pipeline_workflow(),
            workflow_stores: stores::Pool::default(),
            data_stores: stores::Pool::default(),
        });
        started(&Started {
            address,
            url: format!("http://{shown_host}:{port}/"),
            exposed,
            generated_token,
        });
        axum::serve(listener, routes::router(app))
            .with_graceful_shutdown(stop_signal())
            .await
            .map_err(UiError::Serve)
    })
}

/// Ctrl-C, or SIGTERM where there are signals.
async fn stop_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    {
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = interrupt => {}
            () = terminate => {}
        }
    }
    #[cfg(not(unix))]
    interrupt.await;
}

/// Opens `url` in the desktop's browser, if there is one (best effort:
/// the URL is printed anyway).
pub fn open_in_browser(url: &str) -> bool {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    std::process::Command::new(opener)
        .arg(url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .is_ok()
}
