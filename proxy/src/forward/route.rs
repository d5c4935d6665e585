//! Phase 1: where a request goes. A preview listener's fixed pool, else the
//! override header (if the service has one and its token matches), else the
//! connection's ticket (or the cookie's, with `sticky = "cookie"`) mapped
//! through the split. Then a backend of that pool.

use std::sync::Arc;

use cutover_config::Sticky;
use http::header::HeaderName;
use http::Request;

use super::{Books, ConnCtx, Failed};
use crate::error::{ErrorKind, ProxyError};
use crate::headers;
use crate::snapshot::{Backend, Pool, Service};
use crate::ticket::Ticket;

static X_CUTOVER_TOKEN: HeaderName = HeaderName::from_static("x-cutover-token");

/// A request's service (from the one snapshot read), route, pool and
/// backend.
pub(super) struct Routed {
    pub service: Arc<Service>,
    pub route: Route,
    pub pool: Arc<Pool>,
    pub backend: Arc<Backend>,
}

/// Reads the snapshot (once for this request), chooses the pool and picks
/// a backend in it.
#[inline]
pub(super) fn route<B>(req: &Request<B>, ctx: &ConnCtx) -> Result<Routed, Failed> {
    let service = {
        let snap = ctx.listener.shared.snapshot.load();
        ctx.listener.service_in(&snap).cloned()
    };
    let Some(service) = service else {
        let err = ProxyError::plain(
            ErrorKind::NoBackend,
            "this listener's service is not configured",
        );
        return Err(Failed::new(err, Books::Listener));
    };
    let route = match choose(&service, ctx, req) {
        Ok(route) => route,
        Err(err) => return Err(Failed::new(err, Books::Service(service))),
    };
    let (pool, backend) = pick(&service, &route)?;
    Ok(Routed {
        service,
        route,
        pool,
        backend,
    })
}

/// Where a request goes.
pub(super) struct Route {
    pub pool: usize,
    /// The ticket that chose the pool; None when the pool was fixed
    /// (preview listener, override header).
    pub ticket: Option<Ticket>,
    /// A fresh ticket to set as the cookie.
    pub set_cookie: bool,
}

impl Route {
    fn fixed(pool: usize) -> Route {
        Route {
            pool,
            ticket: None,
            set_cookie: false,
        }
    }
}

/// The pool for `req`: preview listener, override header, then the ticket.
fn choose<B>(service: &Service, ctx: &ConnCtx, req: &Request<B>) -> Result<Route, ProxyError> {
    if let Some(name) = &ctx.listener.fixed_pool {
        return service.pool_index(name).map(Route::fixed).ok_or_else(|| {
            ProxyError::plain(
                ErrorKind::NoBackend,
                format!("preview pool `{name}` no longer exists"),
            )
        });
    }
    if let Some(route) = by_override(service, req)? {
        return Ok(route);
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

/// The pool the override header names, when the service has one, the
/// request carries it and (if the service asks for one) the right token.
fn by_override<B>(service: &Service, req: &Request<B>) -> Result<Option<Route>, ProxyError> {
    let Some(h) = &service.override_header else {
        return Ok(None);
    };
    let Some(v) = req.headers().get(h) else {
        return Ok(None);
    };
    let token_ok = match &service.config.override_token {
        None => true,
        Some(t) => req
            .headers()
            .get(&X_CUTOVER_TOKEN)
            .is_some_and(|v| headers::constant_time_eq(v.as_bytes(), t.as_bytes())),
    };
    if !token_ok {
        return Ok(None);
    }
    let name = v.to_str().unwrap_or("").trim();
    match service.pool_index(name) {
        Some(i) => Ok(Some(Route::fixed(i))),
        // The pools are not listed: a client has no business learning them.
        None => Err(ProxyError::plain(
            ErrorKind::BadRequest,
            format!(
                "header `{h}` names pool `{}`, which service `{}` does not have",
                String::from_utf8_lossy(v.as_bytes()),
                service.name(),
            ),
        )),
    }
}

/// The routed pool, and the backend in it that gets the request. A
/// backend that is down is never picked: the pool's draw covers only the
/// available ones (a plain field of the snapshot, no lock, no atomic).
///
/// Issue 15's retries come back here for another backend of the same pool.
#[inline]
fn pick(service: &Service, route: &Route) -> Result<(Arc<Pool>, Arc<Backend>), Failed> {
    let Some(pool) = service.pools.get(route.pool) else {
        let err = ProxyError::plain(ErrorKind::NoBackend, "no such pool");
        return Err(Failed::new(err, Books::Listener));
    };
    match pool.pick() {
        Some(backend) => Ok((pool.clone(), backend.clone())),
        None => nothing_to_pick(service, route, pool),
    }
}

/// The routed pool has no backend to pick. When all of its backends are
/// down: with `failover = true` a ticket-routed request goes to the next
/// pool with a share and a backend up; else a 503 that names the pool and
/// why. (A preview listener's or override header's pool is the operator's
/// explicit choice: it never fails over.)
#[cold]
#[inline(never)]
fn nothing_to_pick(
    service: &Service,
    route: &Route,
    pool: &Arc<Pool>,
) -> Result<(Arc<Pool>, Arc<Backend>), Failed> {
    if pool.all_down() {
        if route.ticket.is_some() {
            if let Some((_, to, backend)) = service.failover(route.pool) {
                return Ok((to.clone(), backend.clone()));
            }
        }
        let err = ProxyError::new(ErrorKind::NoHealthyBackend, pool.down_message())
            .public(format!("every backend of pool {} is down", pool.name));
        return Err(Failed::new(err, Books::Pool(pool.clone())).detail(service));
    }
    let err = ProxyError::plain(
        ErrorKind::NoBackend,
        format!(
            "pool `{}` of service `{}` has no backend to send to",
            pool.name,
            service.name()
        ),
    );
    Err(Failed::new(err, Books::Pool(pool.clone())).detail(service))
}
