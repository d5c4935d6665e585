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
//!
//! The parts: `encode` writes the request head, `parse` reads the response
//! head and its framing, `body` reads the response body as it is polled,
//! and `conn` holds a connection and its idle list; this module runs one
//! exchange ([`send`]).

mod body;
mod conn;
mod encode;
pub(crate) mod fuzzing;
mod parse;
#[cfg(test)]
mod tests;

use std::io;

use http::{Method, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::headers::Forwarded;
use encode::encode_head;
use parse::{parse_head, Parsed};

pub use body::Body;
pub use conn::{Conn, IdleConns};

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
    /// No byte of a response arrived (the write failed, or the connection
    /// closed or failed before the first byte): an idempotent request may
    /// go to another backend.
    pub unanswered: bool,
}

/// Whether this client can send a request with this head and body: no
/// body and not `CONNECT`. The caller has removed hop-by-hop headers
/// (`Transfer-Encoding` among them) and sends upgrades elsewhere.
pub fn can_send<B: http_body::Body>(head: &http::request::Parts, body: &B) -> bool {
    body.is_end_stream() && head.method != Method::CONNECT
}

pub(crate) fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
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
    let reused = conn.io.reused;
    // The (empty) read buffer holds the request head while it is written;
    // sized once for that and for the response head.
    conn.buf.clear();
    conn.buf.reserve(HEAD_READ);
    encode_head(req, fwd, &mut conn.buf);
    let written = conn.io.stream_mut().write_all(&conn.buf).await;
    conn.buf.clear();
    if let Err(e) = written {
        return Err(SendError {
            error: H1Error::Write(conn.io.cut_or(e)),
            retry: reused,
            unanswered: true,
        });
    }
    // The response head is read here rather than in a nested async fn: a
    // nested future moves its state once more per request (callgrind).
    let mut answered = false;
    let fail = |error: H1Error, answered: bool| SendError {
        retry: reused && !answered && head.idempotent,
        unanswered: !answered,
        error,
    };
    // A head can only have ended in bytes with a newline: a backend that
    // drips its head byte by byte does not make cutover re-parse it each time.
    let mut may_be_whole = false;
    let (parts, framing, keep_alive) = loop {
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
            // Cut at the drain deadline: said so, not as the backend's close.
            Ok(0) | Err(_) if conn.io.was_cut() => {
                return Err(fail(H1Error::Read(super::DrainCut::io()), answered))
            }
            Ok(0) if !answered => return Err(fail(H1Error::Closed, false)),
            Ok(0) => return Err(fail(H1Error::TruncatedHead, true)),
            Ok(_) => answered = true,
            Err(e) => return Err(fail(H1Error::Read(e), answered)),
        }
        may_be_whole = conn.buf[before..].contains(&b'\n');
    };
    let body = Body::new(conn, home, keep_alive, framing);
    Ok(Response::from_parts(parts, body))
}
