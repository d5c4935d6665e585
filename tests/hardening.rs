//! End-to-end: what a client may not learn or do through cutover (issue
//! 16, items 8 to 13): secrets kept from backends, the admin API closed to
//! cross-site requests, short error bodies, upgrades limited, request
//! heads checked, forwarded headers cutover's own. Real sockets, the
//! in-process app, bounded waits.

// Test code: a failed unwrap is a failed test (clippy.toml allows it in
// #[test] functions; this covers the helpers beside them).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use cutover_test_support::backend::scripted::{keep_open, raw_response, Canned, Scripted};
use cutover_test_support::backend::DownPort;
use cutover_test_support::ws::{Echo, Ws};
use cutover_test_support::*;
use http::StatusCode;

/// The longest any single network step of these tests may take.
const WAIT: Duration = Duration::from_secs(10);

fn ok_answer() -> Canned {
    keep_open(raw_response(
        "HTTP/1.1 200 OK",
        &["Content-Length: 3", "Content-Type: text/plain"],
        b"ok\n",
    ))
}

/// A scripted backend answering `/` with 200 `ok`, and cutover in front of
/// it (both pools) with `service` added to the service's table.
async fn scripted(service: &str) -> (Scripted, Running) {
    let backend = Scripted::start(vec![("/", ok_answer())]).await;
    let list = backend.toml_list();
    let run = tokio::time::timeout(
        WAIT,
        Harness::new()
            .blue(0)
            .green(0)
            .backends(&list, &list)
            .service(service)
            .start(),
    )
    .await
    .expect("cutover starts");
    (backend, run)
}

// ---------------------------------------------------------------------------
// 8. The override token
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_override_token_and_its_header_never_reach_a_backend() {
    let (backend, h) =
        scripted("override_header = \"x-cutover-pool\"\noverride_token = \"s3cret\"").await;
    for headers in [
        // The right token: routed by the header.
        &[("x-cutover-pool", "green"), ("x-cutover-token", "s3cret")][..],
        // A wrong one: the header is ignored, and neither goes on.
        &[("x-cutover-pool", "green"), ("x-cutover-token", "guess")][..],
        // A token alone.
        &[("x-cutover-token", "s3cret")][..],
    ] {
        let a = get_once(h.proxy, "/", headers).await.unwrap();
        assert_eq!(a.status, StatusCode::OK, "{headers:?}: {}", a.body);
        let seen = backend.last();
        assert_eq!(seen.header("x-cutover-token"), None, "{seen:?}");
        assert_eq!(seen.header("x-cutover-pool"), None, "{seen:?}");
    }
    // Over HTTP/2 too.
    let mut c = Conn::h2(h.proxy).await;
    let a = c
        .get(
            "/",
            &[("x-cutover-pool", "blue"), ("x-cutover-token", "s3cret")],
        )
        .await
        .unwrap();
    assert_eq!(a.status, StatusCode::OK);
    let seen = backend.last();
    assert_eq!(seen.header("x-cutover-token"), None, "{seen:?}");
    assert_eq!(seen.header("x-cutover-pool"), None, "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_the_override_header_still_goes_on_but_a_stray_token_does_not() {
    let (backend, h) = scripted("override_header = \"x-cutover-pool\"").await;
    let a = get_once(
        h.proxy,
        "/",
        &[("x-cutover-pool", "blue"), ("x-cutover-token", "anything")],
    )
    .await
    .unwrap();
    assert_eq!(a.status, StatusCode::OK);
    let seen = backend.last();
    assert_eq!(seen.header("x-cutover-pool"), Some("blue"), "{seen:?}");
    assert_eq!(seen.header("x-cutover-token"), None, "{seen:?}");
}

// ---------------------------------------------------------------------------
// 13. Forwarded headers
// ---------------------------------------------------------------------------

/// What the backend saw of the forwarded headers for one request with
/// `headers`.
async fn forwarded_seen(h: &Running, backend: &Scripted, headers: &[(&str, &str)]) -> [String; 3] {
    let a = get_once(h.proxy, "/", headers).await.unwrap();
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let seen = backend.last();
    let all = |name: &str| {
        let v: Vec<&str> = seen
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect();
        v.join(" | ")
    };
    [
        all("x-forwarded-for"),
        all("x-forwarded-proto"),
        all("x-forwarded-host"),
    ]
}

const SPOOFED: &[(&str, &str)] = &[
    ("x-forwarded-for", "10.9.8.7"),
    ("x-forwarded-proto", "https"),
    ("x-forwarded-host", "evil.example"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cannot_choose_the_address_a_backend_sees_by_default() {
    let (backend, h) = scripted("").await;
    let [xff, xfp, xfh] = forwarded_seen(&h, &backend, SPOOFED).await;
    assert_eq!(xff, "127.0.0.1");
    assert_eq!(xfp, "http");
    assert_eq!(xfh, "www.example.test");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusting_listener_appends_to_the_list_but_keeps_proto_and_host_its_own() {
    let backend = Scripted::start(vec![("/", ok_answer())]).await;
    let list = backend.toml_list();
    let h = Harness::new()
        .blue(0)
        .green(0)
        .backends(&list, &list)
        .listener("trust_forwarded = true")
        .start()
        .await;
    let [xff, xfp, xfh] = forwarded_seen(&h, &backend, SPOOFED).await;
    assert_eq!(xff, "10.9.8.7, 127.0.0.1");
    assert_eq!(xfp, "http");
    assert_eq!(xfh, "www.example.test");
    // The preview listener does not trust it.
    let a = get_once(h.preview, "/", SPOOFED).await.unwrap();
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(backend.last().header("x-forwarded-for"), Some("127.0.0.1"));
}

// ---------------------------------------------------------------------------
// 9. The admin API without a token
// ---------------------------------------------------------------------------

/// An admin call with exactly these headers (no others added but what
/// hyper's client adds: none for HTTP/1.1 but `content-length`).
async fn admin_raw(
    h: &Running,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (StatusCode, String) {
    let mut b = http::Request::builder().method(method).uri(path);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.to_string(),
        )))
        .unwrap();
    let a = Conn::h1(h.admin).await.send(req).await.unwrap();
    (a.status, a.body)
}

const SWITCH: &str = "/v1/services/web/switch";
const TO_GREEN: &str = r#"{"to":"green"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_page_cannot_switch_traffic_through_a_token_less_admin_api() {
    let h = Harness::new().start().await;
    let own = h.admin.to_string();
    let localhost = format!("localhost:{}", h.admin.port());
    // What `fetch(url, {method: "POST", body})` sends: a simple request,
    // text/plain, no preflight.
    let (s, body) = admin_raw(
        &h,
        "POST",
        SWITCH,
        &[
            ("host", &own),
            ("origin", "http://evil.example"),
            ("content-type", "text/plain;charset=UTF-8"),
        ],
        TO_GREEN,
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("evil.example"), "{body}");
    // The same page's own origin, from its own host, text/plain: 415.
    let (s, body) = admin_raw(
        &h,
        "POST",
        SWITCH,
        &[("host", &own), ("content-type", "text/plain")],
        TO_GREEN,
    )
    .await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{body}");
    assert!(body.contains("application/json"), "{body}");
    // No Content-Type at all, a rollback without a body.
    let (s, _) = admin_raw(
        &h,
        "POST",
        "/v1/services/web/rollback",
        &[("host", &own)],
        "",
    )
    .await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // DNS rebinding: the page's own name, now resolving to 127.0.0.1.
    let rebound = format!("evil.example:{}", h.admin.port());
    for (method, path, ct) in [
        ("POST", SWITCH, "application/json"),
        ("GET", "/v1/status", ""),
        ("GET", "/metrics", ""),
    ] {
        let mut headers = vec![("host", rebound.as_str())];
        if !ct.is_empty() {
            headers.push(("content-type", ct));
        }
        let (s, body) = admin_raw(&h, method, path, &headers, TO_GREEN).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{method} {path}: {body}");
        assert!(!body.contains("generation"), "{body}");
    }
    assert_eq!(generation(h.admin).await, 1, "nothing changed");
    // Health probes answer whatever the Host.
    let (s, _) = admin_raw(&h, "GET", "/healthz", &[("host", &rebound)], "").await;
    assert_eq!(s, StatusCode::OK);
    // Refusals are counted.
    let m = Metrics::scrape(h.admin).await.unwrap();
    let forbidden = m.value(
        "cutover_admin_requests_total",
        &[("route", "forbidden"), ("code", "403")],
    );
    assert_eq!(forbidden, Some(4.0), "{}", m.text());
    let unsupported = m.value(
        "cutover_admin_requests_total",
        &[("route", "switch"), ("code", "415")],
    );
    assert_eq!(unsupported, Some(1.0));

    // A JSON change for a loopback name, from a same-origin page or curl.
    for (host, origin) in [
        (own.as_str(), Some(format!("http://{own}"))),
        (localhost.as_str(), None),
    ] {
        let mut headers = vec![
            ("host", host),
            ("content-type", "application/json; charset=utf-8"),
        ];
        if let Some(o) = &origin {
            headers.push(("origin", o));
        }
        let (s, body) = admin_raw(&h, "POST", SWITCH, &headers, TO_GREEN).await;
        assert_eq!(s, StatusCode::OK, "{host} {origin:?}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_any_host_may_call_but_changes_still_need_json() {
    let h = Harness::new().admin_token("t0k3n").start().await;
    let (s, body) = admin_raw(
        &h,
        "GET",
        "/v1/status",
        &[
            ("host", "cutover.internal:9901"),
            ("authorization", "Bearer t0k3n"),
        ],
        "",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (s, _) = admin_raw(
        &h,
        "POST",
        SWITCH,
        &[
            ("host", "cutover.internal:9901"),
            ("authorization", "Bearer t0k3n"),
        ],
        TO_GREEN,
    )
    .await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

// ---------------------------------------------------------------------------
// 11. Upgrades
// ---------------------------------------------------------------------------

/// Whether `out` holds a whole response head and its `content-length`
/// bytes of body.
fn whole(out: &[u8]) -> bool {
    let text = String::from_utf8_lossy(out);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    raw::header_value(head, "content-length")
        .and_then(|n| n.parse::<usize>().ok())
        .is_some_and(|n| body.len() >= n)
}

/// What comes back for `head` (a whole request head) sent on a raw socket,
/// read until the first response is whole or the socket closes.
async fn raw_request(h: &Running, head: &str) -> String {
    use tokio::io::AsyncWriteExt;
    let mut s = raw::connect(h.proxy).await;
    s.write_all(head.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        let got = raw::read_some(&mut s, Duration::from_millis(500)).await;
        if got.is_empty() && !out.is_empty() {
            break;
        }
        out.extend_from_slice(&got);
        if whole(&out) {
            break;
        }
    }
    String::from_utf8_lossy(&out).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2c_upgrade_is_answered_as_a_plain_request() {
    let (backend, h) = scripted("").await;
    let resp = raw_request(
        &h,
        "GET / HTTP/1.1\r\nHost: www.example.test\r\nConnection: Upgrade, HTTP2-Settings\r\n\
         Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let seen = backend.last();
    for h in ["upgrade", "http2-settings", "connection"] {
        assert_eq!(seen.header(h), None, "{h} went upstream: {seen:?}");
    }
    // The client's connection stays HTTP/1.1 and usable.
    assert!(!resp.contains("101"), "{resp}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_allowed_protocols_are_upgraded_to() {
    let (backend, h) = scripted("").await;
    let head =
        "GET / HTTP/1.1\r\nHost: www.example.test\r\nConnection: upgrade\r\nUpgrade: foo\r\n\r\n";
    let resp = raw_request(&h, head).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert_eq!(backend.last().header("upgrade"), None);
    // Allowed: the backend is asked to switch (and may decline).
    let (backend, h) = scripted("allowed_upgrades = [\"websocket\", \"foo\"]").await;
    let resp = raw_request(&h, head).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert_eq!(backend.last().header("upgrade"), Some("foo"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_are_tunnelled_by_default_and_refused_when_not_allowed() {
    let h = Harness::new().start().await;
    let mut ws = Ws::connect(h.proxy).await;
    assert!(matches!(ws.echo("hi").await, Echo::Text(t) if t.contains("hi")));
    ws.close().await;
    let h = Harness::new()
        .service("allowed_upgrades = []")
        .start()
        .await;
    let a = get_once(
        h.proxy,
        "/",
        &[
            ("connection", "upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ],
    )
    .await
    .unwrap();
    assert_eq!(a.status, StatusCode::OK, "answered as a plain GET");
}

// ---------------------------------------------------------------------------
// 12. Request heads
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_with_both_lengths_is_answered_and_its_connection_closed() {
    use tokio::io::AsyncWriteExt;
    let (backend, h) = scripted("").await;
    // A smuggling attempt: a front tier that read the Content-Length would
    // take the rest as the body; one that read the chunks would see a
    // second request. hyper's server reads the chunks, drops the length,
    // and closes the connection after the answer (RFC 9112 6.1).
    let mut s = raw::connect(h.proxy).await;
    s.write_all(
        b"POST / HTTP/1.1\r\nHost: www.example.test\r\nContent-Length: 40\r\n\
          Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
          GET /smuggled HTTP/1.1\r\nHost: www.example.test\r\n\r\n",
    )
    .await
    .unwrap();
    let (out, closed) = raw::read_to_close(&mut s, WAIT).await;
    let out = String::from_utf8_lossy(&out);
    assert!(closed, "the connection stays open: {out}");
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert_eq!(out.matches("HTTP/1.1 ").count(), 1, "{out}");
    let seen = backend.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].body, b"abc");
    assert_eq!(seen[0].header("content-length"), None, "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http11_needs_exactly_one_host() {
    let (backend, h) = scripted("").await;
    for head in [
        "GET / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n",
        "GET / HTTP/1.0\r\nHost: a.example\r\nHost: b.example\r\n\r\n",
    ] {
        let resp = raw_request(&h, head).await;
        assert!(
            resp.starts_with("HTTP/1.") && resp[8..].starts_with(" 400"),
            "{head:?}: {resp}"
        );
        assert!(resp.contains("Host"), "{resp}");
    }
    assert!(backend.seen().is_empty());
    // HTTP/1.0 may leave it out: the backend gets its own address.
    let resp = raw_request(&h, "GET / HTTP/1.0\r\n\r\n").await;
    assert!(
        resp.starts_with("HTTP/1.") && resp[8..].starts_with(" 200"),
        "{resp}"
    );
    assert_eq!(
        backend.last().header("host"),
        Some(backend.addr.to_string().as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absolute_form_target_names_the_host() {
    let (backend, h) = scripted("").await;
    let resp = raw_request(
        &h,
        "GET http://real.example:8080/ HTTP/1.1\r\nHost: other.example\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let seen = backend.last();
    assert_eq!(seen.line, "GET / HTTP/1.1");
    assert_eq!(seen.header("host"), Some("real.example:8080"), "{seen:?}");
    assert_eq!(seen.header("x-forwarded-host"), Some("real.example:8080"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_cookies_reach_an_http11_backend_as_one_field() {
    let (backend, h) = scripted("").await;
    let mut c = Conn::h2(h.proxy).await;
    let a = c
        .get(
            "/",
            &[("cookie", "a=1"), ("cookie", "b=2"), ("cookie", "c=3")],
        )
        .await
        .unwrap();
    assert_eq!(a.status, StatusCode::OK);
    let seen = backend.last();
    let cookies: Vec<&str> = seen
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("cookie"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(cookies, ["a=1; b=2; c=3"]);
}

// ---------------------------------------------------------------------------
// 10. Error bodies
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_bodies_name_no_backend_by_default_and_everything_when_full() {
    let down = DownPort::new();
    let dead = down.addr.to_string();
    let list = format!("[\"{dead}\"]");
    let start = |extra: &'static str| {
        Harness::new()
            .blue(0)
            .green(0)
            .backends(&list, &list)
            .service(extra)
            .start()
    };
    let h = start("").await;
    let a = get_once(h.proxy, "/", &[]).await.unwrap();
    assert_eq!(a.status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        a.body,
        "502 Bad Gateway: the backend refused or failed the connection\n"
    );
    assert!(!a.body.contains(&dead) && !a.body.contains("127.0.0.1"));
    let h = start("error_detail = \"full\"").await;
    let a = get_once(h.proxy, "/", &[]).await.unwrap();
    assert_eq!(a.status, StatusCode::BAD_GATEWAY);
    assert!(
        a.body.contains(&dead) && a.body.contains("pool blue"),
        "{}",
        a.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_and_a_down_pool_say_so_without_addresses() {
    let h = Harness::new()
        .service("timeouts = { response_header = \"300ms\" }")
        .start()
        .await;
    let a = get_once(h.proxy, "/slow?ms=5000", &[]).await.unwrap();
    assert_eq!(a.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(
        a.body,
        "504 Gateway Timeout: the backend did not answer in time\n"
    );
    // Every green backend down: the 503 names the pool, not its backends.
    let h = Harness::new()
        .service(r#"health_check = { path = "/health", interval = "100ms", timeout = "50ms", healthy_threshold = 1, unhealthy_threshold = 1 }"#)
        .start()
        .await;
    let green = h.backends.iter().find(|b| b.pool == "green").unwrap();
    green.set_health(500);
    assert!(
        eventually(WAIT, || async {
            get_once(h.preview, "/", &[])
                .await
                .is_ok_and(|a| a.status == StatusCode::SERVICE_UNAVAILABLE)
        })
        .await,
        "green never went down"
    );
    let a = get_once(h.preview, "/", &[]).await.unwrap();
    assert_eq!(
        a.body,
        "503 Service Unavailable: every backend of pool green is down\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_override_pool_is_not_told_the_pools() {
    let h = Harness::new()
        .service("override_header = \"x-cutover-pool\"")
        .start()
        .await;
    let a = get_once(h.proxy, "/", &[("x-cutover-pool", "purple")])
        .await
        .unwrap();
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.body.contains("purple"), "{}", a.body);
    assert!(
        !a.body.contains("blue") && !a.body.contains("green"),
        "{}",
        a.body
    );
}
