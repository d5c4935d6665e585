//! End-to-end: timeouts after the response head. A backend that sends a
//! head and then stalls is cut after `backend_idle`; a client that stops
//! reading a response, or stops sending its request body, after
//! `client_idle`; a tunnel (WebSocket, tcp listener) with no byte either
//! way after `tunnel_idle`. Each is counted by reason and frees the
//! upstream connection. Transfers slower than the timeout in total but
//! steadily progressing are not cut.

// Test code: a failed unwrap is a failed test (clippy.toml allows it in
// #[test] functions; this covers the helpers beside them).
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cutover_test_support::backend::scripted::{keep_open, raw_response, Scripted};
use cutover_test_support::backend::slow::{Answers, Seen, SlowBackend};
use cutover_test_support::raw::{self, Lines};
use cutover_test_support::ws::{Echo, Ws};
use cutover_test_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `cutover_idle_timeouts_total` for blue of web, by reason.
async fn idle_timeouts(admin: SocketAddr, reason: &str) -> Option<f64> {
    let m = Metrics::scrape(admin).await.ok()?;
    m.value(
        "cutover_idle_timeouts_total",
        &[("pool", "blue"), ("reason", reason), ("service", "web")],
    )
}

async fn counted(admin: SocketAddr, reason: &str, want: f64) -> bool {
    eventually(Duration::from_secs(5), || async {
        idle_timeouts(admin, reason).await == Some(want)
    })
    .await
}

/// Open upstream connections of blue (HTTP ones; tunnels count apart).
async fn upstream_open(admin: SocketAddr) -> Option<f64> {
    let m = Metrics::scrape(admin).await.ok()?;
    m.value(
        "cutover_upstream_connections",
        &[("pool", "blue"), ("service", "web")],
    )
}

/// Reads from `s` until `needle` has come (at most 5 s); what was read.
async fn read_until(s: &mut tokio::net::TcpStream, needle: &str) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while !String::from_utf8_lossy(&got).contains(needle) {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&got).to_string()
}

#[tokio::test]
async fn a_backend_that_stalls_after_its_head_is_cut_after_backend_idle() {
    let mut seen = SlowBackend::start(Answers::Stalled).await;
    let list = seen.toml_list();
    let run = Harness::new()
        .backends(&list, &list)
        .service("timeouts = { backend_idle = \"500ms\", client_idle = \"60s\" }")
        .start()
        .await;
    let mut s = raw::connect(run.proxy).await;
    s.write_all(b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let got = read_until(&mut s, "first").await;
    assert!(got.starts_with("HTTP/1.1 200"), "got: {got}");
    let stalled = Instant::now();
    assert_eq!(
        seen.next_seen(Duration::from_secs(1)).await,
        Some(Seen::Request)
    );
    // The client's connection is closed (its response cut short)...
    let (rest, closed) = raw::read_to_close(&mut s, Duration::from_secs(5)).await;
    let took = stalled.elapsed();
    assert!(closed, "the client's connection stayed open");
    assert!(
        !String::from_utf8_lossy(&rest).contains("0\r\n\r\n"),
        "a cut body must not look complete"
    );
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(4),
        "cut after {took:?}, backend_idle is 500ms"
    );
    // ...and so is the backend's, which is never reused.
    assert_eq!(
        seen.next_seen(Duration::from_secs(5)).await,
        Some(Seen::Closed),
        "the stalled upstream connection was kept"
    );
    assert!(counted(run.admin, "backend", 1.0).await, "not counted");
    assert_eq!(idle_timeouts(run.admin, "client").await, Some(0.0));
}

#[tokio::test]
async fn a_response_slower_than_backend_idle_in_total_but_steady_is_not_cut() {
    let run = Harness::new()
        .service("timeouts = { backend_idle = \"500ms\" }")
        .start()
        .await;
    // 10 chunks, one every 150 ms: 1.5 s in all, never 500 ms silent.
    let started = Instant::now();
    let a = Conn::h1(run.proxy)
        .await
        .get("/stream?chunks=10&ms=150", &[])
        .await
        .expect("the whole answer");
    assert!(started.elapsed() >= Duration::from_millis(1300));
    assert_eq!(a.status.as_u16(), 200);
    assert_eq!(a.body.lines().count(), 10, "body: {}", a.body);
    assert!(a.body.ends_with("blue 9\n"));
    assert_eq!(idle_timeouts(run.admin, "backend").await, Some(0.0));
}

/// A backend answering `/big` with a body of `len` bytes.
async fn big_backend(len: usize) -> Scripted {
    let body = vec![b'x'; len];
    let head = format!("content-length: {len}");
    let answer = raw_response("HTTP/1.1 200 OK", &[head.as_str()], &body);
    Scripted::start(vec![("/big", keep_open(answer))]).await
}

/// A client socket with a small receive buffer, so that a client that
/// does not read stalls cutover's writes soon.
async fn small_window_client(addr: SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    socket.connect(addr).await.unwrap()
}

const BIG: usize = 64 << 20;

#[tokio::test]
async fn a_client_that_stops_reading_a_big_response_is_cut_after_client_idle() {
    let backend = big_backend(BIG).await;
    let list = backend.toml_list();
    let run = Harness::new()
        .backends(&list, &list)
        .service("timeouts = { client_idle = \"500ms\", backend_idle = \"60s\" }")
        .start()
        .await;
    let mut s = small_window_client(run.proxy).await;
    s.write_all(b"GET /big HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let got = read_until(&mut s, "\r\n\r\n").await;
    assert!(
        got.starts_with("HTTP/1.1 200"),
        "got: {}",
        &got[..got.len().min(200)]
    );
    // The client reads no more: cutover's writes stall, and after
    // client_idle it drops the connection and the upstream one.
    assert!(
        counted(run.admin, "client", 1.0).await,
        "a client that stopped reading was not cut"
    );
    let freed = eventually(Duration::from_secs(5), || async {
        upstream_open(run.admin).await == Some(0.0)
    })
    .await;
    assert!(freed, "the upstream connection was not freed");
    // What the client gets is short of the body, then the end.
    let (rest, closed) = raw::read_to_close(&mut s, Duration::from_secs(10)).await;
    assert!(closed, "the client's connection stayed open");
    assert!(got.len() + rest.len() < BIG, "the whole body came through");
    assert_eq!(idle_timeouts(run.admin, "backend").await, Some(0.0));
}

#[tokio::test]
async fn a_client_that_reads_slowly_but_steadily_gets_the_whole_response() {
    const LEN: usize = 8 << 20;
    let backend = big_backend(LEN).await;
    let list = backend.toml_list();
    let run = Harness::new()
        .backends(&list, &list)
        .service("timeouts = { client_idle = \"500ms\" }")
        .start()
        .await;
    let mut s = small_window_client(run.proxy).await;
    s.write_all(b"GET /big HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    // 256 KiB, then a 50 ms pause, again and again: more than 1 s in all,
    // and never 500 ms without draining enough of cutover's socket buffer
    // (megabytes on loopback) for its writes to go on. (A socket takes
    // more only once a third of its buffer is free: progress is seen at
    // that grain, which is why client_idle is seconds in practice.)
    let started = Instant::now();
    let mut total = 0usize;
    let mut head_len = None;
    let mut buf = vec![0u8; 64 * 1024];
    let mut since_pause = 0usize;
    let mut head = Vec::new();
    let done = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let n = match s.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => n,
            };
            total += n;
            if head_len.is_none() {
                head.extend_from_slice(&buf[..n]);
                if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                    head_len = Some(i + 4);
                }
            }
            if head_len.is_some_and(|h| total - h >= LEN) {
                return true;
            }
            since_pause += n;
            if since_pause >= 256 * 1024 {
                since_pause = 0;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    })
    .await;
    assert_eq!(
        done,
        Ok(true),
        "the slow reader was cut after {total} bytes"
    );
    assert!(started.elapsed() > Duration::from_secs(1));
    assert_eq!(idle_timeouts(run.admin, "client").await, Some(0.0));
}

#[tokio::test]
async fn a_client_that_stops_sending_its_request_body_is_cut_after_client_idle() {
    let run = Harness::new()
        .service("timeouts = { client_idle = \"500ms\" }")
        .start()
        .await;
    let mut s = raw::connect(run.proxy).await;
    s.write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\nonly ten b")
        .await
        .unwrap();
    let started = Instant::now();
    let (_, closed) = raw::read_to_close(&mut s, Duration::from_secs(5)).await;
    let took = started.elapsed();
    assert!(
        closed,
        "a client that stopped sending its body kept its connection"
    );
    assert!(
        took >= Duration::from_millis(400),
        "cut after {took:?}, client_idle is 500ms"
    );
    assert!(counted(run.admin, "client", 1.0).await, "not counted");
    let freed = eventually(Duration::from_secs(5), || async {
        upstream_open(run.admin).await == Some(0.0)
    })
    .await;
    assert!(freed, "the upstream connection was not freed");
}

#[tokio::test]
async fn a_request_body_sent_slowly_but_steadily_is_not_cut() {
    let run = Harness::new()
        .service("timeouts = { client_idle = \"500ms\" }")
        .start()
        .await;
    let mut s = raw::connect(run.proxy).await;
    s.write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\n")
        .await
        .unwrap();
    // One byte every 200 ms: 2 s in all.
    for b in b"0123456789" {
        tokio::time::sleep(Duration::from_millis(200)).await;
        s.write_all(&[*b]).await.unwrap();
    }
    let got = read_until(&mut s, "0123456789").await;
    assert!(got.starts_with("HTTP/1.1 200"), "got: {got}");
    assert_eq!(idle_timeouts(run.admin, "client").await, Some(0.0));
}

#[tokio::test]
async fn an_idle_websocket_is_closed_after_tunnel_idle_and_a_busy_one_is_not() {
    let run = Harness::new()
        .service("timeouts = { tunnel_idle = \"600ms\" }")
        .start()
        .await;
    let mut busy = Ws::connect(run.proxy).await;
    let mut idle = Ws::connect(run.proxy).await;
    assert_eq!(idle.echo("hi").await, Echo::Text("blue: hi".into()));
    let started = Instant::now();
    // The busy one talks every 200 ms for 1.6 s.
    for i in 0..8 {
        let msg = format!("m{i}");
        assert_eq!(busy.echo(&msg).await, Echo::Text(format!("blue: {msg}")));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The idle one was closed meanwhile, with a close frame.
    assert!(matches!(idle.next().await, Echo::Closed(_)));
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert_eq!(busy.echo("still").await, Echo::Text("blue: still".into()));
    assert!(counted(run.admin, "tunnel", 1.0).await, "not counted");
}

#[tokio::test]
async fn an_idle_tcp_connection_is_closed_after_tunnel_idle() {
    let run = Harness::new()
        .tcp()
        .service("timeouts = { tunnel_idle = \"500ms\" }")
        .start()
        .await;
    let (mut lines, greeting) = Lines::connect(run.proxy).await;
    assert_eq!(greeting, "blue");
    assert_eq!(lines.echo("one").await.as_deref(), Some("one"));
    let started = Instant::now();
    assert!(raw::closed_within(lines.stream(), Duration::from_secs(5)).await);
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert!(counted(run.admin, "tunnel", 1.0).await, "not counted");
}

#[tokio::test]
async fn tunnel_idle_zero_never_closes_a_tunnel() {
    let run = Harness::new()
        .tcp()
        .service("timeouts = { tunnel_idle = \"0s\" }")
        .start()
        .await;
    let (mut lines, _) = Lines::connect(run.proxy).await;
    // Silent for longer than any timeout of this test: still open.
    assert!(!raw::closed_within(lines.stream(), Duration::from_millis(800)).await);
    assert_eq!(lines.echo("later").await.as_deref(), Some("later"));
    assert_eq!(idle_timeouts(run.admin, "tunnel").await, Some(0.0));
}

/// An HTTP/2 request to `/echo` whose body the test sends frame by frame
/// through the returned sender; the answer (or the stream's failure)
/// comes from the returned task.
async fn h2_post(
    proxy: SocketAddr,
) -> (
    tokio::sync::mpsc::Sender<Result<http_body::Frame<bytes::Bytes>, std::convert::Infallible>>,
    tokio::task::JoinHandle<Result<(u16, String), String>>,
) {
    use http_body_util::BodyExt;
    let stream = raw::connect(proxy).await;
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let frames = Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|f| (f, rx))
    }));
    let req = http::Request::post(format!("http://{proxy}/echo"))
        .body(http_body_util::StreamBody::new(frames))
        .unwrap();
    let answer = tokio::spawn(async move {
        let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        Ok((
            status,
            String::from_utf8_lossy(&body.to_bytes()).to_string(),
        ))
    });
    (tx, answer)
}

fn data(s: &'static str) -> Result<http_body::Frame<bytes::Bytes>, std::convert::Infallible> {
    Ok(http_body::Frame::data(bytes::Bytes::from_static(
        s.as_bytes(),
    )))
}

#[tokio::test]
async fn an_http2_client_that_stops_sending_its_request_body_is_cut_after_client_idle() {
    let run = Harness::new()
        .service("timeouts = { client_idle = \"500ms\" }")
        .start()
        .await;
    let (tx, answer) = h2_post(run.proxy).await;
    tx.send(data("first ")).await.unwrap();
    let started = Instant::now();
    // Nothing more: the stream is answered 400 (or reset) after client_idle.
    let got = tokio::time::timeout(Duration::from_secs(5), answer)
        .await
        .expect("the stalled stream ended in time")
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "ended after {:?}: {got:?}",
        started.elapsed()
    );
    if let Ok((status, body)) = &got {
        assert_eq!(*status, 400, "{body}");
    }
    assert!(counted(run.admin, "client", 1.0).await, "not counted");
    let freed = eventually(Duration::from_secs(5), || async {
        upstream_open(run.admin).await == Some(0.0)
    })
    .await;
    assert!(freed, "the upstream connection was not freed");
    drop(tx);
}

#[tokio::test]
async fn an_http2_request_body_sent_slowly_but_steadily_is_not_cut() {
    let run = Harness::new()
        .service("timeouts = { client_idle = \"500ms\" }")
        .start()
        .await;
    let (tx, answer) = h2_post(run.proxy).await;
    for part in ["a", "b", "c", "d", "e", "f", "g", "h"] {
        tx.send(data(part)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(tx);
    let got = tokio::time::timeout(Duration::from_secs(5), answer)
        .await
        .expect("answered in time")
        .unwrap();
    assert_eq!(got, Ok((200, "abcdefgh".to_string())));
    assert_eq!(idle_timeouts(run.admin, "client").await, Some(0.0));
}
