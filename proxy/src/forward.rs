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

use crate::body::{AccessInfo, ConnActivity, ProxyBody, RequestGuard};
use crate::error::{ErrorKind, ProxyError};
use crate::headers;
use crate::server::ListenerCtx;
use crate::snapshot::Service;
use crate::ticket::Ticket;

static X_CUTOVER_TOKEN: header::HeaderName = header::HeaderName::from_static("x-cutover-token");

/// Per downstream connection.
pub(crate) struct ConnCtx {
    pub client: SocketAddr,
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

/// Where the request goes: a pool index, and a new ticket to set as a cookie.
fn route(
    service: &Service,
    ctx: &ConnCtx,
    req: &Request<Incoming>,
) -> Result<(usize, Option<Ticket>), ProxyError> {
    if let Some(fixed) = &ctx.listener.fixed_pool {
        return service.pool_index(fixed).map(|i| (i, None)).ok_or_else(|| {
            ProxyError::new(
                ErrorKind::NoBackend,
                format!("preview pool `{fixed}` no longer exists"),
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
                    Some(i) => Ok((i, None)),
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
    match service.config.sticky {
        Sticky::Cookie => {
            match headers::cookie_ticket(req.headers(), &service.config.cookie.name) {
                Some(t) => Ok((service.pool_for(t), None)),
                None => {
                    let t = Ticket::random();
                    Ok((service.pool_for(t), Some(t)))
                }
            }
        }
        Sticky::None | Sticky::ClientIp => Ok((service.pool_for(ctx.ticket), None)),
    }
}

pub(crate) async fn handle(
    req: Request<Incoming>,
    ctx: Arc<ConnCtx>,
) -> Result<Response<ProxyBody>, Infallible> {
    let start = Instant::now();
    ctx.activity.begin();
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
    let (pool_idx, new_ticket) = match route(&service, &ctx, &req) {
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
    let Some(pool) = service.pools.get(pool_idx).cloned() else {
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
    let authority = parts.uri.authority().map(|a| a.as_str().to_string());
    headers::remove_hop_by_hop(&mut parts.headers);
    headers::set_forwarded(
        &mut parts.headers,
        ctx.client.ip(),
        "http",
        authority.as_deref(),
    );
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(Scheme::HTTP);
    uri.authority = Some(backend.authority.clone());
    uri.path_and_query = parts
        .uri
        .path_and_query()
        .cloned()
        .or_else(|| Some(http::uri::PathAndQuery::from_static("/")));
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
    parts.version = match backend.protocol {
        cutover_config::Protocol::Http1 => Version::HTTP_11,
        cutover_config::Protocol::H2c => Version::HTTP_2,
    };
    let up_req = Request::from_parts(parts, body);

    let sent = tokio::time::timeout(
        service.config.timeouts.response_header,
        backend.client.request(up_req),
    )
    .await;
    let resp = match sent {
        Ok(Ok(resp)) => resp,
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

    let (mut parts, body) = resp.into_parts();
    headers::remove_hop_by_hop(&mut parts.headers);
    if let Some(t) = new_ticket {
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
