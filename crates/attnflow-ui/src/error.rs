//! What can go wrong: starting the server (exit codes for the CLI), and
//! answering one request (an HTTP status with a page that says why).

use std::net::SocketAddr;

use attnflow_base::{Classified, Fault};
use axum::http::StatusCode;

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum UiError {
    /// `--host` is not an address this server can bind.
    #[error("--host {host}: {reason}")]
    BadHost {
        /// The value given.
        host: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A host other than loopback without a token would expose every run
    /// to the network.
    #[error("--host {host} is reachable from other machines: add --token (a value of at least 16 characters, or none to have one generated) so that only people with the token can read the runs")]
    TokenRequired {
        /// The host.
        host: String,
    },
    /// A token too short to resist guessing.
    #[error("--token: use at least 16 characters (or give --token without a value to have one generated)")]
    WeakToken,
    /// `--db` or `$ATTNFLOW_DB` does not name a store.
    #[error(transparent)]
    Store(#[from] attnflow_store::DbError),
    /// `--runs` names something that is not a folder.
    #[error("--runs {path}: not a folder")]
    NotAFolder {
        /// The path given.
        path: String,
    },
    /// The address could not be bound (in use, not this machine's).
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The server failed while running.
    #[error("the web server failed: {0}")]
    Serve(#[source] std::io::Error),
}

impl Classified for UiError {
    fn fault(&self) -> Fault {
        match self {
            UiError::BadHost { .. }
            | UiError::TokenRequired { .. }
            | UiError::WeakToken
            | UiError::NotAFolder { .. } => Fault::BadInput,
            UiError::Store(error) if error.is_bad_input() => Fault::BadInput,
            UiError::Store(_) | UiError::Bind { .. } | UiError::Serve(_) => Fault::Failed,
        }
    }
}

/// A request that cannot be answered with its page: the status and a
/// sentence for the person reading the error page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A short heading.
    pub title: String,
    /// What happened and what to do.
    pub message: String,
}

impl PageError {
    /// A page with `status`, `title` and `message`.
    pub fn new(status: StatusCode, title: &str, message: impl Into<String>) -> Self {
        PageError {
            status,
            title: title.to_owned(),
            message: message.into(),
        }
    }

    /// 400: the request itself is malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        PageError::new(StatusCode::BAD_REQUEST, "Bad request", message)
    }

    /// 404: nothing by that name.
    pub fn not_found(message: impl Into<String>) -> Self {
        PageError::new(StatusCode::NOT_FOUND, "Not found", message)
    }

    /// 403: the request is understood and refused.
    pub fn forbidden(message: impl Into<String>) -> Self {
        PageError::new(StatusCode::FORBIDDEN, "Refused", message)
    }

    /// 503: a store is missing, locked or unreachable.
    pub fn unavailable(message: impl Into<String>) -> Self {
        PageError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Store unavailable",
            message,
        )
    }

    /// 500: something failed on the server's side.
    pub fn internal(message: impl Into<String>) -> Self {
        PageError::new(StatusCode::INTERNAL_SERVER_ERROR, "Server error", message)
    }
}

/// The result of building a page.
pub type PageResult<T> = Result<T, PageError>;
