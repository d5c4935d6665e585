//! The request head in wire form.

use bytes::BytesMut;
use http::header;
use http::Method;

use crate::headers::{field_len, write_field, Forwarded};

/// Writes `req`'s head in wire form to `out`: the request line in origin
/// form, the headers as they are, then `fwd`'s (`Host` among them when the
/// request has none); `Content-Length: 0` for a method that normally has a
/// body, as hyper does.
pub(super) fn encode_head(req: &http::request::Parts, fwd: &Forwarded, out: &mut BytesMut) {
    let method = req.method.as_str();
    let target = req.uri.path_and_query().map_or("/", |p| p.as_str());
    let headers = &req.headers;
    let size = headers.iter().fold(
        method.len() + target.len() + 32 + fwd.encoded_len(),
        |n, (k, v)| n + field_len(k.as_str(), v.as_bytes()),
    );
    out.reserve(size);
    out.extend_from_slice(method.as_bytes());
    out.extend_from_slice(b" ");
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (k, v) in headers {
        write_field(out, k.as_str(), v.as_bytes());
    }
    fwd.encode(out);
    let bodiless_method = matches!(
        req.method,
        Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS | Method::TRACE
    );
    if !bodiless_method && !headers.contains_key(header::CONTENT_LENGTH) {
        out.extend_from_slice(b"content-length: 0\r\n");
    }
    out.extend_from_slice(b"\r\n");
}
