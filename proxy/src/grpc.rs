//! What a gRPC client is told when its stream is cut at its pool's drain
//! deadline: `grpc-status: 14` (UNAVAILABLE, which gRPC clients may retry)
//! and a `grpc-message` saying the pool was drained, in the trailers of a
//! stream already answered or in a trailers-only answer to one that was not
//! (gRPC over HTTP/2, "PROTOCOL-HTTP2.md" in grpc/grpc). Everything here
//! runs on the error path, except [`is_grpc`] on a request that has a
//! `content-type`, over HTTP/2.

use http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use http::{Response, StatusCode};

use crate::body::ProxyBody;

static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
static GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
/// UNAVAILABLE: "the service is currently unavailable ... most likely a
/// transient condition, which can be corrected by retrying".
const UNAVAILABLE: &str = "14";

/// A gRPC message (`application/grpc`, `application/grpc+proto`,
/// `application/grpc;...`), not gRPC-Web (whose trailers go in the body).
pub(crate) fn is_grpc(headers: &HeaderMap) -> bool {
    let Some(ct) = headers.get(CONTENT_TYPE) else {
        return false;
    };
    let Some(rest) = ct.as_bytes().strip_prefix(b"application/grpc") else {
        return false;
    };
    matches!(rest.first(), None | Some(b'+' | b';'))
}

/// `grpc-status: 14` and a `grpc-message` saying `pool` was drained.
#[cold]
pub(crate) fn unavailable(pool: &str) -> HeaderMap {
    let mut h = HeaderMap::with_capacity(2);
    h.insert(GRPC_STATUS.clone(), HeaderValue::from_static(UNAVAILABLE));
    let message = percent_encode(&crate::error::drained(pool));
    if let Ok(v) = HeaderValue::from_str(&message) {
        h.insert(GRPC_MESSAGE.clone(), v);
    }
    h
}

/// The trailers-only answer to a gRPC request cut before its response
/// head: 200, `content-type: application/grpc`, the [`unavailable`] fields,
/// no body.
#[cold]
pub(crate) fn trailers_only(pool: &str) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::text(""));
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    h.extend(unavailable(pool));
    resp
}

/// `grpc-message` is percent-encoded: bytes outside printable ASCII
/// (0x20-0x7E), and `%` itself, as `%XX` of their UTF-8 bytes.
fn percent_encode(s: &str) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ct(v: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, HeaderValue::from_static(v));
        h
    }

    #[test]
    fn grpc_content_types_are_known_and_grpc_web_is_not() {
        assert!(is_grpc(&ct("application/grpc")));
        assert!(is_grpc(&ct("application/grpc+proto")));
        assert!(is_grpc(&ct("application/grpc;charset=utf-8")));
        assert!(!is_grpc(&ct("application/grpc-web")));
        assert!(!is_grpc(&ct("application/json")));
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn the_message_is_percent_encoded_and_says_the_pool_was_drained() {
        assert_eq!(percent_encode("a b%c\u{e9}\n"), "a b%25c%C3%A9%0A");
        let h = unavailable("blue");
        assert_eq!(h["grpc-status"], "14");
        assert_eq!(
            h["grpc-message"],
            "pool blue was drained (its drain deadline passed); retry"
        );
        let r = trailers_only("blue");
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "application/grpc");
        assert!(http_body::Body::is_end_stream(r.body()));
    }
}
