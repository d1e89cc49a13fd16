//! The URL map. Every handler reads its input leniently and builds its
//! page on a blocking thread (stores and files are synchronous); a failure
//! of any kind, a panic included, becomes an error page, never a dropped
//! connection or a stopped server.

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use maud::Markup;

use crate::app::App;
use crate::error::{PageError, PageResult};
use crate::html::{error_page, respond, Frame};
use crate::query::Params;
use crate::security::{guard, login, login_page, BODY_LIMIT};
use crate::{files, live, pages, resolve};

type Shared = Arc<App>;

fn frame(app: &App) -> Frame {
    Frame {
        store: app.store_label(),
        read_only: app.read_only,
    }
}

/// Runs `work` on a blocking thread and answers with its page.
async fn blocking<F>(app: Shared, work: F) -> Response
where
    F: FnOnce(&App, &Frame) -> PageResult<Markup> + Send + 'static,
{
    let shown = frame(&app);
    let done = tokio::task::spawn_blocking(move || {
        let frame = frame(&app);
        work(&app, &frame)
    })
    .await;
    match done {
        Ok(Ok(markup)) => respond(StatusCode::OK, markup),
        Ok(Err(error)) => error_page(&error, &shown),
        Err(_) => error_page(
            &PageError::internal(
                "building this page failed (a bug in attnflow); the server goes on",
            ),
            &shown,
        ),
    }
}

fn params(query: Option<String>) -> Params {
    Params::parse(query.unwrap_or_default().as_bytes())
}

fn bad_path(app: &App, rejection: PathRejection) -> Response {
    error_page(
        &PageError::bad_request(format!(
            "the URL's path cannot be read: {}",
            rejection.body_text()
        )),
        &frame(app),
    )
}

async fn runs(State(app): State<Shared>, RawQuery(query): RawQuery) -> Response {
    let params = params(query);
    blocking(app, move |app, frame| {
        pages::runs::render(app, &params, frame)
    })
    .await
}

async fn run(
    State(app): State<Shared>,
    key: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Response {
    let key = match key {
        Ok(Path(key)) => key,
        Err(rejection) => return bad_path(&app, rejection),
    };
    let params = params(query);
    blocking(app, move |app, frame| {
        pages::run::render(app, &key, &params, frame)
    })
    .await
}

async fn file(
    State(app): State<Shared>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Response {
    let (key, file) = match path {
        Ok(Path(parts)) => parts,
        Err(rejection) => return bad_path(&app, rejection),
    };
    let shown = frame(&app);
    let found = {
        let app = app.clone();
        tokio::task::spawn_blocking(move || files::find(&app, &key, &file)).await
    };
    let sent = match found {
        Ok(Ok(download)) => files::send(download).await,
        Ok(Err(error)) => Err(error),
        Err(_) => Err(PageError::internal(
            "finding the file failed (a bug in attnflow)",
        )),
    };
    sent.unwrap_or_else(|error| error_page(&error, &shown))
}

async fn live_events(
    State(app): State<Shared>,
    key: Result<Path<String>, PathRejection>,
) -> Response {
    let key = match key {
        Ok(Path(key)) => key,
        Err(rejection) => return bad_path(&app, rejection),
    };
    let resolved = {
        let app = app.clone();
        tokio::task::spawn_blocking(move || resolve::resolve(&app, &key)).await
    };
    match resolved {
        Ok(Ok(run)) => live::stream(app, run),
        Ok(Err(error)) => error_page(&error, &frame(&app)),
        Err(_) => error_page(&PageError::internal("a bug in attnflow"), &frame(&app)),
    }
}

async fn compare(State(app): State<Shared>, RawQuery(query): RawQuery) -> Response {
    let params = params(query);
    blocking(app, move |app, frame| {
        pages::compare::render(app, &params, frame)
    })
    .await
}

async fn quarantine(State(app): State<Shared>, RawQuery(query): RawQuery) -> Response {
    let params = params(query);
    blocking(app, move |app, frame| {
        pages::quarantine::render(app, &params, frame)
    })
    .await
}

async fn quarantined(State(app): State<Shared>, RawQuery(query): RawQuery) -> Response {
    let params = params(query);
    blocking(app, move |app, frame| {
        pages::quarantine::record(app, &params, frame)
    })
    .await
}

/// Bytes of an oversized body read and dropped before the 413 page, so
/// the client, still sending, reads the answer instead of a reset
/// connection; a larger declared body is refused at once.
const DRAIN_LIMIT: usize = 16 << 20;

/// How long reading one body may take.
const BODY_TIME: std::time::Duration = std::time::Duration::from_secs(30);

/// A request body, at most [`BODY_LIMIT`] bytes; more is a 413 page.
async fn body(app: &App, request: Request) -> Result<Vec<u8>, Response> {
    use futures_util::StreamExt;
    let too_large = || {
        error_page(
            &PageError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Request too large",
                format!("request bodies may have at most {BODY_LIMIT} bytes"),
            ),
            &frame(app),
        )
    };
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > DRAIN_LIMIT as u64) {
        return Err(too_large());
    }
    let mut stream = request.into_body().into_data_stream();
    let read = async {
        let mut bytes = Vec::new();
        let mut seen = 0usize;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|_| ())?;
            seen += chunk.len();
            if seen > DRAIN_LIMIT {
                return Ok(None);
            }
            if seen <= BODY_LIMIT {
                bytes.extend_from_slice(&chunk);
            }
        }
        Ok((seen <= BODY_LIMIT).then_some(bytes))
    };
    match tokio::time::timeout(BODY_TIME, read).await {
        Ok(Ok(Some(bytes))) => Ok(bytes),
        Ok(Ok(None)) => Err(too_large()),
        Ok(Err(())) | Err(_) => Err(error_page(
            &PageError::bad_request("the request body was cut off or took too long to arrive"),
            &frame(app),
        )),
    }
}

async fn recheck(State(app): State<Shared>, request: Request) -> Response {
    let bytes = match body(&app, request).await {
        Ok(bytes) => bytes,
        Err(response) => return response,
    };
    blocking(app, move |app, frame| {
        pages::quarantine::recheck_post(app, &bytes, frame)
    })
    .await
}

async fn workflow(State(app): State<Shared>, RawQuery(query): RawQuery) -> Response {
    let params = params(query);
    blocking(app, move |app, frame| {
        pages::workflow::render(app, &params, frame)
    })
    .await
}

async fn login_form(State(app): State<Shared>) -> Response {
    login_page(
        &app,
        StatusCode::OK,
        "Paste this server's token to sign in.",
    )
}

async fn login_post(State(app): State<Shared>, request: Request) -> Response {
    match body(&app, request).await {
        Ok(bytes) => login(&app, &bytes),
        Err(response) => response,
    }
}

const STYLE: &str = include_str!("../assets/app.css");
const SCRIPT: &str = include_str!("../assets/app.js");

async fn asset(State(app): State<Shared>, name: Result<Path<String>, PathRejection>) -> Response {
    let (kind, text) = match name.as_ref().map(|Path(name)| name.as_str()) {
        Ok("app.css") => ("text/css; charset=utf-8", STYLE),
        Ok("app.js") => ("text/javascript; charset=utf-8", SCRIPT),
        _ => return not_found(State(app)).await,
    };
    let mut response = text.into_response();
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(kind));
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("max-age=3600"));
    response
}

async fn not_found(State(app): State<Shared>) -> Response {
    error_page(
        &PageError::not_found("there is no page at this address"),
        &frame(&app),
    )
}

async fn wrong_method(State(app): State<Shared>) -> Response {
    error_page(
        &PageError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "Method not allowed",
            "this address does not take that method (pages are read with GET; the re-check is a POST from its form)",
        ),
        &frame(&app),
    )
}

/// Every route, behind the guard.
pub fn router(app: Shared) -> Router {
    Router::new()
        .route("/", get(runs))
        .route("/runs/{key}", get(run))
        .route("/runs/{key}/live", get(live_events))
        .route("/runs/{key}/files/{*path}", get(file))
        .route("/compare", get(compare))
        .route("/quarantine", get(quarantine))
        .route("/quarantine/record", get(quarantined))
        .route("/quarantine/recheck", post(recheck))
        .route("/workflow", get(workflow))
        .route("/login", get(login_form).post(login_post))
        .route("/assets/{name}", get(asset))
        .fallback(not_found)
        .method_not_allowed_fallback(wrong_method)
        .layer(from_fn_with_state(app.clone(), guard))
        .with_state(app)
}
