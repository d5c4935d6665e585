//! End-to-end: TLS termination. Certificates are made in the test (rcgen);
//! clients are rustls over real loopback sockets, hyper on top.

// Test code: a failed unwrap is a failed test (clippy.toml allows it in
// #[test] functions; this covers the helpers beside them).
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cutover_test_support::tls::{self, TestCa};
use cutover_test_support::*;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Two certificates (`a.test` and `*.b.test` with `b.test`) in `dir`; the
/// listener's `tls` table naming them, plus `extra` keys.
fn two_certs(ca: &TestCa, dir: &Path, extra: &str) -> String {
    let a = ca.leaf(&["a.test"]).write(dir, "a");
    let b = ca.leaf(&["b.test", "*.b.test"]).write(dir, "b");
    tls::listener_table(&[a, b], extra)
}

/// An HTTP/2 connection over `stream`, its task spawned.
async fn h2_over<S>(stream: S) -> hyper::client::conn::http2::SendRequest<Empty<Bytes>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    send
}

/// A harness whose main listener serves `two_certs` with `extra`.
async fn two_cert_harness(ca: &TestCa, dir: &Path, extra: &str) -> Running {
    Harness::new()
        .listener(&two_certs(ca, dir, extra))
        .start()
        .await
}

/// `cutover_tls_handshakes_total` of `h`'s main listener for `result`.
fn handshakes(h: &Running, result: &str) -> String {
    format!(
        r#"cutover_tls_handshakes_total{{listener="{}",result="{result}"}}"#,
        h.proxy
    )
}

async fn served(h: &Running, sni: Option<&str>) -> Vec<String> {
    let tls = tls::connect(h.proxy, tls::any_cert_config(&["http/1.1"]), sni)
        .await
        .unwrap();
    tls::served_names(&tls)
}

/// One HTTP/1.1 GET over `tls`; the response's status and `x-pool`, `x-seen-xfp`.
async fn get_over<S>(io: S, path: &str) -> (u16, String, String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header("host", "a.test")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let h = |n: &str| {
        resp.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    (resp.status().as_u16(), h("x-pool"), h("x-seen-xfp"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_certificate_is_chosen_by_sni_with_the_first_as_default() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test CA");
    let h = two_cert_harness(&ca, dir.path(), "").await;
    assert_eq!(served(&h, Some("a.test")).await, ["a.test"]);
    assert_eq!(served(&h, Some("b.test")).await, ["b.test", "*.b.test"]);
    assert_eq!(served(&h, Some("x.b.test")).await, ["b.test", "*.b.test"]);
    // Unknown names and no SNI at all get the default: the first.
    assert_eq!(served(&h, Some("c.test")).await, ["a.test"]);
    assert_eq!(served(&h, None).await, ["a.test"]);
    // A client that verifies gets through for a name the certificate covers.
    let verified = tls::connect(h.proxy, tls::client_config(&ca.pem(), &[]), Some("a.test"))
        .await
        .unwrap();
    let (status, pool, xfp) = get_over(verified, "/").await;
    assert_eq!(
        (status, pool.as_str(), xfp.as_str()),
        (200, "blue", "https")
    );
    assert_eq!(
        metric(h.admin, &handshakes(&h, "no_sni_match")).await,
        Some(1.0)
    );
    assert_eq!(metric(h.admin, &handshakes(&h, "ok")).await, Some(5.0));
    let expiry = format!(
        r#"cutover_tls_certificate_expiry_seconds{{listener="{}",name="a.test"}}"#,
        h.proxy
    );
    let at = metric(h.admin, &expiry).await.unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as f64;
    assert!(at > now, "expiry {at} is not in the future");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_certificate_names_the_one_for_clients_without_a_match() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test CA");
    let h = two_cert_harness(&ca, dir.path(), ", default_certificate = \"b.test\"").await;
    assert_eq!(served(&h, None).await, ["b.test", "*.b.test"]);
    assert_eq!(served(&h, Some("nope.test")).await, ["b.test", "*.b.test"]);
    assert_eq!(served(&h, Some("a.test")).await, ["a.test"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_is_negotiated_by_alpn_and_a_switch_applies_to_the_next_request_on_it() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test CA");
    let h = two_cert_harness(&ca, dir.path(), "").await;
    let config = tls::client_config(&ca.pem(), &["h2", "http/1.1"]);
    let stream = tls::connect(h.proxy, config, Some("a.test")).await.unwrap();
    assert_eq!(tls::alpn(&stream).as_deref(), Some("h2"));
    let mut send = h2_over(stream).await;
    let mut get = async || {
        let req = http::Request::get("https://a.test/")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.version(), http::Version::HTTP_2);
        let pool = resp.headers()["x-pool"].to_str().unwrap().to_string();
        let xfp = resp.headers()["x-seen-xfp"].to_str().unwrap().to_string();
        let _ = resp.into_body().collect().await;
        (pool, xfp)
    };
    assert_eq!(get().await, ("blue".to_string(), "https".to_string()));
    switch(h.admin, "green").await;
    assert_eq!(get().await, ("green".to_string(), "https".to_string()));
    // An HTTP/1.1-only client gets http/1.1.
    let config = tls::client_config(&ca.pem(), &["http/1.1"]);
    let stream = tls::connect(h.proxy, config, Some("a.test")).await.unwrap();
    assert_eq!(tls::alpn(&stream).as_deref(), Some("http/1.1"));
    assert_eq!(get_over(stream, "/").await.1, "green");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_garbage_and_stalled_handshakes_close_only_their_connection() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test CA");
    let h = two_cert_harness(&ca, dir.path(), ", handshake_timeout = \"300ms\"").await;
    // A handshake that never finishes, held open across the others.
    let mut stalled = raw::connect(h.proxy).await;
    stalled.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    let opened = Instant::now();
    // Plain HTTP: a short 400 that says why, then a close.
    let mut plain = raw::connect(h.proxy).await;
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .await
        .unwrap();
    let (got, closed) = raw::read_to_close(&mut plain, Duration::from_secs(3)).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.contains("TLS"), "{text}");
    assert!(closed);
    // Garbage: closed without a word.
    let mut junk = raw::connect(h.proxy).await;
    junk.write_all(&[0x00, 0xff, 0x13, 0x37]).await.unwrap();
    let (got, closed) = raw::read_to_close(&mut junk, Duration::from_secs(3)).await;
    assert!(got.is_empty() && closed, "garbage got {got:?}");
    // A good client meanwhile is served.
    let good = tls::connect(h.proxy, tls::client_config(&ca.pem(), &[]), Some("a.test"))
        .await
        .unwrap();
    assert_eq!(get_over(good, "/").await.0, 200);
    // The stalled one is closed at the handshake timeout.
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(3), stalled.read(&mut buf))
        .await
        .expect("the stalled handshake was not closed within 3 s")
        .unwrap_or(0);
    assert_eq!(n, 0, "the stalled handshake got bytes");
    let took = opened.elapsed();
    assert!(took >= Duration::from_millis(250), "closed after {took:?}");
    assert_eq!(metric(h.admin, &handshakes(&h, "not_tls")).await, Some(2.0));
    assert_eq!(metric(h.admin, &handshakes(&h, "timeout")).await, Some(1.0));
    assert_eq!(metric(h.admin, &handshakes(&h, "ok")).await, Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_listener_terminates_tls_then_proxies_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test CA");
    let h = Harness::new()
        .tcp()
        .listener(&two_certs(&ca, dir.path(), ""))
        .start()
        .await;
    let mut s = tls::connect(h.proxy, tls::client_config(&ca.pem(), &[]), Some("a.test"))
        .await
        .unwrap();
    // The TCP echo backend greets with its pool, then echoes.
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    while !got.ends_with(b"\n") {
        let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed before the greeting");
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, b"blue\n");
    s.write_all(b"ping\n").await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"ping\n");
}

/// `cutover check` on a config whose listener's `tls` names `cert`/`key`.
fn check(dir: &Path, cert: &str, key: &str) -> (bool, String) {
    let text = format!(
        r#"
[admin]
listen = "127.0.0.1:0"

[services.web]
split = {{ blue = 100 }}

[[services.web.listeners]]
listen = "127.0.0.1:0"

[[services.web.listeners.tls.certificates]]
cert = "{cert}"
key = "{key}"

[services.web.pools.blue]
backends = ["127.0.0.1:9"]
"#
    );
    let path = dir.join("cutover.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cutover"))
        .arg("check")
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_reports_missing_mismatched_and_expired_certificates_with_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test CA");
    ca.leaf(&["a.test"]).write(dir.path(), "a");
    ca.leaf(&["b.test"]).write(dir.path(), "b");
    ca.expired_leaf(&["old.test"]).write(dir.path(), "old");
    // Relative paths are relative to the config file.
    let (ok, err) = check(dir.path(), "a.pem", "a.key");
    assert!(ok, "{err}");
    let (ok, err) = check(dir.path(), "missing.pem", "a.key");
    assert!(!ok);
    assert!(
        err.contains(":12: `services.web.listeners[0].tls.certificates[0].cert`")
            && err.contains("missing.pem"),
        "{err}"
    );
    let (ok, err) = check(dir.path(), "a.pem", "b.key");
    assert!(!ok);
    assert!(
        err.contains(":13: `services.web.listeners[0].tls.certificates[0].key`")
            && err.contains("does not match"),
        "{err}"
    );
    // Expired: a warning, still valid.
    let (ok, err) = check(dir.path(), "old.pem", "old.key");
    assert!(ok, "{err}");
    assert!(err.contains("warning:") && err.contains("expired"), "{err}");
}

/// Replaces `stem.pem` and `stem.key` in `dir` by writing beside and
/// renaming, as certbot and most tools do.
fn replace(dir: &Path, stem: &str, cert_pem: &str, key_pem: &str) {
    for (ext, text) in [("pem", cert_pem), ("key", key_pem)] {
        tls::replace_file(dir, &format!("{stem}.{ext}"), text);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_without_a_restart_and_a_bad_pair_keeps_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test CA");
    let h = tls::a_test_harness(&ca, dir.path()).await;
    // A keep-alive TLS connection opened before the rotation.
    let config = tls::client_config(&ca.pem(), &["h2"]);
    let stream = tls::connect(h.proxy, config, Some("a.test")).await.unwrap();
    let mut send = h2_over(stream).await;
    let mut get = async || {
        let req = http::Request::get("https://a.test/")
            .body(Empty::<Bytes>::new())
            .unwrap();
        send.send_request(req).await.map(|r| r.status().as_u16())
    };
    assert_eq!(get().await.unwrap(), 200);

    let rotated = ca.leaf(&["a.test", "rotated.test"]);
    replace(dir.path(), "a", &rotated.cert_pem, &rotated.key_pem);
    let ok = eventually(Duration::from_secs(2), || async {
        served(&h, Some("a.test")).await == ["a.test", "rotated.test"]
    })
    .await;
    assert!(
        ok,
        "new connections did not get the new certificate within 2 s"
    );
    // The connection from before is untouched.
    assert_eq!(get().await.unwrap(), 200);

    // A key that does not match its certificate: refused, the rotated
    // certificate stays, status and metrics say why.
    let other = ca.leaf(&["bad.test"]);
    replace(dir.path(), "a", &other.cert_pem, &rotated.key_pem);
    let errors = format!(
        r#"cutover_tls_certificate_reloads_total{{listener="{}",result="error"}}"#,
        h.proxy
    );
    let ok = eventually(Duration::from_secs(2), || async {
        metric(h.admin, &errors).await >= Some(1.0)
    })
    .await;
    assert!(ok, "the bad pair was not counted");
    let (_, status) = h.api("GET", "/v1/status", None).await;
    let tls_status = &status["tls"][h.proxy.to_string()];
    assert!(
        tls_status["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("does not match")),
        "{tls_status}"
    );
    assert_eq!(
        tls_status["certificates"][0]["names"],
        serde_json::json!(["a.test", "rotated.test"])
    );
    assert!(
        holds_for(Duration::from_millis(500), || async {
            served(&h, Some("a.test")).await == ["a.test", "rotated.test"]
        })
        .await,
        "the refused pair replaced the good one"
    );
    assert_eq!(get().await.unwrap(), 200);
}

/// A harness whose blue pool is one TLS backend at `addr`, with `tls` as
/// the pool's table and `protocol`.
async fn tls_pool(addr: std::net::SocketAddr, tls: &str, protocol: &str) -> Running {
    Harness::new()
        .backends(&format!("[\"{addr}\"]"), "[\"127.0.0.1:9\"]")
        .service("error_detail = \"full\"")
        .pools(&format!("protocol = \"{protocol}\"\ntls = {tls}"))
        .start()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_with_tls_reaches_its_backend_verified_by_a_test_ca_over_http1_and_h2() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("backend CA");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let backend = tls::backend(&ca.leaf(&["backend.test"]), "blue").await;
    let table = format!(
        "{{ ca_file = {:?}, server_name = \"backend.test\" }}",
        ca_file.display().to_string()
    );
    for (protocol, version) in [("http1", "HTTP/1.1"), ("h2", "HTTP/2.0")] {
        let h = tls_pool(backend, &table, protocol).await;
        let mut conn = Conn::h1(h.proxy).await;
        for _ in 0..3 {
            let a = conn.get("/", &[]).await.unwrap();
            assert_eq!(a.status, 200, "{protocol}: {}", a.body);
            assert_eq!(a.header("x-pool"), Some("blue"));
            assert_eq!(a.header("x-seen-version"), Some(version), "{protocol}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_certificate_from_another_ca_is_a_502_naming_the_verification_error() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("trusted CA");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let stranger = TestCa::new("another CA");
    let backend = tls::backend(&stranger.leaf(&["backend.test"]), "blue").await;
    let table = format!(
        "{{ ca_file = {:?}, server_name = \"backend.test\" }}",
        ca_file.display().to_string()
    );
    let h = tls_pool(backend, &table, "http1").await;
    let a = Conn::h1(h.proxy).await.get("/", &[]).await.unwrap();
    assert_eq!(a.status, 502, "{}", a.body);
    assert!(
        a.body.contains("TLS handshake failed") && a.body.contains("UnknownIssuer"),
        "{}",
        a.body
    );
    // The wrong name fails too, even from the trusted CA.
    let wrong_name = tls::backend(&ca.leaf(&["other.test"]), "blue").await;
    let h = tls_pool(wrong_name, &table, "http1").await;
    let a = Conn::h1(h.proxy).await.get("/", &[]).await.unwrap();
    assert_eq!(a.status, 502, "{}", a.body);
    assert!(
        a.body
            .contains("certificate not valid for name \"backend.test\""),
        "{}",
        a.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returning_client_resumes_its_session_on_tls13_and_tls12() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test CA");
    let h = two_cert_harness(&ca, dir.path(), "").await;
    for (version, config) in [
        ("TLS 1.3", tls::client_config(&ca.pem(), &[])),
        ("TLS 1.2", tls::client_config_tls12(&ca.pem())),
    ] {
        // The first connection is a full handshake; a request read to its
        // end makes sure the client has taken the server's ticket.
        let first = tls::connect(h.proxy, config.clone(), Some("a.test"))
            .await
            .unwrap();
        assert!(
            !tls::resumed(&first),
            "{version}: the first handshake resumed"
        );
        assert_eq!(get_over(first, "/").await.0, 200);
        let again = tls::connect(h.proxy, config, Some("a.test")).await.unwrap();
        assert!(
            tls::resumed(&again),
            "{version}: the second handshake was a full one"
        );
        assert_eq!(get_over(again, "/").await.0, 200, "{version}");
    }
    // One resumption per version, counted for the operator.
    let resumed = format!(
        r#"cutover_tls_resumed_handshakes_total{{listener="{}"}}"#,
        h.proxy
    );
    assert_eq!(metric(h.admin, &resumed).await, Some(2.0));
}
