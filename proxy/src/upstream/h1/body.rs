//! The response body, read from its connection as it is polled.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http_body::{Frame, SizeHint};

use super::parse::Framing;
use super::{
    Conn, H1Error, IdleConns, BODY_READ, FINISH_MAX_BYTES, FINISH_MAX_TIME, MAX_CHUNK_LINE,
    MAX_TRAILERS,
};

/// What [`Body::poll_frame`](http_body::Body::poll_frame) returns.
type PollFrame = Poll<Option<Result<Frame<Bytes>, H1Error>>>;

#[derive(Clone, Copy)]
pub(super) enum Chunk {
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
pub(super) enum State {
    Done,
    /// Bytes of the body left to read.
    Length(u64),
    Chunked(Chunk),
    /// Until the backend closes.
    Close,
}

/// What [`State::decode`] made of the bytes buffered so far.
pub(super) enum Decoded {
    /// A frame of the body (data, or the trailers that end it).
    Frame(Frame<Bytes>),
    /// The body ended (the state is now `Done`).
    End,
    /// More bytes are needed.
    More,
    /// The body is malformed; the connection cannot be trusted again.
    Failed(H1Error),
}

impl State {
    /// The next frame of the body from the front of `buf`, consuming what
    /// it used: the framing state machine, free of the connection (it never
    /// reads the socket, so it can be driven from any buffer). The state is
    /// `Done` after the last frame, or with [`Decoded::End`].
    #[inline]
    pub(super) fn decode(&mut self, buf: &mut BytesMut) -> Decoded {
        loop {
            match *self {
                State::Done => return Decoded::End,
                State::Length(left) | State::Chunked(Chunk::Data(left)) => {
                    if buf.is_empty() {
                        return Decoded::More;
                    }
                    let n = left.min(buf.len() as u64);
                    let data = buf.split_to(n as usize).freeze();
                    *self = match *self {
                        State::Length(_) if n == left => State::Done,
                        State::Length(_) => State::Length(left - n),
                        _ if n == left => State::Chunked(Chunk::DataEnd),
                        _ => State::Chunked(Chunk::Data(left - n)),
                    };
                    return Decoded::Frame(Frame::data(data));
                }
                State::Chunked(Chunk::Size) => match chunk_size(buf) {
                    Ok(Some(next)) => *self = State::Chunked(next),
                    Ok(None) => return Decoded::More,
                    Err(e) => return Decoded::Failed(e),
                },
                State::Chunked(Chunk::DataEnd) => match chunk_data_end(buf) {
                    Ok(true) => *self = State::Chunked(Chunk::Size),
                    Ok(false) => return Decoded::More,
                    Err(e) => return Decoded::Failed(e),
                },
                State::Chunked(Chunk::Trailers) => {
                    if buf.starts_with(b"\r\n") {
                        buf.advance(2);
                        *self = State::Done;
                        return Decoded::End;
                    }
                    return match trailers(buf) {
                        Ok(Some(trailers)) => {
                            *self = State::Done;
                            Decoded::Frame(Frame::trailers(trailers))
                        }
                        Ok(None) => Decoded::More,
                        Err(e) => Decoded::Failed(e),
                    };
                }
                State::Close if buf.is_empty() => return Decoded::More,
                State::Close => return Decoded::Frame(Frame::data(buf.split().freeze())),
            }
        }
    }
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
    /// The backend stalled: when dropped, close the connection rather
    /// than read the rest in the background.
    pub fn abandon(&mut self) {
        self.finish_on_drop = false;
    }

    /// The body of a response framed as `framing`, read from `conn`, which
    /// goes back to `home` at its end when `keep_alive`.
    #[inline]
    pub(super) fn new(
        conn: Conn,
        home: &Arc<IdleConns>,
        keep_alive: bool,
        framing: Framing,
    ) -> Body {
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
        body
    }

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
    fn fail(&mut self, e: H1Error) -> PollFrame {
        self.state = State::Done;
        self.conn = None;
        Poll::Ready(Some(Err(e)))
    }

    /// The next frame from the bytes already read; `None` when more bytes
    /// are needed.
    #[inline]
    fn buffered_frame(&mut self) -> Option<PollFrame> {
        let conn = match self.conn.as_mut() {
            Some(c) => c,
            None => return Some(Poll::Ready(None)),
        };
        let out = match self.state.decode(&mut conn.buf) {
            Decoded::More => return None,
            Decoded::Frame(frame) => Some(Ok(frame)),
            Decoded::End => None,
            Decoded::Failed(e) => return Some(self.fail(e)),
        };
        if matches!(self.state, State::Done) {
            self.finish();
        }
        Some(Poll::Ready(out))
    }

    /// The backend closed the connection: the end of a close-delimited
    /// body, an error for the others.
    #[inline]
    fn closed(&mut self) -> PollFrame {
        match self.state {
            State::Close => {
                // The end of a close-delimited body.
                self.state = State::Done;
                self.conn = None;
                Poll::Ready(None)
            }
            State::Length(left) | State::Chunked(Chunk::Data(left)) => {
                self.fail(H1Error::TruncatedBody(left))
            }
            _ => self.fail(H1Error::Chunked(
                "the backend closed the connection before the last chunk",
            )),
        }
    }
}

/// Reads a chunk-size line off the front of `buf`: the state that follows
/// it, or `None` when more bytes are needed.
#[inline]
fn chunk_size(buf: &mut BytesMut) -> Result<Option<Chunk>, H1Error> {
    match httparse::parse_chunk_size(buf) {
        Ok(httparse::Status::Complete((used, size))) => {
            buf.advance(used);
            Ok(Some(if size == 0 {
                Chunk::Trailers
            } else {
                Chunk::Data(size)
            }))
        }
        Ok(httparse::Status::Partial) if buf.len() > MAX_CHUNK_LINE => {
            Err(H1Error::Chunked("chunk-size line too long"))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(_) => Err(H1Error::Chunked("invalid chunk-size line")),
    }
}

/// Reads the CRLF after a chunk's data off the front of `buf`; false when
/// more bytes are needed.
#[inline]
fn chunk_data_end(buf: &mut BytesMut) -> Result<bool, H1Error> {
    if buf.len() < 2 {
        return Ok(false);
    }
    if &buf[..2] != b"\r\n" {
        return Err(H1Error::Chunked("chunk data not followed by CRLF"));
    }
    buf.advance(2);
    Ok(true)
}

/// Reads the trailers (at least one field, then an empty line) off the
/// front of `buf`; `None` when more bytes are needed. Fields that are not
/// valid HTTP are left out.
#[inline]
fn trailers(buf: &mut BytesMut) -> Result<Option<HeaderMap>, H1Error> {
    let mut slots = [httparse::EMPTY_HEADER; 32];
    match httparse::parse_headers(buf, &mut slots) {
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
            buf.advance(used);
            Ok(Some(trailers))
        }
        Ok(httparse::Status::Partial) if buf.len() > MAX_TRAILERS => {
            Err(H1Error::Chunked("trailers too long"))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(_) => Err(H1Error::Chunked("invalid trailers")),
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = H1Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> PollFrame {
        let this = self.get_mut();
        if let Some(data) = this.full.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        loop {
            if let Some(ready) = this.buffered_frame() {
                return ready;
            }
            // Need more bytes.
            let conn = match this.conn.as_mut() {
                Some(c) => c,
                None => return Poll::Ready(None),
            };
            match ready!(conn.poll_fill(cx, BODY_READ)) {
                Ok(0) => return this.closed(),
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
