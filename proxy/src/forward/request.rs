//! Phase 2: the request as the backend gets it (hop-by-hop headers out,
//! `X-Forwarded-*` and a `Host` in, the request target in the form the
//! backend's protocol wants), and what the access log keeps of it.

use http::header::{HeaderValue, HOST};
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::Version;

use super::upgrade::Upgrade;
use super::ConnCtx;
use crate::body::AccessInfo;
use crate::error::{ErrorKind, ProxyError};
use crate::headers::{self, Forwarded};
use crate::snapshot::{Backend, Service};

/// Rewrites `parts` for `backend` (and its `upgrade`, if any) and returns
/// the headers cutover adds (written after the request's own; see
/// [`Forwarded`]). `scanned` is [`headers::Scan::of`] the request's
/// headers, unchanged since.
#[inline]
pub(super) fn prepare(
    parts: &mut http::request::Parts,
    scanned: headers::Scan,
    ctx: &ConnCtx,
    backend: &Backend,
    upgrade: Option<&Upgrade>,
) -> Result<Forwarded, ProxyError> {
    // The name the client asked for goes on in `Host` (from HTTP/2's
    // `:authority` when the client spoke HTTP/2), else the backend's own
    // (an HTTP/1.0 client may send none).
    let mut fwd = headers::prepare_request(
        &mut parts.headers,
        scanned,
        &ctx.client_value,
        ctx.listener.trust_forwarded,
        "http",
        parts.uri.authority().unwrap_or(&backend.authority).as_str(),
    );
    if let Some(u) = upgrade {
        u.prepare(parts);
    }
    let authority = match backend.protocol {
        cutover_config::Protocol::Http1 => None,
        cutover_config::Protocol::H2c => Some(h2_authority(parts, &mut fwd, backend)),
    };
    target(parts, backend, authority)?;
    Ok(fwd)
}

/// A service whose override header is guarded by a token keeps both to
/// itself: the header goes (the token itself went with the hop-by-hop
/// ones in [`headers::prepare_request`]). One lookup, only for such
/// services.
#[inline]
pub(super) fn strip_override(parts: &mut http::request::Parts, service: &Service) {
    if service.config.override_token.is_some() {
        if let Some(h) = &service.override_header {
            parts.headers.remove(h);
        }
    }
}

/// `parts` (prepared for `from`) for another backend of the same pool and
/// protocol, for a retry: where the name the backend gets was `from`'s own
/// address (a request without a `Host`), it becomes `to`'s.
#[cold]
pub(super) fn retarget(
    parts: &mut http::request::Parts,
    fwd: &mut Forwarded,
    from: &Backend,
    to: &Backend,
) -> Result<(), ProxyError> {
    let from_name = from.authority.as_str().as_bytes();
    if fwd.host.as_ref().is_some_and(|h| h.as_bytes() == from_name) {
        let host = HeaderValue::from_str(to.authority.as_str()).ok();
        fwd.forwarded_host.clone_from(&host);
        fwd.host = host;
    }
    let authority = match to.protocol {
        cutover_config::Protocol::Http1 => None,
        cutover_config::Protocol::H2c => Some(match parts.uri.authority() {
            Some(a) if a.as_str().as_bytes() != from_name => a.clone(),
            _ => to.authority.clone(),
        }),
    };
    target(parts, to, authority)
}

/// The `:authority` an HTTP/2 backend gets: the name the client asked for
/// (its `Host`, or the one cutover adds from the client's `:authority`),
/// else the backend's own address. HTTP/2 carries the name only there
/// (RFC 9113, 8.3.1): the `Host` header goes, as strict servers (nginx)
/// answer 400 to a request with both.
fn h2_authority(
    parts: &mut http::request::Parts,
    fwd: &mut Forwarded,
    backend: &Backend,
) -> Authority {
    let host = parts.headers.remove(HOST).or_else(|| fwd.host.take());
    host.and_then(|h| Authority::try_from(h.as_bytes()).ok())
        .unwrap_or_else(|| backend.authority.clone())
}

/// HTTP/1.1 backends get origin form (`GET /path HTTP/1.1`), as a backend
/// expects from a reverse proxy (an HTTP/1.1 client's request target mostly
/// is already); HTTP/2 ones `:scheme` and `authority` (see
/// [`h2_authority`]).
#[inline]
fn target(
    parts: &mut http::request::Parts,
    backend: &Backend,
    authority: Option<Authority>,
) -> Result<(), ProxyError> {
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
            .or_else(|| Some(PathAndQuery::from_static("/")));
        if let Some(authority) = authority {
            uri.scheme = Some(Scheme::HTTP);
            uri.authority = Some(authority);
        }
        parts.uri = Uri::from_parts(uri).map_err(|e| {
            ProxyError::new(ErrorKind::BadRequest, "cannot build the upstream URI").caused_by(e)
        })?;
    }
    parts.version = match backend.protocol {
        cutover_config::Protocol::Http1 => Version::HTTP_11,
        cutover_config::Protocol::H2c => Version::HTTP_2,
    };
    Ok(())
}

/// What the access log line needs of the request, when the service logs.
#[inline]
pub(super) fn access_info(
    parts: &http::request::Parts,
    ctx: &ConnCtx,
    service: &Service,
) -> Option<Box<AccessInfo>> {
    if !service.config.access_log {
        return None;
    }
    Some(Box::new(AccessInfo {
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
        retried: Vec::new(),
    }))
}
