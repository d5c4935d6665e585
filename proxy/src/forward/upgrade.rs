//! Phase 3 (only for upgrades): HTTP/1.1 `Upgrade` requests to a protocol
//! the service allows (`allowed_upgrades`, by default WebSocket only) and
//! WebSockets over HTTP/2 (RFC 8441 extended CONNECT, sent to the backend
//! as an HTTP/1.1 upgrade). When the backend answers 101, both sides
//! become a tunnel, tracked for draining. A request for any other
//! protocol (`h2c` always) goes on as a plain request, its `Upgrade`
//! removed with the hop-by-hop headers: nobody opens a tunnel past
//! cutover's header rewriting.

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::body::{BodyIdle, ProxyBody, RequestGuard};
use crate::error::{ErrorKind, ProxyError};
use crate::headers;
use crate::snapshot::{Backend, Pool};
use crate::tunnel::TunnelGuard;
use crate::upstream::UpstreamBody;

/// A request that asks to switch protocols.
pub(super) struct Upgrade {
    /// The `Upgrade` header the backend gets.
    protocol: HeaderValue,
    /// The client asked over HTTP/2 (extended CONNECT).
    h2_websocket: bool,
    /// The client's side of the upgrade, ready once the response is sent.
    on_client: OnUpgrade,
}

impl Upgrade {
    /// The upgrade `req` asks for, if any and `allowed` (lower-case
    /// protocol names); `scanned` is [`headers::Scan::of`] its headers. A
    /// WebSocket over HTTP/2 needs an HTTP/1.1 backend to upgrade with.
    pub fn of(
        req: &mut Request<Incoming>,
        scanned: headers::Scan,
        backend: &Backend,
        pool: &Pool,
        allowed: &[String],
    ) -> Result<Option<Upgrade>, ProxyError> {
        let h2_websocket = h2_websocket(req);
        let protocol = if h2_websocket {
            if !allowed.iter().any(|a| a == "websocket") {
                return Err(ProxyError::plain(
                    ErrorKind::BadRequest,
                    "WebSocket is not allowed here (allowed_upgrades)",
                ));
            }
            if backend.protocol != cutover_config::Protocol::Http1 {
                return Err(ProxyError::plain(
                    ErrorKind::NoBackend,
                    format!(
                        "WebSocket over HTTP/2 needs an http1 backend; pool `{}` is h2c",
                        pool.name
                    ),
                ));
            }
            HeaderValue::from_static("websocket")
        } else {
            match upgrade_header(req, scanned).and_then(|p| allowed_protocols(p, allowed)) {
                Some(p) => p,
                None => return Ok(None),
            }
        };
        Ok(Some(Upgrade {
            protocol,
            h2_websocket,
            on_client: hyper::upgrade::on(req),
        }))
    }

    /// Puts the upgrade on the backend's request head (after the hop-by-hop
    /// headers were removed); an RFC 8441 request becomes an HTTP/1.1
    /// WebSocket handshake.
    pub fn prepare(&self, parts: &mut http::request::Parts) {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, self.protocol.clone());
        if self.h2_websocket {
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
    }

    fn websocket(&self) -> bool {
        self.protocol.as_bytes().eq_ignore_ascii_case(b"websocket")
    }

    /// The backend agreed (`resp` is its 101): tunnel bytes both ways,
    /// tracked for draining as `tunnel`, and give the client its answer (a
    /// 200 on the stream for an HTTP/2 client). The upstream connection is
    /// the tunnel's now, never reused.
    pub fn tunnel(
        self,
        mut resp: Response<UpstreamBody>,
        tunnel: TunnelGuard,
        guard: RequestGuard,
    ) -> Response<ProxyBody> {
        guard.pool.metrics.count_status(101);
        let on_backend = hyper::upgrade::on(&mut resp);
        let websocket = self.websocket();
        tokio::spawn(pump(self.on_client, on_backend, tunnel, websocket));
        let (mut parts, body) = resp.into_parts();
        if self.h2_websocket {
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
        // A 101 has no body: its timer is never armed.
        let idle = BodyIdle::new(std::time::Duration::MAX);
        Response::from_parts(
            parts,
            ProxyBody::Upstream {
                inner: body,
                guard,
                idle,
            },
        )
    }
}

/// Waits for both sides' upgraded connections, then pumps bytes.
async fn pump(on_client: OnUpgrade, on_backend: OnUpgrade, tunnel: TunnelGuard, websocket: bool) {
    let (c, b) = match tokio::join!(on_client, on_backend) {
        (Ok(c), Ok(b)) => (c, b),
        (c, b) => {
            tracing::debug!(client = ?c.err(), backend = ?b.err(), "upgrade did not complete");
            return;
        }
    };
    // Take the backend socket out of hyper's hands: the tunnel drains by
    // its own rules, not with the backend's pool.
    match b.downcast::<TokioIo<crate::upstream::TrackedIo>>() {
        Ok(parts) => {
            let mut backend = parts.io.into_inner();
            backend.forget();
            crate::tunnel::pump(TokioIo::new(c), backend, tunnel, websocket, parts.read_buf).await
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

/// An HTTP/2 extended CONNECT for WebSocket (RFC 8441).
fn h2_websocket<B>(req: &Request<B>) -> bool {
    req.method() == http::Method::CONNECT
        && req.version() == Version::HTTP_2
        && req
            .extensions()
            .get::<hyper::ext::Protocol>()
            .is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"))
}

/// The `Upgrade` header of an HTTP/1.1 upgrade request (WebSocket and
/// others); `scanned` is [`headers::Scan::of`] its headers.
fn upgrade_header<B>(req: &Request<B>, scanned: headers::Scan) -> Option<HeaderValue> {
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

/// Whether `protocol` (`name` or `name/version`) is one of `allowed`.
fn is_allowed(protocol: &str, allowed: &[String]) -> bool {
    let name = protocol.split('/').next().unwrap_or(protocol);
    allowed
        .iter()
        .any(|a| a.eq_ignore_ascii_case(protocol) || a.eq_ignore_ascii_case(name))
}

/// The `Upgrade` value with only the `allowed` protocols of `value` (a
/// list, in the client's order of preference); None when none is. A
/// single allowed protocol, the usual case, is `value` itself.
fn allowed_protocols(value: HeaderValue, allowed: &[String]) -> Option<HeaderValue> {
    let s = value.to_str().ok()?;
    if !s.contains(',') {
        return is_allowed(s.trim(), allowed).then_some(value);
    }
    let kept: Vec<&str> = s
        .split(',')
        .map(str::trim)
        .filter(|p| is_allowed(p, allowed))
        .collect();
    if kept.is_empty() {
        return None;
    }
    HeaderValue::from_str(&kept.join(", ")).ok()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn req(version: Version, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().version(version).uri("/chat");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).expect("request")
    }

    #[test]
    fn an_http11_upgrade_needs_connection_upgrade_and_names_its_protocol() {
        let r = req(
            Version::HTTP_11,
            &[
                ("connection", "keep-alive, Upgrade"),
                ("upgrade", "websocket"),
            ],
        );
        let got = upgrade_header(&r, headers::Scan::of(r.headers()));
        assert_eq!(got.as_ref().map(|v| v.as_bytes()), Some(&b"websocket"[..]));

        let no_connection = req(Version::HTTP_11, &[("upgrade", "websocket")]);
        let scan = headers::Scan::of(no_connection.headers());
        assert!(upgrade_header(&no_connection, scan).is_none());

        let http10 = req(
            Version::HTTP_10,
            &[("connection", "upgrade"), ("upgrade", "websocket")],
        );
        assert!(upgrade_header(&http10, headers::Scan::of(http10.headers())).is_none());
    }

    #[test]
    fn only_allowed_protocols_are_upgraded_to() {
        let allowed = ["websocket".to_string()];
        let v = |s: &'static str| HeaderValue::from_static(s);
        let got = |s| allowed_protocols(v(s), &allowed).map(|v| v.to_str().unwrap().to_string());
        assert_eq!(got("websocket").as_deref(), Some("websocket"));
        assert_eq!(got("WebSocket").as_deref(), Some("WebSocket"));
        assert_eq!(got("h2c"), None);
        assert_eq!(got("h2c, websocket").as_deref(), Some("websocket"));
        assert_eq!(got("foo/2, bar"), None);
        let foo = ["foo".to_string()];
        assert!(allowed_protocols(v("foo/2"), &foo).is_some());
        assert!(allowed_protocols(v("websocket"), &[]).is_none());
    }

    #[test]
    fn websocket_keys_are_24_base64_characters_of_16_random_bytes() {
        let a = websocket_key();
        let b = websocket_key();
        assert_eq!(a.len(), 24);
        assert!(a.as_bytes().ends_with(b"=="));
        assert_ne!(a, b);
    }
}
