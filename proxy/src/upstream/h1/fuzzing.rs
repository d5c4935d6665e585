//! The HTTP/1.1 client's parsers driven from a byte slice, for the fuzz
//! targets (`fuzz/`): the same response head parser and body state machine
//! [`super::send`] and [`super::Body`] use, fed in pieces as a socket would
//! hand them over, with no socket.

use bytes::BytesMut;

use super::body::{Chunk, Decoded, State};
use super::parse::{parse_head, Framing, Parsed};
use super::MAX_HEAD;

/// How the body of the final response was framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    Empty,
    Length(u64),
    Chunked,
    Close,
}

/// How reading the response ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The head was refused, or the input ended inside it.
    NoHead,
    /// The body ended where its framing says.
    Complete,
    /// The input ended before the body did.
    Truncated,
    /// The body is malformed.
    Failed,
}

/// What reading one response from a backend's bytes found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct H1Outcome {
    /// The final response's status code.
    pub status: Option<u16>,
    /// Bytes taken by the response heads, interim ones included.
    pub head_len: usize,
    pub framing: Option<BodyFraming>,
    pub keep_alive: bool,
    /// Bytes of body data handed on.
    pub body_len: u64,
    /// Trailer fields handed on.
    pub trailers: usize,
    /// Bytes of the input after the end of the response (buffered or not
    /// yet read).
    pub left: usize,
    pub end: End,
}

/// Reads one response to a request (a `HEAD` one when `head_request`) from
/// `input`, which arrives in pieces of the sizes `pieces` gives in turn
/// (each byte plus one; all at once when `pieces` is empty), then the
/// connection closes.
pub fn read_response(input: &[u8], head_request: bool, pieces: &[u8]) -> H1Outcome {
    let mut feed = Feed {
        input,
        at: 0,
        pieces,
        turn: 0,
    };
    let mut buf = BytesMut::new();
    let mut out = H1Outcome {
        status: None,
        head_len: 0,
        framing: None,
        keep_alive: false,
        body_len: 0,
        trailers: 0,
        left: 0,
        end: End::NoHead,
    };
    let (parts, framing, keep_alive) = loop {
        let before = buf.len();
        match parse_head(&mut buf, head_request) {
            Ok(Some(Parsed::Interim)) => out.head_len += before - buf.len(),
            Ok(Some(Parsed::Final(p))) => {
                out.head_len += before - buf.len();
                break p;
            }
            Ok(None) if buf.len() < MAX_HEAD && feed.more(&mut buf) => {}
            Ok(None) | Err(_) => return out,
        }
    };
    out.status = Some(parts.status.as_u16());
    out.keep_alive = keep_alive;
    let (mut state, framing) = match framing {
        Framing::Empty => (State::Done, BodyFraming::Empty),
        Framing::Length(n) => (State::Length(n), BodyFraming::Length(n)),
        Framing::Chunked => (State::Chunked(Chunk::Size), BodyFraming::Chunked),
        Framing::Close => (State::Close, BodyFraming::Close),
    };
    out.framing = Some(framing);
    out.end = loop {
        match state.decode(&mut buf) {
            Decoded::Frame(frame) => match frame.into_data() {
                Ok(data) => out.body_len += data.len() as u64,
                Err(frame) => out.trailers += frame.trailers_ref().map_or(0, |t| t.len()),
            },
            Decoded::End => break End::Complete,
            Decoded::Failed(_) => break End::Failed,
            Decoded::More if feed.more(&mut buf) => {}
            Decoded::More if matches!(state, State::Close) => break End::Complete,
            Decoded::More => break End::Truncated,
        }
        if matches!(state, State::Done) {
            break End::Complete;
        }
    };
    out.left = buf.len() + (input.len() - feed.at);
    out
}

/// The input, handed over in pieces.
struct Feed<'a> {
    input: &'a [u8],
    at: usize,
    pieces: &'a [u8],
    turn: usize,
}

impl Feed<'_> {
    /// Appends the next piece to `buf`; false at the end of the input.
    fn more(&mut self, buf: &mut BytesMut) -> bool {
        let rest = self.input.get(self.at..).unwrap_or_default();
        if rest.is_empty() {
            return false;
        }
        let n = match self.pieces.get(self.turn % self.pieces.len().max(1)) {
            Some(&p) => usize::from(p) + 1,
            None => rest.len(),
        };
        self.turn += 1;
        let piece = rest.get(..n).unwrap_or(rest);
        buf.extend_from_slice(piece);
        self.at += piece.len();
        true
    }
}
