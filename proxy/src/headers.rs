//! Header rewriting between downstream and upstream: hop-by-hop headers
//! removed, `X-Forwarded-*` set, the ticket cookie read and written.

use std::net::IpAddr;

use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::ticket::Ticket;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// The bit of a header [`scan`] looks for, 0 for others: the hop-by-hop
/// headers (RFC 9110 7.6.1) in bits 0-7 (`Connection` bit 0, `TE` bit 7),
/// then those [`prepare_request`] rewrites. One `match` on the (lowercase)
/// name: a length switch and a compare, where comparing `HeaderName`s one
/// by one cost ~130 instructions per header.
fn header_bit(name: &HeaderName) -> u16 {
    match name.as_str() {
        "connection" => 1,
        "transfer-encoding" => 1 << 1,
        "upgrade" => 1 << 2,
        "trailer" => 1 << 3,
        "proxy-authorization" => 1 << 4,
        "keep-alive" => 1 << 5,
        "proxy-connection" => 1 << 6,
        "te" => 1 << 7,
        "x-forwarded-for" => XFF_BIT,
        "x-forwarded-proto" => XFP_BIT,
        "x-forwarded-host" => XFH_BIT,
        "host" => HOST_BIT,
        "x-cutover-token" => TOKEN_BIT,
        "http2-settings" => H2_SETTINGS_BIT,
        "content-type" => CONTENT_TYPE_BIT,
        _ => 0,
    }
}

/// `Connection` tokens that name no header to remove.
fn names_no_header(token: &str) -> bool {
    token.eq_ignore_ascii_case("keep-alive")
        || token.eq_ignore_ascii_case("close")
        || token.is_empty()
}

/// Bits of [`scan`] past the hop-by-hop ones: the headers
/// [`prepare_request`] rewrites.
const XFF_BIT: u16 = 1 << 8;
const XFP_BIT: u16 = 1 << 9;
const XFH_BIT: u16 = 1 << 10;
const HOST_BIT: u16 = 1 << 11;
/// `x-cutover-token`: the override header's secret, never forwarded.
const TOKEN_BIT: u16 = 1 << 12;
static X_CUTOVER_TOKEN: HeaderName = HeaderName::from_static("x-cutover-token");
/// `HTTP2-Settings`: belongs to an `Upgrade: h2c` (RFC 7540 3.2.1), which
/// cutover never forwards: a connection-specific header in any case.
const H2_SETTINGS_BIT: u16 = 1 << 13;
static HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");
/// `Content-Type`: not rewritten, only looked at (for gRPC) when present.
const CONTENT_TYPE_BIT: u16 = 1 << 14;

/// Whether `a` and `b` are equal, in a time that depends only on their
/// lengths (not on where they differ): for secrets a client sends. A
/// hand-written fold of XORs, kept opaque to the optimiser with
/// `black_box`, rather than the `subtle` crate for one function.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a
        .iter()
        .zip(b)
        .fold(0u8, |acc, (x, y)| std::hint::black_box(acc | (x ^ y)));
    diff == 0
}

/// Which of the headers cutover rewrites are present: one pass over the
/// names, no hashing (each lookup or removal in a `HeaderMap` hashes the
/// name, and most requests have none of them but `Host`).
fn scan(headers: &HeaderMap) -> u16 {
    headers.keys().fold(0u16, |acc, k| acc | header_bit(k))
}

/// Which of the headers cutover rewrites a request has, found in one pass
/// (see [`prepare_request`]).
#[derive(Debug, Clone, Copy)]
pub struct Scan(u16);

impl Scan {
    pub fn of(headers: &HeaderMap) -> Scan {
        Scan(scan(headers))
    }

    /// Has a `Connection` header (which an upgrade request must have).
    pub fn has_connection(self) -> bool {
        self.0 & 1 != 0
    }

    /// Has a `Host` header.
    pub fn has_host(self) -> bool {
        self.0 & HOST_BIT != 0
    }

    /// Has a `Content-Type` header.
    pub fn has_content_type(self) -> bool {
        self.0 & CONTENT_TYPE_BIT != 0
    }
}

/// Removes hop-by-hop headers (RFC 9110 7.6.1), including those named in
/// `Connection`. `TE: trailers` is kept: gRPC needs it end to end.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    remove_present(headers, scan(headers));
}

/// [`remove_hop_by_hop`] given the [`scan`] of `headers`; returns the scan
/// of what is left.
fn remove_present(headers: &mut HeaderMap, scanned: u16) -> u16 {
    let present = scanned as u8;
    if present == 0 {
        return scanned;
    }
    // `Connection` may name any header, even `Host`: scan again after.
    let mut rescan = false;
    if present & 1 != 0 {
        let tokens = || {
            headers
                .get_all(header::CONNECTION)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(str::trim)
                .filter(|t| !names_no_header(t))
        };
        let named: Vec<HeaderName> = if tokens().next().is_none() {
            Vec::new()
        } else {
            tokens()
                .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
                .collect()
        };
        for n in named {
            if n != header::TE {
                rescan |= headers.remove(&n).is_some();
            }
        }
        headers.remove(header::CONNECTION);
    }
    let others: [(u8, &HeaderName); 6] = [
        (1 << 1, &header::TRANSFER_ENCODING),
        (1 << 2, &header::UPGRADE),
        (1 << 3, &header::TRAILER),
        (1 << 4, &header::PROXY_AUTHORIZATION),
        (1 << 5, &KEEP_ALIVE),
        (1 << 6, &PROXY_CONNECTION),
    ];
    for (bit, name) in others {
        if present & bit != 0 {
            headers.remove(name);
        }
    }
    if present & (1 << 7) != 0 {
        if let Some(te) = headers.get(header::TE) {
            if !te.as_bytes().eq_ignore_ascii_case(b"trailers") {
                headers.remove(header::TE);
            }
        }
    }
    // The hop-by-hop bits are of no more use.
    if rescan {
        scan(headers) & !0xff
    } else {
        scanned & !0xff
    }
}

/// The headers cutover adds to a request it forwards: `X-Forwarded-For`
/// (the client, appended to any list already there when the listener
/// trusts it), `X-Forwarded-Proto`,
/// `X-Forwarded-Host`, and `Host` when the request has none (HTTP/2 clients
/// send `:authority` instead, HTTP/1.0 clients may send nothing).
///
/// They are kept apart from the request's `HeaderMap` until it is sent:
/// cutover's own HTTP/1.1 client writes them straight after the request's
/// headers ([`Forwarded::encode`]), which saves inserting (and hashing)
/// four names per request; hyper's client gets them inserted
/// ([`Forwarded::apply`]).
#[derive(Debug, Clone)]
pub struct Forwarded {
    pub for_: HeaderValue,
    pub proto: HeaderValue,
    /// `Host` to add: the request had none.
    pub host: Option<HeaderValue>,
    /// `X-Forwarded-Host`: the request's `Host`, or the one added.
    pub forwarded_host: Option<HeaderValue>,
}

/// Prepares a request's headers to go upstream: removes hop-by-hop headers
/// (see [`remove_hop_by_hop`]), any `X-Forwarded-*` the client sent and
/// `x-cutover-token` (a secret meant for cutover alone) and
/// `HTTP2-Settings` (an h2c upgrade's, never forwarded), and
/// returns what to add in their place (see [`Forwarded`]). `scanned` is
/// [`Scan::of`] these headers, unchanged since.
///
/// `client` is the client address as a header value, built once per
/// connection with [`client_value`]; only an incoming list is formatted,
/// and only when the listener trusts it (`trust_forwarded`: behind a load
/// balancer that sets it); else the client's list is dropped, so nobody
/// can make a backend believe they come from another address.
/// `authority` is the `Host` to add when the request has none.
pub fn prepare_request(
    headers: &mut HeaderMap,
    scanned: Scan,
    client: &HeaderValue,
    trust_forwarded: bool,
    proto: &'static str,
    authority: &str,
) -> Forwarded {
    let present = remove_present(headers, scanned.0);
    let mut for_ = None;
    if present & XFF_BIT != 0 {
        // `remove` hands back the first value, as `get` would.
        let prev = headers.remove(&X_FORWARDED_FOR).filter(|_| trust_forwarded);
        if let Some(prev) = prev.as_ref().and_then(|v| v.to_str().ok()) {
            if !prev.trim().is_empty() {
                let mut list = String::with_capacity(prev.len() + 2 + client.len());
                list.push_str(prev);
                list.push_str(", ");
                list.push_str(client.to_str().unwrap_or(""));
                for_ = HeaderValue::from_str(&list).ok();
            }
        }
    }
    if present & XFP_BIT != 0 {
        headers.remove(&X_FORWARDED_PROTO);
    }
    if present & XFH_BIT != 0 {
        headers.remove(&X_FORWARDED_HOST);
    }
    if present & TOKEN_BIT != 0 {
        headers.remove(&X_CUTOVER_TOKEN);
    }
    if present & H2_SETTINGS_BIT != 0 {
        headers.remove(&HTTP2_SETTINGS);
    }
    let (host, forwarded_host) = match present & HOST_BIT != 0 {
        true => (None, headers.get(header::HOST).cloned()),
        false => {
            let h = HeaderValue::from_str(authority).ok();
            (h.clone(), h)
        }
    };
    Forwarded {
        for_: for_.unwrap_or_else(|| client.clone()),
        proto: HeaderValue::from_static(proto),
        host,
        forwarded_host,
    }
}

impl Forwarded {
    fn fields(&self) -> [(&'static str, Option<&HeaderValue>); 4] {
        [
            ("host", self.host.as_ref()),
            ("x-forwarded-for", Some(&self.for_)),
            ("x-forwarded-proto", Some(&self.proto)),
            ("x-forwarded-host", self.forwarded_host.as_ref()),
        ]
    }

    /// Inserts the headers into `headers` (for hyper's client); `self`
    /// stays, in case the request must go to another backend.
    pub fn apply(&self, headers: &mut HeaderMap) {
        if let Some(h) = &self.host {
            headers.insert(header::HOST, h.clone());
        }
        headers.insert(X_FORWARDED_FOR.clone(), self.for_.clone());
        headers.insert(X_FORWARDED_PROTO.clone(), self.proto.clone());
        if let Some(h) = &self.forwarded_host {
            headers.insert(X_FORWARDED_HOST.clone(), h.clone());
        }
    }

    /// Takes out of `headers` what [`Forwarded::apply`] put in: the
    /// request as it was before, for another backend. (`prepare_request`
    /// removed these headers from the request, and `Host` was added only
    /// when it had none.)
    pub fn unapply(&self, headers: &mut HeaderMap) {
        if self.host.is_some() {
            headers.remove(header::HOST);
        }
        headers.remove(&X_FORWARDED_FOR);
        headers.remove(&X_FORWARDED_PROTO);
        headers.remove(&X_FORWARDED_HOST);
    }

    /// The bytes [`Forwarded::encode`] writes.
    pub fn encoded_len(&self) -> usize {
        self.fields()
            .iter()
            .filter_map(|(k, v)| v.map(|v| field_len(k, v.as_bytes())))
            .sum()
    }

    /// Writes the headers as HTTP/1.1 header lines.
    pub fn encode(&self, out: &mut BytesMut) {
        for (k, v) in self.fields() {
            if let Some(v) = v {
                write_field(out, k, v.as_bytes());
            }
        }
    }
}

/// The length of a header line `name: value\r\n` ([`write_field`]).
pub fn field_len(name: &str, value: &[u8]) -> usize {
    name.len() + value.len() + 4
}

/// Writes one header line, `name: value\r\n`.
pub fn write_field(out: &mut BytesMut, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// A client address as an `X-Forwarded-For` value (IPv4-mapped IPv6 shown as IPv4).
pub fn client_value(client: IpAddr) -> HeaderValue {
    HeaderValue::from_str(&client.to_canonical().to_string())
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// The ticket from a request's `Cookie` headers, if one is there and valid.
pub fn cookie_ticket(headers: &HeaderMap, name: &str) -> Option<Ticket> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .and_then(|(_, v)| Ticket::from_cookie_value(v.trim()))
}

pub fn set_cookie_value(name: &str, ticket: Ticket, attributes: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!("{name}={}{attributes}", ticket.to_cookie_value())).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go_including_connection_named_ones() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert("x-keep", HeaderValue::from_static("yes"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2, "{h:?}");
        assert!(h.contains_key("x-keep") && h.contains_key(header::TE));
    }

    /// `prepare_request` then `apply`, as for hyper's client.
    fn forwarded(mut h: HeaderMap, client: &str, authority: &str) -> HeaderMap {
        let client = client_value(client.parse().unwrap());
        let scanned = Scan::of(&h);
        prepare_request(&mut h, scanned, &client, true, "http", authority).apply(&mut h);
        h
    }

    /// `prepare_request` then `encode` after the request's own headers, as
    /// cutover's HTTP/1.1 client does, parsed back.
    fn encoded(mut h: HeaderMap, client: &str, authority: &str) -> Vec<(String, String)> {
        let client = client_value(client.parse().unwrap());
        let scanned = Scan::of(&h);
        let f = prepare_request(&mut h, scanned, &client, true, "http", authority);
        let mut out = BytesMut::new();
        for (k, v) in &h {
            write_field(&mut out, k.as_str(), v.as_bytes());
        }
        let before = out.len();
        f.encode(&mut out);
        assert_eq!(out.len() - before, f.encoded_len());
        String::from_utf8(out.to_vec())
            .unwrap()
            .lines()
            .map(|l| {
                let (k, v) = l.split_once(": ").unwrap();
                (k.to_string(), v.to_string())
            })
            .collect()
    }

    #[test]
    fn forwarded_headers_append_and_keep_host() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("www.example.com"));
        h.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.9"));
        let h = forwarded(h, "127.0.0.1", "ignored");
        assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "www.example.com");
        assert_eq!(h[header::HOST], "www.example.com");

        let h2 = forwarded(HeaderMap::new(), "::ffff:127.0.0.3", "api.example.com:8443");
        assert_eq!(h2["x-forwarded-for"], "127.0.0.3");
        assert_eq!(h2[header::HOST], "api.example.com:8443");
        assert_eq!(h2["x-forwarded-host"], "api.example.com:8443");
    }

    #[test]
    fn a_client_cannot_set_forwarded_headers_in_either_form() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("www.example.com"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        h.insert("x-forwarded-host", HeaderValue::from_static("evil.example"));
        h.insert("x-forwarded-for", HeaderValue::from_static(" "));
        h.insert("x-keep", HeaderValue::from_static("1"));
        let want = [
            ("host", "www.example.com"),
            ("x-keep", "1"),
            ("x-forwarded-for", "127.0.0.1"),
            ("x-forwarded-proto", "http"),
            ("x-forwarded-host", "www.example.com"),
        ];
        let applied = forwarded(h.clone(), "127.0.0.1", "ignored");
        assert_eq!(applied.len(), want.len(), "{applied:?}");
        for (k, v) in want {
            assert_eq!(applied.get_all(k).iter().collect::<Vec<_>>(), [v], "{k}");
        }
        let mut wire = encoded(h, "127.0.0.1", "ignored");
        wire.sort();
        let mut want: Vec<(String, String)> = want
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        want.sort();
        assert_eq!(wire, want);
    }

    #[test]
    fn an_untrusted_forwarded_for_list_is_replaced_not_appended_to() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("www.example.com"));
        h.append("x-forwarded-for", HeaderValue::from_static("203.0.113.9"));
        h.append("x-forwarded-for", HeaderValue::from_static("198.51.100.1"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        let client = client_value("127.0.0.1".parse().unwrap());
        let scanned = Scan::of(&h);
        prepare_request(&mut h, scanned, &client, false, "http", "x").apply(&mut h);
        let xff: Vec<_> = h.get_all("x-forwarded-for").iter().collect();
        assert_eq!(xff, ["127.0.0.1"]);
        assert_eq!(h["x-forwarded-proto"], "http");
    }

    #[test]
    fn the_override_token_never_goes_upstream() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("www.example.com"));
        h.insert("x-cutover-token", HeaderValue::from_static("s3cret"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        let wire = encoded(h, "127.0.0.1", "ignored");
        assert!(
            wire.iter()
                .all(|(k, v)| k != "x-cutover-token" && v != "s3cret"),
            "{wire:?}"
        );
        assert!(wire.contains(&("x-keep".into(), "1".into())), "{wire:?}");
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"s3cret", b"s3cret"));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"s3cret", b"s3creT"));
        assert!(!constant_time_eq(b"s3cret", b"s3cre"));
        assert!(!constant_time_eq(b"Xs3cre", b"s3cret"));
    }

    #[test]
    fn a_host_named_in_connection_is_removed_and_replaced() {
        // `Connection: host` strips Host as a hop-by-hop header; the
        // backend then gets the authority, and X-Forwarded-Host matches.
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("www.example.com"));
        h.insert(header::CONNECTION, HeaderValue::from_static("host"));
        let wire = encoded(h, "127.0.0.1", "backend:80");
        assert!(
            wire.contains(&("host".into(), "backend:80".into())),
            "{wire:?}"
        );
        assert!(
            wire.contains(&("x-forwarded-host".into(), "backend:80".into())),
            "{wire:?}"
        );
        assert_eq!(
            wire.iter().filter(|(k, _)| k == "host").count(),
            1,
            "{wire:?}"
        );
    }

    #[test]
    fn cookie_ticket_is_found_among_others_and_garbage_is_ignored() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; cutover_ticket=00000000000000ff; b=2"),
        );
        assert_eq!(cookie_ticket(&h, "cutover_ticket"), Some(Ticket(255)));
        let mut bad = HeaderMap::new();
        bad.append(
            header::COOKIE,
            HeaderValue::from_static("cutover_ticket=../../etc"),
        );
        assert_eq!(cookie_ticket(&bad, "cutover_ticket"), None);
    }
}
