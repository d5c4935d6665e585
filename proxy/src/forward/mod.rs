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
mod retry;
mod route;
mod upgrade;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::HeaderValue;
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;

use crate::body::{ProxyBody, RequestGuard};
use crate::error::{error_chain, ErrorKind, ProxyError};
use crate::headers;
use crate::server::{ConnActivity, ConnHold, ListenerCtx};
use crate::snapshot::{Pool, Service};
use crate::ticket::Ticket;
use crate::tunnel::TunnelRoute;
use crate::upstream::SendError;
use upgrade::Upgrade;

/// Per downstream connection.
pub(crate) struct ConnCtx {
    pub client: SocketAddr,
    /// `client`'s address as an `X-Forwarded-For` value, built once.
    pub client_value: HeaderValue,
    pub ticket: Ticket,
    pub listener: Arc<ListenerCtx>,
    pub activity: Arc<ConnActivity>,
    /// The connection's listener permit and gauge; an upgrade's tunnel
    /// holds them until it closes.
    pub hold: Arc<ConnHold>,
}

/// hyper's service: every request of a downstream connection, phase by
/// phase. Every failure goes through [`Failed::respond`]. (One async
/// function, not a pipeline of them: each nested future would move the
/// request and the response once more, which callgrind counts as ~3% more
/// instructions per request.) The one error is an HTTP/2 stream cut at its
/// pool's drain deadline before its answer: hyper resets it with the
/// error's reason, `REFUSED_STREAM` ([`drain_cut`]).
pub(crate) async fn handle(
    mut req: Request<Incoming>,
    ctx: Arc<ConnCtx>,
) -> Result<Response<ProxyBody>, h2::Error> {
    let start = Instant::now();
    ctx.activity.begin();
    let h2 = req.version() == Version::HTTP_2;
    if h2 {
        ctx.activity.mark_h2();
    }
    // 1. The one snapshot read; the pool and an available backend in it.
    let route::Routed {
        service,
        route,
        pool,
        mut backend,
    } = match route::route(&req, &ctx) {
        Ok(routed) => routed,
        Err(failed) => return Ok(failed.respond(&ctx)),
    };
    let mut guard = RequestGuard::new(pool, backend.clone(), start, ctx.activity.clone());
    // 2-3. The request as the backend gets it; an upgrade, if asked for.
    let scanned = headers::Scan::of(req.headers());
    // Only an HTTP/2 request with a `content-type` pays a lookup.
    let grpc = h2 && scanned.has_content_type() && crate::grpc::is_grpc(req.headers());
    if let Err(err) = request::check_head(&mut req, scanned) {
        return Ok(Failed::request(err, guard, &service).respond(&ctx));
    }
    let allowed = &service.config.allowed_upgrades;
    let upgrade = match Upgrade::of(&mut req, scanned, &backend, &guard.pool, allowed) {
        Ok(upgrade) => upgrade,
        Err(err) => return Ok(Failed::request(err, guard, &service).respond(&ctx)),
    };
    let (mut head, body) = req.into_parts();
    let body = request_body(body, head.version, &service, &guard.pool);
    guard.access = request::access_info(&head, &ctx, &service);
    request::strip_override(&mut head, &service);
    let fwd = match request::prepare(&mut head, scanned, &ctx, &backend, upgrade.as_ref()) {
        Ok(fwd) => fwd,
        Err(err) => return Ok(Failed::request(err, guard, &service).respond(&ctx)),
    };
    // 4. Send it; wait for the response head. A request that never reached
    // its backend goes to another one of the pool ([`retry`]); every
    // attempt shares the one `response_header` deadline.
    let deadline = tokio::time::Instant::from_std(crate::time::later(
        start,
        service.config.timeouts.response_header,
    ));
    let sent = tokio::time::timeout_at(
        deadline,
        backend.upstream.send(head, body, fwd, upgrade.is_some()),
    )
    .await;
    let (sent, retried) = match sent {
        Ok(Err(SendError {
            error,
            again: Some(again),
        })) => {
            let failed = (error, again);
            let at = retry::At {
                service: &service,
                backend: &mut backend,
                guard: &mut guard,
                upgrade: upgrade.is_some(),
                deadline,
            };
            // Boxed: rare, and its future (another send) would double
            // every request's.
            Box::pin(retry::again(at, failed)).await
        }
        sent => (sent, None),
    };
    let (resp, conn) = match response::received(sent, &backend, &guard.pool, &service) {
        Ok(received) => received,
        Err(err) if err.kind == ErrorKind::DrainCut => {
            return drain_cut(Failed::request(err, guard, &service), &ctx, h2, grpc)
        }
        Err(err) => return Ok(Failed::request(err.noted(retried), guard, &service).respond(&ctx)),
    };
    // 5. The answer, or a tunnel when the backend agreed to an upgrade.
    Ok(match upgrade {
        Some(u) if resp.status() == StatusCode::SWITCHING_PROTOCOLS => {
            // The upstream connection is the tunnel's: never reused.
            drop(conn);
            // Checked against the snapshot in force now: a switch since
            // the request was routed drains it at once.
            let shared = &ctx.listener.shared;
            let routed = TunnelRoute {
                service: service.name(),
                pool: guard.pool.clone(),
                backend: &backend.addr,
                ticket: route.ticket,
            };
            let idle = service.config.timeouts.tunnel_idle;
            let tunnel = shared.tunnels.open(&shared.snapshot, routed, idle);
            u.tunnel(resp, tunnel.holding(ctx.hold.clone()), guard)
        }
        _ => response::forward(resp, conn, &service, &route, &ctx, guard, grpc),
    })
}

/// A request cut at its pool's drain deadline before any answer came, told
/// so in a way its client reads as safe to retry: a gRPC request gets a
/// trailers-only answer with `grpc-status: 14` (UNAVAILABLE); another
/// HTTP/2 request a `REFUSED_STREAM` reset (RFC 9113 8.7: not processed);
/// an HTTP/1.1 one a 503 saying the pool was drained, and its connection
/// is closed after it. Counted and logged like any failure.
#[cold]
fn drain_cut(
    failed: Failed,
    ctx: &ConnCtx,
    h2: bool,
    grpc: bool,
) -> Result<Response<ProxyBody>, h2::Error> {
    let grpc = match &failed.books {
        Books::Request(guard) if grpc => Some(guard.pool.clone()),
        _ => None,
    };
    let mut resp = failed.respond(ctx);
    if let Some(pool) = grpc {
        return Ok(crate::grpc::trailers_only(&pool.name));
    }
    if h2 {
        return Err(h2::Error::from(h2::Reason::REFUSED_STREAM));
    }
    resp.headers_mut()
        .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    Ok(resp)
}

/// The request body as it goes upstream: an HTTP/2 client's, when there
/// is one, timed by `client_idle` (an HTTP/1.1 client's is timed on its
/// socket).
#[inline]
fn request_body(
    body: Incoming,
    version: Version,
    service: &Service,
    pool: &Pool,
) -> crate::body::RequestBody {
    use http_body::Body;
    if version == Version::HTTP_2 && !body.is_end_stream() {
        let counter = &pool.metrics.idle_timeouts.client;
        crate::body::RequestBody::timed(body, service.config.timeouts.client_idle, counter)
    } else {
        crate::body::RequestBody::plain(body)
    }
}

/// A request that failed, what its failure is charged to, and whether the
/// client is told the whole error (`error_detail = "full"`).
pub(super) struct Failed {
    err: ProxyError,
    books: Books,
    full: bool,
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
        let full = match &books {
            Books::Service(service) => full_detail(service),
            _ => false,
        };
        Failed { err, books, full }
    }

    fn request(err: ProxyError, guard: RequestGuard, service: &Service) -> Failed {
        Failed::new(err, Books::Request(Box::new(guard))).detail(service)
    }

    /// Tells the client as much as `service`'s `error_detail` says.
    fn detail(mut self, service: &Service) -> Failed {
        self.full = full_detail(service);
        self
    }

    /// The one failure path: counts the error where the request got to,
    /// closes its books and answers with the status its kind picks.
    fn respond(self, ctx: &ConnCtx) -> Response<ProxyBody> {
        let Failed { err, books, full } = self;
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
                    a.error = Some(error_chain(&err));
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
        response::error(&err, full)
    }
}

fn full_detail(service: &Service) -> bool {
    service.config.error_detail == cutover_config::ErrorDetail::Full
}
