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
    /// Every backend of the pool is down (active health checks).
    NoHealthyBackend,
    /// cutover cut the upstream connection at the pool's drain deadline
    /// (the pool lost all its traffic in a change).
    DrainCut,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 8] = [
        ErrorKind::BadRequest,
        ErrorKind::ClientAborted,
        ErrorKind::Connect,
        ErrorKind::Timeout,
        ErrorKind::BadResponse,
        ErrorKind::NoBackend,
        ErrorKind::NoHealthyBackend,
        ErrorKind::DrainCut,
    ];

    /// Who caused a failure of this kind.
    pub fn blame(self) -> ErrorSource {
        match self {
            ErrorKind::BadRequest | ErrorKind::ClientAborted => ErrorSource::Client,
            ErrorKind::Connect | ErrorKind::Timeout | ErrorKind::BadResponse => {
                ErrorSource::Backend
            }
            ErrorKind::NoBackend | ErrorKind::NoHealthyBackend | ErrorKind::DrainCut => {
                ErrorSource::Cutover
            }
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
            ErrorKind::NoHealthyBackend => "no_healthy_backend",
            ErrorKind::DrainCut => "drain_cut",
        }
    }

    /// What a client is told of a failure of this kind by default
    /// (`error_detail = "short"`): no address, no error chain.
    pub fn public_cause(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "bad request",
            ErrorKind::ClientAborted => "the request body failed",
            ErrorKind::Connect => "the backend refused or failed the connection",
            ErrorKind::Timeout => "the backend did not answer in time",
            ErrorKind::BadResponse => {
                "the backend closed the connection or sent an invalid response"
            }
            ErrorKind::NoBackend => "no backend to send to",
            ErrorKind::NoHealthyBackend => "no backend is up",
            ErrorKind::DrainCut => "the pool was drained (its drain deadline passed); retry",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
            // Nobody reads it, but the access log and metrics do.
            ErrorKind::ClientAborted => StatusCode::BAD_REQUEST,
            ErrorKind::Connect | ErrorKind::BadResponse => StatusCode::BAD_GATEWAY,
            ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::NoBackend | ErrorKind::NoHealthyBackend | ErrorKind::DrainCut => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }
}

/// A failed request: the kind, a message for the log (and, with
/// `error_detail = "full"`, the response body), the error underneath it
/// (if any), reachable through [`std::error::Error::source`], and what a
/// client is told by default ([`ProxyError::short`]).
#[derive(Debug)]
pub struct ProxyError {
    pub kind: ErrorKind,
    pub message: String,
    cause: Option<Box<dyn std::error::Error + Send + Sync>>,
    /// The client's message, when not the kind's [`ErrorKind::public_cause`].
    public: Option<String>,
}

impl std::fmt::Display for ProxyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ProxyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl ProxyError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> ProxyError {
        ProxyError {
            kind,
            message: message.into(),
            cause: None,
            public: None,
        }
    }

    /// A failure whose `message` holds nothing a client may not read (no
    /// backend address, no cause): the client is told it as it is.
    pub fn plain(kind: ErrorKind, message: impl Into<String>) -> ProxyError {
        let message = message.into();
        ProxyError {
            kind,
            public: Some(message.clone()),
            message,
            cause: None,
        }
    }

    /// The same error, telling a client `public` by default.
    pub fn public(mut self, public: impl Into<String>) -> ProxyError {
        self.public = Some(public.into());
        self
    }

    /// What a client is told by default: the short cause, without
    /// backend addresses or the error chain (those go to the logs).
    pub fn short(&self) -> &str {
        self.public
            .as_deref()
            .unwrap_or_else(|| self.kind.public_cause())
    }

    /// The same error, caused by `cause`.
    pub fn caused_by(
        mut self,
        cause: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> ProxyError {
        self.cause = Some(cause.into());
        self
    }

    /// Who caused it: the client, the backend or cutover.
    /// Appends `note` to the message, if there is one: ` (NOTE)`.
    pub fn noted(mut self, note: Option<String>) -> ProxyError {
        if let Some(note) = note {
            self.message.push_str(" (");
            self.message.push_str(&note);
            self.message.push(')');
        }
        self
    }

    pub fn blame(&self) -> ErrorSource {
        self.kind.blame()
    }

    pub fn status(&self) -> StatusCode {
        self.kind.status()
    }

    /// Classifies an upstream failure: connect vs timeout vs client body vs
    /// bad response. The upstream error becomes the cause.
    pub fn from_upstream(err: UpstreamError, backend: &str, pool: &str) -> ProxyError {
        let (kind, message) = match &err {
            // Checked first: a cut fails the request as a reset would.
            e if crate::upstream::is_drain_cut(e) => {
                let cut = ProxyError::new(
                    ErrorKind::DrainCut,
                    format!("backend {backend} (pool {pool}) was cut at the pool's drain deadline before it answered"),
                );
                return cut.public(drained(pool)).caused_by(err);
            }
            UpstreamError::ConnectTimeout(_) => (
                ErrorKind::Timeout,
                format!("backend {backend} (pool {pool}) did not accept the connection in time"),
            ),
            UpstreamError::Connect(io) if io.kind() == std::io::ErrorKind::TimedOut => (
                ErrorKind::Timeout,
                format!("backend {backend} (pool {pool}) did not accept the connection in time"),
            ),
            UpstreamError::Connect(_) | UpstreamError::Handshake(_) => (
                ErrorKind::Connect,
                format!("backend {backend} (pool {pool}) refused or failed the connection"),
            ),
            UpstreamError::Tls(_) => (
                ErrorKind::Connect,
                format!("TLS to backend {backend} (pool {pool}) failed"),
            ),
            // A user error while sending is the request body (the client's
            // stream) failing, not the backend.
            // hyper's only timer on an upstream connection: the h2c
            // connection's PING (`h2_ping_timeout`) went unanswered.
            UpstreamError::Request(h) if h.is_timeout() => (
                ErrorKind::Timeout,
                format!("backend {backend} (pool {pool}) stopped answering: an HTTP/2 PING got no answer in time"),
            ),
            UpstreamError::Request(h) if h.is_user() => (
                ErrorKind::ClientAborted,
                format!("the client's request body failed while sending to backend {backend}"),
            ),
            UpstreamError::Request(_) | UpstreamError::H1(_) => (
                ErrorKind::BadResponse,
                format!("backend {backend} (pool {pool}) closed the connection or sent an invalid response"),
            ),
        };
        ProxyError::new(kind, message).caused_by(err)
    }
}

/// What a client is told of a request cut at its pool's drain deadline
/// (an HTTP/1.1 503's body, a gRPC `grpc-message`).
pub fn drained(pool: &str) -> String {
    format!("pool {pool} was drained (its drain deadline passed); retry")
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn an_upstream_failure_keeps_its_cause_and_the_chain_reads_outer_to_inner() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused here");
        let err = ProxyError::from_upstream(UpstreamError::Connect(io), "10.0.0.1:80", "green");
        assert_eq!(err.kind, ErrorKind::Connect);
        assert_eq!(err.blame(), ErrorSource::Backend);
        assert_eq!(err.status(), StatusCode::BAD_GATEWAY);
        let cause = err.source().expect("the upstream error is the cause");
        assert!(cause.downcast_ref::<UpstreamError>().is_some());
        assert_eq!(
            error_chain(&err),
            "backend 10.0.0.1:80 (pool green) refused or failed the connection: \
             connect failed: refused here"
        );
    }

    #[test]
    fn a_client_is_told_no_address_by_default() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused here");
        let err = ProxyError::from_upstream(UpstreamError::Connect(io), "10.0.0.1:80", "green");
        assert!(!err.short().contains("10.0.0.1"), "{}", err.short());
        assert!(!err.short().contains("refused here"), "{}", err.short());
        let plain = ProxyError::plain(ErrorKind::NoBackend, "pool `green` has none");
        assert_eq!(plain.short(), "pool `green` has none");
        let public = ProxyError::new(ErrorKind::NoHealthyBackend, "10.0.0.1:80 down")
            .public("every backend of pool green is down");
        assert_eq!(public.short(), "every backend of pool green is down");
    }

    #[test]
    fn a_timed_out_connect_is_a_timeout_and_an_error_without_cause_has_no_source() {
        let err = ProxyError::from_upstream(
            UpstreamError::ConnectTimeout(std::time::Duration::from_secs(5)),
            "b:1",
            "blue",
        );
        assert_eq!(err.kind, ErrorKind::Timeout);
        assert_eq!(err.status(), StatusCode::GATEWAY_TIMEOUT);
        let plain = ProxyError::new(ErrorKind::NoBackend, "nothing");
        assert!(plain.source().is_none());
        assert_eq!(plain.blame(), ErrorSource::Cutover);
        assert_eq!(error_chain(&plain), "nothing");
    }
}
