//! End-to-end: upstream connection reuse. A keep-alive connection goes back
//! to its backend's idle list when its response has been read whole, and is
//! the one the next request takes; a connection whose response was not read
//! whole is never reused, unless cutover could read the little that was left
//! itself; a pooled connection the backend closed costs no request.

// Test code: a failed unwrap is a failed test (clippy.toml allows it in
// #[test] functions; this covers the helpers beside them).
#![allow(clippy::unwrap_used)]

use std::sync::atomic::Ordering;
use std::time::Duration;

use cutover_test_support::backend::one_shot::OneShot;
use cutover_test_support::client::{bounded, DEFAULT_TIMEOUT};
use cutover_test_support::raw;
use cutover_test_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn accepted(run: &Running) -> u64 {
    run.backends[0].connections.load(Ordering::Relaxed)
}

#[tokio::test]
async fn sequential_requests_share_one_upstream_connection() {
    let run = Harness::new().blue(1).start().await;
    // Plain bodies, chunked streams, and answers without a body (204, and
    // HEAD, which hyper never polls a body for) all free the connection.
    for mut conn in [Conn::h1(run.proxy).await, Conn::h2(run.proxy).await] {
        for i in 0..20 {
            let path = match i % 3 {
                0 => "/",
                1 => "/stream?chunks=2&ms=1",
                _ => "/status?code=204",
            };
            let a = conn.get(path, &[]).await.expect("answer");
            assert!(a.status.is_success(), "{path}: {}", a.status);
        }
    }
    let head = head_status(run.proxy).await;
    assert_eq!(head, 200);
    assert_eq!(
        accepted(&run),
        1,
        "61 requests one after another should all use the same upstream connection"
    );
    // cutover's own view of it, for operators.
    assert_eq!(metric(run.admin, OPENED_BLUE).await, Some(1.0));
    assert_eq!(metric(run.admin, OPEN_BLUE).await, Some(1.0));
}

const OPENED_BLUE: &str =
    "cutover_upstream_connections_opened_total{pool=\"blue\",service=\"web\"}";
const OPEN_BLUE: &str = "cutover_upstream_connections{pool=\"blue\",service=\"web\"}";
const KEPT_BLUE: &str = "cutover_upstream_connections_kept_total{pool=\"blue\",service=\"web\"}";

/// A HEAD request on a new downstream connection; returns the status.
async fn head_status(addr: std::net::SocketAddr) -> u16 {
    let text = raw::exchange(
        addr,
        b"HEAD / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn concurrent_requests_open_no_surplus_connections() {
    let run = Harness::new().blue(1).start().await;
    // 16 requests at once need 16 connections...
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let addr = run.proxy;
        tasks.push(tokio::spawn(async move {
            get_once(addr, "/slow?ms=200", &[]).await
        }));
    }
    for t in tasks {
        let a = t.await.expect("task").expect("answer");
        assert_eq!(a.status, 200);
    }
    let after_burst = accepted(&run);
    assert!(
        (1..=16).contains(&after_burst),
        "16 concurrent requests opened {after_burst} upstream connections"
    );
    // ...and afterwards 100 requests, 4 at a time, open none.
    for _ in 0..25 {
        let mut batch = Vec::new();
        for _ in 0..4 {
            let addr = run.proxy;
            batch.push(tokio::spawn(async move { get_once(addr, "/", &[]).await }));
        }
        for t in batch {
            assert_eq!(t.await.expect("task").expect("answer").status, 200);
        }
    }
    assert_eq!(
        accepted(&run),
        after_burst,
        "requests that found idle connections dialed new ones"
    );
}

#[tokio::test]
async fn a_response_not_read_whole_is_not_reused() {
    let run = Harness::new().blue(1).start().await;
    // Read the head of a slow stream, then hang up mid-body.
    {
        let mut s = raw::connect(run.proxy).await;
        s.write_all(b"GET /stream?chunks=50&ms=50 HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .expect("write");
        let mut buf = [0u8; 256];
        let n = bounded("read head", DEFAULT_TIMEOUT, s.read(&mut buf))
            .await
            .expect("read head");
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    }
    // The half-read connection must not serve the next request: that one
    // would read the rest of the stream as its answer. (Its 2.5 s of
    // stream are too slow to finish in the background.)
    let mut conn = Conn::h1(run.proxy).await;
    for _ in 0..5 {
        let a = conn.get("/", &[]).await.expect("answer");
        assert_eq!((a.status.as_u16(), a.body.as_str()), (200, "blue\n"));
    }
    assert_eq!(accepted(&run), 2, "the cut stream's connection was reused");
    assert_eq!(metric(run.admin, OPENED_BLUE).await, Some(2.0));
    // The half-read connection is closed, not kept idle.
    assert!(
        eventually(Duration::from_secs(5), || async {
            metric(run.admin, OPEN_BLUE).await == Some(1.0)
        })
        .await,
        "open upstream connections: {:?}",
        metric(run.admin, OPEN_BLUE).await
    );
}

#[tokio::test]
async fn a_response_the_client_left_near_its_end_keeps_its_connection() {
    let run = Harness::new().blue(1).start().await;
    // Read the head and first chunk of a short stream, then hang up.
    {
        let mut s = raw::connect(run.proxy).await;
        s.write_all(b"GET /stream?chunks=3&ms=100 HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .expect("write");
        let mut buf = [0u8; 256];
        let n = bounded("read head", DEFAULT_TIMEOUT, s.read(&mut buf))
            .await
            .expect("read head");
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    }
    // cutover reads the other two chunks itself and keeps the connection...
    assert!(
        eventually(Duration::from_secs(5), || async {
            metric(run.admin, KEPT_BLUE).await == Some(1.0)
        })
        .await,
        "kept: {:?}",
        metric(run.admin, KEPT_BLUE).await
    );
    // ...which serves the next requests, the stream's rest not among them.
    let mut conn = Conn::h1(run.proxy).await;
    for _ in 0..3 {
        let a = conn.get("/", &[]).await.expect("answer");
        assert_eq!((a.status.as_u16(), a.body.as_str()), (200, "blue\n"));
    }
    assert_eq!(accepted(&run), 1, "a new connection was opened");
    assert_eq!(metric(run.admin, OPEN_BLUE).await, Some(1.0));
}

#[tokio::test]
async fn a_pooled_connection_the_backend_closed_costs_no_request() {
    let backend = OneShot::start().await;
    let list = backend.toml_list();
    let run = Harness::new().backends(&list, &list).start().await;
    let mut conn = Conn::h1(run.proxy).await;
    for i in 0..100 {
        // The backend closes its idle connection just as the next request
        // arrives: cutover either sees the close first and dials, or hands
        // the request to the dead connection, gets it back unsent, and
        // sends it on a fresh one. Either way the client sees no error.
        backend.close_idle();
        let a = conn.get("/", &[]).await.expect("answer");
        assert_eq!(
            (a.status.as_u16(), a.body.as_str()),
            (200, "ok\n"),
            "request {i}"
        );
    }
    assert_eq!(backend.accepted(), 100);
}
