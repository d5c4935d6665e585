//! End-to-end: active health checks over real sockets. A backend whose
//! health path fails, or that stops listening, goes down (status, metrics)
//! and gets no requests; it comes back after good checks; a pool with every
//! backend down answers 503 naming it, or fails over to another pool.

// Test code: a failed unwrap is a failed test (clippy.toml allows it in
// #[test] functions; this covers the helpers beside them).
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use cutover_test_support::*;
use http::StatusCode;
use serde_json::Value;

/// 100 ms checks, 50 ms timeout, 2 to come up, 3 to go down.
const CHECKS: &str = r#"health_check = { path = "/health", interval = "100ms", timeout = "50ms", healthy_threshold = 2, unhealthy_threshold = 3 }"#;
const INTERVAL: Duration = Duration::from_millis(100);

/// A backend's entry in `/v1/status`.
async fn backend_status(h: &Running, pool: &str, addr: SocketAddr) -> Value {
    let (s, v) = h.api("GET", "/v1/status", None).await;
    assert_eq!(s, StatusCode::OK);
    let p = v["services"][0]["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == pool)
        .cloned()
        .unwrap_or_else(|| panic!("pool {pool} in {v}"));
    let mut b = p["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["addr"] == addr.to_string().as_str())
        .cloned()
        .unwrap_or_else(|| panic!("backend {addr} in {p}"));
    b["pool_available"] = p["available"].clone();
    b
}

async fn state_is(h: &Running, pool: &str, addr: SocketAddr, state: &str) -> bool {
    backend_status(h, pool, addr).await["state"] == state
}

async fn backend_up_metric(h: &Running, pool: &str, addr: SocketAddr) -> Option<f64> {
    Metrics::scrape(h.admin).await.ok()?.value(
        "cutover_backend_up",
        &[
            ("service", "web"),
            ("pool", pool),
            ("backend", &addr.to_string()),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_whose_health_path_fails_leaves_the_pool_and_comes_back() {
    let h = Harness::new().blue(2).service(CHECKS).start().await;
    let (bad, good) = (&h.backends[0], &h.backends[1]);
    assert_eq!((bad.pool.as_str(), good.pool.as_str()), ("blue", "blue"));
    let b = backend_status(&h, "blue", bad.addr).await;
    assert_eq!(b["state"], "up", "backends start up: {b}");
    assert_eq!(b["pool_available"], 2);
    assert_eq!(backend_up_metric(&h, "blue", bad.addr).await, Some(1.0));

    bad.set_health(500);
    assert!(
        eventually(Duration::from_secs(5), || state_is(
            &h, "blue", bad.addr, "down"
        ))
        .await,
        "the backend answering 500 never went down"
    );
    let b = backend_status(&h, "blue", bad.addr).await;
    assert_eq!(b["reason"], "answered 500", "{b}");
    assert!(b["since"].as_str().is_some_and(|s| s.ends_with('Z')), "{b}");
    assert_eq!(b["pool_available"], 1, "{b}");
    assert_eq!(backend_up_metric(&h, "blue", bad.addr).await, Some(0.0));
    let m = Metrics::scrape(h.admin).await.unwrap();
    let failed = m.value(
        "cutover_health_checks_total",
        &[("service", "web"), ("pool", "blue"), ("result", "failed")],
    );
    assert!(failed.is_some_and(|n| n >= 3.0), "{failed:?}");

    // Every request goes to the other backend; none fails.
    let before = bad.requests.load(Ordering::Relaxed);
    let mut conn = Conn::h1(h.proxy).await;
    for _ in 0..30 {
        let a = conn.get("/", &[]).await.unwrap();
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.header("x-backend"), Some(good.addr.to_string().as_str()));
    }
    for _ in 0..10 {
        let a = get_once(h.proxy, "/", &[]).await.unwrap();
        assert_eq!(a.status, StatusCode::OK);
    }
    assert_eq!(bad.requests.load(Ordering::Relaxed), before);

    bad.set_health(200);
    assert!(
        eventually(Duration::from_secs(5), || state_is(
            &h, "blue", bad.addr, "up"
        ))
        .await,
        "the backend never came back after good answers"
    );
    assert_eq!(
        backend_status(&h, "blue", bad.addr).await["pool_available"],
        2
    );
    assert_eq!(backend_up_metric(&h, "blue", bad.addr).await, Some(1.0));
    assert!(
        eventually(Duration::from_secs(5), || async {
            get_once(h.proxy, "/", &[])
                .await
                .is_ok_and(|a| a.status == StatusCode::OK)
                && bad.requests.load(Ordering::Relaxed) > before
        })
        .await,
        "the backend that came back never got a request"
    );
    // A health change is not an operator change: the generation stays.
    assert_eq!(generation(h.admin).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_backend_is_down_within_the_thresholds_and_up_after_a_restart() {
    let h = Harness::new().blue(2).service(CHECKS).start().await;
    let (victim, other) = (&h.backends[0], &h.backends[1]);
    let addr = victim.addr;
    victim.stop();
    let stopped = Instant::now();
    assert!(
        eventually(Duration::from_secs(5), || state_is(
            &h, "blue", addr, "down"
        ))
        .await,
        "the stopped backend never went down"
    );
    let took = stopped.elapsed();
    // unhealthy_threshold × interval + one interval, with the ±10% jitter
    // and some room for a busy machine.
    let bound = INTERVAL * 4 + INTERVAL * 4 / 10 + Duration::from_millis(300);
    assert!(took <= bound, "down after {took:?}, more than {bound:?}");
    eprintln!("stopped backend down after {took:?} (bound {bound:?})");
    let b = backend_status(&h, "blue", addr).await;
    assert_eq!(b["reason"], "connect refused", "{b}");

    for _ in 0..10 {
        let a = get_once(h.proxy, "/", &[]).await.unwrap();
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.header("x-backend"), Some(other.addr.to_string().as_str()));
    }

    // Restart on the same address (the old listener is gone once its task
    // saw the stop).
    let restarted = TestBackend::restart_on(addr, "blue").await;
    assert!(
        eventually(Duration::from_secs(5), || state_is(&h, "blue", addr, "up")).await,
        "the restarted backend never came back up"
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            get_once(h.proxy, "/", &[])
                .await
                .is_ok_and(|a| a.status == StatusCode::OK)
                && restarted.requests.load(Ordering::Relaxed) > 0
        })
        .await,
        "the restarted backend never got a request"
    );
}

/// Green's two backends answer 500 on their health path; waits until
/// status shows both down, then switches web to green, forced (switch
/// safety refuses it otherwise).
async fn green_all_down(h: &Running) {
    let green: Vec<_> = h.backends.iter().filter(|b| b.pool == "green").collect();
    assert_eq!(green.len(), 2);
    for b in &green {
        b.set_health(500);
    }
    for b in &green {
        assert!(
            eventually(Duration::from_secs(5), || state_is(
                h, "green", b.addr, "down"
            ))
            .await,
            "green backend {} never went down",
            b.addr
        );
    }
    let (s, v) = h
        .api(
            "POST",
            "/v1/services/web/switch",
            Some(r#"{"to":"green","force":true}"#),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_to_a_pool_with_no_backend_up_is_refused_unless_forced() {
    let h = Harness::new().green(2).service(CHECKS).start().await;
    let green: Vec<_> = h.backends.iter().filter(|b| b.pool == "green").collect();
    for b in &green {
        b.set_health(500);
    }
    for b in &green {
        assert!(
            eventually(Duration::from_secs(5), || state_is(
                &h, "green", b.addr, "down"
            ))
            .await,
            "green backend {} never went down",
            b.addr
        );
    }
    let before = generation(h.admin).await;

    // Refused: 409 naming green and each backend's last failure; nothing changed.
    let (s, v) = h
        .api("POST", "/v1/services/web/switch", Some(r#"{"to":"green"}"#))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    let err = v["error"].as_str().unwrap_or_default();
    for b in &green {
        assert!(err.contains(&format!("{} answered 500", b.addr)), "{err}");
    }
    assert!(err.contains("pool green"), "{err}");
    assert!(err.contains("force"), "{err}");
    let (s, v) = h
        .api(
            "PUT",
            "/v1/services/web/split",
            Some(r#"{"split":{"blue":90,"green":10}}"#),
        )
        .await;
    assert_eq!(
        s,
        StatusCode::CONFLICT,
        "a canary share is refused too: {v}"
    );
    assert_eq!(
        generation(h.admin).await,
        before,
        "a refused change changes nothing"
    );
    let a = get_once(h.proxy, "/", &[]).await.unwrap();
    assert_eq!(a.pool(), "blue");

    // Forced: applied, and the audit entry says so.
    let (s, v) = h
        .api(
            "POST",
            "/v1/services/web/switch",
            Some(r#"{"to":"green","force":true,"reason":"testing"}"#),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, audit) = h.api("GET", "/v1/audit", None).await;
    // Newest first.
    let last = audit["entries"].as_array().and_then(|e| e.first()).cloned();
    let last = last.unwrap_or_default();
    assert_eq!(last["action"], "switch", "{audit}");
    assert_eq!(last["forced"], true, "{audit}");

    // A rollback is never refused, even to a pool that is down now.
    for b in h.backends.iter().filter(|b| b.pool == "blue") {
        b.set_health(500);
    }
    let blue = h.backends.iter().find(|b| b.pool == "blue").unwrap();
    assert!(
        eventually(Duration::from_secs(5), || state_is(
            &h, "blue", blue.addr, "down"
        ))
        .await,
        "blue never went down"
    );
    let (s, v) = h.api("POST", "/v1/services/web/rollback", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, audit) = h.api("GET", "/v1/audit", None).await;
    // Newest first.
    let last = audit["entries"].as_array().and_then(|e| e.first()).cloned();
    let last = last.unwrap_or_default();
    assert_eq!(last["action"], "rollback", "{audit}");
    assert!(last.get("forced").is_none(), "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_green_backend_down_answers_503_naming_green_and_its_backends() {
    // The backends are named only with error_detail = "full".
    let h = Harness::new()
        .green(2)
        .service(CHECKS)
        .service("error_detail = \"full\"")
        .start()
        .await;
    green_all_down(&h).await;
    let a = get_once(h.proxy, "/", &[]).await.unwrap();
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{}", a.body);
    let green: Vec<_> = h.backends.iter().filter(|b| b.pool == "green").collect();
    let expected = format!(
        "all 2 backends of pool green are down: {} answered 500, {} answered 500",
        green[0].addr, green[1].addr
    );
    assert!(a.body.contains(&expected), "{}", a.body);
    // The preview listener (a fixed pool) says the same.
    let a = get_once(h.preview, "/", &[]).await.unwrap();
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{}", a.body);
    let m = Metrics::scrape(h.admin).await.unwrap();
    let n = m.value(
        "cutover_upstream_errors_total",
        &[
            ("service", "web"),
            ("pool", "green"),
            ("source", "cutover"),
            ("cause", "no_healthy_backend"),
        ],
    );
    assert_eq!(n, Some(2.0));
    let (_, v) = h.api("GET", "/v1/status", None).await;
    assert_eq!(v["services"][0]["pools"][1]["available"], 0, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_failover_a_request_for_a_dead_green_is_served_by_blue() {
    let h = Harness::new()
        .green(2)
        .service(CHECKS)
        .service("failover = true")
        .start()
        .await;
    green_all_down(&h).await;
    let mut conn = Conn::h1(h.proxy).await;
    for _ in 0..5 {
        let a = conn.get("/", &[]).await.unwrap();
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert_eq!(a.pool(), "blue");
    }
    let m = Metrics::scrape(h.admin).await.unwrap();
    let n = m.value(
        "cutover_failovers_total",
        &[("service", "web"), ("from", "green"), ("to", "blue")],
    );
    assert_eq!(n, Some(5.0));
    // The preview listener asked for green by name: no failover.
    let a = get_once(h.preview, "/", &[]).await.unwrap();
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{}", a.body);

    // Green comes back: requests go to green again.
    for b in h.backends.iter().filter(|b| b.pool == "green") {
        b.set_health(200);
    }
    assert!(
        eventually(Duration::from_secs(5), || async {
            get_once(h.proxy, "/", &[])
                .await
                .is_ok_and(|a| a.pool() == "green")
        })
        .await,
        "green never served again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_service_checks_with_a_connect_and_opens_no_tunnel_to_a_down_backend() {
    let h = Harness::new()
        .tcp()
        .blue(2)
        .service(r#"health_check = { interval = "100ms", timeout = "50ms" }"#)
        .start()
        .await;
    let (victim, other) = (&h.backends[0], &h.backends[1]);
    victim.stop();
    assert!(
        eventually(Duration::from_secs(5), || state_is(
            &h,
            "blue",
            victim.addr,
            "down"
        ))
        .await,
        "the stopped tcp backend never went down"
    );
    let before = other.connections.load(Ordering::Relaxed);
    for _ in 0..10 {
        use tokio::io::AsyncReadExt;
        let mut s = tokio::net::TcpStream::connect(h.proxy).await.unwrap();
        let mut buf = [0u8; 5];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
            .await
            .expect("a greeting in time")
            .expect("the tunnel reaches a live backend");
        assert_eq!(&buf, b"blue\n");
    }
    // (The checks' connects count too.)
    assert!(other.connections.load(Ordering::Relaxed) - before >= 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2c_pool_is_checked_over_h2c() {
    let h = Harness::new()
        .blue(2)
        .pools(r#"protocol = "h2c""#)
        .service(CHECKS)
        .start()
        .await;
    let bad = &h.backends[0];
    bad.set_health(503);
    assert!(
        eventually(Duration::from_secs(5), || state_is(
            &h, "blue", bad.addr, "down"
        ))
        .await,
        "the h2c backend answering 503 never went down"
    );
    assert_eq!(
        backend_status(&h, "blue", bad.addr).await["reason"],
        "answered 503"
    );
    let other = &h.backends[1];
    assert_eq!(backend_status(&h, "blue", other.addr).await["state"], "up");
    let a = get_once(h.proxy, "/", &[]).await.unwrap();
    assert_eq!(a.header("x-seen-version"), Some("HTTP/2.0"));
    bad.set_health(200);
    assert!(
        eventually(Duration::from_secs(5), || state_is(
            &h, "blue", bad.addr, "up"
        ))
        .await,
        "the h2c backend never came back"
    );
}
