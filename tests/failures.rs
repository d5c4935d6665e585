//! End-to-end: what a client sees when a backend is down, slow or absent.

// Test code: a failed unwrap is a failed test (clippy.toml allows it in
// #[test] functions; this covers the helpers beside them).
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use cutover_test_support::backend::DownPort;
use cutover_test_support::raw;
use cutover_test_support::*;

/// The labels of blue's backend-side failures with this cause.
fn backend_errors(cause: &str) -> [(&str, &str); 4] {
    [
        ("cause", cause),
        ("pool", "blue"),
        ("service", "web"),
        ("source", "backend"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_backend_is_a_prompt_502_naming_it() {
    // A port held bound but not listening: connections to it are refused.
    let down = DownPort::new();
    let dead = down.addr;
    // Named only with error_detail = "full" (tests/hardening.rs has the default).
    let h = Harness::new()
        .blue(0)
        .backends(&format!("[\"{dead}\"]"), "[\"127.0.0.1:9\"]")
        .service("error_detail = \"full\"")
        .start()
        .await;
    let t = Instant::now();
    let a = get_once(h.proxy, "/", &[]).await.unwrap();
    assert_eq!(a.status, 502);
    assert!(
        a.body.contains(&dead.to_string()) && a.body.contains("pool blue"),
        "{}",
        a.body
    );
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "502 took {:?}",
        t.elapsed()
    );
    let m = Metrics::scrape(h.admin).await.unwrap();
    assert_eq!(
        m.value("cutover_upstream_errors_total", &backend_errors("connect")),
        Some(1.0),
        "{}",
        m.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_backend_is_a_504_after_the_response_header_timeout() {
    let h = Harness::new()
        .service("error_detail = \"full\"\n[services.web.timeouts]\nresponse_header = \"300ms\"")
        .start()
        .await;
    let t = Instant::now();
    let a = get_once(h.proxy, "/slow?ms=5000", &[]).await.unwrap();
    assert_eq!(a.status, 504);
    assert!(a.body.contains("within 300ms"), "{}", a.body);
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "504 took {:?}",
        t.elapsed()
    );
    // A fast request on the same pool still works.
    assert_eq!(get_once(h.proxy, "/", &[]).await.unwrap().status, 200);
    let m = Metrics::scrape(h.admin).await.unwrap();
    assert_eq!(
        m.value("cutover_upstream_errors_total", &backend_errors("timeout")),
        Some(1.0),
        "{}",
        m.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_from_a_client_is_a_4xx_and_the_listener_keeps_serving() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = Harness::new().start().await;
    for junk in [
        &b"\x16\x03\x01\x00\xa5garbage\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
        b"GET /\xff\xfe HTTP/1.1\r\n\r\n",
    ] {
        let mut s = raw::connect(h.proxy).await;
        s.write_all(junk).await.unwrap();
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
        let head = String::from_utf8_lossy(&buf);
        assert!(head.is_empty() || head.starts_with("HTTP/1.1 4"), "{head}");
    }
    let mut big = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
    for i in 0..200 {
        big.push_str(&format!("x-h{i}: v\r\n"));
    }
    big.push_str("\r\n");
    let mut s = raw::connect(h.proxy).await;
    s.write_all(big.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    let head = String::from_utf8_lossy(&buf);
    assert!(
        head.is_empty() || head.starts_with("HTTP/1.1 431"),
        "too many headers: {head}"
    );
    assert_eq!(get_once(h.proxy, "/", &[]).await.unwrap().status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_backends_get_http2_and_http1_backends_http11() {
    let h = Harness::new().pools("protocol = \"h2c\"").start().await;
    let mut c = Conn::h1(h.proxy).await;
    for _ in 0..3 {
        let a = c.get("/", &[]).await.unwrap();
        assert_eq!(a.status, 200);
        assert_eq!(a.headers["x-seen-version"], "HTTP/2.0");
        // The client's name travels as `:authority` only: a `Host` header
        // beside it is malformed HTTP/2 (nginx answers 400).
        assert_eq!(a.headers["x-seen-host"], "www.example.test");
        assert_eq!(a.headers["x-seen-host-header"], "");
    }
    // From an HTTP/2 client too, and with no name at all (HTTP/1.0): the
    // backend's own address.
    let a = Conn::h2(h.proxy).await.get("/", &[]).await.unwrap();
    assert_eq!(a.headers["x-seen-host"], "www.example.test");
    assert_eq!(a.headers["x-seen-host-header"], "");
    let answer = raw::exchange(h.proxy, b"GET / HTTP/1.0\r\n\r\n").await;
    let backend = h.backends[0].addr.to_string();
    assert_eq!(
        raw::header_value(&answer, "x-seen-host"),
        Some(backend.as_str()),
        "{answer}"
    );
    let plain = Harness::new().start().await;
    let a = Conn::h2(plain.proxy).await.get("/", &[]).await.unwrap();
    assert_eq!(
        a.headers["x-seen-version"], "HTTP/1.1",
        "an HTTP/2 client, an HTTP/1.1 backend"
    );
}
