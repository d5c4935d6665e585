//! Phase 2: the request as the backend gets it (hop-by-hop headers out,
//! `X-Forwarded-*` and a `Host` in, the request target in the form the
//! backend's protocol wants), and what the access log keeps of it.

use http::header::{HeaderMap, HeaderValue, COOKIE, HOST};
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::Version;

use super::upgrade::Upgrade;
use super::ConnCtx;
use crate::body::AccessInfo;
use crate::error::{ErrorKind, ProxyError};
use crate::headers::{self, Forwarded};
use crate::snapshot::{Backend, Service};

/// Checks an HTTP/1 request head as RFC 9112 3.2 asks: more than one
/// `Host` is a 400, and so is an HTTP/1.1 request without one; the
/// authority of an absolute-form target (`GET http://name/ HTTP/1.1`)
/// replaces `Host` (3.2.2). (A request with both `Content-Length` and
/// `Transfer-Encoding` never gets here with both: hyper's server drops the
/// length, reads the chunked body, and closes the connection after the
/// response, as 6.1 allows.) Per request: two length reads and the
/// version; a lookup only for a repeated header or an absolute target.
#[inline]
pub(super) fn check_head<B>(
    req: &mut http::Request<B>,
    scanned: headers::Scan,
) -> Result<(), ProxyError> {
    if req.version() > Version::HTTP_11 {
        return Ok(());
    }
    if !scanned.has_host() {
        if req.version() == Version::HTTP_11 {
            return Err(ProxyError::plain(
                ErrorKind::BadRequest,
                "an HTTP/1.1 request needs a Host header",
            ));
        }
        return Ok(());
    }
    if repeated(req.headers()) && req.headers().get_all(HOST).iter().nth(1).is_some() {
        return Err(ProxyError::plain(
            ErrorKind::BadRequest,
            "a request may carry only one Host header",
        ));
    }
    if let Some(authority) = req.uri().authority() {
        let host = HeaderValue::from_str(authority.as_str()).map_err(|e| {
            ProxyError::plain(ErrorKind::BadRequest, "invalid request target").caused_by(e)
        })?;
        req.headers_mut().insert(HOST, host);
    }
    Ok(())
}

/// Whether some header name comes more than once (no hashing).
fn repeated(headers: &HeaderMap) -> bool {
    headers.len() != headers.keys_len()
}

/// An HTTP/2 request may split its cookies over several `cookie` fields;
/// an HTTP/1.1 backend gets them as one, joined with `; ` (RFC 9113
/// 8.2.3). Allocates only for such a request.
fn join_cookies(headers: &mut HeaderMap) {
    if !repeated(headers) {
        return;
    }
    let mut all = headers.get_all(COOKIE).iter();
    let (Some(first), Some(_)) = (all.next(), all.next()) else {
        return;
    };
    let mut joined = first.as_bytes().to_vec();
    for v in headers.get_all(COOKIE).iter().skip(1) {
        joined.extend_from_slice(b"; ");
        joined.extend_from_slice(v.as_bytes());
    }
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(COOKIE, v);
    }
}

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
        ctx.listener.proto,
        parts.uri.authority().unwrap_or(&backend.authority).as_str(),
    );
    if let Some(u) = upgrade {
        u.prepare(parts);
    }
    let authority = match backend.protocol {
        cutover_config::Protocol::Http1 => {
            if parts.version == Version::HTTP_2 {
                join_cookies(&mut parts.headers);
            }
            None
        }
        cutover_config::Protocol::H2c | cutover_config::Protocol::H2 => {
            Some(h2_authority(parts, &mut fwd, backend))
        }
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
        cutover_config::Protocol::H2c | cutover_config::Protocol::H2 => {
            Some(match parts.uri.authority() {
                Some(a) if a.as_str().as_bytes() != from_name => a.clone(),
                _ => to.authority.clone(),
            })
        }
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
            // `:scheme` says how cutover reaches the backend.
            uri.scheme = Some(if backend.protocol == cutover_config::Protocol::H2 {
                Scheme::HTTPS
            } else {
                Scheme::HTTP
            });
            uri.authority = Some(authority);
        }
        parts.uri = Uri::from_parts(uri).map_err(|e| {
            ProxyError::plain(ErrorKind::BadRequest, "cannot build the upstream URI").caused_by(e)
        })?;
    }
    parts.version = match backend.protocol {
        cutover_config::Protocol::Http1 => Version::HTTP_11,
        cutover_config::Protocol::H2c | cutover_config::Protocol::H2 => Version::HTTP_2,
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
        error: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(version: Version, target: &str, headers: &[(&str, &str)]) -> http::Request<()> {
        let mut b = http::Request::builder().version(version).uri(target);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).expect("request")
    }

    fn check(r: &mut http::Request<()>) -> Result<(), ProxyError> {
        let scanned = headers::Scan::of(r.headers());
        check_head(r, scanned)
    }

    #[test]
    fn host_is_required_once_in_http11_and_an_absolute_target_wins() {
        assert!(check(&mut req(Version::HTTP_11, "/", &[("host", "a")])).is_ok());
        let missing = check(&mut req(Version::HTTP_11, "/", &[])).unwrap_err();
        assert_eq!(missing.kind, ErrorKind::BadRequest);
        let two = &[("host", "a"), ("host", "b")];
        assert!(check(&mut req(Version::HTTP_11, "/", two)).is_err());
        assert!(check(&mut req(Version::HTTP_10, "/", two)).is_err());
        assert!(check(&mut req(Version::HTTP_10, "/", &[])).is_ok());
        // Other repeated headers are fine.
        let cookies = &[("host", "a"), ("cookie", "x=1"), ("cookie", "y=2")];
        assert!(check(&mut req(Version::HTTP_11, "/", cookies)).is_ok());
        let mut abs = req(
            Version::HTTP_11,
            "http://real.example:8080/x",
            &[("host", "b")],
        );
        check(&mut abs).unwrap();
        assert_eq!(abs.headers()[HOST], "real.example:8080");
        // HTTP/2 carries `:authority`: not checked here.
        assert!(check(&mut req(Version::HTTP_2, "http://a/", &[])).is_ok());
    }

    #[test]
    fn http2_cookie_fields_are_joined_for_http11() {
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_static("a=1"));
        h.append(COOKIE, HeaderValue::from_static("b=2"));
        h.append(COOKIE, HeaderValue::from_static("c=3"));
        join_cookies(&mut h);
        let all: Vec<_> = h.get_all(COOKIE).iter().collect();
        assert_eq!(all, ["a=1; b=2; c=3"]);
        let mut one = HeaderMap::new();
        one.append(COOKIE, HeaderValue::from_static("a=1"));
        join_cookies(&mut one);
        assert_eq!(one[COOKIE], "a=1");
    }
}
