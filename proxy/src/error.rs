//! Proxy failures, remembering who caused them (pingora's `ErrorSource`):
//! that picks the status code and the metric label.

use http::StatusCode;

use crate::upstream::UpstreamError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorSource {
    /// The downstream client sent something wrong or went away.
    Client,
    /// The backend refused, reset, timed out or answered badly.
    Backend,
    /// cutover itself could not serve (no backend to send to).
    Cutover,
}

impl ErrorSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorSource::Client => "client",
            ErrorSource::Backend => "backend",
            ErrorSource::Cutover => "cutover",
        }
    }
}

/// What went wrong; the discriminant indexes the per-pool error counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The client's request could not be routed (bad override header...).
    BadRequest = 0,
    /// The client's request body failed or the client went away.
    ClientAborted,
    /// TCP connect to the backend failed (refused, unreachable).
    Connect,
    /// Connect or response head did not come in time.
    Timeout,
    /// The backend reset the connection or sent an invalid response.
    BadResponse,
    /// The pool has no backend to send to.
    NoBackend,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 6] = [
        ErrorKind::BadRequest,
        ErrorKind::ClientAborted,
        ErrorKind::Connect,
        ErrorKind::Timeout,
        ErrorKind::BadResponse,
        ErrorKind::NoBackend,
    ];

    pub fn source(self) -> ErrorSource {
        match self {
            ErrorKind::BadRequest | ErrorKind::ClientAborted => ErrorSource::Client,
            ErrorKind::Connect | ErrorKind::Timeout | ErrorKind::BadResponse => {
                ErrorSource::Backend
            }
            ErrorKind::NoBackend => ErrorSource::Cutover,
        }
    }

    pub fn cause(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::ClientAborted => "client_aborted",
            ErrorKind::Connect => "connect",
            ErrorKind::Timeout => "timeout",
            ErrorKind::BadResponse => "bad_response",
            ErrorKind::NoBackend => "no_backend",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
            // Nobody reads it, but the access log and metrics do.
            ErrorKind::ClientAborted => StatusCode::BAD_REQUEST,
            ErrorKind::Connect | ErrorKind::BadResponse => StatusCode::BAD_GATEWAY,
            ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::NoBackend => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// A failed request: the kind, and a short message for the response body.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ProxyError {
    pub kind: ErrorKind,
    pub message: String,
}

impl ProxyError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> ProxyError {
        ProxyError {
            kind,
            message: message.into(),
        }
    }

    pub fn source(&self) -> ErrorSource {
        self.kind.source()
    }

    pub fn status(&self) -> StatusCode {
        self.kind.status()
    }

    /// Classifies an upstream failure: connect vs timeout vs client body vs
    /// bad response.
    pub fn from_upstream(err: &UpstreamError, backend: &str, pool: &str) -> ProxyError {
        let detail = error_chain(err);
        match err {
            UpstreamError::ConnectTimeout(_) => ProxyError::new(
                ErrorKind::Timeout,
                format!("backend {backend} (pool {pool}) did not accept the connection in time: {detail}"),
            ),
            UpstreamError::Connect(io) if io.kind() == std::io::ErrorKind::TimedOut => {
                ProxyError::new(
                    ErrorKind::Timeout,
                    format!("backend {backend} (pool {pool}) did not accept the connection in time: {detail}"),
                )
            }
            UpstreamError::Connect(_) | UpstreamError::Handshake(_) => ProxyError::new(
                ErrorKind::Connect,
                format!("backend {backend} (pool {pool}) refused or failed the connection: {detail}"),
            ),
            // A user error while sending is the request body (the client's
            // stream) failing, not the backend.
            UpstreamError::Request(h) if h.is_user() => ProxyError::new(
                ErrorKind::ClientAborted,
                format!(
                    "the client's request body failed while sending to backend {backend}: {detail}"
                ),
            ),
            UpstreamError::Request(_) | UpstreamError::H1(_) => ProxyError::new(
                ErrorKind::BadResponse,
                format!("backend {backend} (pool {pool}) closed the connection or sent an invalid response: {detail}"),
            ),
        }
    }
}

/// "outer: inner: innermost", skipping repeats.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut src = err.source();
    while let Some(e) = src {
        let s = e.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        src = e.source();
    }
    out
}
