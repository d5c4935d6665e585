//! End-to-end: a downstream connection's timeouts between requests. An
//! HTTP/1.1 client has `header_read` for each request head (the wait for the
//! next request on a keep-alive connection included), an HTTP/2 connection
//! stays open for `idle` between requests, and a client stuck halfway
//! through a request head is cut. A client that leaves while its request is
//! in progress has the request cancelled (the backend sees its connection
//! close); one that waits gets its answer however long it takes.

// Test code: a failed unwrap is a failed test (clippy.toml allows it in
// #[test] functions; this covers the helpers beside them).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use cutover_test_support::backend::slow::{Answers, Seen, SlowBackend};
use cutover_test_support::raw;
use cutover_test_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn web_blue() -> [(&'static str, &'static str); 2] {
    [("pool", "blue"), ("service", "web")]
}

async fn harness(header_read: &str, idle: &str) -> Running {
    Harness::new()
        .blue(1)
        .service(&format!(
            "timeouts = {{ header_read = \"{header_read}\", idle = \"{idle}\" }}"
        ))
        .start()
        .await
}

#[tokio::test]
async fn an_idle_http1_connection_closes_after_header_read() {
    let run = harness("300ms", "60s").await;
    let mut s = raw::connect(run.proxy).await;
    for _ in 0..2 {
        // Back-to-back requests on the connection are served...
        s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .expect("write");
        let got = raw::read_some(&mut s, Duration::from_secs(5)).await;
        assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
    }
    // ...and once it waits for a next request longer than header_read
    // (well before idle), cutover closes it.
    assert!(
        raw::closed_within(&mut s, Duration::from_secs(5)).await,
        "an idle HTTP/1.1 connection stayed open past header_read"
    );
}

#[tokio::test]
async fn a_client_stuck_in_a_request_head_is_cut() {
    let run = harness("300ms", "60s").await;
    let mut s = raw::connect(run.proxy).await;
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nx-slow: ")
        .await
        .expect("write");
    assert!(
        raw::closed_within(&mut s, Duration::from_secs(5)).await,
        "a half-sent request head kept its connection open"
    );
    // Others are served.
    let a = Conn::h1(run.proxy)
        .await
        .get("/", &[])
        .await
        .expect("answer");
    assert_eq!(a.status.as_u16(), 200);
}

#[tokio::test]
async fn an_http2_connection_stays_open_for_idle_not_header_read() {
    let run = harness("100ms", "1500ms").await;
    let mut conn = Conn::h2(run.proxy).await;
    let a = conn.get("/", &[]).await.expect("answer");
    assert_eq!(a.status.as_u16(), 200);
    // Idle for several times header_read: still open for the next request.
    let mut probe = raw::connect(run.proxy).await;
    probe
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    let _ = raw::read_some(&mut probe, Duration::from_secs(5)).await;
    // The HTTP/1.1 probe closes after header_read; the HTTP/2 connection,
    // idle all that time, still answers.
    assert!(raw::closed_within(&mut probe, Duration::from_secs(5)).await);
    let a = conn
        .get("/", &[])
        .await
        .expect("HTTP/2 connection still open");
    assert_eq!(a.status.as_u16(), 200);
    // Then, idle past `idle`, it is closed too.
    let closed = eventually(Duration::from_secs(10), || async { conn.is_closed() }).await;
    assert!(closed, "an idle HTTP/2 connection stayed open past idle");
}

/// cutover in front of a [`SlowBackend`], its watchdog looking every
/// 100 ms (a quarter of `header_read`), the response timeout far away.
async fn slow_cutover(answers: Answers) -> (Running, SlowBackend) {
    let seen = SlowBackend::start(answers).await;
    let backend = seen.toml_list();
    let run = Harness::new()
        .backends(&backend, &backend)
        .service("timeouts = { header_read = \"400ms\", response_header = \"30s\" }")
        .start()
        .await;
    (run, seen)
}

#[tokio::test]
async fn a_client_that_leaves_mid_request_cancels_it() {
    // Looks every 100 ms: the client's leaving is seen within ~200 ms.
    let (run, mut seen) = slow_cutover(Answers::Never).await;
    let mut s = raw::connect(run.proxy).await;
    s.write_all(b"GET /long-poll HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    assert_eq!(
        seen.next_seen(Duration::from_secs(5)).await,
        Some(Seen::Request)
    );
    drop(s);
    // The backend's connection is closed long before the response timeout.
    assert_eq!(
        seen.next_seen(Duration::from_secs(5)).await,
        Some(Seen::Closed),
        "the backend kept working for a client that left"
    );
    let counted = eventually(Duration::from_secs(5), || async {
        let Ok(m) = Metrics::scrape(run.admin).await else {
            return false;
        };
        let listener = run.proxy.to_string();
        m.value(
            "cutover_downstream_client_gone_total",
            &[("listener", listener.as_str())],
        ) == Some(1.0)
            && m.value(
                "cutover_upstream_errors_total",
                &[
                    ("cause", "client_aborted"),
                    ("pool", "blue"),
                    ("service", "web"),
                    ("source", "client"),
                ],
            ) == Some(1.0)
            && m.value("cutover_in_flight_requests", &web_blue()) == Some(0.0)
    })
    .await;
    assert!(counted, "the client's leaving was not counted");
}

#[tokio::test]
async fn a_client_that_waits_for_a_slow_answer_gets_it() {
    // The answer takes ten looks of the watchdog: the client, still there,
    // must not be taken for gone.
    let (run, mut seen) = slow_cutover(Answers::After(Duration::from_secs(1))).await;
    let mut conn = Conn::h1(run.proxy).await;
    let a = conn.get("/slow", &[]).await.expect("answer");
    assert_eq!((a.status.as_u16(), a.body.as_str()), (200, "slow"));
    assert_eq!(
        seen.next_seen(Duration::from_secs(1)).await,
        Some(Seen::Request)
    );
    assert_eq!(
        metric(run.admin, "cutover_downstream_client_gone_total").await,
        Some(0.0)
    );
}

#[tokio::test]
async fn a_client_that_leaves_mid_response_cancels_it() {
    let (run, mut seen) = slow_cutover(Answers::Stalled).await;
    let mut s = raw::connect(run.proxy).await;
    s.write_all(b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    // The client reads the response head and the first chunk, then leaves
    // while the backend has nothing more to send.
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let first = tokio::time::timeout(Duration::from_secs(5), async {
        while !String::from_utf8_lossy(&got).contains("first") {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        true
    })
    .await;
    assert_eq!(first, Ok(true), "got: {}", String::from_utf8_lossy(&got));
    assert_eq!(
        seen.next_seen(Duration::from_secs(1)).await,
        Some(Seen::Request)
    );
    drop(s);
    assert_eq!(
        seen.next_seen(Duration::from_secs(5)).await,
        Some(Seen::Closed),
        "the backend's stalled stream was kept for a client that left"
    );
}
