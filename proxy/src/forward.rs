//! One request: read the snapshot once, pick a pool by ticket (or preview
//! pool, or override header), pick a backend, rewrite headers, forward, and
//! stream the answer back.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use cutover_config::Sticky;
use http::header::{self, HeaderValue};
use http::uri::{Scheme, Uri};
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use crate::body::{AccessInfo, ProxyBody, RequestGuard};
use crate::error::{ErrorKind, ProxyError};
use crate::headers;
use crate::server::{ConnActivity, ListenerCtx};
use crate::snapshot::Service;
use crate::ticket::Ticket;

static X_CUTOVER_TOKEN: header::HeaderName = header::HeaderName::from_static("x-cutover-token");

/// Per downstream connection.
pub(crate) struct ConnCtx {
    pub client: SocketAddr,
    /// `client`'s address as an `X-Forwarded-For` value, built once.
    pub client_value: HeaderValue,
    pub ticket: Ticket,
    pub listener: Arc<ListenerCtx>,
    pub activity: Arc<ConnActivity>,
}

fn error_response(err: &ProxyError) -> Response<ProxyBody> {
    let status = err.status();
    let reason = status.canonical_reason().unwrap_or("Error");
    let mut resp = Response::new(ProxyBody::text(format!(
        "{} {}: {}\n",
        status.as_u16(),
        reason,
        err.message
    )));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// Where a request goes.
struct Route {
    pool: usize,
    /// The ticket that chose the pool; None when the pool was fixed
    /// (preview listener, override header).
    ticket: Option<Ticket>,
    /// A fresh ticket to set as the cookie.
    set_cookie: bool,
}

fn route(service: &Service, ctx: &ConnCtx, req: &Request<Incoming>) -> Result<Route, ProxyError> {
    let fixed = |pool| Route {
        pool,
        ticket: None,
        set_cookie: false,
    };
    if let Some(name) = &ctx.listener.fixed_pool {
        return service.pool_index(name).map(fixed).ok_or_else(|| {
            ProxyError::new(
                ErrorKind::NoBackend,
                format!("preview pool `{name}` no longer exists"),
            )
        });
    }
    if let Some(h) = &service.override_header {
        if let Some(v) = req.headers().get(h) {
            let token_ok = match &service.config.override_token {
                None => true,
                Some(t) => req
                    .headers()
                    .get(&X_CUTOVER_TOKEN)
                    .is_some_and(|v| v.as_bytes() == t.as_bytes()),
            };
            if token_ok {
                let name = v.to_str().unwrap_or("").trim();
                return match service.pool_index(name) {
                    Some(i) => Ok(fixed(i)),
                    None => {
                        let pools: Vec<&str> =
                            service.pools.iter().map(|p| p.name.as_str()).collect();
                        Err(ProxyError::new(
                            ErrorKind::BadRequest,
                            format!(
                                "header `{h}` names pool `{}`, which service `{}` does not have; pools: {}",
                                String::from_utf8_lossy(v.as_bytes()),
                                service.name(),
                                pools.join(", ")
                            ),
                        ))
                    }
                };
            }
        }
    }
    let (ticket, set_cookie) = match service.config.sticky {
        Sticky::Cookie => {
            match headers::cookie_ticket(req.headers(), &service.config.cookie.name) {
                Some(t) => (t, false),
                None => (ctx.listener.tickets.next(), true),
            }
        }
        Sticky::None | Sticky::ClientIp => (ctx.ticket, false),
    };
    Ok(Route {
        pool: service.pool_for(ticket),
        ticket: Some(ticket),
        set_cookie,
    })
}

/// An HTTP/2 extended CONNECT for WebSocket (RFC 8441).
fn h2_websocket(req: &Request<Incoming>) -> bool {
    req.method() == http::Method::CONNECT
        && req.version() == Version::HTTP_2
        && req
            .extensions()
            .get::<hyper::ext::Protocol>()
            .is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"))
}

/// A fresh `Sec-WebSocket-Key`: 16 random bytes, base64.
fn websocket_key() -> HeaderValue {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut raw = [0u8; 18];
    raw[..8].copy_from_slice(&fastrand::u64(..).to_le_bytes());
    raw[8..16].copy_from_slice(&fastrand::u64(..).to_le_bytes());
    let mut out = [b'='; 24];
    for (i, chunk) in raw.chunks(3).enumerate() {
        let n = (u32::from(chunk[0]) << 16) | (u32::from(chunk[1]) << 8) | u32::from(chunk[2]);
        for j in 0..4 {
            out[i * 4 + j] = B64[((n >> (18 - 6 * j)) & 63) as usize];
        }
    }
    // 16 bytes encode to 22 characters and "==".
    out[22] = b'=';
    out[23] = b'=';
    HeaderValue::from_bytes(&out)
        .unwrap_or_else(|_| HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="))
}

/// The `Upgrade` header of an HTTP/1.1 upgrade request (WebSocket and
/// others); `scanned` is [`headers::Scan::of`] its headers.
fn upgrade_request(req: &Request<Incoming>, scanned: headers::Scan) -> Option<HeaderValue> {
    if req.version() != Version::HTTP_11 || !scanned.has_connection() {
        return None;
    }
    let wants = req
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if wants {
        req.headers().get(header::UPGRADE).cloned()
    } else {
        None
    }
}

pub(crate) async fn handle(
    mut req: Request<Incoming>,
    ctx: Arc<ConnCtx>,
) -> Result<Response<ProxyBody>, Infallible> {
    let start = Instant::now();
    ctx.activity.begin();
    if req.version() == Version::HTTP_2 {
        ctx.activity.mark_h2();
    }
    // The one snapshot read of this request.
    let service = {
        let snap = ctx.listener.shared.snapshot.load();
        snap.services.get(ctx.listener.service_index).cloned()
    };
    let Some(service) = service else {
        ctx.activity.end();
        let err = ProxyError::new(
            ErrorKind::NoBackend,
            "this listener's service is not configured",
        );
        return Ok(error_response(&err));
    };
    let route = match route(&service, &ctx, &req) {
        Ok(r) => r,
        Err(err) => {
            ctx.activity.end();
            ctx.listener
                .shared
                .metrics
                .unrouted(service.name(), err.kind, err.status().as_u16());
            return Ok(error_response(&err));
        }
    };
    let Some(pool) = service.pools.get(route.pool).cloned() else {
        ctx.activity.end();
        return Ok(error_response(&ProxyError::new(
            ErrorKind::NoBackend,
            "no such pool",
        )));
    };
    let Some(backend) = pool.pick().cloned() else {
        ctx.activity.end();
        let err = ProxyError::new(
            ErrorKind::NoBackend,
            format!(
                "pool `{}` of service `{}` has no backend to send to",
                pool.name,
                service.name()
            ),
        );
        pool.metrics.count_error(err.kind);
        pool.metrics.count_status(err.status().as_u16());
        return Ok(error_response(&err));
    };
    let mut guard = RequestGuard::new(pool.clone(), backend.clone(), start, ctx.activity.clone());

    // A WebSocket over HTTP/2 (extended CONNECT) goes to the backend as an
    // HTTP/1.1 upgrade; the answer goes back as 200 on the HTTP/2 stream.
    let h2_ws = h2_websocket(&req);
    if h2_ws && backend.protocol != cutover_config::Protocol::Http1 {
        let err = ProxyError::new(
            ErrorKind::NoBackend,
            format!(
                "WebSocket over HTTP/2 needs an http1 backend; pool `{}` is h2c",
                pool.name
            ),
        );
        return Ok(fail(&pool, guard, err));
    }
    let scanned = headers::Scan::of(req.headers());
    let upgrade = if h2_ws {
        Some(HeaderValue::from_static("websocket"))
    } else {
        upgrade_request(&req, scanned)
    };
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    if service.config.access_log {
        guard.access = Some(Box::new(AccessInfo {
            client: ctx.client,
            service: service.name().to_string(),
            method: parts.method.clone(),
            path: parts
                .uri
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/")
                .to_string(),
            status: 0,
        }));
    }
    // The name the client asked for goes on in `Host` (from HTTP/2's
    // `:authority` when the client spoke HTTP/2), else the backend's own
    // (an HTTP/1.0 client may send none).
    let fwd = headers::prepare_request(
        &mut parts.headers,
        scanned,
        &ctx.client_value,
        "http",
        parts.uri.authority().unwrap_or(&backend.authority).as_str(),
    );
    if let Some(u) = &upgrade {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, u.clone());
    }
    if h2_ws {
        parts.method = http::Method::GET;
        parts.extensions.remove::<hyper::ext::Protocol>();
        parts
            .headers
            .insert(header::SEC_WEBSOCKET_KEY, websocket_key());
        if !parts.headers.contains_key(header::SEC_WEBSOCKET_VERSION) {
            parts.headers.insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
        }
    }
    // HTTP/1.1 backends get origin form (`GET /path HTTP/1.1`), as a backend
    // expects from a reverse proxy (an HTTP/1.1 client's request target
    // mostly is already); HTTP/2 ones `:scheme` and `:authority`.
    let http1 = backend.protocol == cutover_config::Protocol::Http1;
    let origin_form = parts.uri.scheme().is_none()
        && parts.uri.authority().is_none()
        && parts.uri.path_and_query().is_some();
    if !(http1 && origin_form) {
        let mut uri = http::uri::Parts::default();
        uri.path_and_query = parts
            .uri
            .path_and_query()
            .cloned()
            .or_else(|| Some(http::uri::PathAndQuery::from_static("/")));
        if !http1 {
            uri.scheme = Some(Scheme::HTTP);
            uri.authority = Some(backend.authority.clone());
        }
        parts.uri = match Uri::from_parts(uri) {
            Ok(u) => u,
            Err(e) => {
                let err = ProxyError::new(
                    ErrorKind::BadRequest,
                    format!("cannot build the upstream URI: {e}"),
                );
                pool.metrics.count_error(err.kind);
                pool.metrics.count_status(err.status().as_u16());
                return Ok(error_response(&err));
            }
        };
    }
    parts.version = match backend.protocol {
        cutover_config::Protocol::Http1 => Version::HTTP_11,
        cutover_config::Protocol::H2c => Version::HTTP_2,
    };
    let sent = tokio::time::timeout_at(
        tokio::time::Instant::from_std(start) + service.config.timeouts.response_header,
        backend.upstream.send(parts, body, fwd, upgrade.is_some()),
    )
    .await;
    let resp = match sent {
        Ok(Ok((resp, conn))) => {
            guard.upstream = conn;
            resp
        }
        Ok(Err(e)) => {
            let err = ProxyError::from_upstream(&e, &backend.addr, &pool.name);
            return Ok(fail(&pool, guard, err));
        }
        Err(_) => {
            let err = ProxyError::new(
                ErrorKind::Timeout,
                format!(
                    "backend {} (pool {}) sent no response within {:?}",
                    backend.addr, pool.name, service.config.timeouts.response_header
                ),
            );
            return Ok(fail(&pool, guard, err));
        }
    };

    let mut resp = resp;
    if let (Some(on_client), true) = (
        client_upgrade,
        resp.status() == StatusCode::SWITCHING_PROTOCOLS,
    ) {
        // The backend agreed: tunnel bytes both ways, tracked for draining.
        // The upstream connection is the tunnel's now, never reused.
        guard.upstream = None;
        let on_backend = hyper::upgrade::on(&mut resp);
        let websocket = upgrade
            .as_ref()
            .is_some_and(|u| u.as_bytes().eq_ignore_ascii_case(b"websocket"));
        let tunnel = ctx.listener.shared.tunnels.open(
            service.name(),
            pool.clone(),
            &backend.addr,
            route.ticket,
        );
        tokio::spawn(async move {
            match tokio::join!(on_client, on_backend) {
                (Ok(c), Ok(b)) => {
                    // Take the backend socket out of hyper's hands: the tunnel
                    // drains by its own rules, not with the backend's pool.
                    match b.downcast::<crate::upstream::TrackedIo>() {
                        Ok(mut parts) => {
                            parts.io.forget();
                            let backend = TokioIo::new(parts.io);
                            crate::tunnel::pump(
                                TokioIo::new(c),
                                backend,
                                tunnel,
                                websocket,
                                parts.read_buf,
                            )
                            .await
                        }
                        Err(b) => {
                            crate::tunnel::pump(
                                TokioIo::new(c),
                                TokioIo::new(b),
                                tunnel,
                                websocket,
                                Default::default(),
                            )
                            .await
                        }
                    }
                }
                (c, b) => {
                    tracing::debug!(client = ?c.err(), backend = ?b.err(), "upgrade did not complete")
                }
            }
        });
        pool.metrics.count_status(101);
        let (mut parts, body) = resp.into_parts();
        if h2_ws {
            // RFC 8441: the HTTP/2 answer to a WebSocket CONNECT is a 200.
            parts.status = StatusCode::OK;
            parts.version = Version::HTTP_2;
            for h in [
                header::CONNECTION,
                header::UPGRADE,
                header::SEC_WEBSOCKET_ACCEPT,
            ] {
                parts.headers.remove(h);
            }
        }
        return Ok(Response::from_parts(
            parts,
            ProxyBody::Upstream { inner: body, guard },
        ));
    }
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
    pool.metrics.count_status(parts.status.as_u16());
    if let Some(a) = guard.access.as_mut() {
        a.status = parts.status.as_u16();
    }
    // No body to read (204, 304, HEAD, Content-Length: 0): hyper will not
    // poll it, so the connection is free now.
    if http_body::Body::is_end_stream(&body) {
        guard.response_complete();
    }
    Ok(Response::from_parts(
        parts,
        ProxyBody::Upstream { inner: body, guard },
    ))
}

fn fail(
    pool: &crate::snapshot::Pool,
    mut guard: RequestGuard,
    err: ProxyError,
) -> Response<ProxyBody> {
    let status: StatusCode = err.status();
    pool.metrics.count_error(err.kind);
    pool.metrics.count_status(status.as_u16());
    if let Some(a) = guard.access.as_mut() {
        a.status = status.as_u16();
    }
    tracing::debug!(pool = %pool.name, source = err.source().as_str(), "proxy error: {}", err.message);
    drop(guard);
    error_response(&err)
}
