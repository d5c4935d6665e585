//! cutover's own HTTP/1.1 client, for the common request: one without a
//! body and without an upgrade. It runs inside the request's task (no
//! connection task, no dispatch channel, no task switch per request or per
//! body chunk), writes the request head with one `write` and parses the
//! response head with `httparse`; the response body is read from the socket
//! as the downstream side polls for it, and the connection goes back to the
//! idle list when the body has been read to its end.
//!
//! Requests with a body, upgrades and `CONNECT` go through hyper's client
//! (the parent module), which streams a request body while it reads the
//! response (a backend may answer before it has read the body).
//!
//! Response framing follows RFC 9112 section 6.3: no body for `HEAD`, 1xx,
//! 204 and 304; `Transfer-Encoding` with `chunked` last is chunked (any
//! `Content-Length` beside it is dropped and the connection is not reused);
//! other transfer codings and responses without a length run to the close;
//! otherwise `Content-Length`, which must be one number. Interim responses
//! (1xx other than 101) are read and dropped. A connection is reused only
//! when the response said keep-alive (HTTP/1.1 without `Connection: close`,
//! HTTP/1.0 with `Connection: keep-alive`) and nothing followed the body.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode, Version};
use http_body::{Frame, SizeHint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{IdleList, TrackedIo};
use crate::headers::{field_len, write_field, Forwarded};

/// A response head (status line and headers) longer than this is refused.
pub const MAX_HEAD: usize = 64 * 1024;
/// A response with more header lines than this is refused (hyper's limit).
pub const MAX_HEADERS: usize = 100;
/// A chunk-size line (with extensions) longer than this is refused.
const MAX_CHUNK_LINE: usize = 4 * 1024;
/// Trailers longer than this are refused.
const MAX_TRAILERS: usize = 16 * 1024;
/// Read sizes: the response head, then the body. A connection usually goes
/// back to the idle list while its last response's head (slices of its
/// buffer) is still being written downstream, so the next request on it
/// needs a fresh buffer: 1 KiB comes from the allocator's per-thread cache
/// (glibc's tcache stops at 1032 bytes), cheap and still warm; 4 KiB did not.
/// A larger head grows the buffer.
const HEAD_READ: usize = 1024;
const BODY_READ: usize = 16 * 1024;
/// A body the client stopped reading is read to its end in the background,
/// to keep its connection, when at most this much of it is left...
const FINISH_MAX_BYTES: u64 = 64 * 1024;
/// ...and it ends within this long; otherwise the connection is closed.
const FINISH_MAX_TIME: std::time::Duration = std::time::Duration::from_secs(1);

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum H1Error {
    #[error("writing the request failed: {0}")]
    Write(#[source] io::Error),
    #[error("reading the response failed: {0}")]
    Read(#[source] io::Error),
    #[error("the backend closed the connection without answering")]
    Closed,
    #[error("the backend closed the connection in the middle of the response head")]
    TruncatedHead,
    #[error("response head longer than {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("invalid response head: {0}")]
    Parse(httparse::Error),
    #[error("invalid response: {0}")]
    Invalid(&'static str),
    #[error("the backend closed the connection {0} bytes before the end of the body")]
    TruncatedBody(u64),
    #[error("invalid chunked body: {0}")]
    Chunked(&'static str),
}

/// A failed exchange, and whether the request may go again on a fresh
/// connection: the connection was a reused one and the backend had not
/// answered at all (most likely its keep-alive timeout closed it as the
/// request went out), and either the request was not delivered or it is
/// idempotent.
#[derive(Debug)]
pub struct SendError {
    pub error: H1Error,
    pub retry: bool,
}

/// One upstream HTTP/1.1 connection of this client.
pub struct Conn {
    io: TrackedIo,
    /// Bytes read and not consumed yet; empty between exchanges.
    buf: BytesMut,
    /// Has finished an exchange before.
    reused: bool,
}

impl Conn {
    pub fn new(io: TrackedIo) -> Conn {
        Conn {
            io,
            buf: BytesMut::new(),
            reused: false,
        }
    }

    /// Still open, and the backend has sent nothing since the last exchange.
    /// Does not wait; costs no system call when the socket has seen no event.
    pub(super) fn usable(&self) -> bool {
        let mut probe = [0u8; 1];
        match self.io.stream().try_read(&mut probe) {
            Err(e) => e.kind() == io::ErrorKind::WouldBlock,
            // 0: closed; anything else: bytes nobody asked for.
            Ok(_) => false,
        }
    }

    fn poll_fill(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < want / 4 {
            self.buf.reserve(want);
        }
        tokio_util::io::poll_read_buf(Pin::new(self.io.stream_mut()), cx, &mut self.buf)
    }
}

/// The idle connections of this client for one backend.
pub type IdleConns = IdleList<Conn>;

impl IdleList<Conn> {
    /// The most recently used idle connection that is still usable.
    pub fn take(&self) -> Option<Conn> {
        loop {
            let (conn, _) = self.lock().pop_back()?;
            if conn.usable() {
                return Some(conn);
            }
        }
    }

    fn give_back(&self, mut conn: Conn) {
        conn.reused = true;
        // An empty buffer of head size is kept (reused in place by the next
        // response when nothing else holds it); a larger one is not held
        // while idle.
        if conn.buf.capacity() > HEAD_READ {
            conn.buf = BytesMut::new();
        }
        self.push(conn, |_| true);
    }
}

/// Whether this client can send a request with this head and body: no
/// body and not `CONNECT`. The caller has removed hop-by-hop headers
/// (`Transfer-Encoding` among them) and sends upgrades elsewhere.
pub fn can_send<B: http_body::Body>(head: &http::request::Parts, body: &B) -> bool {
    body.is_end_stream() && head.method != Method::CONNECT
}

fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Writes `req`'s head in wire form to `out`: the request line in origin
/// form, the headers as they are, then `fwd`'s (`Host` among them when the
/// request has none); `Content-Length: 0` for a method that normally has a
/// body, as hyper does.
fn encode_head(req: &http::request::Parts, fwd: &Forwarded, out: &mut BytesMut) {
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

/// The two facts about a request's method that matter to its response.
struct Head {
    head_request: bool,
    idempotent: bool,
}

/// Sends `req`'s head on `conn` and reads the response head. The body is
/// read as the returned response's body is polled; `conn` goes back to
/// `home` at its end when it can be reused.
pub async fn send(
    mut conn: Conn,
    req: &http::request::Parts,
    fwd: &Forwarded,
    home: &std::sync::Arc<IdleConns>,
) -> Result<Response<Body>, SendError> {
    let head = Head {
        head_request: req.method == Method::HEAD,
        idempotent: idempotent(&req.method),
    };
    let reused = conn.reused;
    // The (empty) read buffer holds the request head while it is written;
    // sized once for that and for the response head.
    conn.buf.clear();
    conn.buf.reserve(HEAD_READ);
    encode_head(req, fwd, &mut conn.buf);
    let written = conn.io.stream_mut().write_all(&conn.buf).await;
    conn.buf.clear();
    if let Err(e) = written {
        return Err(SendError {
            error: H1Error::Write(e),
            retry: reused,
        });
    }
    let mut answered = false;
    let fail = |error: H1Error, answered: bool| SendError {
        retry: reused && !answered && head.idempotent,
        error,
    };
    // A head can only have ended in bytes with a newline: a backend that
    // drips its head byte by byte does not make cutover re-parse it each time.
    let mut may_be_whole = false;
    let parsed = loop {
        if may_be_whole {
            match parse_head(&mut conn.buf, head.head_request) {
                Ok(Some(Parsed::Interim)) => {
                    may_be_whole = !conn.buf.is_empty();
                    continue;
                }
                Ok(Some(Parsed::Final(p))) => break p,
                Ok(None) => {}
                Err(e) => return Err(fail(e, true)),
            }
        }
        if conn.buf.len() >= MAX_HEAD {
            return Err(fail(H1Error::HeadTooLarge, true));
        }
        if conn.buf.capacity() - conn.buf.len() < HEAD_READ / 4 {
            conn.buf.reserve(HEAD_READ);
        }
        let before = conn.buf.len();
        match conn.io.stream_mut().read_buf(&mut conn.buf).await {
            Ok(0) if !answered => return Err(fail(H1Error::Closed, false)),
            Ok(0) => return Err(fail(H1Error::TruncatedHead, true)),
            Ok(_) => answered = true,
            Err(e) => return Err(fail(H1Error::Read(e), answered)),
        }
        may_be_whole = conn.buf[before..].contains(&b'\n');
    };
    let (parts, framing, keep_alive) = parsed;
    let mut body = Body {
        state: State::Done,
        conn: Some(conn),
        home: Some(home.clone()),
        keep_alive,
        full: None,
        finish_on_drop: true,
        kept: false,
    };
    match framing {
        Framing::Empty => body.finish(),
        Framing::Length(n) => {
            // The whole body is already here (the usual small response):
            // the connection is free before the body is even polled.
            let buffered = body.conn.as_ref().map_or(0, |c| c.buf.len() as u64);
            if n <= buffered {
                if let Some(c) = body.conn.as_mut() {
                    body.full = Some(c.buf.split_to(n as usize).freeze());
                }
                body.finish();
            } else {
                body.state = State::Length(n);
            }
        }
        Framing::Chunked => body.state = State::Chunked(Chunk::Size),
        Framing::Close => body.state = State::Close,
    }
    Ok(Response::from_parts(parts, body))
}

enum Parsed {
    /// A 1xx response other than 101, consumed.
    Interim,
    Final((http::response::Parts, Framing, bool)),
}

enum Framing {
    Empty,
    Length(u64),
    Chunked,
    Close,
}

/// Parses one response head at the start of `buf`, consuming it; `None`
/// when more bytes are needed.
fn parse_head(buf: &mut BytesMut, head_request: bool) -> Result<Option<Parsed>, H1Error> {
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
    let base = buf.as_ptr() as usize;
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
    let mut fields = [((0u32, 0u32), (0u32, 0u32)); MAX_HEADERS];
    let mut count = 0;
    let mut conn = ConnTokens::default();
    // The framing fields, read here rather than looked up in the map.
    let mut coded = false;
    let mut length = Ok(None);
    for h in res.headers.iter() {
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
    let head = buf.split_to(len).freeze();
    let mut headers = HeaderMap::with_capacity(count);
    for &((ns, ne), (vs, ve)) in &fields[..count] {
        let name = HeaderName::from_bytes(&head[ns as usize..ne as usize])
            .map_err(|_| H1Error::Invalid("invalid header name"))?;
        let value = HeaderValue::from_maybe_shared(head.slice(vs as usize..ve as usize))
            .map_err(|_| H1Error::Invalid("invalid header value"))?;
        headers.append(name, value);
    }
    let keep_alive = if version == Version::HTTP_11 {
        !conn.close
    } else {
        conn.keep_alive && !conn.close
    };
    let (framing, keep_alive) = if coded {
        coded_framing(status, version, &mut headers, head_request, keep_alive)
    } else {
        length_framing(status, head_request, keep_alive, length)?
    };
    let mut parts = Response::new(()).into_parts().0;
    parts.status = status;
    parts.version = version;
    parts.headers = headers;
    Ok(Some(Parsed::Final((parts, framing, keep_alive))))
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

#[derive(Clone, Copy)]
enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data: bytes left.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailers, then an empty line.
    Trailers,
}

#[derive(Clone, Copy)]
enum State {
    Done,
    /// Bytes of the body left to read.
    Length(u64),
    Chunked(Chunk),
    /// Until the backend closes.
    Close,
}

/// A response body read from its connection as it is polled.
pub struct Body {
    state: State,
    conn: Option<Conn>,
    home: Option<std::sync::Arc<IdleConns>>,
    keep_alive: bool,
    /// The whole body, when it came with the head.
    full: Option<Bytes>,
    /// Dropped before its end: finish it in the background (false for the
    /// body doing that).
    finish_on_drop: bool,
    /// Its connection went back to the idle list.
    kept: bool,
}

impl Drop for Body {
    /// The client went away before the end of the body (its request is
    /// over): when little of a keep-alive body is left, read the rest in
    /// the background and keep the connection, rather than pay a new one
    /// for the next request. The rest is discarded; a body that is longer
    /// or slower than the limits closes its connection.
    fn drop(&mut self) {
        if !self.finish_on_drop || !self.keep_alive || self.conn.is_none() {
            return;
        }
        let small = match self.state {
            State::Length(left) => left <= FINISH_MAX_BYTES,
            State::Chunked(_) => true,
            State::Done | State::Close => false,
        };
        if !small {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let Some(kept) = self
            .conn
            .as_ref()
            .map(|c| c.io.registry.metrics().kept.clone())
        else {
            return;
        };
        let mut rest = Body {
            state: self.state,
            conn: self.conn.take(),
            home: self.home.take(),
            keep_alive: true,
            full: None,
            finish_on_drop: false,
            kept: false,
        };
        rt.spawn(async move {
            let drained = tokio::time::timeout(FINISH_MAX_TIME, async {
                let mut read = 0u64;
                while let Some(frame) = http_body_util::BodyExt::frame(&mut rest).await {
                    let Ok(frame) = frame else { return };
                    read += frame.data_ref().map_or(0, |d| d.len() as u64);
                    if read > FINISH_MAX_BYTES {
                        return;
                    }
                }
            });
            // At the end of the body, `rest` has given its connection
            // back; otherwise dropping it closes the connection.
            let _ = drained.await;
            if rest.kept {
                kept.inc();
            }
        });
    }
}

impl Body {
    /// The body ended: its connection goes back when it can be reused.
    fn finish(&mut self) {
        self.state = State::Done;
        if let (Some(conn), Some(home)) = (self.conn.take(), self.home.take()) {
            if self.keep_alive && conn.buf.is_empty() {
                home.give_back(conn);
                self.kept = true;
            }
        }
    }

    /// The body failed: its connection is closed.
    fn fail(&mut self, e: H1Error) -> Poll<Option<Result<Frame<Bytes>, H1Error>>> {
        self.state = State::Done;
        self.conn = None;
        Poll::Ready(Some(Err(e)))
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = H1Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, H1Error>>> {
        let this = self.get_mut();
        if let Some(data) = this.full.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match this.state {
                State::Done => return Poll::Ready(None),
                State::Length(left) | State::Chunked(Chunk::Data(left)) => {
                    if !conn.buf.is_empty() {
                        let n = left.min(conn.buf.len() as u64);
                        let data = conn.buf.split_to(n as usize).freeze();
                        match this.state {
                            State::Length(_) if n == left => this.finish(),
                            State::Length(_) => this.state = State::Length(left - n),
                            _ if n == left => this.state = State::Chunked(Chunk::DataEnd),
                            _ => this.state = State::Chunked(Chunk::Data(left - n)),
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                State::Chunked(Chunk::Size) => match httparse::parse_chunk_size(&conn.buf) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        conn.buf.advance(used);
                        this.state = State::Chunked(if size == 0 {
                            Chunk::Trailers
                        } else {
                            Chunk::Data(size)
                        });
                        continue;
                    }
                    Ok(httparse::Status::Partial) if conn.buf.len() > MAX_CHUNK_LINE => {
                        return this.fail(H1Error::Chunked("chunk-size line too long"))
                    }
                    Ok(httparse::Status::Partial) => {}
                    Err(_) => return this.fail(H1Error::Chunked("invalid chunk-size line")),
                },
                State::Chunked(Chunk::DataEnd) => {
                    if conn.buf.len() >= 2 {
                        if &conn.buf[..2] != b"\r\n" {
                            return this.fail(H1Error::Chunked("chunk data not followed by CRLF"));
                        }
                        conn.buf.advance(2);
                        this.state = State::Chunked(Chunk::Size);
                        continue;
                    }
                }
                State::Chunked(Chunk::Trailers) => {
                    if conn.buf.starts_with(b"\r\n") {
                        conn.buf.advance(2);
                        this.finish();
                        return Poll::Ready(None);
                    }
                    let mut slots = [httparse::EMPTY_HEADER; 32];
                    match httparse::parse_headers(&conn.buf, &mut slots) {
                        Ok(httparse::Status::Complete((used, fields))) => {
                            let mut trailers = HeaderMap::with_capacity(fields.len());
                            for f in fields.iter() {
                                if let (Ok(k), Ok(v)) = (
                                    HeaderName::from_bytes(f.name.as_bytes()),
                                    HeaderValue::from_bytes(f.value),
                                ) {
                                    trailers.append(k, v);
                                }
                            }
                            conn.buf.advance(used);
                            this.finish();
                            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                        }
                        Ok(httparse::Status::Partial) if conn.buf.len() > MAX_TRAILERS => {
                            return this.fail(H1Error::Chunked("trailers too long"))
                        }
                        Ok(httparse::Status::Partial) => {}
                        Err(_) => return this.fail(H1Error::Chunked("invalid trailers")),
                    }
                }
                State::Close => {
                    if !conn.buf.is_empty() {
                        let data = conn.buf.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
            }
            // Need more bytes.
            let conn = match this.conn.as_mut() {
                Some(c) => c,
                None => return Poll::Ready(None),
            };
            match ready!(conn.poll_fill(cx, BODY_READ)) {
                Ok(0) => {
                    return match this.state {
                        State::Close => {
                            // The end of a close-delimited body.
                            this.state = State::Done;
                            this.conn = None;
                            Poll::Ready(None)
                        }
                        State::Length(left) | State::Chunked(Chunk::Data(left)) => {
                            this.fail(H1Error::TruncatedBody(left))
                        }
                        _ => this.fail(H1Error::Chunked(
                            "the backend closed the connection before the last chunk",
                        )),
                    };
                }
                Ok(_) => {}
                Err(e) => return this.fail(H1Error::Read(e)),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.full.is_none() && matches!(self.state, State::Done)
    }

    fn size_hint(&self) -> SizeHint {
        if let Some(d) = &self.full {
            return SizeHint::with_exact(d.len() as u64);
        }
        match self.state {
            State::Done => SizeHint::with_exact(0),
            State::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;
    use std::time::Duration;

    /// What cutover adds to a request from 127.0.0.1 that has a `Host`.
    fn fwd() -> Forwarded {
        Forwarded {
            for_: HeaderValue::from_static("127.0.0.1"),
            proto: HeaderValue::from_static("http"),
            host: None,
            forwarded_host: None,
        }
    }

    fn parse(raw: &[u8], head_request: bool) -> Result<Option<Parsed>, H1Error> {
        let mut buf = BytesMut::from(raw);
        parse_head(&mut buf, head_request)
    }

    fn final_of(raw: &[u8], head_request: bool) -> (http::response::Parts, Framing, bool) {
        match parse(raw, head_request) {
            Ok(Some(Parsed::Final(p))) => p,
            Ok(Some(Parsed::Interim)) => panic!("interim"),
            Ok(None) => panic!("partial"),
            Err(e) => panic!("error: {e}"),
        }
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let (p, f, ka) = final_of(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", false);
        assert_eq!(p.status, 200);
        assert!(matches!(f, Framing::Length(5)) && ka);
        let (_, f, ka) = final_of(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true);
        assert!(matches!(f, Framing::Empty) && ka, "HEAD has no body");
        let (_, f, _) = final_of(
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
            false,
        );
        assert!(matches!(f, Framing::Empty));
        let (_, f, ka) = final_of(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            false,
        );
        assert!(matches!(f, Framing::Chunked) && ka);
        let (p, f, ka) = final_of(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            false,
        );
        assert!(
            matches!(f, Framing::Chunked) && !ka,
            "both: chunked, no reuse"
        );
        assert!(!p.headers.contains_key(header::CONTENT_LENGTH));
        let (_, f, ka) = final_of(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false);
        assert!(matches!(f, Framing::Close) && !ka);
        let (_, f, ka) = final_of(b"HTTP/1.1 200 OK\r\n\r\n", false);
        assert!(
            matches!(f, Framing::Close) && !ka,
            "no length: to the close"
        );
        let (_, _, ka) = final_of(
            b"HTTP/1.1 200 OK\r\nConnection: x, Close\r\nContent-Length: 1\r\n\r\n",
            false,
        );
        assert!(!ka);
        let (p, _, ka) = final_of(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false);
        assert!(!ka && p.version == Version::HTTP_10);
        let (_, _, ka) = final_of(
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n",
            false,
        );
        assert!(ka);
        let (_, f, _) = final_of(b"HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\n\r\n", false);
        assert!(matches!(f, Framing::Length(7)));
        // A Content-Length nobody uses is not judged: beside a coding, or
        // on an answer without a body.
        let (p, f, ka) = final_of(
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
        );
        assert!(matches!(f, Framing::Chunked) && !ka);
        assert!(!p.headers.contains_key(header::CONTENT_LENGTH));
        let (_, f, ka) = final_of(
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: x\r\n\r\n",
            false,
        );
        assert!(matches!(f, Framing::Empty) && ka);
    }

    #[test]
    fn bad_heads_are_refused_with_what_was_wrong() {
        let err = |raw: &[u8]| match parse(raw, false) {
            Err(e) => e.to_string(),
            _ => panic!("accepted {:?}", String::from_utf8_lossy(raw)),
        };
        assert!(err(b"NOT HTTP\r\n\r\n").contains("invalid response head"));
        assert!(
            err(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n")
                .contains("conflicting Content-Length")
        );
        assert!(err(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n").contains("not a number"));
        assert!(err(b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n").contains("not a number"));
        assert!(err(b"HTTP/1.1 101 Switching Protocols\r\n\r\n").contains("no upgrade"));
        let many: Vec<u8> = [
            b"HTTP/1.1 200 OK\r\n".to_vec(),
            b"x: y\r\n".repeat(MAX_HEADERS + 1),
            b"\r\n".to_vec(),
        ]
        .concat();
        assert!(err(&many).contains("invalid response head"));
    }

    #[test]
    fn interim_responses_are_consumed_and_partial_heads_wait() {
        let mut buf =
            BytesMut::from(&b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 2"[..]);
        assert!(matches!(
            parse_head(&mut buf, false),
            Ok(Some(Parsed::Interim))
        ));
        assert_eq!(&buf[..], b"HTTP/1.1 2");
        assert!(matches!(parse_head(&mut buf, false), Ok(None)));
    }

    #[test]
    fn header_values_are_slices_of_the_head() {
        let (p, _, _) = final_of(
            b"HTTP/1.1 200 OK\r\nServer: nginx\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: 0\r\n\r\n",
            false,
        );
        assert_eq!(p.headers["server"], "nginx");
        let cookies: Vec<_> = p.headers.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
        let (p, _, _) = final_of(
            b"HTTP/1.1 200 OK\r\nX-Empty:\r\nX-Blank:   \r\nContent-Length: 0\r\n\r\n",
            false,
        );
        assert_eq!(p.headers["x-empty"], "");
        assert_eq!(p.headers["x-blank"], "");
        // What only concerns this connection is read, not passed on.
        let (p, _, ka) = final_of(
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nContent-Length: 0\r\n\r\n",
            false,
        );
        assert!(ka && p.headers.len() == 1, "{:?}", p.headers);
        let (p, _, ka) = final_of(
            b"HTTP/1.1 200 OK\r\nConnection: close, x-trace\r\nx-trace: 1\r\nContent-Length: 0\r\n\r\n",
            false,
        );
        assert!(
            !ka && p.headers.contains_key("connection"),
            "names x-trace: kept for hop-by-hop removal"
        );
    }

    /// A loopback listener to play the backend, a connection registry and
    /// an idle list for the client side, and a `GET /` to send.
    async fn loopback() -> (
        tokio::net::TcpListener,
        std::sync::Arc<super::super::ConnRegistry>,
        std::sync::Arc<IdleConns>,
        http::request::Parts,
    ) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let reg = prometheus::Registry::new();
        let m = crate::ProxyMetrics::new(&reg).expect("metrics");
        let registry =
            std::sync::Arc::new(super::super::ConnRegistry::new(m.pool("s", "p").upstream));
        let head = Request::get("/").body(()).expect("request").into_parts().0;
        (listener, registry, std::sync::Arc::default(), head)
    }

    /// Mangled responses (bytes flipped, cut, inserted) from a real socket:
    /// every one ends in a response or an error, never a panic or a hang.
    #[tokio::test]
    async fn mangled_responses_end_in_an_answer_or_an_error() {
        let valid: [&[u8]; 4] = [
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\nA\r\n0123456789\r\n0\r\nT: 1\r\n\r\n",
            b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.0 200 OK\r\n\r\nto the close",
            b"HTTP/1.1 204 No Content\r\nConnection: close, x\r\nX: 1\r\n\r\n",
        ];
        let (listener, registry, home, head) = loopback().await;
        let addr = listener.local_addr().expect("addr");
        let mut rng = fastrand::Rng::with_seed(7);
        let mut outcomes = [0usize; 2];
        for round in 0..300 {
            let mut bytes = valid[round % valid.len()].to_vec();
            for _ in 0..rng.usize(1..4) {
                let at = rng.usize(..bytes.len());
                match rng.u8(..3) {
                    0 => bytes[at] = rng.u8(..),
                    1 => bytes.truncate(at),
                    _ => bytes.insert(at, *rng.choice(b"\r\n:;0aF ".iter()).expect("byte")),
                }
                if bytes.is_empty() {
                    break;
                }
            }
            let client = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let (mut server, _) = listener.accept().await.expect("accept");
            let conn = Conn::new(registry.register(client));
            let exchange = async {
                let resp = send(conn, &head, &fwd(), &home)
                    .await
                    .map_err(|e| e.error)?;
                http_body_util::BodyExt::collect(resp.into_body()).await?;
                Ok::<_, H1Error>(())
            };
            let backend = async {
                let mut req = [0u8; 256];
                let _ = tokio::io::AsyncReadExt::read(&mut server, &mut req).await;
                let _ = server.write_all(&bytes).await;
                drop(server);
            };
            let (ended, ()) = tokio::time::timeout(Duration::from_secs(5), async {
                tokio::join!(exchange, backend)
            })
            .await
            .unwrap_or_else(|_| panic!("hung on {:?}", String::from_utf8_lossy(&bytes)));
            outcomes[usize::from(ended.is_ok())] += 1;
        }
        // Not vacuous: some mangled responses still parse, most do not.
        assert!(outcomes[0] > 0 && outcomes[1] > 0, "{outcomes:?}");
    }

    /// A response written one byte at a time is read whole (and its head
    /// parsed only when a newline arrives).
    #[tokio::test]
    async fn a_response_dripped_byte_by_byte_is_read_whole() {
        let (listener, registry, home, head) = loopback().await;
        let addr = listener.local_addr().expect("addr");
        let client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (mut server, _) = listener.accept().await.expect("accept");
        let backend = tokio::spawn(async move {
            let mut req = [0u8; 256];
            let _ = tokio::io::AsyncReadExt::read(&mut server, &mut req).await;
            for b in b"HTTP/1.1 200 OK\r\nX-A: 1\r\nContent-Length: 5\r\n\r\nhello" {
                server.write_all(&[*b]).await.expect("write");
                server.flush().await.expect("flush");
            }
            server
        });
        let exchange = async {
            let resp = send(Conn::new(registry.register(client)), &head, &fwd(), &home)
                .await
                .map_err(|e| e.error)?;
            let (parts, body) = resp.into_parts();
            let body = http_body_util::BodyExt::collect(body).await?.to_bytes();
            Ok::<_, H1Error>((parts, body))
        };
        let (parts, body) = tokio::time::timeout(Duration::from_secs(5), exchange)
            .await
            .expect("in time")
            .expect("response");
        assert_eq!(parts.status, 200);
        assert_eq!(parts.headers["x-a"], "1");
        assert_eq!(&body[..], b"hello");
        let _server = backend.await.expect("backend");
        assert_eq!(home.count(), 1, "its connection went back to the idle list");
    }

    #[test]
    fn request_heads_are_origin_form_with_a_length_where_hyper_puts_one() {
        let req = Request::get("http://backend:80/a/b?c=d")
            .header("host", "app.test")
            .body(())
            .expect("request");
        let wire = |req: Request<()>| {
            let mut out = BytesMut::new();
            encode_head(&req.into_parts().0, &fwd(), &mut out);
            String::from_utf8_lossy(&out).into_owned()
        };
        assert_eq!(
            wire(req),
            "GET /a/b?c=d HTTP/1.1\r\nhost: app.test\r\nx-forwarded-for: 127.0.0.1\r\nx-forwarded-proto: http\r\n\r\n"
        );
        let req = Request::post("/form").body(()).expect("request");
        assert_eq!(
            wire(req),
            "POST /form HTTP/1.1\r\nx-forwarded-for: 127.0.0.1\r\nx-forwarded-proto: http\r\ncontent-length: 0\r\n\r\n"
        );
        assert!(idempotent(&Method::PUT) && !idempotent(&Method::POST));
    }
}
