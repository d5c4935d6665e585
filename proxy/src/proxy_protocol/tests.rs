//! Tests of the PROXY protocol parser, reader and encoder.

use super::*;

use std::net::{Ipv6Addr, SocketAddrV6};
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
