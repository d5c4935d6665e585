//! End-to-end: how cutover relays HTTP/1.1 responses whose exact bytes a
//! scripted backend controls (chunked, close-delimited, HTTP/1.0, HEAD,
//! 1xx/204/304, malformed, oversized, truncated, large), and how it frames
//! the requests it forwards. Every test describes what a client or a backend
//! sees, not how cutover's upstream client is built.

// Test code: a failed unwrap is a failed test (clippy.toml allows it in
// #[test] functions; this covers the helpers beside them).
#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::net::SocketAddr;

use std::time::Duration;

use bytes::Bytes;
use cutover_test_support::backend::scripted::{
    keep_open, raw_response, then_close, Canned, Scripted,
};
use cutover_test_support::*;
use http::{Method, Request, StatusCode, Version};
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The longest any single network step of these tests may take.
const WAIT: Duration = Duration::from_secs(10);

/// `f`, or a panic naming `what` if it takes longer than [`WAIT`].
async fn within<F: Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(WAIT, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing within {WAIT:?}"))
}

/// The plain answer most tests use to check that cutover still works.
const SMALL: &str = "/small";
fn small_answer() -> Canned {
    keep_open(raw_response(
        "HTTP/1.1 200 OK",
        &["Content-Length: 3", "Content-Type: text/plain"],
        b"ok\n",
    ))
}

// ---------------------------------------------------------------------------
// cutover in front of it, and a client.
// ---------------------------------------------------------------------------

/// cutover with the scripted backend as the only backend of both pools
/// (traffic goes to blue).
async fn cutover_for(backend: &Scripted) -> Running {
    let list = format!("[\"{}\"]", backend.addr);
    within(
        "cutover starts",
        Harness::new()
            .blue(0)
            .green(0)
            .backends(&list, &list)
            .start(),
    )
    .await
}

/// The host name clients of these tests ask for.
const HOST: &str = "app.example.test";

async fn h1(addr: SocketAddr) -> Conn {
    Conn::h1(addr).await
}

async fn h2(addr: SocketAddr) -> Conn {
    Conn::h2(addr).await
}

/// Sends `req` on `conn` and reads the response whole; Err when the request
/// or the response (head or body) fails (a panic after [`WAIT`]).
async fn send(conn: &mut Conn, req: Request<Full<Bytes>>) -> Result<Answer, String> {
    within("response from cutover", conn.send(req)).await
}

/// An HTTP/1.1 request to [`HOST`] with an origin-form target.
fn request(method: Method, target: &str, body: &'static [u8]) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(target)
        .header("host", HOST)
        .body(Full::new(Bytes::from_static(body)))
        .expect("valid request")
}

/// A GET that must succeed; returns the response.
async fn get_ok(conn: &mut Conn, target: &str) -> Answer {
    let r = send(conn, request(Method::GET, target, b""))
        .await
        .unwrap_or_else(|e| panic!("GET {target}: {e}"));
    assert_eq!(r.status, StatusCode::OK, "GET {target}: {}", r.body);
    r
}

/// Failed requests caused by a backend's invalid response.
const BAD_RESPONSE: &str = "cutover_upstream_errors_total{cause=\"bad_response\",pool=\"blue\",service=\"web\",source=\"backend\"}";

async fn bad_responses(run: &Running) -> f64 {
    within("metrics", metric(run.admin, BAD_RESPONSE))
        .await
        .unwrap_or_else(|| panic!("{BAD_RESPONSE} is exported"))
}

/// `len` bytes that are not a repeating short pattern.
fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

/// Fails with the first differing offset, not 1 MiB of bytes.
fn assert_same_bytes(got: &[u8], want: &[u8], what: &str) {
    if got == want {
        return;
    }
    let first = got.iter().zip(want).position(|(a, b)| a != b);
    panic!(
        "{what}: got {} bytes, want {}; first difference at {:?}",
        got.len(),
        want.len(),
        first
    );
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[tokio::test]
async fn chunked_response_arrives_whole_and_its_connection_is_reused() {
    // Proves: chunk sizes in upper/lower-case hex and chunk extensions are decoded, and the upstream connection serves the next request.
    let chunked = raw_response(
        "HTTP/1.1 200 OK",
        &["Transfer-Encoding: chunked", "Content-Type: text/plain"],
        b"5;foo=bar\r\nHello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\na\r\n0123456789\r\n3;a=1;b=\"x y\"\r\n!!\n\r\n0\r\n\r\n",
    );
    let backend = Scripted::start(vec![("/chunked", keep_open(chunked))]).await;
    let run = cutover_for(&backend).await;
    let mut conn = h1(run.proxy).await;
    for i in 0..2 {
        let r = get_ok(&mut conn, "/chunked").await;
        assert_eq!(
            r.body, "Helloabcdefghijklmnopqrstuvwxyz0123456789!!\n",
            "request {i}"
        );
    }
    assert_eq!(
        backend.accepts(),
        1,
        "the second request should reuse the upstream connection"
    );
    assert!(backend.seen().iter().all(|s| s.conn == 0));
}

#[tokio::test]
async fn close_delimited_response_arrives_whole_and_the_next_request_dials_again() {
    // Proves: a body that ends when the backend closes (no length, no chunking) reaches the client whole, and the next request gets a new upstream connection.
    let body = "everything until the connection closes\nline two\n";
    let close_delimited = raw_response(
        "HTTP/1.1 200 OK",
        &["Content-Type: text/plain", "Connection: close"],
        body.as_bytes(),
    );
    let backend = Scripted::start(vec![
        ("/until-close", then_close(close_delimited)),
        (SMALL, small_answer()),
    ])
    .await;
    let run = cutover_for(&backend).await;
    let mut conn = h1(run.proxy).await;
    assert_eq!(get_ok(&mut conn, "/until-close").await.body, body);
    assert_eq!(get_ok(&mut conn, SMALL).await.body, "ok\n");
    assert_eq!(
        backend.accepts(),
        2,
        "the closed connection cannot carry the next request"
    );
}

/// An HTTP/1.0 answer with a Content-Length and no keep-alive; the backend
/// still leaves its connection open.
fn http10_answer() -> Canned {
    keep_open(raw_response(
        "HTTP/1.0 200 OK",
        &["Content-Length: 11", "Content-Type: text/plain"],
        b"old server\n",
    ))
}

#[tokio::test]
async fn http10_response_is_relayed_and_its_connection_is_not_reused() {
    // Proves: an HTTP/1.0 answer without keep-alive is read by its Content-Length and its connection is not reused, even though this backend leaves it open.
    let backend = Scripted::start(vec![("/old", http10_answer())]).await;
    let run = cutover_for(&backend).await;
    for _ in 0..2 {
        // A new client connection each time: this test is about the
        // upstream side (see the next test for the client side).
        let mut conn = h1(run.proxy).await;
        assert_eq!(get_ok(&mut conn, "/old").await.body, "old server\n");
    }
    assert_eq!(
        backend.accepts(),
        2,
        "an HTTP/1.0 response without keep-alive ends its connection"
    );
}

#[tokio::test]
async fn http10_backend_does_not_downgrade_the_clients_connection() {
    // Proves: an HTTP/1.1 client of an HTTP/1.0 backend gets HTTP/1.1 answers from cutover (RFC 9112 2.3: intermediaries send their own version) and keeps its connection.
    let backend = Scripted::start(vec![("/old", http10_answer())]).await;
    let run = cutover_for(&backend).await;
    let mut conn = h1(run.proxy).await;
    for i in 0..2 {
        let r = get_ok(&mut conn, "/old").await;
        assert_eq!(
            r.version,
            Version::HTTP_11,
            "request {i}: cutover answered an HTTP/1.1 client with the backend's version"
        );
        assert_eq!(r.body, "old server\n");
    }
}

#[tokio::test]
async fn head_response_with_content_length_has_no_body_and_frees_the_connection() {
    // Proves: a HEAD answer's Content-Length reaches the client but no body is awaited, and both connections carry on.
    let head = raw_response(
        "HTTP/1.1 200 OK",
        &["Content-Length: 100", "Content-Type: text/plain"],
        b"",
    );
    let backend = Scripted::start(vec![("/doc", keep_open(head)), (SMALL, small_answer())]).await;
    let run = cutover_for(&backend).await;
    let mut conn = h1(run.proxy).await;
    let r = send(&mut conn, request(Method::HEAD, "/doc", b""))
        .await
        .expect("HEAD /doc answers");
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.headers
            .get("content-length")
            .and_then(|v| v.to_str().ok()),
        Some("100"),
        "headers: {:?}",
        r.headers
    );
    assert!(r.bytes.is_empty(), "HEAD answer with a body: {:?}", r.bytes);
    assert_eq!(get_ok(&mut conn, SMALL).await.body, "ok\n");
    assert!(backend.last().line.starts_with("GET "));
    assert_eq!(
        backend.accepts(),
        1,
        "the GET after the HEAD should reuse the upstream connection"
    );
}

#[tokio::test]
async fn no_content_and_not_modified_are_relayed_and_free_the_connection() {
    // Proves: 204 and 304 answers (the 304 with a Content-Length it must not be read by) come through without a body and the upstream connection is reused.
    let no_content = raw_response("HTTP/1.1 204 No Content", &["X-Kind: none"], b"");
    let not_modified = raw_response(
        "HTTP/1.1 304 Not Modified",
        &["ETag: \"v1\"", "Content-Length: 50"],
        b"",
    );
    let backend = Scripted::start(vec![
        ("/none", keep_open(no_content)),
        ("/cached", keep_open(not_modified)),
        (SMALL, small_answer()),
    ])
    .await;
    let run = cutover_for(&backend).await;
    let mut conn = h1(run.proxy).await;
    for _ in 0..2 {
        let r = send(&mut conn, request(Method::GET, "/none", b""))
            .await
            .expect("GET /none answers");
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        assert!(r.bytes.is_empty());
        assert_eq!(
            r.headers.get("x-kind").map(|v| v.as_bytes()),
            Some(&b"none"[..])
        );
        let r = send(&mut conn, request(Method::GET, "/cached", b""))
            .await
            .expect("GET /cached answers");
        assert_eq!(r.status, StatusCode::NOT_MODIFIED);
        assert!(r.bytes.is_empty());
        assert_eq!(
            r.headers.get("etag").map(|v| v.as_bytes()),
            Some(&b"\"v1\""[..])
        );
    }
    assert_eq!(get_ok(&mut conn, SMALL).await.body, "ok\n");
    assert_eq!(
        backend.accepts(),
        1,
        "answers without a body should leave the upstream connection reusable"
    );
}

#[tokio::test]
async fn early_hints_before_the_final_response_do_not_replace_it() {
    // Proves: a 103 Early Hints ahead of the final answer does not stop the client getting the final 200 and its body.
    let mut answer = raw_response(
        "HTTP/1.1 103 Early Hints",
        &["Link: </style.css>; rel=preload; as=style"],
        b"",
    );
    answer.extend(raw_response(
        "HTTP/1.1 200 OK",
        &["Content-Length: 13", "Content-Type: text/plain"],
        b"final answer\n",
    ));
    let backend =
        Scripted::start(vec![("/hints", keep_open(answer)), (SMALL, small_answer())]).await;
    let run = cutover_for(&backend).await;
    let mut conn = h1(run.proxy).await;
    assert_eq!(get_ok(&mut conn, "/hints").await.body, "final answer\n");
    assert_eq!(get_ok(&mut conn, SMALL).await.body, "ok\n");
}

#[tokio::test]
async fn garbage_instead_of_a_status_line_is_a_502_and_counted() {
    // Proves: a backend answer that is not HTTP becomes a 502 for the client and counts as a bad response.
    let backend = Scripted::start(vec![
        ("/garbage", keep_open(&b"NOT HTTP\r\n\r\n"[..])),
        (SMALL, small_answer()),
    ])
    .await;
    let run = cutover_for(&backend).await;
    let before = bad_responses(&run).await;
    let mut conn = h1(run.proxy).await;
    let r = send(&mut conn, request(Method::GET, "/garbage", b""))
        .await
        .expect("cutover answers GET /garbage itself");
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "body: {}", r.body);
    assert!(
        eventually(WAIT, || async { bad_responses(&run).await > before }).await,
        "{BAD_RESPONSE} stayed at {before}"
    );
    assert_eq!(get_ok(&mut h1(run.proxy).await, SMALL).await.body, "ok\n");
}

#[tokio::test]
async fn oversized_response_head_is_a_502_and_cutover_stays_up() {
    // Proves: a response head far past any sane limit (one 1 MiB header) becomes a 502, and the next request is served.
    let huge = "h".repeat(1024 * 1024);
    let big_header = format!("X-Huge: {huge}");
    let answer = raw_response(
        "HTTP/1.1 200 OK",
        &[big_header.as_str(), "Content-Length: 3"],
        b"ok\n",
    );
    let backend = Scripted::start(vec![
        ("/huge-head", keep_open(answer)),
        (SMALL, small_answer()),
    ])
    .await;
    let run = cutover_for(&backend).await;
    let mut conn = h1(run.proxy).await;
    let r = send(&mut conn, request(Method::GET, "/huge-head", b""))
        .await
        .expect("cutover answers GET /huge-head itself");
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "body: {}", r.body);
    assert_eq!(get_ok(&mut h1(run.proxy).await, SMALL).await.body, "ok\n");
}

#[tokio::test]
async fn truncated_body_is_not_passed_off_as_a_complete_response() {
    // Proves: when the backend closes 10 bytes into a 1000-byte body, the client sees a failed response, never a clean success; it counts as a bad response; cutover serves the next client.
    let truncated = raw_response(
        "HTTP/1.1 200 OK",
        &["Content-Length: 1000", "Content-Type: text/plain"],
        b"0123456789",
    );
    let backend = Scripted::start(vec![
        ("/truncated", then_close(truncated)),
        (SMALL, small_answer()),
    ])
    .await;
    let run = cutover_for(&backend).await;
    let before = bad_responses(&run).await;
    let mut conn = h1(run.proxy).await;
    match send(&mut conn, request(Method::GET, "/truncated", b"")).await {
        Err(e) => eprintln!("truncated body, as the client saw it: {e}"),
        Ok(r) => assert!(
            !r.status.is_success(),
            "the client got a clean {} with {} of 1000 body bytes",
            r.status,
            r.bytes.len()
        ),
    }
    assert!(
        eventually(WAIT, || async { bad_responses(&run).await > before }).await,
        "{BAD_RESPONSE} stayed at {before} after a truncated body"
    );
    assert_eq!(get_ok(&mut h1(run.proxy).await, SMALL).await.body, "ok\n");
}

#[tokio::test]
async fn one_mebibyte_bodies_arrive_byte_identical() {
    // Proves: a 1 MiB Content-Length body and a 1 MiB chunked body (chunks from 1 byte to 250 KB) reach the client unchanged.
    const MIB: usize = 1024 * 1024;
    let by_length = pattern(MIB, 1);
    let length_answer = raw_response(
        "HTTP/1.1 200 OK",
        &[
            &format!("Content-Length: {MIB}"),
            "Content-Type: application/octet-stream",
        ],
        &by_length,
    );
    let by_chunks = pattern(MIB, 2);
    let mut chunked_body = Vec::new();
    let sizes = [1usize, 4096, 65536, 7, 100_000, 3, 250_000, 16_384, 999];
    let (mut at, mut i) = (0, 0);
    while at < by_chunks.len() {
        let n = sizes[i % sizes.len()].min(by_chunks.len() - at);
        // Alternate upper- and lower-case hex sizes.
        let size = if i % 2 == 0 {
            format!("{n:X}")
        } else {
            format!("{n:x}")
        };
        chunked_body.extend_from_slice(size.as_bytes());
        chunked_body.extend_from_slice(b"\r\n");
        chunked_body.extend_from_slice(&by_chunks[at..at + n]);
        chunked_body.extend_from_slice(b"\r\n");
        at += n;
        i += 1;
    }
    chunked_body.extend_from_slice(b"0\r\n\r\n");
    let chunked_answer = raw_response(
        "HTTP/1.1 200 OK",
        &[
            "Transfer-Encoding: chunked",
            "Content-Type: application/octet-stream",
        ],
        &chunked_body,
    );
    let backend = Scripted::start(vec![
        ("/big-length", keep_open(length_answer)),
        ("/big-chunked", keep_open(chunked_answer)),
    ])
    .await;
    let run = cutover_for(&backend).await;
    let mut conn = h1(run.proxy).await;
    let r = get_ok(&mut conn, "/big-length").await;
    assert_same_bytes(&r.bytes, &by_length, "Content-Length body");
    let r = get_ok(&mut conn, "/big-chunked").await;
    assert_same_bytes(&r.bytes, &by_chunks, "chunked body");
}

#[tokio::test]
async fn http1_request_reaches_the_backend_in_origin_form_with_its_host() {
    // Proves: an HTTP/1.1 client's `GET /some/path?x=1` reaches the backend as `GET /some/path?x=1 HTTP/1.1` with the client's Host.
    let backend = Scripted::start(vec![("/some/path", small_answer())]).await;
    let run = cutover_for(&backend).await;
    let mut conn = h1(run.proxy).await;
    get_ok(&mut conn, "/some/path?x=1").await;
    assert_origin_form_with_host(&backend);
}

#[tokio::test]
async fn an_absolute_form_http1_request_reaches_the_backend_in_origin_form() {
    // Proves: `GET http://app.example.test/some/path?x=1 HTTP/1.1` (absolute
    // form, as a client talking to a proxy sends it) is rewritten to origin
    // form for the backend, its Host kept.
    let backend = Scripted::start(vec![("/some/path", small_answer())]).await;
    let run = cutover_for(&backend).await;
    let mut s = TcpStream::connect(run.proxy).await.expect("connect");
    s.write_all(
        format!("GET http://{HOST}/some/path?x=1 HTTP/1.1\r\nhost: {HOST}\r\n\r\n").as_bytes(),
    )
    .await
    .expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let answered = tokio::time::timeout(Duration::from_secs(5), async {
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        answered.is_ok(),
        "no answer: {}",
        String::from_utf8_lossy(&got)
    );
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    assert_origin_form_with_host(&backend);
}

/// The backend's last request was `GET /some/path?x=1 HTTP/1.1` with `Host: HOST`.
fn assert_origin_form_with_host(backend: &Scripted) {
    let seen = backend.last();
    assert_eq!(
        seen.line, "GET /some/path?x=1 HTTP/1.1",
        "headers: {:?}",
        seen.headers
    );
    assert_eq!(
        seen.header("host"),
        Some(HOST),
        "headers: {:?}",
        seen.headers
    );
}

#[tokio::test]
async fn http2_request_reaches_the_backend_in_origin_form_with_its_host() {
    // Proves: an HTTP/2 request for `http://app.example.test/some/path?x=1` reaches the HTTP/1.1 backend in origin form with `Host: app.example.test`.
    let backend = Scripted::start(vec![("/some/path", small_answer())]).await;
    let run = cutover_for(&backend).await;
    let mut conn = h2(run.proxy).await;
    let req = Request::builder()
        .uri(format!("http://{HOST}/some/path?x=1"))
        .version(Version::HTTP_2)
        .body(Full::new(Bytes::new()))
        .expect("valid request");
    let r = send(&mut conn, req).await.expect("HTTP/2 GET answers");
    assert_eq!(r.status, StatusCode::OK, "body: {}", r.body);
    assert_origin_form_with_host(&backend);
}

#[tokio::test]
async fn post_body_reaches_the_backend_intact() {
    // Proves: a small POST body with a Content-Length reaches the backend byte for byte and its answer comes back.
    const FORM: &[u8] = b"name=cutover&answer=42&blob=%00%FF\xF0\x9F\x9A\x80";
    let backend = Scripted::start(vec![(
        "/submit",
        keep_open(raw_response(
            "HTTP/1.1 201 Created",
            &["Content-Length: 7"],
            b"stored\n",
        )),
    )])
    .await;
    let run = cutover_for(&backend).await;
    let mut conn = h1(run.proxy).await;
    let mut req = request(Method::POST, "/submit", FORM);
    req.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/x-www-form-urlencoded"),
    );
    let r = send(&mut conn, req).await.expect("POST /submit answers");
    assert_eq!(
        (r.status, r.body.as_str()),
        (StatusCode::CREATED, "stored\n")
    );
    let seen = backend.last();
    assert!(
        seen.line.starts_with("POST "),
        "request line: {}",
        seen.line
    );
    assert_eq!(seen.body, FORM, "headers: {:?}", seen.headers);
}
