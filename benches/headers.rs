// Measures header rewriting per request: hop-by-hop removal and X-Forwarded-* on a typical request head (inserted, as for hyper's client, or written out, as cutover's HTTP/1.1 client does), and reading the ticket cookie.

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use cutover_proxy::headers::{client_value, cookie_ticket, prepare_request, Scan};
use http::header::{HeaderMap, HeaderValue};

/// A request head as a load generator sends it (wrk: Host only).
fn minimal() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("host", HeaderValue::from_static("127.0.0.1:8080"));
    h
}

/// A request head as a browser behind a load balancer sends it.
fn browser() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("host", "www.example.com"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        ),
        (
            "accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        ),
        ("accept-language", "en-US,en;q=0.5"),
        ("accept-encoding", "gzip, deflate, br"),
        ("connection", "keep-alive"),
        ("keep-alive", "timeout=5"),
        (
            "cookie",
            "session=abc123; cutover_ticket=00000000deadbeef; theme=dark",
        ),
        ("x-forwarded-for", "203.0.113.9"),
        ("upgrade-insecure-requests", "1"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    h
}

fn headers(c: &mut Criterion) {
    let client = client_value("127.0.0.1".parse().expect("ip"));
    let mut group = c.benchmark_group("headers");
    for (name, make) in [
        ("minimal", minimal as fn() -> HeaderMap),
        ("browser", browser),
    ] {
        let head = make();
        group.bench_function(format!("rewrite_{name}"), |b| {
            b.iter_batched_ref(
                || head.clone(),
                |h| {
                    let scanned = Scan::of(h);
                    prepare_request(h, scanned, &client, true, "http", "www.example.com").apply(h)
                },
                BatchSize::SmallInput,
            )
        });
        group.bench_function(format!("rewrite_encoded_{name}"), |b| {
            b.iter_batched_ref(
                || (head.clone(), BytesMut::with_capacity(1024)),
                |(h, out)| {
                    let scanned = Scan::of(h);
                    prepare_request(h, scanned, &client, true, "http", "www.example.com")
                        .encode(out)
                },
                BatchSize::SmallInput,
            )
        });
    }
    let head = browser();
    group.bench_function("cookie_ticket", |b| {
        b.iter(|| black_box(cookie_ticket(black_box(&head), "cutover_ticket")))
    });
    group.finish();
}

criterion_group!(benches, headers);
criterion_main!(benches);
