//! End-to-end: passive outlier ejection over real sockets, without active
//! checks unless a test says so. A backend that refuses connections is
//! ejected after `consecutive_failures` (status, metrics, no more traffic),
//! tried again once its ejection is over and ejected again for twice as
//! long; never more than `max_ejected_percent` of a pool is ejected, and a
//! pool's only backend never is. 5xx answers count only with
//! `count_5xx = true`, and a passing active check lifts an ejection.
//!
//! Until retries land, a request sent to the refusing backend is a 502 to
//! its client: the tests assert on status, metrics and which backend gets
//! traffic, not on those 502s.

// Test code: a failed unwrap is a failed test (clippy.toml allows it in
// #[test] functions; this covers the helpers beside them).
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use cutover_test_support::backend::DownPort;
use cutover_test_support::*;
use http::StatusCode;
use serde_json::Value;

/// `pool`'s entry in `/v1/status`.
async fn pool_status(h: &Running, pool: &str) -> Value {
    let (s, v) = h.api("GET", "/v1/status", None).await;
    assert_eq!(s, StatusCode::OK);
    v["services"][0]["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == pool)
        .cloned()
        .unwrap_or_else(|| panic!("pool {pool} in {v}"))
}

/// A backend's entry in `/v1/status`.
async fn backend_status(h: &Running, pool: &str, addr: SocketAddr) -> Value {
    let p = pool_status(h, pool).await;
    p["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["addr"] == addr.to_string().as_str())
        .cloned()
        .unwrap_or_else(|| panic!("backend {addr} in {p}"))
}

/// How many of `pool`'s backends status shows ejected.
async fn ejected_count(h: &Running, pool: &str) -> usize {
    let p = pool_status(h, pool).await;
    let list = p["backends"].as_array().unwrap();
    list.iter().filter(|b| b["state"] == "ejected").count()
}

async fn metrics(h: &Running) -> Metrics {
    Metrics::scrape(h.admin).await.unwrap()
}

async fn ejections(h: &Running, pool: &str) -> f64 {
    let m = metrics(h).await;
    let labels = [("service", "web"), ("pool", pool)];
    m.value("cutover_ejections_total", &labels).unwrap_or(-1.0)
}

/// Attempts of `pool` that a backend refused (failed or retried).
async fn refused(h: &Running, pool: &str) -> f64 {
    let m = metrics(h).await;
    let errors = [
        ("service", "web"),
        ("pool", pool),
        ("source", "backend"),
        ("cause", "connect"),
    ];
    let retried = [
        ("service", "web"),
        ("pool", pool),
        ("reason", "connect_failed"),
    ];
    // A refused connect is a 502 when no other backend could take the
    // request, else a retry on another one: either way it was tried.
    m.value("cutover_upstream_errors_total", &errors)
        .unwrap_or(0.0)
        + m.value("cutover_retries_total", &retried).unwrap_or(0.0)
}

/// Seconds from `since` to `until`, both RFC 3339 UTC with milliseconds
/// (`2026-11-29T21:00:01.250Z`), less than a day apart.
fn span(since: &str, until: &str) -> f64 {
    let secs = |t: &str| {
        let time = t.split('T').nth(1).unwrap().trim_end_matches('Z');
        let p: Vec<f64> = time.split(':').map(|x| x.parse().unwrap()).collect();
        p[0] * 3600.0 + p[1] * 60.0 + p[2]
    };
    (secs(until) - secs(since)).rem_euclid(86_400.0)
}

/// `n` one-connection GETs of `path` (each connection gets a new ticket
/// and a new pick), whatever they answer.
async fn send(addr: SocketAddr, path: &str, n: usize) {
    for _ in 0..n {
        let _ = get_once(addr, path, &[]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_backend_is_ejected_after_its_streak_and_tried_again_after_the_cooldown() {
    let live = TestBackend::start("blue").await;
    let down = DownPort::new();
    let green = TestBackend::start("green").await;
    let h = Harness::new()
        .blue(0)
        .green(0)
        .backends(
            &format!(r#"["{}", "{}"]"#, live.addr, down.addr),
            &green.toml_list(),
        )
        .service(
            r#"outlier = { consecutive_failures = 3, base_ejection = "2s", max_ejection = "10s" }"#,
        )
        .start()
        .await;
    let b = backend_status(&h, "blue", down.addr).await;
    assert_eq!(b["state"], "up", "{b}");
    assert_eq!(ejections(&h, "blue").await, 0.0);

    // Traffic: about half of it finds the refusing backend.
    assert!(
        eventually(Duration::from_secs(5), || async {
            send(h.proxy, "/", 2).await;
            backend_status(&h, "blue", down.addr).await["state"] == "ejected"
        })
        .await,
        "the refusing backend was never ejected"
    );
    let b = backend_status(&h, "blue", down.addr).await;
    let reason = b["reason"].as_str().unwrap();
    assert!(
        reason.ends_with(" consecutive failures: connect refused"),
        "{b}"
    );
    let streak: u32 = reason.split(' ').next().unwrap().parse().unwrap();
    assert!(streak >= 3, "{b}");
    let first = span(b["since"].as_str().unwrap(), b["until"].as_str().unwrap());
    assert!((first - 2.0).abs() < 0.01, "base_ejection: {first}s: {b}");
    assert_eq!(pool_status(&h, "blue").await["available"], 1);
    assert_eq!(ejections(&h, "blue").await, 1.0);
    let up = metrics(&h).await.value(
        "cutover_backend_up",
        &[
            ("service", "web"),
            ("pool", "blue"),
            ("backend", &down.addr.to_string()),
        ],
    );
    assert_eq!(up, Some(0.0), "backend_up shows availability");
    // A health change, not an operator change: the generation stays.
    assert_eq!(generation(h.admin).await, 1);

    // While it is ejected, every request goes to the live backend and
    // none finds the refusing one.
    let refused_before = refused(&h, "blue").await;
    let served_before = live.requests.load(Ordering::Relaxed);
    for _ in 0..20 {
        let a = get_once(h.proxy, "/", &[]).await.unwrap();
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert_eq!(a.header("x-backend"), Some(live.addr.to_string().as_str()));
    }
    let still = backend_status(&h, "blue", down.addr).await;
    assert_eq!(still["since"], b["since"], "the same ejection all along");
    assert_eq!(refused(&h, "blue").await, refused_before);
    assert_eq!(live.requests.load(Ordering::Relaxed), served_before + 20);

    // After the cooldown it gets requests again, fails again and is
    // ejected again, for twice as long.
    assert!(
        eventually(Duration::from_secs(10), || async {
            send(h.proxy, "/", 2).await;
            refused(&h, "blue").await > refused_before
        })
        .await,
        "the ejected backend was never tried again"
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            send(h.proxy, "/", 2).await;
            ejections(&h, "blue").await == 2.0
                && backend_status(&h, "blue", down.addr).await["state"] == "ejected"
        })
        .await,
        "the backend was not ejected a second time"
    );
    let b = backend_status(&h, "blue", down.addr).await;
    let second = span(b["since"].as_str().unwrap(), b["until"].as_str().unwrap());
    assert!((second - 4.0).abs() < 0.01, "doubled: {second}s: {b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_more_than_max_ejected_percent_of_a_pool_and_never_a_lone_backend() {
    let live = TestBackend::start("blue").await;
    let dead = [DownPort::new(), DownPort::new(), DownPort::new()];
    let lone = DownPort::new();
    let h = Harness::new()
        .blue(0)
        .green(0)
        .backends(
            &format!(
                r#"["{}", "{}", "{}", "{}"]"#,
                live.addr, dead[0].addr, dead[1].addr, dead[2].addr
            ),
            &format!(r#"["{}"]"#, lone.addr),
        )
        .service(r#"outlier = { consecutive_failures = 2, base_ejection = "1m", max_ejected_percent = 50 }"#)
        .start()
        .await;

    // Four backends at 50%: two ejected at most, whatever the traffic.
    assert!(
        eventually(Duration::from_secs(5), || async {
            send(h.proxy, "/", 4).await;
            ejected_count(&h, "blue").await == 2
        })
        .await,
        "two of the three refusing backends were never ejected"
    );
    let refused_before = refused(&h, "blue").await;
    assert!(
        holds_for(Duration::from_millis(600), || async {
            send(h.proxy, "/", 5).await;
            ejected_count(&h, "blue").await == 2
        })
        .await,
        "more than max_ejected_percent of the pool was ejected"
    );
    assert_eq!(ejections(&h, "blue").await, 2.0);
    let p = pool_status(&h, "blue").await;
    assert_eq!(p["available"], 2, "the live one and the third: {p}");
    assert_eq!(p["ejections_waived"], false, "{p}");
    // The third refusing backend still gets its share, and its streaks.
    assert!(refused(&h, "blue").await > refused_before);

    // A pool's only backend is never ejected: the preview listener's
    // green keeps answering 502s naming it, not 503s.
    for _ in 0..6 {
        let a = get_once(h.preview, "/", &[]).await.unwrap();
        assert_eq!(a.status, StatusCode::BAD_GATEWAY, "{}", a.body);
    }
    assert!(
        holds_for(Duration::from_millis(300), || async {
            backend_status(&h, "green", lone.addr).await["state"] == "up"
        })
        .await,
        "the only backend of green was ejected"
    );
    assert_eq!(ejections(&h, "green").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_count_5xx_answers_eject_and_a_passing_active_check_lifts_it() {
    let h = Harness::new()
        .blue(2)
        .service(
            r#"outlier = { consecutive_failures = 3, count_5xx = true, base_ejection = "1m" }"#,
        )
        .service(r#"health_check = { path = "/health", interval = "100ms", timeout = "50ms" }"#)
        .start()
        .await;
    // Both backends answer 500 here; only one of two may be ejected.
    assert!(
        eventually(Duration::from_secs(5), || async {
            send(h.proxy, "/status?code=500", 3).await;
            ejections(&h, "blue").await >= 1.0
        })
        .await,
        "500s never ejected a backend"
    );
    // Their health path passes: the next check lifts the ejection, long
    // before its minute is up.
    assert!(
        eventually(Duration::from_secs(3), || async {
            pool_status(&h, "blue").await["available"] == 2 && ejected_count(&h, "blue").await == 0
        })
        .await,
        "a passing active check did not lift the ejection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_count_5xx_answers_never_eject() {
    let h = Harness::new()
        .blue(2)
        .service(r#"outlier = { consecutive_failures = 2 }"#)
        .start()
        .await;
    for _ in 0..20 {
        let a = get_once(h.proxy, "/status?code=503", &[]).await.unwrap();
        assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    }
    assert!(
        holds_for(Duration::from_millis(300), || async {
            ejected_count(&h, "blue").await == 0
        })
        .await,
        "a 5xx answer ejected a backend without count_5xx"
    );
    assert_eq!(ejections(&h, "blue").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_listener_ejects_a_backend_that_refuses_its_connects() {
    let live = TestBackend::start_tcp("blue").await;
    let down = DownPort::new();
    let h = Harness::new()
        .tcp()
        .blue(0)
        .green(1)
        .backends(
            &format!(r#"["{}", "{}"]"#, live.addr, down.addr),
            r#"["127.0.0.1:9"]"#,
        )
        .service(r#"outlier = { consecutive_failures = 2, base_ejection = "1m" }"#)
        .start()
        .await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            for _ in 0..2 {
                // Each connection is routed once; a refused connect closes it.
                let _ = tokio::net::TcpStream::connect(h.proxy).await;
            }
            backend_status(&h, "blue", down.addr).await["state"] == "ejected"
        })
        .await,
        "the refusing tcp backend was never ejected"
    );
    for _ in 0..10 {
        use tokio::io::AsyncReadExt;
        let mut s = tokio::net::TcpStream::connect(h.proxy).await.unwrap();
        let mut buf = [0u8; 5];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
            .await
            .expect("a greeting in time")
            .expect("the tunnel reaches the live backend");
        assert_eq!(&buf, b"blue\n");
    }
}
