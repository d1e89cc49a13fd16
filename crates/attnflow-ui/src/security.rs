//! What every request passes through: the Host check that keeps a
//! loopback server from being reached through DNS rebinding, the token
//! (bearer header, cookie, or once in the URL to set the cookie), the
//! Origin check on changes, the CSRF token forms carry, and the headers
//! every answer gets (a strict Content-Security-Policy, `Server-Timing`).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::header::{
    AUTHORIZATION, CONTENT_SECURITY_POLICY, COOKIE, HOST, LOCATION, ORIGIN, REFERRER_POLICY,
    SET_COOKIE, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use maud::html;

use crate::app::App;
use crate::error::PageError;
use crate::html::{error_page, page, respond, Frame};
use crate::query::Params;

/// The cookie that carries the token.
pub const COOKIE_NAME: &str = "attnflow_token";

/// The most bytes a request body may have (forms, a schema to re-check).
pub const BODY_LIMIT: usize = 256 * 1024;

/// The policy of every page: scripts and styles from this server only,
/// no plugins, no framing, forms posting here only.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-src 'self'; \
     frame-ancestors 'none'; base-uri 'none'";

/// A random secret as hex (the CSRF token, a generated access token).
pub fn random_hex(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    // Without an entropy source there is no safe secret: refuse to run.
    getrandom::fill(&mut buffer).expect("the operating system's random source");
    buffer.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Compares secrets in time independent of where they differ.
pub fn same_secret(given: &str, expected: &str) -> bool {
    given.len() == expected.len()
        && given
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |difference, (a, b)| difference | (a ^ b))
            == 0
}

/// The token a request carries: `Authorization: Bearer`, or the cookie.
fn carried_token(headers: &HeaderMap) -> Option<String> {
    if let Some(value) = headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
    {
        if let Some(token) = value.strip_prefix("Bearer ") {
            return Some(token.trim().to_owned());
        }
    }
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value.to_owned())
}

fn frame(app: &App) -> Frame {
    Frame {
        store: app.store_label(),
        read_only: app.read_only,
    }
}

/// The sign-in page: where a browser without the cookie lands.
pub fn login_page(app: &App, status: StatusCode, message: &str) -> Response {
    let body = html! {
        p { (message) }
        form method="post" action="/login" {
            label { "Token " input type="password" name="token" autocomplete="current-password" required; }
            " "
            button type="submit" { "Sign in" }
        }
    };
    respond(status, page("Sign in", "", &frame(app), body))
}

/// `POST /login`: the form's token, checked; the cookie set on success.
pub fn login(app: &App, body: &[u8]) -> Response {
    let Some(expected) = &app.token else {
        let mut response = StatusCode::SEE_OTHER.into_response();
        response
            .headers_mut()
            .insert(LOCATION, HeaderValue::from_static("/"));
        return response;
    };
    let params = Params::parse(body);
    match params.get("token") {
        Some(token) if same_secret(token, expected) => redirect_with_cookie("/", expected),
        _ => login_page(
            app,
            StatusCode::UNAUTHORIZED,
            "That token is not this server's.",
        ),
    }
}

fn redirect_with_cookie(location: &str, token: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(location) {
        headers.insert(LOCATION, value);
    }
    if let Ok(value) = HeaderValue::from_str(&format!(
        "{COOKIE_NAME}={token}; HttpOnly; SameSite=Strict; Path=/"
    )) {
        headers.insert(SET_COOKIE, value);
    }
    response
}

/// Why a request is refused before it reaches its page, if it is.
fn refusal(app: &App, request: &Request) -> Option<Response> {
    let headers = request.headers();
    let path = request.uri().path();
    match &app.token {
        None => {
            let host = headers.get(HOST).and_then(|value| value.to_str().ok());
            if !host.is_some_and(|host| app.allowed_hosts.iter().any(|allowed| allowed == host)) {
                let error = PageError::new(
                    StatusCode::MISDIRECTED_REQUEST,
                    "Wrong host",
                    format!(
                        "this server answers only to {}; a page of another site may not read it",
                        app.allowed_hosts.first().map_or("", String::as_str)
                    ),
                );
                return Some(error_page(&error, &frame(app)));
            }
        }
        Some(expected) => {
            let public = path.starts_with("/assets/") || path == "/login";
            let carried = carried_token(headers);
            if !public && !carried.is_some_and(|token| same_secret(&token, expected)) {
                // `?token=` once sets the cookie and leaves the URL clean.
                let params = Params::parse(request.uri().query().unwrap_or("").as_bytes());
                if request.method() == Method::GET {
                    if let Some(token) = params.get("token") {
                        if same_secret(token, expected) {
                            return Some(redirect_with_cookie(path, expected));
                        }
                    }
                }
                return Some(login_page(
                    app,
                    StatusCode::UNAUTHORIZED,
                    "This server needs its token: paste it below, or send it as `Authorization: Bearer TOKEN`.",
                ));
            }
        }
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        // A browser names the page a change came from; it must be ours.
        let origin = headers.get(ORIGIN).and_then(|value| value.to_str().ok());
        let host = headers
            .get(HOST)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("");
        if let Some(origin) = origin {
            let ours = origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"))
                == Some(host);
            if !ours {
                let error = PageError::forbidden(format!(
                    "a change sent from {origin} is refused: changes are made from this server's own pages"
                ));
                return Some(error_page(&error, &frame(app)));
            }
        }
    }
    None
}

/// The middleware: refuses what must be refused, times the rest, and adds
/// the security headers to every answer.
pub async fn guard(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let mut response = match refusal(&app, &request) {
        Some(response) => response,
        None => next.run(request).await,
    };
    let headers = response.headers_mut();
    let server_time = started.elapsed().as_secs_f64() * 1000.0;
    if let Ok(value) = HeaderValue::from_str(&format!("app;dur={server_time:.2}")) {
        headers.insert("server-timing", value);
    }
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    // A run's own report keeps the stricter policy it was served with.
    if !headers.contains_key(CONTENT_SECURITY_POLICY) {
        headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY));
        headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    response
}

/// Whether a form's CSRF field is this server's.
pub fn csrf_ok(app: &App, params: &Params) -> bool {
    params
        .get("csrf")
        .is_some_and(|token| same_secret(token, &app.csrf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_exactly_and_tokens_come_from_header_or_cookie() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abd", "abc"));
        assert!(!same_secret("ab", "abc"));
        let secret = random_hex(32);
        assert_eq!(secret.len(), 64);
        assert_ne!(secret, random_hex(32));
        let mut headers = HeaderMap::new();
        headers.insert(
            COOKIE,
            HeaderValue::from_static("a=b; attnflow_token=xyz; c=d"),
        );
        assert_eq!(carried_token(&headers).as_deref(), Some("xyz"));
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer  tok "));
        assert_eq!(carried_token(&headers).as_deref(), Some("tok"));
    }
}
