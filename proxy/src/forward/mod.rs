//! The life of one request, phase by phase:
//!
//! 1. [`route`]: read the snapshot once; pick the pool (preview listener,
//!    override header, ticket or cookie) and a backend in it.
//! 2. [`request`]: rewrite the request for that backend.
//! 3. [`upgrade`]: an HTTP/1.1 upgrade or an HTTP/2 WebSocket becomes a
//!    tunnel when the backend answers 101.
//! 4. send it and wait for the response head (`response_header` timeout).
//! 5. [`response`]: rewrite the answer and stream its body back.
//!
//! A failure at any phase goes through [`Failed::respond`], the one place
//! that picks the status, counts the metric and closes the request's books.

mod request;
mod response;
mod route;
mod upgrade;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::HeaderValue;
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;

use crate::body::{ProxyBody, RequestGuard};
use crate::error::{error_chain, ErrorKind, ProxyError};
use crate::headers;
use crate::server::{ConnActivity, ListenerCtx};
use crate::snapshot::{Backend, Pool, Service};
use crate::ticket::Ticket;
use crate::upstream::UpstreamBody;
use route::Route;
use upgrade::Upgrade;

/// Per downstream connection.
pub(crate) struct ConnCtx {
    pub client: SocketAddr,
    /// `client`'s address as an `X-Forwarded-For` value, built once.
    pub client_value: HeaderValue,
    pub ticket: Ticket,
    pub listener: Arc<ListenerCtx>,
    pub activity: Arc<ConnActivity>,
}

/// hyper's service: every request of a downstream connection.
pub(crate) async fn handle(
    req: Request<Incoming>,
    ctx: Arc<ConnCtx>,
) -> Result<Response<ProxyBody>, Infallible> {
    let start = Instant::now();
    ctx.activity.begin();
    if req.version() == Version::HTTP_2 {
        ctx.activity.mark_h2();
    }
    Ok(match proxy(req, &ctx, start).await {
        Ok(resp) => resp,
        Err(failed) => failed.respond(&ctx),
    })
}

/// Phases 1 to 5 for one request.
async fn proxy(
    req: Request<Incoming>,
    ctx: &ConnCtx,
    start: Instant,
) -> Result<Response<ProxyBody>, Failed> {
    // The one snapshot read of this request.
    let service = {
        let snap = ctx.listener.shared.snapshot.load();
        snap.services.get(ctx.listener.service_index).cloned()
    };
    let service = service.ok_or_else(|| {
        let err = ProxyError::new(
            ErrorKind::NoBackend,
            "this listener's service is not configured",
        );
        Failed::new(err, Books::Listener)
    })?;
    let route = route::choose(&service, ctx, &req)
        .map_err(|err| Failed::new(err, Books::Service(service.clone())))?;
    // Issue 15: health filtering and retries on another backend of the
    // same pool slot in around this pick and `exchange`.
    let (pool, backend) = route::pick(&service, &route)?;
    let mut guard = RequestGuard::new(pool, backend.clone(), start, ctx.activity.clone());
    match exchange(req, ctx, &service, &route, &backend, &mut guard, start).await {
        Ok(resp) => Ok(response::stream(resp, guard)),
        Err(err) => Err(Failed::new(err, Books::Request(Box::new(guard)))),
    }
}

/// Phases 2 to 5: the request to `backend` and its answer.
async fn exchange(
    mut req: Request<Incoming>,
    ctx: &ConnCtx,
    service: &Service,
    route: &Route,
    backend: &Backend,
    guard: &mut RequestGuard,
    start: Instant,
) -> Result<Response<UpstreamBody>, ProxyError> {
    let scanned = headers::Scan::of(req.headers());
    let upgrade = Upgrade::of(&mut req, scanned, backend, &guard.pool)?;
    let (mut parts, body) = req.into_parts();
    guard.access = request::access_info(&parts, ctx, service);
    let fwd = request::prepare(&mut parts, scanned, ctx, backend)?;
    if let Some(u) = &upgrade {
        u.prepare(&mut parts);
    }
    let deadline = tokio::time::Instant::from_std(start) + service.config.timeouts.response_header;
    let send = backend.upstream.send(parts, body, fwd, upgrade.is_some());
    let (resp, conn) = match tokio::time::timeout_at(deadline, send).await {
        Ok(sent) => {
            sent.map_err(|e| ProxyError::from_upstream(e, &backend.addr, &guard.pool.name))?
        }
        Err(_) => {
            return Err(ProxyError::new(
                ErrorKind::Timeout,
                format!(
                    "backend {} (pool {}) sent no response within {:?}",
                    backend.addr, guard.pool.name, service.config.timeouts.response_header
                ),
            ))
        }
    };
    match upgrade {
        Some(u) if resp.status() == StatusCode::SWITCHING_PROTOCOLS => {
            // The upstream connection is the tunnel's: never reused.
            drop(conn);
            guard.pool.metrics.count_status(101);
            let tunnel = ctx.listener.shared.tunnels.open(
                service.name(),
                guard.pool.clone(),
                &backend.addr,
                route.ticket,
            );
            Ok(u.tunnel(resp, tunnel))
        }
        _ => {
            guard.upstream = conn;
            Ok(response::rewrite(resp, service, route, ctx, guard))
        }
    }
}

/// A request that failed, and what its failure is charged to.
pub(super) struct Failed {
    err: ProxyError,
    books: Books,
}

/// How far a request got before it failed.
pub(super) enum Books {
    /// Not even to its service: nothing to count it on.
    Listener,
    /// To its service but not to a pool (a bad override header).
    Service(Arc<Service>),
    /// To a pool but not to a backend.
    Pool(Arc<Pool>),
    /// To a backend: the guard holds its in-flight counts and access line.
    Request(Box<RequestGuard>),
}

impl Failed {
    fn new(err: ProxyError, books: Books) -> Failed {
        Failed { err, books }
    }

    /// The one failure path: counts the error where the request got to,
    /// closes its books and answers with the status its kind picks.
    fn respond(self, ctx: &ConnCtx) -> Response<ProxyBody> {
        let Failed { err, books } = self;
        let status = err.status().as_u16();
        let pool = match books {
            Books::Listener => {
                ctx.activity.end();
                None
            }
            Books::Service(service) => {
                ctx.activity.end();
                let metrics = &ctx.listener.shared.metrics;
                metrics.unrouted(service.name(), err.kind, status);
                None
            }
            Books::Pool(pool) => {
                ctx.activity.end();
                pool.metrics.count_error(err.kind);
                pool.metrics.count_status(status);
                Some(pool.name.clone())
            }
            Books::Request(mut guard) => {
                guard.pool.metrics.count_error(err.kind);
                guard.pool.metrics.count_status(status);
                if let Some(a) = guard.access.as_mut() {
                    a.status = status;
                }
                // Dropping the guard ends the request's books.
                Some(guard.pool.name.clone())
            }
        };
        tracing::debug!(
            pool = pool.as_deref().unwrap_or("-"),
            blame = err.blame().as_str(),
            "proxy error: {}",
            error_chain(&err)
        );
        response::error(&err)
    }
}
