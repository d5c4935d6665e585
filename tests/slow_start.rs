//! End-to-end: slow start over real sockets. After 0 -> 50 with
//! `slow_start`, green gets few new connections early in the window and
//! half after it, and no client ever goes back from green to blue; tunnels
//! start draining as the ramp passes their ticket, not at the change; a
//! rollback is at once; a backend back up warms up.

// Test code: a failed unwrap is a failed test (clippy.toml allows it in
// #[test] functions; this covers the helpers beside them).
#![allow(clippy::unwrap_used)]

use std::cell::RefCell;
use std::net::SocketAddr;
use std::time::Duration;

use cutover_test_support::raw::Lines;
use cutover_test_support::*;
use http::StatusCode;
use serde_json::Value;
use tokio::time::{Instant, MissedTickBehavior};

/// `web`'s entry in `/v1/status`.
async fn service(h: &Running) -> Value {
    let (s, v) = h.api("GET", "/v1/status", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["services"][0].clone()
}

fn pool<'a>(service: &'a Value, name: &str) -> &'a Value {
    service["pools"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["name"] == name))
        .unwrap_or_else(|| panic!("no pool {name} in {service}"))
}

fn effective_green(service: &Value) -> f64 {
    pool(service, "green")["effective_share"].as_f64().unwrap()
}

/// A client: one keep-alive connection (its ticket is the connection's),
/// and the pool of each of its answers in order.
struct Client {
    conn: Conn,
    pools: Vec<String>,
}

impl Client {
    async fn open(proxy: SocketAddr) -> Client {
        let mut c = Client {
            conn: Conn::h1(proxy).await,
            pools: Vec::new(),
        };
        c.ask().await;
        c
    }

    async fn ask(&mut self) {
        let a = self.conn.get("/", &[]).await.unwrap();
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        self.pools.push(a.pool().to_string());
    }

    fn first(&self) -> &str {
        &self.pools[0]
    }

    /// Where it went green and later blue again, if it did.
    fn came_back(&self) -> Option<usize> {
        self.pools
            .windows(2)
            .position(|w| w[0] == "green" && w[1] == "blue")
    }
}

/// Counts of green among clients' first answers.
fn green_of(clients: &[Client]) -> usize {
    clients.iter().filter(|c| c.first() == "green").count()
}

/// Asks once on every client.
async fn sweep(clients: &mut [Client]) {
    for c in clients.iter_mut() {
        c.ask().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_0_to_50_green_gets_few_new_clients_early_and_half_later_and_none_goes_back() {
    const WINDOW: Duration = Duration::from_secs(2);
    let h = Harness::new().service("slow_start = \"2s\"").start().await;
    let changed = set_split(h.admin, 50, 50).await;
    let t0 = Instant::now();
    assert_eq!(changed["slow_start"], "2s", "{changed}");
    let s = service(&h).await;
    assert_eq!(pool(&s, "green")["weight"], 50);
    assert_eq!(pool(&s, "green")["share"], 0.5);
    assert!(effective_green(&s) < 0.1, "right after the change: {s}");

    // New clients every 20 ms through the window; every 100 ms each client
    // so far asks again. The first third of the window, and the rest.
    let (mut early, mut later) = (Vec::new(), Vec::new());
    let mut shares = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut n = 0u32;
    let ramp_over = loop {
        tick.tick().await;
        let c = Client::open(h.proxy).await;
        if t0.elapsed() < WINDOW / 3 {
            early.push(c);
        } else {
            later.push(c);
        }
        n += 1;
        if n % 5 == 0 {
            sweep(&mut early).await;
            sweep(&mut later).await;
            let s = service(&h).await;
            shares.push(effective_green(&s));
            if s["ramp"].is_null() {
                break true;
            }
        }
        if t0.elapsed() > WINDOW * 5 {
            break false;
        }
    };
    assert!(
        ramp_over,
        "the ramp did not end within 5 windows: {shares:?}"
    );
    assert!(
        shares.iter().any(|s| (0.05..0.45).contains(s)),
        "the effective share never went through the middle: {shares:?}"
    );
    assert!(early.len() >= 10, "too few early clients: {}", early.len());
    let g = green_of(&early);
    // About 1/12 of them by the ramp (1/6 at the end of the third).
    assert!(
        g * 4 < early.len(),
        "green got {g} of the {} new clients in the first third of the window",
        early.len()
    );
    assert!(green_of(&later) > 0, "green got nothing during the ramp");

    // After the window: half of new clients (tickets in turn: within 3).
    let mut after = Vec::new();
    for _ in 0..40 {
        after.push(Client::open(h.proxy).await);
    }
    let g = green_of(&after);
    assert!(
        (17..=23).contains(&g),
        "green got {g} of 40 after the window"
    );
    assert!(effective_green(&service(&h).await) == 0.5);

    // No client went back from green to blue; many went from blue to green.
    sweep(&mut early).await;
    sweep(&mut later).await;
    let mut moved = 0;
    for c in early.iter().chain(&later).chain(&after) {
        if let Some(at) = c.came_back() {
            panic!(
                "a client went back from green to blue at answer {at}: {:?}",
                c.pools
            );
        }
        if c.first() == "blue" && c.pools.last().map(String::as_str) == Some("green") {
            moved += 1;
        }
    }
    assert!(
        moved >= 5,
        "only {moved} clients moved to green: the test saw no ramp"
    );
    // The audit holds the operator's change, not the steps.
    let (_, audit) = h.api("GET", "/v1/audit", None).await;
    assert_eq!(
        audit["entries"].as_array().map(Vec::len),
        Some(1),
        "{audit}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnels_start_draining_as_the_ramp_passes_them_not_at_the_change() {
    let h = Harness::new()
        .tcp()
        .service("slow_start = \"2s\"")
        .start()
        .await;
    let mut sessions = Vec::new();
    for _ in 0..20 {
        let (s, greeting) = Lines::connect(h.proxy).await;
        assert_eq!(greeting, "blue");
        sessions.push(s);
    }
    let draining = || async {
        let (s, v) = h.api("GET", "/v1/services/web/drain", None).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let blue = v["pools"]
            .as_array()
            .and_then(|a| a.iter().find(|p| p["pool"] == "blue"))
            .cloned()
            .unwrap();
        blue["tunnels_draining"].as_u64().unwrap()
    };
    let changed = switch(h.admin, "green").await;
    assert_eq!(changed["slow_start"], "2s", "{changed}");
    let first = draining().await;
    assert!(
        first < 10,
        "{first} of 20 tunnels draining right after the change"
    );
    let seen = RefCell::new(vec![first]);
    assert!(
        eventually(Duration::from_secs(10), || async {
            let d = draining().await;
            seen.borrow_mut().push(d);
            d == 20
        })
        .await,
        "not every blue tunnel drained after the ramp: {seen:?}"
    );
    assert!(
        seen.borrow().iter().any(|d| (1..20).contains(d)),
        "tunnels did not drain along the ramp: {seen:?}"
    );
    // Draining tunnels still work until the drain deadline (30 s).
    assert_eq!(sessions[0].echo("still").await.as_deref(), Some("still"));
    // Every old ticket has passed before the ramp's very last step: a new
    // connection may draw a ticket that has not, until the ramp is over.
    assert!(
        eventually(Duration::from_secs(10), || async {
            service(&h).await["ramp"].is_null()
        })
        .await,
        "the ramp never ended"
    );
    let (_, greeting) = Lines::connect(h.proxy).await;
    assert_eq!(greeting, "green");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_mid_ramp_is_at_once() {
    let h = Harness::new().service("slow_start = \"30s\"").start().await;
    set_split(h.admin, 50, 50).await;
    let s = service(&h).await;
    assert!(!s["ramp"].is_null(), "{s}");
    let (st, v) = h.api("POST", "/v1/services/web/rollback", Some("{}")).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert!(v.get("slow_start").is_none(), "{v}");
    let s = service(&h).await;
    assert!(s["ramp"].is_null(), "{s}");
    assert_eq!(effective_green(&s), 0.0);
    for _ in 0..20 {
        let a = get_once(h.proxy, "/", &[]).await.unwrap();
        assert_eq!(a.pool(), "blue");
    }
}

/// A backend's entry in `/v1/status`.
async fn backend(h: &Running, addr: SocketAddr) -> Value {
    let s = service(h).await;
    pool(&s, "blue")["backends"]
        .as_array()
        .and_then(|a| a.iter().find(|b| b["addr"] == addr.to_string().as_str()))
        .cloned()
        .unwrap_or_else(|| panic!("no backend {addr} in {s}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_back_up_warms_up_over_the_window() {
    let h = Harness::new()
        .blue(2)
        .service("slow_start = \"3s\"")
        .service(r#"health_check = { path = "/health", interval = "100ms", timeout = "50ms", healthy_threshold = 1, unhealthy_threshold = 1 }"#)
        .start()
        .await;
    let (back, other) = (&h.backends[0], &h.backends[1]);
    back.set_health(500);
    assert!(
        eventually(Duration::from_secs(5), || async {
            backend(&h, back.addr).await["state"] == "down"
        })
        .await,
        "the backend never went down"
    );
    back.set_health(200);
    let first_up = RefCell::new(Value::Null);
    assert!(
        eventually(Duration::from_secs(5), || async {
            let b = backend(&h, back.addr).await;
            let up = b["state"] == "up";
            *first_up.borrow_mut() = b;
            up
        })
        .await,
        "the backend never came back"
    );
    let first_up = first_up.into_inner();
    assert_eq!(first_up["warming"], true, "{first_up}");
    let w = first_up["effective_weight"].as_f64().unwrap();
    assert!(w < 0.5, "just back up, its weight is already {w}");
    // Right after it came back, it gets a small part of new requests.
    let mut to_back = 0;
    for _ in 0..50 {
        let a = get_once(h.proxy, "/", &[]).await.unwrap();
        if a.header("x-backend") == Some(back.addr.to_string().as_str()) {
            to_back += 1;
        }
    }
    assert!(
        to_back < 20,
        "{to_back} of 50 requests to a backend warming up"
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            let b = backend(&h, back.addr).await;
            b["effective_weight"] == 1.0 && b.get("warming").is_none()
        })
        .await,
        "the warm-up never ended"
    );
    let mut to_back = 0;
    for _ in 0..100 {
        let a = get_once(h.proxy, "/", &[]).await.unwrap();
        if a.header("x-backend") == Some(back.addr.to_string().as_str()) {
            to_back += 1;
        }
    }
    assert!(
        (25..=75).contains(&to_back),
        "{to_back} of 100 after the warm-up"
    );
    assert_eq!(backend(&h, other.addr).await["effective_weight"], 1.0);
}
