//! The response head: status, headers, and how the body is framed.

use std::mem::MaybeUninit;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode, Version};

use super::{H1Error, MAX_HEADERS};

pub(super) enum Parsed {
    /// A 1xx response other than 101, consumed.
    Interim,
    Final((http::response::Parts, Framing, bool)),
}

pub(super) enum Framing {
    Empty,
    Length(u64),
    Chunked,
    Close,
}

/// Where a header field's name and value are in the response head: start
/// and end offsets of each.
type FieldSpan = ((u32, u32), (u32, u32));

/// Parses one response head at the start of `buf`, consuming it; `None`
/// when more bytes are needed.
pub(super) fn parse_head(
    buf: &mut BytesMut,
    head_request: bool,
) -> Result<Option<Parsed>, H1Error> {
    let mut slots = [MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
    let mut res = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut res, buf, &mut slots)
    {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(H1Error::Parse(e)),
    };
    let status = res
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or(H1Error::Invalid("status code out of range"))?;
    if status.is_informational() {
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(H1Error::Invalid(
                "101 Switching Protocols to a request that asked for no upgrade",
            ));
        }
        buf.advance(len);
        return Ok(Some(Parsed::Interim));
    }
    let version = if res.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    // Where each field is in the head (on the stack: no allocation); names
    // and values are built once the head is frozen, values as slices of it
    // (no copy). `Connection` and `Keep-Alive` only say what happens to
    // this connection: read here, not passed on (unless `Connection` names
    // other headers, which the caller's hop-by-hop removal then strips).
    let mut fields = [((0u32, 0u32), (0u32, 0u32)); MAX_HEADERS];
    let found = locate_fields(res.headers, buf.as_ptr() as usize, len, &mut fields)?;
    let head = buf.split_to(len).freeze();
    let mut headers = build_headers(&head, &fields[..found.count])?;
    let conn = found.conn;
    let keep_alive = if version == Version::HTTP_11 {
        !conn.close
    } else {
        conn.keep_alive && !conn.close
    };
    let (framing, keep_alive) = if found.coded {
        coded_framing(status, version, &mut headers, head_request, keep_alive)
    } else {
        length_framing(status, head_request, keep_alive, found.length)?
    };
    let mut parts = Response::new(()).into_parts().0;
    parts.status = status;
    parts.version = version;
    parts.headers = headers;
    Ok(Some(Parsed::Final((parts, framing, keep_alive))))
}

/// What one pass over a response head's fields found (see
/// [`locate_fields`]).
struct Found {
    /// How many fields were located.
    count: usize,
    conn: ConnTokens,
    /// Has `Transfer-Encoding`.
    coded: bool,
    /// The `Content-Length` so far (see [`content_length`]).
    length: Result<Option<u64>, H1Error>,
}

/// Notes where each field of `headers` is in the head (which starts at
/// address `base` and is `len` bytes long), in `fields`; reads the
/// `Connection` tokens and the framing fields on the way.
#[inline]
fn locate_fields(
    headers: &[httparse::Header<'_>],
    base: usize,
    len: usize,
    fields: &mut [FieldSpan; MAX_HEADERS],
) -> Result<Found, H1Error> {
    let span = |s: &[u8]| -> Result<(u32, u32), H1Error> {
        if s.is_empty() {
            return Ok((0, 0));
        }
        // httparse hands out slices of `buf`; anything else is refused
        // rather than trusted.
        (s.as_ptr() as usize)
            .checked_sub(base)
            .filter(|start| start + s.len() <= len)
            .map(|start| (start as u32, (start + s.len()) as u32))
            .ok_or(H1Error::Invalid("header field outside the response head"))
    };
    let mut count = 0;
    let mut conn = ConnTokens::default();
    // The framing fields, read here rather than looked up in the map.
    let mut coded = false;
    let mut length = Ok(None);
    for h in headers.iter() {
        if h.name.eq_ignore_ascii_case("keep-alive") {
            continue;
        }
        if h.name.eq_ignore_ascii_case("connection") && !conn.read(h.value) {
            continue;
        }
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            coded = true;
        } else if h.name.eq_ignore_ascii_case("content-length") {
            length = length.and_then(|l| content_length(l, h.value));
        }
        if let Some(slot) = fields.get_mut(count) {
            *slot = (span(h.name.as_bytes())?, span(h.value)?);
            count += 1;
        }
    }
    Ok(Found {
        count,
        conn,
        coded,
        length,
    })
}

/// The header map of a frozen response head, its names and values built
/// from their `fields` locations, values as slices of `head` (no copy).
#[inline]
fn build_headers(head: &Bytes, fields: &[FieldSpan]) -> Result<HeaderMap, H1Error> {
    let mut headers = HeaderMap::with_capacity(fields.len());
    for &((ns, ne), (vs, ve)) in fields {
        let name = HeaderName::from_bytes(&head[ns as usize..ne as usize])
            .map_err(|_| H1Error::Invalid("invalid header name"))?;
        let value = HeaderValue::from_maybe_shared(head.slice(vs as usize..ve as usize))
            .map_err(|_| H1Error::Invalid("invalid header value"))?;
        headers.append(name, value);
    }
    Ok(headers)
}

/// The `Connection` tokens of a response.
#[derive(Default)]
struct ConnTokens {
    close: bool,
    keep_alive: bool,
}

impl ConnTokens {
    /// Notes one `Connection` value; true when it names other headers too.
    fn read(&mut self, value: &[u8]) -> bool {
        let mut others = false;
        for t in value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
            if t.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if t.eq_ignore_ascii_case(b"keep-alive") {
                self.keep_alive = true;
            } else if !t.is_empty() {
                others = true;
            }
        }
        others
    }
}

/// No body at all, whatever the head says: a HEAD request's answer, 204, 304.
fn bodiless(status: StatusCode, head_request: bool) -> bool {
    head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED
}

/// The framing of a response with `Transfer-Encoding`: chunked if that is
/// the last coding (HTTP/1.1), else read to the close. A `Content-Length`
/// beside it is dropped, and the connection is not trusted again.
fn coded_framing(
    status: StatusCode,
    version: Version,
    headers: &mut HeaderMap,
    head_request: bool,
    mut keep_alive: bool,
) -> (Framing, bool) {
    if bodiless(status, head_request) {
        return (Framing::Empty, keep_alive);
    }
    if headers.remove(header::CONTENT_LENGTH).is_some() {
        keep_alive = false;
    }
    let chunked_last = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .next_back()
        .and_then(|v| v.as_bytes().split(|b| *b == b',').next_back())
        .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"));
    if chunked_last && version == Version::HTTP_11 {
        (Framing::Chunked, keep_alive)
    } else {
        (Framing::Close, false)
    }
}

/// The framing of a response without `Transfer-Encoding`, given its
/// `Content-Length` (see [`content_length`]; not looked at when there is no
/// body anyway): that many bytes, or to the close without one.
fn length_framing(
    status: StatusCode,
    head_request: bool,
    keep_alive: bool,
    length: Result<Option<u64>, H1Error>,
) -> Result<(Framing, bool), H1Error> {
    if bodiless(status, head_request) {
        return Ok((Framing::Empty, keep_alive));
    }
    Ok(match length? {
        Some(0) => (Framing::Empty, keep_alive),
        Some(n) => (Framing::Length(n), keep_alive),
        None => (Framing::Close, false),
    })
}

/// Adds one `Content-Length` field to `length` (the value of those before
/// it): a number, or a list of the same number; anything else is refused.
fn content_length(length: Option<u64>, value: &[u8]) -> Result<Option<u64>, H1Error> {
    let mut length = length;
    for part in value.split(|b| *b == b',') {
        let part = part.trim_ascii();
        let n = std::str::from_utf8(part)
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or(H1Error::Invalid("Content-Length is not a number"))?;
        if length.is_some_and(|l| l != n) {
            return Err(H1Error::Invalid("conflicting Content-Length values"));
        }
        length = Some(n);
    }
    Ok(length)
}
