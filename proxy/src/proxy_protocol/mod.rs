//! The HAProxy PROXY protocol, as an AWS Network Load Balancer sends it:
//! the v1 text header and the v2 binary header, read from the start of a
//! downstream connection, plus a v2 encoder for the header cutover sends to a
//! backend.
//!
//! Specification: <https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt>.
//!
//! [`parse`] is a pure, panic-free parser over a byte slice; [`read_header`]
//! drives it against a stream without ever reading past the end of the
//! header, so the application data that follows stays in the stream.
//!
//! `v1` reads the text header, `v2` reads the binary one and writes it.

#[cfg(test)]
mod tests;
mod v1;
mod v2;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

pub use v2::encode_v2;

/// The 12-byte signature that starts every v2 header.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The longest v1 header the spec allows, CRLF included.
pub const V1_MAX_LEN: usize = 107;

/// The largest v2 address block (the 2-byte length field) accepted; longer
/// headers are refused as [`ProxyProtocolError::TooLong`]. Addresses need at
/// most 216 bytes (AF_UNIX); the rest leaves room for TLVs.
pub const V2_MAX_PAYLOAD: usize = 4096;

/// The v1 prefix, trailing space included.
const V1_PREFIX: &[u8] = b"PROXY ";
/// The shortest possible v1 header: `PROXY UNKNOWN\r\n`.
const V1_MIN_LEN: usize = 15;
/// The fixed part of a v2 header: signature, version/command, family, length.
const V2_FIXED_LEN: usize = 16;

const V2_CMD_LOCAL: u8 = 0x0;
const V2_CMD_PROXY: u8 = 0x1;

/// Address block sizes per family.
const V2_INET_LEN: usize = 12;
const V2_INET6_LEN: usize = 36;
const V2_UNIX_LEN: usize = 216;

/// What a PROXY header said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyHeader {
    /// The original client; None for v1 `UNKNOWN`, v2 `LOCAL`, or v2 address families other than TCP/UDP over IPv4/IPv6 (e.g. AF_UNIX, UNSPEC).
    pub source: Option<SocketAddr>,
    pub destination: Option<SocketAddr>,
}

impl ProxyHeader {
    /// A header that carries no addresses (v1 `UNKNOWN`, v2 `LOCAL`...):
    /// the caller should use the connection's own endpoints.
    pub const fn unknown() -> Self {
        ProxyHeader {
            source: None,
            destination: None,
        }
    }
}

/// Why a PROXY header was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProxyProtocolError {
    /// The first bytes are neither `PROXY ` nor the v2 signature.
    #[error("not a PROXY protocol header (connection starts with \"{first_bytes}\")")]
    NotProxy {
        /// The offending first bytes (at most 16), ASCII-escaped.
        first_bytes: String,
    },
    /// A v1 line that breaks the spec.
    #[error("malformed PROXY v1 header: {0}")]
    MalformedV1(&'static str),
    /// A v2 header whose address block does not fit its family.
    #[error("malformed PROXY v2 header: {0}")]
    MalformedV2(&'static str),
    /// The v2 version nibble is not 2.
    #[error("unsupported PROXY protocol version {0} in a v2 header (expected 2)")]
    UnsupportedVersion(u8),
    /// The v2 command nibble is neither LOCAL (0) nor PROXY (1).
    #[error("unsupported PROXY v2 command {0:#x} (expected LOCAL 0x0 or PROXY 0x1)")]
    UnsupportedCommand(u8),
    /// The v2 family/protocol byte is not one the spec defines.
    #[error("unsupported PROXY v2 address family/protocol {0:#04x}")]
    UnsupportedFamily(u8),
    /// The connection ended before the header did.
    #[error("PROXY header truncated: connection closed after {received} bytes")]
    Truncated {
        /// Header bytes received before end of stream.
        received: usize,
    },
    /// The header is longer than allowed (v1: 107 bytes with CRLF; v2: the
    /// length field over [`V2_MAX_PAYLOAD`]).
    #[error("PROXY header too long: {len} bytes or more (max {max})")]
    TooLong {
        /// How long the header is, or at least would have to be.
        len: usize,
        /// The limit that was exceeded.
        max: usize,
    },
    /// No complete header arrived in time.
    #[error("timed out after {0:?} waiting for the PROXY header")]
    Timeout(Duration),
    /// Reading the stream failed.
    #[error("i/o error reading the PROXY header: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one PROXY v1 or v2 header from the start of `io`, consuming exactly the header's bytes and nothing after it (the application data that follows must stay unread in the stream). Fails with a clear error on anything else, within `timeout`.
pub async fn read_header<R: AsyncRead + Unpin>(
    io: &mut R,
    timeout: Duration,
) -> Result<ProxyHeader, ProxyProtocolError> {
    match tokio::time::timeout(timeout, read_header_inner(io)).await {
        Ok(result) => result,
        Err(_elapsed) => Err(ProxyProtocolError::Timeout(timeout)),
    }
}

async fn read_header_inner<R: AsyncRead + Unpin>(
    io: &mut R,
) -> Result<ProxyHeader, ProxyProtocolError> {
    let mut buf = vec![0u8; V2_FIXED_LEN + V2_MAX_PAYLOAD];
    let mut have = 0usize;
    loop {
        let want = match parse_step(buf.get(..have).unwrap_or_default())? {
            Step::Done(header, _consumed) => return Ok(header),
            Step::Need(want) => want,
        };
        // `want` never reaches past the end of the shortest header that could
        // still complete, so one `read` can never take application data.
        let end = have.saturating_add(want.max(1)).min(buf.len());
        let Some(dst) = buf.get_mut(have..end).filter(|d| !d.is_empty()) else {
            // Unreachable: parse_step caps every header at buf.len().
            return Err(ProxyProtocolError::TooLong {
                len: have,
                max: buf.len(),
            });
        };
        let n = io.read(dst).await?;
        if n == 0 {
            return Err(ProxyProtocolError::Truncated { received: have });
        }
        have += n;
    }
}

/// A pure parser for tests and fuzzing: parse a header at the start of `buf`; Ok(Some((header, consumed_len))) when complete, Ok(None) when more bytes are needed, Err when it can never be valid.
pub fn parse(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyProtocolError> {
    match parse_step(buf)? {
        Step::Done(header, consumed) => Ok(Some((header, consumed))),
        Step::Need(_) => Ok(None),
    }
}

/// Where parsing of a (possibly partial) buffer stands.
enum Step {
    /// A complete header and how many bytes it took.
    Done(ProxyHeader, usize),
    /// Incomplete: at least one and at most this many more bytes may be read
    /// without risking reading past the end of the header.
    Need(usize),
}

fn parse_step(buf: &[u8]) -> Result<Step, ProxyProtocolError> {
    match buf.first() {
        None => Ok(Step::Need(V1_MIN_LEN)),
        Some(b'P') => v1::parse_v1(buf),
        Some(b'\r') => v2::parse_v2(buf),
        Some(_) => Err(not_proxy(buf)),
    }
}

fn not_proxy(buf: &[u8]) -> ProxyProtocolError {
    let first = buf.get(..16).unwrap_or(buf);
    ProxyProtocolError::NotProxy {
        first_bytes: first.escape_ascii().to_string(),
    }
}

/// Whether `buf` is a prefix of `expected` or starts with all of it.
fn prefix_matches(buf: &[u8], expected: &[u8]) -> bool {
    buf.iter().zip(expected).all(|(a, b)| a == b)
}
