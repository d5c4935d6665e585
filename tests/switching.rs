//! End-to-end: ticket routing and switching over real sockets.

// Test code: a failed unwrap is a failed test (clippy.toml allows it in
// #[test] functions; this covers the helpers beside them).
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use cutover_test_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switch_takes_effect_on_the_next_request_of_an_open_h1_connection() {
    let h = Harness::new().start().await;
    let mut conn = Conn::h1(h.proxy).await;
    for _ in 0..5 {
        assert_eq!(conn.get("/", &[]).await.unwrap().pool(), "blue");
    }
    switch(h.admin, "green").await;
    // Same keep-alive connection: the very next request goes to green.
    assert_eq!(conn.get("/", &[]).await.unwrap().pool(), "green");
    switch(h.admin, "blue").await;
    assert_eq!(conn.get("/", &[]).await.unwrap().pool(), "blue");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switch_takes_effect_on_the_next_request_of_an_open_h2_connection() {
    let h = Harness::new().start().await;
    let mut conn = Conn::h2(h.proxy).await;
    for _ in 0..5 {
        let a = conn.get("/", &[]).await.unwrap();
        assert_eq!(a.pool(), "blue");
    }
    switch(h.admin, "green").await;
    assert_eq!(conn.get("/", &[]).await.unwrap().pool(), "green");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_90_10_split_gives_green_its_tenth_of_new_connections_within_three_at_every_count() {
    let h = Harness::new()
        .service("split = { blue = 90, green = 10 }")
        .start()
        .await;
    let mut green = 0i32;
    for n in 1..=300i32 {
        let a = get_once(h.proxy, "/", &[]).await.unwrap();
        assert!(a.status.is_success());
        if a.pool() == "green" {
            green += 1;
        }
        // Tickets are handed out in turn, not drawn at random: after any
        // number of connections green has had its tenth within 3. Random
        // tickets drift like a random walk (standard deviation 5.2 at 300)
        // and break this bound in most runs.
        assert!(
            (green * 10 - n).abs() <= 30,
            "after {n} connections green had {green}"
        );
    }
}

/// Pool of each client (source address 127.0.0.x) after one request each.
async fn pools_by_ip(proxy: std::net::SocketAddr, clients: &[IpAddr]) -> HashMap<IpAddr, String> {
    let mut m = HashMap::new();
    for ip in clients {
        let mut c = Conn::h1_from(proxy, Some(*ip)).await;
        let a = c.get("/", &[]).await.expect("first request");
        // A second request on a new connection from the same client agrees.
        let mut c2 = Conn::h1_from(proxy, Some(*ip)).await;
        assert_eq!(
            c2.get("/", &[]).await.expect("second request").pool(),
            a.pool(),
            "client {ip} flip-flopped"
        );
        m.insert(*ip, a.pool().to_string());
    }
    m
}

fn on_green(m: &HashMap<IpAddr, String>) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = m
        .iter()
        .filter(|(_, p)| *p == "green")
        .map(|(ip, _)| *ip)
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_ip_stickiness_is_monotonic_and_rollback_returns_exactly_the_movers() {
    let h = Harness::new()
        .service("split = { blue = 90, green = 10 }\nsticky = \"client_ip\"")
        .start()
        .await;
    let clients: Vec<IpAddr> = (2..=101)
        .map(|i| IpAddr::from([127, 0, 1, i as u8]))
        .collect();
    let at10 = pools_by_ip(h.proxy, &clients).await;
    set_split(h.admin, 50, 50).await;
    let at50 = pools_by_ip(h.proxy, &clients).await;
    set_split(h.admin, 0, 100).await;
    let at100 = pools_by_ip(h.proxy, &clients).await;
    for ip in &clients {
        // Never green -> blue while green's share rises.
        if at10[ip] == "green" {
            assert_eq!(at50[ip], "green", "{ip} went back to blue at 50%");
        }
        assert_eq!(at100[ip], "green");
    }
    let (g10, g50) = (on_green(&at10).len(), on_green(&at50).len());
    assert!(
        g10 < g50 && g50 < clients.len(),
        "green 10%: {g10}, 50%: {g50}"
    );
    // Rollback to 50/50: exactly the clients that were on green at 50% stay.
    let (s, _) = admin(h.admin, "POST", "/v1/services/web/rollback", None).await;
    assert!(s.is_success());
    let after = pools_by_ip(h.proxy, &clients).await;
    assert_eq!(on_green(&after), on_green(&at50));
}

/// A cookie-carrying client: sends back what cutover set.
struct CookieClient {
    cookie: Option<String>,
}

impl CookieClient {
    async fn pool(&mut self, proxy: std::net::SocketAddr) -> String {
        let cookie = self.cookie.clone();
        let headers: Vec<(&str, &str)> = cookie.iter().map(|c| ("cookie", c.as_str())).collect();
        let a = get_once(proxy, "/", &headers).await.expect("request");
        if let Some(set) = a.headers.get("set-cookie").and_then(|v| v.to_str().ok()) {
            assert!(self.cookie.is_none(), "cookie set twice");
            assert!(
                set.contains("HttpOnly")
                    && set.contains("SameSite=Lax")
                    && set.contains("Max-Age="),
                "{set}"
            );
            self.cookie = set.split(';').next().map(|s| s.to_string());
        }
        a.pool().to_string()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_stickiness_is_monotonic_and_rollback_returns_exactly_the_movers() {
    let h = Harness::new()
        .service("split = { blue = 90, green = 10 }\nsticky = \"cookie\"")
        .start()
        .await;
    let mut clients: Vec<CookieClient> = (0..100).map(|_| CookieClient { cookie: None }).collect();
    let mut history: Vec<Vec<String>> = Vec::new();
    for step in [(90, 10), (50, 50), (0, 100)] {
        if step != (90, 10) {
            set_split(h.admin, step.0, step.1).await;
        }
        let mut pools = Vec::new();
        for c in clients.iter_mut() {
            let p = c.pool(h.proxy).await;
            // Same cookie, same pool, on every request while the split holds.
            assert_eq!(c.pool(h.proxy).await, p);
            pools.push(p);
        }
        history.push(pools);
    }
    for (i, ((at10, at50), at100)) in history[0]
        .iter()
        .zip(&history[1])
        .zip(&history[2])
        .enumerate()
    {
        if at10 == "green" {
            assert_eq!(at50, "green", "client {i} went back to blue");
        }
        assert_eq!(at100, "green");
    }
    admin(h.admin, "POST", "/v1/services/web/rollback", None).await;
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(
            c.pool(h.proxy).await,
            history[1][i],
            "client {i} after rollback"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_switches_under_load_fail_no_request_and_misroute_none() {
    let h = Harness::new().blue(2).green(2).start().await;
    // 2n: n switches have returned (n even: blue in force, n odd: green);
    // 2n+1: switch n+1 is in progress, either pool is right.
    let epoch = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let checked_total = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..6 {
        let (epoch, stop, proxy, checked_total) =
            (epoch.clone(), stop.clone(), h.proxy, checked_total.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = if i % 2 == 0 {
                Conn::h1(proxy).await
            } else {
                Conn::h2(proxy).await
            };
            let (mut ok, mut checked, mut failed, mut misrouted) = (0u64, 0u64, Vec::new(), 0u64);
            while !stop.load(Ordering::Relaxed) {
                let before = epoch.load(Ordering::SeqCst);
                match conn.get("/", &[]).await {
                    Ok(a) if a.status.is_success() => {
                        ok += 1;
                        let after = epoch.load(Ordering::SeqCst);
                        if before == after && before % 2 == 0 {
                            checked += 1;
                            checked_total.fetch_add(1, Ordering::SeqCst);
                            let want = if (before / 2) % 2 == 0 {
                                "blue"
                            } else {
                                "green"
                            };
                            if a.pool() != want {
                                misrouted += 1;
                            }
                        }
                    }
                    Ok(a) => failed.push(format!("{} {}", a.status, a.body)),
                    Err(e) => failed.push(e),
                }
            }
            (ok, checked, failed, misrouted)
        }));
    }
    for n in 1..=200u64 {
        epoch.store(2 * n - 1, Ordering::SeqCst);
        switch(h.admin, if n % 2 == 1 { "green" } else { "blue" }).await;
        epoch.store(2 * n, Ordering::SeqCst);
        // Let a few requests run under this switch before the next one.
        let seen = checked_total.load(Ordering::SeqCst);
        eventually(std::time::Duration::from_secs(2), || {
            let c = checked_total.clone();
            async move { c.load(Ordering::SeqCst) >= seen + 3 }
        })
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut checked) = (0, 0);
    for t in tasks {
        let (o, c, failed, misrouted) = t.await.unwrap();
        assert!(failed.is_empty(), "failed requests: {failed:?}");
        assert_eq!(
            misrouted, 0,
            "requests sent after a switch returned went to the old pool"
        );
        ok += o;
        checked += c;
    }
    assert!(
        ok >= 200 && checked >= 400,
        "too little traffic to prove anything: {ok} ok, {checked} checked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_preview_listener_serves_only_green_and_the_override_header_forces_a_pool() {
    let h = Harness::new()
        .service("override_header = \"x-cutover-pool\"")
        .start()
        .await;
    for split in [(100, 0), (50, 50), (0, 100), (100, 0)] {
        set_split(h.admin, split.0, split.1).await;
        for _ in 0..10 {
            assert_eq!(get_once(h.preview, "/", &[]).await.unwrap().pool(), "green");
        }
    }
    // Split is 100/0 now: the header moves this request only.
    assert_eq!(
        get_once(h.proxy, "/", &[("x-cutover-pool", "green")])
            .await
            .unwrap()
            .pool(),
        "green"
    );
    assert_eq!(get_once(h.proxy, "/", &[]).await.unwrap().pool(), "blue");
    let bad = get_once(h.proxy, "/", &[("x-cutover-pool", "purple")])
        .await
        .unwrap();
    assert_eq!(bad.status, 400);
    // The pool named is echoed; the service's pools are not listed.
    assert!(
        bad.body.contains("purple") && !bad.body.contains("blue"),
        "{}",
        bad.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_override_header_needs_the_token_when_one_is_set() {
    let h = Harness::new()
        .service("override_header = \"x-cutover-pool\"\noverride_token = \"s3cret\"")
        .start()
        .await;
    let without = get_once(h.proxy, "/", &[("x-cutover-pool", "green")])
        .await
        .unwrap();
    assert_eq!(without.pool(), "blue", "no token: the header is ignored");
    let with = get_once(
        h.proxy,
        "/",
        &[("x-cutover-pool", "green"), ("x-cutover-token", "s3cret")],
    )
    .await
    .unwrap();
    assert_eq!(with.pool(), "green");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_are_set_host_is_kept_and_hop_by_hop_headers_dropped() {
    let h = Harness::new().start().await;
    let a = get_once(
        h.proxy,
        "/",
        &[
            ("x-forwarded-for", "203.0.113.7"),
            ("connection", "keep-alive, x-drop"),
            ("x-drop", "1"),
        ],
    )
    .await
    .unwrap();
    // The listener does not trust forwarded headers: the client's list goes.
    assert_eq!(a.headers["x-seen-xff"], "127.0.0.1");
    assert_eq!(a.headers["x-seen-host"], "www.example.test");
    assert_eq!(a.headers["x-seen-xfh"], "www.example.test");
    assert_eq!(a.headers["x-seen-xfp"], "http");
    assert_eq!(a.headers["x-seen-connection"], "");
}
