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

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

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

/// A PROXY v2 header (PROXY command, TCP over IPv4 or IPv6; if the families of src and dst differ, map the IPv4 one to IPv6) to send to a backend.
pub fn encode_v2(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let mut out = Vec::with_capacity(V2_FIXED_LEN + V2_INET6_LEN);
    out.extend_from_slice(&V2_SIGNATURE);
    out.push(0x20 | V2_CMD_PROXY);
    match (source.ip(), destination.ip()) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            out.push(0x11); // TCP over IPv4
            out.extend_from_slice(&(V2_INET_LEN as u16).to_be_bytes());
            out.extend_from_slice(&src.octets());
            out.extend_from_slice(&dst.octets());
        }
        (src, dst) => {
            out.push(0x21); // TCP over IPv6
            out.extend_from_slice(&(V2_INET6_LEN as u16).to_be_bytes());
            out.extend_from_slice(&to_v6(src).octets());
            out.extend_from_slice(&to_v6(dst).octets());
        }
    }
    out.extend_from_slice(&source.port().to_be_bytes());
    out.extend_from_slice(&destination.port().to_be_bytes());
    out
}

fn to_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
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
        Some(b'P') => parse_v1(buf),
        Some(b'\r') => parse_v2(buf),
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

// ---------------------------------------------------------------- v1

fn parse_v1(buf: &[u8]) -> Result<Step, ProxyProtocolError> {
    if !prefix_matches(buf, V1_PREFIX) {
        return Err(not_proxy(buf));
    }
    let window = buf.get(..V1_MAX_LEN).unwrap_or(buf);
    if let Some(cr) = window.windows(2).position(|w| w == b"\r\n") {
        let line = window.get(..cr).unwrap_or_default();
        return parse_v1_line(line).map(|header| Step::Done(header, cr + 2));
    }
    if buf.len() >= V1_MAX_LEN {
        return Err(ProxyProtocolError::TooLong {
            len: buf.len(),
            max: V1_MAX_LEN,
        });
    }
    check_v1_partial(buf)?;
    // The line ends at the first CRLF: if the last byte is '\r' the header
    // may end after one more byte, otherwise after two at the earliest.
    let to_crlf = if buf.last() == Some(&b'\r') { 1 } else { 2 };
    let want = V1_MIN_LEN
        .saturating_sub(buf.len())
        .max(to_crlf)
        .min(V1_MAX_LEN - buf.len());
    Ok(Step::Need(want))
}

/// Rejects an incomplete v1 line as soon as what is there already rules it
/// out, so garbage fails fast instead of waiting for 107 bytes.
fn check_v1_partial(buf: &[u8]) -> Result<(), ProxyProtocolError> {
    let Some(rest) = buf.get(V1_PREFIX.len()..) else {
        return Ok(()); // still inside "PROXY "
    };
    let proto_len = rest
        .iter()
        .position(|&b| b == b' ' || b == b'\r')
        .unwrap_or(rest.len());
    let (proto, after) = rest.split_at(proto_len);
    let complete = !after.is_empty();
    let known = [&b"TCP4"[..], b"TCP6", b"UNKNOWN"];
    let ok = if complete {
        known.contains(&proto)
    } else {
        known.iter().any(|k| k.starts_with(proto))
    };
    if !ok {
        return Err(ProxyProtocolError::MalformedV1(
            "unknown protocol (expected TCP4, TCP6 or UNKNOWN)",
        ));
    }
    if !complete || proto == b"UNKNOWN" {
        return Ok(());
    }
    // TCP4/TCP6: only address and port characters, single spaces, and a
    // '\r' that can only be the last byte so far (no CRLF was found).
    let last = after.len().saturating_sub(1);
    for (i, &b) in after.iter().enumerate() {
        let fine = b.is_ascii_hexdigit() || b == b'.' || b == b':' || b == b' ' || b == b'\r';
        if !fine {
            return Err(ProxyProtocolError::MalformedV1(
                "unexpected character in addresses or ports",
            ));
        }
        if b == b'\r' && i != last {
            return Err(ProxyProtocolError::MalformedV1(
                "carriage return not followed by line feed",
            ));
        }
    }
    if after.windows(2).any(|w| w == b"  ") {
        return Err(ProxyProtocolError::MalformedV1(
            "fields must be separated by single spaces",
        ));
    }
    if after.iter().filter(|&&b| b == b' ').count() > 4 {
        return Err(ProxyProtocolError::MalformedV1(
            "too many fields (expected 4 after the protocol)",
        ));
    }
    Ok(())
}

/// Parses a complete v1 line, CRLF excluded.
fn parse_v1_line(line: &[u8]) -> Result<ProxyHeader, ProxyProtocolError> {
    let rest = line
        .strip_prefix(V1_PREFIX)
        .ok_or(ProxyProtocolError::MalformedV1("missing \"PROXY \" prefix"))?;
    if let Some(after) = rest.strip_prefix(b"UNKNOWN") {
        // UNKNOWN may be followed by anything (or nothing) up to the CRLF.
        if after.is_empty() || after.first() == Some(&b' ') {
            return Ok(ProxyHeader::unknown());
        }
        return Err(ProxyProtocolError::MalformedV1(
            "unknown protocol (expected TCP4, TCP6 or UNKNOWN)",
        ));
    }
    let mut fields = rest.split(|&b| b == b' ');
    let proto = fields.next().unwrap_or_default();
    let is_v4 = match proto {
        b"TCP4" => true,
        b"TCP6" => false,
        b"" => {
            return Err(ProxyProtocolError::MalformedV1(
                "missing protocol, or more than one space after PROXY",
            ))
        }
        _ => {
            return Err(ProxyProtocolError::MalformedV1(
                "unknown protocol (expected TCP4, TCP6 or UNKNOWN)",
            ))
        }
    };
    let (Some(src), Some(dst), Some(sport), Some(dport), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Err(ProxyProtocolError::MalformedV1(
            "expected exactly 4 single-space-separated fields after the protocol",
        ));
    };
    if [src, dst, sport, dport].iter().any(|f| f.is_empty()) {
        return Err(ProxyProtocolError::MalformedV1(
            "fields must be separated by single spaces",
        ));
    }
    let src_ip = parse_v1_ip(src, is_v4).ok_or(if is_v4 {
        ProxyProtocolError::MalformedV1("TCP4 source address is not a valid IPv4 address")
    } else {
        ProxyProtocolError::MalformedV1("TCP6 source address is not a valid IPv6 address")
    })?;
    let dst_ip = parse_v1_ip(dst, is_v4).ok_or(if is_v4 {
        ProxyProtocolError::MalformedV1("TCP4 destination address is not a valid IPv4 address")
    } else {
        ProxyProtocolError::MalformedV1("TCP6 destination address is not a valid IPv6 address")
    })?;
    let sport = parse_port(sport).ok_or(ProxyProtocolError::MalformedV1(
        "source port is not a decimal number in 0..=65535",
    ))?;
    let dport = parse_port(dport).ok_or(ProxyProtocolError::MalformedV1(
        "destination port is not a decimal number in 0..=65535",
    ))?;
    Ok(ProxyHeader {
        source: Some(SocketAddr::new(src_ip, sport)),
        destination: Some(SocketAddr::new(dst_ip, dport)),
    })
}

fn parse_v1_ip(field: &[u8], is_v4: bool) -> Option<IpAddr> {
    let text = std::str::from_utf8(field).ok()?;
    if is_v4 {
        text.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
    } else {
        text.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
    }
}

/// 1 to 5 ASCII digits (no sign), at most 65535.
fn parse_port(field: &[u8]) -> Option<u16> {
    if field.is_empty() || field.len() > 5 || !field.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let value = field
        .iter()
        .fold(0u32, |acc, &d| acc * 10 + u32::from(d - b'0'));
    u16::try_from(value).ok()
}

// ---------------------------------------------------------------- v2

fn parse_v2(buf: &[u8]) -> Result<Step, ProxyProtocolError> {
    if !prefix_matches(buf, &V2_SIGNATURE) {
        return Err(not_proxy(buf));
    }
    let Some(&ver_cmd) = buf.get(12) else {
        return Ok(Step::Need(V2_FIXED_LEN - buf.len()));
    };
    let version = ver_cmd >> 4;
    if version != 2 {
        return Err(ProxyProtocolError::UnsupportedVersion(version));
    }
    let command = ver_cmd & 0x0f;
    if command != V2_CMD_LOCAL && command != V2_CMD_PROXY {
        return Err(ProxyProtocolError::UnsupportedCommand(command));
    }
    let Some(&family) = buf.get(13) else {
        return Ok(Step::Need(V2_FIXED_LEN - buf.len()));
    };
    // LOCAL ignores the family entirely (the spec says to discard it).
    let addr_len = if command == V2_CMD_PROXY {
        match family {
            0x00 => 0,                   // UNSPEC
            0x11 | 0x12 => V2_INET_LEN,  // TCP/UDP over IPv4
            0x21 | 0x22 => V2_INET6_LEN, // TCP/UDP over IPv6
            0x31 | 0x32 => V2_UNIX_LEN,  // AF_UNIX stream/dgram
            other => return Err(ProxyProtocolError::UnsupportedFamily(other)),
        }
    } else {
        0
    };
    let (Some(&hi), Some(&lo)) = (buf.get(14), buf.get(15)) else {
        return Ok(Step::Need(V2_FIXED_LEN - buf.len()));
    };
    let len = usize::from(u16::from_be_bytes([hi, lo]));
    if len > V2_MAX_PAYLOAD {
        return Err(ProxyProtocolError::TooLong {
            len: V2_FIXED_LEN + len,
            max: V2_FIXED_LEN + V2_MAX_PAYLOAD,
        });
    }
    if len < addr_len {
        return Err(ProxyProtocolError::MalformedV2(
            "address block shorter than its address family requires",
        ));
    }
    let total = V2_FIXED_LEN + len;
    let Some(payload) = buf.get(V2_FIXED_LEN..total) else {
        return Ok(Step::Need(total.saturating_sub(buf.len())));
    };
    let header = if command == V2_CMD_LOCAL {
        ProxyHeader::unknown()
    } else {
        // TLVs after the addresses are consumed but not interpreted.
        v2_addresses(family, payload)
    };
    Ok(Step::Done(header, total))
}

fn v2_addresses(family: u8, payload: &[u8]) -> ProxyHeader {
    match family {
        0x11 | 0x12 => {
            let ip = |at: usize| -> Option<IpAddr> {
                let b: [u8; 4] = payload.get(at..at + 4)?.try_into().ok()?;
                Some(IpAddr::V4(Ipv4Addr::from(b)))
            };
            socket_pair(ip(0), ip(4), payload.get(8..12))
        }
        0x21 | 0x22 => {
            let ip = |at: usize| -> Option<IpAddr> {
                let b: [u8; 16] = payload.get(at..at + 16)?.try_into().ok()?;
                Some(IpAddr::V6(Ipv6Addr::from(b)))
            };
            socket_pair(ip(0), ip(16), payload.get(32..36))
        }
        _ => ProxyHeader::unknown(),
    }
}

fn socket_pair(src: Option<IpAddr>, dst: Option<IpAddr>, ports: Option<&[u8]>) -> ProxyHeader {
    match (src, dst, ports) {
        (Some(src), Some(dst), Some(&[s0, s1, d0, d1])) => ProxyHeader {
            source: Some(SocketAddr::new(src, u16::from_be_bytes([s0, s1]))),
            destination: Some(SocketAddr::new(dst, u16::from_be_bytes([d0, d1]))),
        },
        // Unreachable: the length was checked against the family.
        _ => ProxyHeader::unknown(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::net::SocketAddrV6;
    use std::time::Instant;

    use tokio::io::AsyncWriteExt;

    fn sa(s: &str) -> SocketAddr {
        s.parse().expect("test address")
    }

    fn parse_ok(buf: &[u8]) -> (ProxyHeader, usize) {
        parse(buf).expect("valid header").expect("complete header")
    }

    fn v2(ver_cmd: u8, family: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(ver_cmd);
        out.push(family);
        out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// Every strict prefix of a valid header is "need more", never an error.
    fn assert_prefixes_incomplete(header: &[u8]) {
        for cut in 0..header.len() {
            let prefix = header.get(..cut).unwrap_or_default();
            assert!(
                matches!(parse(prefix), Ok(None)),
                "prefix of {cut} bytes of {:?}",
                header.escape_ascii().to_string()
            );
        }
    }

    #[test]
    fn v1_tcp4() {
        let input = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET / HTTP/1.1\r\n";
        let (h, n) = parse_ok(input);
        assert_eq!(h.source, Some(sa("192.168.0.1:56324")));
        assert_eq!(h.destination, Some(sa("192.168.0.11:443")));
        assert_eq!(&input[n..], b"GET / HTTP/1.1\r\n");
        assert_prefixes_incomplete(&input[..n]);
    }

    #[test]
    fn v1_tcp6() {
        let input = b"PROXY TCP6 2001:db8::1 ::ffff:10.0.0.1 0 65535\r\n";
        let (h, n) = parse_ok(input);
        assert_eq!(n, input.len());
        assert_eq!(h.source, Some(sa("[2001:db8::1]:0")));
        assert_eq!(h.destination, Some(sa("[::ffff:10.0.0.1]:65535")));
        assert_prefixes_incomplete(input);
    }

    #[test]
    fn v1_unknown() {
        for input in [
            &b"PROXY UNKNOWN\r\n"[..],
            b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n",
            b"PROXY UNKNOWN whatever \xff\x00 goes\r\n",
        ] {
            let (h, n) = parse_ok(input);
            assert_eq!(h, ProxyHeader::unknown());
            assert_eq!(n, input.len());
            assert_prefixes_incomplete(input);
        }
        assert!(matches!(
            parse(b"PROXY UNKNOWNX\r\n"),
            Err(ProxyProtocolError::MalformedV1(_))
        ));
    }

    #[test]
    fn v1_longest_allowed() {
        let addr = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        let line = format!("PROXY TCP6 {addr} {addr} 65535 65535\r\n");
        let (h, n) = parse_ok(line.as_bytes());
        assert_eq!(n, line.len());
        assert_eq!(h.destination.map(|d| d.port()), Some(65535));
        // Exactly 107 bytes, CRLF included, is still fine.
        let mut line = b"PROXY UNKNOWN ".to_vec();
        line.resize(V1_MAX_LEN - 2, b'x');
        line.extend_from_slice(b"\r\n");
        assert_eq!(parse_ok(&line), (ProxyHeader::unknown(), V1_MAX_LEN));
    }

    #[test]
    fn v1_rejects_bad_lines() {
        let bad: &[&[u8]] = &[
            b"PROXY TCP4 1.2.3.4 5.6.7.8 80 65536\r\n", // port too big
            b"PROXY TCP4 1.2.3.4 5.6.7.8 +80 443\r\n",  // sign
            b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 443\r\n",   // negative
            b"PROXY TCP4 1.2.3.4 5.6.7.8 80 4a3\r\n",   // hex in port
            b"PROXY TCP4 1.2.3.4 5.6.7.8 800000 443\r\n", // too many digits
            b"PROXY TCP4 1.2.3.4 5.6.7.8 80\r\n",       // missing port
            b"PROXY TCP4 1.2.3.4 5.6.7.8 80 443 1\r\n", // extra field
            b"PROXY TCP4 1.2.3.4  5.6.7.8 80 443\r\n",  // double space
            b"PROXY TCP4 1.2.3.4 5.6.7.8 80 443 \r\n",  // trailing space
            b"PROXY  TCP4 1.2.3.4 5.6.7.8 80 443\r\n",  // double space
            b"PROXY TCP4 ::1 5.6.7.8 80 443\r\n",       // mixed: v6 in TCP4
            b"PROXY TCP4 1.2.3.4 ::1 80 443\r\n",       // mixed: v6 in TCP4
            b"PROXY TCP6 1.2.3.4 ::1 80 443\r\n",       // mixed: v4 in TCP6
            b"PROXY TCP6 ::1 5.6.7.8 80 443\r\n",       // mixed: v4 in TCP6
            b"PROXY TCP4 1.2.3.256 5.6.7.8 80 443\r\n", // bad octet
            b"PROXY TCP5 1.2.3.4 5.6.7.8 80 443\r\n",   // unknown protocol
            b"PROXY UDP4 1.2.3.4 5.6.7.8 80 443\r\n",   // unknown protocol
            b"PROXY tcp4 1.2.3.4 5.6.7.8 80 443\r\n",   // case matters
            b"PROXY TCP4 1.2.3.4 5.6.7.8 80 443\n",     // bare LF
            b"PROXY TCP4 1.2.3.4 5.6.7.8 80 443\rX\r\n", // bare CR
            b"PROXY \r\n",
        ];
        for input in bad {
            let result = parse(input);
            assert!(
                matches!(result, Err(ProxyProtocolError::MalformedV1(_))),
                "{:?} gave {result:?}",
                input.escape_ascii().to_string()
            );
        }
    }

    #[test]
    fn v1_too_long() {
        let mut line = b"PROXY UNKNOWN ".to_vec();
        line.resize(V1_MAX_LEN, b'x');
        assert!(matches!(
            parse(&line),
            Err(ProxyProtocolError::TooLong {
                max: V1_MAX_LEN,
                ..
            })
        ));
        // A CRLF just past the limit does not help.
        line.extend_from_slice(b"\r\n");
        assert!(matches!(
            parse(&line),
            Err(ProxyProtocolError::TooLong { .. })
        ));
        // 106 bytes + CRLF at 106..108 also ends past the limit.
        let mut line = b"PROXY UNKNOWN ".to_vec();
        line.resize(V1_MAX_LEN - 1, b'x');
        line.extend_from_slice(b"\r\n");
        assert!(matches!(
            parse(&line),
            Err(ProxyProtocolError::TooLong { .. })
        ));
    }

    #[test]
    fn v2_proxy_ipv4() {
        let mut payload = vec![10, 0, 0, 1, 192, 168, 1, 2];
        payload.extend_from_slice(&51234u16.to_be_bytes());
        payload.extend_from_slice(&443u16.to_be_bytes());
        let mut input = v2(0x21, 0x11, &payload);
        let header_len = input.len();
        input.extend_from_slice(b"\x16\x03\x01 tls hello");
        let (h, n) = parse_ok(&input);
        assert_eq!(n, header_len);
        assert_eq!(h.source, Some(sa("10.0.0.1:51234")));
        assert_eq!(h.destination, Some(sa("192.168.1.2:443")));
        assert_prefixes_incomplete(&input[..n]);
    }

    #[test]
    fn v2_proxy_ipv6_udp() {
        let src: Ipv6Addr = "2001:db8::7".parse().unwrap();
        let dst: Ipv6Addr = "fd00::1".parse().unwrap();
        let mut payload = src.octets().to_vec();
        payload.extend_from_slice(&dst.octets());
        payload.extend_from_slice(&[0x12, 0x34, 0x00, 0x35]);
        for family in [0x21, 0x22] {
            let input = v2(0x21, family, &payload);
            let (h, n) = parse_ok(&input);
            assert_eq!(n, 16 + 36);
            assert_eq!(h.source, Some(sa("[2001:db8::7]:4660")));
            assert_eq!(h.destination, Some(sa("[fd00::1]:53")));
        }
    }

    #[test]
    fn v2_local_and_address_free_families() {
        // LOCAL: no addresses, family ignored, any payload consumed.
        for (family, payload) in [(0x00, &[][..]), (0x11, &[1, 2, 3][..]), (0xff, &[][..])] {
            let input = v2(0x20, family, payload);
            let (h, n) = parse_ok(&input);
            assert_eq!(h, ProxyHeader::unknown());
            assert_eq!(n, input.len());
        }
        // PROXY over UNSPEC or AF_UNIX: addresses dropped, bytes consumed.
        let input = v2(0x21, 0x00, b"ignored");
        assert_eq!(parse_ok(&input), (ProxyHeader::unknown(), input.len()));
        let input = v2(0x21, 0x31, &[b'/'; V2_UNIX_LEN]);
        assert_eq!(parse_ok(&input), (ProxyHeader::unknown(), input.len()));
    }

    #[test]
    fn v2_with_tlvs() {
        let mut payload = vec![1, 2, 3, 4, 5, 6, 7, 8, 0, 80, 1, 187];
        // PP2_TYPE_AWS (0xEA), subtype VPCE ID, as an NLB sends it.
        let vpce = b"\x01vpce-08d2bf15fac5001c9";
        payload.push(0xEA);
        payload.extend_from_slice(&(vpce.len() as u16).to_be_bytes());
        payload.extend_from_slice(vpce);
        // PP2_TYPE_NOOP padding.
        payload.extend_from_slice(&[0x04, 0x00, 0x03, 0, 0, 0]);
        let mut input = v2(0x21, 0x11, &payload);
        let header_len = input.len();
        input.extend_from_slice(b"after");
        let (h, n) = parse_ok(&input);
        assert_eq!(n, header_len);
        assert_eq!(h.source, Some(sa("1.2.3.4:80")));
        assert_eq!(h.destination, Some(sa("5.6.7.8:443")));
        assert_eq!(&input[n..], b"after");
    }

    #[test]
    fn v2_rejects_bad_headers() {
        let addrs4 = [0u8; 12];
        // Version 1 and 3 in the binary format.
        for ver_cmd in [0x11, 0x31] {
            assert!(matches!(
                parse(&v2(ver_cmd, 0x11, &addrs4)),
                Err(ProxyProtocolError::UnsupportedVersion(_))
            ));
        }
        // Command 2..=15.
        assert!(matches!(
            parse(&v2(0x22, 0x11, &addrs4)),
            Err(ProxyProtocolError::UnsupportedCommand(2))
        ));
        // Undefined family/protocol values.
        for family in [0x10, 0x13, 0x41, 0x01, 0xff] {
            assert!(matches!(
                parse(&v2(0x21, family, &addrs4)),
                Err(ProxyProtocolError::UnsupportedFamily(f)) if f == family
            ));
        }
        // Address block too short for its family.
        assert!(matches!(
            parse(&v2(0x21, 0x11, &[0u8; 11])),
            Err(ProxyProtocolError::MalformedV2(_))
        ));
        assert!(matches!(
            parse(&v2(0x21, 0x21, &[0u8; 12])),
            Err(ProxyProtocolError::MalformedV2(_))
        ));
        assert!(matches!(
            parse(&v2(0x21, 0x31, &[0u8; 100])),
            Err(ProxyProtocolError::MalformedV2(_))
        ));
        // Errors show up from the fixed part alone, without the payload.
        let mut fixed = V2_SIGNATURE.to_vec();
        fixed.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert!(matches!(
            parse(&fixed),
            Err(ProxyProtocolError::TooLong { .. })
        ));
        fixed[14..16].copy_from_slice(&(V2_MAX_PAYLOAD as u16 + 1).to_be_bytes());
        assert!(matches!(
            parse(&fixed),
            Err(ProxyProtocolError::TooLong { .. })
        ));
        fixed[14..16].copy_from_slice(&(V2_MAX_PAYLOAD as u16).to_be_bytes());
        assert!(matches!(parse(&fixed), Ok(None)));
        // A bad signature byte.
        let mut sig = V2_SIGNATURE.to_vec();
        sig[8] = b'q';
        assert!(matches!(
            parse(&sig),
            Err(ProxyProtocolError::NotProxy { .. })
        ));
    }

    #[test]
    fn truncated_is_incomplete_in_parse() {
        assert!(matches!(parse(b""), Ok(None)));
        assert!(matches!(parse(b"PROXY TCP4 1.2.3.4"), Ok(None)));
        assert!(matches!(parse(&V2_SIGNATURE[..5]), Ok(None)));
        let full = encode_v2(sa("1.2.3.4:1"), sa("5.6.7.8:2"));
        assert!(matches!(parse(&full[..full.len() - 1]), Ok(None)));
    }

    #[test]
    fn garbage_rejected_from_first_bytes() {
        for input in [
            &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"G",
            b"\x16\x03\x01\x02\x00",
            b"\0",
            b"PRI * HTTP/2.0",
            b"PROXZ",
            b"\r\n\r\n\0\r\nQUIX",
            b"\r\r",
        ] {
            assert!(
                matches!(parse(input), Err(ProxyProtocolError::NotProxy { .. })),
                "{:?}",
                input.escape_ascii().to_string()
            );
        }
        let err = parse(b"GET / HTTP/1.1\r\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "not a PROXY protocol header (connection starts with \"GET / HTTP/1.1\\r\\n\")"
        );
        // Partial v1 lines that cannot become valid fail before the CRLF.
        for input in [
            &b"PROXY HTTP"[..],
            b"PROXY TCP4 1.2.3.4 hello",
            b"PROXY TCP4  1.2",
            b"PROXY TCP4 1 2 3 4 5",
            b"PROXY TCP4 1.2.3.4\r5",
        ] {
            assert!(
                matches!(parse(input), Err(ProxyProtocolError::MalformedV1(_))),
                "{:?}",
                input.escape_ascii().to_string()
            );
        }
    }

    #[test]
    fn encode_v2_round_trips() {
        let cases = [
            (
                "203.0.113.9:40000",
                "10.0.1.5:8443",
                "203.0.113.9:40000",
                "10.0.1.5:8443",
                28,
            ),
            (
                "[2001:db8::1]:1",
                "[2001:db8::2]:2",
                "[2001:db8::1]:1",
                "[2001:db8::2]:2",
                52,
            ),
            // Mixed families: the IPv4 side is mapped to IPv6.
            (
                "203.0.113.9:5",
                "[2001:db8::2]:6",
                "[::ffff:203.0.113.9]:5",
                "[2001:db8::2]:6",
                52,
            ),
            (
                "[2001:db8::1]:7",
                "10.0.0.1:0",
                "[2001:db8::1]:7",
                "[::ffff:10.0.0.1]:0",
                52,
            ),
        ];
        for (src, dst, want_src, want_dst, want_len) in cases {
            let bytes = encode_v2(sa(src), sa(dst));
            assert_eq!(bytes.len(), want_len);
            assert_eq!(bytes[12], 0x21);
            let (h, n) = parse_ok(&bytes);
            assert_eq!(n, bytes.len());
            assert_eq!(h.source, Some(sa(want_src)));
            assert_eq!(h.destination, Some(sa(want_dst)));
        }
        // Flow info and scope id are not part of the protocol.
        let scoped = SocketAddr::V6(SocketAddrV6::new("fe80::1".parse().unwrap(), 9, 7, 3));
        let (h, _) = parse_ok(&encode_v2(scoped, sa("[::1]:1")));
        assert_eq!(h.source, Some(sa("[fe80::1]:9")));
    }

    #[tokio::test]
    async fn read_header_leaves_following_bytes_unread() {
        let timeout = Duration::from_secs(5);
        let v1 = b"PROXY TCP4 198.51.100.1 10.0.0.2 1234 80\r\n".to_vec();
        let v1_unknown = b"PROXY UNKNOWN\r\n".to_vec();
        let mut v2_tlv = encode_v2(sa("198.51.100.1:1234"), sa("10.0.0.2:80"));
        v2_tlv[15] += 6;
        v2_tlv.extend_from_slice(&[0x04, 0x00, 0x03, 0, 0, 0]);
        let v2_local = v2(0x20, 0x00, &[]);
        for header in [v1, v1_unknown, v2_tlv, v2_local] {
            let mut input = header.clone();
            input.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
            // A slice reader hands over as much as is asked for at once.
            let mut reader: &[u8] = &input;
            let parsed = read_header(&mut reader, timeout).await.unwrap();
            assert_eq!(Some((parsed, header.len())), parse(&input).unwrap());
            assert_eq!(reader, b"GET / HTTP/1.1\r\n\r\n");

            // A real stream, written all at once, with data after the header.
            let (mut client, mut server) = tokio::io::duplex(4096);
            client.write_all(&input).await.unwrap();
            drop(client);
            let parsed2 = read_header(&mut server, timeout).await.unwrap();
            assert_eq!(parsed, parsed2);
            let mut rest = Vec::new();
            server.read_to_end(&mut rest).await.unwrap();
            assert_eq!(rest, b"GET / HTTP/1.1\r\n\r\n");
        }
    }

    #[tokio::test]
    async fn read_header_byte_by_byte() {
        let header = encode_v2(sa("[2001:db8::1]:443"), sa("[2001:db8::2]:8443"));
        let (mut client, mut server) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            for b in header.iter().chain(b"tail") {
                client.write_all(&[*b]).await.unwrap();
                tokio::task::yield_now().await;
            }
        });
        let parsed = read_header(&mut server, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(parsed.source, Some(sa("[2001:db8::1]:443")));
        writer.await.unwrap();
        let mut rest = Vec::new();
        server.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"tail");
    }

    #[tokio::test]
    async fn read_header_rejects_http_quickly() {
        // The client sends a request and then waits for an answer: the
        // stream stays open, so only the first bytes can decide.
        let (mut client, mut server) = tokio::io::duplex(4096);
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let started = Instant::now();
        let err = read_header(&mut server, Duration::from_secs(10))
            .await
            .unwrap_err();
        assert!(matches!(err, ProxyProtocolError::NotProxy { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(1));
        drop(client);
    }

    #[tokio::test]
    async fn read_header_errors() {
        let short = Duration::from_millis(50);
        // Truncated: the connection closes mid-header.
        let mut reader: &[u8] = b"PROXY TCP4 1.2.3.4 5.6";
        assert!(matches!(
            read_header(&mut reader, short).await,
            Err(ProxyProtocolError::Truncated { received: 22 })
        ));
        let full = encode_v2(sa("1.2.3.4:1"), sa("5.6.7.8:2"));
        let mut reader: &[u8] = &full[..20];
        assert!(matches!(
            read_header(&mut reader, short).await,
            Err(ProxyProtocolError::Truncated { received: 20 })
        ));
        let mut reader: &[u8] = b"";
        assert!(matches!(
            read_header(&mut reader, short).await,
            Err(ProxyProtocolError::Truncated { received: 0 })
        ));
        // Timeout: the stream stays open but the header never completes.
        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(b"PROXY TCP4 1.2.3.4").await.unwrap();
        let err = read_header(&mut server, short).await.unwrap_err();
        assert!(matches!(err, ProxyProtocolError::Timeout(d) if d == short));
        assert_eq!(
            err.to_string(),
            "timed out after 50ms waiting for the PROXY header"
        );
        drop(client);
        // Too long and malformed surface from the reader too.
        let mut long = b"PROXY UNKNOWN ".to_vec();
        long.resize(200, b'x');
        let mut reader: &[u8] = &long;
        assert!(matches!(
            read_header(&mut reader, short).await,
            Err(ProxyProtocolError::TooLong { .. })
        ));
        let mut reader: &[u8] = b"PROXY TCP4 1.2.3.4 5.6.7.8 80 99999\r\n";
        assert!(matches!(
            read_header(&mut reader, short).await,
            Err(ProxyProtocolError::MalformedV1(_))
        ));
    }

    /// xorshift64*: deterministic, no crates.
    struct Rng(u64);

    impl Rng {
        fn next_u64(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next_u64() % n.max(1) as u64) as usize
        }
        fn byte(&mut self) -> u8 {
            self.next_u64() as u8
        }
    }

    /// Checks the parser's contract on one input; panics only on a bug.
    fn check_parse(input: &[u8]) {
        if let Ok(Some((_, n))) = parse(input) {
            assert!(n <= input.len() && n >= V1_MIN_LEN);
            assert!(n <= V2_FIXED_LEN + V2_MAX_PAYLOAD);
            // The header alone parses to the same result.
            assert_eq!(parse(&input[..n]).ok().flatten().map(|(_, m)| m), Some(n));
        }
    }

    #[test]
    fn fuzz_parse_never_panics() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let seeds: Vec<Vec<u8>> = vec![
            b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n".to_vec(),
            b"PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n".to_vec(),
            b"PROXY UNKNOWN\r\n".to_vec(),
            encode_v2(sa("1.2.3.4:5"), sa("6.7.8.9:10")),
            encode_v2(sa("[::1]:5"), sa("[::2]:10")),
            v2(0x20, 0x00, &[]),
            v2(0x21, 0x31, &[0u8; V2_UNIX_LEN]),
            v2(
                0x21,
                0x11,
                &[1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2, 0xEA, 0, 2, 1, b'v'],
            ),
        ];
        // Random bytes, biased to start like a header.
        for i in 0..3000 {
            let len = rng.below(160);
            let mut input: Vec<u8> = (0..len).map(|_| rng.byte()).collect();
            match i % 3 {
                0 => {}
                1 => {
                    let p = V1_PREFIX.len().min(input.len());
                    input[..p].copy_from_slice(&V1_PREFIX[..p]);
                }
                _ => {
                    let p = V2_SIGNATURE.len().min(input.len());
                    input[..p].copy_from_slice(&V2_SIGNATURE[..p]);
                }
            }
            check_parse(&input);
        }
        // Mutations of valid headers: flip, replace, insert, delete, truncate.
        const ALPHABET: &[u8] = b"PROXY TCP46UNKNOW0123456789abcdef.: \r\n\0\x21\x11\xff";
        for _ in 0..5000 {
            let mut input = seeds[rng.below(seeds.len())].clone();
            for _ in 0..=rng.below(4) {
                let at = rng.below(input.len() + 1);
                match rng.below(6) {
                    0 if at < input.len() => input[at] ^= 1 << rng.below(8),
                    1 if at < input.len() => input[at] = rng.byte(),
                    2 if at < input.len() => input[at] = ALPHABET[rng.below(ALPHABET.len())],
                    3 => input.insert(at, ALPHABET[rng.below(ALPHABET.len())]),
                    4 if at < input.len() => {
                        input.remove(at);
                    }
                    _ => input.truncate(at),
                }
            }
            check_parse(&input);
            for cut in [0, 1, input.len() / 2, input.len().saturating_sub(1)] {
                check_parse(&input[..cut.min(input.len())]);
            }
        }
    }
}
