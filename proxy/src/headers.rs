//! Header rewriting between downstream and upstream: hop-by-hop headers
//! removed, `X-Forwarded-*` set, the ticket cookie read and written.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::ticket::Ticket;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// The hop-by-hop headers (RFC 9110 7.6.1), each with a bit for the set
/// of those present; `Connection` is bit 0 and `TE` bit 7.
fn hop_by_hop_bit(name: &HeaderName) -> u8 {
    if name == header::CONNECTION {
        1
    } else if name == header::TRANSFER_ENCODING {
        1 << 1
    } else if name == header::UPGRADE {
        1 << 2
    } else if name == header::TRAILER {
        1 << 3
    } else if name == header::PROXY_AUTHORIZATION {
        1 << 4
    } else if name == KEEP_ALIVE {
        1 << 5
    } else if name == PROXY_CONNECTION {
        1 << 6
    } else if name == header::TE {
        1 << 7
    } else {
        0
    }
}

/// `Connection` tokens that name no header to remove.
fn names_no_header(token: &str) -> bool {
    token.eq_ignore_ascii_case("keep-alive")
        || token.eq_ignore_ascii_case("close")
        || token.is_empty()
}

/// Removes hop-by-hop headers (RFC 9110 7.6.1), including those named in
/// `Connection`. `TE: trailers` is kept: gRPC needs it end to end.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names, no hashing; then only what is there is
    // removed (each removal hashes).
    let present = headers.keys().fold(0u8, |acc, k| acc | hop_by_hop_bit(k));
    if present == 0 {
        return;
    }
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
                headers.remove(&n);
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
}

/// Sets `X-Forwarded-For` (appending the client to any list already there),
/// `X-Forwarded-Proto` and `X-Forwarded-Host`, and makes sure `Host` is
/// present: `authority` when the request has none (HTTP/2 clients send
/// `:authority` instead, HTTP/1.0 clients may send nothing).
///
/// `client` is the client address as a header value, built once per
/// connection with [`client_value`]; only an incoming list is formatted.
pub fn set_forwarded(
    headers: &mut HeaderMap,
    client: &HeaderValue,
    proto: &'static str,
    authority: &str,
) {
    let appended = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prev) if !prev.trim().is_empty() => {
            let mut list = String::with_capacity(prev.len() + 2 + client.len());
            list.push_str(prev);
            list.push_str(", ");
            list.push_str(client.to_str().unwrap_or(""));
            HeaderValue::from_str(&list).ok()
        }
        _ => None,
    };
    headers.insert(
        X_FORWARDED_FOR.clone(),
        appended.unwrap_or_else(|| client.clone()),
    );
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    let host = match headers.get(header::HOST) {
        Some(h) => Some(h.clone()),
        None => HeaderValue::from_str(authority).ok().inspect(|v| {
            headers.insert(header::HOST, v.clone());
        }),
    };
    if let Some(host) = host {
        headers.insert(X_FORWARDED_HOST.clone(), host);
    }
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

    #[test]
    fn forwarded_headers_append_and_keep_host() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("www.example.com"));
        h.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.9"));
        set_forwarded(
            &mut h,
            &client_value("127.0.0.1".parse().unwrap()),
            "http",
            "ignored",
        );
        assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "www.example.com");
        assert_eq!(h[header::HOST], "www.example.com");

        let mut h2 = HeaderMap::new();
        set_forwarded(
            &mut h2,
            &client_value("::ffff:127.0.0.3".parse().unwrap()),
            "http",
            "api.example.com:8443",
        );
        assert_eq!(h2["x-forwarded-for"], "127.0.0.3");
        assert_eq!(h2[header::HOST], "api.example.com:8443");
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
