//! End-to-end: a downstream connection's timeouts between requests. An
//! HTTP/1.1 client has `header_read` for each request head (the wait for the
//! next request on a keep-alive connection included), an HTTP/2 connection
//! stays open for `idle` between requests, and a client stuck halfway
//! through a request head is cut.

mod support;

use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Waits (bounded by `within`) for the server to close `s`; true if it did.
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(within, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
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
    let mut s = TcpStream::connect(run.proxy).await.expect("connect");
    for _ in 0..2 {
        // Back-to-back requests on the connection are served...
        s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .expect("write");
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).await.expect("read");
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    }
    // ...and once it waits for a next request longer than header_read
    // (well before idle), cutover closes it.
    assert!(
        closed_within(&mut s, Duration::from_secs(5)).await,
        "an idle HTTP/1.1 connection stayed open past header_read"
    );
}

#[tokio::test]
async fn a_client_stuck_in_a_request_head_is_cut() {
    let run = harness("300ms", "60s").await;
    let mut s = TcpStream::connect(run.proxy).await.expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nx-slow: ")
        .await
        .expect("write");
    assert!(
        closed_within(&mut s, Duration::from_secs(5)).await,
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
    let mut probe = TcpStream::connect(run.proxy).await.expect("connect");
    probe
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 1024];
    let _ = probe.read(&mut buf).await.expect("read");
    // The HTTP/1.1 probe closes after header_read; the HTTP/2 connection,
    // idle all that time, still answers.
    assert!(closed_within(&mut probe, Duration::from_secs(5)).await);
    let a = conn
        .get("/", &[])
        .await
        .expect("HTTP/2 connection still open");
    assert_eq!(a.status.as_u16(), 200);
    // Then, idle past `idle`, it is closed too.
    let closed = eventually(Duration::from_secs(10), || async { conn.is_closed() }).await;
    assert!(closed, "an idle HTTP/2 connection stayed open past idle");
}
