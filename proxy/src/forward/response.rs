//! Phase 5: the backend's answer as the client gets it, and the answers
//! cutover writes itself when a request fails.

use http::header::{self, HeaderValue};
use http::{Response, Version};

use super::route::Route;
use super::ConnCtx;
use tokio::time::error::Elapsed;

use crate::body::{BodyIdle, ProxyBody, RequestGuard};
use crate::error::{error_chain, ErrorKind, ProxyError};
use crate::headers;
use crate::outlier::{self, Failure};
use crate::snapshot::{Backend, Pool, Service};
use crate::upstream::{H1Conn, SendError, UpstreamBody};

/// A response head from a backend and, for HTTP/1.1 through hyper, its
/// connection.
pub(super) type Received = (Response<UpstreamBody>, Option<H1Conn>);

/// The outcome of the send: the response head and, for HTTP/1.1 through
/// hyper, its connection; or why there is none. Each outcome is also the
/// backend's passive signal (a failure streak leads to its ejection).
#[inline]
pub(super) fn received(
    sent: Result<Result<Received, SendError>, Elapsed>,
    backend: &Backend,
    pool: &Pool,
    service: &Service,
) -> Result<Received, ProxyError> {
    let received = match sent {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => {
            outlier::failed_upstream(service, backend, &e.error);
            Err(ProxyError::from_upstream(
                e.error,
                &backend.addr,
                &pool.name,
            ))
        }
        Err(_) => {
            outlier::failed(service, backend, Some(Failure::ResponseTimeout));
            Err(ProxyError::new(
                ErrorKind::Timeout,
                format!(
                    "backend {} (pool {}) sent no response within {:?}",
                    backend.addr, pool.name, service.config.timeouts.response_header
                ),
            ))
        }
    };
    // The status read where the answer already lies: reading it before
    // the match cost a copy of the response head per request (callgrind).
    if let Ok((resp, _)) = &received {
        outlier::answered(service, backend, resp.status());
    }
    received
}

/// The backend's answer as the client gets it: hop-by-hop headers out,
/// cutover's own HTTP version, the sticky cookie for a new ticket; its
/// status counted, and its body streamed with the guard that closes the
/// request's books when it ends.
#[inline]
pub(super) fn forward(
    resp: Response<UpstreamBody>,
    conn: Option<H1Conn>,
    service: &Service,
    route: &Route,
    ctx: &ConnCtx,
    mut guard: RequestGuard,
    grpc: bool,
) -> Response<ProxyBody> {
    let (mut parts, body) = resp.into_parts();
    headers::remove_hop_by_hop(&mut parts.headers);
    // cutover answers in its own HTTP version, not the backend's: an
    // HTTP/1.0 backend must not make hyper close the client's connection.
    parts.version = Version::HTTP_11;
    if route.set_cookie {
        let t = route.ticket.unwrap_or(ctx.ticket);
        if let Some(v) =
            headers::set_cookie_value(&service.config.cookie.name, t, &service.cookie_attributes)
        {
            parts.headers.append(header::SET_COOKIE, v);
        }
    }
    guard.pool.metrics.count_status(parts.status.as_u16());
    if let Some(a) = guard.access.as_mut() {
        a.status = parts.status.as_u16();
    }
    guard.upstream = conn;
    // A gRPC request's answer is gRPC too, unless the backend said otherwise
    // (an error page): only gRPC requests pay this lookup.
    let grpc = grpc && crate::grpc::is_grpc(&parts.headers);
    // No body to read (204, 304, HEAD, Content-Length: 0): hyper will not
    // poll it, so the connection is free now.
    if http_body::Body::is_end_stream(&body) {
        guard.response_complete();
    }
    let mut idle = BodyIdle::new(service.config.timeouts.backend_idle);
    idle.grpc = grpc;
    Response::from_parts(
        parts,
        ProxyBody::Upstream {
            inner: body,
            guard,
            idle,
        },
    )
}

/// cutover's own answer to a failed request: the status its kind picks and
/// a short cause as plain text ([`ProxyError::short`]: no backend address,
/// no error chain), or with `full` the error with its causes.
pub(super) fn error(err: &ProxyError, full: bool) -> Response<ProxyBody> {
    let status = err.status();
    let reason = status.canonical_reason().unwrap_or("Error");
    let cause = if full {
        error_chain(err)
    } else {
        err.short().to_string()
    };
    let mut resp = Response::new(ProxyBody::text(format!(
        "{} {}: {}\n",
        status.as_u16(),
        reason,
        cause
    )));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
