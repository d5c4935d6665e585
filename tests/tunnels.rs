//! End-to-end: what a tunnel holds and when it is counted. An upgraded
//! connection keeps its listener's `max_connections` permit and gauge until
//! it closes; a tunnel routed before a switch but opened after it (its 101
//! or its connect came late) drains like one opened before the switch, and
//! the drain status counts a tcp tunnel from before its connect.

// Test code: a failed unwrap is a failed test (clippy.toml allows it in
// #[test] functions; this covers the helpers beside them).
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cutover_test_support::raw;
use cutover_test_support::ws::{Echo, Ws};
use cutover_test_support::*;
use tokio::io::AsyncWriteExt;

async fn drain(admin_addr: SocketAddr) -> serde_json::Value {
    let (s, v) = admin(admin_addr, "GET", "/v1/services/web/drain", None).await;
    assert_eq!(s, 200, "{v}");
    v
}

fn blue(v: &serde_json::Value) -> serde_json::Value {
    v["pools"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["pool"] == "blue"))
        .cloned()
        .unwrap_or_else(|| panic!("no pool blue in {v}"))
}

/// Whether a request on a new connection to `proxy` gets an answer: false
/// when cutover closes the connection without one (refused at accept).
async fn answered(proxy: SocketAddr) -> bool {
    let mut s = raw::connect(proxy).await;
    if s.write_all(b"GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")
        .await
        .is_err()
    {
        return false;
    }
    let (got, _) = raw::read_to_close(&mut s, Duration::from_secs(3)).await;
    got.starts_with(b"HTTP/1.1 200")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_keep_their_listener_permit_and_gauge_until_they_close() {
    let h = Harness::new()
        .service("limits = { max_connections = 2 }")
        .start()
        .await;
    let gauge = format!(
        r#"cutover_downstream_connections{{listener="{}"}}"#,
        h.proxy
    );
    let refused = format!(
        r#"cutover_downstream_refused_total{{listener="{}",reason="max_connections"}}"#,
        h.proxy
    );
    let mut a = Ws::connect(h.proxy).await;
    let mut b = Ws::connect(h.proxy).await;
    assert_eq!(a.echo("a").await, Echo::Text("blue: a".into()));
    assert_eq!(b.echo("b").await, Echo::Text("blue: b".into()));
    // Both upgraded connections still count as open ones.
    let ok = eventually(Duration::from_secs(2), || async {
        metric(h.admin, &gauge).await == Some(2.0)
    })
    .await;
    assert!(
        ok,
        "the gauge does not count the tunnels: {:?}",
        metric(h.admin, &gauge).await
    );
    // So a third connection is over the limit: closed without an answer.
    assert!(
        !answered(h.proxy).await,
        "a third connection was served past max_connections = 2"
    );
    assert_eq!(metric(h.admin, &refused).await, Some(1.0));
    // The tunnels are untouched by the refusal.
    assert_eq!(a.echo("still").await, Echo::Text("blue: still".into()));
    // Closing one frees its permit.
    b.close().await;
    let ok = eventually(Duration::from_secs(3), || async { answered(h.proxy).await }).await;
    assert!(ok, "a closed tunnel did not give its permit back");
    let ok = eventually(Duration::from_secs(2), || async {
        metric(h.admin, &gauge).await == Some(1.0)
    })
    .await;
    assert!(ok, "the gauge did not go back to the one open tunnel");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_whose_101_arrives_after_a_switch_drains_from_that_switch() {
    let h = Harness::new()
        .service("drain_timeout = \"1s\"")
        .start()
        .await;
    // Routed to blue now; blue's 101 comes 800 ms later.
    let proxy = h.proxy;
    let pending = tokio::spawn(async move { Ws::connect_to(proxy, "/ws?delay=800").await });
    let ok = eventually(Duration::from_secs(2), || async {
        blue(&drain(h.admin).await)["in_flight"] == 1
    })
    .await;
    assert!(ok, "the upgrade request never reached blue");
    let switched = Instant::now();
    switch(h.admin, "green").await;
    let mut ws = pending.await.unwrap();
    // It opened on blue after the switch: it is draining, not open.
    let v = blue(&drain(h.admin).await);
    assert_eq!(v["tunnels_draining"], 1, "{v}");
    assert_eq!(v["tunnels_open"], 0, "{v}");
    assert_eq!(v["drained"], false, "{v}");
    // Cut at the switch's deadline (1 s after it), not 1 s after it opened
    // and not never.
    assert_eq!(ws.next().await, Echo::Closed(Some(1001)));
    let took = switched.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(1700),
        "closed {took:?} after the switch"
    );
    let ok = eventually(Duration::from_secs(2), || async {
        drain(h.admin).await["pools"][0]["drained"] == true
    })
    .await;
    assert!(ok, "blue never reported drained: {}", drain(h.admin).await);
}

/// A tcp backend whose connects hang: its accept queue (backlog 0) is
/// full and nobody accepts, so the kernel drops new SYNs until `release`
/// accepts the one queued.
struct Hanging {
    addr: SocketAddr,
    listener: tokio::net::TcpListener,
    _filler: tokio::net::TcpStream,
}

impl Hanging {
    async fn start() -> Hanging {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(0).unwrap();
        let addr = listener.local_addr().unwrap();
        let filler = tokio::net::TcpStream::connect(addr).await.unwrap();
        Hanging {
            addr,
            listener,
            _filler: filler,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_tunnel_still_connecting_keeps_its_pool_undrained_and_drains_once_open() {
    let hanging = Hanging::start().await;
    let green = TestBackend::start_tcp("green").await;
    // Probe that connects hang on this machine (a kernel that queues past
    // the backlog would make the test meaningless, not wrong).
    let probe = tokio::time::timeout(
        Duration::from_millis(300),
        tokio::net::TcpStream::connect(hanging.addr),
    )
    .await;
    if probe.is_ok() {
        eprintln!("skipped: connects to a full accept queue complete on this kernel");
        return;
    }
    let h = Harness::new()
        .tcp()
        .backends(&format!("[\"{}\"]", hanging.addr), &green.toml_list())
        .service("drain_timeout = \"1s\"")
        .service("timeouts = { connect = \"10s\" }")
        .start()
        .await;
    let mut client = raw::connect(h.proxy).await;
    let ok = eventually(Duration::from_secs(2), || async {
        blue(&drain(h.admin).await)["tunnels_open"] == 1
    })
    .await;
    assert!(
        ok,
        "a tcp tunnel still connecting is not counted: {}",
        drain(h.admin).await
    );
    let switched = Instant::now();
    switch(h.admin, "green").await;
    // Still connecting to blue: blue is not drained.
    let ok = eventually(Duration::from_secs(2), || async {
        blue(&drain(h.admin).await)["tunnels_draining"] == 1
    })
    .await;
    let v = blue(&drain(h.admin).await);
    assert!(ok, "the connecting tunnel did not start draining: {v}");
    assert_eq!(
        v["drained"], false,
        "drained while a connect to blue runs: {v}"
    );
    // Let the connect through: the kernel's SYN retry completes it.
    let accepted = tokio::time::timeout(Duration::from_secs(8), async {
        let _queued = hanging.listener.accept().await;
        hanging.listener.accept().await
    })
    .await;
    let Ok(Ok((_from_cutover, _))) = accepted else {
        panic!("cutover's connect never arrived at blue");
    };
    // Opened past its deadline (1 s after the switch): closed at once.
    assert!(
        raw::closed_within(&mut client, Duration::from_secs(3)).await,
        "the tunnel opened after its drain deadline was not closed"
    );
    assert!(switched.elapsed() >= Duration::from_millis(900));
    let ok = eventually(Duration::from_secs(2), || async {
        blue(&drain(h.admin).await)["drained"] == true
    })
    .await;
    assert!(ok, "blue never reported drained: {}", drain(h.admin).await);
}
