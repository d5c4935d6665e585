//! The v2 binary header: the signature, version and command, address
//! family, a length, then the addresses and any TLVs; read from a client,
//! and written to a backend.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::{
    not_proxy, prefix_matches, ProxyHeader, ProxyProtocolError, Step, V2_CMD_LOCAL, V2_CMD_PROXY,
    V2_FIXED_LEN, V2_INET6_LEN, V2_INET_LEN, V2_MAX_PAYLOAD, V2_SIGNATURE, V2_UNIX_LEN,
};

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

pub(super) fn parse_v2(buf: &[u8]) -> Result<Step, ProxyProtocolError> {
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
