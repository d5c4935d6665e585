//! The v1 text header: `PROXY TCP4 <src> <dst> <sport> <dport>\r\n`, or
//! the same with `TCP6`, or `PROXY UNKNOWN ...\r\n`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::{
    not_proxy, prefix_matches, ProxyHeader, ProxyProtocolError, Step, V1_MAX_LEN, V1_MIN_LEN,
    V1_PREFIX,
};

pub(super) fn parse_v1(buf: &[u8]) -> Result<Step, ProxyProtocolError> {
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
