//! End-to-end: what each peer sees when cutover cuts work still in flight
//! on a pool at its drain deadline (issue 16, item 6). A gRPC stream ends
//! with `grpc-status: 14` (UNAVAILABLE), in its trailers or, before its
//! answer, in a trailers-only answer; another HTTP/2 request not yet
//! answered is reset with REFUSED_STREAM; an HTTP/1.1 one gets a 503
//! saying the pool was drained; a WebSocket's backend gets a masked close
//! frame 1001, as its client gets an unmasked one.

// Test code: a failed unwrap is a failed test (clippy.toml allows it in
// #[test] functions; this covers the helpers beside them).
#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cutover_test_support::backend::loopback;
use cutover_test_support::client::{bounded, read, DEFAULT_TIMEOUT, HOST};
use cutover_test_support::ws::{Echo, Ws};
use cutover_test_support::*;
use http::{Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DRAIN: &str = "drain_timeout = \"700ms\"";

/// One gRPC message: uncompressed, 4-byte big-endian length, payload.
fn grpc_message(payload: &[u8]) -> Bytes {
    let mut m = vec![0u8];
    m.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    m.extend_from_slice(payload);
    Bytes::from(m)
}

type GrpcBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// An h2c gRPC server: each call gets a server stream of one message every
/// 100 ms for a minute (`answer = true`), or no answer at all.
async fn grpc_backend(answer: bool) -> SocketAddr {
    let listener = loopback().await;
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req: Request<Incoming>| async move {
                    if !answer {
                        std::future::pending::<()>().await;
                    }
                    let ticks = futures_util::stream::unfold(0u32, |i| async move {
                        if i > 0 {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        let m = grpc_message(format!("blue {i}").as_bytes());
                        (i < 600).then_some((Ok::<_, Infallible>(Frame::data(m)), i + 1))
                    });
                    let body: GrpcBody = BodyExt::boxed(StreamBody::new(ticks));
                    let resp = Response::builder()
                        .header("content-type", "application/grpc")
                        .body(body)
                        .unwrap();
                    Ok::<_, Infallible>(resp)
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// An h2c blue pool of `blue`, an h2c green pool of a test backend.
async fn h2c_harness(blue: SocketAddr) -> (Running, TestBackend) {
    let green = TestBackend::start("green").await;
    let h = Harness::new()
        .blue(0)
        .green(0)
        .backends(&format!("[\"{blue}\"]"), &green.toml_list())
        .pools("protocol = \"h2c\"")
        .service(DRAIN)
        .start()
        .await;
    (h, green)
}

/// A prior-knowledge HTTP/2 connection to cutover.
async fn h2_client(proxy: SocketAddr) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let io = TokioIo::new(raw::connect(proxy).await);
    let (send, conn) = bounded(
        "HTTP/2 handshake",
        DEFAULT_TIMEOUT,
        hyper::client::conn::http2::handshake(TokioExecutor::new(), io),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    send
}

/// The pool that answers a plain GET on `send`'s connection (which a cut
/// stream must have left usable).
async fn next_pool(
    send: &mut hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    what: &str,
) -> String {
    let answer = bounded(what, DEFAULT_TIMEOUT, async {
        send.ready().await.unwrap();
        let req = Request::get(format!("http://{HOST}/"))
            .version(Version::HTTP_2)
            .body(Full::new(Bytes::new()))
            .unwrap();
        read(send.send_request(req).await.unwrap()).await.unwrap()
    })
    .await;
    answer.pool().to_string()
}

/// A unary-request, server-streaming gRPC call.
fn grpc_call() -> Request<Full<Bytes>> {
    Request::builder()
        .method("POST")
        .version(Version::HTTP_2)
        .uri(format!("http://{HOST}/feed.Feed/Watch"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(grpc_message(b"watch")))
        .unwrap()
}

/// Waits until a request is in flight on blue, then switches to green.
async fn switch_once_busy(admin_addr: SocketAddr) {
    let busy = eventually(Duration::from_secs(5), || async {
        let (_, v) = admin(admin_addr, "GET", "/v1/services/web/drain", None).await;
        v["pools"][0]["in_flight"] == 1
    })
    .await;
    assert!(busy, "the request never showed in flight on blue");
    switch(admin_addr, "green").await;
}

/// blue's `cutover_upstream_errors_total{cause="drain_cut"}`.
async fn drain_cuts(admin_addr: SocketAddr) -> Option<f64> {
    metric(
        admin_addr,
        r#"cutover_upstream_errors_total{cause="drain_cut",pool="blue",service="web",source="cutover"}"#,
    )
    .await
}

/// The `h2::Error` in `err`'s source chain, if any.
fn h2_reason(err: &(dyn std::error::Error + 'static)) -> Option<h2::Reason> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            return h2.reason();
        }
        next = e.source();
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_stream_cut_at_the_drain_deadline_ends_with_grpc_status_unavailable() {
    let (h, _green) = h2c_harness(grpc_backend(true).await).await;
    let mut send = h2_client(h.proxy).await;
    let resp = bounded("the gRPC answer's head", DEFAULT_TIMEOUT, async {
        send.ready().await.unwrap();
        send.send_request(grpc_call()).await.unwrap()
    })
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/grpc");
    let mut body = resp.into_body();
    let first = bounded("the first message", DEFAULT_TIMEOUT, body.frame()).await;
    assert!(first.unwrap().unwrap().is_data());

    let switched = Instant::now();
    switch(h.admin, "green").await;
    // Messages keep coming until the deadline, then the stream ends with
    // trailers, not a reset.
    let mut messages = 1;
    let trailers = loop {
        match bounded("the stream's next frame", DEFAULT_TIMEOUT, body.frame()).await {
            Some(Ok(f)) if f.is_data() => messages += 1,
            Some(Ok(f)) => break f.into_trailers().unwrap(),
            Some(Err(e)) => panic!(
                "the stream failed instead of ending with trailers ({:?}): {e}",
                h2_reason(&e)
            ),
            None => panic!("the stream ended without trailers"),
        }
    };
    let took = switched.elapsed();
    assert!(
        took >= Duration::from_millis(600) && took < Duration::from_secs(5),
        "cut after {took:?}"
    );
    assert!(messages > 2, "only {messages} messages before the cut");
    assert_eq!(trailers["grpc-status"], "14", "{trailers:?}");
    let message = trailers["grpc-message"].to_str().unwrap();
    assert!(
        message.contains("pool blue was drained"),
        "grpc-message: {message}"
    );
    assert!(
        bounded("the end of the stream", DEFAULT_TIMEOUT, body.frame())
            .await
            .is_none(),
        "nothing after the trailers"
    );
    assert_eq!(drain_cuts(h.admin).await, Some(1.0));
    // The connection is fine: the next call goes to green.
    assert_eq!(
        next_pool(&mut send, "a request after the cut").await,
        "green"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_call_cut_before_its_answer_gets_a_trailers_only_unavailable() {
    let (h, _green) = h2c_harness(grpc_backend(false).await).await;
    let mut send = h2_client(h.proxy).await;
    let call = tokio::spawn(async move {
        send.ready().await.unwrap();
        let resp = send.send_request(grpc_call()).await;
        match resp {
            Ok(r) => Ok(read(r).await),
            Err(e) => Err(format!("{e} ({:?})", h2_reason(&e))),
        }
    });
    switch_once_busy(h.admin).await;
    let answer = bounded("the cut call's answer", DEFAULT_TIMEOUT, call)
        .await
        .unwrap()
        .expect("an answer, not a reset")
        .expect("a whole answer");
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.header("content-type"), Some("application/grpc"));
    assert_eq!(answer.header("grpc-status"), Some("14"));
    let message = answer.header("grpc-message").unwrap_or_default();
    assert!(
        message.contains("pool blue was drained"),
        "grpc-message: {message}"
    );
    assert!(
        answer.bytes.is_empty(),
        "a trailers-only answer has no body"
    );
    assert_eq!(drain_cuts(h.admin).await, Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_request_cut_before_its_answer_is_refused_so_it_may_be_retried() {
    let h = Harness::new().service(DRAIN).start().await;
    let mut send = h2_client(h.proxy).await;
    let call = tokio::spawn(async move {
        send.ready().await.unwrap();
        let req = Request::get(format!("http://{HOST}/slow?ms=20000"))
            .version(Version::HTTP_2)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let answer = match send.send_request(req).await {
            Ok(r) => Ok(read(r).await),
            Err(e) => Err(h2_reason(&e)),
        };
        (answer, send)
    });
    switch_once_busy(h.admin).await;
    let (answer, mut send) = bounded("the cut request's end", DEFAULT_TIMEOUT, call)
        .await
        .unwrap();
    match answer {
        Err(reason) => assert_eq!(reason, Some(h2::Reason::REFUSED_STREAM)),
        Ok(a) => panic!("answered instead of refused: {a:?}"),
    }
    assert_eq!(drain_cuts(h.admin).await, Some(1.0));
    // Only the stream was reset: the connection serves the retry (green).
    assert_eq!(next_pool(&mut send, "the retry").await, "green");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http1_request_cut_before_its_answer_gets_a_503_saying_the_pool_was_drained() {
    let h = Harness::new().service(DRAIN).start().await;
    let mut s = raw::connect(h.proxy).await;
    s.write_all(b"GET /slow?ms=20000 HTTP/1.1\r\nHost: www.example.test\r\n\r\n")
        .await
        .unwrap();
    switch_once_busy(h.admin).await;
    // The whole answer, then the connection closes.
    let (bytes, closed) = raw::read_to_close(&mut s, DEFAULT_TIMEOUT).await;
    let text = String::from_utf8_lossy(&bytes);
    assert!(closed, "the connection stayed open after: {text}");
    assert!(text.starts_with("HTTP/1.1 503 "), "{text}");
    assert_eq!(
        raw::header_value(&text, "connection"),
        Some("close"),
        "{text}"
    );
    assert!(text.contains("pool blue was drained"), "{text}");
    assert!(!text.contains("127.0.0.1"), "no backend address: {text}");
    assert_eq!(drain_cuts(h.admin).await, Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_stream_cut_after_its_head_is_still_reset() {
    let h = Harness::new().service(DRAIN).start().await;
    let mut send = h2_client(h.proxy).await;
    let resp = bounded("the stream's head", DEFAULT_TIMEOUT, async {
        send.ready().await.unwrap();
        let req = Request::get(format!("http://{HOST}/stream?chunks=200&ms=100"))
            .version(Version::HTTP_2)
            .body(Full::new(Bytes::new()))
            .unwrap();
        send.send_request(req).await.unwrap()
    })
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    switch(h.admin, "green").await;
    // Not gRPC: no trailers to end it with; a reset says it was cut short.
    let end = bounded(
        "the cut stream",
        DEFAULT_TIMEOUT,
        resp.into_body().collect(),
    )
    .await;
    assert!(end.is_err(), "a cut stream must not look complete");
}

/// A WebSocket backend on a raw socket: answers the handshake, then echoes
/// each text frame as `blue: <text>`, and keeps every byte it read after
/// the handshake (and whether the peer then closed) for the test to parse.
struct RawWsBackend {
    addr: SocketAddr,
    read: Arc<Mutex<(Vec<u8>, bool)>>,
}

impl RawWsBackend {
    async fn start() -> RawWsBackend {
        let listener = loopback().await;
        let addr = listener.local_addr().unwrap();
        let read = Arc::new(Mutex::new((Vec::new(), false)));
        let kept = read.clone();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                let mut b = [0u8; 1];
                if s.read(&mut b).await.unwrap_or(0) == 0 {
                    return;
                }
                head.push(b[0]);
            }
            let head = String::from_utf8_lossy(&head).to_string();
            let key = raw::header_value(&head, "sec-websocket-key").unwrap();
            let accept =
                tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
            let answer = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            );
            s.write_all(answer.as_bytes()).await.unwrap();
            let mut echoed = 0;
            let mut buf = [0u8; 4096];
            loop {
                let n = s.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    kept.lock().unwrap().1 = true;
                    return;
                }
                let frames = {
                    let mut k = kept.lock().unwrap();
                    k.0.extend_from_slice(&buf[..n]);
                    ws_frames(&k.0)
                };
                for f in frames.iter().skip(echoed).filter(|f| f.opcode == 1) {
                    let text = format!("blue: {}", String::from_utf8_lossy(&f.payload));
                    let mut out = vec![0x81, text.len() as u8];
                    out.extend_from_slice(text.as_bytes());
                    let _ = s.write_all(&out).await;
                }
                echoed = frames.len();
            }
        });
        RawWsBackend { addr, read }
    }

    /// The frames read so far, and whether the peer closed since.
    fn seen(&self) -> (Vec<WsFrame>, bool) {
        let k = self.read.lock().unwrap();
        (ws_frames(&k.0), k.1)
    }
}

#[derive(Debug)]
struct WsFrame {
    opcode: u8,
    masked: bool,
    /// Unmasked.
    payload: Vec<u8>,
}

/// The whole frames at the start of `b` (RFC 6455 5.2; short lengths only,
/// which is all this test sends).
fn ws_frames(mut b: &[u8]) -> Vec<WsFrame> {
    let mut out = Vec::new();
    while b.len() >= 2 {
        let masked = b[1] & 0x80 != 0;
        let len = usize::from(b[1] & 0x7f);
        assert!(len < 126, "a short frame");
        let key_len = if masked { 4 } else { 0 };
        if b.len() < 2 + key_len + len {
            break;
        }
        let key = &b[2..2 + key_len];
        let payload = b[2 + key_len..2 + key_len + len]
            .iter()
            .enumerate()
            .map(|(i, x)| if masked { x ^ key[i % 4] } else { *x })
            .collect();
        out.push(WsFrame {
            opcode: b[0] & 0x0f,
            masked,
            payload,
        });
        b = &b[2 + key_len + len..];
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_cut_at_the_drain_deadline_sends_its_backend_a_masked_close_1001() {
    let blue = RawWsBackend::start().await;
    let green = TestBackend::start("green").await;
    let h = Harness::new()
        .blue(0)
        .green(0)
        .backends(&format!("[\"{}\"]", blue.addr), &green.toml_list())
        .service(DRAIN)
        .start()
        .await;
    let mut ws = Ws::connect(h.proxy).await;
    assert_eq!(ws.echo("one").await, Echo::Text("blue: one".into()));
    switch(h.admin, "green").await;
    assert_eq!(ws.echo("two").await, Echo::Text("blue: two".into()));
    // The client gets its 1001 at the deadline, as before.
    assert_eq!(ws.next().await, Echo::Closed(Some(1001)));
    // And the backend, now: a close frame, masked as a client's must be,
    // after the two messages, then the end of the connection.
    let closed = eventually(Duration::from_secs(3), || async { blue.seen().1 }).await;
    assert!(closed, "cutover did not close the backend's side");
    let (frames, _) = blue.seen();
    let texts: Vec<_> = frames.iter().filter(|f| f.opcode == 1).collect();
    assert_eq!(texts.len(), 2, "{frames:?}");
    let last = frames.last().unwrap();
    assert_eq!(last.opcode, 8, "the last frame is a close: {frames:?}");
    assert!(last.masked, "a frame to a server must be masked");
    assert_eq!(last.payload, 1001u16.to_be_bytes(), "{last:?}");
}
