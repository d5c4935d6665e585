//! End-to-end: tunnels (WebSocket, tcp listeners), PROXY protocol, drain
//! status, and in-flight work across switches.

// Test code: a failed unwrap is a failed test (clippy.toml allows it in
// #[test] functions; this covers the helpers beside them).
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cutover_test_support::raw::{self, Lines};
use cutover_test_support::ws::{Echo, Ws};
use cutover_test_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn drain(admin_addr: SocketAddr, query: &str) -> serde_json::Value {
    let (s, v) = admin(
        admin_addr,
        "GET",
        &format!("/v1/services/web/drain{query}"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    v
}

fn pool<'a>(v: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    v["pools"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["pool"] == name))
        .unwrap_or_else(|| panic!("no pool {name} in {v}"))
}

/// Polls until blue's `cutover_drain_closed_total{reason}` reaches `want`.
async fn drain_closed_becomes(admin_addr: SocketAddr, reason: &str, want: f64) -> bool {
    let line =
        format!(r#"cutover_drain_closed_total{{pool="blue",reason="{reason}",service="web"}}"#);
    eventually(Duration::from_secs(2), || async {
        metric(admin_addr, &line).await == Some(want)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_on_blue_survives_a_switch_until_the_drain_deadline_then_gets_1001() {
    let h = Harness::new()
        .service("drain_timeout = \"1500ms\"")
        .start()
        .await;
    let mut ws = Ws::connect(h.proxy).await;
    assert_eq!(ws.echo("one").await, Echo::Text("blue: one".into()));
    let v = drain(h.admin, "?pool=blue").await;
    assert_eq!(pool(&v, "blue")["tunnels_open"], 1);

    let switched = Instant::now();
    switch(h.admin, "green").await;
    // Still bound to blue while it drains.
    assert_eq!(ws.echo("two").await, Echo::Text("blue: two".into()));
    let v = drain(h.admin, "?pool=blue").await;
    assert_eq!(
        v["drained"], false,
        "a draining tunnel keeps blue undrained: {v}"
    );
    let ok = eventually(Duration::from_secs(2), || async {
        pool(&drain(h.admin, "").await, "blue")["tunnels_draining"] == 1
    })
    .await;
    assert!(ok, "the tunnel is not marked draining");
    // A WebSocket opened after the switch lands on green.
    let mut ws2 = Ws::connect(h.proxy).await;
    assert_eq!(ws2.echo("hi").await, Echo::Text("green: hi".into()));
    // At the deadline cutover closes it with 1001 (going away).
    assert_eq!(ws.next().await, Echo::Closed(Some(1001)));
    let took = switched.elapsed();
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_secs(5),
        "closed after {took:?}"
    );
    let ok = eventually(Duration::from_secs(2), || async {
        drain(h.admin, "?pool=blue").await["drained"] == true
    })
    .await;
    assert!(ok, "blue never reported drained");
    assert!(
        drain_closed_becomes(h.admin, "deadline", 1.0).await,
        "blue's drain close (deadline) was not counted"
    );
    // ws2 is on green, which kept its share: untouched.
    assert_eq!(ws2.echo("still").await, Echo::Text("green: still".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_that_finishes_by_itself_is_counted_as_finished() {
    let h = Harness::new()
        .service("drain_timeout = \"30s\"")
        .start()
        .await;
    let mut ws = Ws::connect(h.proxy).await;
    assert_eq!(ws.echo("x").await, Echo::Text("blue: x".into()));
    switch(h.admin, "green").await;
    let ok = eventually(Duration::from_secs(2), || async {
        pool(&drain(h.admin, "").await, "blue")["tunnels_draining"] == 1
    })
    .await;
    assert!(ok);
    ws.close().await;
    // `wait` answers as soon as blue is drained, long before 20 s.
    let t = Instant::now();
    let v = drain(h.admin, "?pool=blue&wait=20s").await;
    assert_eq!(v["drained"], true, "{v}");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "wait took {:?}",
        t.elapsed()
    );
    assert!(
        drain_closed_becomes(h.admin, "finished", 1.0).await,
        "blue's drain close (finished) was not counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_before_the_deadline_keeps_the_tunnel() {
    let h = Harness::new()
        .service("drain_timeout = \"1s\"")
        .start()
        .await;
    let mut ws = Ws::connect(h.proxy).await;
    assert_eq!(ws.echo("a").await, Echo::Text("blue: a".into()));
    switch(h.admin, "green").await;
    let ok = eventually(Duration::from_secs(2), || async {
        pool(&drain(h.admin, "").await, "blue")["tunnels_draining"] == 1
    })
    .await;
    assert!(ok, "the switch did not mark the tunnel draining");
    admin(h.admin, "POST", "/v1/services/web/rollback", None).await;
    let ok = eventually(Duration::from_secs(2), || async {
        pool(&drain(h.admin, "").await, "blue")["tunnels_open"] == 1
    })
    .await;
    assert!(ok, "the tunnel should be back to open");
    // Well past the old deadline, it is still open, and works.
    assert!(
        holds_for(Duration::from_millis(1500), || async {
            pool(&drain(h.admin, "").await, "blue")["tunnels_open"] == 1
        })
        .await,
        "the tunnel was closed after the rollback"
    );
    assert_eq!(ws.echo("b").await, Echo::Text("blue: b".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_stream_started_on_blue_completes_whole_after_a_switch() {
    let h = Harness::new().start().await;
    let mut conn = Conn::h1(h.proxy).await;
    let admin_addr = h.admin;
    let switcher = tokio::spawn(async move {
        // Switch while the stream is running, then watch blue drain.
        let busy = eventually(Duration::from_secs(2), || async {
            pool(&drain(admin_addr, "").await, "blue")["in_flight"] == 1
        })
        .await;
        switch(admin_addr, "green").await;
        let v = drain(admin_addr, "?pool=blue").await;
        let waited = drain(admin_addr, "?pool=blue&wait=10s").await;
        (busy, v, waited)
    });
    let a = conn.get("/stream?chunks=20&ms=100", &[]).await.unwrap();
    let (busy, during, after) = switcher.await.unwrap();
    assert!(busy, "the stream never showed as in flight on blue");
    let lines: Vec<&str> = a.body.lines().collect();
    assert_eq!(lines.len(), 20, "{}", a.body);
    assert!(lines.iter().all(|l| l.starts_with("blue ")), "{}", a.body);
    assert_eq!(
        during["drained"], false,
        "blue is busy right after the switch: {during}"
    );
    assert_eq!(pool(&during, "blue")["in_flight"], 1);
    assert_eq!(after["drained"], true, "{after}");
    assert_eq!(pool(&after, "blue")["in_flight"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_sessions_stay_through_a_change_that_keeps_their_pool_and_drain_on_one_that_moves_them()
{
    let h = Harness::new()
        .tcp()
        .service("drain_timeout = \"1s\"")
        .start()
        .await;
    let (mut s, pool_name) = Lines::connect(h.proxy).await;
    assert_eq!(pool_name, "blue");
    assert_eq!(s.echo("ping").await.as_deref(), Some("ping"));
    // A weight change that keeps blue at 100%: nothing moves.
    set_split(h.admin, 200, 0).await;
    // Longer than drain_timeout: nothing is draining all that time.
    assert!(
        holds_for(Duration::from_millis(1300), || async {
            pool(&drain(h.admin, "").await, "blue")["tunnels_draining"] == 0
        })
        .await,
        "a change that keeps blue at 100% drained its session"
    );
    assert_eq!(s.echo("still").await.as_deref(), Some("still"));
    // The preview listener is always green.
    let (_p, preview_pool) = Lines::connect(h.preview).await;
    assert_eq!(preview_pool, "green");

    switch(h.admin, "green").await;
    assert_eq!(s.echo("draining").await.as_deref(), Some("draining"));
    let (mut s2, new_pool) = Lines::connect(h.proxy).await;
    assert_eq!(
        new_pool, "green",
        "new tcp connections follow the new split"
    );
    // Closed at the deadline.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), s.0.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "the blue session was not closed at the deadline"
    );
    assert_eq!(s2.echo("green ok").await.as_deref(), Some("green ok"));
    assert!(
        drain_closed_becomes(h.admin, "deadline", 1.0).await,
        "blue's drain close (deadline) was not counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_90_10_tcp_split_holds_over_many_connections() {
    let h = Harness::new()
        .tcp()
        .service("split = { blue = 90, green = 10 }")
        .start()
        .await;
    let mut green = 0;
    for _ in 0..1000 {
        let (_s, p) = Lines::connect(h.proxy).await;
        if p == "green" {
            green += 1;
        }
    }
    // Binomial(1000, 0.1): mean 100, sd 9.5; +-5 sd.
    assert!((53..=147).contains(&green), "green got {green} of 1000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_pools_can_send_a_proxy_v2_header_to_backends() {
    let h = Harness::new()
        .tcp()
        .pools("send_proxy_protocol = true")
        .start()
        .await;
    let (mut s, greeting) = Lines::connect(h.proxy).await;
    assert_eq!(greeting, "blue");
    // The backend saw a PROXY v2 header naming our address first.
    s.stream().write_all(b"x\n").await.unwrap();
    let line = s.line().await.expect("the backend's report");
    let local = s.stream().local_addr().unwrap();
    assert_eq!(line.trim(), format!("proxy {local}"));
}

async fn http_with_proxy_header(proxy: SocketAddr, header: &[u8]) -> String {
    let mut s = raw::connect(proxy).await;
    // Writes may fail once cutover has refused a bad header: that is the point.
    let _ = s.write_all(header).await;
    let _ = s
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await;
    let (out, _) = raw::read_to_close(&mut s, Duration::from_secs(5)).await;
    String::from_utf8_lossy(&out).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_protocol_v1_and_v2_feed_forwarded_for_and_stickiness() {
    let h = Harness::new()
        .proxy_protocol()
        .service("split = { blue = 50, green = 50 }\nsticky = \"client_ip\"")
        .start()
        .await;
    let v1 = http_with_proxy_header(h.proxy, b"PROXY TCP4 203.0.113.9 127.0.0.1 5555 80\r\n").await;
    assert!(v1.starts_with("HTTP/1.1 200"), "{v1}");
    assert_eq!(raw::header_value(&v1, "x-seen-xff"), Some("203.0.113.9"));
    let src: SocketAddr = "[2001:db8::7]:4444".parse().unwrap();
    let v2 = http_with_proxy_header(
        h.proxy,
        &cutover_proxy::proxy_protocol::encode_v2(src, "[::1]:80".parse().unwrap()),
    )
    .await;
    assert_eq!(raw::header_value(&v2, "x-seen-xff"), Some("2001:db8::7"));
    // Stickiness follows the address in the header, as cutover's own ticket math says.
    let split = cutover_proxy::ticket::Split::new(vec![50, 50]);
    for i in 1..=20u8 {
        let ip = IpAddr::from([198, 51, 100, i]);
        let want = ["blue", "green"][split.pool_for(cutover_proxy::Ticket::from_ip(ip))];
        for _ in 0..2 {
            let r = http_with_proxy_header(
                h.proxy,
                format!("PROXY TCP4 {ip} 127.0.0.1 1000 80\r\n").as_bytes(),
            )
            .await;
            assert_eq!(raw::header_value(&r, "x-pool"), Some(want), "{ip}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_proxy_header_closes_that_connection_only() {
    let h = Harness::new().proxy_protocol().start().await;
    // A good connection opened before the bad ones, answered after them.
    let mut good = raw::connect(h.proxy).await;
    good.write_all(b"PROXY TCP4 192.0.2.1 127.0.0.1 1 2\r\nGET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let bad = http_with_proxy_header(h.proxy, b"PROXY TCP9 nonsense\r\n").await;
    assert_eq!(bad, "", "no answer to a bad header, just a close");
    let plain = http_with_proxy_header(h.proxy, b"").await;
    assert_eq!(plain, "", "a request without the header is refused too");
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), good.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200"));
    let refused = metric(h.admin, "cutover_downstream_refused_total{listener=").await;
    let m = Metrics::scrape(h.admin).await.unwrap();
    assert_eq!(
        m.value(
            "cutover_downstream_refused_total",
            &[
                ("listener", h.proxy.to_string().as_str()),
                ("reason", "proxy_protocol")
            ]
        ),
        Some(2.0),
        "{refused:?} {}",
        m.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_fails_across_100_switches_under_h1_h2_and_websocket_load() {
    let h = Harness::new()
        .blue(2)
        .green(2)
        .service("drain_timeout = \"30s\"")
        .start()
        .await;
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..6 {
        let (stop, done, proxy) = (stop.clone(), done.clone(), h.proxy);
        tasks.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            match i % 3 {
                0 | 1 => {
                    let mut c = if i % 3 == 0 {
                        Conn::h1(proxy).await
                    } else {
                        Conn::h2(proxy).await
                    };
                    while !stop.load(Ordering::Relaxed) {
                        match c.get("/", &[]).await {
                            Ok(a) if a.status == 200 => {}
                            Ok(a) => failures.push(format!("{} {}", a.status, a.body)),
                            Err(e) => failures.push(e),
                        }
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
                _ => {
                    // A WebSocket opened now and then, each echoing a few times.
                    while !stop.load(Ordering::Relaxed) {
                        let mut ws = Ws::connect(proxy).await;
                        for n in 0..5 {
                            match ws.echo(&format!("m{n}")).await {
                                Echo::Text(t) if t.ends_with(&format!("m{n}")) => {}
                                other => failures.push(format!("websocket: {other:?}")),
                            }
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        ws.close().await;
                    }
                }
            }
            failures
        }));
    }
    for n in 1..=100u64 {
        switch(h.admin, if n % 2 == 1 { "green" } else { "blue" }).await;
        let seen = done.load(Ordering::Relaxed);
        eventually(Duration::from_secs(2), || {
            let d = done.clone();
            async move { d.load(Ordering::Relaxed) >= seen + 5 }
        })
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let failures = t.await.unwrap();
        assert!(failures.is_empty(), "{failures:?}");
    }
    assert!(done.load(Ordering::Relaxed) >= 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_endpoint_refuses_bad_queries() {
    let h = Harness::new().start().await;
    for (q, want, frag) in [
        ("?wait=soon", 400, "not a duration"),
        ("?wait=2h", 400, "too long"),
        ("?pool=purple", 422, "no pool `purple`"),
        ("?colour=red", 400, "unknown query parameter"),
    ] {
        let (s, v) = admin(h.admin, "GET", &format!("/v1/services/web/drain{q}"), None).await;
        assert_eq!(s.as_u16(), want, "{q}: {v}");
        assert!(v["error"].as_str().unwrap_or("").contains(frag), "{q}: {v}");
    }
    let (s, _) = admin(h.admin, "GET", "/v1/services/nope/drain", None).await;
    assert_eq!(s, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_upstream_connections_to_a_pool_that_lost_all_traffic_are_closed() {
    let h = Harness::new().start().await;
    for _ in 0..5 {
        assert_eq!(get_once(h.proxy, "/", &[]).await.unwrap().pool(), "blue");
    }
    let blue = &h.backends[0];
    assert!(
        blue.open.load(Ordering::Relaxed) >= 1,
        "cutover keeps an idle keep-alive connection to blue"
    );
    switch(h.admin, "green").await;
    let closed = eventually(Duration::from_secs(5), || async {
        blue.open.load(Ordering::Relaxed) == 0
    })
    .await;
    assert!(
        closed,
        "idle connections to blue stay open: {}",
        blue.open.load(Ordering::Relaxed)
    );
    // Blue keeps working when it gets traffic again.
    switch(h.admin, "blue").await;
    assert_eq!(get_once(h.proxy, "/", &[]).await.unwrap().pool(), "blue");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_flight_stream_on_the_old_pool_is_cut_at_the_drain_deadline() {
    let h = Harness::new()
        .service("drain_timeout = \"700ms\"")
        .start()
        .await;
    let proxy = h.proxy;
    let stream = tokio::spawn(async move {
        let t = Instant::now();
        let r = Conn::h1(proxy)
            .await
            .get("/stream?chunks=100&ms=100", &[])
            .await;
        (r, t.elapsed())
    });
    let busy = eventually(Duration::from_secs(2), || async {
        pool(&drain(h.admin, "").await, "blue")["in_flight"] == 1
    })
    .await;
    assert!(busy);
    switch(h.admin, "green").await;
    let (r, took) = stream.await.unwrap();
    // A 10 s stream ends (cut) shortly after the 700 ms deadline.
    assert!(took < Duration::from_secs(5), "the stream ran {took:?}");
    match r {
        Err(_) => {}
        Ok(a) => assert!(a.body.lines().count() < 100, "the stream was not cut"),
    }
    let v = drain(h.admin, "?pool=blue&wait=5s").await;
    assert_eq!(v["drained"], true, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_over_http2_is_tunnelled_and_drained_like_one_over_http1() {
    let h = Harness::new()
        .service("drain_timeout = \"1s\"")
        .start()
        .await;
    let mut ws = Ws::connect_h2(h.proxy).await;
    assert_eq!(ws.echo("one").await, Echo::Text("blue: one".into()));
    assert_eq!(pool(&drain(h.admin, "").await, "blue")["tunnels_open"], 1);
    switch(h.admin, "green").await;
    assert_eq!(ws.echo("two").await, Echo::Text("blue: two".into()));
    let mut ws2 = Ws::connect_h2(h.proxy).await;
    assert_eq!(ws2.echo("hi").await, Echo::Text("green: hi".into()));
    // At the deadline: a close frame 1001, as over HTTP/1.1.
    assert_eq!(ws.next().await, Echo::Closed(Some(1001)));
}
